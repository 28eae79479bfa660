"""The HTTP target: random requests to a real ``orrery.standalone`` on 127.0.0.1.

Requests are built from the route table outward — a known route with a fuzzed name, reducer,
query string, body or token is what gets past the router into handlers — plus some that are
random all the way. Each goes over a connection of its own (so a dropped connection is this
request's fault, not a stale keep-alive), and the property is: a response arrives, its status
is below 500, and the server process is still running. The harness publishes quickstart-chat
once, owned by a token the fuzzer sometimes presents, and publishes it again whenever a fuzzed
request deleted it, so that the owner-only paths stay reachable.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

from tests.fuzz.inputs import any_json, mutated_bytes
from tests.modules_harness import MODULES_DIR
from tests.servers import Client, StandaloneServer

__all__ = ["DB_NAME", "LiveServer", "Request", "http_harness", "http_requests", "live_server"]

#: The database the harness keeps published, owned by the owner token.
DB_NAME = "fuzz-chat"
CHAT = (MODULES_DIR / "quickstart-chat" / "quickstart-chat.wasm").read_bytes()

#: Placeholders the strategy puts where the harness substitutes live values.
OWNER_TOKEN = "{owner-token}"
DB_IDENTITY = "{db-identity}"
OWNER_IDENTITY = "{owner-identity}"
CHAT_WASM = b"{chat-wasm}"


@dataclass(frozen=True)
class Request:
    """One fuzzed request, with placeholders for the live token and identities."""

    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def describe(self) -> str:
        """The request as a reproducer would need it."""
        target = self.path + ("?" + urlencode(self.query) if self.query else "")
        return f"{self.method} {target} headers={self.headers!r} body={self.body[:200]!r}"


_SEGMENT_CHARS = st.characters(codec="utf-8")  # any code point UTF-8 can carry (no lone surrogates)
#: A path segment, percent-encoded as a client would send it (long enough to overflow a metadata
#: key: names have a length limit with a 400 of their own).
_SEGMENT = st.one_of(
    st.text(_SEGMENT_CHARS, min_size=1, max_size=12),
    st.text(_SEGMENT_CHARS, min_size=1, max_size=600),
    st.sampled_from(["..", ".", "%", "%zz", "0x", "0" * 64, "f" * 64, "-", "_", "a" * 64]),
).map(lambda s: quote(s, safe=""))

_DB = st.one_of(st.sampled_from([DB_NAME, DB_IDENTITY, "missing-db", "Fuzz-Chat", "fuzz.chat"]), _SEGMENT)
_IDENTITY = st.one_of(st.sampled_from([OWNER_IDENTITY, DB_IDENTITY, "00" * 32, "0x" + "ab" * 32]), _SEGMENT)
_REDUCERS = st.one_of(
    st.sampled_from(["set_name", "send_message", "init", "identity_connected", "identity_disconnected"]), _SEGMENT
)


@st.composite
def _database_path(draw: st.DrawFn) -> str:
    db = draw(_DB)
    suffix = draw(
        st.one_of(
            st.sampled_from(
                ["", "/identity", "/names", "/unstable/timestamp", "/schema", "/sql", "/logs", "/subscribe",
                 "/pre_publish", "/reset", "/"]
            ),  # fmt: skip
            _REDUCERS.map(lambda r: f"/call/{r}"),
            _SEGMENT.map(lambda s: f"/{s}"),
        )
    )
    return f"/v1/database/{db}{suffix}"


@st.composite
def _other_path(draw: st.DrawFn) -> str:
    identity = draw(_IDENTITY)
    return draw(
        st.sampled_from(
            ["/v1/database", "/v1/identity", "/v1/identity/public-key", "/v1/identity/websocket-token",
             f"/v1/identity/{identity}/verify", f"/v1/identity/{identity}/databases", "/v1/ping", "/v1/health",
             "/v1/metrics", "/v1/prometheus/sd_config", f"/v1/energy/{identity}", "/healthz", "/readyz", "/",
             "/v1", "/v2/database"]
        )  # fmt: skip
    )


_QUERY_KEYS = st.sampled_from(
    ["num_lines", "follow", "version", "clear", "host_type", "num_replicas", "policy", "token", "parent",
     "style", "confirmed", "compression", "light", "connection_id", "amount"]
)  # fmt: skip
_QUERY_VALUES = st.one_of(
    st.sampled_from(
        ["", "true", "false", "1", "0", "-1", "9", "10", "18446744073709551616", "Wasm", "Js", "BreakClients",
         "Compatible", "Gzip", "Brotli", "None", "NoColor", "0" * 32, "0" * 64, "ff" * 32]
    ),  # fmt: skip
    st.text(_SEGMENT_CHARS, max_size=12),
)

_TOKENS = st.sampled_from(
    [f"Bearer {OWNER_TOKEN}", "Bearer ", "Bearer x.y.z", "Bearer eyJhbGciOiJFUzI1NiJ9.e30.AAAA", "Basic Zm9vOmJhcg==",
     "bearer", "Token abc", f"Bearer {OWNER_TOKEN}x"]
)  # fmt: skip
_CONTENT_TYPES = st.sampled_from(
    ["application/json", "text/plain", "application/wasm", "application/octet-stream", "application/json; charset=latin1",
     "multipart/form-data", "*/*"]
)  # fmt: skip
_HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@st.composite
def _headers(draw: st.DrawFn) -> dict[str, str]:
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["Authorization"] = draw(st.one_of(_TOKENS, _HEADER_VALUE))
    if draw(st.booleans()):
        headers["Content-Type"] = draw(st.one_of(_CONTENT_TYPES, _HEADER_VALUE))
    if draw(st.integers(0, 4)) == 0:
        # A WebSocket handshake, whole or in part.
        headers.update(
            draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "Connection": st.sampled_from(["Upgrade", "keep-alive, Upgrade", "close"]),
                        "Upgrade": st.sampled_from(["websocket", "h2c"]),
                        "Sec-WebSocket-Version": st.sampled_from(["13", "8", ""]),
                        "Sec-WebSocket-Key": st.sampled_from(["dGhlIHNhbXBsZSBub25jZQ==", "", "x"]),
                        "Sec-WebSocket-Protocol": st.sampled_from(
                            ["v1.bsatn.spacetimedb", "v1.json.spacetimedb", "v2.bsatn.spacetimedb", "chat"]
                        ),
                    },
                )
            )
        )
    if draw(st.integers(0, 4)) == 0:
        name = draw(st.text(st.characters(min_codepoint=0x41, max_codepoint=0x7A, exclude_characters="[\\]^`"),
                            min_size=1, max_size=12))  # fmt: skip
        headers[name] = draw(_HEADER_VALUE)
    return headers


def _bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(b""),
        st.binary(max_size=64),
        any_json().map(lambda v: json.dumps(v).encode()),
        st.sampled_from([b'["Alice"]', b'["hi"]', b"[]", b"{}", b"SELECT * FROM user", b"SELECT * FROM message",
                         b"DELETE FROM user", b"new-name", b'["a","b"]'])  # fmt: skip
        .flatmap(lambda b: mutated_bytes(st.just(b), max_mutations=2)),
        st.just(CHAT_WASM),
    )


#: Methods as clients send them, and a few only a fuzzer would.
_METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    st.sampled_from(["TRACE", "CONNECT", "PROPFIND", "get", "X"]),
)


#: Routes whose body is a module: publish, reset, pre_publish.
_MODULE_ROUTE = re.compile(r"/v1/database(/[^/]+(/reset|/pre_publish)?)?")


def _takes_module(method: str, path: str) -> bool:
    """Whether the request's body is read as a wasm module."""
    return method in ("PUT", "POST") and _MODULE_ROUTE.fullmatch(path) is not None


@st.composite
def _request(draw: st.DrawFn) -> Request:
    method = draw(_METHODS)
    path = draw(st.one_of(_database_path(), _database_path(), _other_path()))
    query = draw(st.lists(st.tuples(_QUERY_KEYS | st.text(_SEGMENT_CHARS, max_size=8), _QUERY_VALUES), max_size=4))
    # Module routes get the real module, none (reset: "keep the current one"), a truncated or
    # corrupted copy of it, or any body: an invalid program is a 400 with the reason.
    if _takes_module(method, path):
        cut = draw(st.integers(0, len(CHAT_WASM)))
        flip = draw(st.integers(0, len(CHAT_WASM) - 1))
        corrupted = CHAT_WASM[:flip] + bytes([CHAT_WASM[flip] ^ 0xFF]) + CHAT_WASM[flip + 1 :]
        body = draw(st.sampled_from([CHAT_WASM, b"", CHAT_WASM[:cut], corrupted]) | _bodies())
    else:
        body = draw(_bodies())
    return Request(method, path, query, draw(_headers()), body)


def http_requests() -> st.SearchStrategy[Request]:
    """Requests with placeholders; the harness fills in the live token and identities."""
    return _request()


class LiveServer:
    """The running server, its owner and database, and how a placeholder becomes a value."""

    def __init__(self, server: StandaloneServer) -> None:
        self.server = server
        self.owner_identity = ""
        self.owner_token = ""
        self.db_identity = ""

    def publish(self) -> None:
        """(Re)create ``DB_NAME`` from quickstart-chat, owned by the owner token."""

        async def body(c: Client) -> None:
            if not self.owner_token:
                self.owner_identity, self.owner_token = await c.new_identity()
            reply = await c.publish(DB_NAME, CHAT, token=self.owner_token)
            assert reply.status == 200, reply
            self.db_identity = reply.json()["Success"]["database_identity"]

        self.server.run(body)

    def fill(self, text: str) -> str:
        """``text`` with every placeholder replaced by its live value."""
        return (
            text.replace(OWNER_TOKEN, self.owner_token)
            .replace(DB_IDENTITY, self.db_identity)
            .replace(OWNER_IDENTITY, self.owner_identity)
        )

    def send(self, req: Request) -> int:
        """Send one request on a connection of its own; the status (the body, unless streamed, read)."""
        host, port = self.server.address.rsplit(":", 1)
        target = self.fill(req.path) + ("?" + urlencode([(k, self.fill(v)) for k, v in req.query]) if req.query else "")
        headers = {k: self.fill(v) for k, v in req.headers.items()}
        body = CHAT if req.body == CHAT_WASM else req.body
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            conn.request(req.method, target, body=body, headers=headers)
            response = conn.getresponse()
            # A followed log or an upgraded socket never ends: its status is all there is to check.
            if not (response.status == 101 or "/logs" in req.path):
                response.read()
            return response.status
        finally:
            conn.close()

    def check(self, req: Request) -> None:
        """Send ``req``: a response must arrive, below 500, and the server must still run."""
        try:
            status = self.send(req)
        except (http.client.HTTPException, OSError) as e:
            raise AssertionError(f"no response to {req.describe()}: {e!r}\n{self.log_tail()}") from None
        self.assert_running(req.describe())
        assert status < 500, f"{status} for {req.describe()}\n{self.log_tail()}"
        if req.method == "DELETE" and status == 200 and "/v1/database/" in req.path:
            self._republish_if_gone()

    def assert_running(self, after: str) -> None:
        """Fail (with the log) if the server process has exited."""
        assert self.server.proc is not None and self.server.proc.poll() is None, (
            f"the server exited after {after}\n{self.log_tail()}"
        )

    def _republish_if_gone(self) -> None:
        async def exists(c: Client) -> bool:
            return (await c.get(f"/v1/database/{DB_NAME}")).status == 200

        if not self.server.run(exists):
            self.publish()

    def log_tail(self) -> str:
        """The end of the server's log, for failure messages."""
        return "server log (tail):\n" + self.server.log_text()[-3000:]


@contextlib.contextmanager
def live_server(workdir: Path) -> Iterator[LiveServer]:
    """A standalone server with ``DB_NAME`` published; after the run it must still answer ping."""
    with StandaloneServer(workdir / "data", log_dir=workdir) as server:
        live = LiveServer(server)
        live.publish()
        yield live

        async def ping(c: Client) -> int:
            return (await c.get("/v1/ping")).status

        assert server.run(ping) == 200, live.log_tail()


@contextlib.contextmanager
def http_harness(workdir: Path) -> Iterator[Callable[[Request], None]]:
    """:func:`live_server`, each request checked by :meth:`LiveServer.check`."""
    with live_server(workdir) as live:
        yield live.check
