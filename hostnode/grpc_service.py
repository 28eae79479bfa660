"""The host node's gRPC service (``proto/hostnode.proto``) over :class:`hostnode.service.HostNode`.

A thin shell: requests become :class:`HostNode` calls, results and exceptions become messages.
Failures a caller can act on travel as ``Failure{kind, message}`` answers (:func:`failure_of`
classifies the engine's exceptions); a gRPC error status means the node itself failed.

The pieces both transports need — classifying exceptions, previewing an update, streaming log
lines — are module functions here, so the in-process adapter (:mod:`orrery.standalone`) gives the
same answers without a network hop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from clustermeta.aio import cancel_and_wait
from clustermeta.records import DatabaseRecord
from hostnode.cluster import ClusterNode
from hostnode.database import (
    DatabaseClosed,
    DatabaseError,
    InvalidArguments,
    LifecycleReducerCall,
    NoSuchReducer,
    ReducerOutcome,
    Status,
)
from hostnode.durability import NoQuorum, NotLeader, OutcomeUnknown, StaleEpoch
from hostnode.grpc_stream import GrpcClientStream
from hostnode.migrate import MigrationError, MigrationPlan, MigrationPolicyError
from hostnode.modulelog import record_line
from hostnode.service import DatabaseNotFound, HostNode
from hostnode.sql import SqlError, render_response_bytes
from hostnode.wasm_host import ModuleLoadError
from hostnode.worker import Overloaded
from proto import GRPC_OPTIONS
from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc
from proto.auth import ClusterSecret, server_interceptors
from sats.hash import to_sats_json
from sats.identity import Identity
from sats.json import dumps

__all__ = [
    "HostNodeServicer",
    "UpdatePreview",
    "describe_plan",
    "failure_of",
    "format_token",
    "LogFollowQueue",
    "log_batches",
    "preview_update",
    "start_server",
]

log = logging.getLogger(__name__)

#: Most lines in one ``LogLines`` message (a tail of a huge log goes out in several).
LOG_BATCH_LINES = 1000

STATUS: dict[Status, pb.Status] = {
    Status.COMMITTED: pb.STATUS_COMMITTED,
    Status.FAILED: pb.STATUS_FAILED,
    Status.OUT_OF_ENERGY: pb.STATUS_OUT_OF_ENERGY,
}


# --- shared with the in-process adapter ----------------------------------------------------------


#: Engine exceptions a caller can act on, most specific first.
_KINDS: list[tuple[type[BaseException], pb.ErrorKind]] = [
    (DatabaseNotFound, pb.ERROR_KIND_NO_SUCH_DATABASE),
    (NoSuchReducer, pb.ERROR_KIND_NO_SUCH_REDUCER),
    (LifecycleReducerCall, pb.ERROR_KIND_LIFECYCLE_REDUCER),
    (InvalidArguments, pb.ERROR_KIND_INVALID_ARGUMENTS),
    (DatabaseClosed, pb.ERROR_KIND_DATABASE_CLOSED),
    (DatabaseError, pb.ERROR_KIND_DATABASE),
    (ModuleLoadError, pb.ERROR_KIND_INVALID_PROGRAM),
    (MigrationError, pb.ERROR_KIND_MIGRATION_REJECTED),
    (MigrationPolicyError, pb.ERROR_KIND_MIGRATION_POLICY),
    (SqlError, pb.ERROR_KIND_SQL),
    (NotLeader, pb.ERROR_KIND_NOT_LEADER),
    (NoQuorum, pb.ERROR_KIND_NO_QUORUM),
    (OutcomeUnknown, pb.ERROR_KIND_OUTCOME_UNKNOWN),
    (StaleEpoch, pb.ERROR_KIND_STALE_EPOCH),
    (Overloaded, pb.ERROR_KIND_OVERLOADED),
]


def failure_of(e: BaseException) -> tuple[pb.ErrorKind, str] | None:
    """``(kind, message)`` of an engine exception a caller can act on; None for anything else."""
    kind = next((k for cls, k in _KINDS if isinstance(e, cls)), None)
    return None if kind is None else (kind, str(e))


def _failure(e: Exception) -> pb.Failure:
    """Any exception as a Failure (unexpected ones as INTERNAL, worded like the gateway's 500s)."""
    known = failure_of(e)
    if known is None:
        log.exception("internal error in the host node service")
        return pb.Failure(kind=pb.ERROR_KIND_INTERNAL, message=f"{type(e).__name__}: {e}")
    return pb.Failure(kind=known[0], message=known[1])


@dataclass(frozen=True)
class UpdatePreview:
    """What republishing a program would do (``POST …/pre_publish``)."""

    #: True: an automatic migration exists (``plan``, ``token``); False: ``reason`` says why not.
    automatic: bool
    plan: str = ""
    token: str = ""
    reason: str = ""
    #: The update disconnects every connected client (its RLS rules change).
    break_clients: bool = False


async def preview_update(node: HostNode, identity: Identity, program: bytes) -> UpdatePreview:
    """Plan the update of ``identity`` to ``program``; the token names (database, old, new program).

    Raises DatabaseNotFound, ModuleLoadError or DatabaseError; a manual migration is a value.
    """
    try:
        planned = await node.plan_program_update(identity, program)
    except MigrationError as e:
        return UpdatePreview(automatic=False, reason=str(e))
    return UpdatePreview(
        automatic=True,
        plan=describe_plan(planned.plan, planned.index_names),
        token=format_token(planned.token),
        break_clients=planned.plan.disconnects_clients,
    )


def format_token(token: bytes) -> str:
    """A migration token as the pre-publish answer shows it: 1.12's SATS-JSON of a ``Hash``
    (a u256 from the little-endian bytes, ``0x`` and no leading zeros)."""
    return to_sats_json(token)


def describe_plan(plan: MigrationPlan, index_names: dict[int, str]) -> str:
    """A migration plan as the lines ``spacetime publish`` prints."""
    lines = ["Updating the module; the automatic migration will:"]
    lines += [f"- create table `{t.name}`" for t in plan.create_tables]
    lines += [f"- remove index `{index_names.get(i, f'#{i}')}`" for i in plan.drop_indexes]
    lines += [f"- create index `{ix.name}`" for ix in plan.create_indexes]
    lines += [f"- remove row-level security rule `{sql}`" for sql in plan.drop_rls]
    lines += [f"- add row-level security rule `{sql}`" for sql in plan.create_rls]
    if plan.disconnects_clients:
        lines.append("- disconnect every connected client (their subscriptions used the old rules)")
    if plan.is_empty:
        lines.append("- change no tables (code only)")
    return "\n".join(lines) + "\n"


#: Bytes of new log lines one follower may have waiting (README, "Limits"); beyond it lines are
#: skipped and one marker line says how many.
LOG_FOLLOW_MAX_BYTES = 1 << 20


class LogFollowQueue:
    """The lines waiting for one ``/logs?follow`` reader (event loop side), bounded in bytes.

    A follower that cannot keep up (a slow HTTP client) must not make the server hold the log:
    past ``max_bytes`` new lines are dropped, and where they would have been the reader gets one
    Warn record from target ``orrery`` saying how many it missed. The connection stays open.
    """

    def __init__(self, max_bytes: int = LOG_FOLLOW_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lines: collections.deque[str] = collections.deque()
        self._bytes = 0
        self._skipped = 0
        self._wake = asyncio.Event()

    def put(self, line: str) -> None:
        """Queue one line, or skip it when the queue is full (and until the reader has caught
        up, so that one marker stands for the whole gap)."""
        if self._skipped or self._bytes + len(line) > self.max_bytes:
            self._skipped += 1
            self._wake.set()
            return
        self._lines.append(line)
        self._bytes += len(line)
        self._wake.set()

    @property
    def queued_bytes(self) -> int:
        """Bytes of the lines waiting now."""
        return self._bytes

    def _end_skip(self) -> None:
        if self._skipped:
            marker = skipped_marker(self._skipped, self.max_bytes)
            self._lines.append(marker)
            self._bytes += len(marker)
            self._skipped = 0

    async def batch(self, max_lines: int) -> list[str]:
        """The next lines (at least one, at most ``max_lines``), waiting for one if need be."""
        while not self._lines and not self._skipped:
            self._wake.clear()
            await self._wake.wait()
        if len(self._lines) < max_lines:
            self._end_skip()  # the reader caught up with the gap: tell it now
        batch: list[str] = []
        while self._lines and len(batch) < max_lines:
            line = self._lines.popleft()
            self._bytes -= len(line)
            batch.append(line)
        return batch


def skipped_marker(count: int, max_bytes: int) -> str:
    """The record that stands for ``count`` lines a slow follower missed."""
    return record_line(
        "Warn",
        f"{count} log line{'s' if count != 1 else ''} skipped: this reader fell behind "
        f"(more than {max_bytes} bytes were waiting for it)",
        target="orrery",
    )


async def log_batches(
    node: HostNode, identity: Identity, num_lines: int | None, follow: bool, *, max_bytes: int = LOG_FOLLOW_MAX_BYTES
) -> AsyncGenerator[list[str], None]:
    """The last ``num_lines`` lines (all when None), then — with ``follow`` — new lines forever.

    Each batch holds every line available at that moment (new lines wait in a
    :class:`LogFollowQueue` of ``max_bytes``). The follower is registered together with reading
    the tail, so no line is lost or repeated in between; the first batch comes once it is (an
    empty one when following with nothing to tail). The database's writer is not involved:
    the logs of a database busy in a long reducer are read while it runs.
    Raises DatabaseNotFound before yielding anything.
    """
    loop = asyncio.get_running_loop()
    queue = LogFollowQueue(max_bytes)

    def on_line(line: str) -> None:
        # Runs on the thread that wrote the line (the database's writer).
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            loop.call_soon_threadsafe(queue.put, line)

    logs = node.database(identity).logs
    old: list[str]
    unsubscribe: Callable[[], None] | None = None
    if follow:
        old, unsubscribe = await asyncio.to_thread(logs.tail_and_follow, num_lines if num_lines else 0, on_line)
    else:
        old = await asyncio.to_thread(logs.tail, num_lines)
    try:
        if unsubscribe is not None and not old:
            yield []  # registered, nothing to tail: the caller may answer its client now
        for i in range(0, len(old), LOG_BATCH_LINES):
            yield old[i : i + LOG_BATCH_LINES]
        while unsubscribe is not None:
            yield await queue.batch(LOG_BATCH_LINES)
    finally:
        if unsubscribe is not None:
            unsubscribe()


# --- the service ----------------------------------------------------------------------------------


def _reducer_result(outcome: ReducerOutcome, request_id: int = 0, *, connect: bool = False) -> pb.ReducerResult:
    result = pb.ReducerResult(
        request_id=request_id,
        status=STATUS[outcome.status],
        message=outcome.message,
        energy_used=outcome.energy_used,
        duration_micros=outcome.duration_micros,
        timestamp_micros=outcome.timestamp_micros,
        connect=connect,
    )
    if outcome.offset is not None:
        result.offset = outcome.offset
    return result


def _conn_id(data: bytes) -> int:
    return int.from_bytes(data, "little")


class HostNodeServicer(pb_grpc.HostNodeServicer):
    """``orrery.hostnode.v1.HostNode`` over one :class:`HostNode`."""

    def __init__(self, node: HostNode, cluster: ClusterNode | None = None) -> None:
        self.node = node
        self.cluster = cluster

    async def Install(self, request: pb.InstallRequest, context: Any) -> pb.InstallResponse:  # noqa: N802
        """Create or update (``keep_program``: reinstall the current program); in a cluster
        (``epoch`` set) with the replica set, answering once a majority has it."""
        identity = Identity.from_bsatn(request.database_identity)
        try:
            program = self.node.database(identity).program_bytes if request.keep_program else request.program
            token = request.migration_token if request.HasField("migration_token") else None
            owner = Identity.from_bsatn(request.owner_identity)
            if request.epoch and self.cluster is not None:
                done = await self.cluster.install(
                    identity, owner, program, epoch=request.epoch,
                    replicas=[(p.node_id, p.address) for p in request.replicas],
                    learners=[(p.node_id, p.address) for p in request.learners],
                    generation=request.generation or 1, clear=request.clear, token=token,
                )  # fmt: skip
            else:
                done = await self.node.install(identity, owner, program, clear=request.clear, token=token)
        except Exception as e:  # noqa: BLE001 - every failure is an answer
            return pb.InstallResponse(failure=_failure(e))
        response = pb.InstallResponse(created=done.created)
        if done.init is not None:
            response.init.CopyFrom(_reducer_result(done.init))
        if done.migration is not None:
            response.migration = describe_plan(done.migration, {})
        return response

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:  # noqa: N802
        """Stop a database and remove its files."""
        try:
            identity = Identity.from_bsatn(request.database_identity)
            if self.cluster is not None:
                await self.cluster.delete(identity)
            else:
                await self.node.delete(identity)
        except Exception as e:  # noqa: BLE001
            return pb.DeleteResponse(failure=_failure(e))
        return pb.DeleteResponse()

    async def CallReducers(self, request: pb.CallBatch, context: Any) -> pb.CallBatchResult:  # noqa: N802
        """Run every call of the batch; answer in request order once all are durable or failed.

        The calls are handed to the database's writer thread in request order (each submits
        before its first await), so they run in that order and share fsyncs.
        """
        identity = Identity.from_bsatn(request.database_identity)
        results = await asyncio.gather(*(self._call(identity, call) for call in request.calls))
        return pb.CallBatchResult(results=results)

    async def _call(self, identity: Identity, call: pb.ReducerCall) -> pb.ReducerResult:
        node = self.node
        caller = Identity.from_bsatn(call.caller_identity)
        connection_id = _conn_id(call.connection_id)
        try:
            if call.kind == pb.CALL_KIND_HTTP:
                args: bytes | Callable[[], bytes]
                if call.WhichOneof("args") == "json":
                    text = call.json
                    args = lambda: node.encode_json_args(identity, call.reducer, text)  # noqa: E731
                else:
                    args = call.bsatn
                done = await node.call_via_http(identity, call.reducer, args, caller=caller, connection_id=connection_id)
                if done.error is not None:
                    raise done.error
                if done.reducer is None:
                    assert done.connected is not None, "only a refused connect leaves no reducer outcome"
                    return _reducer_result(done.connected, call.request_id, connect=True)
                return _reducer_result(done.reducer, call.request_id)
            data = node.encode_json_args(identity, call.reducer, call.json) if call.WhichOneof("args") == "json" else call.bsatn
            outcome = await node.call_reducer(
                identity,
                call.reducer,
                data,
                caller=caller,
                connection_id=connection_id,
                timestamp_micros=call.timestamp_micros if call.HasField("timestamp_micros") else None,
            )
            return _reducer_result(outcome, call.request_id)
        except Exception as e:  # noqa: BLE001
            return pb.ReducerResult(request_id=call.request_id, failure=_failure(e))

    async def Sql(self, request: pb.SqlRequest, context: Any) -> pb.SqlResponse:  # noqa: N802
        """One SQL statement; the response body is rendered here, once."""
        try:
            result = await self.node.sql(Identity.from_bsatn(request.database_identity), request.query, Identity.from_bsatn(request.caller_identity))
        except Exception as e:  # noqa: BLE001
            return pb.SqlResponse(failure=_failure(e))
        return pb.SqlResponse(body=render_response_bytes(result), duration_micros=result.total_duration_micros)

    async def GetSchema(self, request: pb.SchemaRequest, context: Any) -> pb.SchemaResponse:  # noqa: N802
        """The module definition as SATS-JSON text."""
        try:
            schema = self.node.schema_json(Identity.from_bsatn(request.database_identity))
        except Exception as e:  # noqa: BLE001
            return pb.SchemaResponse(failure=_failure(e))
        return pb.SchemaResponse(json=dumps(schema))

    async def PlanUpdate(self, request: pb.PlanUpdateRequest, context: Any) -> pb.PlanUpdateResponse:  # noqa: N802
        """What republishing would do."""
        try:
            preview = await preview_update(self.node, Identity.from_bsatn(request.database_identity), request.program)
        except Exception as e:  # noqa: BLE001
            return pb.PlanUpdateResponse(failure=_failure(e))
        return pb.PlanUpdateResponse(
            automatic=preview.automatic, plan=preview.plan, token=preview.token, reason=preview.reason,
            break_clients=preview.break_clients,
        )

    async def Logs(self, request: pb.LogsRequest, context: Any) -> AsyncIterator[pb.LogLines]:  # noqa: N802
        """Tail, then (``follow``) batches of new lines until the caller cancels."""
        num_lines = request.num_lines if request.HasField("num_lines") else None
        batches = log_batches(self.node, Identity.from_bsatn(request.database_identity), num_lines, request.follow)
        try:
            try:
                first = await anext(batches)
            except StopAsyncIteration:
                return
            except Exception as e:  # noqa: BLE001
                yield pb.LogLines(failure=_failure(e))
                return
            yield pb.LogLines(lines=first)
            async for batch in batches:
                yield pb.LogLines(lines=batch)
        finally:
            await batches.aclose()

    async def Connect(self, request_iterator: Any, context: Any) -> AsyncIterator[pb.HostFrames]:  # noqa: N802
        """The realtime data path: every WebSocket client of one gateway for one database.

        Client frames arrive batched; each server frame is sent once with every connection
        that receives it, and every message carries all the events of one event-loop turn.
        """
        stream = GrpcClientStream(self.node)
        reader = asyncio.ensure_future(stream.read(request_iterator))
        try:
            while True:
                events = await stream.next_batch()
                if events is None:
                    break
                yield pb.HostFrames(events=events)
        finally:
            await cancel_and_wait(reader)
            await stream.close_all()


class ReplicationServicer(pb_grpc.ReplicationServicer):
    """``orrery.hostnode.v1.Replication`` over one :class:`~hostnode.cluster.ClusterNode`."""

    def __init__(self, cluster: ClusterNode) -> None:
        self.cluster = cluster

    async def Promise(self, request: pb.PromiseRequest, context: Any) -> pb.PromiseResponse:  # noqa: N802
        """Durably promise an epoch; report the durable log's end."""
        try:
            return await self.cluster.promise(Identity.from_bsatn(request.database_identity), request.epoch)
        except Exception as e:  # noqa: BLE001
            return pb.PromiseResponse(failure=_failure(e))

    async def Replicate(self, request_iterator: Any, context: Any) -> None:  # noqa: N802
        """The follower's side of a leader's stream."""
        await self.cluster.replicate(context)

    async def GetSnapshot(self, request: pb.SnapshotRequest, context: Any) -> AsyncIterator[pb.SnapshotChunk]:  # noqa: N802
        """This leader's LMDB state at its last checkpoint."""
        async for chunk in self.cluster.snapshot(Identity.from_bsatn(request.database_identity), request.epoch):
            yield chunk

    async def Status(self, request: pb.ReplicaStatusRequest, context: Any) -> pb.ReplicaStatusResponse:  # noqa: N802
        """Roles, epochs and offsets of the replicas here."""
        ident = Identity.from_bsatn(request.database_identity) if request.database_identity else None
        return self.cluster.status(ident)

    async def Digest(self, request: pb.DigestRequest, context: Any) -> pb.DigestResponse:  # noqa: N802
        """The digest of a replica's tables at one offset."""
        try:
            return await self.cluster.digest(
                Identity.from_bsatn(request.database_identity), request.offset, (request.timeout_ms or 10_000) / 1000
            )
        except Exception as e:  # noqa: BLE001
            return pb.DigestResponse(failure=_failure(e))

    async def PrepareTransfer(  # noqa: N802
        self, request: pb.PrepareTransferRequest, context: Any
    ) -> pb.PrepareTransferResponse:
        """Hold writes back until the target has every record."""
        try:
            end = await self.cluster.prepare_transfer(
                Identity.from_bsatn(request.database_identity), request.epoch, request.target_node,
                (request.timeout_ms or 10_000) / 1000,
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001
            return pb.PrepareTransferResponse(failure=_failure(e))
        return pb.PrepareTransferResponse(next_offset=end)

    async def Assign(self, request: pb.AssignRequest, context: Any) -> pb.AssignResponse:  # noqa: N802
        """The control plane's nudge: act on a database record now."""
        try:
            peers = {p.node_id: p.address for p in request.peers}
            if request.deleted:
                await self.cluster.apply_record(Identity.from_bsatn(request.database_identity), None, peers)
            else:
                record = DatabaseRecord.from_json(request.record_json.encode())
                await self.cluster.apply_record(record.identity, record, peers)
        except Exception as e:  # noqa: BLE001
            return pb.AssignResponse(failure=_failure(e))
        return pb.AssignResponse()


async def start_server(
    node: HostNode, address: str = "127.0.0.1:0", cluster: ClusterNode | None = None, *, secret: ClusterSecret
) -> tuple[grpc.aio.Server, str]:
    """Serve ``node`` on ``address`` (and, in a cluster, its Replication service) to callers that
    carry ``secret``; returns the started server and the ``host:port`` it bound."""
    server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=server_interceptors(secret))
    pb_grpc.add_HostNodeServicer_to_server(HostNodeServicer(node, cluster), server)
    if cluster is not None:
        pb_grpc.add_ReplicationServicer_to_server(ReplicationServicer(cluster), server)
    port = server.add_insecure_port(address)
    await server.start()
    host = address.rpartition(":")[0]
    return server, f"{host}:{port}"
