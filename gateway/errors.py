"""The one error type of the public API, and how it becomes an HTTP response.

Routes and backends raise :class:`ApiError` with the exact status, body and content type that
SpacetimeDB 1.12 answers with (``client-api.md``); :func:`error_middleware` in
:mod:`gateway.app` turns it (and :class:`gateway.auth.AuthError`) into a response in one place.
Nothing here touches sockets, so the mapping is unit-tested directly.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.auth import AuthError
from sats.json import dumps

#: The content type of every JSON body. The 1.12 CLI compares it byte for byte: no charset.
JSON = "application/json"
#: Plain-text bodies, as axum sends a ``String``.
TEXT = "text/plain; charset=utf-8"
#: The response header naming the request an internal error happened in (also in its body).
REQUEST_ID_HEADER = "x-request-id"

__all__ = [
    "JSON",
    "REQUEST_ID_HEADER",
    "TEXT",
    "ApiError",
    "InternalError",
    "failure_response",
    "from_auth_error",
    "json_body",
    "log_internal",
    "log_internal_at",
    "reason",
    "to_response",
]

log = logging.getLogger(__name__)


def json_body(value: Any) -> bytes:
    """Compact JSON bytes (big integers exact), the way the 1.12 server serialises."""
    return dumps(value).encode()


class ApiError(Exception):
    """A request that ends with ``status`` and ``body`` (bytes) of ``content_type`` (None: empty)."""

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        super().__init__(f"{status}: {body[:200]!r}")
        self.status = status
        self.body = body
        self.content_type = content_type
        #: Extra response headers (e.g. the energy/duration headers of a failed reducer call).
        self.headers: dict[str, str] = dict(headers or {})
        #: What only the server log may see (an :class:`InternalError`'s exception); None: nothing.
        self.detail = detail

    @classmethod
    def text(cls, status: int, message: str, headers: Mapping[str, str] | None = None) -> ApiError:
        """An error with a plain-text body (most 1.12 errors)."""
        return cls(status, message.encode(), TEXT, headers)

    @classmethod
    def json(cls, status: int, value: Any) -> ApiError:
        """An error with a JSON body (e.g. ``{"PermissionDenied":…}``)."""
        return cls(status, json_body(value), JSON)

    @classmethod
    def empty(cls, status: int) -> ApiError:
        """An error with no body (e.g. 404 for unknown routes, 400 from identity verify)."""
        return cls(status)

    @property
    def message(self) -> str:
        """The body as text (for logs and tests)."""
        return self.body.decode("utf-8", errors="replace")


class InternalError(ApiError):
    """A failure the caller can do nothing about (a bug, a broken invariant): 500 whose body and
    ``x-request-id`` header name a fresh request id, and nothing else. ``detail`` (the exception)
    goes only to the server log, which the error middleware writes with the same id: exception
    text can hold paths, keys or other tenants' data."""

    def __init__(self, detail: str) -> None:
        self.request_id = uuid.uuid4().hex
        body = f"internal error (request id {self.request_id}); the server log has the details"
        super().__init__(500, body.encode(), TEXT, {REQUEST_ID_HEADER: self.request_id}, detail=detail)


def log_internal(request: web.Request, error: ApiError, exc_info: BaseException | None = None) -> None:
    """Log what only the server may see of ``error`` under its request id (nothing when it has no
    ``detail``); ``exc_info``: the exception whose traceback goes with it."""
    log_internal_at(request.method, request.path, error, exc_info)


def log_internal_at(method: str, path: str, error: ApiError, exc_info: BaseException | None = None) -> None:
    """:func:`log_internal` for a request known by its method and path."""
    if error.detail is None:
        return
    log.error(
        "internal error request_id=%s method=%s path=%s: %s",
        error.headers.get(REQUEST_ID_HEADER, "-"), method, path, error.detail, exc_info=exc_info,
    )  # fmt: skip


def failure_response(method: str, path: str, e: Exception) -> web.Response:
    """The response a request's failure maps to: an :class:`ApiError` as it says (its detail
    logged), anything else a 500 naming a request id (:class:`InternalError`, its details only in
    this process's log)."""
    if isinstance(e, ApiError):
        log_internal_at(method, path, e)
        return to_response(e)
    internal = InternalError(f"{type(e).__name__}: {e}")
    log_internal_at(method, path, internal, exc_info=e)
    return to_response(internal)


def to_response(error: ApiError) -> web.Response:
    """The HTTP response for an error (the one place statuses and bodies become HTTP)."""
    headers = dict(error.headers)
    if error.content_type is not None:
        headers["Content-Type"] = error.content_type
    return web.Response(status=error.status, body=error.body, headers=headers, reason=reason(error.status))


def from_auth_error(error: AuthError) -> ApiError:
    """A credentials failure (client-api.md §2): 400 malformed header, 401 bad or missing token."""
    return ApiError.text(error.status, error.message)


def reason(status: int) -> str | None:
    """A reason phrase; 530 has no standard one and aiohttp needs one (client-api.md §13.6)."""
    return "Reducer Failed" if status == 530 else None
