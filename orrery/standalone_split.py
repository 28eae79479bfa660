"""A standalone server as two processes: the gateway here, the host node in a child.

``orrery.standalone --transport split`` runs the gateway — HTTP and WebSocket termination, frame
parsing, token checks, the per-client queues — in this process, and the control plane and the
databases (every database's writer) in a child process (:mod:`orrery.standalone_node`), so the
two use two CPUs instead of sharing one interpreter (issue 11 item 3). They are joined by:

* the **link**, a unix ``socketpair`` made here before the child starts (no path, no port:
  nothing else can connect to it), carrying every WebSocket client's frames both ways in one
  batch per event-loop turn (:mod:`proto.link`, :mod:`gateway.link_backend`);
* the host node's and the control plane's **gRPC** services on 127.0.0.1, for everything else
  (HTTP calls, SQL, publishing), guarded by a secret the child draws and tells this process over
  the link.

The two live and die together: when the child exits (or the link breaks) this process logs why
and stops with :class:`NodeProcessError`; when this process stops it closes the link, and the
child closes its databases and exits (and, should this process be killed, the link's end of file
tells the child just the same). ``/v1/metrics`` answers for both: the gateway's registry, then
the host node's families fetched over the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gateway.app import create_app
from gateway.auth import SigningKeys, TokenAuthority
from gateway.grpc_backends import GrpcControlPlane, GrpcHostNode
from gateway.link_backend import CachedControlPlane, GatewayLink, LinkHostNode
from gateway.metrics import GatewayCollector, GatewayStats
from hostnode.runtime import tune_gc_for_serving
from observability.http import Endpoints
from observability.registry import new_registry
from orrery.process import NodeProcessError, parse_listen_addr, start_metrics, start_site
from orrery.standalone import StandaloneConfig, gateway_config, grpc_channel
from orrery.standalone_node import READY_ID
from proto import link
from proto.auth import ClusterSecret

__all__ = ["serve_split"]

log = logging.getLogger("orrery.standalone")

#: Seconds the host-node process may take to open its databases before the server gives up.
NODE_START_TIMEOUT = 600.0
#: Seconds the host-node process gets to close its databases once the link is closed.
NODE_STOP_TIMEOUT = 60.0


async def _start_node(data_dir: Path, config: StandaloneConfig) -> tuple[asyncio.subprocess.Process, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    level = logging.getLevelName(logging.getLogger("orrery").getEffectiveLevel()).lower()
    args = [
        sys.executable, "-m", "orrery.standalone_node", "--link-fd", str(theirs.fileno()),
        "--data-dir", str(data_dir), "--log-level", level if level in ("debug", "info", "warning", "error") else "info",
    ]  # fmt: skip
    if config.budgets.fuel is not None:
        args += ["--fuel-budget", str(config.budgets.fuel)]
    if config.budgets.time_s is not None:
        args += ["--time-budget", str(config.budgets.time_s)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL, cwd=os.getcwd()
        )
    finally:
        theirs.close()
    return proc, ours


async def _ready(reader: asyncio.StreamReader, proc: asyncio.subprocess.Process) -> dict[str, str]:
    """The node's first message: where its gRPC services are, and their secret."""
    try:
        head = await reader.readexactly(4)
        body = await reader.readexactly(link.read_length(head))
    except asyncio.IncompleteReadError:
        code = await proc.wait()
        raise NodeProcessError(f"the host-node process exited with status {code} before it was ready") from None
    events = list(link.decode(body))
    if len(events) != 1 or events[0][:2] != (link.REPLY, READY_ID):
        raise NodeProcessError(f"the host-node process did not start with its ready message: {events[:1]!r}")
    ready = json.loads(events[0][2])
    return {k: str(ready[k]) for k in ("host", "control", "secret")}


async def _node_metrics(node_link: GatewayLink) -> bytes:
    """The host node's metrics in the text format (a comment saying why when it cannot answer)."""
    try:
        text = await node_link.request(b'{"op":"metrics"}')
    except ConnectionError as e:
        return f"# the host node's metrics are unavailable: {e}\n".encode()
    if text.startswith(b"error: "):  # hostnode/link.py: a request that failed
        log.error("the host node could not render its metrics: %s", text[7:200].decode(errors="replace"))
        return b"# the host node could not render its metrics (see the server log)\n"
    return text


async def _stop_node(proc: asyncio.subprocess.Process) -> None:
    try:
        await asyncio.wait_for(proc.wait(), NODE_STOP_TIMEOUT)
    except TimeoutError:
        log.error("the host-node process did not stop within %.0fs; killing it", NODE_STOP_TIMEOUT)
        proc.kill()
        await proc.wait()


async def serve_split(
    listen_addr: str,
    data_dir: Path,
    *,
    ready: Callable[[str], None] | None,
    stop: asyncio.Event,
    config: StandaloneConfig,
) -> None:
    """:func:`orrery.standalone.serve` with ``transport="split"`` (its arguments, checked)."""
    host, port = parse_listen_addr(listen_addr)
    (data_dir / "control").mkdir(parents=True, exist_ok=True)
    authority = TokenAuthority(SigningKeys.load_or_create(data_dir / "keys"))
    started = time.monotonic()
    proc, sock = await _start_node(data_dir, config)
    # Everything below is undone in reverse order: the listeners first, then the link (the node
    # then disconnects its clients and closes its databases), then the wait for the node to exit.
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(_stop_node, proc)
        stack.callback(sock.close)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        stack.callback(writer.close)
        waiting = asyncio.ensure_future(_ready(reader, proc))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopped}, timeout=NODE_START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not waiting.done():
            waiting.cancel()
            if stop.is_set():
                return
            raise NodeProcessError(f"the host-node process was not ready within {NODE_START_TIMEOUT:.0f}s")
        where = waiting.result()
        secret = ClusterSecret(where["secret"])
        node_link = GatewayLink(reader, writer)
        stack.push_async_callback(node_link.close)
        control = CachedControlPlane(GrpcControlPlane(grpc_channel(stack, where["control"], secret)))
        host_node = LinkHostNode(GrpcHostNode(grpc_channel(stack, where["host"], secret)), node_link)
        stats = GatewayStats()
        registry = new_registry("standalone")
        registry.register(GatewayCollector(stats))
        endpoints = Endpoints(registry, forwarded=lambda: _node_metrics(node_link))
        gw_config = gateway_config(config)
        app = create_app(authority, control, host_node, gw_config, stats=stats, endpoints=endpoints)
        runner, bound = await start_site(app, host, port, shutdown_timeout=config.shutdown_timeout)
        stack.push_async_callback(runner.cleanup)
        gw_config.advertise.append(bound)
        if config.metrics_addr:
            metrics, metrics_bound = await start_metrics(config.metrics_addr, endpoints)
            stack.push_async_callback(metrics.cleanup)
            log.info("metrics on http://%s/metrics", metrics_bound)
        log.info(
            "listening on http://%s (data in %s, split transport: host node in process %d, started in %.2fs)",
            bound, data_dir, proc.pid, time.monotonic() - started,
        )  # fmt: skip
        tune_gc_for_serving()  # this process holds every client's connection (hostnode/runtime.py)
        if ready is not None:
            ready(bound)
        lost = asyncio.ensure_future(node_link.lost.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        lost.cancel()
        if not stop.is_set():
            code = await proc.wait()
            raise NodeProcessError(f"the host-node process exited with status {code} ({node_link.why})")
        log.info("shutting down")
    log.info("stopped")
