"""``/v1/identity``, ``/v1/ping``, ``/v1/health``, ``/v1/metrics``, ``/v1/energy`` (client-api.md §4, §5)."""

from __future__ import annotations

from aiohttp import web

from gateway.context import GATEWAY
from gateway.errors import ApiError
from gateway.http_util import empty, json_response, parse_url_identity, query_int, text_response
from observability.http import ENDPOINTS, metrics_response
from sats.identity import Identity

__all__ = ["routes"]

routes = web.RouteTableDef()

PACKAGE_NAME = "spacetimedb-client-api"
COMPAT_VERSION = "1.12.0"


@routes.post("/v1/identity")
async def create_identity(request: web.Request) -> web.Response:
    """Mint a new local identity and its token."""
    issued = request.app[GATEWAY].auth.authority.new_identity()
    return json_response({"identity": issued.identity.to_hex(), "token": issued.token})


@routes.get("/v1/identity/public-key")
async def public_key(request: web.Request) -> web.Response:
    """The ES256 public key (SPKI PEM) tokens are signed with."""
    pem = request.app[GATEWAY].auth.authority.public_key_pem
    return web.Response(body=pem.encode("ascii"), headers={"Content-Type": "application/pem-certificate-chain"})


@routes.post("/v1/identity/websocket-token")
async def websocket_token(request: web.Request) -> web.Response:
    """Re-sign the caller's claims as a 60-second token for the WebSocket handshake."""
    gw = request.app[GATEWAY]
    caller = await gw.auth.required(request)
    return json_response({"token": gw.auth.authority.websocket_token(caller.claims).token})


@routes.get("/v1/identity/{identity}/verify")
async def verify(request: web.Request) -> web.Response:
    """204 when the token belongs to the path identity, 400 (empty) when not."""
    identity = parse_url_identity(request.match_info["identity"])
    caller = await request.app[GATEWAY].auth.required(request)
    return empty(204 if caller.identity == identity else 400)


@routes.get("/v1/identity/{identity}/databases")
async def databases(request: web.Request) -> web.Response:
    """Identities of the databases the path identity owns."""
    identity = parse_url_identity(request.match_info["identity"])
    owned = await request.app[GATEWAY].control.databases_of(identity)
    return json_response({"identities": [i.to_hex() for i in owned]})


@routes.get("/v1/ping")
async def ping(request: web.Request) -> web.Response:
    """200 empty; a token, if given, must validate."""
    await request.app[GATEWAY].auth.optional(request)
    return empty()


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    """Liveness plus the host nodes that can take databases (in a cluster: the live ones)."""
    nodes = list(await request.app[GATEWAY].control.node_ids())
    return json_response(
        {"package_name": PACKAGE_NAME, "version": COMPAT_VERSION, "nodes": nodes, "schedulable": bool(nodes)}
    )


@routes.get("/v1/metrics")
async def metrics(request: web.Request) -> web.Response:
    """The process's metrics in the Prometheus text format (501 when the app was built without a registry)."""
    endpoints = request.app.get(ENDPOINTS)
    if endpoints is None:
        return text_response("This server was started without a metrics registry.", 501)
    return await metrics_response(endpoints)


@routes.get("/v1/prometheus/sd_config")
async def sd_config(request: web.Request) -> web.Response:
    """Prometheus HTTP service discovery: this gateway's address."""
    return json_response([{"targets": request.app[GATEWAY].config.advertise, "labels": {}}])


# --- energy (standalone: nothing is metered, every balance is 0) ---------------------------------


def _balance(_identity: Identity) -> web.Response:
    return json_response({"balance": "0"})


@routes.get("/v1/energy/{identity}")
async def energy_balance(request: web.Request) -> web.Response:
    """``{"balance":"<i128>"}``."""
    return _balance(parse_url_identity(request.match_info["identity"]))


@routes.post("/v1/energy/{identity}")
async def energy_add(request: web.Request) -> web.Response:
    """Add to the caller's balance: accepted and ignored (energy is not metered here)."""
    parse_url_identity(request.match_info["identity"])
    caller = await request.app[GATEWAY].auth.required(request)
    try:
        query_int(request, "amount", bits=128)
    except ApiError:
        raise ApiError.empty(400) from None
    return _balance(caller.identity)


@routes.put("/v1/energy/{identity}")
async def energy_set(request: web.Request) -> web.Response:
    """Setting a balance is reserved to the all-zero identity, which no token can carry."""
    parse_url_identity(request.match_info["identity"])
    caller = await request.app[GATEWAY].auth.required(request)
    if caller.identity != Identity.ZERO:
        raise ApiError.empty(401)
    return _balance(caller.identity)
