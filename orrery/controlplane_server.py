"""``orrery controlplane``: one control plane of a cluster, as a process.

    orrery controlplane --listen-addr HOST:PORT --etcd ENDPOINTS [--etcd-prefix /orrery] [--id ID]
                        [--lease-ttl 2] [--advertise-addr HOST:PORT] [--metrics-addr HOST:PORT]
                        [--log-level info] [--cluster-secret-file PATH]

It serves the ControlPlane gRPC service on ``--listen-addr``, registers ``/controlplanes/<id>``
under its lease and campaigns for ``/controlplane/leader``: the winner is active (publishes,
elections, operations), the others stand by and answer changes with NOT_ACTIVE naming the active
one. SIGINT/SIGTERM give the seat up at once (a standby takes over without waiting for the lease)
and exit 0. State lives in the MetaStore only (:func:`clustermeta.connect.open_metastore`).

With ``--metrics-addr`` it serves ``/metrics``, ``/healthz`` and ``/readyz`` there (ready: it
holds a valid lease in etcd, active or standby; :meth:`controlplane.cluster.Cluster.readiness`)
and registers the metrics URL in ``/controlplanes/<id>``.

It refuses to start without the cluster secret (``--cluster-secret-file`` or
``ORRERY_CLUSTER_SECRET_FILE``), and refuses every gRPC call that does not carry it
(proto/auth.py).

Run it with ``python -m orrery.controlplane_server`` too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from clustermeta.connect import DEFAULT_PREFIX, STARTUP_WAIT_S, open_metastore, parse_endpoints
from clustermeta.metastore import MetaStoreError
from clustermeta.metrics import MetaStoreCollector
from controlplane.cluster import Cluster
from controlplane.config import ClusterConfig
from controlplane.grpc_service import start_server
from controlplane.metrics import ControlPlaneCollector
from controlplane.replica_client import GrpcNodeClients
from observability.http import Endpoints
from observability.registry import new_registry
from orrery.process import (
    advertised,
    configure_logging,
    metrics_url,
    parse_listen_addr,
    start_metrics,
    stop_on_signals,
)
from orrery.secret_option import add_secret_option, secret_of
from proto.auth import ClusterSecret

__all__ = ["ControlPlaneProcess", "add_arguments", "main", "run", "serve"]

log = logging.getLogger("orrery.controlplane")

DEFAULT_LISTEN_ADDR = "127.0.0.1:5100"


@dataclass
class ControlPlaneProcess:
    """The command line of one control plane process."""

    listen_addr: str = DEFAULT_LISTEN_ADDR
    etcd: str = ""
    etcd_prefix: str = DEFAULT_PREFIX
    #: Default: the host name (a pod's name on Kubernetes).
    id: str = field(default_factory=socket.gethostname)
    lease_ttl: float = 2.0
    #: The address other processes reach this one at (default: the bound listen address, with the
    #: host name for a wildcard host).
    advertise_addr: str = ""
    #: Seconds in-flight RPCs get to finish at shutdown.
    shutdown_grace: float = 2.0
    #: ``host:port`` of the ``/metrics``, ``/healthz``, ``/readyz`` listener (empty: none).
    metrics_addr: str = ""
    #: Every internal call to and from this process carries it (proto/auth.py).
    secret: ClusterSecret = field(kw_only=True)


async def serve(
    process: ControlPlaneProcess,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    config: ClusterConfig | None = None,
) -> None:
    """Run one control plane until ``stop`` is set (default: until SIGINT/SIGTERM).

    ``ready(address)`` is called once the gRPC service listens, with the address it bound.
    """
    config = config or ClusterConfig()
    config.id, config.lease_ttl = process.id, process.lease_ttl
    if stop is None:
        stop = stop_on_signals()
    started = time.monotonic()
    registry = new_registry("controlplane", process.id)
    holder: list[Cluster] = []
    endpoints = Endpoints(registry, lambda: holder[0].readiness() if holder else "the control plane is starting")
    metrics: web.AppRunner | None = None
    try:
        if process.metrics_addr:
            metrics, metrics_bound = await start_metrics(process.metrics_addr, endpoints)
            config.metrics = metrics_url(metrics_bound, process.advertise_addr)
            log.info("metrics on http://%s/metrics", metrics_bound)
        store = await open_metastore(process.etcd, process.etcd_prefix, wait=STARTUP_WAIT_S)
        try:
            cluster = Cluster(store, GrpcNodeClients(process.secret, timeout=config.rpc_timeout), config)
            holder.append(cluster)
            registry.register(ControlPlaneCollector(cluster))
            registry.register(MetaStoreCollector.of(store, cluster.lease_stats))
            server, bound = await start_server(cluster.ops(), process.listen_addr, secret=process.secret)
            try:
                address = process.advertise_addr or advertised(bound)
                await cluster.start(address=address)
                log.info(
                    "control plane %s listening on %s (advertised as %s, started in %.2fs)",
                    process.id, bound, address, time.monotonic() - started,
                )  # fmt: skip
                if ready is not None:
                    ready(bound)
                await stop.wait()
                log.info("shutting down")
            finally:
                await server.stop(process.shutdown_grace)
                await cluster.stop()
        finally:
            await store.close()
    finally:
        if metrics is not None:
            await metrics.cleanup()
        log.info("stopped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (shared by ``orrery controlplane`` and ``python -m``)."""
    parser.add_argument("--listen-addr", default=DEFAULT_LISTEN_ADDR, help="host:port of the gRPC service (default %(default)s)")
    parser.add_argument("--etcd", required=True, help="etcd endpoints, comma-separated host:port (or lmdb:PATH)")
    parser.add_argument("--etcd-prefix", default=DEFAULT_PREFIX, help="key prefix of the cluster (default %(default)s)")
    parser.add_argument("--id", default=socket.gethostname(), help="this control plane's id (default: the host name)")
    parser.add_argument("--lease-ttl", type=float, default=ControlPlaneProcess.lease_ttl, help="lease TTL in seconds (default %(default)s)")
    parser.add_argument("--advertise-addr", default="", help="host:port others reach this process at")
    parser.add_argument("--metrics-addr", default="", help="host:port to serve /metrics, /healthz and /readyz on")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_secret_option(parser)


def process_of(args: argparse.Namespace) -> ControlPlaneProcess:
    """The parsed command line; raises ValueError for values that cannot work."""
    host, sep, port = args.listen_addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen-addr must be host:port, got {args.listen_addr!r}")
    if not args.etcd.startswith("lmdb:"):
        parse_endpoints(args.etcd)
    if args.lease_ttl <= 0:
        raise ValueError("--lease-ttl must be positive")
    if not args.id:
        raise ValueError("--id must not be empty")
    if args.metrics_addr:
        parse_listen_addr(args.metrics_addr, "--metrics-addr")
    return ControlPlaneProcess(
        listen_addr=args.listen_addr, etcd=args.etcd, etcd_prefix=args.etcd_prefix, id=args.id,
        lease_ttl=args.lease_ttl, advertise_addr=args.advertise_addr, metrics_addr=args.metrics_addr,
        secret=secret_of(args),
    )  # fmt: skip


def run(process: ControlPlaneProcess) -> int:
    """Run the process in the foreground (grpc.aio needs the standard event loop); the exit code.

    Prints one line on stdout once the service listens.
    """

    def ready(address: str) -> None:
        print(f"Orrery control plane {process.id} is listening on {address}", flush=True)

    try:
        asyncio.run(serve(process, ready=ready))
    except KeyboardInterrupt:
        return 130
    except (OSError, MetaStoreError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m orrery.controlplane_server``."""
    parser = argparse.ArgumentParser(prog="python -m orrery.controlplane_server", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        process = process_of(args)
    except ValueError as e:
        parser.error(str(e))
    configure_logging(args.log_level)
    return run(process)


if __name__ == "__main__":
    sys.exit(main())
