"""The control plane's client of the host nodes: ``HostNode.Install/Delete`` and ``Replication``.

:class:`NodeClient` wraps both services of one node; every call has a deadline. Answers come back
as the dataclasses below, a ``Failure`` answer as :class:`~controlplane.hostnode_client.HostNodeFailure`
(``kind`` is the host ``ErrorKind``), a transport failure (node down, deadline passed) as
:class:`NodeUnreachable`. :class:`NodeClients` is the seam the cluster logic uses to reach nodes
by address; :class:`GrpcNodeClients` keeps one channel per address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from clustermeta.records import DatabaseRecord
from controlplane.hostnode_client import GrpcHostNodeClient, Peer, raise_failure
from proto import GRPC_OPTIONS, auth
from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc
from sats.identity import Identity

__all__ = [
    "DigestReport",
    "FollowerProgress",
    "GrpcNodeClients",
    "NodeClient",
    "NodeClients",
    "NodeStatus",
    "NodeUnreachable",
    "PromiseReport",
    "ReplicaState",
]

#: gRPC channel options. Every call has a deadline, which is what notices a dead node; HTTP/2
#: keepalive pings are left off because a server not configured to accept them
#: (``grpc.http2.min_recv_ping_interval_without_data_ms``) answers frequent pings with GOAWAY.
CHANNEL_OPTIONS = list(GRPC_OPTIONS)


class NodeUnreachable(Exception):
    """The node did not answer (down, partitioned, or past the deadline)."""

    def __init__(self, address: str, detail: str) -> None:
        super().__init__(f"host node {address} did not answer: {detail}")
        self.address = address


@dataclass(frozen=True)
class PromiseReport:
    """A replica's durable promise and the end of its durable log (``Replication.Promise``).

    ``stale``: the replica refused because it already promised a higher ``promised_epoch``.
    """

    promised_epoch: int
    last_epoch: int
    next_offset: int
    generation: int
    stale: bool = False

    def log_end(self) -> tuple[int, int]:
        """``(last_epoch, next_offset)``: how far the durable log goes, compared lexicographically."""
        return (self.last_epoch, self.next_offset)


@dataclass(frozen=True)
class FollowerProgress:
    """How far a follower is, as its leader sees it."""

    node_id: str
    connected: bool
    learner: bool
    durable_offset: int
    applied_offset: int


@dataclass(frozen=True)
class ReplicaState:
    """One replica on a node (``Replication.Status``)."""

    identity: Identity
    role: str
    epoch: int
    promised_epoch: int
    last_epoch: int
    next_offset: int
    durable_offset: int
    commit_offset: int
    applied_offset: int
    generation: int
    has_quorum: bool
    followers: list[FollowerProgress] = field(default_factory=list)

    def follower(self, node_id: str) -> FollowerProgress | None:
        """The leader's view of one follower."""
        return next((f for f in self.followers if f.node_id == node_id), None)


@dataclass(frozen=True)
class NodeStatus:
    """Every replica on a node (or the one asked for)."""

    node_id: str
    incarnation: str
    replicas: list[ReplicaState]

    def replica(self, identity: Identity) -> ReplicaState | None:
        """The replica of ``identity``, if the node has one."""
        return next((r for r in self.replicas if r.identity == identity), None)


@dataclass(frozen=True)
class DigestReport:
    """A replica's table digest at ``offset`` — or, with ``retry_at``, where to ask again."""

    digest: bytes
    offset: int
    rows: int
    retry_at: int


class NodeClient:
    """Both services of one host node; every call has a deadline (seconds)."""

    def __init__(self, channel: grpc.aio.Channel, address: str, *, timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        self.host = GrpcHostNodeClient(channel)
        self.replication = pb_grpc.ReplicationStub(channel)

    async def promise(self, identity: Identity, epoch: int, *, timeout: float | None = None) -> PromiseReport:
        """``Replication.Promise``: durably promise ``epoch``, report the durable log's end."""
        request = pb.PromiseRequest(database_identity=identity.to_bsatn(), epoch=epoch)
        response: pb.PromiseResponse = await self._unary(self.replication.Promise, request, timeout)
        stale = response.failure.kind == pb.ERROR_KIND_STALE_EPOCH
        if not stale:
            raise_failure(response.failure)
        return PromiseReport(
            response.promised_epoch, response.last_epoch, response.next_offset, response.generation, stale
        )

    async def status(self, identity: Identity | None = None, *, timeout: float | None = None) -> NodeStatus:
        """``Replication.Status`` of one replica (or every replica on the node)."""
        request = pb.ReplicaStatusRequest(database_identity=b"" if identity is None else identity.to_bsatn())
        response: pb.ReplicaStatusResponse = await self._unary(self.replication.Status, request, timeout)
        return NodeStatus(response.node_id, response.incarnation, [_replica_state(r) for r in response.replicas])

    async def digest(self, identity: Identity, offset: int, *, timeout: float) -> DigestReport:
        """``Replication.Digest`` at ``offset``; the node may wait up to ``timeout`` to reach it."""
        request = pb.DigestRequest(
            database_identity=identity.to_bsatn(), offset=offset, timeout_ms=int(timeout * 1000)
        )
        response: pb.DigestResponse = await self._unary(self.replication.Digest, request, timeout + self.timeout)
        raise_failure(response.failure)
        return DigestReport(response.digest, response.offset, response.rows, response.retry_at)

    async def prepare_transfer(self, identity: Identity, epoch: int, target: str, *, timeout: float) -> int:
        """``Replication.PrepareTransfer``: stop writes until ``target`` has everything; the next offset."""
        request = pb.PrepareTransferRequest(
            database_identity=identity.to_bsatn(), epoch=epoch, target_node=target, timeout_ms=int(timeout * 1000)
        )
        response: pb.PrepareTransferResponse = await self._unary(
            self.replication.PrepareTransfer, request, timeout + self.timeout
        )
        raise_failure(response.failure)
        return int(response.next_offset)

    async def assign(
        self, identity: Identity, record: DatabaseRecord | None, peers: Sequence[Peer], *, timeout: float | None = None
    ) -> None:
        """``Replication.Assign``: the record as it now stands (None: deleted)."""
        request = pb.AssignRequest(
            record_json="" if record is None else record.to_json().decode(),
            deleted=record is None,
            database_identity=identity.to_bsatn(),
            peers=[p.to_proto() for p in peers],
        )
        response: pb.AssignResponse = await self._unary(self.replication.Assign, request, timeout)
        raise_failure(response.failure)

    async def install(
        self,
        record: DatabaseRecord,
        program: bytes,
        peers: dict[str, str],
        *,
        clear: bool = False,
        keep_program: bool = False,
        token: bytes | None = None,
        timeout: float,
    ) -> object:
        """``HostNode.Install`` on the record's leader, with its epoch, replicas and generation."""
        try:
            return await self.host.install(
                record.identity, record.owner, program, clear=clear, keep_program=keep_program, token=token,
                epoch=record.epoch, replicas=[Peer(n, peers.get(n, "")) for n in _leader_first(record)],
                learners=[Peer(n, peers.get(n, "")) for n in record.learners], generation=record.generation,
                timeout=timeout,
            )  # fmt: skip
        except grpc.aio.AioRpcError as e:
            raise NodeUnreachable(self.address, f"{e.code().name}: {e.details()}") from None

    async def delete(self, identity: Identity, *, timeout: float | None = None) -> None:
        """``HostNode.Delete``: stop the database and remove its replica here."""
        try:
            await self.host.delete(identity, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as e:
            raise NodeUnreachable(self.address, f"{e.code().name}: {e.details()}") from None

    async def _unary(self, method: grpc.aio.UnaryUnaryMultiCallable, request: object, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as e:
            raise NodeUnreachable(self.address, f"{e.code().name}: {e.details()}") from None


def _leader_first(record: DatabaseRecord) -> list[str]:
    if record.leader is None or record.leader not in record.replicas:
        return list(record.replicas)
    return [record.leader, *(n for n in record.replicas if n != record.leader)]


def _replica_state(r: pb.ReplicaState) -> ReplicaState:
    return ReplicaState(
        identity=Identity.from_bsatn(r.database_identity), role=r.role, epoch=r.epoch,
        promised_epoch=r.promised_epoch, last_epoch=r.last_epoch, next_offset=r.next_offset,
        durable_offset=r.durable_offset, commit_offset=r.commit_offset, applied_offset=r.applied_offset,
        generation=r.generation, has_quorum=r.has_quorum,
        followers=[
            FollowerProgress(f.node_id, f.connected, f.learner, f.durable_offset, f.applied_offset)
            for f in r.followers
        ],
    )  # fmt: skip


class NodeClients(Protocol):
    """How the cluster logic reaches host nodes (one :class:`NodeClient` per address)."""

    def node(self, address: str) -> NodeClient:
        """The client of the node at ``address``."""

    async def close(self) -> None:
        """Close every connection."""


class GrpcNodeClients:
    """:class:`NodeClients` over gRPC: one channel per address, reused."""

    def __init__(self, secret: auth.ClusterSecret, *, timeout: float = 2.0) -> None:
        self.secret = secret
        self.timeout = timeout
        self._clients: dict[str, NodeClient] = {}
        self._channels: list[grpc.aio.Channel] = []

    def node(self, address: str) -> NodeClient:
        """See :class:`NodeClients`."""
        client = self._clients.get(address)
        if client is None:
            channel = auth.channel(address, self.secret, CHANNEL_OPTIONS)
            self._channels.append(channel)
            client = self._clients[address] = NodeClient(channel, address, timeout=self.timeout)
        return client

    async def close(self) -> None:
        """See :class:`NodeClients`."""
        channels, self._channels, self._clients = self._channels, [], {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)

