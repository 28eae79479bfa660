"""Small request/response helpers shared by the route modules.

Query-string and path parsing raise the generic 1.12 (axum) rejections: a bad path parameter is
400 ``Invalid URL: …``, a bad query string 400 ``Failed to deserialize query string: …``.
Responses set ``Content-Type`` verbatim (``application/json`` with no charset, client-api.md §0).
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.errors import JSON, TEXT, ApiError, json_body
from sats.identity import Identity

__all__ = [
    "empty",
    "json_response",
    "parse_url_identity",
    "query_bool",
    "query_choice",
    "query_hash",
    "query_int",
    "read_body",
    "text_response",
]

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_TRUE = {"true": True, "false": False}


def json_response(value: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response whose content type is exactly ``application/json``."""
    return web.Response(status=status, body=json_body(value), headers={"Content-Type": JSON, **(headers or {})})


def text_response(text: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A ``text/plain; charset=utf-8`` response."""
    return web.Response(status=status, body=text.encode(), headers={"Content-Type": TEXT, **(headers or {})})


def empty(status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A response with no body."""
    return web.Response(status=status, headers=headers)


def _query_error(message: str) -> ApiError:
    return ApiError.text(400, f"Failed to deserialize query string: {message}")


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """``?name=true|false`` (serde's bool: exactly those words)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw not in _TRUE:
        raise _query_error(f"{name}: provided string was not `true` or `false`")
    return _TRUE[raw]


def query_int(request: web.Request, name: str, *, bits: int, signed: bool = False) -> int | None:
    """``?name=<integer>`` within the range of a Rust ``u<bits>``/``i<bits>``, or None when absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not re.fullmatch(r"[+-]?[0-9]+" if signed else r"\+?[0-9]+", raw):
        raise _query_error(f"{name}: invalid digit found in string")
    value = int(raw)
    if not lo <= value <= hi:
        raise _query_error(f"{name}: number too large to fit in target type")
    return value


_HASH = re.compile(r"\+?0x([0-9a-fA-F]+)")


def query_hash(request: web.Request, name: str) -> bytes | None:
    """``?name=0x…``, a 1.12 ``Hash`` (a u256 in ``0x`` hex, as pre-publish shows it), as its 32
    little-endian bytes; None when absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw:
        raise _query_error(f"{name}: cannot parse integer from empty string")
    match = _HASH.fullmatch(raw)
    if match is None:
        raise _query_error(f"{name}: invalid digit found in string")
    value = int(match.group(1), 16)
    if value >> 256:
        raise _query_error(f"{name}: number too large to fit in target type")
    return value.to_bytes(32, "little")


def query_choice(request: web.Request, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    """``?name=<one of choices>`` (case-sensitive, like a serde enum)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw not in choices:
        expected = ", ".join(f"`{c}`" for c in choices)
        raise _query_error(f"{name}: unknown variant `{raw}`, expected one of {expected}")
    return raw


def parse_url_identity(text: str) -> Identity:
    """An identity in ``/v1/identity/:identity/…`` and ``/v1/energy/:identity``: 64 hex digits, no ``0x``."""
    if not _HEX64.match(text):
        raise ApiError.text(400, f"Invalid URL: invalid identity `{text[:80]}`: expected exactly 64 hex digits")
    return Identity.from_hex(text)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, or 413 (text) when it is larger than ``limit`` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError.text(413, f"Request body too large: {declared} bytes (the limit is {limit} bytes)")
    content = request.content
    if content.is_eof():
        # All of it is here already (a small body comes with its headers): take it without awaiting.
        body = content.read_nowait()
        if len(body) > limit:
            raise ApiError.text(413, f"Request body too large (the limit is {limit} bytes)")
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise ApiError.text(413, f"Request body too large (the limit is {limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)
