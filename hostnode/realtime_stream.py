"""The WebSocket clients one gateway relays to this node, whatever carries their frames.

A gateway terminates WebSockets and relays each client's frames to the database's host node over
one stream: the gRPC ``Connect`` stream between machines (:mod:`hostnode.grpc_service`), or the
unix-socket link inside a split standalone server (:mod:`hostnode.link`). :class:`ClientStream`
is what both do with them — start each client with ``client_connected`` (holding the frames it
sends meanwhile), hand its frames to its :class:`~hostnode.realtime.Connection`, drain the
connection's outgoing frames into batches, and end it — leaving only the shape of the events to
the carrier (:meth:`ClientStream._frame_event`, :meth:`ClientStream._closed_event`).

Outgoing frames are batched per event-loop turn, and a frame that several clients receive (one
subscription update, encoded once) travels once with the list of its clients. A connection hands
frames that may go at once straight to the batch (its ``sink``, no task wake-up: a commit
fanned out to a thousand subscribers costs no thousand task steps), and so does a
``confirmed`` client's reply once its transaction is durable (the durability callback hands it
over: :meth:`hostnode.realtime.Connection._hold`); each client's pump task takes only what queued
behind such a reply, what waits for a quorum's durability, or what waits for the gateway. The batch the
carrier has not taken yet is bounded (:data:`MAX_PENDING_EVENTS`, :data:`MAX_PENDING_BYTES`,
give or take what one connection had queued): beyond it the connections are no longer drained, so their own bounded queues fill and their
slowest clients are cut off instead of this node buffering without end.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from clustermeta.aio import finish
from hostnode.realtime import CLOSE_MODULE_EXITED, CLOSE_TOO_MANY_REQUESTS, ClientParams, Connection
from hostnode.service import DatabaseNotFound, HostNode
from hostnode.worker import Overloaded
from sats.identity import Identity

__all__ = [
    "CLOSE_CONNECTING_BACKLOG",
    "CLOSE_DROP",
    "ClientStream",
    "MAX_CONNECTING_BYTES",
    "MAX_CONNECTING_MESSAGES",
    "MAX_PENDING_BYTES",
    "MAX_PENDING_EVENTS",
]

log = logging.getLogger(__name__)

#: Events (and bytes of frames) waiting for the gateway to take them before the connections stop
#: being drained (README, "Limits"): then each connection's own bounded queue fills instead.
MAX_PENDING_EVENTS = 65536
MAX_PENDING_BYTES = 64 << 20
#: Messages (and bytes) a client may send while ``client_connected`` still runs; they wait for
#: its connection (README, "Limits"). Beyond either the client is closed 1013.
MAX_CONNECTING_MESSAGES = 1024
MAX_CONNECTING_BYTES = 8 << 20
CLOSE_CONNECTING_BACKLOG = (
    1013, f"too many messages before the connection was accepted (limit {MAX_CONNECTING_MESSAGES} messages, "
    f"{MAX_CONNECTING_BYTES >> 20} MiB)",
)
#: The close code telling the gateway to drop the socket without a close frame
#: (``client_connected`` refused the client). 1006 is never sent on the wire.
CLOSE_DROP = 1006

E = TypeVar("E")


@dataclass
class _Client:
    ref: int
    database: Identity
    conn: Connection | None = None
    backlog: list[tuple[bytes, bool]] | None = None
    backlog_bytes: int = 0
    pump: asyncio.Task[None] | None = None
    gone: bool = False


class ClientStream(Generic[E]):
    """The clients of one gateway stream, each named by the gateway's ``ref`` for it.

    The carrier calls :meth:`connected`, :meth:`message` and :meth:`disconnected` as the
    gateway's events arrive and :meth:`end_of_batch` after each batch of them, takes
    :meth:`next_batch` for the gateway, calls :meth:`end` when the gateway is gone, and
    :meth:`close_all` last. Event loop only.
    """

    def __init__(self, node: HostNode) -> None:
        self.node = node
        self.clients: dict[int, _Client] = {}
        #: Client frames of the gateway's current batch, by client (see :meth:`message`).
        self._incoming: dict[int, list[tuple[bytes, bool]]] = {}
        self._events: list[E] = []
        #: Bytes of the frames in ``_events``.
        self._event_bytes = 0
        #: client ref → index of its last event in ``_events`` (frames merge only after it).
        self._last: dict[int, int] = {}
        #: id(frame) → index of its frame event in ``_events``.
        self._frames: dict[int, int] = {}
        self._keep: list[object] = []
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._ended = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- the carrier's event shapes -----------------------------------------------------------

    def _frame_event(self, ref: int, frame: bytes | str, data: bytes) -> E:
        """An event carrying ``data`` (``frame`` as bytes) to the client ``ref``."""
        raise NotImplementedError

    def _add_ref(self, event: E, ref: int) -> None:
        """Add the client ``ref`` to the receivers of a frame event."""
        raise NotImplementedError

    def _closed_event(self, ref: int, code: int, reason: str) -> E:
        """An event telling the gateway the server ended the client ``ref``."""
        raise NotImplementedError

    # --- gateway → host -----------------------------------------------------------------------

    def connected(self, ref: int, database: Identity, params: ClientParams) -> None:
        """A new client of ``database``: run ``client_connected`` (its frames wait meanwhile)."""
        client = self.clients[ref] = _Client(ref, database, backlog=[])
        self._spawn(self._connect(client, params))

    def message(self, ref: int, frame: bytes, text: bool) -> None:
        """A frame a client sent. A client's frames of one gateway batch go to its connection
        together at :meth:`end_of_batch` (one trip to the database's writer), in order with its
        other events (its disconnection hands them over first)."""
        frames = self._incoming.get(ref)
        if frames is None:
            self._incoming[ref] = [(frame, text)]
        else:
            frames.append((frame, text))

    def end_of_batch(self) -> None:
        """The gateway's batch is read: hand each client its frames."""
        incoming, self._incoming = self._incoming, {}
        for ref, frames in incoming.items():
            self.messages(ref, frames)

    def messages(self, ref: int, frames: list[tuple[bytes, bool]]) -> None:
        """Frames ``(data, is_text)`` a client sent, in order; they go to its connection together
        (one trip to the database's writer)."""
        client = self.clients.get(ref)
        if client is None:
            return
        if client.conn is None:
            if client.backlog is not None:
                client.backlog.extend(frames)
                client.backlog_bytes += sum(len(frame) for frame, _ in frames)
                if len(client.backlog) > MAX_CONNECTING_MESSAGES or client.backlog_bytes > MAX_CONNECTING_BYTES:
                    # _connect closes the connection once client_connected has run.
                    client.backlog, client.gone = None, True
                    self.clients.pop(ref, None)
                    self._closed(ref, *CLOSE_CONNECTING_BACKLOG)
            return
        self._handle(client, frames)

    def disconnected(self, ref: int) -> None:
        """The client's socket is gone: drop its subscriptions, run ``client_disconnected``."""
        frames = self._incoming.pop(ref, None)
        if frames is not None:
            self.messages(ref, frames)
        client = self.clients.pop(ref, None)
        if client is None:
            return
        client.gone = True
        if client.pump is not None:
            client.pump.cancel()
        if client.conn is not None:
            client.conn.sink = None
            self._spawn(client.conn.close())

    def end(self) -> None:
        """The gateway is gone: :meth:`next_batch` returns None once the batch is empty (frames
        of a batch it did not finish are dropped)."""
        self._incoming.clear()
        self._ended = True
        self._wake.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, client: _Client, params: ClientParams) -> None:
        try:
            result = await self.node.connect_client(client.database, params)
        except DatabaseNotFound:
            self.clients.pop(client.ref, None)
            self._closed(client.ref, *CLOSE_MODULE_EXITED)
            return
        except Overloaded as e:
            self.clients.pop(client.ref, None)
            self._closed(client.ref, CLOSE_TOO_MANY_REQUESTS[0], str(e)[:123])
            return
        except Exception as e:  # noqa: BLE001 - reported to the gateway as a close
            log.exception("connecting a WebSocket client failed")
            self.clients.pop(client.ref, None)
            self._closed(client.ref, 1011, str(e)[:123])
            return
        if not isinstance(result, Connection):
            self.clients.pop(client.ref, None)
            self._closed(client.ref, CLOSE_DROP, "")
            return
        client.conn = result
        if client.gone:
            await result.close()
            return
        backlog, client.backlog = client.backlog or [], None
        if backlog:
            self._handle(client, backlog)
        # Frames that may go at once join the batch straight from the hand-over; the pump takes
        # the rest (held for durability, or queued while the gateway does not take batches).
        result.sink = functools.partial(self._sink, client.ref)
        client.pump = asyncio.ensure_future(self._pump(client, result))

    def _handle(self, client: _Client, frames: list[tuple[bytes, bool]]) -> None:
        conn = client.conn
        assert conn is not None
        # The gateway says which kind of frame it was: text is decoded as JSON, binary as BSATN.
        datas: list[bytes | str] = []
        reason: str | None = None
        for frame, text in frames:
            if not text:
                datas.append(frame)
                continue
            try:
                datas.append(frame.decode("utf-8"))
            except UnicodeDecodeError as e:  # the gateway relays text frames as their UTF-8
                reason = f"text frame is not valid UTF-8: {e}"
                break
        if datas:
            reason = conn.handle_many(datas) or reason
        if reason is not None:
            conn.server_close(1011, reason)

    # --- host → gateway -----------------------------------------------------------------------

    async def _pump(self, client: _Client, conn: Connection) -> None:
        # Everything the connection has queued at once: one wake-up, and with ``confirmed`` one
        # durability wait, per batch rather than per frame (a wait that is not over yet costs
        # the commit log's sync thread a wake-up of this loop).
        while (frames := await conn.recv_many()) is not None:
            for frame in frames:
                self._frame(client.ref, frame)
            while len(self._events) >= MAX_PENDING_EVENTS or self._event_bytes >= MAX_PENDING_BYTES:
                # The gateway is not taking batches: stop draining, so the connections'
                # own bounded queues fill and their slowest clients are cut off.
                self._drained.clear()
                await self._drained.wait()
        self._closed(client.ref, conn.close_code, conn.close_reason)

    def _sink(self, ref: int, frames: list[bytes | str]) -> bool:
        if (
            len(self._events) + len(frames) > MAX_PENDING_EVENTS
            or self._event_bytes + sum(len(frame) for frame in frames) > MAX_PENDING_BYTES
        ):
            return False  # queued under the connection's own bounds; the pump takes them
        for frame in frames:
            self._frame(ref, frame)
        return True

    def _frame(self, ref: int, frame: bytes | str) -> None:
        i = self._frames.get(id(frame))
        if i is not None and i > self._last.get(ref, -1):
            self._add_ref(self._events[i], ref)
            self._last[ref] = i
            return
        data = frame.encode() if isinstance(frame, str) else frame
        self._events.append(self._frame_event(ref, frame, data))
        self._event_bytes += len(data)
        i = len(self._events) - 1
        self._frames[id(frame)] = i
        self._keep.append(frame)  # ids stay unique while the batch is open
        self._last[ref] = i
        self._wake.set()

    def _closed(self, ref: int, code: int, reason: str) -> None:
        self._events.append(self._closed_event(ref, code, reason))
        self._last[ref] = len(self._events) - 1
        self._wake.set()

    async def next_batch(self) -> list[E] | None:
        """Every event since the last batch (waits for one); None once the gateway is gone."""
        while not self._events:
            if self._ended:
                return None
            self._wake.clear()
            await self._wake.wait()
        events, self._events = self._events, []
        self._event_bytes = 0
        self._drained.set()
        self._last.clear()
        self._frames.clear()
        self._keep.clear()
        return events

    async def close_all(self) -> None:
        """The stream ended: every client of it is gone."""
        for ref in list(self.clients):
            self.disconnected(ref)
        for task in list(self._tasks):
            await finish(task)
