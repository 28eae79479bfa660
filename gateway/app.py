"""The aiohttp application: routes, CORS, anonymous identities and error mapping.

One middleware (:func:`_middleware`; each layer of aiohttp's middleware chain costs ~5,600
instructions per request, ``loadtest/callgrind_calls.py``) does, in this order:

1. counts every request into the gateway's stats (:func:`gateway.metrics.count_request`), with
   the status the client gets;
2. answers CORS preflight requests (:func:`_preflight`, client-api.md §0);
3. authenticates ``/v1/database*`` callers, minting an identity when the request has no token
   (§3; ``anon_auth_middleware``);
4. turns :class:`ApiError` / :class:`AuthError` / router 404-405 / unexpected exceptions —
   the authentication's included — into responses (:func:`_error_response`), the only place
   errors become HTTP. An unexpected exception, or a backend's internal failure, is a 500 naming
   a request id (:class:`InternalError`); its details go only to this process's log, with that id.

The ``on_response_prepare`` hook adds the CORS header to every response and the
``spacetime-identity`` / ``spacetime-identity-token`` headers to every ``/v1/database*``
response, streamed ones included.

With ``endpoints`` (:mod:`observability.http`) the app also serves ``/v1/metrics``,
``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.auth import AuthError, TokenAuthority
from gateway.backends import ControlPlaneBackend, HostNodeBackend
from gateway.context import CALLER_KEY, GATEWAY, Authenticator, Gateway, GatewayConfig
from gateway.errors import failure_response, from_auth_error, to_response
from gateway.metrics import GatewayStats, count_request
from gateway.routes_database import routes as database_routes
from gateway.routes_identity import routes as identity_routes
from gateway.routes_ws import routes as ws_routes
from observability.http import Endpoints, add_routes

__all__ = ["create_app"]

ALLOWED_HEADERS = "authorization,accept,content-type"
VARY = "origin, access-control-request-method, access-control-request-headers"


def _is_database_route(request: web.Request) -> bool:
    return request.path == "/v1/database" or request.path.startswith("/v1/database/")


def _preflight(request: web.Request) -> web.Response | None:
    """The answer to an ``OPTIONS`` preflight for any ``/v1`` path (any method, three request
    headers), or None for any other request."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(
            status=200,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "*",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Vary": VARY,
            },
        )
    return None


def _error_response(request: web.Request, e: Exception) -> web.StreamResponse | None:
    """The response a failure maps to; None for one that must propagate (an HTTP exception
    other than 404/405, a connection reset)."""
    if isinstance(e, AuthError):
        return to_response(from_auth_error(e))
    if isinstance(e, web.HTTPException):
        if e.status in (404, 405):
            # axum answers unknown routes and wrong methods with empty bodies.
            headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            return web.Response(status=e.status, headers=headers)
        return None
    if isinstance(e, ConnectionResetError):
        return None
    return failure_response(request.method, request.path, e)


def _middleware(stats: GatewayStats) -> Middleware:
    """The application's one middleware (the module's docstring says what it does)."""

    @web.middleware
    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response: web.StreamResponse | None = _preflight(request)
            if response is None:
                try:
                    if _is_database_route(request) and request.match_info.http_exception is None:
                        request[CALLER_KEY] = await request.app[GATEWAY].auth.or_anonymous(request)
                    response = await handler(request)
                except Exception as e:
                    response = _error_response(request, e)
                    if response is None:
                        raise
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            count_request(stats, request, status, started)

    return serve


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers.setdefault("Vary", VARY)
    caller = request.get(CALLER_KEY)
    if caller is not None:
        response.headers["spacetime-identity"] = caller.identity.to_hex()
        response.headers["spacetime-identity-token"] = caller.token


async def _on_shutdown(app: web.Application) -> None:
    app[GATEWAY].stopping.set()


def create_app(
    authority: TokenAuthority,
    control: ControlPlaneBackend,
    host: HostNodeBackend,
    config: GatewayConfig | None = None,
    *,
    stats: GatewayStats | None = None,
    endpoints: Endpoints | None = None,
) -> web.Application:
    """The gateway application over the given backends (``stats``: where it counts requests;
    ``endpoints``: serve metrics and health from its registry and readiness check)."""
    config = config or GatewayConfig()
    stats = stats or GatewayStats()
    # Bodies are read by gateway.http_util.read_body with per-route limits; this is the ceiling.
    app = web.Application(
        middlewares=[_middleware(stats)],
        client_max_size=max(config.max_module_bytes, config.max_body_bytes),
    )
    app[GATEWAY] = Gateway(config, Authenticator(authority), control, host, stats=stats)
    if endpoints is not None:
        add_routes(app, endpoints, metrics_path=None)  # /v1/metrics is routes_identity's
    app.add_routes(identity_routes)
    app.add_routes(database_routes)
    app.add_routes(ws_routes)
    app.on_response_prepare.append(_on_prepare)
    app.on_shutdown.append(_on_shutdown)
    return app
