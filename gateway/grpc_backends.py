"""The gateway's backends over gRPC: :class:`GrpcControlPlane` and :class:`GrpcHostNode`.

They implement :mod:`gateway.backends` over the stubs of ``proto/controlplane.proto`` and
``proto/hostnode.proto`` and answer exactly what the in-process adapters answer: both turn
failures into :class:`ApiError` through the same tables (:mod:`gateway.failures`). Generated
messages stay inside this module; callers get the dataclasses of :mod:`gateway.backends`.

Each client talks to one server over one channel: standalone's ``--transport grpc`` builds one
of each, cluster mode (:mod:`gateway.cluster_backends`) one :class:`GrpcHostNode` per host node
and routes each request to the right one. Every unary call carries a deadline
(:class:`Deadlines`), so a server that stopped answering costs a request a bounded time; a call
that got no answer (unreachable, deadline, broken connection) raises
:class:`~gateway.failures.Unreachable`, which says whether the request may have run.

Reducer calls are batched (PLATFORM.md §5: a gRPC message costs about what a whole reducer
call does): calls to one database that arrive while earlier batches are in flight travel
together in the next ``CallBatch``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc

from gateway.backends import (
    CallResult,
    DatabaseInfo,
    PrePublish,
    PublishOutcome,
    SqlAnswer,
    WsParams,
    WsSession,
)
from gateway.failures import (
    ControlErrorKind,
    HostErrorKind,
    ReducerStatus,
    Unreachable,
    call_result,
    control_error,
    host_error,
)
from proto import controlplane_pb2 as cpb
from proto import controlplane_pb2_grpc as cpb_grpc
from proto import hostnode_pb2 as hpb
from proto import hostnode_pb2_grpc as hpb_grpc
from sats.identity import Identity
from sats.json import loads

log = logging.getLogger(__name__)

__all__ = ["Deadlines", "GrpcControlPlane", "GrpcHostNode", "WsBudget", "is_read_only_sql", "unreachable"]

T = TypeVar("T")

#: Most calls in one CallBatch, and most batches in flight per database.
MAX_BATCH = 512
MAX_IN_FLIGHT = 2
#: Most calls waiting for a batch per database (README, "Limits"); more are refused with 503 at
#: once. The benchmark's 2,560 calls in flight fit (1,024 of them travel in the two batches).
MAX_PENDING_CALLS = 10_000


@dataclass(frozen=True)
class Deadlines:
    """gRPC deadlines, in seconds, of the gateway's unary calls (and of a ``Logs`` tail).

    Generous on purpose: a deadline is not a latency target but the bound on how long a dead or
    hung server can hold a request. Streams (``Connect``, followed logs) have none; keepalive
    pings (``proto.KEEPALIVE_OPTIONS``) notice a dead peer there.
    """

    #: ``CallReducers``. Longer than the host node's own commit timeout, so a write that cannot
    #: reach its quorum is answered by the node (``OUTCOME_UNKNOWN``, with its reason) first.
    call: float = 30.0
    #: ``Sql`` (a large SELECT, or DML waiting for durability).
    sql: float = 30.0
    #: ``GetSchema`` and the control plane's lookups and name changes.
    read: float = 10.0
    #: ``PlanUpdate`` (compiles the new program) and ``Logs`` without ``follow``.
    plan: float = 60.0
    #: ``Publish``, ``Reset``, ``DeleteDatabase``: compile, install, run ``init``, replicate.
    publish: float = 300.0


#: gRPC's words when no connection could be opened: the request never left this process.
_NEVER_SENT = re.compile(r"failed to connect to all addresses|Failed to connect to remote host", re.IGNORECASE)


def unreachable(error: grpc.aio.AioRpcError, target: str, *, write: bool) -> Unreachable:
    """What a call to ``target`` that got no answer tells the client (503).

    Only a connection that could not be opened proves the request never left; after anything
    else (deadline, reset stream, server gone mid-call) a write may have run — "the outcome is
    unknown", which must never be retried or reported as success.
    """
    details = error.details() or ""
    cause = f"{error.code().name}: {details}" if details else error.code().name
    if error.code() is grpc.StatusCode.UNAVAILABLE and _NEVER_SENT.search(details):
        return Unreachable(f"{target} is unreachable ({cause})", may_have_run=False)
    if write:
        return Unreachable(
            f"the outcome is unknown: the connection to {target} failed during the request ({cause}); "
            "it may or may not have taken effect",
            may_have_run=True,
        )
    return Unreachable(f"{target} did not answer ({cause})", may_have_run=True)


def closed_channel(error: grpc.aio.UsageError, target: str) -> Unreachable:
    """A call started on a channel already closed: the cluster gateway closes a node's channel
    when the node leaves, and a request that picked the node just before fails here. The call
    never started, so nothing ran and it may be retried (other misuse is not that, and stays
    "may have run")."""
    text = str(error)
    return Unreachable(f"{target} is unreachable ({text})", may_have_run="closed" not in text.lower())


async def _answer(call: Awaitable[T], target: str, *, write: bool) -> T:
    """Await a unary call; a gRPC error becomes :class:`Unreachable`."""
    try:
        return await call
    except grpc.aio.AioRpcError as e:
        raise unreachable(e, target, write=write) from None
    except grpc.aio.UsageError as e:
        raise closed_channel(e, target) from None


# The statement is one SELECT: starts with SELECT and has no ``;`` anywhere (a second statement,
# or one hidden after a comment, makes it "may write"). Orrery's SQL has no SELECT … INTO.
_SELECT = re.compile(r"\s*select\b", re.IGNORECASE)


def is_read_only_sql(query: str) -> bool:
    """True only for SQL that certainly changes nothing (one plain ``SELECT``); conservative:
    anything else counts as a write, whose failed delivery is "outcome unknown"."""
    return _SELECT.match(query) is not None and ";" not in query


# --- control plane --------------------------------------------------------------------------------


def _control_check(failure: cpb.Failure) -> None:
    if failure.kind == cpb.ERROR_KIND_NONE:
        return
    try:
        kind = ControlErrorKind(failure.kind)
    except ValueError:
        kind = ControlErrorKind.OTHER
    body = json.loads(failure.json_body) if failure.json_body else None
    raise control_error(kind, failure.message, body)


def _outcome(response: cpb.PublishResponse) -> PublishOutcome:
    _control_check(response.failure)
    op = "created" if response.op == cpb.PUBLISH_OP_CREATED else "updated"
    domain = response.domain if response.HasField("domain") else None
    return PublishOutcome(Identity.from_bsatn(response.database_identity), op, domain)


class GrpcControlPlane:
    """:class:`gateway.backends.ControlPlaneBackend` over the ControlPlane gRPC service.

    ``target`` names the server in error messages.
    """

    def __init__(
        self, channel: grpc.aio.Channel, *, deadlines: Deadlines | None = None, target: str = "the control plane"
    ) -> None:
        self.stub = cpb_grpc.ControlPlaneStub(channel)
        self.deadlines = deadlines or Deadlines()
        self.target = target

    def _read(self, call: Awaitable[T]) -> Awaitable[T]:
        return _answer(call, self.target, write=False)

    def _write(self, call: Awaitable[T]) -> Awaitable[T]:
        return _answer(call, self.target, write=True)

    async def resolve(self, name_or_identity: str) -> Identity:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        response: cpb.ResolveResponse = await self._read(
            self.stub.Resolve(cpb.ResolveRequest(name_or_identity=name_or_identity), timeout=self.deadlines.read)
        )
        _control_check(response.failure)
        return Identity.from_bsatn(response.database_identity)

    async def database(self, name_or_identity: str) -> DatabaseInfo:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        response: cpb.DatabaseResponse = await self._read(
            self.stub.GetDatabase(cpb.GetDatabaseRequest(name_or_identity=name_or_identity), timeout=self.deadlines.read)
        )
        _control_check(response.failure)
        db = response.database
        return DatabaseInfo(
            Identity.from_bsatn(db.database_identity),
            Identity.from_bsatn(db.owner_identity),
            db.host_type,
            db.initial_program_hash,
        )

    async def publish(
        self,
        caller: Identity,
        name_or_identity: str | None,
        program: bytes,
        *,
        clear: bool,
        break_clients: bool = False,
        token: bytes | None = None,
        num_replicas: int | None = None,
    ) -> PublishOutcome:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        request = cpb.PublishRequest(
            caller_identity=caller.to_bsatn(), name_or_identity=name_or_identity or "", program=program, clear=clear,
            break_clients=break_clients, num_replicas=num_replicas or 0,
        )  # fmt: skip
        if token is not None:
            request.migration_token = token
        return _outcome(await self._write(self.stub.Publish(request, timeout=self.deadlines.publish)))

    async def reset(self, caller: Identity, name_or_identity: str, program: bytes | None) -> PublishOutcome:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        request = cpb.ResetRequest(
            caller_identity=caller.to_bsatn(), name_or_identity=name_or_identity, program=program or b""
        )
        return _outcome(await self._write(self.stub.Reset(request, timeout=self.deadlines.publish)))

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        request = cpb.DeleteDatabaseRequest(caller_identity=caller.to_bsatn(), name_or_identity=name_or_identity)
        response: cpb.DeleteDatabaseResponse = await self._write(
            self.stub.DeleteDatabase(request, timeout=self.deadlines.publish)
        )
        _control_check(response.failure)

    async def names(self, identity: Identity) -> list[str]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        response: cpb.Names = await self._read(
            self.stub.GetNames(cpb.GetNamesRequest(database_identity=identity.to_bsatn()), timeout=self.deadlines.read)
        )
        return list(response.names)

    async def add_name(self, caller: Identity, name_or_identity: str, name: str) -> dict[str, Any]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        request = cpb.AddNameRequest(caller_identity=caller.to_bsatn(), name_or_identity=name_or_identity, name=name)
        response: cpb.NameResult = await self._write(self.stub.AddName(request, timeout=self.deadlines.read))
        _control_check(response.failure)
        identity = Identity.from_bsatn(response.database_identity)
        return {"Success": {"domain": response.domain, "database_identity": identity.to_hex()}}

    async def set_names(self, caller: Identity, name_or_identity: str, names: list[str]) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        request = cpb.SetNamesRequest(caller_identity=caller.to_bsatn(), name_or_identity=name_or_identity, names=names)
        response: cpb.SetNamesResponse = await self._write(self.stub.SetNames(request, timeout=self.deadlines.read))
        _control_check(response.failure)

    async def databases_of(self, owner: Identity) -> list[Identity]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        response: cpb.DatabaseList = await self._read(
            self.stub.ListDatabases(cpb.ListDatabasesRequest(owner_identity=owner.to_bsatn()), timeout=self.deadlines.read)
        )
        return [Identity.from_bsatn(i) for i in response.identities]

    async def node_ids(self) -> list[int]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        response: cpb.NodeList = await self._read(self.stub.ListNodes(cpb.ListNodesRequest(), timeout=self.deadlines.read))
        return list(response.node_ids)


# --- host node ------------------------------------------------------------------------------------


def _host_kind(failure: hpb.Failure) -> HostErrorKind:
    try:
        return HostErrorKind(failure.kind)
    except ValueError:
        return HostErrorKind.INTERNAL


def _host_failed(failure: hpb.Failure) -> bool:
    return failure.kind != hpb.ERROR_KIND_NONE


@dataclass
class _Queue:
    """Calls to one database waiting for a batch."""

    pending: list[tuple[hpb.ReducerCall, asyncio.Future[hpb.ReducerResult]]] = field(default_factory=list)
    in_flight: int = 0
    scheduled: bool = False


class CallBatcher:
    """Coalesces reducer calls to one database into ``CallBatch`` messages.

    A call waits at most until the end of the current event-loop turn when fewer than
    ``max_in_flight`` batches are in flight for its database, else until one returns; so a lone
    caller pays one round trip and concurrent callers share messages. At most ``max_pending``
    calls wait per database: past that a call is refused (503, ``OVERLOADED``) before it is sent.
    """

    def __init__(
        self,
        stub: hpb_grpc.HostNodeStub,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
        *,
        timeout: float | None = None,
        max_pending: int = MAX_PENDING_CALLS,
    ):
        self.stub = stub
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.max_pending = max_pending
        #: The deadline of each ``CallReducers`` (seconds; None: none).
        self.timeout = timeout
        self._queues: dict[bytes, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    def waiting(self, database: bytes) -> int:
        """How many calls to ``database`` wait for a batch now."""
        queue = self._queues.get(database)
        return 0 if queue is None else len(queue.pending)

    async def call(self, database: bytes, call: hpb.ReducerCall) -> hpb.ReducerResult:
        """Run one call (in a batch); its result."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(database, _Queue())
        if len(queue.pending) >= self.max_pending:
            raise host_error(
                HostErrorKind.OVERLOADED,
                f"the database is overloaded: {self.max_pending} calls are already waiting for it; "
                "nothing was run, try again later",
            )
        call.request_id = next(self._ids)
        future: asyncio.Future[hpb.ReducerResult] = loop.create_future()
        queue.pending.append((call, future))
        if not queue.scheduled and queue.in_flight < self.max_in_flight:
            queue.scheduled = True
            loop.call_soon(self._send_ready, database)
        return await future

    def _send_ready(self, database: bytes) -> None:
        queue = self._queues.get(database)
        if queue is None:
            return
        queue.scheduled = False
        while queue.pending and queue.in_flight < self.max_in_flight:
            batch, queue.pending = queue.pending[: self.max_batch], queue.pending[self.max_batch :]
            queue.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(database, queue, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not queue.pending and not queue.in_flight:
            del self._queues[database]

    async def _send(
        self,
        database: bytes,
        queue: _Queue,
        batch: list[tuple[hpb.ReducerCall, asyncio.Future[hpb.ReducerResult]]],
    ) -> None:
        try:
            response: hpb.CallBatchResult = await self.stub.CallReducers(
                hpb.CallBatch(database_identity=database, calls=[c for c, _ in batch]), timeout=self.timeout
            )
            if len(response.results) != len(batch):
                raise RuntimeError(f"host node answered {len(response.results)} of {len(batch)} calls")
        except Exception as e:  # noqa: BLE001 - every caller of the batch gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
        else:
            for (_, future), result in zip(batch, response.results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            queue.in_flight -= 1
            self._queues.setdefault(database, queue)
            self._send_ready(database)


class GrpcHostNode:
    """:class:`gateway.backends.HostNodeBackend` over the HostNode gRPC service of one node.

    ``target`` names the node in error messages. Cluster mode builds one per node and reaches
    the node's realtime streams through :meth:`ws_databases` and :meth:`end_ws`.
    """

    def __init__(
        self, channel: grpc.aio.Channel, *, deadlines: Deadlines | None = None, target: str = "the host node",
        ws_budget: WsBudget | None = None,
    ) -> None:  # fmt: skip
        self.stub = hpb_grpc.HostNodeStub(channel)
        #: Shared by every node's client in cluster mode: the gateway's total, not a node's.
        self.ws_budget = ws_budget or WsBudget()
        self.deadlines = deadlines or Deadlines()
        self.target = target
        self.batcher = CallBatcher(self.stub, timeout=self.deadlines.call)
        self._ws_streams: dict[Identity, _WsStream] = {}

    async def call(
        self, database: Identity, reducer: str, args_json: str, *, caller: Identity, connection_id: int
    ) -> CallResult:
        """Connect → reducer → disconnect on the node (one call of a batch)."""
        call = hpb.ReducerCall(
            reducer=reducer,
            json=args_json,
            caller_identity=caller.to_bsatn(),
            connection_id=connection_id.to_bytes(16, "little"),
            kind=hpb.CALL_KIND_HTTP,
        )
        result = await _answer(self.batcher.call(database.to_bsatn(), call), self.target, write=True)
        if _host_failed(result.failure):
            raise host_error(_host_kind(result.failure), result.failure.message)
        return call_result(
            ReducerStatus(result.status), result.message, result.energy_used, result.duration_micros,
            connect=result.connect,
        )

    async def sql(self, database: Identity, query: str, caller: Identity) -> SqlAnswer:
        """See :class:`gateway.backends.HostNodeBackend`."""
        request = hpb.SqlRequest(database_identity=database.to_bsatn(), query=query, caller_identity=caller.to_bsatn())
        response: hpb.SqlResponse = await _answer(
            self.stub.Sql(request, timeout=self.deadlines.sql), self.target, write=not is_read_only_sql(query)
        )
        if _host_failed(response.failure):
            raise host_error(_host_kind(response.failure), response.failure.message, missing="module not found")
        return SqlAnswer(response.body, response.duration_micros)

    async def schema(self, database: Identity) -> Any:
        """See :class:`gateway.backends.HostNodeBackend`."""
        request = hpb.SchemaRequest(database_identity=database.to_bsatn(), version=9)
        response: hpb.SchemaResponse = await _answer(
            self.stub.GetSchema(request, timeout=self.deadlines.read), self.target, write=False
        )
        if _host_failed(response.failure):
            raise host_error(_host_kind(response.failure), response.failure.message)
        return loads(response.json)

    async def logs(self, database: Identity, num_lines: int | None, follow: bool) -> AsyncGenerator[str, None]:
        """Lines from the node's Logs stream; closing the generator cancels the stream."""
        request = hpb.LogsRequest(database_identity=database.to_bsatn(), follow=follow)
        if num_lines is not None:
            request.num_lines = num_lines
        call = self.stub.Logs(request, timeout=None if follow else self.deadlines.plan)
        try:
            first = True
            async for message in call:
                if _host_failed(message.failure):
                    raise host_error(_host_kind(message.failure), message.failure.message)
                if first and follow and not message.lines:
                    yield ""  # the node registered the follower with nothing to tail
                first = False
                for line in message.lines:
                    yield line
        except grpc.aio.AioRpcError as e:
            raise unreachable(e, self.target, write=False) from None
        finally:
            call.cancel()

    async def pre_publish(self, database: Identity, program: bytes) -> PrePublish:
        """See :class:`gateway.backends.HostNodeBackend`."""
        request = hpb.PlanUpdateRequest(database_identity=database.to_bsatn(), program=program)
        response: hpb.PlanUpdateResponse = await _answer(
            self.stub.PlanUpdate(request, timeout=self.deadlines.plan), self.target, write=False
        )
        if _host_failed(response.failure):
            raise host_error(_host_kind(response.failure), response.failure.message, failed_to="plan the update")
        return PrePublish(
            automatic=response.automatic,
            plan=response.plan,
            break_clients=response.break_clients,
            token=response.token,
            reason=response.reason,
        )

    async def connect(self, database: Identity, params: WsParams) -> WsSession | None:
        """A WebSocket client over the database's ``Connect`` stream (one per database)."""
        stream = self._ws_streams.get(database)
        if stream is None or stream.dead:
            stream = self._ws_streams[database] = _WsStream(self.stub, database, self.ws_budget)
        return await stream.connect(params)

    def ws_databases(self) -> list[Identity]:
        """The databases with a live ``Connect`` stream to this node."""
        return [db for db, stream in self._ws_streams.items() if not stream.dead]

    def end_ws(self, database: Identity | None, code: int, reason: str) -> int:
        """End the ``Connect`` stream of ``database`` (None: every stream to this node): each of
        its clients is closed with ``code`` and ``reason``. Returns how many clients that closed."""
        closed = 0
        for db, stream in list(self._ws_streams.items()):
            if database is None or db == database:
                closed += stream.end(code, reason)
                del self._ws_streams[db]
        return closed


#: Outgoing frames (and bytes) a WebSocket client may have waiting before it is cut off, and the
#: bytes all of this gateway's clients together may have waiting (README, "Limits").
WS_MAX_QUEUED_MESSAGES = int(os.environ.get("ORRERY_WS_MAX_QUEUED_MESSAGES", "16384"))
WS_MAX_QUEUED_BYTES = int(os.environ.get("ORRERY_WS_MAX_QUEUED_BYTES", str(16 << 20)))
WS_MAX_QUEUED_BYTES_TOTAL = int(os.environ.get("ORRERY_WS_MAX_QUEUED_BYTES_TOTAL", str(256 << 20)))
WS_CLOSE_TOO_SLOW = (1008, "client too far behind: outgoing message queue is full")
WS_CLOSE_SERVER_FULL = (1008, "client too far behind: the server's memory for slow clients is full")
#: Bytes of client frames a ``Connect`` stream may hold for its host node; they leave every
#: event-loop turn unless the node stopped reading. Beyond it a client's next frame closes it.
WS_MAX_PENDING_TO_NODE_BYTES = 64 << 20
WS_CLOSE_NODE_BEHIND = (1013, "too many requests: the database's host node is not taking them")
#: ``ConnectionClosed.code`` of a client ``client_connected`` refused (drop the socket).
WS_CLOSE_DROP = 1006
#: How clients are closed when their node's ``Connect`` stream ends: 1012 ("service restart")
#: tells them to reconnect, which finds the database's current leader. A stream the node ended
#: itself means the node stopped serving the database here (it stepped down, or is stopping);
#: a broken one, that the node vanished.
WS_CLOSE_STREAM_ENDED = (1012, "database leader changed; reconnect")
WS_CLOSE_STREAM_LOST = (1012, "lost the connection to the database's host node; reconnect")
_ws_refs = itertools.count(1)


@dataclass
class WsBudget:
    """The bytes queued for every WebSocket client of this gateway, against one limit: over it,
    a client that still has frames waiting from before (one not keeping up) is disconnected
    (:data:`WS_CLOSE_SERVER_FULL`) on its next frame and its frames released; clients that keep
    up hold nothing between frames. The host node keeps the same rule (hostnode/realtime.py)."""

    limit: int = WS_MAX_QUEUED_BYTES_TOTAL
    queued: int = 0


class _WsStream:
    """The ``Connect`` stream of one database: all of this gateway's clients of it. Events
    going either way are batched per event-loop turn."""

    def __init__(self, stub: hpb_grpc.HostNodeStub, database: Identity, budget: WsBudget) -> None:
        self.database = database
        self.budget = budget
        self.sessions: dict[int, RelayedWsSession] = {}
        self.dead = False
        self._out: list[hpb.GatewayEvent] = []
        #: Bytes of the client frames in ``_out``.
        self.out_bytes = 0
        self._wake = asyncio.Event()
        self._first = True
        self._flushing: list[RelayedWsSession] = []
        self._call = stub.Connect(self._requests())
        self._reader = asyncio.ensure_future(self._read())

    def flush_later(self, session: RelayedWsSession) -> None:
        """See :class:`RelayStream`."""
        self._flushing.append(session)

    def end(self, code: int, reason: str) -> int:
        """Close every client of the stream with ``code``/``reason`` and end the stream; how many."""
        sessions = list(self.sessions.values())
        for session in sessions:
            session.server_closed(code, reason)
        self.dead = True
        self._wake.set()
        self._call.cancel()
        return len(sessions)

    def send(self, event: hpb.GatewayEvent) -> None:
        self._out.append(event)
        self._wake.set()

    def send_message(self, ref: int, frame: bytes | str) -> None:
        """Relay one client frame (counted in :attr:`out_bytes` until the stream takes it)."""
        if isinstance(frame, str):
            message = hpb.ClientMessage(connection_ref=ref, frame=frame.encode(), text=True)
        else:
            message = hpb.ClientMessage(connection_ref=ref, frame=frame)
        self.out_bytes += len(message.frame)
        self.send(hpb.GatewayEvent(message=message))

    def send_disconnected(self, ref: int) -> None:
        """Tell the node the client's socket is gone."""
        self.send(hpb.GatewayEvent(disconnected=hpb.ClientDisconnected(connection_ref=ref)))

    async def _requests(self) -> AsyncGenerator[hpb.GatewayFrames, None]:
        while True:
            while not self._out:
                if self.dead:
                    return
                self._wake.clear()
                await self._wake.wait()
            events, self._out = self._out, []
            self.out_bytes = 0
            msg = hpb.GatewayFrames(events=events)
            if self._first:
                msg.database_identity = self.database.to_bsatn()
                self._first = False
            yield msg

    async def _read(self) -> None:
        close = WS_CLOSE_STREAM_ENDED
        try:
            async for batch in self._call:
                for ev in batch.events:
                    if ev.WhichOneof("event") == "frame":
                        data = ev.frame.frame
                        for ref in ev.frame.connection_refs:
                            session = self.sessions.get(ref)
                            if session is not None:
                                session.deliver(data)
                    else:
                        c = ev.closed
                        session = self.sessions.get(c.connection_ref)
                        if session is not None:
                            session.server_closed(c.code, c.reason)
                flushing, self._flushing = self._flushing, []
                for session in flushing:
                    session.flush()
        except grpc.aio.AioRpcError as e:
            if e.code() is not grpc.StatusCode.CANCELLED or not self.dead:
                log.warning("the Connect stream of %s broke: %s %s", self.database.to_hex(), e.code().name, e.details())
                close = WS_CLOSE_STREAM_LOST
        except Exception:  # noqa: BLE001 - every client of the stream is told below
            log.exception("the Connect stream of %s failed", self.database.to_hex())
            close = WS_CLOSE_STREAM_LOST
        finally:
            self.dead = True
            self._wake.set()
            for session in list(self.sessions.values()):
                session.server_closed(*close)

    async def connect(self, params: WsParams) -> RelayedWsSession | None:
        ref = next(_ws_refs)
        session = RelayedWsSession(self, ref, params)
        self.sessions[ref] = session
        self.send(
            hpb.GatewayEvent(
                connected=hpb.ClientConnected(
                    connection_ref=ref,
                    identity=params.identity.to_bsatn(),
                    connection_id=params.connection_id.to_bytes(16, "little"),
                    jwt_payload=params.jwt_payload or b"",
                    protocol="v1.json.spacetimedb" if params.json else "v1.bsatn.spacetimedb",
                    compression=params.compression,
                    light=params.light,
                    confirmed=params.confirmed,
                    token=params.token,
                )
            )
        )
        if not await session.ready:
            self.sessions.pop(ref, None)
            return None
        return session


class RelayStream(Protocol):
    """What a relayed session needs of the stream carrying it to its host node (a gRPC
    ``Connect`` stream here, the standalone link in :mod:`gateway.link_backend`)."""

    budget: WsBudget
    sessions: dict[int, RelayedWsSession]
    dead: bool

    @property
    def out_bytes(self) -> int:
        """Bytes of client frames sent to the stream and not yet taken by it."""
        ...

    def send_message(self, ref: int, frame: bytes | str) -> None: ...

    def send_disconnected(self, ref: int) -> None: ...

    def flush_later(self, session: RelayedWsSession) -> None:
        """Call ``session.flush()`` once the batch being read is done."""
        ...


class RelayedWsSession:
    """:class:`gateway.backends.WsSession` of one client relayed to its host node on a stream."""

    def __init__(self, stream: RelayStream, ref: int, params: WsParams) -> None:
        self.stream = stream
        self.ref = ref
        self.params = params
        self.close_code = 1000
        self.close_reason = ""
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue: deque[bytes | str] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._removed = False
        #: See :class:`gateway.backends.WsSession`.
        self.sink: Callable[[list[bytes | str]], bool] | None = None
        #: Frames of the stream's current batch kept for the sink (see :meth:`flush`).
        self._direct: list[bytes | str] = []

    def deliver(self, data: bytes) -> None:
        """A frame from the host node (the first one, IdentityToken, means it accepted the client)."""
        if self._closed.is_set():
            return
        if not self.ready.done():
            self.ready.set_result(True)
        frame = data.decode() if self.params.json else data
        if self._direct or (self.sink is not None and not self._queue):
            # Kept for the sink until the stream's batch is read: one socket write for them all.
            if not self._direct:
                self.stream.flush_later(self)
            self._direct.append(frame)
            return
        self._enqueue(frame)

    def flush(self) -> None:
        """(the stream, once its batch is read) Hand the frames kept since to the sink, or queue
        them when it refuses or is gone."""
        frames, self._direct = self._direct, []
        if not frames or self._closed.is_set():
            return
        sink = self.sink
        # Past this client's own bounds they are queued, to be refused there as always.
        within = len(frames) == 1 or (
            len(frames) <= WS_MAX_QUEUED_MESSAGES and sum(len(frame) for frame in frames) <= WS_MAX_QUEUED_BYTES
        )
        if sink is not None and not self._queue and within and sink(frames):
            return
        for frame in frames:
            self._enqueue(frame)

    def _enqueue(self, frame: bytes | str) -> None:
        if self._closed.is_set():
            return
        before = self._bytes
        self._queue.append(frame)
        self._bytes += len(frame)
        budget = self.stream.budget
        budget.queued += len(frame)
        # One frame larger than the byte limit still goes to a client with nothing waiting.
        if len(self._queue) > WS_MAX_QUEUED_MESSAGES or (before and self._bytes > WS_MAX_QUEUED_BYTES):
            self.server_closed(*WS_CLOSE_TOO_SLOW)
        elif before and budget.queued > budget.limit:
            self.server_closed(*WS_CLOSE_SERVER_FULL)
        else:
            self._wake.set()

    def server_closed(self, code: int, reason: str) -> None:
        """The host node (or the gateway) ended the connection."""
        if not self.ready.done():
            self.ready.set_result(code != WS_CLOSE_DROP)
        if self._closed.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self._drop_queued()  # never sent now
        self._closed.set()
        self._wake.set()

    def _drop_queued(self) -> None:
        self.stream.budget.queued -= self._bytes
        self._queue.clear()
        self._bytes = 0
        self._direct = []

    def handle(self, frame: bytes | str) -> str | None:
        """See :class:`gateway.backends.WsSession` (the host node decodes and answers a
        malformed message with a 1011 close)."""
        if not self._closed.is_set():
            stream = self.stream
            if stream.out_bytes > WS_MAX_PENDING_TO_NODE_BYTES:
                self.server_closed(*WS_CLOSE_NODE_BEHIND)
                return None
            stream.send_message(self.ref, frame)
        return None

    async def recv(self) -> bytes | str | None:
        """See :class:`gateway.backends.WsSession`."""
        if not await self._frames_queued():
            return None
        frame = self._queue.popleft()
        self._bytes -= len(frame)
        self.stream.budget.queued -= len(frame)
        return frame

    def handle_many(self, frames: Sequence[bytes | str]) -> str | None:
        """See :class:`gateway.backends.WsSession` (the stream batches per loop turn anyway)."""
        for frame in frames:
            self.handle(frame)
        return None

    async def recv_many(self) -> list[bytes | str] | None:
        """See :class:`gateway.backends.WsSession`."""
        if not await self._frames_queued():
            return None
        frames = list(self._queue)
        self._drop_queued()
        return frames

    async def _frames_queued(self) -> bool:
        """Wait until a frame is queued (True) or the connection is closed (False)."""
        while not self._closed.is_set():
            if self._queue:
                return True
            self._wake.clear()
            await self._wake.wait()
        return False

    async def wait_closed(self) -> None:
        """See :class:`gateway.backends.WsSession`."""
        await self._closed.wait()

    async def close(self) -> None:
        """See :class:`gateway.backends.WsSession`."""
        if self._removed:
            return
        self._removed = True
        self.server_closed(1000, "")
        self.stream.sessions.pop(self.ref, None)
        if not self.stream.dead:
            self.stream.send_disconnected(self.ref)
