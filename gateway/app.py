"""The aiohttp application: routes, CORS, anonymous identities and error mapping.

Middleware order (outermost first):

1. :func:`cors_preflight` answers CORS preflight requests (client-api.md §0);
2. :func:`errors` turns :class:`ApiError` / :class:`AuthError` / router 404-405 / unexpected
   exceptions into responses — the only place errors become HTTP. An unexpected exception, or a
   backend's internal failure, is a 500 naming a request id (:class:`InternalError`); its details
   go only to this process's log, with that id;
3. :func:`database_auth` authenticates ``/v1/database*`` callers, minting an identity when the
   request has no token (§3).

The ``on_response_prepare`` hook adds the CORS header to every response and the
``spacetime-identity`` / ``spacetime-identity-token`` headers to every ``/v1/database*``
response, streamed ones included.

With ``endpoints`` (:mod:`observability.http`) the app also serves ``/v1/metrics``,
``/healthz`` and ``/readyz``, and counts every request (:func:`gateway.metrics.request_metrics`,
outermost, so it sees the status the client gets).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.auth import AuthError, TokenAuthority
from gateway.backends import ControlPlaneBackend, HostNodeBackend
from gateway.context import CALLER_KEY, GATEWAY, Authenticator, Gateway, GatewayConfig
from gateway.errors import ApiError, InternalError, from_auth_error, log_internal, to_response
from gateway.metrics import GatewayStats, request_metrics
from gateway.routes_database import routes as database_routes
from gateway.routes_identity import routes as identity_routes
from gateway.routes_ws import routes as ws_routes
from observability.http import Endpoints, add_routes

__all__ = ["create_app"]

ALLOWED_HEADERS = "authorization,accept,content-type"
VARY = "origin, access-control-request-method, access-control-request-headers"


def _is_database_route(request: web.Request) -> bool:
    return request.path == "/v1/database" or request.path.startswith("/v1/database/")


@web.middleware
async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer ``OPTIONS`` preflights for any ``/v1`` path (any method, three request headers)."""
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
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to its response."""
    try:
        return await handler(request)
    except ApiError as e:
        log_internal(request, e)
        return to_response(e)
    except AuthError as e:
        return to_response(from_auth_error(e))
    except web.HTTPException as e:
        if e.status in (404, 405):
            # axum answers unknown routes and wrong methods with empty bodies.
            headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            return web.Response(status=e.status, headers=headers)
        raise
    except ConnectionResetError:
        raise
    except Exception as e:
        internal = InternalError(f"{type(e).__name__}: {e}")
        log_internal(request, internal, exc_info=e)
        return to_response(internal)


@web.middleware
async def database_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``anon_auth_middleware``: every matched ``/v1/database*`` request has a caller."""
    if _is_database_route(request) and request.match_info.http_exception is None:
        request[CALLER_KEY] = await request.app[GATEWAY].auth.or_anonymous(request)
    return await handler(request)


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
        middlewares=[request_metrics(stats), cors_preflight, errors, database_auth],
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
