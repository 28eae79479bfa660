"""What every Orrery server process shares: logfmt logging, ``--listen-addr`` parsing, stop signals,
the ``--metrics-addr`` listener.

Standalone (:mod:`orrery.standalone`) and the cluster's processes (:mod:`orrery.gateway_server`,
…) use these, so they log alike and stop alike: SIGINT/SIGTERM set one event, the process
finishes what is in flight and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import cast

from aiohttp import web

from gateway import fast_calls
from gateway.context import GATEWAY, Gateway
from observability.http import Endpoints, metrics_app

__all__ = [
    "LogfmtFormatter",
    "NodeProcessError",
    "advertised",
    "bound_address",
    "configure_logging",
    "metrics_url",
    "parse_listen_addr",
    "start_metrics",
    "start_site",
    "stop_on_signals",
]

class NodeProcessError(Exception):
    """A split standalone server's host-node process could not start, or ended while the server
    ran; says why. (Here, not in orrery.standalone: run as ``python -m orrery.standalone`` that
    module is ``__main__``, and a class defined in it would be a different class in the copy
    orrery.standalone_split imports — the error would escape ``main``'s handler.)"""


#: Loggers whose INFO lines a server prints (everyone else's warnings only).
OUR_LOGGERS = ("orrery", "gateway", "controlplane", "clustermeta")
#: Libraries that warn about their callers' input, which here is client text: sqlglot warns about
#: every statement it only half parses ("falling back to parsing as a Command"), each refused
#: with a 400 anyway, so a client could fill the server's log with them. Their errors still show.
QUIET_LOGGERS = ("sqlglot",)


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=… logger=… msg="…"`` lines (one record per line, machine-parseable)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} msg={json.dumps(record.getMessage())}"
        if record.exc_info:
            line += f" exc={json.dumps(self.formatException(record.exc_info))}"
        return line


def configure_logging(level: str = "info") -> None:
    """Quiet, structured logs on stderr: our INFO lines, everyone else's warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def parse_listen_addr(text: str, flag: str = "--listen-addr") -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too); raises ValueError (naming ``flag``)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{flag} must be host:port, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


async def start_site(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (no access log); the runner (``cleanup()`` it at the end)
    and the ``host:port`` it really listens on. A gateway's application has its HTTP ``/call``
    requests read by :mod:`gateway.fast_calls` (unless ``ORRERY_HTTP_FAST_CALLS=0``)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        if GATEWAY in app and fast_calls.enabled():
            site: web.TCPSite = FastSite(
                runner, app[GATEWAY], host, port, shutdown_timeout=shutdown_timeout, reuse_address=True
            )
        else:
            site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound_address(runner, host, port)


class FastSite(web.TCPSite):
    """aiohttp's TCP site whose connections start with :class:`gateway.fast_calls.CallConnection`
    (``gateway``: the application's); stopping it waits up to
    ``shutdown_timeout`` seconds for the calls they have in flight."""

    def __init__(
        self, runner: web.AppRunner, gateway: Gateway, host: str, port: int, *, shutdown_timeout: float,
        reuse_address: bool | None = None,
    ) -> None:  # fmt: skip
        super().__init__(runner, host, port, reuse_address=reuse_address)
        self.gateway = gateway
        self.shutdown_timeout = shutdown_timeout
        self.calls: fast_calls.FastCalls | None = None

    async def start(self) -> None:
        # TCPSite.start, with FastCalls (which hands connections to the runner's server) as the
        # protocol factory; BaseSite.start registers the site with the runner.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self.calls = fast_calls.FastCalls(self.gateway, server)
        loop = asyncio.get_running_loop()
        # (a compiled CallConnection is an asyncio.Protocol by its methods, not by its base)
        factory = cast(Callable[[], asyncio.BaseProtocol], self.calls)
        self._server = await loop.create_server(
            factory, self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )  # fmt: skip
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        if self.calls is not None:
            await self.calls.close(self.shutdown_timeout)


def bound_address(runner: web.AppRunner, host: str, port: int) -> str:
    """The ``host:port`` a started server really listens on (the real port when asked for 0)."""
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            host, port = str(addr[0]), int(addr[1])
            break
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advertised(bound: str, host_name: str = "") -> str:
    """``bound`` (``host:port``) with a wildcard host replaced by ``host_name`` (default: this
    machine's name)."""
    host, _, port = bound.rpartition(":")
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        host = host_name or socket.gethostname()
    return f"{host}:{port}"


def metrics_url(bound: str, advertise_addr: str = "") -> str:
    """The URL Prometheus scrapes a metrics listener bound at ``bound`` on (a wildcard host is
    replaced by the host of ``advertise_addr``, else this machine's name)."""
    return f"http://{advertised(bound, advertise_addr.rpartition(':')[0])}/metrics"


async def start_metrics(address: str, endpoints: Endpoints) -> tuple[web.AppRunner, str]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``address`` (``--metrics-addr``); the
    runner (``cleanup()`` it at the end) and the ``host:port`` it listens on."""
    host, port = parse_listen_addr(address, "--metrics-addr")
    return await start_site(metrics_app(endpoints), host, port, shutdown_timeout=1.0)


def stop_on_signals() -> asyncio.Event:
    """An event SIGINT and SIGTERM set (where the loop can install signal handlers)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    return stop
