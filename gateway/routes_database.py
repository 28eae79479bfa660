"""``/v1/database`` routes (client-api.md §6): publish, info, names, calls, SQL, schema, logs.

Every route runs behind the anonymous-auth middleware (§3), so ``caller_of(request)`` is the
verified caller or an identity minted for this request. Control-plane and host-node work goes
through the backends (:mod:`gateway.backends`); this module only parses requests, checks
ownership where the gateway is the one to check it, and shapes responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator

from aiohttp import web

from clustermeta.aio import cancel_and_wait
from gateway.backends import CallOutcome, CallResult, DatabaseInfo
from gateway.context import GATEWAY, Caller, Gateway, caller_of
from gateway.errors import JSON, ApiError
from gateway.http_util import (
    empty,
    json_response,
    query_bool,
    query_choice,
    query_hash,
    query_int,
    read_body,
    text_response,
)
from sats.hash import HASH_SIZE, to_sats_json
from sats.identity import Identity
from sats.json import loads

__all__ = ["CALL_ROUTE", "call_response", "utf8_text", "not_authorized", "routes", "sats_u256", "sats_identity"]

routes = web.RouteTableDef()

#: The route of reducer calls (gateway/fast_calls.py answers most of them, counted under it too).
CALL_ROUTE = "/v1/database/{name_or_identity}/call/{reducer}"
ENERGY_HEADER = "spacetime-energy-used"
DURATION_HEADER = "spacetime-execution-duration-micros"
#: ``follow=true`` replays at most this many old lines (client-api.md §6.10).
FOLLOW_MAX_LINES = 2500
MAX_REPLICAS = 255


# --- helpers ----------------------------------------------------------------------------------


def sats_identity(identity: Identity) -> dict[str, str]:
    """An identity in SATS-JSON (``{"__identity__":"0x…"}``, u256 without leading zeros)."""
    return {"__identity__": f"0x{identity.value:x}"}


def sats_u256(hex_digest: str) -> str:
    """A 32-byte hash as 1.12 serialises ``Hash`` in SATS-JSON: u256 from the little-endian bytes."""
    return to_sats_json(bytes.fromhex(hex_digest) if hex_digest else bytes(HASH_SIZE))


def not_authorized(caller: Identity, database: Identity, action: str) -> ApiError:
    """403 with 1.12's wording for an owner-only action."""
    return ApiError.text(
        403, f"{caller.to_hex()} is not authorized to perform action on database {database.to_hex()}: {action}"
    )


def require_owner(caller: Caller, info: DatabaseInfo, action: str) -> None:
    """Raise 403 unless the caller owns the database."""
    if caller.identity != info.owner:
        raise not_authorized(caller.identity, info.identity, action)


def call_response(result: CallResult) -> web.Response:
    """The response to ``POST …/call/:reducer`` for an outcome (client-api.md §6.8); raises ApiError for failures."""
    headers = {ENERGY_HEADER: str(result.energy_used), DURATION_HEADER: str(result.duration_micros)}
    match result.outcome:
        case CallOutcome.COMMITTED:
            return empty(200, headers)
        case CallOutcome.FAILED:
            raise ApiError.text(530, result.message, headers)
        case CallOutcome.OUT_OF_ENERGY:
            raise ApiError.text(402, "Module energy budget exhausted.", headers)
        case CallOutcome.CONNECT_REJECTED:
            raise ApiError.text(403, result.message)
        case CallOutcome.CONNECT_OUT_OF_ENERGY:
            raise ApiError.text(503, "Insufficient energy balance to run `client_connected` reducer")
    raise AssertionError(result.outcome)


def _require_json_content_type(request: web.Request) -> None:
    content_type = request.headers.get("Content-Type")
    if content_type is None:
        raise ApiError.text(400, "Header of type `content-type` was missing")
    if content_type.strip().lower() != JSON:
        raise ApiError.text(415, "Expected request with `Content-Type: application/json`")


def utf8_text(body: bytes) -> str:
    """A request body as text (400 when it is not UTF-8)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError.text(400, "Request body didn't contain valid UTF-8") from None


def _noi(request: web.Request) -> str:
    return request.match_info["name_or_identity"]


def _module_params(request: web.Request) -> int | None:
    """``num_replicas`` and ``host_type`` as publish and reset accept them; the replica count."""
    replicas = query_int(request, "num_replicas", bits=64)
    if replicas is not None and replicas > MAX_REPLICAS:
        raise ApiError.text(400, f"Replication factor {replicas} out of bounds")
    if query_choice(request, "host_type", ("Wasm", "Js"), "Wasm") == "Js":
        raise ApiError.text(400, "This server runs WebAssembly modules only (host_type=Js is not supported)")
    return replicas


# --- publish ----------------------------------------------------------------------------------


async def _publish(request: web.Request, name_or_identity: str | None) -> web.Response:
    gw = request.app[GATEWAY]
    caller = caller_of(request)
    clear = query_bool(request, "clear")
    num_replicas = _module_params(request)
    # The migration policy: the control plane refuses BreakClients without a token (after its
    # owner check, as 1.12 does) and the host node an update that disconnects the clients
    # unless the token is that update's.
    token = query_hash(request, "token")
    break_clients = query_choice(request, "policy", ("Compatible", "BreakClients"), "Compatible") == "BreakClients"
    parent = request.query.get("parent")
    program = await read_body(request, gw.config.max_module_bytes)
    if parent is not None:
        exists = False
        if name_or_identity is not None:
            with contextlib.suppress(ApiError):
                await gw.control.database(name_or_identity)
                exists = True
        if clear and exists:
            raise ApiError.text(400, "Setting the parent of an existing database is not supported")
        # 1.12's standalone answers 500 here (its authorization fails inside); a feature this
        # server lacks is the request's problem, not a server failure, so: 400 (issue 12).
        raise ApiError.text(400, "Parent databases (teams) are not supported by this server")
    outcome = await gw.control.publish(
        caller.identity, name_or_identity, program, clear=clear, break_clients=break_clients, token=token,
        num_replicas=num_replicas,
    )
    return json_response(outcome.to_json())


# --- calls and SQL ----------------------------------------------------------------------------
# Registered first: aiohttp tries the routes under one path prefix in the order they were added,
# and every `/v1/database/{…}` route shares one, so the hot two are tried first (resolving a
# `/call` took 8.0 µs as the eighth, 3.2 µs as the first).


@routes.post(CALL_ROUTE)
async def call(request: web.Request) -> web.Response:
    """Call a reducer with JSON arguments: connect → reducer → disconnect."""
    gw = request.app[GATEWAY]
    _require_json_content_type(request)
    args = utf8_text(await read_body(request, gw.config.max_body_bytes))
    info = await gw.control.database(_noi(request))
    result = await gw.host.call(
        info.identity, request.match_info["reducer"], args, caller=caller_of(request).identity,
        connection_id=gw.connection_ids.new(),
    )
    return call_response(result)


@routes.post("/v1/database/{name_or_identity}/sql")
async def sql(request: web.Request) -> web.Response:
    """Run one SQL statement (DML for the owner only, checked by the engine)."""
    gw = request.app[GATEWAY]
    query_bool(request, "confirmed")  # every answer is already durable
    text = utf8_text(await read_body(request, gw.config.max_body_bytes))
    info = await gw.control.database(_noi(request))
    answer = await gw.host.sql(info.identity, text, caller_of(request).identity)
    return web.Response(
        body=answer.body, headers={"Content-Type": JSON, DURATION_HEADER: str(answer.duration_micros)}
    )


@routes.post("/v1/database")
async def publish_unnamed(request: web.Request) -> web.Response:
    """Publish a new database with a fresh identity and no name."""
    return await _publish(request, None)


@routes.put("/v1/database/{name_or_identity}")
async def publish_named_put(request: web.Request) -> web.Response:
    """Publish to a name or identity (what the 1.12 CLI sends)."""
    return await _publish(request, _noi(request))


@routes.post("/v1/database/{name_or_identity}")
async def publish_named_post(request: web.Request) -> web.Response:
    """Publish to a name or identity (the documented form)."""
    return await _publish(request, _noi(request))


@routes.post("/v1/database/{name_or_identity}/pre_publish")
async def pre_publish(request: web.Request) -> web.Response:
    """What republishing this module would do: an automatic migration plan, or why not."""
    gw = request.app[GATEWAY]
    caller = caller_of(request)
    query_choice(request, "style", ("AnsiColor", "NoColor"), "AnsiColor")
    _module_params(request)
    program = await read_body(request, gw.config.max_module_bytes)
    info = await gw.control.database(_noi(request))
    require_owner(caller, info, "update database")
    plan = await gw.host.pre_publish(info.identity, program)
    return json_response(plan.to_json())


@routes.put("/v1/database/{name_or_identity}/reset")
async def reset(request: web.Request) -> web.Response:
    """Wipe the data and reinstall the module (the body's, or the current one)."""
    gw = request.app[GATEWAY]
    _module_params(request)
    program = await read_body(request, gw.config.max_module_bytes)
    outcome = await gw.control.reset(caller_of(request).identity, _noi(request), program or None)
    return json_response(outcome.to_json())


# --- database info ------------------------------------------------------------------------------


@routes.get("/v1/database/{name_or_identity}")
async def db_info(request: web.Request) -> web.Response:
    """Identity, owner, host type and initial program of a database."""
    info = await request.app[GATEWAY].control.database(_noi(request))
    return json_response(
        {
            "database_identity": sats_identity(info.identity),
            "owner_identity": sats_identity(info.owner),
            "host_type": {info.host_type: []},
            "initial_program": sats_u256(info.initial_program_hash),
        }
    )


@routes.delete("/v1/database/{name_or_identity}")
async def delete_database(request: web.Request) -> web.Response:
    """Delete a database (owner only); its names stay."""
    await request.app[GATEWAY].control.delete(caller_of(request).identity, _noi(request))
    return empty()


@routes.get("/v1/database/{name_or_identity}/identity")
async def get_identity(request: web.Request) -> web.Response:
    """The database identity as 64 hex digits (text)."""
    identity = await request.app[GATEWAY].control.resolve(_noi(request))
    return text_response(identity.to_hex())


@routes.get("/v1/database/{name_or_identity}/names")
async def get_names(request: web.Request) -> web.Response:
    """Every name of the database."""
    control = request.app[GATEWAY].control
    identity = await control.resolve(_noi(request))
    return json_response({"names": await control.names(identity)})


@routes.post("/v1/database/{name_or_identity}/names")
async def add_name(request: web.Request) -> web.Response:
    """Add a name (raw text body)."""
    gw = request.app[GATEWAY]
    name = utf8_text(await read_body(request, gw.config.max_body_bytes))
    result = await gw.control.add_name(caller_of(request).identity, _noi(request), name)
    return json_response(result)


@routes.put("/v1/database/{name_or_identity}/names")
async def set_names(request: web.Request) -> web.Response:
    """Replace every name of the database (JSON array of names)."""
    gw = request.app[GATEWAY]
    content_type = request.headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() != JSON:
        raise ApiError.text(415, "Expected request with `Content-Type: application/json`")
    body = await read_body(request, gw.config.max_body_bytes)
    try:
        names = loads(body)
    except Exception as e:  # noqa: BLE001 - any parse failure is the client's
        raise ApiError.text(400, f"Failed to parse the request body as JSON: {e}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ApiError.text(
            422, "Failed to deserialize the JSON body into the target type: expected an array of strings"
        )
    await gw.control.set_names(caller_of(request).identity, _noi(request), names)
    return json_response("Success")


@routes.get("/v1/database/{name_or_identity}/unstable/timestamp")
async def timestamp(request: web.Request) -> web.Response:
    """The server's current time (the database must exist)."""
    await request.app[GATEWAY].control.database(_noi(request))
    return json_response({"__timestamp_micros_since_unix_epoch__": time.time_ns() // 1000})


@routes.get("/v1/database/{name_or_identity}/schema")
async def schema(request: web.Request) -> web.Response:
    """The module definition (``RawModuleDefV9``) as SATS-JSON; ``?version=9`` is required."""
    gw = request.app[GATEWAY]
    if "version" not in request.query:
        raise ApiError.text(400, "Failed to deserialize query string: missing field `version`")
    if request.query["version"] != "9":
        raise ApiError.text(400, "Failed to deserialize query string: version: only version 9 is supported")
    info = await gw.control.database(_noi(request))
    return json_response(await gw.host.schema(info.identity))


# --- logs -------------------------------------------------------------------------------------


@routes.get("/v1/database/{name_or_identity}/logs")
async def logs(request: web.Request) -> web.StreamResponse:
    """Module logs as ndjson; ``follow=true`` streams new lines until the client goes away."""
    gw = request.app[GATEWAY]
    num_lines = query_int(request, "num_lines", bits=32)
    follow = query_bool(request, "follow")
    info = await gw.control.database(_noi(request))
    require_owner(caller_of(request), info, "view module logs")
    if follow:
        num_lines = min(num_lines, FOLLOW_MAX_LINES) if num_lines else 0
    lines = gw.host.logs(info.identity, num_lines, follow)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    try:
        # The first item before the headers: errors are still HTTP errors, and a follower is
        # registered before the client can write a line it expects to see (HostNodeBackend.logs).
        line = await anext(lines, None)
        await response.prepare(request)
        while line is not None:
            if line:
                await response.write(line.encode() + b"\n")
            line = await _next_line(lines, request, gw)
        await response.write_eof()
    except ConnectionResetError:
        pass
    finally:
        await lines.aclose()
    return response


async def _next_line(lines: AsyncGenerator[str, None], request: web.Request, gw: Gateway) -> str | None:
    """The next line; None at the end, once the client disconnected, or when the server stops."""
    pending = asyncio.ensure_future(_anext(lines))
    stopping = asyncio.ensure_future(gw.stopping.wait())
    try:
        while True:
            done, _ = await asyncio.wait({pending, stopping}, timeout=gw.config.log_follow_poll,
                                         return_when=asyncio.FIRST_COMPLETED)
            if pending in done:
                try:
                    return pending.result()
                except StopAsyncIteration:
                    return None
            transport = request.transport
            if stopping in done or transport is None or transport.is_closing():
                return None
    finally:
        await cancel_and_wait(pending, stopping)


async def _anext(lines: AsyncGenerator[str, None]) -> str:
    return await anext(lines)
