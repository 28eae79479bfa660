"""A cluster gateway process: the public HTTP/WebSocket API in front of a cluster (docs/cluster.md).

It keeps no state of its own: the cluster's records come from etcd (a mirror kept by
:class:`~gateway.cluster_view.ClusterView`), requests go to the active control plane and to each
database's leader (:mod:`gateway.cluster_backends`), and identity tokens are signed with the key
pair in ``--keys-dir`` — the same directory (same keys) for every gateway of a cluster, so a
token minted by one is accepted by all. The pair is created there if absent, in the format of
standalone's ``data/keys``.

Any number of gateways may run. Run one with::

    orrery gateway --listen-addr 127.0.0.1:3000 --etcd 127.0.0.1:2379 [--etcd-prefix /orrery] --keys-dir ./keys \
        --cluster-secret-file ./cluster-secret

Every call it makes to control planes and host nodes carries the cluster secret (proto/auth.py);
without one it does not start.

``--etcd lmdb:PATH`` runs on an embedded store file instead of etcd (development only: no other
process can open it at the same time). It imports nothing of the control plane or host nodes.

Its public port also serves ``/v1/metrics``, ``/healthz`` and ``/readyz`` (ready: its view of
the cluster's records is loaded, its watch on etcd is up, and a control plane is active;
:meth:`gateway.cluster_view.ClusterView.readiness`); ``--metrics-addr`` serves them on a
listener of their own as well (``/metrics`` there), up before the view is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from clustermeta.aio import cancel_and_wait
from clustermeta.connect import DEFAULT_PREFIX, STARTUP_WAIT_S, open_metastore
from clustermeta.metrics import MetaStoreCollector
from gateway.app import create_app
from gateway.auth import SigningKeys, TokenAuthority
from gateway.cluster_backends import ClusterConfig, ClusterControlPlane, ClusterHostNode
from gateway.cluster_view import ClusterView
from gateway.context import GatewayConfig
from gateway.metrics import GatewayCollector, GatewayStats
from hostnode.runtime import tune_gc_for_serving
from observability.http import Endpoints
from observability.registry import new_registry
from orrery.process import parse_listen_addr, start_metrics, start_site, stop_on_signals
from proto.auth import ClusterSecret

__all__ = ["GatewayServerConfig", "run", "serve"]

log = logging.getLogger("orrery.gateway")

DEFAULT_LISTEN_ADDR = "127.0.0.1:3000"


@dataclass
class GatewayServerConfig:
    """Everything one gateway process is configured with (flags → this dataclass)."""

    #: etcd client endpoints (``host:port[,…]``) or ``lmdb:PATH``.
    etcd: str
    #: Where the token signing key pair lives (created if absent).
    keys_dir: Path
    #: Every call to control planes and host nodes carries it (proto/auth.py).
    secret: ClusterSecret
    listen_addr: str = DEFAULT_LISTEN_ADDR
    #: Every key of the cluster lives under this prefix in etcd.
    etcd_prefix: str = DEFAULT_PREFIX
    max_module_bytes: int = 64 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024
    #: Open WebSocket connections this gateway holds, in all and to one database (README, "Limits").
    max_ws_connections: int = GatewayConfig.max_ws_connections
    max_ws_connections_per_database: int = GatewayConfig.max_ws_connections_per_database
    #: Seconds in-flight requests get to finish at shutdown.
    shutdown_timeout: float = 5.0
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    #: ``host:port`` of a listener of its own for ``/metrics``, ``/healthz``, ``/readyz`` (empty:
    #: none; the public port serves them anyway).
    metrics_addr: str = ""


async def serve(
    config: GatewayServerConfig,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a gateway until ``stop`` is set (default: until SIGINT/SIGTERM).

    ``ready(address)`` is called once it accepts connections, with the ``host:port`` it listens
    on. Before that it has read the cluster's records (waiting for etcd while it is unreachable).
    """
    host, port = parse_listen_addr(config.listen_addr)
    authority = TokenAuthority(SigningKeys.load_or_create(config.keys_dir))
    if stop is None:
        stop = stop_on_signals()
    started = time.monotonic()
    store = await open_metastore(config.etcd, config.etcd_prefix, wait=STARTUP_WAIT_S)
    view = ClusterView(store)
    stats = GatewayStats()
    control = ClusterControlPlane(view, config.secret, config.cluster, stats)
    host_backend = ClusterHostNode(view, config.secret, config.cluster, stats)
    registry = new_registry("gateway", socket.gethostname())
    registry.register(GatewayCollector(stats, view))
    registry.register(MetaStoreCollector.of(store))
    endpoints = Endpoints(registry, view.readiness)
    runner: web.AppRunner | None = None
    metrics: web.AppRunner | None = None
    try:
        if config.metrics_addr:
            metrics, metrics_bound = await start_metrics(config.metrics_addr, endpoints)
            log.info("metrics on http://%s/metrics", metrics_bound)
        if not await _until_stopped(view.start(), stop):
            return
        log.info(
            "cluster view at revision %d: %d databases, %d live nodes",
            view.revision, len(list(view.known_databases())), len(view.live_nodes()),
        )  # fmt: skip
        gateway_config = GatewayConfig(
            max_module_bytes=config.max_module_bytes,
            max_body_bytes=config.max_body_bytes,
            max_ws_connections=config.max_ws_connections,
            max_ws_connections_per_database=config.max_ws_connections_per_database,
        )
        app = create_app(authority, control, host_backend, gateway_config, stats=stats, endpoints=endpoints)
        runner, bound = await start_site(app, host, port, shutdown_timeout=config.shutdown_timeout)
        gateway_config.advertise.append(bound)
        log.info(
            "listening on http://%s (cluster at %s, prefix %s; started in %.2fs)",
            bound, config.etcd, config.etcd_prefix, time.monotonic() - started,
        )  # fmt: skip
        tune_gc_for_serving()  # this process holds every client's connection (hostnode/runtime.py)
        if ready is not None:
            ready(bound)
        await stop.wait()
        log.info("shutting down")
    finally:
        if runner is not None:
            await runner.cleanup()  # WebSocket clients get 1001 "server shutting down" here
        if metrics is not None:
            await metrics.cleanup()
        await host_backend.close()
        await control.close()
        await view.close()
        await store.close()
        log.info("stopped")


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Await ``work`` unless ``stop`` is set first (then cancel it); True when it finished."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not task.done():
        await cancel_and_wait(task)
        return False
    task.result()
    return True


def run(config: GatewayServerConfig) -> None:
    """Run a gateway in this process until SIGINT/SIGTERM; prints one line when ready."""

    def ready(address: str) -> None:
        print(f"Orrery gateway is listening on http://{address} (cluster at {config.etcd})", flush=True)

    asyncio.run(serve(config, ready=ready))  # grpc.aio supports the standard event loop only
