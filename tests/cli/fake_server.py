"""A canned-response HTTP server on 127.0.0.1 for CLI tests (no Orrery behind it).

Routes map ``(METHOD, path)`` to a :class:`Canned` answer or to a function of the
:class:`Recorded` request returning one; every request is recorded for assertions. Unknown
routes answer 404 with an empty body, like the real gateway's router.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Canned:
    """One answer: status, content type and body (chunks are sent as chunked encoding)."""

    status: int = 200
    body: bytes | list[bytes] = b""
    content_type: str | None = None

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> Canned:
        """``application/json`` exactly, as the gateway sends it."""
        return cls(status, json.dumps(obj).encode(), "application/json")

    @classmethod
    def text(cls, text: str, status: int = 200) -> Canned:
        """A plain-text answer."""
        return cls(status, text.encode(), "text/plain; charset=utf-8")


@dataclass(frozen=True)
class Recorded:
    """A request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


Route = Canned | Callable[[Recorded], Canned]


@dataclass
class FakeServer:
    """The running server: its base URL, its routes (mutable) and the requests seen so far."""

    url: str
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def paths(self) -> list[str]:
        """``"METHOD /path"`` of every request, in order."""
        return [f"{r.method} {r.path}" for r in self.requests]


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            rec = Recorded(
                self.command,
                parts.path,
                dict(parse_qsl(parts.query)),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            server.requests.append(rec)
            route = server.routes.get((self.command, parts.path))
            answer = Canned(404) if route is None else route if isinstance(route, Canned) else route(rec)
            self.send_response(answer.status)
            if answer.content_type:
                self.send_header("Content-Type", answer.content_type)
            if isinstance(answer.body, list):
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in answer.body:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler


@contextmanager
def fake_server() -> Iterator[FakeServer]:
    """Start a FakeServer on a free port of 127.0.0.1; stop it on exit."""
    state = FakeServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
