"""``orrery hostnode``: one host node of a cluster, as its own process (docs/cluster.md).

It serves the HostNode and Replication gRPC services on ``--listen-addr``, registers itself in
etcd under ``/nodes/<id>`` with a lease it keeps alive (a new incarnation id per start), and
follows the database records in etcd: every record that names this node tells it what to be
(leader of an epoch, follower, learner) and every record that stops naming it removes its
replica. When the lease cannot be renewed in time, every leadership ends before the lease could
expire in etcd (REPLICATION.md rule 6).

Stopping: **SIGTERM** (what Kubernetes sends a pod it deletes or rolls) first hands every
leadership the node holds over to another replica through the active control plane
(:mod:`hostnode.handoff`), waiting at most ``--handoff-timeout`` seconds, then stops; **SIGINT**
(Ctrl-C) stops at once. Either way the replicas close cleanly and the node's lease is revoked, so
the control plane sees it gone at once. Give the process ``--handoff-timeout`` +
:data:`HANDOFF_MARGIN_S` seconds before killing it (``terminationGracePeriodSeconds``).

It refuses to start without the cluster secret (``--cluster-secret-file`` or
``ORRERY_CLUSTER_SECRET_FILE``); every call it makes carries it and every call it serves must
(proto/auth.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clustermeta.aio import cancel_and_wait
from orrery.budget_options import Budgets, add_budget_options, budgets_of
from orrery.secret_option import add_secret_option, secret_of

if TYPE_CHECKING:  # the server's modules load only when it runs (the CLI stays light)
    from prometheus_client.registry import CollectorRegistry

    from clustermeta.coordination import LeaseKeeper
    from clustermeta.metastore import KeyValue, MetaStore
    from clustermeta.mirror import Change
    from hostnode.cluster import ClusterNode
    from proto.auth import ClusterSecret

log = logging.getLogger("orrery.hostnode")

__all__ = ["DEFAULT_HANDOFF_TIMEOUT_S", "HANDOFF_MARGIN_S", "HostNodeProcessConfig", "main", "serve"]

#: Seconds SIGTERM waits, by default, for the node's leaderships to move elsewhere.
DEFAULT_HANDOFF_TIMEOUT_S = 30.0
#: Seconds the rest of the shutdown may take after the handoff (closing replicas, the gRPC
#: server's grace, revoking the lease): a supervisor should wait ``--handoff-timeout`` + this
#: before SIGKILL (Kubernetes: ``terminationGracePeriodSeconds``; tests/k8s checks the manifests).
HANDOFF_MARGIN_S = 10.0


@dataclass
class HostNodeProcessConfig:
    """Everything ``orrery hostnode`` is told on its command line."""

    node_id: str
    data_dir: Path
    listen_addr: str
    etcd: str
    etcd_prefix: str = "/orrery"
    #: The address others reach this node at (default: the bound listen address).
    advertise_addr: str = ""
    #: Seconds; a node whose lease lapses loses every leadership (docs/cluster.md).
    lease_ttl: float = 2.0
    metrics_addr: str = ""
    #: Seconds SIGTERM waits for every leadership to move to another replica (0: no handoff).
    handoff_timeout: float = DEFAULT_HANDOFF_TIMEOUT_S
    #: How long one reducer call may run (README, "Limits").
    budgets: Budgets = field(default_factory=Budgets)
    #: Every internal call to and from this node carries it (proto/auth.py).
    secret: ClusterSecret = field(kw_only=True)


class _Readiness:
    """``/readyz`` of a host node: registered in etcd with a valid lease, and every replica it
    follows streaming from its leader and caught up (:meth:`ClusterNode.readiness`)."""

    def __init__(self) -> None:
        self.keeper: LeaseKeeper | None = None
        self.cluster: ClusterNode | None = None

    def __call__(self) -> str | None:
        if self.cluster is None or self.keeper is None:
            return "the host node is starting"
        if not self.keeper.valid():
            return "not registered in etcd with a valid lease"
        return self.cluster.readiness()


async def serve(
    config: HostNodeProcessConfig, *, stop: asyncio.Event | None = None, leave: asyncio.Event | None = None
) -> None:
    """Run the host node until ``stop`` is set (default: SIGINT) or ``leave`` is (default:
    SIGTERM); ``leave`` hands the node's leaderships over first (``config.handoff_timeout``)."""
    from observability.http import Endpoints
    from observability.registry import new_registry
    from orrery.process import metrics_url, start_metrics

    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, stop.set)
    if leave is None:
        leave = asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, leave.set)
    registry = new_registry("hostnode", config.node_id)
    ready = _Readiness()
    metrics = None
    metrics_at = ""
    if config.metrics_addr:  # up first: probes get "starting" rather than no answer
        metrics, bound = await start_metrics(config.metrics_addr, Endpoints(registry, ready))
        metrics_at = metrics_url(bound, config.advertise_addr)
    try:
        await _serve(config, stop, leave, registry, ready, metrics_at)
    finally:
        if metrics is not None:
            await metrics.cleanup()


async def _serve(
    config: HostNodeProcessConfig,
    stop: asyncio.Event,
    leave: asyncio.Event,
    registry: CollectorRegistry,
    ready: _Readiness,
    metrics_at: str,
) -> None:
    from clustermeta.connect import STARTUP_WAIT_S, open_metastore
    from clustermeta.coordination import LeaseKeeper
    from clustermeta.metrics import LeaseStats, MetaStoreCollector
    from clustermeta.records import NodeInfo, node_key
    from hostnode.cluster import ClusterConfig, ClusterNode
    from hostnode.database import DatabaseConfig
    from hostnode.grpc_service import start_server
    from hostnode.metrics import HostNodeCollector
    from hostnode.replication import ReplicationConfig
    from hostnode.runtime import tune_gc_for_serving
    from hostnode.service import HostNode, HostNodeConfig

    started = time.monotonic()
    store = await open_metastore(config.etcd, config.etcd_prefix, wait=STARTUP_WAIT_S)
    node = HostNode(HostNodeConfig(config.data_dir, database=DatabaseConfig(**config.budgets.database_config())))
    keeper: LeaseKeeper | None = None
    cluster = ClusterNode(
        node,
        ClusterConfig(config.node_id, config.advertise_addr, ReplicationConfig(), secret=config.secret),
        lease_valid=lambda: keeper is not None and keeper.valid(),
    )
    lease_stats = LeaseStats()
    registry.register(HostNodeCollector(node, cluster))
    registry.register(MetaStoreCollector.of(store, lease_stats))
    server = None
    follower: RecordFollower | None = None
    try:
        await cluster.start()
        server, bound = await start_server(node, config.listen_addr, cluster, secret=config.secret)
        address = config.advertise_addr or bound
        cluster.config.address = address
        cluster.peers[config.node_id] = address

        async def register(lease_id: int) -> None:
            # The incarnation changes when leaderships were dropped (lease lost), so the control
            # plane re-elects the databases this node led.
            info = NodeInfo(config.node_id, address, cluster.config.incarnation, metrics_at)
            await store.put(node_key(config.node_id), info.to_json(), lease=lease_id)

        keeper = LeaseKeeper(
            store, config.lease_ttl, on_new_lease=register, on_lost=lambda _id, _why: cluster.lease_lost(),
            stats=lease_stats,
        )  # fmt: skip
        await keeper.start()
        follower = RecordFollower(store, cluster)
        await follower.start()
        ready.keeper, ready.cluster = keeper, cluster
        log.info(
            "host node %s listening on %s (incarnation %s, data in %s, started in %.2fs)",
            config.node_id, address, cluster.config.incarnation, config.data_dir, time.monotonic() - started,
        )  # fmt: skip
        tune_gc_for_serving()
        print(f"Orrery host node {config.node_id} is serving on {address}", flush=True)
        await _first(stop.wait(), leave.wait())
        if leave.is_set() and not stop.is_set() and config.handoff_timeout > 0:
            from hostnode.handoff import LeadershipHandoff

            log.info("leaving: handing every leadership over (at most %gs)", config.handoff_timeout)
            handoff = LeadershipHandoff(store, cluster, config.handoff_timeout, lambda: keeper.lease_id if keeper else 0)
            try:
                await _first(handoff.run(), stop.wait())  # SIGINT meanwhile: stop at once
            except Exception:  # noqa: BLE001 - a failed handoff must not keep the node from stopping
                log.exception("the handoff failed; stopping anyway")
        log.info("shutting down")
    finally:
        ready.cluster = None
        if follower is not None:
            await follower.stop()
        await cluster.stop()
        if server is not None:
            await server.stop(1.0)
        await node.stop()
        if keeper is not None:
            await keeper.close()
        await store.close()
        log.info("stopped")


async def _first(*aws: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


#: Queued by :meth:`RecordFollower.stop` to wake its loop; and how long it waits for the loop.
_STOP = (b"", None)
STOP_TIMEOUT_S = 10.0


class RecordFollower:
    """Follows ``/nodes/`` (into the cluster's peer addresses) and ``/db/`` (into replica roles):
    first everything there is, then every change, applied one at a time in order."""

    def __init__(self, store: MetaStore, cluster: ClusterNode) -> None:
        from clustermeta.mirror import PrefixMirror
        from clustermeta.records import DB_PREFIX, NODES_PREFIX

        self.cluster = cluster
        self._queue: asyncio.Queue[tuple[bytes, KeyValue | None]] = asyncio.Queue()
        self._nodes = PrefixMirror(store, NODES_PREFIX, on_change=self._changed)
        self._dbs = PrefixMirror(store, DB_PREFIX, on_change=self._changed)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _changed(self, changes: list[Change]) -> None:
        for change in changes:
            self._queue.put_nowait((change.key, change.new))

    async def start(self) -> None:
        """Read both prefixes, act on what is there, then follow in the background."""
        await self._nodes.start()
        await self._dbs.start()
        # A copy taken before the first await: later changes are queued, in order, after it.
        current = sorted(self._nodes.items.items()) + sorted(self._dbs.items.items())
        for key, kv in current:
            await self._apply(key, kv)
        self._task = asyncio.create_task(self._run(), name="record-follower")

    async def stop(self) -> None:
        """Stop following. A record being acted on is finished first: cancelled midway (say,
        while its replica opens as leader) it would leave files open that nobody closes."""
        await self._nodes.stop()
        await self._dbs.stop()
        if self._task is not None:
            self._stopping = True
            self._queue.put_nowait(_STOP)
            try:
                await asyncio.wait([self._task], timeout=STOP_TIMEOUT_S)
            finally:
                await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            key, kv = await self._queue.get()
            if self._stopping:
                return
            try:
                await self._apply(key, kv)
            except Exception:  # noqa: BLE001 - one bad record must not stop the node following
                log.exception("acting on %r failed", key)

    async def _apply(self, key: bytes, kv: KeyValue | None) -> None:
        from clustermeta.records import NODES_PREFIX, DatabaseRecord, NodeInfo, identity_of_db_key

        if key.startswith(NODES_PREFIX):
            if kv is not None:
                info = NodeInfo.from_json(kv.value)
                self.cluster.peers[info.id] = info.address
            return
        identity = identity_of_db_key(key)
        record = DatabaseRecord.from_json(kv.value) if kv is not None else None
        await self.cluster.apply_record(identity, record)


def main(argv: list[str] | None = None) -> int:
    """``orrery hostnode`` / ``python -m orrery.hostnode_process``."""
    parser = argparse.ArgumentParser(prog="orrery hostnode", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args, parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of ``orrery hostnode``."""
    parser.add_argument("--node-id", required=True, help="this node's id (stable across restarts)")
    parser.add_argument("--data-dir", type=Path, required=True, help="where this node keeps its replicas")
    parser.add_argument("--listen-addr", default="127.0.0.1:0", help="host:port of the gRPC services (default %(default)s)")
    parser.add_argument("--advertise-addr", default="", help="host:port others reach this node at (default: the bound address)")
    parser.add_argument("--etcd", required=True, help="etcd endpoints, comma-separated host:port")
    parser.add_argument("--etcd-prefix", default="/orrery", help="key prefix of this cluster in etcd (default %(default)s)")
    parser.add_argument("--lease-ttl", type=float, default=2.0, help="seconds of the node's lease (default %(default)s)")
    parser.add_argument("--metrics-addr", default="", help="host:port to serve /metrics, /healthz and /readyz on")
    parser.add_argument(
        "--handoff-timeout", type=float, default=DEFAULT_HANDOFF_TIMEOUT_S,
        help="seconds SIGTERM waits for this node's leaderships to move to other replicas before it "
        "stops (0: none; default %(default)s); SIGINT stops at once",
    )  # fmt: skip
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_budget_options(parser)
    add_secret_option(parser)


def run_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Validate, configure logging, and run until interrupted."""
    from orrery.process import configure_logging, parse_listen_addr

    try:
        parse_listen_addr(args.listen_addr)
        if args.metrics_addr:
            parse_listen_addr(args.metrics_addr, "--metrics-addr")
    except ValueError as e:
        parser.error(str(e))
    if not args.node_id or "/" in args.node_id:
        parser.error("--node-id must be a non-empty name without '/'")
    if args.handoff_timeout < 0:
        parser.error("--handoff-timeout must not be negative")
    try:
        budgets = budgets_of(args)
    except ValueError as e:
        parser.error(str(e))
    try:
        secret = secret_of(args)
    except ValueError as e:
        parser.error(str(e))
    configure_logging(args.log_level)
    logging.getLogger("hostnode").setLevel(args.log_level.upper())
    config = HostNodeProcessConfig(
        node_id=args.node_id, data_dir=args.data_dir, listen_addr=args.listen_addr, etcd=args.etcd,
        etcd_prefix=args.etcd_prefix, advertise_addr=args.advertise_addr, lease_ttl=args.lease_ttl,
        metrics_addr=args.metrics_addr, handoff_timeout=args.handoff_timeout, budgets=budgets, secret=secret,
    )  # fmt: skip
    try:
        asyncio.run(serve(config))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
