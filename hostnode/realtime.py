"""WebSocket v1 clients of one database (client-api.md §9–§11): the per-database realtime hub.

:class:`RealtimeHub` lives with its database and is driven **only on the writer thread**: it
owns the :class:`~hostnode.subscriptions.SubscriptionManager`, runs ``client_connected`` /
``client_disconnected``, answers every client message, and turns each commit (through
:func:`~hostnode.subscriptions.attach`) into server messages. Each distinct message is encoded
once per (update, protocol, compression) and the same frame object is handed to every
connection that receives it.

:class:`Connection` is the asyncio side of one client: the gateway feeds it the frames it
receives (:meth:`Connection.handle`, which decodes them and queues the work on the writer
thread, never waiting) and drains its outgoing frames (:meth:`Connection.recv`). The hub never
blocks on a connection: frames travel to the event loop with ``call_soon_threadsafe`` into a
bounded per-connection queue, and a connection whose queue overflows is cut off with a close
reason saying so (:data:`CLOSE_TOO_SLOW`). With ``confirmed=true`` each data message is held
until its transaction is durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hostnode.commitlog import LOOP_CALLBACKS
from hostnode.database import DatabaseError, ReducerOutcome, Status
from hostnode.durability import QuorumDurability, ReplicationError
from hostnode.stats import SQL, SUBSCRIBE, UNSUBSCRIBE, UPDATE
from hostnode.subscriptions import SubscriptionManager, attach, wire, writer_view
from hostnode.subscriptions import results as r
from hostnode.subscriptions.manager import CommitUpdates
from hostnode.worker import Overloaded
from sats import ws_v1 as ws
from sats.errors import EncodeError
from sats.identity import ConnectionId, Identity

if TYPE_CHECKING:
    from hostnode.database import Database
    from hostnode.migrate import MigrationPlan

log = logging.getLogger(__name__)

__all__ = [
    "CLOSE_LEADER_CHANGED",
    "CLOSE_MODULE_EXITED",
    "CLOSE_TOO_MANY_REQUESTS",
    "CLOSE_SERVER_FULL",
    "CLOSE_TOO_SLOW",
    "ClientParams",
    "Connection",
    "OutgoingBudget",
    "RealtimeHub",
]

#: ``reducer_id`` of a call that never resolved to a reducer (and of non-reducer transactions).
NO_REDUCER_ID = 0xFFFFFFFF
#: Outgoing messages a connection may have queued before it is disconnected (§9; README, "Limits").
MAX_OUTGOING_MESSAGES = int(os.environ.get("ORRERY_WS_MAX_QUEUED_MESSAGES", "16384"))
#: ... and outgoing bytes.
MAX_OUTGOING_BYTES = int(os.environ.get("ORRERY_WS_MAX_QUEUED_BYTES", str(16 << 20)))
#: ... and the outgoing bytes of every connection of the process together.
MAX_TOTAL_OUTGOING_BYTES = int(os.environ.get("ORRERY_WS_MAX_QUEUED_BYTES_TOTAL", str(256 << 20)))
#: Incoming messages waiting for the writer thread before the client is told to slow down.
MAX_INCOMING_MESSAGES = 16384

CLOSE_MODULE_EXITED = (1001, "module exited")
CLOSE_TOO_MANY_REQUESTS = (1013, "too many requests")
CLOSE_TOO_SLOW = (1008, "client too far behind: outgoing message queue is full")
CLOSE_SERVER_FULL = (1008, "client too far behind: the server's memory for slow clients is full")
#: This node stopped leading the database (failover, transfer, lost lease): the client should
#: reconnect, and the gateway will route it to the new leader.
CLOSE_LEADER_CHANGED = (1012, "database leader changed; reconnect")

Frame = bytes | str


class Submit(Protocol):
    """:meth:`hostnode.worker.DatabaseWorker.submit`."""

    def __call__(self, fn: Callable[[Database], Any], *, limited: bool = False) -> Future[Any]: ...


class Writer(Protocol):
    """What the hub uses of its database's :class:`~hostnode.worker.DatabaseWorker`."""

    waiting: dict[str, int]

    def submit(self, fn: Callable[[Database], Any], *, limited: bool = False) -> Future[Any]: ...

    def admit(self) -> None: ...

    def post(self, fn: Callable[[Database], object]) -> None: ...


#: The hub's key in ``DatabaseWorker.waiting``.
_WAITING = "ws"


@dataclass
class OutgoingBudget:
    """The bytes queued for every WebSocket client of a process, against one limit.

    Each client's own queue is bounded, but N slow clients could still hold N times that; this
    counter bounds their sum. Once it is over ``limit``, a client that is handed a frame while
    another is waiting for it (one that is not keeping up, or that was handed several at once)
    is disconnected (:data:`CLOSE_SERVER_FULL`), and its frames are released; clients that keep
    up hold nothing between messages and are not touched. Event loop only: a counter, no scan.
    """

    limit: int = MAX_TOTAL_OUTGOING_BYTES
    queued: int = 0


@dataclass(frozen=True)
class ClientParams:
    """Who connects and how (the ``/subscribe`` query and the authenticated caller)."""

    identity: Identity
    token: str
    connection_id: int
    json: bool = False
    compression: ws.Compression = ws.Compression.BROTLI
    light: bool = False
    confirmed: bool = False
    jwt_payload: bytes | None = None


@dataclass(slots=True, init=False)
class _Caller:
    # (``__init__`` written out here and in _Encodings: ``dataclass``'s own is interpreted
    # Python even when this module is compiled, and these are made for every call.)
    conn: Connection
    request_id: int
    flags: ws.CallReducerFlags
    json_args: str | None

    def __init__(self, conn: Connection, request_id: int, flags: ws.CallReducerFlags, json_args: str | None) -> None:
        self.conn = conn
        self.request_id = request_id
        self.flags = flags
        self.json_args = json_args


@dataclass(slots=True, init=False)
class _Call:
    """A client's ``CallReducer`` as :func:`read_call` reads it off a binary frame — the
    message clients send most — without ``ws.CallReducer``'s frozen-dataclass constructor
    (8k instructions a call, interpreted); the hub answers both alike."""

    reducer: str
    args: bytes
    request_id: int
    flags: ws.CallReducerFlags

    def __init__(self, reducer: str, args: bytes, request_id: int, flags: ws.CallReducerFlags) -> None:
        self.reducer = reducer
        self.args = args
        self.request_id = request_id
        self.flags = flags


#: A client message as the hub receives it.
Incoming = ws.ClientMessage | _Call

_CALL_FLAGS = (ws.CallReducerFlags.FULL_UPDATE, ws.CallReducerFlags.NO_SUCCESS_NOTIFY)


def _u32(data: bytes, i: int) -> int:
    return data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24


def read_call(data: bytes) -> _Call | None:
    """A well-formed binary ``CallReducer`` frame (tag 0; name, arguments, request id, flags);
    None for anything else, which :func:`sats.ws_v1.decode_client_message_bsatn` then reads or
    refuses with its own message."""
    end = len(data)
    if end < 14 or data[0] != 0:
        return None
    p = 5 + _u32(data, 1)
    if p + 9 > end:
        return None
    q = p + 4 + _u32(data, p)
    if q + 5 != end or data[q + 4] > 1:
        return None
    try:
        name = data[5:p].decode()
    except UnicodeDecodeError:
        return None
    return _Call(name, data[p + 4 : q], _u32(data, q), _CALL_FLAGS[data[q + 4]])


@dataclass(init=False)
class _Encodings:
    """Frames of one message, per (protocol, compression), encoded on first use."""

    msg: ws.ServerMessage
    frames: dict[tuple[bool, ws.Compression], Frame]

    def __init__(self, msg: ws.ServerMessage) -> None:
        self.msg = msg
        self.frames = {}

    def frame(self, conn: Connection) -> Frame:
        p = conn.params
        key = (p.json, ws.Compression.NONE if p.json else p.compression)
        f = self.frames.get(key)
        if f is None:
            f = self.frames[key] = encode(self.msg, p.json, p.compression)
        return f


def failure_update(
    p: ClientParams, name: str, message: str, micros: int = 0, request_id: int = 0
) -> ws.TransactionUpdate:
    """A ``failed`` TransactionUpdate for a call of ``name`` that never ran a reducer."""
    return ws.TransactionUpdate(
        ws.Failed(message),
        ws.Timestamp(time.time_ns() // 1000),
        p.identity,
        ConnectionId(p.connection_id),
        ws.ReducerCallInfo(name, NO_REDUCER_ID, "[]" if p.json else b"", request_id),
        ws.EnergyQuanta.ZERO,
        ws.TimeDuration(micros),
    )


def committed_caller_update_bsatn(
    timestamp_micros: int,
    caller_identity: Identity,
    caller_connection_id: int,
    reducer_name: str,
    reducer_id: int,
    args: bytes,
    request_id: int,
    energy_quanta_used: int,
    duration_micros: int,
) -> bytes:
    """The BSATN of ``TransactionUpdate(Committed(DatabaseUpdate([])), …)`` — what a caller
    hears of its own committed call when no row it subscribes to changed — built without the
    message objects (byte-identical to :func:`sats.ws_v1.encode_server_message_bsatn` of that
    message)."""
    name = reducer_name.encode()
    try:
        return b"".join((
            b"\x01\x00\x00\x00\x00\x00",  # TransactionUpdate, Committed, zero tables
            timestamp_micros.to_bytes(8, "little", signed=True),
            caller_identity.value.to_bytes(32, "little"),
            caller_connection_id.to_bytes(16, "little"),
            len(name).to_bytes(4, "little"), name,
            reducer_id.to_bytes(4, "little"),
            len(args).to_bytes(4, "little"), args,
            request_id.to_bytes(4, "little"),
            energy_quanta_used.to_bytes(16, "little"),
            duration_micros.to_bytes(8, "little", signed=True),
        ))  # fmt: skip
    except OverflowError as e:
        raise EncodeError(f"TransactionUpdate: a number does not fit its field: {e}") from None


def frame_bsatn(bsatn: bytes, compression: ws.Compression) -> bytes:
    """:func:`sats.ws_v1.frame_server_message`, without a call into it for a frame that is not
    compressed (every small one)."""
    if compression is ws.Compression.NONE or len(bsatn) <= ws.COMPRESSION_THRESHOLD:
        return b"\x00" + bsatn
    return ws.frame_server_message(bsatn, compression)


def encode(msg: ws.ServerMessage, json: bool, compression: ws.Compression) -> Frame:
    """A server message as a text frame (JSON) or a binary frame with its compression tag."""
    if json:
        return ws.encode_server_message_json(msg)
    return frame_bsatn(ws.encode_server_message_bsatn(msg), compression)


class RealtimeHub:
    """The WebSocket clients of one database (writer thread only, except :meth:`shutdown`)."""

    def __init__(self, db: Database, writer: Writer) -> None:
        self.db = db
        self.stats = db.stats
        self.writer = writer
        self.submit: Submit = writer.submit
        self.manager = SubscriptionManager.for_database(db)
        self.connections: set[Connection] = set()
        self.closed = False
        self._caller: _Caller | None = None
        self._outbox: dict[Connection, list[tuple[Frame, int | None]]] = {}
        #: Frames handed to each event loop and not yet pushed (guarded by the lock).
        self._handoff: dict[
            asyncio.AbstractEventLoop, list[tuple[Connection, list[tuple[Frame, int | None]]]]
        ] = {}
        self._handoff_lock = threading.Lock()
        #: Inside :meth:`handle_many`: frames are handed over once, at its end.
        self._batching = False
        #: Clients' messages waiting for the writer (:meth:`enqueue`), and whether a job that
        #: will take them is queued already (guarded by the lock).
        self._incoming: list[tuple[Connection, list[Incoming], float]] = []
        self._incoming_job = False
        self._incoming_lock = threading.Lock()
        attach(self.manager, db, self._deliver)
        db.on_program_update.append(self._program_updated)

    # --- connections (writer thread) ----------------------------------------------------------

    def connect(self, conn: Connection) -> ReducerOutcome:
        """Run ``client_connected``; when it commits, register ``conn`` and queue IdentityToken
        (with ``confirmed``, held like any data message until that commit is durable)."""
        p = conn.params
        outcome = self.db.client_connected(p.identity, p.connection_id, p.jwt_payload)
        if outcome.committed:
            self.manager.connect(conn, p.identity, p.connection_id)
            self.connections.add(conn)
            token = ws.IdentityToken(p.identity, p.token, ConnectionId(p.connection_id))
            self._send(conn, encode(token, p.json, p.compression), outcome.offset, None)
            self._flush()
        return outcome

    def disconnect(self, conn: Connection) -> None:
        """Forget ``conn``'s subscriptions and run ``client_disconnected`` (errors swallowed)."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.manager.disconnect(conn)
        self._outbox.pop(conn, None)
        try:
            self.db.client_disconnected(conn.params.identity, conn.params.connection_id)
        except Exception:
            log.exception("client_disconnected failed for %s", conn.params.identity.to_hex())
        self._flush()

    def _program_updated(self, plan: MigrationPlan) -> None:
        """The module was republished without clearing. When its RLS rules changed, every
        client is disconnected as 1.12 does it (``client_disconnected`` of the new module, then
        1001 ``module exited``); otherwise clients stay and their queries are recompiled."""
        if plan.disconnects_clients:
            for conn in list(self.connections):
                self.disconnect(conn)
                _close_soon(conn, *CLOSE_MODULE_EXITED)
        with writer_view(self.db) as tx:
            failed = dict(self.manager.module_updated(tx, self.db.row_level_security))
        for conn in self.connections:  # holders of queries that no longer compile
            err = failed.get(conn)
            if err is not None:
                self._reply(conn, wire.reply(err, self._row_encoder(conn.params.json, {})), workload=SUBSCRIBE)
        self._flush()

    # --- requests (event loop → writer thread) ------------------------------------------------

    def enqueue(self, conn: Connection, msgs: list[Incoming], received: float) -> None:
        """(event loop) Queue messages ``conn`` sent for the writer thread. Every client's
        messages queued before the writer takes them are one job — the clients of one loop turn,
        or of everything that arrived while the writer was busy — and its frames go back in one
        hand-over; each client's messages stay in order. Each call counts as one request against
        the writer's bound: past it, :class:`Overloaded` is raised and nothing is queued."""
        writer = self.writer
        writer.admit()
        with self._incoming_lock:
            self._incoming.append((conn, msgs, received))
            submit = not self._incoming_job
            self._incoming_job = True
            writer.waiting[_WAITING] = len(self._incoming) - 1
        if submit:
            writer.post(self._run_incoming)  # admitted above, call by call; nobody waits for the job

    def _run_incoming(self, db: Database) -> None:
        """(writer thread) Answer every queued message, then hand the frames over once."""
        with self._incoming_lock:
            batch, self._incoming = self._incoming, []
            self._incoming_job = False
            self.writer.waiting[_WAITING] = 0
        self._batching = True
        try:
            for conn, msgs, received in batch:
                try:
                    self._handle_all(conn, msgs, received)
                finally:
                    conn._completed += len(msgs)  # written by the writer thread only
        finally:
            self._batching = False
            self._flush()

    # --- requests (writer thread) -------------------------------------------------------------

    def handle_many(self, conn: Connection, msgs: list[Incoming], received: float = 0.0) -> None:
        """Answer client messages in order, then hand every queued frame to the event loop once.

        ``received``: ``time.perf_counter()`` when the gateway handed them over (0: now); each
        message's round trip is counted from there to its answer."""
        self._batching = True
        try:
            self._handle_all(conn, msgs, received)
        finally:
            self._batching = False
            self._flush()

    def _handle_all(self, conn: Connection, msgs: list[Incoming], received: float) -> None:
        self.stats.ws_requests[conn.params.json] += len(msgs)
        received = received or time.perf_counter()
        for msg in msgs:
            try:
                self.handle(conn, msg, received)
            except Exception:
                log.exception("handling a client message failed")

    def handle(self, conn: Connection, msg: Incoming, received: float = 0.0) -> None:
        """Answer one client message (replies are queued before any later commit's update)."""
        if conn not in self.connections:
            return
        try:
            if isinstance(msg, (_Call, ws.CallReducer)):
                self._call_reducer(conn, msg.reducer, msg.args, msg.request_id, msg.flags)
                rt = self.stats.round_trips.get(msg.reducer) or self.stats.round_trip(msg.reducer)
            elif isinstance(msg, ws.CallProcedure):
                self._reply(conn, ws.ProcedureResult(
                    ws.InternalError("No such procedure"), ws.Timestamp.UNIX_EPOCH, ws.TimeDuration.ZERO,
                    msg.request_id,
                ), workload=None)  # fmt: skip
                return
            elif isinstance(msg, ws.OneOffQuery):
                with writer_view(self.db) as tx:
                    result = self.manager.one_off(tx, conn.params.identity, msg.query_string)
                    rows = self._rows(conn, tx)
                    read_at = self.db.last_offset  # held for confirmed, as 1.12 holds it
                    self._reply(conn, wire.one_off_response(msg.message_id, result, rows), read_at, workload=SQL)
                rt = self.stats.round_trips_other[SQL]
            else:
                rt = self.stats.round_trips_other[self._subscription_request(conn, msg)]
            rt.observe(time.perf_counter() - (received or time.perf_counter()))
        finally:
            self._flush()

    def _subscription_request(self, conn: Connection, msg: Incoming) -> str:
        """Answer a (un)subscribe message; its workload (Subscribe or Unsubscribe)."""
        m = self.manager
        scanned = m.rows_scanned_initial
        workload = SUBSCRIBE
        with writer_view(self.db) as tx:
            res: Any
            if isinstance(msg, ws.SubscribeMulti):
                res = m.subscribe_multi(conn, tx, msg.query_strings, msg.request_id, msg.query_id.id)
            elif isinstance(msg, ws.SubscribeSingle):
                res = m.subscribe_single(conn, tx, msg.query, msg.request_id, msg.query_id.id)
            elif isinstance(msg, ws.Subscribe):
                res = m.subscribe(conn, tx, msg.query_strings, msg.request_id)
            elif isinstance(msg, ws.UnsubscribeMulti):
                res = m.unsubscribe_multi(conn, tx, msg.request_id, msg.query_id.id)
                workload = UNSUBSCRIBE
            elif isinstance(msg, ws.Unsubscribe):
                res = m.unsubscribe(conn, tx, msg.request_id, msg.query_id.id)
                workload = UNSUBSCRIBE
            else:  # pragma: no cover - every ClientMessage is handled above
                raise TypeError(f"unexpected client message {msg!r}")
            if isinstance(res, r.TransactionFailure):
                self._reply(conn, self._failure_update(conn, "<none>", res.message, res.micros), workload=workload)
            elif isinstance(res, r.SubscriptionError):
                self._reply(conn, wire.reply(res, self._rows(conn, tx)), workload=workload)
            else:  # rows read from the last commit: held for confirmed until it is durable
                self._reply(conn, wire.reply(res, self._rows(conn, tx)), self.db.last_offset, workload=workload)
        self.stats.rows_scanned[SUBSCRIBE] += m.rows_scanned_initial - scanned
        return workload

    def _call_reducer(
        self, conn: Connection, reducer: str, raw_args: bytes | str, request_id: int, flags: ws.CallReducerFlags
    ) -> None:
        db = self.db
        json_args = raw_args if isinstance(raw_args, str) else None
        try:
            args = self._bsatn_args(reducer, raw_args)
            self._caller = _Caller(conn, request_id, flags, json_args)
            db.call_reducer(reducer, args, caller=conn.params.identity, connection_id=conn.params.connection_id)
        except (DatabaseError, ReplicationError) as e:
            # Resolution errors and refused writes (no quorum): sent whatever the flags, never
            # held for durability (§11).
            self._reply(conn, self._failure_update(conn, reducer, str(e)))
        finally:
            self._caller = None

    def _bsatn_args(self, reducer: str, args: bytes | str) -> bytes:
        if isinstance(args, bytes):
            return args
        from hostnode.database import InvalidArguments, NoSuchReducer

        mdef = self.db.moduledef
        assert mdef is not None
        rdef = next((x for x in mdef.reducers if x.name == reducer), None)
        if rdef is None:
            raise NoSuchReducer(f"no such reducer `{reducer}`")
        try:
            return ws.json_to_bsatn(rdef.params, args, mdef.typespace)
        except Exception as e:
            raise InvalidArguments(f"invalid arguments for reducer `{reducer}`: {e}") from None

    def _failure_update(
        self, conn: Connection, name: str, message: str, micros: int = 0
    ) -> ws.TransactionUpdate:
        return failure_update(conn.params, name, message, micros)

    def _rows(self, conn: Connection, tx: Any) -> wire.RowEncoder:
        return wire.json_rows(tx.tables()) if conn.params.json else wire.bsatn_rows

    def _reply(
        self, conn: Connection, msg: ws.ServerMessage, offset: int | None = None, *, workload: str | None = UPDATE
    ) -> None:
        self._send(conn, encode(msg, conn.params.json, conn.params.compression), offset, workload)

    # --- commits (writer thread, from on_commit) ----------------------------------------------

    def _deliver(self, outcome: ReducerOutcome, updates: CommitUpdates | None) -> None:
        caller, self._caller = self._caller, None
        if caller is not None and caller.conn not in self.connections:
            caller = None
        full_to_caller = caller is not None and caller.flags is ws.CallReducerFlags.FULL_UPDATE
        if updates is None:  # failed or out of energy: only the caller hears of it
            if caller is not None and full_to_caller:
                status: ws.UpdateStatus = (
                    ws.OutOfEnergy() if outcome.status is Status.OUT_OF_ENERGY else ws.Failed(outcome.message)
                )
                failed = self._transaction_update(outcome, status, caller, caller.conn.params.json)
                self._send(
                    caller.conn, encode(failed, caller.conn.params.json, caller.conn.params.compression)
                )
                self._flush()
            return
        if updates.rows_evaluated:
            self.stats.rows_scanned[UPDATE] += updates.rows_evaluated
        if not updates.groups and not updates.errors and not full_to_caller:
            return
        offset = outcome.offset
        request_id = caller.request_id if caller is not None else 0
        tables_cache: dict[str, Any] = {}
        caller_conn = caller.conn if caller is not None and full_to_caller else None
        caller_served = False
        for members, update in updates.groups:
            variants: dict[tuple[bool, bool], _Encodings] = {}
            for conn in members:
                if conn not in self.connections:
                    continue
                json = conn.params.json
                light = conn.params.light and conn is not caller_conn
                enc = variants.get((json, light))
                if enc is None:
                    db_update = wire.database_update(update, self._row_encoder(json, tables_cache))
                    if light:
                        msg: ws.ServerMessage = ws.TransactionUpdateLight(request_id, db_update)
                    else:
                        msg = self._transaction_update(outcome, ws.Committed(db_update), caller, json)
                    enc = variants[(json, light)] = _Encodings(msg)
                self._send(conn, enc.frame(conn), offset)
                caller_served = caller_served or conn is caller_conn
        if caller_conn is not None and not caller_served:
            assert caller is not None
            p = caller_conn.params
            if p.json or outcome.reducer_id is None:
                empty = self._transaction_update(outcome, ws.Committed(ws.DatabaseUpdate(())), caller, p.json)
                frame = encode(empty, p.json, p.compression)
            else:  # the hot path of a caller nobody else watches: no message objects
                frame = frame_bsatn(
                    committed_caller_update_bsatn(
                        outcome.timestamp_micros, outcome.caller, outcome.connection_id, outcome.reducer,
                        outcome.reducer_id, outcome.args, caller.request_id, outcome.energy_used,
                        outcome.duration_micros,
                    ),
                    p.compression,
                )  # fmt: skip
            self._send(caller_conn, frame, offset)
        for conn, err in updates.errors:
            if conn in self.connections:
                self._reply(conn, wire.reply(err, self._row_encoder(conn.params.json, tables_cache)))
        self._flush()

    def _row_encoder(self, json: bool, cache: dict[str, Any]) -> wire.RowEncoder:
        if not json:
            return wire.bsatn_rows
        enc = cache.get("json")
        if enc is None:
            enc = cache["json"] = wire.json_rows(self.db.datastore.tables())
        return enc  # type: ignore[no-any-return]

    def _transaction_update(
        self, outcome: ReducerOutcome, status: ws.UpdateStatus, caller: _Caller | None, json: bool
    ) -> ws.TransactionUpdate:
        rid = outcome.reducer_id
        args: bytes | str
        if rid is None:
            rid, args = NO_REDUCER_ID, ("[]" if json else b"")
        elif json:
            args = (
                caller.json_args
                if caller is not None and caller.json_args is not None
                else self._json_args(outcome)
            )
        else:
            args = outcome.args
        return ws.TransactionUpdate(
            status,
            ws.Timestamp(outcome.timestamp_micros),
            outcome.caller,
            ConnectionId(outcome.connection_id),
            ws.ReducerCallInfo(outcome.reducer, rid, args, caller.request_id if caller is not None else 0),
            ws.EnergyQuanta(outcome.energy_used),
            ws.TimeDuration(outcome.duration_micros),
        )

    def _json_args(self, outcome: ReducerOutcome) -> str:
        mdef = self.db.moduledef
        if mdef is None or outcome.reducer_id is None:
            return "[]"
        try:
            return ws.value_to_json(mdef.reducers[outcome.reducer_id].params, outcome.args, mdef.typespace)
        except Exception:  # noqa: BLE001 - args were validated before the call
            return "[]"

    # --- outgoing -----------------------------------------------------------------------------

    def _send(self, conn: Connection, frame: Frame, offset: int | None = None, workload: str | None = UPDATE) -> None:
        """Queue ``frame`` for ``conn``; counted as sent for ``workload`` (None: not a data message)."""
        self._outbox.setdefault(conn, []).append((frame, offset))
        if workload is not None:
            sent = self.stats.sent[workload]
            n = len(frame)
            sent.sizes.observe(n)
            sent.bytes += n

    def _flush(self) -> None:
        """Hand every queued frame to its connection's event loop. One wake-up per loop is
        outstanding at a time: while it has not run, later batches just join it. Inside
        :meth:`handle_many` it waits for the end of the batch."""
        if not self._outbox or self._batching:
            return
        outbox, self._outbox = self._outbox, {}
        wake: list[asyncio.AbstractEventLoop] = []
        with self._handoff_lock:
            for conn, items in outbox.items():
                loop = conn.loop
                pending = self._handoff.get(loop)
                if pending is None:
                    pending = self._handoff[loop] = []
                    wake.append(loop)
                pending.append((conn, items))
        for loop in wake:
            try:
                loop.call_soon_threadsafe(self._deliver_handoff, loop)
            except RuntimeError:  # the loop is closed: the server is going away
                with self._handoff_lock:
                    self._handoff.pop(loop, None)

    def _deliver_handoff(self, loop: asyncio.AbstractEventLoop) -> None:
        """(event loop) Push everything handed to this loop so far, in order."""
        with self._handoff_lock:
            batch = self._handoff.pop(loop, [])
        for conn, items in batch:
            conn.push_now(items)

    def shutdown(self, close: tuple[int, str] = CLOSE_MODULE_EXITED) -> None:
        """The database is going away: close every connection with ``close`` (default 1001
        ``module exited``; any thread; the hub ignores its connections from now on)."""
        self.closed = True
        for conn in list(self.connections):
            _close_soon(conn, *close)


def _close_soon(conn: Connection, code: int, reason: str) -> None:
    """Close ``conn`` from the server side, on its event loop (from any thread)."""
    try:
        conn.loop.call_soon_threadsafe(conn.server_close, code, reason)
    except RuntimeError:  # the loop is closed: the server is going away
        pass


class Connection:
    """One WebSocket client as the gateway sees it (event-loop side; see the module docstring).

    The gateway calls :meth:`handle` for every frame it receives, sends what :meth:`recv`
    returns until it returns None (then closes with :attr:`close_code` / :attr:`close_reason`),
    watches :meth:`wait_closed` to stop a blocked writer, and always calls :meth:`close` at the
    end, which removes the client (``client_disconnected``) exactly once.
    """

    def __init__(
        self, hub: RealtimeHub, params: ClientParams, loop: asyncio.AbstractEventLoop,
        budget: OutgoingBudget | None = None,
    ) -> None:  # fmt: skip
        self.hub = hub
        self.params = params
        self.loop = loop
        self.budget = budget or OutgoingBudget()
        self.close_code = 1000
        self.close_reason = ""
        self._queue: deque[tuple[Frame, int | None]] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        #: Messages handed to the writer thread (event loop) and handled there (writer thread).
        self._submitted = 0
        self._completed = 0
        self._removed = False
        self.max_messages = MAX_OUTGOING_MESSAGES
        self.max_bytes = MAX_OUTGOING_BYTES
        #: Where frames go at once, in order, when nothing of this connection is queued or held
        #: for durability (set by whoever drains it while it waits: the gateway's writer, a
        #: relay stream). It returns False to have them queued as usual instead. Without it,
        #: every hand-over wakes the drainer's task: at a fan-out, one task per subscriber.
        self.sink: Callable[[list[Frame]], bool] | None = None
        #: recv / recv_many took frames and waits for their durability (see _until_durable), or
        #: frames wait in ``_held`` to go straight to the sink once durable (see _hold).
        self._holding = False
        self._held: list[Frame] | None = None

    # --- outgoing (event loop) ----------------------------------------------------------------

    def push_now(self, items: list[tuple[Frame, int | None]]) -> None:
        """Queue frames (event loop thread), or hand them to :attr:`sink` when nothing waits
        before them and they may go now. Overflow (of this client's queue, or of the process's
        :class:`OutgoingBudget` while this client is behind) disconnects the client."""
        if self._closed.is_set():
            return
        sink = self.sink
        if sink is not None and not self._queue and not self._holding:
            frames = [frame for frame, _ in items]
            # Past this client's own bounds they are queued, to be refused there as always.
            if len(frames) == 1 or self._within_bounds(frames):
                wait_for = self._not_durable(items)
                if wait_for < 0:
                    if sink(frames):
                        return
                elif self._hold(frames, wait_for):
                    return
        q = self._queue
        added = 0
        for item in items:
            q.append(item)
            added += len(item[0])
        self._bytes += added
        budget = self.budget
        budget.queued += added
        # One message larger than the byte limit still goes to a client with nothing waiting
        # (what bounds a single message is the query's own limits); several frames handed over
        # at once count like frames that arrived one by one, or one writer batch holding many
        # of a client's answers would slip past both limits.
        behind = len(q) > 1
        if len(q) > self.max_messages or (behind and self._bytes > self.max_bytes):
            self.server_close(*CLOSE_TOO_SLOW)
        elif behind and budget.queued > budget.limit:
            self.server_close(*CLOSE_SERVER_FULL)
        elif self._held is None:  # (held frames go first: _release wakes the drainer)
            self._wake.set()

    def _within_bounds(self, frames: list[Frame]) -> bool:
        return len(frames) <= self.max_messages and sum(len(frame) for frame in frames) <= self.max_bytes

    def _not_durable(self, items: list[tuple[Frame, int | None]]) -> int:
        """-1 when ``items`` may go now (not confirmed, or every one's transaction durable); else
        the last offset they wait for."""
        if not self.params.confirmed or self.hub.closed:
            return -1
        durable = self.hub.db.durability.durable_offset
        last = -1
        for _, offset in items:
            if offset is not None and offset >= durable and offset > last:
                last = offset
        return last

    def _hold(self, frames: list[Frame], offset: int) -> bool:
        """Keep ``frames`` until record ``offset`` is durable, then hand them to the sink from the
        durability callback itself (:meth:`_release`): no drainer task woken, no future — one
        loop callback per durability advance for every connection it releases (64 × 1
        confirmed). False where waits have a deadline (a quorum's ``commit_timeout``, which
        closes the client when it passes): the drainer's wait (:meth:`_until_durable`) keeps it."""
        durability = self.hub.db.durability
        if isinstance(durability, QuorumDurability):
            return False
        self._held = frames
        self._holding = True  # later frames queue behind these
        durability.add_callback(offset, LOOP_CALLBACKS.call_later(self.loop, self._release))
        return True

    def _release(self, error: BaseException | None) -> None:
        """(event loop) The held frames' transaction is durable (or never will be, ``error``)."""
        frames, self._held = self._held, None
        self._holding = False
        if frames is None or self._closed.is_set() or self.hub.closed:
            return  # (a closing database closes its clients itself)
        if error is not None:
            log.warning("closing a confirmed client: its transaction never became durable: %s", error)
            self.server_close(1011, f"transaction not durable: {error}"[:123])
            return
        sink = self.sink
        if sink is None or not sink(frames):
            # First in line for the drainer, which takes them with what queued behind them.
            added = 0
            for frame in reversed(frames):
                self._queue.appendleft((frame, None))
                added += len(frame)
            self._bytes += added
            self.budget.queued += added
        if self._queue:
            self._wake.set()

    def server_close(self, code: int, reason: str) -> None:
        """End the connection from the server side with this close code and reason (frames not
        sent yet never will be: they are dropped)."""
        if self._closed.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self._drop_queued()
        self._held = None
        self._closed.set()
        self._wake.set()

    def _drop_queued(self) -> None:
        self.budget.queued -= self._bytes
        self._queue.clear()
        self._bytes = 0

    @property
    def is_closed(self) -> bool:
        """Whether the server ended the connection."""
        return self._closed.is_set()

    async def recv(self) -> Frame | None:
        """The next frame to send (held until durable with ``confirmed``); None once closed."""
        if not await self._frames_queued():
            return None
        frame, offset = self._queue.popleft()
        self._bytes -= len(frame)
        self.budget.queued -= len(frame)
        if not await self._until_durable(offset):
            return None
        return frame

    async def recv_many(self) -> list[Frame] | None:
        """Every frame queued so far (at least one; held until durable with ``confirmed``);
        None once closed."""
        if not await self._frames_queued():
            return None
        frames = [frame for frame, _ in self._queue]
        durable_after = max((o for _, o in self._queue if o is not None), default=None)
        self._drop_queued()
        if not await self._until_durable(durable_after):
            return None
        return frames

    async def _frames_queued(self) -> bool:
        """Wait until a frame is queued (True) or the connection is closed (False)."""
        while not self._closed.is_set():
            if self._queue and self._held is None:
                return True
            self._wake.clear()
            await self._wake.wait()
        return False

    async def _until_durable(self, offset: int | None) -> bool:
        """Hold a confirmed client's frames until ``offset`` is durable; False (and the
        connection closed) when that will never be known here (the leader stepped down, or no
        majority confirmed it in time): the frames are not sent."""
        if offset is not None and self.params.confirmed and not self.hub.closed:
            self._holding = True  # frames taken from the queue wait: none may pass them
            try:
                await self.hub.db.durability.wait_durable_async(offset)
            except ReplicationError as e:
                log.info("closing a confirmed client: %s", e)
                self.server_close(CLOSE_LEADER_CHANGED[0], CLOSE_LEADER_CHANGED[1])
                return False
            finally:
                self._holding = False
        return True

    async def wait_closed(self) -> None:
        """Return once the server has ended the connection."""
        await self._closed.wait()

    # --- incoming -----------------------------------------------------------------------------

    def handle(self, frame: Frame) -> str | None:
        """Decode one client frame (text → JSON, binary → BSATN) and queue it for the writer
        thread. Returns the close reason (code 1011) for a malformed message, else None."""
        return self.handle_many((frame,))

    def handle_many(self, frames: Sequence[Frame]) -> str | None:
        """:meth:`handle` for frames received together: one trip to the writer thread for all
        of them. A malformed frame's close reason is returned after the frames before it are
        queued; the frames after it are dropped."""
        msgs: list[Incoming] = []
        reason: str | None = None
        for frame in frames:
            try:
                if isinstance(frame, str):
                    msgs.append(ws.decode_client_message_json(frame))
                else:
                    call = read_call(frame)
                    msgs.append(call if call is not None else ws.decode_client_message_bsatn(frame))
            except ws.WsProtocolError as e:
                reason = e.close_reason
                break
            except Exception as e:  # noqa: BLE001 - any decoding failure is the client's
                reason = ws.WsProtocolError(str(e)).close_reason
                break
        if not msgs or self.hub.closed or self._closed.is_set():
            return reason
        if self._submitted - self._completed >= MAX_INCOMING_MESSAGES:
            self.server_close(*CLOSE_TOO_MANY_REQUESTS)
            return reason
        n = len(msgs)
        self._submitted += n
        try:
            self.hub.enqueue(self, msgs, time.perf_counter())
        except Overloaded as e:
            self._submitted -= n
            self._refuse(msgs, str(e))
        return reason

    def _refuse(self, msgs: list[Incoming], reason: str) -> None:
        """The writer's queue is full and ``msgs`` were not run: each reducer call is answered
        ``failed`` with ``reason``; any other request closes the connection (1013, ``reason``),
        since its protocol has no way to say "not now"."""
        p = self.params
        failed: list[tuple[Frame, int | None]] = [
            (encode(failure_update(p, m.reducer, reason, request_id=m.request_id), p.json, p.compression), None)
            for m in msgs
            if isinstance(m, (ws.CallReducer, _Call))
        ]
        if failed:
            self.push_now(failed)
        if len(failed) < len(msgs):
            self.server_close(CLOSE_TOO_MANY_REQUESTS[0], reason[:123])

    async def close(self) -> None:
        """Remove the client: subscriptions dropped, ``client_disconnected`` run (once)."""
        if self._removed:
            return
        self._removed = True
        self.server_close(1000, "")
        hub = self.hub
        if hub.closed:
            return
        try:
            await asyncio.wrap_future(hub.submit(lambda db: hub.disconnect(self)))
        except Exception:  # noqa: BLE001 - the database may be closing
            log.exception("disconnecting a client failed")
