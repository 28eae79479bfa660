"""The control plane's gRPC service (``proto/controlplane.proto``) over :class:`ControlPlane`.

:class:`ControlPlaneOps` is what the gateway asks of the control plane, composed from
:class:`ControlPlane`'s methods, with every failure a :class:`ControlPlaneError` whose message and
body are already the public API's (e.g. ``Error parsing `n`: …`` for a bad name in ``PUT
…/names``). Both transports run it: :class:`ControlPlaneServicer` here, and the in-process
adapter of :mod:`orrery.standalone`. :func:`failure_of` classifies its errors into the
``ErrorKind`` both transports hand to :mod:`gateway.failures`.

The cluster RPCs (status, replica changes, transfer, drain, verify) are methods of
:class:`ControlPlaneOps` too; standalone answers them with a bad request, and
:class:`controlplane.cluster.ClusterOps` implements them. ``WatchDatabases`` works in both modes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from clustermeta.metastore import CompactedError, MetaStoreClosed
from controlplane.core import (
    BadRequest,
    Catalog,
    Conflict,
    ControlPlane,
    ControlPlaneError,
    DatabaseNotFound,
    DatabaseRecord,
    InvalidName,
    NameNotFound,
    NamePermissionDenied,
    NotActive,
    NotAuthorized,
    PublishFailed,
    PublishResult,
    Unavailable,
    UpdateRejected,
    install_error,
    parse_name_or_identity,
    validate_name,
)
from controlplane.inspection import Verification
from controlplane.operations import Steps
from controlplane.watching import DatabaseEvent, database_events
from proto import GRPC_OPTIONS
from proto import controlplane_pb2 as pb
from proto import controlplane_pb2_grpc as pb_grpc
from proto.auth import ClusterSecret, server_interceptors
from sats.identity import Identity

__all__ = ["ControlPlaneOps", "ControlPlaneServicer", "ResetReplica", "failure_of", "start_server"]

log = logging.getLogger(__name__)

#: Wipe a replica and reinstall ``program`` (None: its current program): (identity, owner, program).
ResetReplica = Callable[[Identity, Identity, bytes | None], Awaitable[object]]


# --- the operations (shared by both transports) ---------------------------------------------------


#: What the cluster RPCs answer on a standalone server.
NOT_A_CLUSTER = "cluster operations need a cluster control plane (`orrery controlplane`); this server is standalone"


class ControlPlaneOps:
    """The gateway's requests to the control plane; failures are :class:`ControlPlaneError`.

    Every change first asks the control plane's fence whether it may act (a standby answers
    :class:`~controlplane.core.NotActive`); standalone always may.
    """

    def __init__(self, control: Catalog, reset_replica: ResetReplica, node_ids: Sequence[int] = (0,)) -> None:
        self.control = control
        self.reset_replica = reset_replica
        self._node_ids = list(node_ids)

    async def resolve(self, name_or_identity: str) -> Identity:
        """The identity a path segment names (identities are not checked for existence)."""
        return await self.control.resolve(name_or_identity)

    async def database(self, name_or_identity: str) -> DatabaseRecord:
        """Resolve and load; ``No such database.`` when there is none."""
        return await self.control.require_database(name_or_identity)

    async def publish(
        self,
        caller: Identity,
        name_or_identity: str | None,
        program: bytes,
        *,
        clear: bool,
        break_clients: bool = False,
        token: bytes | None = None,
        num_replicas: int = 0,
    ) -> PublishResult:
        """Create or update (client-api.md §6.2), under the migration policy ``break_clients``/``token``."""
        self.control.fence.require_active()
        return await self.control.publish(
            caller, name_or_identity, program, clear=clear, break_clients=break_clients, token=token,
            num_replicas=num_replicas,
        )  # fmt: skip

    async def reset(self, caller: Identity, name_or_identity: str, program: bytes | None) -> PublishResult:
        """Wipe the data and reinstall (the given program, or the current one); owner only."""
        self.control.fence.require_active()
        record = await self.control.require_database(name_or_identity)
        await self.control.authorize_owner(caller, record, "reset database")
        target = parse_name_or_identity(name_or_identity)
        try:
            await self.reset_replica(record.identity, record.owner, program)
        except ControlPlaneError:
            raise
        except Exception as e:
            # Host nodes (in-process or remote) name a missing replica DatabaseNotFound.
            if type(e).__name__ == "DatabaseNotFound":
                raise DatabaseNotFound("No such database.") from None
            raise install_error(e, updating=False) from None
        if program is not None:
            await self.control.set_initial_program(record, program)
        return PublishResult(record.identity, "updated", target if isinstance(target, str) else None)

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """Delete a database (owner only; idempotent for identities with no database)."""
        self.control.fence.require_active()
        await self.control.delete(caller, name_or_identity)

    async def names(self, identity: Identity) -> list[str]:
        """Every name that points at the database, sorted."""
        return sorted(await self.control.names(identity))

    async def add_name(self, caller: Identity, name_or_identity: str, name: str) -> dict[str, Any]:
        """``POST …/names``: the ``{"Success":…}`` body."""
        self.control.fence.require_active()
        await self.control.resolve(name_or_identity)
        try:
            validate_name(name)
        except InvalidName as e:
            raise BadRequest(e.message) from None  # a name in the body, not the URL
        try:
            return await self.control.add_name(caller, name_or_identity, name)
        except NamePermissionDenied as e:
            raise NamePermissionDenied(e.message, body={"PermissionDenied": {"domain": name}}) from None

    async def set_names(self, caller: Identity, name_or_identity: str, names: list[str]) -> None:
        """``PUT …/names``: replace every name (owner only)."""
        self.control.fence.require_active()
        await self.control.resolve(name_or_identity)
        for name in names:
            try:
                validate_name(name)
            except InvalidName as e:
                raise BadRequest(f"Error parsing `{name}`: {e.message}") from None
        await self.control.set_names(caller, name_or_identity, names)

    async def databases_of(self, owner: Identity) -> list[Identity]:
        """Identities of the databases ``owner`` owns."""
        return await self.control.databases_of(owner)

    def node_ids(self) -> list[int]:
        """The host nodes that can run databases."""
        return list(self._node_ids)

    def placements(self, record: DatabaseRecord) -> list[tuple[str, str]]:
        """``(node, address)`` of the database's voting replicas, the leader first."""
        address = self.control.placement.address if isinstance(self.control, ControlPlane) else ""
        leader = [record.leader] if record.leader in record.replicas else []
        return [(n, address) for n in [*leader, *(n for n in record.replicas if n not in leader)]]

    def database_events(self, start_revision: int) -> AsyncIterator[DatabaseEvent]:
        """Database records from ``start_revision`` on (0: the current ones first)."""
        return database_events(self.control.store, start_revision)

    # --- cluster operations (standalone: refused) ---------------------------------------------

    async def cluster_status(self, name_or_identity: str) -> dict[str, object]:
        """The ``orrery cluster status --json`` document."""
        raise BadRequest(NOT_A_CLUSTER)

    async def add_replica(self, name_or_identity: str, to_node: str, timeout_ms: int, steps: Steps) -> None:
        """Add a replica on ``to_node``."""
        raise BadRequest(NOT_A_CLUSTER)

    async def move_replica(
        self, name_or_identity: str, from_node: str, to_node: str, timeout_ms: int, steps: Steps
    ) -> None:
        """Move the replica on ``from_node`` to ``to_node``."""
        raise BadRequest(NOT_A_CLUSTER)

    async def transfer_leader(self, name_or_identity: str, to_node: str, timeout_ms: int, steps: Steps) -> None:
        """Hand the leadership to ``to_node``."""
        raise BadRequest(NOT_A_CLUSTER)

    async def drain(self, node_id: str, timeout_ms: int, steps: Steps) -> None:
        """Move every leadership and replica off ``node_id``."""
        raise BadRequest(NOT_A_CLUSTER)

    async def verify(self, name_or_identity: str, timeout_ms: int) -> Verification:
        """Every replica's table digest at one committed offset."""
        raise BadRequest(NOT_A_CLUSTER)


_KINDS: list[tuple[type[ControlPlaneError], pb.ErrorKind]] = [
    (InvalidName, pb.ERROR_KIND_INVALID_NAME),
    (NameNotFound, pb.ERROR_KIND_NAME_NOT_FOUND),
    (DatabaseNotFound, pb.ERROR_KIND_DATABASE_NOT_FOUND),
    (NotAuthorized, pb.ERROR_KIND_NOT_AUTHORIZED),
    (NamePermissionDenied, pb.ERROR_KIND_NAME_PERMISSION_DENIED),
    (BadRequest, pb.ERROR_KIND_BAD_REQUEST),
    (PublishFailed, pb.ERROR_KIND_PUBLISH_FAILED),
    (UpdateRejected, pb.ERROR_KIND_UPDATE_REJECTED),
    (Conflict, pb.ERROR_KIND_CONFLICT),
    (NotActive, pb.ERROR_KIND_NOT_ACTIVE),
    (Unavailable, pb.ERROR_KIND_UNAVAILABLE),
]


def failure_of(e: ControlPlaneError) -> tuple[pb.ErrorKind, str, Any]:
    """``(kind, message, JSON body or None)`` of a control-plane error."""
    kind = next((k for cls, k in _KINDS if isinstance(e, cls)), pb.ERROR_KIND_OTHER)
    return kind, e.message, e.body


def _failure(e: Exception) -> pb.Failure:
    if isinstance(e, ControlPlaneError):
        kind, message, body = failure_of(e)
        return pb.Failure(
            kind=kind, message=message, json_body="" if body is None else json.dumps(body),
            active_address=e.active_address if isinstance(e, NotActive) else "",
        )  # fmt: skip
    log.exception("internal error in the control plane service")
    return pb.Failure(kind=pb.ERROR_KIND_INTERNAL, message=f"{type(e).__name__}: {e}")


def _identity(data: bytes) -> Identity:
    return Identity.from_bsatn(data)


def _database_info(record: DatabaseRecord, placements: list[tuple[str, str]]) -> pb.DatabaseInfo:
    return pb.DatabaseInfo(
        database_identity=record.identity.to_bsatn(),
        owner_identity=record.owner.to_bsatn(),
        host_type=record.host_type,
        initial_program_hash=record.initial_program_hash,
        replicas=[pb.Placement(node_id=n, address=a, epoch=record.epoch) for n, a in placements],
        epoch=record.epoch,
        leader=record.leader or "",
        state=record.state.value,
    )


def _event(event: DatabaseEvent, ops: ControlPlaneOps) -> pb.DatabaseEvent:
    if event.end_of_snapshot:
        return pb.DatabaseEvent(revision=event.revision, snapshot_end=True)
    if event.record is None:
        assert event.identity is not None
        return pb.DatabaseEvent(
            revision=event.revision, deleted=True,
            database=pb.DatabaseInfo(database_identity=event.identity.to_bsatn()),
        )  # fmt: skip
    return pb.DatabaseEvent(
        revision=event.revision, snapshot=event.snapshot,
        database=_database_info(event.record, ops.placements(event.record)),
    )  # fmt: skip


def _published(result: PublishResult) -> pb.PublishResponse:
    response = pb.PublishResponse(
        op=pb.PUBLISH_OP_CREATED if result.op == "created" else pb.PUBLISH_OP_UPDATED,
        database_identity=result.identity.to_bsatn(),
    )
    if result.domain is not None:
        response.domain = result.domain
    return response


# --- the service ----------------------------------------------------------------------------------


class ControlPlaneServicer(pb_grpc.ControlPlaneServicer):
    """``orrery.controlplane.v1.ControlPlane`` over :class:`ControlPlaneOps`."""

    def __init__(self, ops: ControlPlaneOps) -> None:
        self.ops = ops

    async def Resolve(self, request: pb.ResolveRequest, context: Any) -> pb.ResolveResponse:  # noqa: N802
        """Name or identity → identity."""
        try:
            identity = await self.ops.resolve(request.name_or_identity)
        except Exception as e:  # noqa: BLE001 - every failure is an answer
            return pb.ResolveResponse(failure=_failure(e))
        return pb.ResolveResponse(database_identity=identity.to_bsatn())

    async def GetDatabase(self, request: pb.GetDatabaseRequest, context: Any) -> pb.DatabaseResponse:  # noqa: N802
        """Resolve and load."""
        try:
            record = await self.ops.database(request.name_or_identity)
        except Exception as e:  # noqa: BLE001
            return pb.DatabaseResponse(failure=_failure(e))
        return pb.DatabaseResponse(database=_database_info(record, self.ops.placements(record)))

    async def Publish(self, request: pb.PublishRequest, context: Any) -> pb.PublishResponse:  # noqa: N802
        """Create or update."""
        try:
            result = await self.ops.publish(
                _identity(request.caller_identity), request.name_or_identity or None, request.program,
                clear=request.clear, break_clients=request.break_clients,
                token=request.migration_token if request.HasField("migration_token") else None,
                num_replicas=request.num_replicas,
            )
        except Exception as e:  # noqa: BLE001
            return pb.PublishResponse(failure=_failure(e))
        return _published(result)

    async def Reset(self, request: pb.ResetRequest, context: Any) -> pb.PublishResponse:  # noqa: N802
        """Wipe and reinstall."""
        try:
            result = await self.ops.reset(
                _identity(request.caller_identity), request.name_or_identity, request.program or None
            )
        except Exception as e:  # noqa: BLE001
            return pb.PublishResponse(failure=_failure(e))
        return _published(result)

    async def DeleteDatabase(  # noqa: N802
        self, request: pb.DeleteDatabaseRequest, context: Any
    ) -> pb.DeleteDatabaseResponse:
        """Delete (owner only)."""
        try:
            await self.ops.delete(_identity(request.caller_identity), request.name_or_identity)
        except Exception as e:  # noqa: BLE001
            return pb.DeleteDatabaseResponse(failure=_failure(e))
        return pb.DeleteDatabaseResponse()

    async def GetNames(self, request: pb.GetNamesRequest, context: Any) -> pb.Names:  # noqa: N802
        """Every name of a database."""
        return pb.Names(names=await self.ops.names(_identity(request.database_identity)))

    async def AddName(self, request: pb.AddNameRequest, context: Any) -> pb.NameResult:  # noqa: N802
        """One more name."""
        try:
            body = await self.ops.add_name(_identity(request.caller_identity), request.name_or_identity, request.name)
        except Exception as e:  # noqa: BLE001
            return pb.NameResult(failure=_failure(e))
        success = body["Success"]
        return pb.NameResult(
            domain=success["domain"], database_identity=Identity.from_hex(success["database_identity"]).to_bsatn()
        )

    async def SetNames(self, request: pb.SetNamesRequest, context: Any) -> pb.SetNamesResponse:  # noqa: N802
        """Replace every name."""
        try:
            await self.ops.set_names(_identity(request.caller_identity), request.name_or_identity, list(request.names))
        except Exception as e:  # noqa: BLE001
            return pb.SetNamesResponse(failure=_failure(e))
        return pb.SetNamesResponse()

    async def ListDatabases(self, request: pb.ListDatabasesRequest, context: Any) -> pb.DatabaseList:  # noqa: N802
        """An owner's databases."""
        owned = await self.ops.databases_of(_identity(request.owner_identity))
        return pb.DatabaseList(identities=[i.to_bsatn() for i in owned])

    async def ListNodes(self, request: pb.ListNodesRequest, context: Any) -> pb.NodeList:  # noqa: N802
        """The host nodes."""
        return pb.NodeList(node_ids=self.ops.node_ids())

    async def WatchDatabases(  # noqa: N802
        self, request: pb.WatchDatabasesRequest, context: Any
    ) -> AsyncIterator[pb.DatabaseEvent]:
        """Record changes from a revision (0: the current records first); see the .proto."""
        try:
            async for event in self.ops.database_events(request.start_revision):
                yield _event(event, self.ops)
        except CompactedError as e:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(e))
        except MetaStoreClosed as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))

    # --- cluster operations -------------------------------------------------------------------

    async def ClusterStatus(  # noqa: N802
        self, request: pb.ClusterStatusRequest, context: Any
    ) -> pb.ClusterStatusResponse:
        """Nodes, databases, replicas, roles and offsets as JSON."""
        try:
            document = await self.ops.cluster_status(request.name_or_identity)
        except Exception as e:  # noqa: BLE001
            return pb.ClusterStatusResponse(failure=_failure(e))
        return pb.ClusterStatusResponse(json=json.dumps(document))

    async def AddReplica(self, request: pb.ReplicaChangeRequest, context: Any) -> pb.OperationResponse:  # noqa: N802
        """Learner, catch-up, voter."""
        steps = Steps("add-replica")
        return await _operation(
            steps, self.ops.add_replica(request.name_or_identity, request.to_node, request.timeout_ms, steps)
        )

    async def MoveReplica(self, request: pb.ReplicaChangeRequest, context: Any) -> pb.OperationResponse:  # noqa: N802
        """Add, switch, remove."""
        steps = Steps("move-replica")
        return await _operation(
            steps,
            self.ops.move_replica(
                request.name_or_identity, request.from_node, request.to_node, request.timeout_ms, steps
            ),
        )

    async def TransferLeader(  # noqa: N802
        self, request: pb.TransferLeaderRequest, context: Any
    ) -> pb.OperationResponse:
        """Prepare, then elect the target."""
        steps = Steps("transfer-leader")
        return await _operation(
            steps, self.ops.transfer_leader(request.name_or_identity, request.to_node, request.timeout_ms, steps)
        )

    async def Drain(self, request: pb.DrainRequest, context: Any) -> pb.OperationResponse:  # noqa: N802
        """Every leadership, then every replica, off a node."""
        steps = Steps("drain")
        return await _operation(steps, self.ops.drain(request.node_id, request.timeout_ms, steps))

    async def Verify(self, request: pb.VerifyRequest, context: Any) -> pb.VerifyResponse:  # noqa: N802
        """Digests of every replica at one committed offset."""
        try:
            result = await self.ops.verify(request.name_or_identity, request.timeout_ms)
        except Exception as e:  # noqa: BLE001
            return pb.VerifyResponse(failure=_failure(e))
        return pb.VerifyResponse(
            offset=result.offset, agree=result.agree,
            replicas=[
                pb.ReplicaDigest(node_id=r.node_id, digest=r.digest, rows=r.rows, error=r.error)
                for r in result.replicas
            ],
        )  # fmt: skip


async def _operation(steps: Steps, job: Awaitable[None]) -> pb.OperationResponse:
    try:
        await job
    except Exception as e:  # noqa: BLE001 - every failure is an answer, with the steps done so far
        return pb.OperationResponse(failure=_failure(e), steps=steps.lines)
    return pb.OperationResponse(steps=steps.lines)


async def start_server(
    ops: ControlPlaneOps, address: str = "127.0.0.1:0", *, secret: ClusterSecret
) -> tuple[grpc.aio.Server, str]:
    """Serve ``ops`` on ``address`` to callers that carry ``secret``; returns the started server
    and the ``host:port`` it bound."""
    server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=server_interceptors(secret))
    pb_grpc.add_ControlPlaneServicer_to_server(ControlPlaneServicer(ops), server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, f"{address.rpartition(':')[0]}:{port}"
