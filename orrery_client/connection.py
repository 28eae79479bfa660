"""``DbConnection``: one WebSocket v1 connection to a database, with its client cache.

The I/O shell around the pure parts (:mod:`sats.ws_v1` for messages, :mod:`orrery_client.cache`
for the rows). One reader task receives every server message and handles it in order
(``client-api.md`` §11 guarantees the order): subscription replies and transaction updates
change the cache, then the row callbacks run, then reducer callbacks, then the awaiting
caller (``call_reducer``, ``one_off_query``, ``SubscriptionHandle.applied``) is woken — so
after ``await conn.call_reducer(...)`` the cache already shows the reducer's effect.

Callbacks are plain functions (a coroutine function's result is scheduled as a task); an
exception in one is logged and does not stop the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp

from orrery_client.cache import ClientCache, RowChange, TableCache
from orrery_client.schema import ModuleSchema, ReducerSchema, SchemaError
from sats import ws_v1 as ws
from sats.errors import DecodeError, SatsError
from sats.identity import ConnectionId, Identity
from sats.json import loads

__all__ = [
    "DbConnection",
    "SubscriptionHandle",
    "ReducerEvent",
    "Event",
    "ClientError",
    "ConnectionLost",
    "SubscriptionFailed",
    "QueryFailed",
    "load_token",
    "save_token",
]

log = logging.getLogger("orrery_client")

BSATN_PROTOCOL = "v1.bsatn.spacetimedb"
JSON_PROTOCOL = "v1.json.spacetimedb"
#: How a TransactionUpdate names a transaction that was not a reducer call (SQL DML).
NO_REDUCER_ID = 0xFFFFFFFF


class ClientError(Exception):
    """Base class of the SDK's errors."""


class ConnectionLost(ClientError):
    """The connection closed before the answer arrived (or could not be established)."""


class SubscriptionFailed(ClientError):
    """The server rejected a subscription (``SubscriptionError``); the text is its message."""


class QueryFailed(ClientError):
    """A one-off query failed; the text is the server's message."""


# --------------------------------------------------------------------------- token persistence


def load_token(path: str | os.PathLike[str]) -> str | None:
    """The token saved at ``path``, or None when there is none."""
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def save_token(path: str | os.PathLike[str], token: str) -> None:
    """Save ``token`` at ``path`` (readable by the owner only; written atomically)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, p)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ReducerEvent:
    """A reducer call (or other transaction) as a TransactionUpdate reports it.

    ``status`` is ``"committed"``, ``"failed"`` (``message`` says why) or ``"out_of_energy"``;
    for a call made with ``notify=False`` that the server answers only on failure, the
    result is ``"sent"``. ``args`` are the decoded arguments (None if they did not decode);
    ``reducer`` is ``""`` for transactions that were not reducer calls (SQL DML).
    """

    reducer: str
    status: str
    message: str | None
    args: tuple[Any, ...] | None
    caller_identity: Identity | None
    caller_connection_id: ConnectionId | None
    timestamp: ws.Timestamp | None
    energy_used: int = 0
    duration_micros: int = 0
    request_id: int = 0

    @property
    def committed(self) -> bool:
        """True when the transaction committed."""
        return self.status == "committed"


@dataclass(frozen=True, slots=True)
class Event:
    """Why rows changed; passed as the first argument of every row callback.

    ``kind``: ``"reducer"`` (``reducer`` is set), ``"transaction"`` (a change without reducer
    details: light mode, SQL DML), ``"subscribe_applied"``, ``"unsubscribe_applied"``,
    ``"subscription_error"`` (the server dropped all subscriptions) or ``"reconnect"`` (the
    difference found when resubscribing after a reconnect).
    """

    kind: str
    reducer: ReducerEvent | None = None


# --------------------------------------------------------------------------- subscriptions


class SubscriptionHandle:
    """One ``SubscribeMulti`` query set: wait for it, watch it, end it."""

    def __init__(
        self,
        conn: DbConnection,
        query_id: int,
        queries: tuple[str, ...],
        on_applied: Callable[[SubscriptionHandle], Any] | None,
        on_error: Callable[[SubscriptionHandle, str], Any] | None,
        on_end: Callable[[SubscriptionHandle], Any] | None,
    ) -> None:
        self.conn = conn
        self.query_id = query_id
        self.queries = queries
        self.on_applied = on_applied
        self.on_error = on_error
        self.on_end = on_end
        #: ``"pending"``, ``"active"``, ``"ended"`` or ``"error"``.
        self.state = "pending"
        #: The server's message when ``state == "error"``.
        self.error: str | None = None
        loop = asyncio.get_running_loop()
        self._applied: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()

    @property
    def active(self) -> bool:
        """True once applied and until ended."""
        return self.state == "active"

    async def applied(self, timeout: float | None = 10.0) -> SubscriptionHandle:
        """Wait until the initial rows are in the cache; raises SubscriptionFailed on rejection."""
        await asyncio.wait_for(asyncio.shield(self._applied), timeout)
        return self

    async def unsubscribe(self, timeout: float | None = 10.0) -> None:
        """``UnsubscribeMulti``; returns once the server confirmed and the rows left the cache."""
        if self.state in ("ended", "error"):
            return
        if self.state == "pending":
            await self.applied(timeout)
        await self.conn._send(ws.UnsubscribeMulti(self.conn._next_request_id(), ws.QueryId(self.query_id)))
        await asyncio.wait_for(asyncio.shield(self._ended), timeout)

    def _set_applied(self) -> None:
        self.state = "active"
        if not self._applied.done():
            self._applied.set_result(None)

    def _set_error(self, message: str) -> None:
        self.state = "error"
        self.error = message
        for fut in (self._applied, self._ended):
            if not fut.done():
                fut.set_exception(SubscriptionFailed(message))
                fut.exception()  # mark retrieved: nobody may be waiting

    def _set_ended(self) -> None:
        self.state = "ended"
        if not self._ended.done():
            self._ended.set_result(None)

    def __repr__(self) -> str:
        return f"SubscriptionHandle(query_id={self.query_id}, state={self.state!r}, queries={self.queries!r})"


# --------------------------------------------------------------------------- the cache, as users see it


class _Callbacks:
    def __init__(self) -> None:
        self.insert: list[Callable[[Event, Any], Any]] = []
        self.delete: list[Callable[[Event, Any], Any]] = []
        self.update: list[Callable[[Event, Any, Any], Any]] = []


class TableHandle:
    """A table of the client cache: its rows and its change callbacks."""

    def __init__(self, conn: DbConnection, name: str) -> None:
        self._conn = conn
        self.name = name
        self.schema = conn.schema.table(name)
        self._cb = conn._callbacks.setdefault(name, _Callbacks())

    @property
    def _cache(self) -> TableCache:
        return self._conn._cache.table(self.name)

    def iter(self) -> list[Any]:
        """Every cached row (a namedtuple per row, attributes named after the columns)."""
        return list(self._cache.iter())

    def __iter__(self) -> Any:
        return iter(self.iter())

    def count(self) -> int:
        """How many distinct rows are cached."""
        return self._cache.count()

    def find(self, pk: Any) -> Any:
        """The cached row with primary key ``pk``, or None."""
        return self._cache.find(pk)

    def on_insert(self, cb: Callable[[Event, Any], Any]) -> Callable[[Event, Any], Any]:
        """Call ``cb(event, row)`` when a row enters the cache. Returns ``cb`` (usable as a decorator)."""
        self._cb.insert.append(cb)
        return cb

    def on_delete(self, cb: Callable[[Event, Any], Any]) -> Callable[[Event, Any], Any]:
        """Call ``cb(event, row)`` when a row leaves the cache."""
        self._cb.delete.append(cb)
        return cb

    def on_update(self, cb: Callable[[Event, Any, Any], Any]) -> Callable[[Event, Any, Any], Any]:
        """Call ``cb(event, old, new)`` when a row is replaced by one with the same primary key."""
        self._cb.update.append(cb)
        return cb

    def remove_callback(self, cb: Callable[..., Any]) -> None:
        """Forget ``cb`` (registered with any of the ``on_*`` methods)."""
        for lst in (self._cb.insert, self._cb.delete, self._cb.update):
            while cb in lst:
                lst.remove(cb)


class Db:
    """``conn.db``: the tables of the client cache."""

    def __init__(self, conn: DbConnection) -> None:
        self._conn = conn

    def table(self, name: str) -> TableHandle:
        """The table called ``name`` (SchemaError if the module has none)."""
        return TableHandle(self._conn, name)

    def __getattr__(self, name: str) -> TableHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.table(name)
        except SchemaError:
            raise AttributeError(name) from None


# --------------------------------------------------------------------------- the connection


def _ws_url(uri: str, database: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + f"/v1/database/{quote(database, safe='')}/subscribe"
    return urlunsplit((scheme, parts.netloc, path, urlencode(params), ""))


def _http_url(uri: str) -> str:
    parts = urlsplit(uri)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


class DbConnection:
    """A connection to one database. Create with :meth:`connect`; end with :meth:`close`."""

    def __init__(
        self,
        uri: str,
        database: str,
        *,
        token: str | None,
        token_store: str | os.PathLike[str] | None,
        protocol: str,
        compression: str,
        light: bool,
        confirmed: bool,
        reconnect: bool,
        timeout: float,
    ) -> None:
        if protocol not in ("bsatn", "json"):
            raise ValueError(f"protocol must be 'bsatn' or 'json', not {protocol!r}")
        self.compression = ws.Compression(compression)
        self.uri = _http_url(uri)
        self.database = database
        self.token = token
        self.token_store = Path(token_store) if token_store is not None else None
        self.protocol = protocol
        self.light = light
        self.confirmed = confirmed
        self.reconnect = reconnect
        self.timeout = timeout
        self._identity: Identity | None = None
        self._connection_id: ConnectionId | None = None
        self.schema: ModuleSchema
        self._cache: ClientCache
        self.db = Db(self)
        self._callbacks: dict[str, _Callbacks] = {}
        self._reducer_callbacks: dict[str, list[Callable[[ReducerEvent], Any]]] = {}
        self.on_disconnect: list[Callable[[DbConnection, BaseException | None], Any]] = []
        self.on_reconnect: list[Callable[[DbConnection], Any]] = []
        #: The close code and reason of the server's last close frame (None: none yet). A cluster
        #: gateway closes with 1012 when the database's leader changed: with ``reconnect`` the
        #: connection comes back by itself, at the new leader, and resubscribes.
        self.close_code: int | None = None
        self.close_reason = ""
        self._session: aiohttp.ClientSession | None = None
        self._sock: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._request_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._subs: dict[int, SubscriptionHandle] = {}
        self._calls: dict[int, tuple[str, asyncio.Future[ReducerEvent]]] = {}
        self._queries: dict[bytes, asyncio.Future[ws.OneOffQueryResponse]] = {}
        self._closing = False
        self._connected = asyncio.Event()
        #: While resubscribing after a reconnect: the cache being rebuilt, and the sets still due.
        self._fresh: ClientCache | None = None
        self._resync_due: set[int] = set()
        self._closed = asyncio.get_running_loop().create_future()

    # --- setup ------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        uri: str,
        database: str,
        *,
        token: str | None = None,
        token_store: str | os.PathLike[str] | None = None,
        protocol: str = "bsatn",
        compression: str = "Gzip",
        light: bool = False,
        confirmed: bool = False,
        reconnect: bool = False,
        timeout: float = 10.0,
        on_disconnect: Callable[[DbConnection, BaseException | None], Any] | None = None,
        on_reconnect: Callable[[DbConnection], Any] | None = None,
    ) -> DbConnection:
        """Connect to ``database`` on the server at ``uri`` (``http://host:port`` or ``ws://…``).

        ``token`` authenticates; without one, the token saved in ``token_store`` (a file path)
        is used, and without that the server issues a new identity, whose token is then saved
        there — so the next connect with the same ``token_store`` is the same identity.
        ``protocol`` is ``"bsatn"`` or ``"json"``; ``compression`` ``"None"``, ``"Gzip"`` or
        ``"Brotli"`` (binary protocol only); ``light`` asks for light transaction updates;
        ``reconnect`` re-establishes a dropped connection and resubscribes.
        """
        conn = cls(
            uri, database, token=token, token_store=token_store, protocol=protocol, compression=compression,
            light=light, confirmed=confirmed, reconnect=reconnect, timeout=timeout,
        )  # fmt: skip
        if on_disconnect is not None:
            conn.on_disconnect.append(on_disconnect)
        if on_reconnect is not None:
            conn.on_reconnect.append(on_reconnect)
        if conn.token is None and conn.token_store is not None:
            conn.token = load_token(conn.token_store)
        conn._session = aiohttp.ClientSession()
        try:
            conn.schema = await conn._fetch_schema()
            conn._cache = ClientCache(conn.schema)
            await conn._open()
        except BaseException:
            await conn._session.close()
            raise
        conn._reader = asyncio.create_task(conn._run(), name=f"orrery-client-{database}")
        return conn

    async def _fetch_schema(self) -> ModuleSchema:
        assert self._session is not None
        url = f"{self.uri}/v1/database/{quote(self.database, safe='')}/schema"
        try:
            async with self._session.get(
                url, params={"version": "9"}, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise ClientError(
                        f"GET {url} answered {resp.status}: {body.decode(errors='replace').strip()[:200]}"
                    )
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ConnectionLost(f"cannot reach {self.uri}: {e}") from None
        try:
            return ModuleSchema.from_json(loads(body))
        except DecodeError as e:
            raise SchemaError(f"malformed module schema: {e}") from None

    async def _open(self) -> None:
        """Open the socket and read the IdentityToken (saving the token)."""
        assert self._session is not None
        params = {"compression": self.compression.value}
        if self.light:
            params["light"] = "true"
        if self.confirmed:
            params["confirmed"] = "true"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = _ws_url(self.uri, self.database, params)
        proto = JSON_PROTOCOL if self.protocol == "json" else BSATN_PROTOCOL
        try:
            sock = await self._session.ws_connect(
                url, protocols=(proto,), headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                max_msg_size=0, heartbeat=None, autoping=True,
            )  # fmt: skip
        except aiohttp.WSServerHandshakeError as e:
            raise ClientError(f"the server refused the connection: {e.status} {e.message}") from None
        except (aiohttp.ClientError, OSError) as e:
            raise ConnectionLost(f"cannot connect to {url}: {e}") from None
        try:
            msg = await self._receive(sock, self.timeout)
        except BaseException:
            await sock.close()
            raise
        if not isinstance(msg, ws.IdentityToken):
            await sock.close()
            raise ClientError(f"expected IdentityToken first, got {type(msg).__name__}")
        if self._identity is not None and msg.identity != self._identity:
            log.warning("reconnected as a different identity %s", msg.identity.to_hex())
        self._identity = msg.identity
        self._connection_id = msg.connection_id
        if msg.token != self.token:
            self.token = msg.token
        if self.token_store is not None and load_token(self.token_store) != msg.token:
            save_token(self.token_store, msg.token)
        self._sock = sock
        self._connected.set()

    async def _receive(self, sock: aiohttp.ClientWebSocketResponse, timeout: float | None) -> ws.ServerMessage | None:
        """The next server message; None when the socket closed."""
        while True:
            m = await sock.receive(timeout)
            if m.type is aiohttp.WSMsgType.BINARY:
                return ws.decode_server_frame(m.data)
            if m.type is aiohttp.WSMsgType.TEXT:
                return ws.decode_server_message_json(m.data)
            if m.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            if m.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionLost(f"websocket error: {m.data}")
            if m.type is aiohttp.WSMsgType.CLOSE:
                self.close_code, self.close_reason = m.data, m.extra or ""
                log.info("%s: the server closed the connection: %s %s", self.database, m.data, m.extra or "")
            return None  # CLOSE / CLOSING / CLOSED

    # --- public API ---------------------------------------------------------------------------

    @property
    def identity(self) -> Identity:
        """This client's identity (from the server's IdentityToken)."""
        assert self._identity is not None, "not connected yet"
        return self._identity

    @property
    def connection_id(self) -> ConnectionId:
        """The id of the current connection (a new one after each reconnect)."""
        assert self._connection_id is not None, "not connected yet"
        return self._connection_id

    @property
    def is_connected(self) -> bool:
        """True while the socket is open."""
        return self._sock is not None and not self._sock.closed

    async def subscribe(
        self,
        queries: str | Sequence[str],
        *,
        on_applied: Callable[[SubscriptionHandle], Any] | None = None,
        on_error: Callable[[SubscriptionHandle, str], Any] | None = None,
        on_end: Callable[[SubscriptionHandle], Any] | None = None,
    ) -> SubscriptionHandle:
        """Send ``SubscribeMulti`` for ``queries`` (one SQL string or several) and return its handle.

        The handle's rows reach the cache when the server applies it (``await handle.applied()``
        waits for that; ``on_applied(handle)`` is called then, ``on_error(handle, message)`` if
        the server rejects it).
        """
        qs = (queries,) if isinstance(queries, str) else tuple(queries)
        handle = SubscriptionHandle(self, next(self._query_ids), qs, on_applied, on_error, on_end)
        self._subs[handle.query_id] = handle
        try:
            await self._send(ws.SubscribeMulti(qs, self._next_request_id(), ws.QueryId(handle.query_id)))
        except BaseException:
            self._subs.pop(handle.query_id, None)
            raise
        return handle

    async def subscribe_all_tables(self, **kw: Any) -> SubscriptionHandle:
        """Subscribe to every public table (``SELECT * FROM *``)."""
        return await self.subscribe("SELECT * FROM *", **kw)

    def on_reducer(self, name: str, cb: Callable[[ReducerEvent], Any]) -> Callable[[ReducerEvent], Any]:
        """Call ``cb(event)`` for every call of reducer ``name`` this connection hears of
        (its own, and other clients' that changed subscribed rows)."""
        self._reducer_callbacks.setdefault(name, []).append(cb)
        return cb

    async def call_reducer(
        self,
        name: str,
        *args: Any,
        notify: bool = True,
        timeout: float | None = None,
        on_result: Callable[[ReducerEvent], Any] | None = None,
    ) -> ReducerEvent:
        """Call reducer ``name`` with ``args`` (Python values, see :mod:`orrery_client.values`).

        Returns the outcome: ``status`` ``"committed"``, ``"failed"`` (``message``) or
        ``"out_of_energy"``; ``on_result`` is also called with it. ``notify=False`` sends the
        ``NoSuccessNotify`` flag: the server then says nothing on success, and the result is
        ``"sent"`` as soon as the call is on its way. ``timeout`` defaults to the connection's.
        """
        reducer = self.schema.reducer(name)
        raw_args = reducer.encode_args_json(args) if self.protocol == "json" else reducer.encode_args_bsatn(args)
        request_id = self._next_request_id()
        flags = ws.CallReducerFlags.FULL_UPDATE if notify else ws.CallReducerFlags.NO_SUCCESS_NOTIFY
        if not notify:
            await self._send(ws.CallReducer(name, raw_args, request_id, flags))
            result = ReducerEvent(name, "sent", None, tuple(args), self.identity, self.connection_id, None,
                                  request_id=request_id)  # fmt: skip
            if on_result is not None:
                _run_callback(on_result, result)
            return result
        fut: asyncio.Future[ReducerEvent] = asyncio.get_running_loop().create_future()
        self._calls[request_id] = (name, fut)
        try:
            await self._send(ws.CallReducer(name, raw_args, request_id, flags))
            result = await asyncio.wait_for(asyncio.shield(fut), self.timeout if timeout is None else timeout)
        finally:
            self._calls.pop(request_id, None)
        if on_result is not None:
            _run_callback(on_result, result)
        return result

    async def one_off_query(self, sql: str, *, timeout: float | None = None) -> list[Any]:
        """Run ``sql`` once (subscription grammar) and return its rows; QueryFailed on error."""
        message_id = secrets.token_bytes(16)
        fut: asyncio.Future[ws.OneOffQueryResponse] = asyncio.get_running_loop().create_future()
        self._queries[message_id] = fut
        try:
            await self._send(ws.OneOffQuery(message_id, sql))
            resp = await asyncio.wait_for(asyncio.shield(fut), self.timeout if timeout is None else timeout)
        finally:
            self._queries.pop(message_id, None)
        if resp.error is not None:
            raise QueryFailed(resp.error)
        rows: list[Any] = []
        for t in resp.tables:
            rows += [row for _, row in self._decode_rows(t.table_name, t.rows)]
        return rows

    async def close(self) -> None:
        """Close the connection (no reconnect); pending calls fail with ConnectionLost."""
        self._closing = True
        sock = self._sock
        if sock is not None and not sock.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.close(), 3.0)
        if self._reader is not None:
            if not self._connected.is_set():
                self._reader.cancel()  # between reconnect attempts: nothing left to read
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> DbConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, timeout: float | None = 10.0) -> None:
        """Wait until the connection is up (again, after a drop with ``reconnect=True``)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    # --- sending ------------------------------------------------------------------------------

    def _next_request_id(self) -> int:
        return next(self._request_ids) & 0xFFFFFFFF

    async def _send(self, msg: ws.ClientMessage) -> None:
        sock = self._sock
        if sock is None or sock.closed:
            if self.reconnect and not self._closing:
                await self.wait_connected(self.timeout)
                sock = self._sock
            if sock is None or sock.closed:
                raise ConnectionLost("not connected")
        async with self._send_lock:
            try:
                if self.protocol == "json":
                    await sock.send_str(ws.encode_client_message_json(msg))
                else:
                    await sock.send_bytes(ws.encode_client_message_bsatn(msg))
            except (ConnectionError, aiohttp.ClientError) as e:
                raise ConnectionLost(f"cannot send: {e}") from None

    # --- the reader -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            error: BaseException | None = None
            sock = self._sock
            assert sock is not None
            try:
                while True:
                    msg = await self._receive(sock, None)
                    if msg is None:
                        break
                    self._handle(msg)
            except asyncio.CancelledError:
                raise
            except (ClientError, SatsError, aiohttp.ClientError, OSError) as e:
                error = e
                log.warning("connection to %s failed: %s", self.database, e)
            self._connected.clear()
            if not sock.closed:
                with contextlib.suppress(Exception):
                    await sock.close()
            # A reducer call in flight may have committed: the caller hears the connection went,
            # not a result (with ``reconnect`` its rows arrive, exactly once, on resubscription).
            lost = ConnectionLost("the connection closed before the answer arrived; a call may or may not have run")
            self._fail_pending(lost)
            if not self._closing:
                for cb in list(self.on_disconnect):
                    _run_callback(cb, self, error)
            if self._closing or not self.reconnect:
                return
            if not await self._reconnect():
                return

    async def _reconnect(self) -> bool:
        delay = 0.1
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self._open()
            except (ClientError, aiohttp.ClientError, OSError, TimeoutError, SatsError) as e:
                log.info("reconnect to %s failed: %s", self.database, e)
                delay = min(delay * 2, 2.0)
                continue
            # Resubscribe every live set; rows are rebuilt aside and compared once all are back.
            live = [h for h in self._subs.values() if h.state in ("active", "pending")]
            self._fresh = ClientCache(self.schema)
            self._resync_due = {h.query_id for h in live}
            try:
                for h in live:
                    await self._send(ws.SubscribeMulti(h.queries, self._next_request_id(), ws.QueryId(h.query_id)))
            except ConnectionLost:
                continue
            if not self._resync_due:
                self._finish_resync()
            for cb in list(self.on_reconnect):
                _run_callback(cb, self)
            return True
        return False

    def _fail_pending(self, error: BaseException) -> None:
        for _, fut in self._calls.values():
            if not fut.done():
                fut.set_exception(error)
        for qfut in self._queries.values():
            if not qfut.done():
                qfut.set_exception(error)
        self._calls.clear()
        self._queries.clear()
        if not self.reconnect or self._closing:
            for h in self._subs.values():
                if h.state in ("pending", "active"):
                    h._set_error("the connection closed")
            self._subs.clear()

    # --- handling server messages -----------------------------------------------------------

    def _decode_rows(self, table: str, rows: ws.RowList) -> list[tuple[bytes, Any]]:
        try:
            t = self.schema.table(table)
        except SchemaError:
            log.warning("rows of unknown table `%s` ignored", table)
            return []
        if isinstance(rows, ws.BsatnRowList):
            return [t.decode_bsatn(r) for r in rows]
        return [t.decode_json(r) for r in rows]

    def _triples(self, update: ws.DatabaseUpdate) -> Iterable[tuple[str, list[tuple[bytes, Any]], list[tuple[bytes, Any]]]]:
        for tu in update.tables:
            deletes: list[tuple[bytes, Any]] = []
            inserts: list[tuple[bytes, Any]] = []
            for qu in tu.updates:
                deletes += self._decode_rows(tu.table_name, qu.deletes)
                inserts += self._decode_rows(tu.table_name, qu.inserts)
            yield tu.table_name, deletes, inserts

    def _apply(self, update: ws.DatabaseUpdate, event: Event) -> None:
        if self._fresh is not None:
            self._fresh.apply(self._triples(update))
            return
        self._report(self._cache.apply(self._triples(update)), event)

    def _report(self, changes: list[RowChange], event: Event) -> None:
        for ch in changes:
            cbs = self._callbacks.get(ch.table)
            if cbs is None:
                continue
            if ch.kind == "insert":
                for cb in list(cbs.insert):
                    _run_callback(cb, event, ch.row)
            elif ch.kind == "delete":
                for cb in list(cbs.delete):
                    _run_callback(cb, event, ch.row)
            else:
                for ucb in list(cbs.update):
                    _run_callback(ucb, event, ch.old, ch.row)

    def _finish_resync(self) -> None:
        fresh, self._fresh = self._fresh, None
        if fresh is not None:
            self._report(self._cache.replace(fresh), Event("reconnect"))

    def _handle(self, msg: ws.ServerMessage) -> None:
        if isinstance(msg, ws.TransactionUpdate):
            self._on_transaction(msg)
        elif isinstance(msg, ws.TransactionUpdateLight):
            self._apply(msg.update, Event("transaction"))
        elif isinstance(msg, ws.SubscribeMultiApplied):
            self._on_applied(msg)
        elif isinstance(msg, ws.UnsubscribeMultiApplied):
            h = self._subs.pop(msg.query_id.id, None)
            self._apply(msg.update, Event("unsubscribe_applied"))
            if h is not None:
                h._set_ended()
                if h.on_end is not None:
                    _run_callback(h.on_end, h)
        elif isinstance(msg, ws.SubscriptionError):
            self._on_subscription_error(msg)
        elif isinstance(msg, ws.OneOffQueryResponse):
            fut = self._queries.pop(msg.message_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, ws.IdentityToken):
            log.warning("unexpected second IdentityToken ignored")
        else:
            log.debug("ignored %s", type(msg).__name__)

    def _on_applied(self, msg: ws.SubscribeMultiApplied) -> None:
        h = self._subs.get(msg.query_id.id)
        self._apply(msg.update, Event("subscribe_applied"))
        if msg.query_id.id in self._resync_due:
            self._resync_due.discard(msg.query_id.id)
            if not self._resync_due:
                self._finish_resync()
        if h is not None and h.state == "pending":
            h._set_applied()
            if h.on_applied is not None:
                _run_callback(h.on_applied, h)

    def _on_subscription_error(self, msg: ws.SubscriptionError) -> None:
        if msg.query_id is None:
            # Every subscription of this connection was dropped (B.4).
            handles = list(self._subs.values())
            self._subs.clear()
            self._resync_due.clear()
            self._fresh = None
            self._report(self._cache.clear(), Event("subscription_error"))
        else:
            h = self._subs.pop(msg.query_id, None)
            handles = [h] if h is not None else []
            if msg.query_id in self._resync_due:
                self._resync_due.discard(msg.query_id)
                if not self._resync_due:
                    self._finish_resync()
        for h in handles:
            h._set_error(msg.error)
            if h.on_error is not None:
                _run_callback(h.on_error, h, msg.error)
            elif msg.query_id is not None:
                log.warning("subscription %s failed: %s", h.queries, msg.error)

    def _reducer_event(self, msg: ws.TransactionUpdate) -> ReducerEvent:
        status = msg.status
        if isinstance(status, ws.Committed):
            kind, message = "committed", None
        elif isinstance(status, ws.Failed):
            kind, message = "failed", status.message
        else:
            kind, message = "out_of_energy", None
        call = msg.reducer_call
        reducer: ReducerSchema | None = self.schema.reducers.get(call.reducer_name)
        args = reducer.decode_args(call.args) if reducer is not None and call.reducer_id != NO_REDUCER_ID else None
        return ReducerEvent(
            call.reducer_name, kind, message, args, msg.caller_identity, msg.caller_connection_id, msg.timestamp,
            msg.energy_quanta_used.quanta, msg.total_host_execution_duration.micros, call.request_id,
        )  # fmt: skip

    def _on_transaction(self, msg: ws.TransactionUpdate) -> None:
        event = self._reducer_event(msg)
        name = event.reducer
        if name == "<none>" and event.status == "failed":
            log.warning("the server reported a failure: %s", event.message)
            return
        if isinstance(msg.status, ws.Committed):
            self._apply(msg.status.database_update, Event("reducer" if name else "transaction", event))
        for cb in list(self._reducer_callbacks.get(name, ())):
            _run_callback(cb, event)
        if msg.caller_connection_id != self._connection_id or msg.caller_identity != self._identity:
            return
        entry = self._calls.get(event.request_id)
        if entry is None or entry[0] != name:
            # Resolution errors (and 1.12's failures) carry request id 0: the oldest call of that name.
            entry = next(((n, f) for n, f in self._calls.values() if n == name and not f.done()), None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(event)


def _run_callback(cb: Callable[..., Any], *args: Any) -> None:
    try:
        result = cb(*args)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(_log_task_error)
    except Exception:
        log.exception("callback %r failed", cb)


def _log_task_error(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("callback task failed", exc_info=task.exception())
