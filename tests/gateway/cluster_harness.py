"""Pieces of a cluster for the cluster-gateway tests, all real and on 127.0.0.1.

* :class:`FlakyStore`: a real MetaStore (LMDB) with faults a test switches on — watches that
  break (as an etcd stream does) and a mirror that lags (watch events held back).
* :class:`Node`: a real host node (:class:`hostnode.service.HostNode` and its gRPC service on a
  free port) standing in for a cluster node; databases are installed on it directly. Host nodes
  do not replicate yet, so each node holds its own copy and a test sees where a write went.
* :class:`ScriptedServicer`: the real HostNode gRPC service with the cluster answers host nodes
  do not give yet (``NOT_LEADER``, ``NO_QUORUM``, ``OUTCOME_UNKNOWN``) or a hang, switched on by
  the test, served over real gRPC.
* :func:`gateway`: the gateway app over a :class:`ClusterView` of a store, served on a free port;
  :func:`cluster`: nodes holding one database, its records, and a gateway.
* record helpers: :func:`register_node`, :func:`put_database`, :func:`set_leader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from clustermeta.metastore import (
    Compare,
    DeleteResponse,
    LeaseInfo,
    MetaStore,
    MetaStoreUnavailable,
    Op,
    RangeResponse,
    TxnResponse,
    Watch,
    WatchEvent,
)
from clustermeta.metastore_lmdb import LmdbMetaStore
from clustermeta.records import (
    CONTROLPLANE_LEADER_KEY,
    ControlPlaneInfo,
    DatabaseRecord,
    DbState,
    NodeInfo,
    db_key,
    dns_key,
    node_key,
    owner_key,
    rdns_key,
)
from gateway.app import create_app
from gateway.auth import SigningKeys, TokenAuthority
from gateway.cluster_backends import ClusterConfig, ClusterControlPlane, ClusterHostNode
from gateway.cluster_view import ClusterView, ViewConfig
from gateway.failures import HostErrorKind
from gateway.grpc_backends import Deadlines
from hostnode.grpc_service import HostNodeServicer
from hostnode.service import HostNode, HostNodeConfig
from orrery.process import bound_address
from proto import GRPC_OPTIONS
from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc
from proto.auth import server_interceptors
from sats.identity import Identity
from tests.cluster_secret import SECRET
from tests.servers import REPO_ROOT

__all__ = [
    "FAST",
    "FlakyStore",
    "Gateway",
    "cluster",
    "Node",
    "ScriptedServicer",
    "gateway",
    "put_database",
    "register_node",
    "set_controlplane",
    "set_leader",
    "spawn",
]

#: Waits short enough for a quick suite, still bounds (never latency targets).
FAST = ClusterConfig(
    deadlines=Deadlines(call=2.0, sql=2.0, read=2.0, plan=10.0, publish=60.0),
    failover_wait=1.0,
    catch_up_timeout=10.0,
)


# --- the store ------------------------------------------------------------------------------------


class _FlakyWatch(Watch):
    def __init__(self, inner: Watch, store: FlakyStore) -> None:
        self.inner = inner
        self.store = store
        self._pending: asyncio.Future[WatchEvent] | None = None

    @property
    def next_revision(self) -> int:
        return self.inner.next_revision

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self.inner.cancel()

    async def __anext__(self) -> WatchEvent:
        broken = asyncio.ensure_future(self.store.broken.wait())
        try:
            # Held back: the mirror lags until the test lets events through.
            held = asyncio.ensure_future(self.store.flowing.wait())
            await asyncio.wait({held, broken}, return_when=asyncio.FIRST_COMPLETED)
            held.cancel()
            if not broken.done():
                if self._pending is None:
                    self._pending = asyncio.ensure_future(self.inner.__anext__())
                await asyncio.wait({self._pending, broken}, return_when=asyncio.FIRST_COMPLETED)
                if self._pending.done():
                    pending, self._pending = self._pending, None
                    return pending.result()
        finally:
            broken.cancel()
        self.cancel()
        raise MetaStoreUnavailable("injected: the watch stream broke")


class FlakyStore(MetaStore):
    """A real store whose watches a test can break (:meth:`break_watches`) or hold back
    (:meth:`hold`). Every watch opened is recorded with its start revision."""

    def __init__(self, inner: MetaStore) -> None:
        self.inner = inner
        #: Set: open watches fail and new ones cannot be opened (the store looks unreachable).
        self.broken = asyncio.Event()
        #: Cleared: watches deliver nothing (the mirror lags).
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.watch_starts: list[int | None] = []

    def break_watches(self) -> None:
        """Watches fail now, and cannot be opened until :meth:`repair`."""
        self.broken.set()

    def repair(self) -> None:
        """Watches can be opened again."""
        self.broken.clear()

    def hold(self) -> None:
        """Stop delivering watch events until :meth:`release`."""
        self.flowing.clear()

    def release(self) -> None:
        """Deliver held watch events."""
        self.flowing.set()

    async def range(self, key: bytes, end: bytes | None = None, *, limit: int = 0) -> RangeResponse:
        return await self.inner.range(key, end, limit=limit)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        return await self.inner.put(key, value, lease=lease)

    async def delete(self, key: bytes, end: bytes | None = None, *, prev_kv: bool = False) -> DeleteResponse:
        return await self.inner.delete(key, end, prev_kv=prev_kv)

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op] = (), failure: Sequence[Op] = ()) -> TxnResponse:
        return await self.inner.txn(compares, success, failure)

    async def compact(self, revision: int) -> None:
        await self.inner.compact(revision)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def grant(self, ttl: float) -> int:
        return await self.inner.grant(ttl)

    async def keepalive(self, lease_id: int) -> float:
        return await self.inner.keepalive(lease_id)

    async def revoke(self, lease_id: int) -> None:
        await self.inner.revoke(lease_id)

    async def lease_info(self, lease_id: int) -> LeaseInfo:
        return await self.inner.lease_info(lease_id)

    async def watch(
        self, key: bytes, end: bytes | None = None, *, start_revision: int | None = None, prev_kv: bool = False
    ) -> Watch:
        if self.broken.is_set():
            raise MetaStoreUnavailable("injected: the store is unreachable")
        self.watch_starts.append(start_revision)
        inner = await self.inner.watch(key, end, start_revision=start_revision, prev_kv=prev_kv)
        return _FlakyWatch(inner, self)

    async def close(self) -> None:
        await self.inner.close()


# --- records --------------------------------------------------------------------------------------


async def register_node(store: MetaStore, node_id: str, address: str) -> int:
    """``/nodes/<id>`` as a host node writes it at start."""
    return await store.put(node_key(node_id), NodeInfo(node_id, address, f"incarnation-{node_id}").to_json())


async def set_controlplane(store: MetaStore, address: str | None) -> int:
    """``/controlplane/leader`` (None: no control plane is active)."""
    if address is None:
        return (await store.delete(CONTROLPLANE_LEADER_KEY)).revision
    return await store.put(CONTROLPLANE_LEADER_KEY, ControlPlaneInfo("cp-1", address).to_json())


async def put_database(
    store: MetaStore,
    identity: Identity,
    owner: Identity,
    *,
    leader: str | None,
    replicas: Sequence[str] = ("n1", "n2"),
    epoch: int = 1,
    name: str | None = None,
    state: DbState = DbState.ACTIVE,
) -> int:
    """A database record (with its owner index entry and, given a name, its names)."""
    record = DatabaseRecord(
        identity, owner, state=state, num_replicas=len(replicas), replicas=list(replicas), leader=leader, epoch=epoch
    )
    revision = await store.put(db_key(identity), record.to_json())
    revision = await store.put(owner_key(owner, identity), b"")
    if name is not None:
        await store.put(dns_key(name), identity.to_hex().encode())
        revision = await store.put(rdns_key(identity, name), b"")
    return revision


async def set_leader(store: MetaStore, identity: Identity, leader: str | None) -> int:
    """What an election does to the record: the new leader, at the next epoch."""
    kv = await store.get(db_key(identity))
    assert kv is not None
    record = DatabaseRecord.from_json(kv.value)
    record.leader = leader
    record.epoch += 1
    return await store.put(db_key(identity), record.to_json())


# --- host nodes -----------------------------------------------------------------------------------


class ScriptedServicer(HostNodeServicer):
    """The real service of a node, plus the cluster behaviour a test switches on.

    ``refuse``: answer every call of ``CallReducers``/``Sql``/``GetSchema`` with this failure
    kind (nothing runs). ``hang``: those requests never answer (until cancelled). ``on_request``
    runs (awaited) when each such request arrives — e.g. to move the leadership elsewhere.
    """

    def __init__(self, node: HostNode) -> None:
        super().__init__(node)
        self.refuse: HostErrorKind | None = None
        self.reason = "scripted"
        self.hang = False
        self.on_request: Callable[[str], Any] | None = None
        #: Requests that arrived, by method name.
        self.requests: dict[str, int] = {}
        #: Set when a request arrives (reset by the test).
        self.arrived = asyncio.Event()

    async def _script(self, method: str) -> pb.Failure | None:
        self.requests[method] = self.requests.get(method, 0) + 1
        self.arrived.set()
        if self.on_request is not None:
            result = self.on_request(method)
            if asyncio.iscoroutine(result):
                await result
        if self.hang:
            await asyncio.Event().wait()
        if self.refuse is not None:
            return pb.Failure(kind=int(self.refuse), message=self.reason)  # type: ignore[arg-type]
        return None

    async def CallReducers(self, request: pb.CallBatch, context: Any) -> pb.CallBatchResult:  # noqa: N802
        failure = await self._script("CallReducers")
        if failure is not None:
            return pb.CallBatchResult(
                results=[pb.ReducerResult(request_id=c.request_id, failure=failure) for c in request.calls]
            )
        return await super().CallReducers(request, context)

    async def Sql(self, request: pb.SqlRequest, context: Any) -> pb.SqlResponse:  # noqa: N802
        failure = await self._script("Sql")
        if failure is not None:
            return pb.SqlResponse(failure=failure)
        return await super().Sql(request, context)

    async def GetSchema(self, request: pb.SchemaRequest, context: Any) -> pb.SchemaResponse:  # noqa: N802
        failure = await self._script("GetSchema")
        if failure is not None:
            return pb.SchemaResponse(failure=failure)
        return await super().GetSchema(request, context)


@dataclass
class Node:
    """A real host node serving :class:`ScriptedServicer` on a free port of 127.0.0.1."""

    node_id: str
    root: Path
    host: HostNode = field(init=False)
    servicer: ScriptedServicer = field(init=False)
    server: grpc.aio.Server | None = None
    address: str = ""

    async def start(self) -> Node:
        self.host = HostNode(HostNodeConfig(self.root / self.node_id))
        await self.host.start()
        self.servicer = ScriptedServicer(self.host)
        await self.serve()
        return self

    async def serve(self) -> None:
        """(Re)start the gRPC server (on the same port when it ran before)."""
        server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=server_interceptors(SECRET))
        pb_grpc.add_HostNodeServicer_to_server(self.servicer, server)
        port = server.add_insecure_port(self.address or "127.0.0.1:0")
        await server.start()
        self.server, self.address = server, f"127.0.0.1:{port}"

    async def stop_serving(self) -> None:
        """Stop the gRPC server at once (connections and in-flight calls break); the node stays."""
        if self.server is not None:
            await self.server.stop(None)
            self.server = None

    async def close(self) -> None:
        await self.stop_serving()
        await self.host.stop()

    async def install(self, identity: Identity, owner: Identity, program: bytes) -> None:
        """Create the database on this node (running ``init``)."""
        await self.host.install(identity, owner, program)

    async def rows(self, identity: Identity, query: str) -> list[tuple[Any, ...]]:
        """The rows of a SELECT run on this node directly."""
        return (await self.host.sql(identity, query, Identity.ZERO)).rows


@contextlib.asynccontextmanager
async def nodes(root: Path, *ids: str) -> AsyncIterator[dict[str, Node]]:
    """Started nodes ``ids`` (closed on exit)."""
    started: dict[str, Node] = {}
    try:
        for node_id in ids:
            started[node_id] = await Node(node_id, root).start()
        yield started
    finally:
        for node in started.values():
            await node.close()


# --- the gateway ----------------------------------------------------------------------------------


@dataclass
class Gateway:
    """A cluster gateway served on 127.0.0.1."""

    url: str
    view: ClusterView
    control: ClusterControlPlane
    host: ClusterHostNode
    authority: TokenAuthority


@contextlib.asynccontextmanager
async def gateway(
    store: MetaStore, config: ClusterConfig = FAST, view_config: ViewConfig | None = None
) -> AsyncIterator[Gateway]:
    """The gateway app over a view of ``store`` (started), with cluster backends."""
    view = ClusterView(store, view_config)
    await view.start()
    control = ClusterControlPlane(view, SECRET, config)
    host = ClusterHostNode(view, SECRET, config)
    authority = TokenAuthority(SigningKeys.generate())
    runner = web.AppRunner(create_app(authority, control, host), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Gateway(f"http://{bound_address(runner, '127.0.0.1', 0)}", view, control, host, authority)
    finally:
        await runner.cleanup()
        await host.close()
        await control.close()
        await view.close()


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path,
    database: Identity,
    owner: Identity,
    program: bytes,
    *,
    name: str = "chat",
    node_ids: Sequence[str] = ("n1", "n2"),
    leader: str | None = "n1",
    config: ClusterConfig = FAST,
) -> AsyncIterator[tuple[FlakyStore, dict[str, Node], Gateway]]:
    """Nodes ``node_ids``, each holding its own copy of ``database`` (named ``name``), registered
    in a fresh store whose record names ``leader``; and a gateway over that store."""
    store = FlakyStore(await LmdbMetaStore.open(tmp_path / "meta.lmdb"))
    try:
        async with nodes(tmp_path, *node_ids) as started:
            for node in started.values():
                await node.install(database, owner, program)
                await register_node(store, node.node_id, node.address)
            await put_database(store, database, owner, leader=leader, replicas=node_ids, name=name)
            async with gateway(store, config) as gw:
                yield store, started, gw
    finally:
        await store.close()


async def wait_until(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``pred`` until it holds; fail after ``timeout`` seconds (a bound, not a target)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """``python args…`` from the repository root, stdout piped, stderr inherited."""
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip
