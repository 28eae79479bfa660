"""A test double of a host node's control-plane-facing services, served over real gRPC.

:class:`FakeNode` serves ``HostNode.Install/Delete`` and the ``Replication`` service on
127.0.0.1 and registers ``/nodes/<id>`` under its own lease, as a real host node does. Each replica
is a :class:`FakeReplica`: the promise and log-end bookkeeping the control plane reasons about
(promised epoch, last epoch, next offset, generation), with the Promise semantics of
``proto/hostnode.proto``: a lower epoch is refused (STALE_EPOCH), an equal or higher one is
promised and answered with the end of the log.

Replication itself is simulated by :class:`FakeCluster`: a leader's log end is copied to the
followers and learners that are up (``sync``), so the offsets the control plane polls move as a
real cluster's would. Tests shape the logs directly (``node.replicas[db].next_offset = …``) to set
up elections, and switch faults on per node (failing or blocked installs, silent promises, catch-up
that never ends, digests that differ, checkpoints past the asked offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from clustermeta.aio import cancel_and_wait
from clustermeta.metastore import MetaStore
from clustermeta.records import DatabaseRecord, NodeInfo, node_key
from proto import GRPC_OPTIONS
from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc
from sats.identity import Identity


@dataclass
class FakeReplica:
    """One replica's durable state, as far as the control plane can see it."""

    promised_epoch: int = 0
    last_epoch: int = 0
    next_offset: int = 0
    generation: int = 1
    role: str = "none"
    epoch: int = 0
    learner: bool = False
    #: What Status says of a leader's quorum (a test cuts a leader off from its followers).
    has_quorum: bool = True
    #: Offset of the LMDB checkpoint: a digest below it answers retry_at.
    checkpoint: int = 0
    digest: bytes | None = None

    def log_end(self) -> tuple[int, int]:
        return (self.last_epoch, self.next_offset)


@dataclass
class Call:
    """One request the node received."""

    method: str
    request: Any


class FakeCluster:
    """The fake nodes of one test, and the simulated replication between them."""

    def __init__(self, store: MetaStore, *, lease_ttl: float = 1.0) -> None:
        self.store = store
        self.lease_ttl = lease_ttl
        self.nodes: dict[str, FakeNode] = {}

    async def add(self, node_id: str) -> FakeNode:
        node = FakeNode(node_id, self)
        self.nodes[node_id] = node
        await node.start()
        return node

    async def stop(self) -> None:
        for node in self.nodes.values():
            await node.stop()

    def sync(self, identity: Identity, leader: FakeNode, targets: list[str]) -> None:
        """Copy the leader's log end to every target that is up (and not holding back)."""
        source = leader.replicas.get(identity)
        if source is None:
            return
        for node_id in targets:
            node = self.nodes.get(node_id)
            if node is None or node is leader or not node.serving or node.hold_back:
                continue
            replica = node.replicas.get(identity)
            if replica is None:
                replica = node.replicas[identity] = FakeReplica(generation=source.generation)
            if replica.promised_epoch > source.epoch:
                continue  # it promised someone newer: it refuses this leader's stream
            replica.promised_epoch = max(replica.promised_epoch, source.epoch)
            replica.last_epoch, replica.next_offset = source.last_epoch, source.next_offset
            replica.generation = source.generation
            replica.epoch = source.epoch


class FakeNode(pb_grpc.HostNodeServicer, pb_grpc.ReplicationServicer):
    """One fake host node (see the module docstring)."""

    def __init__(self, node_id: str, cluster: FakeCluster) -> None:
        self.node_id = node_id
        self.cluster = cluster
        self.replicas: dict[Identity, FakeReplica] = {}
        self.calls: list[Call] = []
        self.incarnation = uuid.uuid4().hex
        self.address = ""
        self.serving = False
        # Faults.
        self.install_failure: str | None = None
        self.install_failure_kind: pb.ErrorKind = pb.ERROR_KIND_INVALID_PROGRAM
        self.install_gate: asyncio.Event | None = None
        self.silent = False  # Promise never answers (until the caller's deadline)
        self.hold_back = False  # receives nothing from leaders (a learner never catches up)
        self._server: grpc.aio.Server | None = None
        self._lease = 0
        self._keepalive: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on a fresh port and register under a fresh lease."""
        server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_HostNodeServicer_to_server(self, server)
        pb_grpc.add_ReplicationServicer_to_server(self, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server, self.address, self.serving = server, f"127.0.0.1:{port}", True
        store = self.cluster.store
        self._lease = await store.grant(self.cluster.lease_ttl)
        info = NodeInfo(self.node_id, self.address, self.incarnation)
        await store.put(node_key(self.node_id), info.to_json(), lease=self._lease)
        self._keepalive = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.cluster.lease_ttl / 4)
            try:
                await self.cluster.store.keepalive(self._lease)
            except Exception:  # noqa: BLE001 - the test revoked it
                return

    async def stop(self) -> None:
        """The process dies: its lease is revoked at once (its key goes), its server stops."""
        await self._stop_keepalive()
        if self._lease:
            with contextlib.suppress(Exception):
                await self.cluster.store.revoke(self._lease)
            self._lease = 0
        await self.stop_serving()

    async def stop_serving(self) -> None:
        """Stop answering (the lease stays until revoked or expired)."""
        self.serving = False
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    async def let_lease_expire(self) -> None:
        """Stop the keepalives: the store expires the lease after its TTL."""
        await self._stop_keepalive()

    async def _stop_keepalive(self) -> None:
        task, self._keepalive = self._keepalive, None
        await cancel_and_wait(task)

    async def restart(self, *, wipe: bool = False) -> None:
        """Stop, then start as a new incarnation (keeping the durable replicas unless ``wipe``)."""
        await self.stop()
        if wipe:
            self.replicas.clear()
        for replica in self.replicas.values():
            replica.role = "none"
        self.incarnation = uuid.uuid4().hex
        await self.start()

    def called(self, method: str) -> list[Any]:
        """The requests of ``method`` received so far."""
        return [c.request for c in self.calls if c.method == method]

    # --- HostNode -----------------------------------------------------------------------------

    async def Install(self, request: pb.InstallRequest, context: Any) -> pb.InstallResponse:  # noqa: N802
        self.calls.append(Call("Install", request))
        if self.install_gate is not None:
            await self.install_gate.wait()
        if self.install_failure is not None:
            return pb.InstallResponse(failure=pb.Failure(kind=self.install_failure_kind, message=self.install_failure))
        identity = Identity.from_bsatn(request.database_identity)
        replica = self.replicas.get(identity)
        created = replica is None or request.clear
        if replica is None or request.clear:
            replica = self.replicas[identity] = FakeReplica(generation=request.generation or 1)
        elif replica.role != "leader" or replica.epoch != request.epoch:
            return pb.InstallResponse(
                failure=pb.Failure(kind=pb.ERROR_KIND_NOT_LEADER, message=f"{self.node_id} does not lead epoch {request.epoch}")
            )
        replica.role, replica.epoch = "leader", request.epoch
        replica.promised_epoch = max(replica.promised_epoch, request.epoch)
        replica.generation = request.generation or replica.generation
        replica.last_epoch, replica.next_offset = request.epoch, replica.next_offset + 1  # the INSTALL record
        self.cluster.sync(identity, self, [p.node_id for p in [*request.replicas, *request.learners]])
        return pb.InstallResponse(created=created)

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:  # noqa: N802
        self.calls.append(Call("Delete", request))
        if self.replicas.pop(Identity.from_bsatn(request.database_identity), None) is None:
            return pb.DeleteResponse(failure=pb.Failure(kind=pb.ERROR_KIND_NO_SUCH_DATABASE, message="no such database"))
        return pb.DeleteResponse()

    # --- Replication --------------------------------------------------------------------------

    async def Promise(self, request: pb.PromiseRequest, context: Any) -> pb.PromiseResponse:  # noqa: N802
        self.calls.append(Call("Promise", request))
        if self.silent:
            await asyncio.sleep(3600)
        replica = self.replicas.get(Identity.from_bsatn(request.database_identity))
        if replica is None:
            return pb.PromiseResponse(failure=pb.Failure(kind=pb.ERROR_KIND_NO_SUCH_DATABASE, message="no replica"))
        if request.epoch < replica.promised_epoch:
            return pb.PromiseResponse(
                failure=pb.Failure(kind=pb.ERROR_KIND_STALE_EPOCH, message=f"promised {replica.promised_epoch}"),
                promised_epoch=replica.promised_epoch, last_epoch=replica.last_epoch,
                next_offset=replica.next_offset, generation=replica.generation,
            )  # fmt: skip
        replica.promised_epoch = request.epoch
        replica.role = "none"
        return pb.PromiseResponse(
            promised_epoch=replica.promised_epoch, last_epoch=replica.last_epoch,
            next_offset=replica.next_offset, generation=replica.generation,
        )  # fmt: skip

    async def Assign(self, request: pb.AssignRequest, context: Any) -> pb.AssignResponse:  # noqa: N802
        self.calls.append(Call("Assign", request))
        identity = Identity.from_bsatn(request.database_identity)
        if request.deleted:
            self.replicas.pop(identity, None)
            return pb.AssignResponse()
        record = DatabaseRecord.from_json(request.record_json.encode())
        replica = self.replicas.get(identity)
        if self.node_id not in record.nodes():
            return pb.AssignResponse()
        if replica is None:
            replica = self.replicas[identity] = FakeReplica(generation=record.generation)
        if record.epoch < replica.promised_epoch:
            return pb.AssignResponse()
        replica.learner = self.node_id in record.learners
        if record.leader == self.node_id and record.state.value == "active":
            if replica.role != "leader" or replica.epoch != record.epoch:
                replica.role, replica.epoch = "leader", record.epoch
                replica.promised_epoch = record.epoch
                replica.last_epoch, replica.next_offset = record.epoch, replica.next_offset + 1  # epoch start
            self.cluster.sync(identity, self, record.nodes())
        else:
            replica.role = "learner" if replica.learner else "follower"
            leader = self.cluster.nodes.get(record.leader or "")
            if leader is not None and leader.serving and leader.replicas.get(identity, FakeReplica()).role == "leader":
                self.cluster.sync(identity, leader, [self.node_id])
        return pb.AssignResponse()

    async def Status(self, request: pb.ReplicaStatusRequest, context: Any) -> pb.ReplicaStatusResponse:  # noqa: N802
        self.calls.append(Call("Status", request))
        wanted = Identity.from_bsatn(request.database_identity) if request.database_identity else None
        states = []
        for identity, replica in self.replicas.items():
            if wanted is not None and identity != wanted:
                continue
            followers = []
            if replica.role == "leader":
                for node in self.cluster.nodes.values():
                    other = node.replicas.get(identity)
                    if node is self or other is None:
                        continue
                    followers.append(pb.FollowerProgress(
                        node_id=node.node_id, connected=node.serving, learner=other.learner,
                        durable_offset=other.next_offset, applied_offset=other.next_offset - 1,
                    ))  # fmt: skip
            states.append(pb.ReplicaState(
                database_identity=identity.to_bsatn(), role=replica.role, epoch=replica.epoch,
                promised_epoch=replica.promised_epoch, last_epoch=replica.last_epoch,
                next_offset=replica.next_offset, durable_offset=replica.next_offset,
                commit_offset=replica.next_offset, applied_offset=replica.next_offset - 1,
                generation=replica.generation, followers=followers, has_quorum=replica.has_quorum,
            ))  # fmt: skip
        return pb.ReplicaStatusResponse(node_id=self.node_id, incarnation=self.incarnation, replicas=states)

    async def Digest(self, request: pb.DigestRequest, context: Any) -> pb.DigestResponse:  # noqa: N802
        self.calls.append(Call("Digest", request))
        identity = Identity.from_bsatn(request.database_identity)
        replica = self.replicas.get(identity)
        if replica is None:
            return pb.DigestResponse(failure=pb.Failure(kind=pb.ERROR_KIND_NO_SUCH_DATABASE, message="no replica"))
        if replica.checkpoint > request.offset:
            return pb.DigestResponse(retry_at=replica.checkpoint)
        digest = replica.digest or hashlib.sha256(identity.to_bsatn() + request.offset.to_bytes(8, "little")).digest()
        return pb.DigestResponse(digest=digest, offset=request.offset, rows=request.offset * 2)

    async def PrepareTransfer(  # noqa: N802
        self, request: pb.PrepareTransferRequest, context: Any
    ) -> pb.PrepareTransferResponse:
        self.calls.append(Call("PrepareTransfer", request))
        identity = Identity.from_bsatn(request.database_identity)
        replica = self.replicas.get(identity)
        if replica is None or replica.role != "leader" or replica.epoch != request.epoch:
            return pb.PrepareTransferResponse(
                failure=pb.Failure(kind=pb.ERROR_KIND_NOT_LEADER, message=f"{self.node_id} does not lead")
            )
        self.cluster.sync(identity, self, [request.target_node])
        return pb.PrepareTransferResponse(next_offset=replica.next_offset)

