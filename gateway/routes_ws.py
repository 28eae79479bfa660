"""``GET /v1/database/:name_or_identity/subscribe``: WebSocket v1 clients (client-api.md §9).

The handshake checks run in the order of §9, each a plain HTTP error before any upgrade; then
101 with the chosen subprotocol (and the ``spacetime-identity`` headers the app adds to every
database response). After the upgrade the host node runs ``client_connected``: a rejection
drops the socket with no close frame. Otherwise the gateway relays frames both ways without
looking inside them — the host node decodes client frames and encodes server frames — until
either side ends, and then always tells the host node the client is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from clustermeta.aio import cancel_and_wait
from gateway.auth import AuthError, token_payload
from gateway.backends import WsParams, WsSession
from gateway.context import GATEWAY, Gateway, caller_of
from gateway.errors import ApiError, log_internal
from gateway.http_util import query_bool, query_choice
from sats.identity import Identity

__all__ = ["PROTOCOLS", "routes"]

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

BSATN_PROTOCOL = "v1.bsatn.spacetimedb"
JSON_PROTOCOL = "v1.json.spacetimedb"
#: Server preference order (§9 step 7).
PROTOCOLS = (BSATN_PROTOCOL, JSON_PROTOCOL)
#: Largest client message (§9).
MAX_INCOMING_BYTES = 0x2000000
#: Seconds between server pings; a connection silent for twice this long is dropped.
PING_INTERVAL = 15.0
#: A connection from which nothing (pongs included) arrived for this long is dropped.
IDLE_TIMEOUT = 30.0
#: How long a closing handshake may take before the socket is just dropped.
CLOSE_TIMEOUT = 1.0
#: The close code of a client cut off for falling behind (its socket is not drained first).
CLOSE_TOO_SLOW = 1008
#: The close code when the database cannot take the client right now (RFC 6455 "Try Again Later").
CLOSE_TRY_AGAIN = 1013
_TRANSPORT: contextvars.ContextVar[asyncio.Transport | None] = contextvars.ContextVar(
    "ws_transport", default=None
)
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


def _connection_id(request: web.Request) -> int | None:
    raw = request.query.get("connection_id")
    if raw is None:
        return None
    text = raw.removeprefix("0x")
    if not _HEX32.match(text):
        raise ApiError.text(
            400, f"Failed to deserialize query string: connection_id: invalid connection id `{raw[:80]}`"
        )
    return int(text, 16)


def _offered(request: web.Request) -> list[str]:
    return [
        p.strip()
        for h in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in h.split(",")
        if p.strip()
    ]


def _check_upgrade(request: web.Request) -> None:
    if request.method != "GET":
        raise ApiError.text(405, "Request method must be `GET`")
    connection = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    if "upgrade" not in connection or request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError.text(426, "This service requires use of the websocket protocol")
    if request.headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise ApiError.text(400, "`Sec-WebSocket-Version` header did not include '13'")
    if not request.headers.get("Sec-WebSocket-Key"):
        raise ApiError.text(400, "`Sec-WebSocket-Key` header missing")


@routes.route("*", "/v1/database/{name_or_identity}/subscribe")
async def subscribe(request: web.Request) -> web.StreamResponse:
    """The WebSocket handshake (§9 checks in order), then the relay."""
    gw = request.app[GATEWAY]
    caller = caller_of(request)  # 1. auth (the middleware)
    # 2. query
    compression = query_choice(request, "compression", ("None", "Brotli", "Gzip"), "Brotli") or "Brotli"
    light = query_bool(request, "light")
    confirmed = query_bool(request, "confirmed")
    connection_id = _connection_id(request)
    _check_upgrade(request)  # 3.
    if connection_id == 0:  # 4.
        raise ApiError.text(400, "Invalid connection ID: the all-zeros ConnectionId is reserved.")
    name = request.match_info["name_or_identity"]
    await gw.control.resolve(name)  # 5.
    offered = _offered(request)  # 7.
    chosen = next((p for p in PROTOCOLS if p in offered), None)
    if chosen is None:
        raise ApiError.text(400, "no valid protocol selected")
    info = await gw.control.database(name)  # 8.
    try:
        jwt = token_payload(caller.token).encode()
    except AuthError:
        jwt = None
    params = WsParams(
        identity=caller.identity,
        token=caller.token,
        connection_id=connection_id if connection_id is not None else gw.connection_ids.new(),
        json=chosen == JSON_PROTOCOL,
        compression=compression,
        light=light,
        confirmed=confirmed,
        jwt_payload=jwt,
    )
    full = gw.ws_slots.take(info.identity, gw.config)
    if full is not None:
        raise ApiError.text(503, full)
    try:
        return await _serve(request, gw, info.identity, params, chosen)
    finally:
        gw.ws_slots.give_back(info.identity)


async def _serve(
    request: web.Request, gw: Gateway, database: Identity, params: WsParams, chosen: str
) -> web.StreamResponse:
    """Upgrade, connect the client to the database's host node and relay until either ends."""
    ws = web.WebSocketResponse(
        protocols=(chosen,), autoping=False, max_msg_size=MAX_INCOMING_BYTES, compress=False
    )
    await ws.prepare(request)
    _TRANSPORT.set(request.transport)
    try:
        session = await gw.host.connect(database, params)
    except ApiError as e:
        log_internal(request, e)
        # 503 (no leader, node unreachable) is passing: 1013 "try again later" says so.
        code = CLOSE_TRY_AGAIN if e.status == 503 else 1011
        await _close(ws, code, e.body.decode(errors="replace"))
        return ws
    if session is None:  # client_connected refused: drop the socket, no close frame (§9)
        if request.transport is not None:
            request.transport.abort()
        return ws
    gw.stats.websockets += 1
    try:
        await _relay(ws, session, gw.stopping)
    finally:
        gw.stats.websockets -= 1
        await asyncio.shield(session.close())
    return ws


class _Liveness:
    """When the client last sent anything, and whether our last ping is unanswered."""

    def __init__(self) -> None:
        self.last_seen = time.monotonic()
        self.awaiting_pong = False


async def _keepalive(ws: web.WebSocketResponse, live: _Liveness) -> None:
    """Ping every :data:`PING_INTERVAL` (not while a ping is unanswered); return once the
    client has been silent for :data:`IDLE_TIMEOUT`."""
    while True:
        await asyncio.sleep(PING_INTERVAL)
        if time.monotonic() - live.last_seen >= IDLE_TIMEOUT:
            return
        if not live.awaiting_pong:
            live.awaiting_pong = True
            await ws.ping()


async def _relay(ws: web.WebSocketResponse, session: WsSession, stopping: asyncio.Event) -> None:
    live = _Liveness()
    reader = asyncio.ensure_future(_read(ws, session, live))
    writer = asyncio.ensure_future(_write(session))
    closed = asyncio.ensure_future(session.wait_closed())
    stop = asyncio.ensure_future(stopping.wait())
    idle = asyncio.ensure_future(_keepalive(ws, live))
    tasks = {reader, writer, closed, stop, idle}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if reader in done:
            reason = reader.result()
            if reason is not None:  # a malformed client message
                writer.cancel()
                await _close(ws, 1011, reason)
            return
        if writer in done and writer.exception() is not None:
            return  # the socket failed under us
        if idle in done:  # the client went silent: drop it
            transport = _TRANSPORT.get()
            if transport is not None:
                transport.abort()
            return
        if stop in done and not closed.done():
            writer.cancel()
            await _close(ws, 1001, "server shutting down")
            return
        if writer not in done and session.close_code != CLOSE_TOO_SLOW:
            # The server ended the connection; give the writer a moment to deliver what is
            # queued (it may be stuck on a client that does not read), then close.
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT)
        await _close(ws, session.close_code, session.close_reason)
    finally:
        await cancel_and_wait(*tasks)


async def _read(ws: web.WebSocketResponse, session: WsSession, live: _Liveness) -> str | None:
    """Feed client frames to the host node; the 1011 reason of a malformed one, else None at the end.

    Frames that arrived together (already parsed and waiting in the socket's message queue) go
    to the host node in one batch: one trip to the database's writer for all of them."""
    queued = _queued_messages(ws)
    batch: list[bytes | str] = []
    async for msg in ws:
        live.last_seen = time.monotonic()
        if msg.type is WSMsgType.BINARY or msg.type is WSMsgType.TEXT:
            batch.append(msg.data)
        elif msg.type is WSMsgType.PING:
            await ws.pong(msg.data)
        elif msg.type is WSMsgType.PONG:
            live.awaiting_pong = False
        if batch and not queued():
            reason = session.handle_many(batch)
            batch = []
            if reason is not None:
                return reason
    if batch:
        return session.handle_many(batch)
    return None


def _queued_messages(ws: web.WebSocketResponse) -> Callable[[], int]:
    """How many received messages wait in ``ws``'s queue (0 when aiohttp does not tell)."""
    reader = getattr(ws, "_reader", None)
    buffer = getattr(reader, "_buffer", None)
    if buffer is None:
        return lambda: 0
    return buffer.__len__  # type: ignore[no-any-return]


def _frame_header(opcode: int, n: int) -> bytes:
    """A server (unmasked, final) WebSocket frame header for an ``n``-byte payload (RFC 6455 §5.2)."""
    if n < 126:
        return bytes((0x80 | opcode, n))
    if n < 1 << 16:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")


async def _write(session: WsSession) -> None:
    """Send server frames as they come. Frames queued together go out in one socket write
    (framed here: Orrery never compresses at the WebSocket level), with the socket's flow
    control: a client that does not read stalls only its own writer. While this waits for
    frames, the session hands it ready ones directly (its ``sink``): written at once, no task
    wake-up per frame."""
    transport = _TRANSPORT.get()
    if transport is None:  # the client went away during the upgrade
        return
    protocol: Any = transport.get_protocol()  # aiohttp's RequestHandler: its flow control

    def send(frames: list[bytes | str]) -> None:
        parts: list[bytes] = []
        for frame in frames:
            if isinstance(frame, str):
                data = frame.encode()
                parts.append(_frame_header(0x1, len(data)))
            else:
                data = frame
                parts.append(_frame_header(0x2, len(data)))
            parts.append(data)
        transport.write(b"".join(parts))

    def sink(frames: list[bytes | str]) -> bool:
        if transport.is_closing() or protocol.writing_paused:
            return False  # queued: the loop below raises or waits for the socket
        send(frames)
        return True

    try:
        while True:
            session.sink = sink
            frames = await session.recv_many()
            session.sink = None
            if frames is None:
                return
            if transport.is_closing():
                raise ConnectionResetError("the client's socket is closed")
            send(frames)
            if protocol.writing_paused:
                await protocol._drain_helper()
    finally:
        session.sink = None


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close with a close frame when the socket lets us; drop it when it does not in time."""
    message = reason.encode()[:123]
    try:
        await asyncio.wait_for(ws.close(code=code, message=message), CLOSE_TIMEOUT)
    except (TimeoutError, ConnectionError, RuntimeError):
        transport = _TRANSPORT.get()
        if transport is not None:
            transport.abort()
