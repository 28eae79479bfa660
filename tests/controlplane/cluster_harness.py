"""A cluster control plane under test: a real MetaStore, fake host nodes over real gRPC, and the
control plane's own gRPC service on 127.0.0.1.

``async with cluster_harness(tmp_path, nodes=3) as h:`` gives ``h.cluster`` (the
:class:`~controlplane.cluster.Cluster`, already active), ``h.stub`` (a ControlPlane stub), ``h.fakes``
(the :class:`~tests.controlplane.fake_node.FakeCluster`) and ``h.store``. A second control plane
on the same store is ``await h.second_control_plane()``. Nothing waits on wall-clock guesses:
:func:`eventually` polls a condition with a generous bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from clustermeta.metastore_lmdb import LmdbMetaStore
from clustermeta.records import DatabaseRecord, db_key
from controlplane.cluster import Cluster
from controlplane.config import ClusterConfig
from controlplane.grpc_service import start_server
from controlplane.replica_client import GrpcNodeClients
from proto import auth
from proto import controlplane_pb2 as pb
from proto import controlplane_pb2_grpc as pb_grpc
from sats.identity import Identity
from tests.cluster_secret import SECRET
from tests.controlplane.fake_node import FakeCluster, FakeNode

ALICE = Identity.from_claims("localhost", "alice")
BOB = Identity.from_claims("localhost", "bob")
PROGRAM = b"\x00asm-fake-program"

#: Fast timings for tests: every wait below is bounded by polling, not by these.
TEST_CONFIG = ClusterConfig(
    id="cp-a", lease_ttl=1.0, rpc_timeout=1.0, install_timeout=10.0, reconcile_interval=0.1,
    max_election_backoff=0.5, leader_wait=5.0, operation_timeout=30.0, poll_interval=0.05,
    progress_log_interval=0.5, catchup_lag=0, health_interval=0.1, stuck_leader_after=0.5,
)  # fmt: skip

#: The longest any condition is polled for (generous: a loaded CI machine is slow, never wrong).
PATIENCE = 30.0


async def eventually(
    condition: Callable[[], Any] | Callable[[], Awaitable[Any]], *, timeout: float = PATIENCE, what: str = ""
) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s: {what or condition}")
        await asyncio.sleep(0.02)


@dataclass
class ControlPlaneUnderTest:
    """One running control plane: the cluster object and its gRPC endpoint."""

    cluster: Cluster
    server: grpc.aio.Server
    address: str
    channel: grpc.aio.Channel
    stub: pb_grpc.ControlPlaneStub

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(None)
        await self.cluster.stop()


@dataclass
class Harness:
    """See the module docstring."""

    store: LmdbMetaStore
    fakes: FakeCluster
    primary: ControlPlaneUnderTest
    config: ClusterConfig
    others: list[ControlPlaneUnderTest] = field(default_factory=list)

    @property
    def cluster(self) -> Cluster:
        return self.primary.cluster

    @property
    def stub(self) -> pb_grpc.ControlPlaneStub:
        return self.primary.stub

    def node(self, node_id: str) -> FakeNode:
        return self.fakes.nodes[node_id]

    async def second_control_plane(self, cp_id: str = "cp-b") -> ControlPlaneUnderTest:
        cp = await start_control_plane(self.store, replace(self.config, id=cp_id))
        self.others.append(cp)
        return cp

    async def record(self, identity: Identity) -> DatabaseRecord | None:
        kv = await self.store.get(db_key(identity))
        return None if kv is None else DatabaseRecord.from_json(kv.value)

    async def publish(
        self, name: str = "", *, caller: Identity = ALICE, num_replicas: int = 0, clear: bool = False,
        stub: pb_grpc.ControlPlaneStub | None = None,
    ) -> pb.PublishResponse:  # fmt: skip
        request = pb.PublishRequest(
            caller_identity=caller.to_bsatn(), name_or_identity=name, program=PROGRAM, clear=clear,
            num_replicas=num_replicas,
        )  # fmt: skip
        response: pb.PublishResponse = await (stub or self.stub).Publish(request)
        return response

    async def created(self, name: str = "", **kw: Any) -> Identity:
        """Publish a new database and return its identity (the publish must succeed)."""
        response = await self.publish(name, **kw)
        assert response.failure.kind == pb.ERROR_KIND_NONE, response.failure.message
        return Identity.from_bsatn(response.database_identity)


async def start_control_plane(store: LmdbMetaStore, config: ClusterConfig) -> ControlPlaneUnderTest:
    cluster = Cluster(store, GrpcNodeClients(SECRET, timeout=config.rpc_timeout), replace(config))
    server, address = await start_server(cluster.ops(), "127.0.0.1:0", secret=SECRET)
    await cluster.start(address=address)
    channel = auth.channel(address, SECRET)
    return ControlPlaneUnderTest(cluster, server, address, channel, pb_grpc.ControlPlaneStub(channel))


@contextlib.asynccontextmanager
async def cluster_harness(
    tmp_path: Path, nodes: int = 3, **overrides: Any
) -> AsyncIterator[Harness]:
    """A store, ``nodes`` fake host nodes (n1, n2, …) and one active control plane."""
    config = replace(TEST_CONFIG, **overrides)
    store = await LmdbMetaStore.open(tmp_path / "meta.lmdb")
    fakes = FakeCluster(store, lease_ttl=config.lease_ttl)
    primary: ControlPlaneUnderTest | None = None
    harness: Harness | None = None
    try:
        for i in range(1, nodes + 1):
            await fakes.add(f"n{i}")
        primary = await start_control_plane(store, config)
        await primary.cluster.wait_active(PATIENCE)
        await eventually(lambda: len(primary.cluster.nodes.live()) == nodes, what="directory sees every node")
        harness = Harness(store, fakes, primary, config)
        yield harness
    finally:
        for cp in [*(harness.others if harness else []), *([primary] if primary else [])]:
            with contextlib.suppress(Exception):
                await cp.stop()
        await fakes.stop()
        await store.close()


def run(body: Callable[[], Awaitable[None]], *, timeout: float = 120.0) -> None:
    """Run an async test body with an overall bound (a hang fails instead of blocking CI)."""

    async def bounded() -> None:
        started = time.monotonic()
        async with asyncio.timeout(timeout):
            await body()
        # A cancellation swallowed somewhere would let a hung body "pass" at the bound.
        assert time.monotonic() - started < timeout, f"the test hung until its {timeout}s bound"

    asyncio.run(bounded())
