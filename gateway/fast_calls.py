"""HTTP ``/call`` without aiohttp's request machinery; every other request still goes to aiohttp.

A reducer call over HTTP cost the gateway ~396,000 instructions, ~258,000 of them aiohttp's own
per request (``loadtest/RESULTS.md``, session 22): llhttp's callbacks building a multidict of
headers and a URL, the request and response objects, the route lookup, the middleware, the
response's headers checked character by character — the caller's token among them. The work of
the call itself (the token, the name, the link to the host node) is a fraction of it. Read here,
a call costs the gateway ~96,000.

:class:`CallConnection` is the protocol of every HTTP connection of the gateway's listener
(``orrery.process.FastSite``). It reads requests itself for as long as each is a plain
``POST /v1/database/<name>/call/<reducer>`` — HTTP/1.1, a ``Content-Length`` body of at most
``max_body_bytes``, ``Content-Type: application/json``, a Bearer token, an ASCII head whose lines
end in CRLF and whose header names are tokens — and answers it as the aiohttp route
(:func:`gateway.routes_database.call`) and the application's middleware and response hook would,
byte for byte but for header order: the same status, reason, body and headers (CORS, ``Vary``,
the caller's identity and token, energy and duration, ``Date``, ``Server``), counted into the
gateway's stats under the same route (and into ``fast_calls``). Values of headers it ignores are
not checked for control characters, where aiohttp would answer 400.

Anything else — another route, a query string, a percent-escape, chunked or absent bodies,
``Expect``, ``Upgrade``, a request without a token (an anonymous identity is minted by the
middleware), a token that does not verify, a header line it does not vouch for, a head larger
than 8 KiB — hands the connection to aiohttp's own protocol, with every byte not answered yet,
before anything of that request was answered: from then on aiohttp serves the connection, so its
answers are exactly aiohttp's. A connection is only handed over between requests.

In the steady state of a keep-alive client — its token verified before, the database's name
cached, the split server's link to the host node — a call is sent at once and answered from a
callback on the link's reply (:meth:`CallConnection._start`); otherwise a task waits for what is
missing (:meth:`CallConnection._serve`), which is also the path of every other gateway (the
cluster's, the in-process server's).

Requests on one connection are answered in order, one at a time (as aiohttp does); a call in
flight runs to its end when its client goes away (aiohttp's default, no handler cancellation),
and its answer is dropped. Reading pauses while a client has more than :data:`READ_AHEAD` bytes
waiting behind a call in flight; the next request waits while the socket's write buffer is full.
Connections idle past aiohttp's keep-alive timeout are closed. Stopping the site closes idle
connections at once and waits (``shutdown_timeout``) for calls in flight to be answered.

``ORRERY_HTTP_FAST_CALLS=0`` in the environment turns this off (every request to aiohttp), for
comparisons.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import re
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from gateway.app import VARY
from gateway.backends import CallOutcome, CallResult, DatabaseInfo
from gateway.context import Caller, Gateway
from gateway.errors import failure_response
from gateway.link_backend import LinkHostNode, unreachable
from gateway.routes_database import CALL_ROUTE, DURATION_HEADER, ENERGY_HEADER, call_response, utf8_text

__all__ = ["CallConnection", "FastCalls", "enabled", "read_head"]

log = logging.getLogger(__name__)

#: Largest request head read here (aiohttp's limit for one line is 8,190 bytes).
MAX_HEAD = 8190
#: Bytes a client may have waiting while its call is in flight before reading pauses.
READ_AHEAD = 256 * 1024
#: aiohttp's default: seconds an idle keep-alive connection is kept.
KEEPALIVE_TIMEOUT = 3630.0
#: Seconds between sweeps for idle connections.
SWEEP_INTERVAL = 60.0

_REQUEST_LINE = re.compile(rb"POST /v1/database/([A-Za-z0-9._~!$&'()*+,;=:@-]+)/call/([A-Za-z0-9._~!$&'()*+,;=:@-]+) HTTP/1\.1")
#: The bytes of a header's name.
_TOKEN_BYTES = b"!#$%&'*+.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-"
#: Headers whose presence sends the request to aiohttp (this reader does not implement them).
#: Header names seen before (clients send the same ones every time), lower-cased; at most
#: ``_NAMES_KEPT`` of them.
_NAMES: dict[bytes, bytes] = {}
_NAMES_KEPT = 256
_DECLINED = frozenset((b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"))
_VARY = VARY.encode()
_ENERGY = ENERGY_HEADER.encode()
_DURATION = DURATION_HEADER.encode()
#: Bounds of FastCalls' caches of heads and of callers' headers.
_HEADS_KEPT = 1024
_TAILS_KEPT = 4096
_SERVER = SERVER_SOFTWARE.encode()


def enabled() -> bool:
    """Whether listeners read ``/call`` requests themselves (``ORRERY_HTTP_FAST_CALLS``)."""
    return os.environ.get("ORRERY_HTTP_FAST_CALLS", "1") != "0"


class _Head:
    """What the head of a request says: the route's two segments and the headers that matter."""

    def __init__(self, name: str, reducer: str, authorization: str, length: int, close: bool) -> None:
        self.name = name
        self.reducer = reducer
        self.authorization = authorization
        self.length = length
        self.close = close


class _Request:
    """A ``/call`` request read from the socket: its bytes (to hand over), head and body."""

    def __init__(self, raw: bytes, head: _Head, body: bytes) -> None:
        self.raw = raw
        self.head = head
        self.body = body

    @property
    def path(self) -> str:
        return f"/v1/database/{self.head.name}/call/{self.head.reducer}"


def read_head(head: bytes, max_body: int) -> _Head | None:
    """The head (without its blank line) of a request this module answers, or None for one
    aiohttp must read."""
    if not head.isascii():
        return None
    lines = head.split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        return None
    name, reducer = line.group(1), line.group(2)
    if name in (b".", b"..") or reducer in (b".", b".."):
        return None  # aiohttp's URL would resolve the dot segment: another route
    length = -1
    content_type = authorization = None
    close = False
    for raw in lines[1:]:
        if raw.find(b"\n") >= 0 or raw.find(b"\r") >= 0:
            return None  # a line ending in a bare LF or CR
        field, colon, value = raw.partition(b":")
        key = _NAMES.get(field)
        if key is None:
            if not colon or not field or field.translate(None, _TOKEN_BYTES):
                return None  # obs-fold, a malformed line
            if len(_NAMES) >= _NAMES_KEPT:
                _NAMES.clear()
            key = _NAMES[field] = field.lower()
        value = value.strip(b" \t")
        if key == b"content-length":
            if length >= 0 or not value.isdigit():
                return None
            length = int(value)
        elif key == b"authorization":
            if authorization is not None:
                return None
            authorization = value
        elif key == b"content-type":
            if content_type is not None:
                return None
            content_type = value
        elif key == b"connection":
            token = value.lower()
            if token == b"close":
                close = True
            elif token != b"keep-alive":
                return None
        elif key in _DECLINED:
            return None
    if length < 0 or length > max_body or authorization is None or content_type is None:
        return None
    if content_type.lower() != b"application/json":
        return None  # aiohttp's route answers 415 (and 400 without one)
    return _Head(name.decode(), reducer.decode(), authorization.decode(), length, close)


class FastCalls:
    """The connections of one listener and what they share: the gateway, aiohttp's protocol
    factory to hand a connection to, the ``Date`` header of this second."""

    def __init__(self, gateway: Gateway, server: web.Server) -> None:
        self.gateway = gateway
        self.server = server
        self.max_body = gateway.config.max_body_bytes
        self.connections: set[CallConnection] = set()
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self._second = -1
        self._headers = b""
        #: Heads read lately (at most _HEADS_KEPT), and each caller's identity headers (at most
        #: _TAILS_KEPT, by token).
        self.heads: dict[bytes, _Head] = {}
        self.tails: dict[str, bytes] = {}
        self._sweeper: asyncio.Task[None] | None = None
        # What the backends offer beside their coroutines, to answer without one when they can:
        # the split server's cached control plane and link (gateway/link_backend.py).
        self.known_database: Callable[[str], DatabaseInfo | None] | None = getattr(gateway.control, "known", None)
        self.link: LinkHostNode | None = gateway.host if isinstance(gateway.host, LinkHostNode) else None

    def __call__(self) -> CallConnection:
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        return CallConnection(self)

    def headers(self) -> bytes:
        """The headers every answer has, caller's aside: aiohttp's (``Date`` of this second,
        ``Server``) and the application's response hook's (CORS, ``Vary``)."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._headers = b"".join((
                b"Date: ", email.utils.formatdate(now, usegmt=True).encode(), b"\r\nServer: ", _SERVER,
                b"\r\nAccess-Control-Allow-Origin: *\r\nVary: ", _VARY, b"\r\n",
            ))  # fmt: skip
        return self._headers

    def read_head(self, head: bytes) -> _Head | None:
        """:func:`read_head`, remembered: a keep-alive client sends the same head again and again."""
        known = self.heads.get(head)
        if known is None:
            known = read_head(head, self.max_body)
            if known is not None:
                if len(self.heads) >= _HEADS_KEPT:
                    self.heads.clear()
                self.heads[head] = known
        return known

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            cutoff = time.perf_counter() - KEEPALIVE_TIMEOUT
            for conn in list(self.connections):
                if not conn.busy and conn.last_active < cutoff:
                    conn.close()

    async def close(self, timeout: float) -> None:
        """Close every connection still read here: idle ones now, the others once their call is
        answered (at most ``timeout`` seconds)."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()


class CallConnection:
    """One client connection, read here until a request needs aiohttp (module docstring): an
    :class:`asyncio.Protocol` (by its methods: a compiled class cannot extend it)."""

    def __init__(self, calls: FastCalls) -> None:
        self.calls = calls
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        #: A request is being answered.
        self.busy = False
        self.eof = False
        self.closed = False
        self.write_paused = False
        self.read_paused = False
        self.last_active = time.perf_counter()

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.calls.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if not self.busy:
            self._next()
        elif len(self.buffer) > READ_AHEAD and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.busy and not self.buffer:
            return False  # nothing to answer: the transport closes itself
        if not self.busy:
            self._next()  # a request cut short is dropped with the connection
        return True  # answer what was sent first

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.calls.connections.discard(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy and not self.closed:
            self._next()

    # --- requests -----------------------------------------------------------------------------

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
        self.calls.connections.discard(self)

    def _next(self) -> None:
        """Start on the request at the head of the buffer, if it is all here."""
        if self.closed or self.write_paused:
            return
        buffer = self.buffer
        if not buffer:
            if self.eof or self.calls.closing:
                self.close()
            return
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._hand_over()
            elif self.eof:
                self.close()  # the client stopped sending in the middle of a head
            return  # the rest of the head is still coming
        head = self.calls.read_head(buffer[:end])
        if head is None:
            self._hand_over()
            return
        size = end + 4 + head.length
        if len(buffer) < size:
            if self.eof:
                self.close()  # the client stopped sending in the middle of a body
            return  # the rest of the body is still coming
        self.buffer = buffer[size:]
        self.busy = True
        self._start(_Request(buffer[:size], head, buffer[end + 4 : size]))

    def _hand_over(self, pending: bytes = b"") -> None:
        """Give the connection, and every byte not answered yet, to aiohttp's protocol."""
        transport = self.transport
        assert transport is not None
        self.calls.connections.discard(self)
        data = pending + self.buffer
        self.buffer = b""
        self.closed = True  # to this object
        protocol = self.calls.server()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.read_paused:
            transport.resume_reading()
        if self.write_paused:
            protocol.pause_writing()  # the transport tells the new protocol when to resume
        if data:
            protocol.data_received(data)
        if self.eof:
            protocol.eof_received()

    def _start(self, request: _Request) -> None:
        """Answer ``request``: without a task when the caller's token, the database's name and a
        link to the host node are at hand (the steady state of a keep-alive client), else by
        :meth:`_serve`, which may wait for them."""
        calls = self.calls
        gw = calls.gateway
        link = calls.link
        caller = gw.auth.known(request.head.authorization)
        known = calls.known_database
        info = known(request.head.name) if known is not None and caller is not None and link is not None else None
        if info is None or link is None or caller is None:
            calls.loop.create_task(self._serve(request))
            return
        started = time.perf_counter()
        try:
            args = request.body.decode("utf-8")
            future = link.start_call(info.identity, request.head.reducer, args, caller.identity, gw.connection_ids.new())
        except Exception:  # noqa: BLE001 - nothing was sent: _serve answers it (400, 503, …)
            calls.loop.create_task(self._serve(request))
            return
        future.add_done_callback(lambda done: self._finish(request, caller, link, done, started))

    def _finish(
        self, request: _Request, caller: Caller, link: LinkHostNode, future: asyncio.Future[bytes], started: float
    ) -> None:
        """(loop callback) The host node answered the call :meth:`_start` sent."""
        keep_alive = not request.head.close and not self.calls.closing
        try:
            try:
                reply = future.result()
            except ConnectionError as e:
                raise unreachable(e) from None
            answer, status = self._outcome(link.call_result(reply), caller, keep_alive)
        except Exception as e:  # noqa: BLE001 - answered as the middleware answers it
            answer, status = self._response(failure_response("POST", request.path, e), caller, keep_alive)
        self._answered(request, answer, status, started)

    async def _serve(self, request: _Request) -> None:
        started = time.perf_counter()
        gw = self.calls.gateway
        caller = gw.auth.known(request.head.authorization)
        if caller is None:
            try:
                caller = await gw.auth.from_credentials(request.head.authorization, None)
            except Exception:  # noqa: BLE001 - aiohttp's middleware answers it (400/401), as for any request
                caller = None
        if caller is None:
            self.busy = False
            if not self.closed:
                self._hand_over(request.raw)
            return
        keep_alive = not request.head.close and not self.calls.closing
        try:
            args = utf8_text(request.body)
            info = await gw.control.database(request.head.name)
            result = await gw.host.call(
                info.identity, request.head.reducer, args, caller=caller.identity, connection_id=gw.connection_ids.new()
            )
            answer, status = self._outcome(result, caller, keep_alive)
        except Exception as e:  # noqa: BLE001 - answered as the middleware answers it
            answer, status = self._response(failure_response("POST", request.path, e), caller, keep_alive)
        except BaseException:
            self.busy = False
            raise
        self._answered(request, answer, status, started)

    def _answered(self, request: _Request, answer: bytes, status: int, started: float) -> None:
        """Count the answer, write it, and go on to the next request."""
        now = time.perf_counter()
        stats = self.calls.gateway.stats
        stats.fast_calls += 1
        stats.request(CALL_ROUTE, "POST", status, now - started)
        self.busy = False
        self.last_active = now
        if self.closed:
            return  # the client went away; its call ran all the same
        transport = self.transport
        assert transport is not None
        transport.write(answer)
        if request.head.close or self.calls.closing:
            self.close()
            return
        if self.read_paused:
            # (paused only while a call is in flight: what waits may be a request still arriving)
            self.read_paused = False
            transport.resume_reading()
        self._next()

    def _outcome(self, result: CallResult, caller: Caller, keep_alive: bool) -> tuple[bytes, int]:
        """The response to a call's outcome and its status (raises the ApiError of a failed one)."""
        if result.outcome is not CallOutcome.COMMITTED:
            return self._response(call_response(result), caller, keep_alive)  # raises ApiError
        head = b"HTTP/1.1 200 OK\r\n%s: %d\r\n%s: %d\r\nContent-Length: 0\r\n" % (
            _ENERGY, result.energy_used, _DURATION, result.duration_micros,
        )  # fmt: skip
        return head + self._common(caller, keep_alive), 200

    def _response(self, response: web.Response, caller: Caller, keep_alive: bool) -> tuple[bytes, int]:
        """Any other response the route makes, as aiohttp writes it, and its status."""
        body = response.body
        assert body is None or isinstance(body, bytes)
        body = body or b""
        parts = [f"HTTP/1.1 {response.status} {response.reason}\r\n".encode()]
        for key, value in response.headers.items():
            if key.lower() != "content-length":
                parts.append(f"{key}: {value}\r\n".encode())
        parts.append(b"Content-Length: %d\r\n" % len(body))
        parts.append(self._common(caller, keep_alive))
        parts.append(body)
        return b"".join(parts), response.status

    def _common(self, caller: Caller, keep_alive: bool) -> bytes:
        """The headers every answer ends with (aiohttp's, then the response hook's) and the blank line."""
        calls = self.calls
        tail = calls.tails.get(caller.token)
        if tail is None:
            if len(calls.tails) >= _TAILS_KEPT:
                calls.tails.clear()
            tail = calls.tails[caller.token] = b"".join((
                b"spacetime-identity: ", caller.identity.to_hex().encode(), b"\r\n",
                b"spacetime-identity-token: ", caller.token.encode(), b"\r\n\r\n",
            ))  # fmt: skip
        if keep_alive:
            return calls.headers() + tail
        return calls.headers() + b"Connection: close\r\n" + tail
