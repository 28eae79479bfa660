"""``/metrics``, ``/healthz`` and ``/readyz`` as aiohttp routes.

* ``/metrics`` (``/v1/metrics`` on a gateway's public port): the process's registry in the
  Prometheus text format. Collectors run on the event loop, where the state they read lives.
* ``/healthz``: 200 ``ok`` while the process serves HTTP at all (liveness).
* ``/readyz``: 200 ``ok`` when the process is ready to take its share of traffic, else 503 with
  a line saying why. What "ready" means is the process's own :data:`Readiness` check.

A host node and a control plane serve these on their own listener (``--metrics-addr``,
:func:`metrics_app`); a gateway and standalone also add them to their public application
(:func:`add_routes`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from observability.exposition import CONTENT_TYPE, encode_text

__all__ = [
    "ENDPOINTS", "Endpoints", "Readiness", "add_routes", "always_ready", "metrics_app", "metrics_response",
    "ready_response",
]

log = logging.getLogger(__name__)

#: Why the process is not ready (a line of text), or None when it is.
Readiness = Callable[[], "str | None"]


def always_ready() -> str | None:
    """The check of a process that is ready as soon as it serves."""
    return None


@dataclass
class Endpoints:
    """What the three routes answer from."""

    registry: CollectorRegistry
    ready: Readiness = field(default=always_ready)
    #: Metrics of another process this one answers for (a split standalone server's host node),
    #: in the text format, appended to the registry's; their family names must not repeat ours.
    forwarded: Callable[[], Awaitable[bytes]] | None = None


ENDPOINTS = web.AppKey("observability", Endpoints)


async def metrics_response(endpoints: Endpoints) -> web.Response:
    """The registry's current samples (and the forwarded ones)."""
    body = encode_text(endpoints.registry)
    if endpoints.forwarded is not None:
        body += await endpoints.forwarded()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def ready_response(endpoints: Endpoints) -> web.Response:
    """200 ``ok``, or 503 ``not ready: <reason>``."""
    try:
        reason = endpoints.ready()
    except Exception as e:  # noqa: BLE001 - a failing check means "not ready", with the reason
        log.exception("readiness check failed")
        reason = f"readiness check failed: {type(e).__name__}: {e}"
    if reason is None:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"not ready: {reason}\n")


async def _metrics(request: web.Request) -> web.Response:
    return await metrics_response(request.app[ENDPOINTS])


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    return ready_response(request.app[ENDPOINTS])


def add_routes(app: web.Application, endpoints: Endpoints, *, metrics_path: str | None = "/metrics") -> None:
    """Serve ``metrics_path`` (unless None: the app routes it itself), ``/healthz`` and ``/readyz``."""
    app[ENDPOINTS] = endpoints
    if metrics_path is not None:
        app.router.add_get(metrics_path, _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)


def metrics_app(endpoints: Endpoints) -> web.Application:
    """An application with nothing but ``/metrics``, ``/healthz`` and ``/readyz``."""
    app = web.Application()
    add_routes(app, endpoints)
    return app
