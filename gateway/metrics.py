"""The gateway's metrics: HTTP requests, WebSockets relayed, and (in a cluster) routing retries.

:class:`GatewayStats` is counted into on the event loop — by the application's middleware
(:func:`count_request`), the WebSocket route and the cluster backends' retry loop — and
:class:`GatewayCollector` exports it (with the cluster view's state) at scrape time. 1.12's
gateway-side metrics have no counterpart here (its HTTP layer exports none of its own), so all
of these are ``orrery_``:

================================================  =========  ===================  ===============================
metric                                            type       labels               counted in
================================================  =========  ===================  ===============================
``orrery_gateway_http_requests_total``            counter    route, method, code  :func:`count_request`
``orrery_gateway_http_request_duration_seconds``  histogram  route                the same (not WebSocket sessions)
``orrery_gateway_websocket_connections``          gauge                           ``routes_ws.subscribe``
``orrery_gateway_routing_retries_total``          counter    reason               ``cluster_backends._Deadline``
``orrery_gateway_view_revision``                  gauge                           scrape: the cluster view
``orrery_gateway_live_nodes``                     gauge                           scrape: the cluster view
``orrery_gateway_view_connected``                 gauge                           scrape: its etcd watch is up
================================================  =========  ===================  ===============================

``route`` is the route's pattern (``/v1/database/{name_or_identity}/call/{reducer}``), never
the path itself, so the label's values are few; requests no route matched count as ``other``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client.metrics_core import Metric

from observability.families import MetricSpec, Scrape
from observability.instruments import DEFAULT_BUCKETS, Histogram

if TYPE_CHECKING:
    from gateway.cluster_view import ClusterView

__all__ = ["GatewayCollector", "GatewayStats", "count_request"]

HTTP_REQUESTS = MetricSpec.counter(
    "orrery_gateway_http_requests_total", "HTTP requests answered, by route pattern, method and status code",
    "route", "method", "code",
)  # fmt: skip
HTTP_DURATION = MetricSpec.histogram(
    "orrery_gateway_http_request_duration_seconds", "Time to answer an HTTP request (WebSocket sessions excluded)",
    "route",
)  # fmt: skip
FAST_CALLS = MetricSpec.counter(
    "orrery_gateway_http_fast_calls_total",
    "HTTP /call requests read and answered without aiohttp's request machinery (gateway/fast_calls.py)",
)
WEBSOCKETS = MetricSpec.gauge("orrery_gateway_websocket_connections", "WebSocket clients this gateway relays now")
RETRIES = MetricSpec.counter(
    "orrery_gateway_routing_retries_total",
    "Requests retried by the cluster gateway, by reason (not_leader, no_leader, leader_not_live, unreachable, "
    "no_controlplane, controlplane_unreachable)",
    "reason",
)  # fmt: skip
VIEW_REVISION = MetricSpec.gauge("orrery_gateway_view_revision", "The etcd revision the gateway's cluster view has applied")
LIVE_NODES = MetricSpec.gauge("orrery_gateway_live_nodes", "Host nodes registered in etcd, as the gateway sees them")
VIEW_CONNECTED = MetricSpec.gauge(
    "orrery_gateway_view_connected", "1 while the gateway's watch on etcd is up (its view follows every change)"
)
SPECS = (HTTP_REQUESTS, HTTP_DURATION, FAST_CALLS, WEBSOCKETS, RETRIES, VIEW_REVISION, LIVE_NODES, VIEW_CONNECTED)

#: The ``route`` of a request no route matched.
OTHER_ROUTE = "other"
#: Why the cluster backends retry a request (``gateway/cluster_backends.py``): each is exported
#: from the start, at 0, so dashboards and alerts see the series before the first failover.
RETRY_REASONS = ("not_leader", "no_leader", "leader_not_live", "unreachable", "no_controlplane", "controlplane_unreachable")


class GatewayStats:
    """What one gateway counts (event loop only)."""

    def __init__(self) -> None:
        #: (route, method, code) → requests.
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations: dict[str, Histogram] = {}
        self.websockets = 0
        #: Of the requests, the ``/call`` requests gateway/fast_calls.py answered itself.
        self.fast_calls = 0
        self.retries: dict[str, int] = dict.fromkeys(RETRY_REASONS, 0)

    def request(self, route: str, method: str, status: int, seconds: float | None) -> None:
        """One answered request (``seconds`` None: not timed, e.g. a WebSocket session)."""
        key = (route, method, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is not None:
            h = self.durations.get(route)
            if h is None:
                h = self.durations[route] = Histogram(DEFAULT_BUCKETS)
            h.observe(seconds)

    def retry(self, reason: str) -> None:
        """A request is tried again (see :data:`RETRIES` for the reasons)."""
        self.retries[reason] = self.retries.get(reason, 0) + 1


def _route_of(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None:
        return OTHER_ROUTE
    resource = info.route.resource
    return resource.canonical if resource is not None else OTHER_ROUTE


def count_request(stats: GatewayStats, request: web.Request, status: int, started: float) -> None:
    """Count one answered request into ``stats`` (``started``: its ``time.perf_counter()`` at the
    start; a WebSocket session, status 101, is counted but not timed). The application's middleware
    calls it outermost, so it sees the status the client gets."""
    seconds = None if status == 101 else time.perf_counter() - started
    stats.request(_route_of(request), request.method, status, seconds)


class GatewayCollector:
    """Exports a gateway's :class:`GatewayStats` and, in a cluster, its view of the cluster."""

    def __init__(self, stats: GatewayStats, view: ClusterView | None = None) -> None:
        self.stats = stats
        self.view = view

    def collect(self) -> Iterator[Metric]:
        """The families of :data:`SPECS`."""
        scrape = Scrape(SPECS)
        stats = self.stats
        for (route, method, code), n in list(stats.requests.items()):
            scrape.add(HTTP_REQUESTS, (route, method, code), n)
        for route, h in list(stats.durations.items()):
            scrape.histogram(HTTP_DURATION, (route,), h)
        scrape.add(FAST_CALLS, (), stats.fast_calls)
        scrape.add(WEBSOCKETS, (), stats.websockets)
        for reason, n in list(stats.retries.items()):
            scrape.add(RETRIES, (reason,), n)
        view = self.view
        if view is not None:
            scrape.add(VIEW_REVISION, (), view.revision)
            scrape.add(LIVE_NODES, (), len(view.live_nodes()))
            scrape.add(VIEW_CONNECTED, (), 1 if view.watching else 0)
        yield from scrape.families()
