"""A small synchronous HTTP client for the CLI (stdlib ``http.client``).

One request per connection, bearer-token auth, and the two response habits of the 1.12 CLI
(``crates/cli/src/util.rs``):

* :meth:`Response.json_or_error` — a JSON body is only trusted when ``Content-Type`` is exactly
  ``application/json``; anything else is an error carrying the body text (or, for a 2xx, the
  complaint that the server sent the wrong content type);
* :meth:`Response.raise_for_status` — a non-2xx answer becomes a :class:`CliError` with the body.

Network failures become one-line :class:`CliError` messages naming the server URL.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from orrery.cli_errors import CliError

__all__ = ["Response", "HttpClient", "segment"]

#: Generous: publishing a module runs its ``init`` before the server answers.
DEFAULT_TIMEOUT = 300.0


def segment(text: str) -> str:
    """``text`` percent-encoded as one URL path segment."""
    return quote(text, safe="-_")


@dataclass(frozen=True, slots=True)
class Response:
    """A complete HTTP response."""

    method: str
    url: str
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str | None:
        """The ``Content-Type`` header as sent (not normalised: 1.12 compares it byte for byte)."""
        return self.headers.get("content-type")

    def text(self) -> str:
        """The body as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def error_message(self) -> str:
        """``<body> (HTTP <status> from <METHOD> <url>)`` — what a failed request reports."""
        text = self.text().strip()
        where = f"HTTP {self.status} {self.reason}".rstrip() + f" from {self.method} {self.url}"
        return f"{text} ({where})" if text else where

    def raise_for_status(self) -> Response:
        """Self if 2xx, else a CliError with the body."""
        if not self.ok:
            raise CliError(self.error_message())
        return self

    def require_json(self) -> Response:
        """Self if the body is ``application/json`` (of any status); a CliError otherwise."""
        if self.content_type != "application/json":
            if self.ok:
                raise CliError(
                    f"HTTP response from url ({self.url}) was success but did not have "
                    f"content-type: application/json"
                )
            raise CliError(self.error_message())
        return self

    def json_or_error(self) -> Any:
        """The parsed body if it is ``application/json``; a CliError otherwise."""
        self.require_json()
        try:
            return json.loads(self.body)
        except ValueError:
            raise CliError(f"malformed JSON in the response from {self.method} {self.url}") from None


class HttpClient:
    """Requests against one server, optionally authenticated with a bearer token."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"Invalid server url: {base_url}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._parts = parts

    def url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """The full URL of ``path`` (already percent-encoded) with ``query``."""
        return self.base_url + path + (f"?{urlencode(query)}" if query else "")

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str | None,
        timeout: float | None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        url = self.url(path, query)
        target = self._parts.path.rstrip("/") + url[len(self.base_url) :]
        headers = {"Accept": "*/*", "User-Agent": "orrery-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        conn = self._connect(timeout)
        try:
            conn.request(
                method,
                target,
                body=body if body is not None else (b"" if method in ("POST", "PUT") else None),
                headers=headers,
            )
            resp = conn.getresponse()
        except ConnectionRefusedError:
            conn.close()
            raise CliError(
                f"cannot connect to the server at {self.base_url}: connection refused "
                f"(is it running? start one with `orrery start`)"
            ) from None
        except TimeoutError:
            conn.close()
            raise CliError(f"the server at {self.base_url} did not answer {method} {url} in time") from None
        except socket.gaierror as e:
            conn.close()
            raise CliError(f"cannot resolve the server at {self.base_url}: {e.strerror or e}") from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise CliError(f"cannot talk to the server at {self.base_url}: {reason}") from None
        return conn, resp, url

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Response:
        """Send one request and read the whole answer."""
        conn, resp, url = self._send(method, path, query, body, content_type, self.timeout)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise CliError(f"the connection to {self.base_url} broke while reading the answer: {e}") from None
        finally:
            conn.close()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return Response(method, url, resp.status, resp.reason, headers, data)

    def stream_lines(
        self, method: str, path: str, *, query: Mapping[str, str] | None = None
    ) -> Iterator[bytes]:
        """Send one request and yield the body line by line as it arrives (no timeout).

        A non-2xx answer raises CliError with its body before anything is yielded.
        """
        conn, resp, url = self._send(method, path, query, None, None, None)
        try:
            if not 200 <= resp.status < 300:
                headers = {k.lower(): v for k, v in resp.getheaders()}
                Response(method, url, resp.status, resp.reason, headers, resp.read()).raise_for_status()
            pending = b""
            while True:
                try:
                    chunk = resp.read1(65536)
                except (OSError, http.client.HTTPException) as e:
                    raise CliError(f"the connection to {self.base_url} broke while streaming: {e}") from None
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                yield from lines
            if pending:
                yield pending
        finally:
            conn.close()
