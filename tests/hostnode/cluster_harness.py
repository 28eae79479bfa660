"""Several host nodes in one process, each with its own data directory and gRPC server on
127.0.0.1, replicating to each other for real; the test plays the control plane (it writes the
records, asks for promises, picks leaders) with the helpers here.

Real LMDB, real commit logs, real wasm, real gRPC streams: only the process boundary is missing
(the process-level cluster tests in tests/cluster/ have it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from clustermeta.records import DatabaseRecord, DbState
from hostnode.cluster import ClusterConfig, ClusterNode
from hostnode.database import DatabaseConfig
from hostnode.grpc_service import start_server
from hostnode.replication import ReplicationConfig
from hostnode.service import HostNode, HostNodeConfig
from proto import auth
from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc
from sats.identity import Identity
from tests.cluster_secret import SECRET
from tests.hostnode.conftest import module_wasm

OWNER = Identity.from_claims("localhost", "owner")
ALICE = Identity.from_claims("localhost", "alice")
DB = Identity.from_claims("localhost", "replicated-db")
TRANSFER = module_wasm("transfer")
_TRANSFER_ARGS = struct.Struct("<IIq")

#: Fast timings for tests (correctness never depends on them, only how soon things happen).
FAST = ReplicationConfig(heartbeat_s=0.05, quorum_timeout_s=0.5, commit_timeout_s=5.0, backoff_max_s=0.2)


def transfer_args(a: int, b: int, amount: int = 1) -> bytes:
    return _TRANSFER_ARGS.pack(a, b, amount)


def seed_args(n: int, balance: int) -> bytes:
    return struct.pack("<Iq", n, balance)


@dataclasses.dataclass
class Node:
    """One in-process host node."""

    node_id: str
    root: Path
    replication: ReplicationConfig
    database: DatabaseConfig
    host: HostNode | None = None
    cluster: ClusterNode | None = None
    server: grpc.aio.Server | None = None
    address: str = ""
    lease_ok: bool = True

    async def start(self, port: int | None = None) -> None:
        if port is None:  # a restarted node comes back at its old address
            port = self.port if self.address else 0
        self.host = HostNode(HostNodeConfig(self.root, self.database))
        self.cluster = ClusterNode(
            self.host,
            ClusterConfig(self.node_id, "", self.replication, secret=SECRET),
            lease_valid=lambda: self.lease_ok,
        )
        await self.cluster.start()
        self.server, self.address = await start_server(self.host, f"127.0.0.1:{port}", self.cluster, secret=SECRET)
        self.cluster.config.address = self.address
        self.cluster.peers[self.node_id] = self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
        if self.cluster is not None:
            await self.cluster.stop()
        if self.host is not None:
            await self.host.stop()
        self.server = self.cluster = self.host = None

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def running(self) -> bool:
        return self.server is not None


class Cluster:
    """N nodes; ``records`` is what the control plane would keep in etcd."""

    def __init__(self, root: Path, n: int, *, replication: ReplicationConfig = FAST, **db_config: Any) -> None:
        database = DatabaseConfig(**db_config)
        self.nodes = {
            f"n{i}": Node(f"n{i}", root / f"n{i}", replication, database) for i in range(1, n + 1)
        }
        self.records: dict[Identity, DatabaseRecord] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> Cluster:
        for node in self.nodes.values():
            await node.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for node in self.nodes.values():
            await node.stop()
        for ch in self._channels.values():
            await ch.close()

    def peers(self) -> dict[str, str]:
        return {n.node_id: n.address for n in self.nodes.values() if n.address}

    def stub(self, node_id: str) -> pb_grpc.ReplicationStub:
        addr = self.nodes[node_id].address
        ch = self._channels.get(addr)
        if ch is None:
            ch = self._channels[addr] = auth.channel(addr, SECRET)
        return pb_grpc.ReplicationStub(ch)

    def host_stub(self, node_id: str) -> pb_grpc.HostNodeStub:
        self.stub(node_id)
        return pb_grpc.HostNodeStub(self._channels[self.nodes[node_id].address])

    def node(self, node_id: str) -> ClusterNode:
        c = self.nodes[node_id].cluster
        assert c is not None, f"{node_id} is not running"
        return c

    def host(self, node_id: str) -> HostNode:
        h = self.nodes[node_id].host
        assert h is not None, f"{node_id} is not running"
        return h

    # --- playing the control plane --------------------------------------------------------------

    async def create(
        self, identity: Identity = DB, program: bytes = TRANSFER, replicas: list[str] | None = None, leader: str = "n1"
    ) -> DatabaseRecord:
        """Install on the leader (epoch 1), then tell every node the record."""
        replicas = replicas or list(self.nodes)
        record = DatabaseRecord(
            identity, OWNER, state=DbState.ACTIVE, num_replicas=len(replicas), replicas=replicas, leader=leader, epoch=1
        )
        peers = self.peers()
        await self.node(leader).install(
            identity, OWNER, program, epoch=1, replicas=[(n, peers[n]) for n in replicas]
        )
        await self.assign(record)
        return record

    async def assign(self, record: DatabaseRecord) -> None:
        """What the control plane does after writing a record: nudge every running node."""
        self.records[record.identity] = record
        peers = self.peers()
        for node in self.nodes.values():
            if node.running:
                assert node.cluster is not None
                await node.cluster.apply_record(record.identity, record, peers)

    async def elect(self, identity: Identity = DB, *, prefer: str | None = None) -> DatabaseRecord:
        """docs/cluster.md "Election": new epoch, promises from a majority, highest log wins."""
        record = self.records[identity]
        epoch = record.epoch + 1
        answers: dict[str, pb.PromiseResponse] = {}
        for n in record.replicas:
            if not self.nodes[n].running:
                continue
            try:
                r = await self.stub(n).Promise(
                    pb.PromiseRequest(database_identity=identity.to_bsatn(), epoch=epoch), timeout=5
                )
            except grpc.aio.AioRpcError:
                continue
            if not r.failure.kind:
                answers[n] = r
        assert len(answers) >= record.majority, f"only {sorted(answers)} promised epoch {epoch}"
        best = max(
            answers, key=lambda n: (answers[n].last_epoch, answers[n].next_offset, n == prefer)
        )
        new = dataclasses.replace(record, epoch=epoch, leader=best)
        await self.assign(new)
        return new

    # --- calls ------------------------------------------------------------------------------

    async def transfer(self, node_id: str, a: int, b: int, identity: Identity = DB) -> Any:
        return await self.host(node_id).call_reducer(identity, "transfer", transfer_args(a, b), caller=ALICE)

    async def seed(self, node_id: str, n: int, balance: int, identity: Identity = DB) -> Any:
        return await self.host(node_id).call_reducer(identity, "seed", seed_args(n, balance), caller=ALICE)

    async def digests(self, identity: Identity = DB, nodes: list[str] | None = None) -> dict[str, bytes]:
        """Every running replica's digest at the leader's commit offset (retrying past checkpoints)."""
        record = self.records[identity]
        assert record.leader is not None
        status = await self.stub(record.leader).Status(pb.ReplicaStatusRequest(database_identity=identity.to_bsatn()))
        offset = status.replicas[0].commit_offset
        names = nodes or [n for n in record.nodes() if self.nodes[n].running]
        for _ in range(10):
            out: dict[str, bytes] = {}
            retry = 0
            for n in names:
                r = await self.stub(n).Digest(
                    pb.DigestRequest(database_identity=identity.to_bsatn(), offset=offset, timeout_ms=10_000)
                )
                assert not r.failure.kind, f"{n}: {r.failure.message}"
                if r.retry_at:
                    retry = max(retry, r.retry_at)
                out[n] = r.digest
            if not retry:
                return out
            offset = retry
        raise AssertionError("digests never settled on one offset")


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``check`` until it is true (generous bound: tests never depend on speed)."""
    deadline = time.monotonic() + timeout
    while True:
        ok = check()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)
