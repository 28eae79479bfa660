"""Standalone Orrery: gateway, control plane and one host node, one data directory.

Layout of ``<data-dir>``::

    keys/               id_ecdsa, id_ecdsa.pub — the token signing key pair
    control/meta.lmdb   the embedded MetaStore (databases, names, owners)
    node/               the host node's databases

The gateway reaches the control plane and the host node over one of three transports
(``--transport``), all implementing :mod:`gateway.backends` and giving the same answers:

* ``split`` (the default, :data:`DEFAULT_TRANSPORT`): the control plane and the host node run in a
  child process (:mod:`orrery.standalone_split`, :mod:`orrery.standalone_node`), so the
  databases' writers do not share an interpreter with HTTP and WebSocket work;
* ``inprocess``: the adapters :class:`LocalControlPlane` and :class:`LocalHostNode` call the
  control plane and the host node directly, in this process, without a network hop;
* ``grpc``: the host node and the control plane serve their gRPC services on free ports of
  127.0.0.1 inside this process, and the gateway (and the control plane, to drive the host node)
  use the gRPC clients — the same wiring as a cluster.

Its port also serves ``/v1/metrics`` (gateway and host node metrics in one registry),
``/healthz`` and ``/readyz``; ``--metrics-addr`` serves them on a listener of their own too.

Run it with::

    python -m orrery.standalone --listen-addr 127.0.0.1:3000 --data-dir ./data [--transport inprocess]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from clustermeta.metastore_lmdb import LmdbMetaStore
from controlplane import grpc_service as controlplane_grpc
from controlplane.core import (
    ControlPlane,
    ControlPlaneError,
    DatabaseRecord,
    Placement,
    migrate_program_hashes,
)
from controlplane.grpc_service import ControlPlaneOps
from controlplane.hostnode_client import GrpcHostNodeClient
from gateway import failures
from gateway.app import create_app
from gateway.auth import KeyFileError, SigningKeys, TokenAuthority
from gateway.backends import (
    CallResult,
    ControlPlaneBackend,
    DatabaseInfo,
    HostNodeBackend,
    PrePublish,
    PublishOutcome,
    SqlAnswer,
    WsParams,
    WsSession,
)
from gateway.context import GatewayConfig
from gateway.errors import ApiError
from gateway.failures import ControlErrorKind, HostErrorKind, ReducerStatus
from gateway.grpc_backends import GrpcControlPlane, GrpcHostNode
from gateway.metrics import GatewayCollector, GatewayStats
from hostnode import grpc_service as hostnode_grpc
from hostnode.database import DatabaseConfig, DatabaseError, ReducerOutcome
from hostnode.grpc_service import STATUS, describe_plan, log_batches, preview_update
from hostnode.http_calls import HttpCall
from hostnode.metrics import HostNodeCollector
from hostnode.realtime import ClientParams, Connection
from hostnode.runtime import tune_gc_for_serving
from hostnode.service import DatabaseNotFound, HostNode, HostNodeConfig
from hostnode.sql import render_response_bytes
from hostnode.worker import Overloaded
from observability.http import Endpoints
from observability.registry import new_registry
from orrery.budget_options import Budgets, add_budget_options, budgets_of
from orrery.process import (
    NodeProcessError,
    configure_logging,
    parse_listen_addr,
    start_metrics,
    start_site,
    stop_on_signals,
)
from proto import auth
from proto.auth import ClusterSecret
from sats.identity import Identity
from sats.ws_v1 import Compression

__all__ = [
    "CALL_OUTCOMES",
    "TRANSPORTS",
    "configure_logging",
    "parse_listen_addr",
    "LocalControlPlane",
    "LocalHostNode",
    "NodeProcessError",
    "StandaloneConfig",
    "describe_plan",
    "host_error",
    "main",
    "run",
    "serve",
]

log = logging.getLogger("orrery.standalone")

DEFAULT_LISTEN_ADDR = "127.0.0.1:3000"
NODE_ID = 0
#: How the gateway reaches the control plane and the host node: direct calls, gRPC on 127.0.0.1,
#: or from another process (the host node and control plane in a child; :mod:`orrery.standalone_split`).
TRANSPORTS = ("inprocess", "grpc", "split")
#: The default: the databases' writers do not share an interpreter with HTTP and WebSocket work
#: (issue 11 item 3). Same-run figures on two cores with the load generator beside the server,
#: split / in-process: 64 × 40 confirmed level to 5 % ahead, 64 × 1 level, HTTP /call level
#: (0.97–1.00), commit fan-out to 1,000 subscribers p99 about half (loadtest/RESULTS.md, session 17).
DEFAULT_TRANSPORT = "split"


# --- errors -------------------------------------------------------------------------------------
#
# The engine's exceptions are classified by the gRPC services' own functions and answered from the
# tables of gateway.failures, so both transports give the same answers.


def control_error(e: ControlPlaneError, *, path: bool = True) -> ApiError:
    """The response a control-plane error stands for (an invalid path segment is ``Invalid URL``)."""
    kind, message, body = controlplane_grpc.failure_of(e)
    return failures.control_error(ControlErrorKind(kind), message, body, path=path)


@contextlib.contextmanager
def _control_errors() -> Iterator[None]:
    try:
        yield
    except ControlPlaneError as e:
        raise control_error(e) from None


def host_error(e: Exception, *, missing: str | None = None, failed_to: str | None = None) -> ApiError:
    """The response an engine exception stands for; re-raises exceptions nobody can act on."""
    known = hostnode_grpc.failure_of(e)
    if known is None:
        raise e
    return failures.host_error(HostErrorKind(known[0]), known[1], missing=missing, failed_to=failed_to)


def reducer_call_error(e: DatabaseError) -> ApiError:
    """Errors raised before a reducer runs (client-api.md §6.8)."""
    return host_error(e)


#: What each engine status (of the reducer, or of ``client_connected``) is to the gateway, worked
#: out once from ``failures.call_result`` (an HTTP call pays a dict lookup, not two enum lookups).
CALL_OUTCOMES = {
    (status, connect): failures.call_result(ReducerStatus(pb_status), "", 0, 0, connect=connect).outcome
    for status, pb_status in STATUS.items()
    for connect in (False, True)
}


def call_result(outcome: ReducerOutcome, *, connect: bool = False) -> CallResult:
    """The gateway's view of a reducer outcome (``connect``: the outcome of ``client_connected``)."""
    return CallResult(
        CALL_OUTCOMES[outcome.status, connect], outcome.message, outcome.energy_used, outcome.duration_micros
    )


def _info(record: DatabaseRecord) -> DatabaseInfo:
    return DatabaseInfo(record.identity, record.owner, record.host_type, record.initial_program_hash)


# --- adapters -----------------------------------------------------------------------------------


def reset_replica(node: HostNode) -> controlplane_grpc.ResetReplica:
    """Wipe a database on the in-process node and reinstall a program (None: its current one)."""

    async def reset(identity: Identity, owner: Identity, program: bytes | None) -> object:
        if program is None:
            program = node.database(identity).program_bytes
        return await node.install(identity, owner, program, clear=True)

    return reset


def initial_program(node: HostNode) -> Callable[[Identity], Awaitable[bytes | None]]:
    """What :func:`controlplane.core.migrate_program_hashes` needs: the program a database on
    the in-process node was created with (None for a database the node does not have)."""

    async def program(identity: Identity) -> bytes | None:
        try:
            return await node.run(identity, lambda db: db.initial_program())
        except DatabaseNotFound:
            return None

    return program


class LocalControlPlane:
    """:class:`gateway.backends.ControlPlaneBackend` over an in-process :class:`ControlPlane`."""

    def __init__(self, control: ControlPlane, node: HostNode) -> None:
        self.control = control
        self.ops = ControlPlaneOps(control, reset_replica(node), [NODE_ID])

    async def resolve(self, name_or_identity: str) -> Identity:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            return await self.ops.resolve(name_or_identity)

    async def database(self, name_or_identity: str) -> DatabaseInfo:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            return _info(await self.ops.database(name_or_identity))

    async def publish(
        self,
        caller: Identity,
        name_or_identity: str | None,
        program: bytes,
        *,
        clear: bool,
        break_clients: bool = False,
        token: bytes | None = None,
        num_replicas: int | None = None,
    ) -> PublishOutcome:
        """See :class:`gateway.backends.ControlPlaneBackend` (one node: ``num_replicas`` is ignored)."""
        with _control_errors():
            result = await self.ops.publish(
                caller, name_or_identity, program, clear=clear, break_clients=break_clients, token=token
            )
        return PublishOutcome(result.identity, result.op, result.domain)

    async def reset(self, caller: Identity, name_or_identity: str, program: bytes | None) -> PublishOutcome:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            result = await self.ops.reset(caller, name_or_identity, program)
        return PublishOutcome(result.identity, result.op, result.domain)

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            await self.ops.delete(caller, name_or_identity)

    async def names(self, identity: Identity) -> list[str]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return await self.ops.names(identity)

    async def add_name(self, caller: Identity, name_or_identity: str, name: str) -> dict[str, Any]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            return await self.ops.add_name(caller, name_or_identity, name)

    async def set_names(self, caller: Identity, name_or_identity: str, names: list[str]) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            await self.ops.set_names(caller, name_or_identity, names)

    async def databases_of(self, owner: Identity) -> list[Identity]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return await self.ops.databases_of(owner)

    async def node_ids(self) -> list[int]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return self.ops.node_ids()


class LocalHostNode:
    """:class:`gateway.backends.HostNodeBackend` over an in-process :class:`HostNode`."""

    def __init__(self, node: HostNode) -> None:
        self.node = node

    async def call(
        self, database: Identity, reducer: str, args_json: str, *, caller: Identity, connection_id: int
    ) -> CallResult:
        """Connect → reducer → disconnect, as HTTP ``/call`` does (module-abi.md §7)."""
        return self.finish_call(await self.submit_call(
            database, reducer, args_json, caller=caller, connection_id=connection_id
        ))  # fmt: skip

    def submit_call(
        self, database: Identity, reducer: str, args_json: str, *, caller: Identity, connection_id: int
    ) -> asyncio.Future[HttpCall]:
        """:meth:`call` up to the engine's answer, without a coroutine (the split server's host
        node answers the gateway's CALLs so): the future of the :class:`HttpCall`, which
        :meth:`finish_call` turns into the answer. Raises ApiError at once for an unknown
        database or a full writer queue."""
        try:
            return self.node.call_via_http(
                database,
                reducer,
                lambda: self.node.encode_json_args(database, reducer, args_json),
                caller=caller,
                connection_id=connection_id,
            )
        except (DatabaseNotFound, Overloaded) as e:
            raise host_error(e) from None

    @staticmethod
    def finish_call(done: HttpCall) -> CallResult:
        """The answer to an HTTP ``/call`` from what the engine did (ApiError when the reducer
        could not be called)."""
        if done.error is not None:
            raise reducer_call_error(done.error)
        if done.reducer is None:
            assert done.connected is not None, "only a refused connect leaves no reducer outcome"
            return call_result(done.connected, connect=True)
        return call_result(done.reducer)

    async def sql(self, database: Identity, query: str, caller: Identity) -> SqlAnswer:
        """See :class:`gateway.backends.HostNodeBackend`."""
        try:
            result = await self.node.sql(database, query, caller)
        except Exception as e:  # noqa: BLE001 - host_error re-raises what it does not know
            raise host_error(e, missing="module not found") from None
        return SqlAnswer(render_response_bytes(result), result.total_duration_micros)

    async def schema(self, database: Identity) -> Any:
        """See :class:`gateway.backends.HostNodeBackend`."""
        try:
            return self.node.schema_json(database)
        except DatabaseNotFound as e:
            raise host_error(e) from None

    async def logs(self, database: Identity, num_lines: int | None, follow: bool) -> AsyncGenerator[str, None]:
        """Tail, then (``follow``) new lines; the follower is registered atomically with the tail."""
        batches = log_batches(self.node, database, num_lines, follow)
        try:
            try:
                first = await anext(batches, None)
            except DatabaseNotFound as e:
                raise host_error(e) from None
            if follow and not first:
                yield ""  # registered, nothing to tail (HostNodeBackend.logs)
            for line in first or ():
                yield line
            async for batch in batches:
                for line in batch:
                    yield line
        finally:
            await batches.aclose()

    async def pre_publish(self, database: Identity, program: bytes) -> PrePublish:
        """Plan the update; the token names (database, old program, new program)."""
        try:
            preview = await preview_update(self.node, database, program)
        except Exception as e:  # noqa: BLE001 - host_error re-raises what it does not know
            raise host_error(e, failed_to="plan the update") from None
        return PrePublish(
            automatic=preview.automatic, plan=preview.plan, break_clients=preview.break_clients, token=preview.token,
            reason=preview.reason,
        )

    async def connect(self, database: Identity, params: WsParams) -> WsSession | None:
        """A WebSocket client of the in-process host node (None: ``client_connected`` refused)."""
        client = ClientParams(
            identity=params.identity, token=params.token, connection_id=params.connection_id, json=params.json,
            compression=Compression(params.compression), light=params.light, confirmed=params.confirmed,
            jwt_payload=params.jwt_payload,
        )  # fmt: skip
        try:
            result = await self.node.connect_client(database, client)
        except (DatabaseNotFound, Overloaded) as e:
            raise host_error(e) from None
        return result if isinstance(result, Connection) else None


# --- the server ---------------------------------------------------------------------------------


@dataclass
class StandaloneConfig:
    """Limits of one standalone server (everything else comes from the two required arguments)."""

    max_module_bytes: int = 64 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024
    #: Open WebSocket connections in all and to one database (README, "Limits").
    max_ws_connections: int = GatewayConfig.max_ws_connections
    max_ws_connections_per_database: int = GatewayConfig.max_ws_connections_per_database
    #: Seconds in-flight requests get to finish at shutdown.
    shutdown_timeout: float = 5.0
    #: ``host:port`` of a listener of its own for ``/metrics``, ``/healthz``, ``/readyz`` (empty:
    #: none; the main port serves them anyway).
    metrics_addr: str = ""
    #: How long one reducer call may run (README, "Limits").
    budgets: Budgets = field(default_factory=Budgets)


def gateway_config(config: StandaloneConfig) -> GatewayConfig:
    """The gateway's limits of a standalone server."""
    return GatewayConfig(
        max_module_bytes=config.max_module_bytes,
        max_body_bytes=config.max_body_bytes,
        max_ws_connections=config.max_ws_connections,
        max_ws_connections_per_database=config.max_ws_connections_per_database,
    )


async def serve(
    listen_addr: str,
    data_dir: Path,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    config: StandaloneConfig | None = None,
    transport: str = DEFAULT_TRANSPORT,
) -> None:
    """Run standalone Orrery until ``stop`` is set (default: until SIGINT/SIGTERM).

    ``ready(address)`` is called once the server accepts connections, with the ``host:port`` it
    listens on (the real port when ``listen_addr`` asks for port 0). ``transport`` is one of
    :data:`TRANSPORTS`. Every database is closed (checkpointed and synced) before this returns.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    config = config or StandaloneConfig()
    host, port = parse_listen_addr(listen_addr)
    data_dir = Path(data_dir)
    if stop is None:
        stop = stop_on_signals()
    if transport == "split":
        from orrery.standalone_split import serve_split  # it imports this module

        await serve_split(listen_addr, data_dir, ready=ready, stop=stop, config=config)
        return
    (data_dir / "control").mkdir(parents=True, exist_ok=True)
    authority = TokenAuthority(SigningKeys.load_or_create(data_dir / "keys"))
    store = await LmdbMetaStore.open(data_dir / "control" / "meta.lmdb")
    database = DatabaseConfig(**config.budgets.database_config())
    node = HostNode(HostNodeConfig(data_dir / "node", database=database))
    stats = GatewayStats()
    registry = new_registry("standalone")
    registry.register(HostNodeCollector(node))
    registry.register(GatewayCollector(stats))
    endpoints = Endpoints(registry)  # ready once it listens: nothing to wait for
    runner: web.AppRunner | None = None
    metrics: web.AppRunner | None = None
    async with contextlib.AsyncExitStack() as grpc_stack:
        try:
            started = time.monotonic()
            await node.start()
            await migrate_program_hashes(store, initial_program(node))
            if transport == "grpc":
                control_backend, host_backend = await _grpc_backends(grpc_stack, store, node)
            else:
                control = ControlPlane(store, node, Placement(f"node-{NODE_ID}", listen_addr))
                control_backend, host_backend = LocalControlPlane(control, node), LocalHostNode(node)
            gw_config = gateway_config(config)
            app = create_app(authority, control_backend, host_backend, gw_config, stats=stats, endpoints=endpoints)
            runner, bound = await start_site(app, host, port, shutdown_timeout=config.shutdown_timeout)
            gw_config.advertise.append(bound)
            if config.metrics_addr:
                metrics, metrics_bound = await start_metrics(config.metrics_addr, endpoints)
                log.info("metrics on http://%s/metrics", metrics_bound)
            log.info(
                "listening on http://%s (data in %s, %s transport, started in %.2fs)",
                bound, data_dir, transport, time.monotonic() - started,
            )
            tune_gc_for_serving()
            if ready is not None:
                ready(bound)
            await stop.wait()
            log.info("shutting down")
        finally:
            if metrics is not None:
                await metrics.cleanup()
            if runner is not None:
                await runner.cleanup()
            # The gRPC servers and channels (if any) close here, before the node they serve.
            await grpc_stack.aclose()
            await node.stop()
            await store.close()
            log.info("stopped")


async def start_grpc_services(
    stack: contextlib.AsyncExitStack, store: LmdbMetaStore, node: HostNode, secret: ClusterSecret
) -> tuple[str, str]:
    """Serve the host node and the control plane over gRPC on free ports of 127.0.0.1 (stopped
    when ``stack`` closes); their addresses. The ports take only calls carrying ``secret``
    (proto/auth.py), as a cluster's do; the control plane drives the node over its port too."""
    host_server, host_addr = await hostnode_grpc.start_server(node, "127.0.0.1:0", secret=secret)
    stack.push_async_callback(host_server.stop, 1.0)
    host_client = GrpcHostNodeClient(grpc_channel(stack, host_addr, secret))
    control = ControlPlane(store, host_client, Placement(f"node-{NODE_ID}", host_addr))
    control_server, control_addr = await controlplane_grpc.start_server(
        ControlPlaneOps(control, host_client.reset, [NODE_ID]), "127.0.0.1:0", secret=secret
    )
    stack.push_async_callback(control_server.stop, 1.0)
    log.info("host node gRPC on %s, control plane gRPC on %s", host_addr, control_addr)
    return host_addr, control_addr


async def _grpc_backends(
    stack: contextlib.AsyncExitStack, store: LmdbMetaStore, node: HostNode
) -> tuple[ControlPlaneBackend, HostNodeBackend]:
    """The gRPC services of :func:`start_grpc_services` in this process, and the gateway's clients
    of them (each its own channel, as it would have from another process)."""
    secret = ClusterSecret.generate()
    host_addr, control_addr = await start_grpc_services(stack, store, node, secret)
    return GrpcControlPlane(grpc_channel(stack, control_addr, secret)), GrpcHostNode(grpc_channel(stack, host_addr, secret))


def grpc_channel(stack: contextlib.AsyncExitStack, address: str, secret: ClusterSecret) -> grpc.aio.Channel:
    channel = auth.channel(address, secret)
    stack.push_async_callback(channel.close)
    return channel


# --- process entry points -----------------------------------------------------------------------


def run(
    listen_addr: str = DEFAULT_LISTEN_ADDR,
    data_dir: str | os.PathLike[str] = "data",
    *,
    config: StandaloneConfig | None = None,
    transport: str = DEFAULT_TRANSPORT,
) -> None:
    """Run the server in this process until SIGINT/SIGTERM; prints one line when ready."""

    def ready(address: str) -> None:
        print(f"Orrery is listening on http://{address} (data in {data_dir})", flush=True)

    loop_runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if transport == "inprocess":  # grpc.aio supports the standard event loop only
        with contextlib.suppress(ImportError):
            import uvloop  # type: ignore[import-not-found]

            loop_runner = uvloop.run
    loop_runner(serve(listen_addr, Path(data_dir), ready=ready, config=config, transport=transport))


def main(argv: list[str] | None = None) -> int:
    """``python -m orrery.standalone``."""
    parser = argparse.ArgumentParser(prog="python -m orrery.standalone", description=__doc__.splitlines()[0])
    parser.add_argument("--listen-addr", default=DEFAULT_LISTEN_ADDR, help="host:port (default %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="data directory (default %(default)s)")
    parser.add_argument("--max-module-bytes", type=int, default=StandaloneConfig.max_module_bytes)
    parser.add_argument("--max-body-bytes", type=int, default=StandaloneConfig.max_body_bytes)
    parser.add_argument(
        "--max-ws-connections", type=int, default=StandaloneConfig.max_ws_connections,
        help="open WebSocket connections in all (default %(default)s)",
    )
    parser.add_argument(
        "--max-ws-connections-per-database", type=int, default=StandaloneConfig.max_ws_connections_per_database,
        help="open WebSocket connections to one database (default %(default)s)",
    )
    parser.add_argument("--metrics-addr", default="", help="host:port to serve /metrics, /healthz and /readyz on as well")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_budget_options(parser)
    parser.add_argument(
        "--transport", default=DEFAULT_TRANSPORT, choices=TRANSPORTS,
        help="how the gateway reaches the control plane and host node (default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        parse_listen_addr(args.listen_addr)
        if args.metrics_addr:
            parse_listen_addr(args.metrics_addr, "--metrics-addr")
        budgets = budgets_of(args)
    except ValueError as e:
        parser.error(str(e))
    configure_logging(args.log_level)
    config = StandaloneConfig(
        max_module_bytes=args.max_module_bytes,
        max_body_bytes=args.max_body_bytes,
        max_ws_connections=args.max_ws_connections,
        max_ws_connections_per_database=args.max_ws_connections_per_database,
        metrics_addr=args.metrics_addr,
        budgets=budgets,
    )
    try:
        run(args.listen_addr, args.data_dir, config=config, transport=args.transport)
    except (OSError, KeyFileError, NodeProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
