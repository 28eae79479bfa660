"""WebSocket v1 end to end (client-api.md §9–§11) against a real standalone server subprocess.

Runs over both transports (gateway → host node in-process, and over the gRPC ``Connect``
stream). The server is started with a small outgoing-queue byte limit so a client that never reads is cut off in a
bounded time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from sats import ws_v1 as ws
from tests.gateway.conftest import CHAT, MODULE_TEST
from tests.servers import REPO_ROOT, TRANSPORTS, Client, StandaloneServer

BSATN = "v1.bsatn.spacetimedb"
JSON = "v1.json.spacetimedb"
QUEUE_BYTES = 2 << 20


@pytest.fixture(scope="module", params=TRANSPORTS)
def wss(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[StandaloneServer]:
    """One server per transport for this module, with a 2 MiB outgoing queue per connection."""
    transport = str(request.param)
    root = tmp_path_factory.mktemp(f"orrery-ws-{transport}")
    old = os.environ.get("ORRERY_WS_MAX_QUEUED_BYTES")
    os.environ["ORRERY_WS_MAX_QUEUED_BYTES"] = str(QUEUE_BYTES)
    try:
        with StandaloneServer(root / "data", transport=transport) as srv:
            yield srv
    finally:
        if old is None:
            os.environ.pop("ORRERY_WS_MAX_QUEUED_BYTES", None)
        else:
            os.environ["ORRERY_WS_MAX_QUEUED_BYTES"] = old


_n = iter(range(1_000_000))


def db_name(base: str) -> str:
    return f"ws-{base}-{next(_n)}-{os.getpid()}"


def bstr(s: str) -> bytes:
    """BSATN of a String."""
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def row_texts(rows: ws.RowList) -> list[str]:
    """The ``text`` column of BSATN ``message`` rows (sender 32 bytes, sent 8, then text)."""
    out = []
    for row in rows:  # type: ignore[union-attr]
        (n,) = struct.unpack_from("<I", row, 40)
        out.append(bytes(row[44 : 44 + n]).decode())
    return out


class WsClient:
    """One WebSocket client: typed send/recv in its protocol."""

    def __init__(
        self, sock: aiohttp.ClientWebSocketResponse, response_headers: Any, json_protocol: bool
    ) -> None:
        self.sock = sock
        self.headers = response_headers
        self.json = json_protocol

    async def send(self, msg: ws.ClientMessage) -> None:
        if self.json:
            await self.sock.send_str(ws.encode_client_message_json(msg))
        else:
            await self.sock.send_bytes(ws.encode_client_message_bsatn(msg))

    async def recv(self, timeout: float = 10.0) -> ws.ServerMessage:
        m = await self.sock.receive(timeout)
        if m.type is aiohttp.WSMsgType.TEXT:
            assert self.json
            return ws.decode_server_message_json(m.data)
        assert m.type is aiohttp.WSMsgType.BINARY, (m.type, m.data, m.extra)
        assert not self.json
        return ws.decode_server_frame(m.data)

    async def recv_raw(self, timeout: float = 10.0) -> aiohttp.WSMessage:
        return await self.sock.receive(timeout)

    async def nothing(self, wait: float = 0.3) -> None:
        """No message arrives within ``wait`` seconds."""
        with pytest.raises(asyncio.TimeoutError):
            m = await self.sock.receive(wait)
            pytest.fail(f"unexpected message {m!r}")

    async def subscribe(
        self, *queries: str, query_id: int = 1, request_id: int = 1
    ) -> ws.SubscribeMultiApplied:
        await self.send(ws.SubscribeMulti(tuple(queries), request_id, ws.QueryId(query_id)))
        reply = await self.recv()
        assert isinstance(reply, ws.SubscribeMultiApplied), reply
        return reply

    async def call(self, reducer: str, args: bytes | str, request_id: int = 0, flags: int = 0) -> None:
        await self.send(ws.CallReducer(reducer, args, request_id, ws.CallReducerFlags(flags)))


@asynccontextmanager
async def connect(
    base_url: str,
    db: str,
    *,
    token: str | None = None,
    json_protocol: bool = False,
    query: str = "compression=None",
) -> AsyncIterator[WsClient]:
    url = base_url.replace("http://", "ws://") + f"/v1/database/{db}/subscribe?{query}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        sock = await session.ws_connect(url, protocols=(JSON if json_protocol else BSATN,), headers=headers)
        assert sock._response is not None
        try:
            yield WsClient(sock, sock._response.headers, json_protocol)
        finally:
            await sock.close()


async def publish(c: Client, name: str, program: bytes) -> str:
    """Publish with a fresh owner; returns the owner's token."""
    _, token = await c.new_identity()
    reply = await c.publish(name, program, token=token)
    assert reply.status == 200, reply
    return token


def _upgrade_headers(**extra: str) -> dict[str, str]:
    h = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
        "Sec-WebSocket-Protocol": BSATN,
    }
    h.update(extra)
    return h


# --- handshake --------------------------------------------------------------------------------


def test_handshake_errors(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("hs")
        await publish(c, name, CHAT)
        path = f"/v1/database/{name}/subscribe"

        reply = await c.get(
            path, headers=_upgrade_headers(**{"Sec-WebSocket-Protocol": "v2.bsatn.spacetimedb"})
        )
        assert (reply.status, reply.text) == (400, "no valid protocol selected")
        reply = await c.get(path + "?connection_id=" + "0" * 32, headers=_upgrade_headers())
        assert reply.status == 400
        assert reply.text == "Invalid connection ID: the all-zeros ConnectionId is reserved."
        reply = await c.get(path)
        assert (reply.status, reply.text) == (426, "This service requires use of the websocket protocol")
        reply = await c.get(path, headers=_upgrade_headers(**{"Sec-WebSocket-Version": "12"}))
        assert (reply.status, reply.text) == (400, "`Sec-WebSocket-Version` header did not include '13'")
        reply = await c.get(path + "?compression=gzip", headers=_upgrade_headers())
        assert reply.status == 400 and reply.text.startswith(
            "Failed to deserialize query string: compression"
        )
        reply = await c.get(path + "?light=yes", headers=_upgrade_headers())
        assert reply.status == 400
        reply = await c.get(f"/v1/database/{db_name('missing')}/subscribe", headers=_upgrade_headers())
        assert reply.status == 404
        reply = await c.post(path, headers=_upgrade_headers())
        assert (reply.status, reply.text) == (405, "Request method must be `GET`")
        reply = await c.get(path, headers=_upgrade_headers(), token="not-a-token")
        assert reply.status in (400, 401)

    wss.run(body)


def test_connection_limits_refuse_the_handshake_and_free_on_close(tmp_path_factory: pytest.TempPathFactory) -> None:
    """At most 2 connections to one database and 3 in all: the next handshake is a 503 naming the
    limit (no upgrade); a closed connection gives its slot back."""
    args = ["--max-ws-connections-per-database", "2", "--max-ws-connections", "3"]

    async def body(c: Client) -> None:
        a, b = db_name("limit-a"), db_name("limit-b")
        await publish(c, a, CHAT)
        await publish(c, b, CHAT)

        async def handshake(name: str) -> Any:
            return await c.get(f"/v1/database/{name}/subscribe", headers=_upgrade_headers())

        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(connect(c.base_url, a))
            second = await stack.enter_async_context(connect(c.base_url, a))
            for client in (first, second):  # each is connected once its IdentityToken arrives
                assert isinstance(await client.recv(), ws.IdentityToken)
            refused = await handshake(a)
            assert (refused.status, refused.text) == (
                503,
                "too many WebSocket connections to this database: 2 are open "
                "(max_ws_connections_per_database); try again later",
            )
            other = await stack.enter_async_context(connect(c.base_url, b))
            assert isinstance(await other.recv(), ws.IdentityToken)
            refused = await handshake(b)
            assert (refused.status, refused.text) == (
                503, "too many WebSocket connections: this server holds 3 (max_ws_connections); try again later"
            )
            await first.sock.close()
            # The slot comes back once the server has finished with the closed connection.
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    async with connect(c.base_url, a) as again:
                        assert isinstance(await again.recv(), ws.IdentityToken)
                    break
                except aiohttp.WSServerHandshakeError as e:
                    assert e.status == 503
                assert asyncio.get_running_loop().time() < deadline, "the closed connection's slot never came back"
                await asyncio.sleep(0.05)

    root = tmp_path_factory.mktemp("orrery-ws-limits")
    with StandaloneServer(root / "data", args=args) as srv:
        srv.run(body)


@pytest.mark.parametrize("json_protocol", [False, True])
def test_identity_token_first_and_identity_kept(wss: StandaloneServer, json_protocol: bool) -> None:
    async def body(c: Client) -> None:
        name = db_name("idt")
        await publish(c, name, CHAT)
        async with connect(wss.url, name, json_protocol=json_protocol) as a:
            first = await a.recv()
            assert isinstance(first, ws.IdentityToken)
            assert first.identity.to_hex() == a.headers["spacetime-identity"]
            assert first.token == a.headers["spacetime-identity-token"]
            assert a.headers["Sec-WebSocket-Protocol"] == (JSON if json_protocol else BSATN)
            token, identity = first.token, first.identity
        # Reconnect with the saved token (header, then ?token=): same identity, same token.
        async with connect(wss.url, name, token=token, json_protocol=json_protocol) as b:
            again = await b.recv()
            assert isinstance(again, ws.IdentityToken)
            assert (again.identity, again.token) == (identity, token)
            assert again.connection_id != first.connection_id
        cid = "0123456789abcdef0123456789abcdef"
        async with connect(wss.url, name, json_protocol=json_protocol,
                           query=f"compression=None&token={token}&connection_id={cid}") as b:  # fmt: skip
            again = await b.recv()
            assert isinstance(again, ws.IdentityToken)
            assert again.identity == identity
            assert again.connection_id.value == int(cid, 16)
        # The user row of the (now offline) identity exists once.
        rows = await c.rows(name, "SELECT * FROM user")
        assert len(rows) == 1

    wss.run(body)


# --- the chat flow ------------------------------------------------------------------------------


def test_two_clients_chat(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("chat")
        await publish(c, name, CHAT)
        async with connect(wss.url, name) as a, connect(wss.url, name) as b:
            ida = await a.recv()
            idb = await b.recv()
            assert isinstance(ida, ws.IdentityToken) and isinstance(idb, ws.IdentityToken)
            sa = await a.subscribe("SELECT * FROM message", "SELECT * FROM user", request_id=5, query_id=1)
            assert sa.request_id == 5
            await b.subscribe("SELECT * FROM message", "SELECT * FROM user")
            await a.call("set_name", bstr("alice"), request_id=7)
            for i in range(5):
                await a.call("send_message", bstr(f"hello {i}"), request_id=100 + i)

            # The caller: full updates with its request ids, in order.
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate), up
            assert isinstance(up.status, ws.Committed)
            assert up.reducer_call.reducer_name == "set_name" and up.reducer_call.request_id == 7
            assert up.reducer_call.reducer_id == 4
            assert up.caller_identity == ida.identity
            tables = {t.table_name: t for t in up.status.database_update.tables}
            assert set(tables) == {"user"}
            for i in range(5):
                up = await a.recv()
                assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Committed)
                assert up.reducer_call.request_id == 100 + i
                assert up.reducer_call.args == bstr(f"hello {i}")
                (t,) = up.status.database_update.tables
                assert t.table_name == "message"
                assert row_texts(t.updates[0].inserts) == [f"hello {i}"]  # type: ignore[union-attr]

            # The other client sees the same transactions, in the same order.
            up = await b.recv()
            assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Committed)
            assert up.reducer_call.reducer_name == "set_name"
            assert up.caller_identity == ida.identity
            seen = []
            for _ in range(5):
                up = await b.recv()
                assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Committed)
                (t,) = up.status.database_update.tables
                seen += row_texts(t.updates[0].inserts)
            assert seen == [f"hello {i}" for i in range(5)]

            # A failed reducer: only the caller hears of it.
            await a.call("send_message", bstr(""), request_id=9)
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate)
            assert up.status == ws.Failed("Messages must not be empty")
            await b.nothing()

            # An unknown reducer: Failed, reducer id 0xFFFFFFFF, empty args.
            await a.call("no_such", b"", request_id=10)
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Failed)
            assert up.reducer_call.reducer_id == 0xFFFFFFFF and up.reducer_call.reducer_name == "no_such"
            assert up.reducer_call.args == b""

            # NoSuccessNotify: the caller hears nothing of its committed call, the other one does.
            await b.call("send_message", bstr("quiet"), request_id=11, flags=1)
            up = await b.recv()
            assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Committed)
            assert up.reducer_call.request_id == 11
            (t,) = up.status.database_update.tables
            assert row_texts(t.updates[0].inserts) == ["quiet"]
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate)
            assert up.caller_identity == idb.identity

            # Unsubscribe stops updates.
            await b.send(ws.UnsubscribeMulti(12, ws.QueryId(1)))
            un = await b.recv()
            assert isinstance(un, ws.UnsubscribeMultiApplied) and un.request_id == 12
            await a.call("send_message", bstr("after"), request_id=13)
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate) and up.reducer_call.request_id == 13
            await b.nothing()

            # One-off query.
            await b.send(ws.OneOffQuery(b"\x01\x02", "SELECT * FROM message"))
            res = await b.recv()
            assert isinstance(res, ws.OneOffQueryResponse) and res.error is None
            assert res.message_id == b"\x01\x02"
            (table,) = res.tables
            assert sorted(row_texts(table.rows)) == sorted(
                [f"hello {i}" for i in range(5)] + ["quiet", "after"]
            )
            await b.send(ws.OneOffQuery(b"\x03", "SELECT * FROM nope"))
            res = await b.recv()
            assert isinstance(res, ws.OneOffQueryResponse) and res.error and res.tables == ()

            # Procedures do not exist in these modules.
            await b.send(ws.CallProcedure("p", b"", 14))
            pr = await b.recv()
            assert isinstance(pr, ws.ProcedureResult)
            assert pr.status == ws.InternalError("No such procedure") and pr.request_id == 14

    wss.run(body)


def test_light_mode_and_caller_with_no_matching_rows(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("light")
        await publish(c, name, CHAT)
        async with (
            connect(wss.url, name, query="compression=None&light=true") as a,
            connect(wss.url, name) as b,
        ):
            await a.recv()
            await b.recv()
            await a.subscribe("SELECT * FROM message")
            # b holds no subscription: its own call still answers with a full, empty update.
            await b.call("send_message", bstr("hi"), request_id=3)
            up = await b.recv()
            assert isinstance(up, ws.TransactionUpdate) and up.status == ws.Committed(ws.DatabaseUpdate(()))
            light = await a.recv()
            assert isinstance(light, ws.TransactionUpdateLight) and light.request_id == 3
            (t,) = light.update.tables
            assert row_texts(t.updates[0].inserts) == ["hi"]
            # The light caller still gets a full TransactionUpdate for its own call.
            await a.call("send_message", bstr("mine"), request_id=4)
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate) and up.reducer_call.request_id == 4

    wss.run(body)


def test_json_protocol(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("json")
        await publish(c, name, CHAT)
        async with connect(wss.url, name, json_protocol=True) as a, connect(wss.url, name) as b:
            await a.recv()
            await b.recv()
            sub = await a.subscribe("SELECT * FROM message")
            assert sub.update.tables == ()
            await b.subscribe("SELECT * FROM message")
            await a.call("send_message", '["from json"]', request_id=2)
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Committed)
            assert up.reducer_call.args == '["from json"]'
            (t,) = up.status.database_update.tables
            (row,) = t.updates[0].inserts  # type: ignore[misc]
            assert "from json" in row
            other = await b.recv()
            assert isinstance(other, ws.TransactionUpdate) and isinstance(other.status, ws.Committed)
            assert other.reducer_call.args == bstr("from json")
            # A BSATN call seen by the JSON client: args as JSON text.
            await b.call("send_message", bstr("from bsatn"), request_id=3)
            await b.recv()
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate)
            assert json.loads(up.reducer_call.args) == ["from bsatn"]  # type: ignore[arg-type]
            # A binary frame on a JSON connection is decoded as BSATN.
            await a.sock.send_bytes(
                ws.encode_client_message_bsatn(ws.OneOffQuery(b"\x07", "SELECT * FROM message"))
            )
            res = await a.recv()
            assert isinstance(res, ws.OneOffQueryResponse) and len(res.tables[0].rows) == 2

    wss.run(body)


@pytest.mark.parametrize("compression", ["None", "Gzip", "Brotli"])
def test_compression(wss: StandaloneServer, compression: str) -> None:
    async def body(c: Client) -> None:
        name = db_name("cmp")
        await publish(c, name, CHAT)
        async with connect(wss.url, name, query=f"compression={compression}") as a:
            await a.recv()
            await a.subscribe("SELECT * FROM message")
            text = "x" * 3000
            await a.call("send_message", bstr(text))
            m = await a.recv_raw()
            assert m.type is aiohttp.WSMsgType.BINARY
            assert m.data[0] == {"None": 0, "Brotli": 1, "Gzip": 2}[compression]
            up = ws.decode_server_frame(m.data)
            assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Committed)
            (t,) = up.status.database_update.tables
            assert row_texts(t.updates[0].inserts) == [text]
            # Small messages are never compressed.
            await a.call("send_message", bstr("s"))
            m = await a.recv_raw()
            assert m.data[0] == 0

    wss.run(body)


def test_malformed_message_closes_1011(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("bad")
        await publish(c, name, CHAT)
        async with connect(wss.url, name) as a:
            await a.recv()
            await a.sock.send_bytes(b"\x63garbage")
            m = await a.recv_raw()
            assert m.type is aiohttp.WSMsgType.CLOSE
            assert m.data == 1011 and m.extra

    wss.run(body)


def _close_reason_of(decode: Any, frame: bytes | str) -> str:
    """The 1011 reason the server gives for a frame ``decode`` rejects (as Connection.handle words it)."""
    try:
        decode(frame)
    except ws.WsProtocolError as e:
        return e.close_reason
    except Exception as e:  # noqa: BLE001 - any decoding failure is reported the same way
        return ws.WsProtocolError(str(e)).close_reason
    raise AssertionError(f"{frame!r} decodes")


def test_frame_type_not_content_picks_the_decoder(wss: StandaloneServer) -> None:
    """A text frame is JSON and a binary frame BSATN, whatever the bytes look like (§9): a BSATN
    message sent as text (its first byte a BSATN tag) and a JSON message sent as binary are both
    malformed, on both transports, and neither is run."""
    legacy = ws.Subscribe(("SELECT * FROM message",), 1)
    bsatn_as_text = ws.encode_client_message_bsatn(legacy).decode()  # ASCII: "\x01\x01\x00…"
    assert bsatn_as_text[0] == "\x01"
    json_as_binary = ws.encode_client_message_json(legacy).encode()
    cases: list[tuple[bytes | str, str]] = [
        (bsatn_as_text, _close_reason_of(ws.decode_client_message_json, bsatn_as_text)),
        (json_as_binary, _close_reason_of(ws.decode_client_message_bsatn, json_as_binary)),
    ]

    async def body(c: Client) -> None:
        name = db_name("frametype")
        await publish(c, name, CHAT)
        for json_protocol in (False, True):
            for frame, reason in cases:
                async with connect(wss.url, name, json_protocol=json_protocol) as a:
                    assert isinstance(await a.recv(), ws.IdentityToken)
                    if isinstance(frame, str):
                        await a.sock.send_str(frame)
                    else:
                        await a.sock.send_bytes(frame)
                    m = await a.recv_raw()
                    assert m.type is aiohttp.WSMsgType.CLOSE, (json_protocol, frame, m)
                    assert (m.data, m.extra) == (1011, reason)
            # The same messages in the right kind of frame are answered.
            async with connect(wss.url, name, json_protocol=json_protocol) as a:
                assert isinstance(await a.recv(), ws.IdentityToken)
                await a.sock.send_bytes(ws.encode_client_message_bsatn(legacy))
                assert isinstance(await a.recv(), ws.InitialSubscription)
                await a.sock.send_str(ws.encode_client_message_json(legacy))
                assert isinstance(await a.recv(), ws.InitialSubscription)

    wss.run(body)


# --- lifecycle --------------------------------------------------------------------------------


def test_client_connected_rejection_drops_socket(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("reject")
        owner = await publish(c, name, MODULE_TEST)
        reply = await c.call(name, "set_kv", "reject_connections", "1", token=owner)
        assert reply.status == 200, reply
        before = await c.rows(name, "SELECT kind FROM lifecycle_event")
        async with connect(wss.url, name) as a:
            m = await a.recv_raw()
            assert m.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
            assert m.type is not aiohttp.WSMsgType.CLOSE  # no close frame
        # client_connected failed (rolled back) and client_disconnected never ran.
        assert await c.rows(name, "SELECT kind FROM lifecycle_event") == before

    wss.run(body)


CHILD = """
import asyncio, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(sys.argv[1], protocols=("v1.bsatn.spacetimedb",))
        await ws.receive()
        print("connected", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_killed_client_runs_client_disconnected(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("kill")
        await publish(c, name, MODULE_TEST)
        url = wss.url.replace("http://", "ws://") + f"/v1/database/{name}/subscribe?compression=None"
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            assert line.strip() == "connected"
            assert await c.rows(name, "SELECT kind FROM lifecycle_event WHERE kind = 'connect'") == [
                ["connect"]
            ]
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            deadline = time.monotonic() + 10
            while True:
                rows = await c.rows(name, "SELECT kind FROM lifecycle_event WHERE kind = 'disconnect'")
                if rows or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert rows == [["disconnect"]]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    wss.run(body)


def test_slow_consumer_is_cut_off_fast_one_keeps_receiving(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("slow")
        owner = await publish(c, name, MODULE_TEST)
        # The slow client: a raw socket with a small receive buffer that subscribes and then
        # never reads again.
        host, port = wss.address.rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(b"slow-client-key!").decode()
        writer.write(
            f"GET /v1/database/{name}/subscribe?compression=None HTTP/1.1\r\nHost: {wss.address}\r\n"
            f"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {BSATN}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        payload = ws.encode_client_message_bsatn(ws.SubscribeMulti(("SELECT * FROM kv",), 1, ws.QueryId(1)))
        assert len(payload) < 126
        writer.write(bytes([0x82, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)  # masked with zeros
        await writer.drain()
        try:
            async with connect(wss.url, name, token=owner) as fast:
                await fast.recv()
                await fast.subscribe("SELECT * FROM kv")
                size = 200_000
                start = time.monotonic()
                i = 0
                cut = False
                while time.monotonic() - start < 60 and i < 2000:
                    # A different size each time: rewriting a row with the same value is no change.
                    await fast.call("big_row", bstr(f"k{i % 4}") + struct.pack("<I", size + i), request_id=i)
                    up = await fast.recv()
                    assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Committed), up
                    i += 1
                    if i % 10 == 0:
                        rows = await c.rows(
                            name, "SELECT kind FROM lifecycle_event WHERE kind = 'disconnect'"
                        )
                        if rows:
                            cut = True
                            break
                assert cut, f"the slow client was never cut off after {i} commits"
                # It took far fewer commits than the data a kernel could buffer without limit.
                assert i * size < 200 * QUEUE_BYTES
                # The fast client keeps going after the cut.
                await fast.call("big_row", bstr("after") + struct.pack("<I", 10), request_id=9999)
                up = await fast.recv()
                assert isinstance(up, ws.TransactionUpdate) and up.reducer_call.request_id == 9999
        finally:
            writer.close()

    wss.run(body)


def test_database_deleted_closes_1001(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("del")
        owner = await publish(c, name, CHAT)
        async with connect(wss.url, name) as a:
            await a.recv()
            reply = await c.delete(f"/v1/database/{name}", token=owner)
            assert reply.status == 200, reply
            m = await a.recv_raw()
            assert m.type is aiohttp.WSMsgType.CLOSE
            assert (m.data, m.extra) == (1001, "module exited")

    wss.run(body)


def test_legacy_subscribe_single_confirmed_and_sql_dml(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("legacy")
        owner = await publish(c, name, MODULE_TEST)
        async with connect(wss.url, name, query="compression=None&confirmed=true") as a:
            await a.recv()
            # Legacy Subscribe → InitialSubscription; a bad query → failed TransactionUpdate "<none>".
            await a.send(ws.Subscribe(("SELECT * FROM kv",), 3))
            init = await a.recv()
            assert isinstance(init, ws.InitialSubscription) and init.request_id == 3
            await a.send(ws.Subscribe(("SELECT * FROM nope",), 4))
            bad = await a.recv()
            assert isinstance(bad, ws.TransactionUpdate) and isinstance(bad.status, ws.Failed)
            assert bad.reducer_call.reducer_name == "<none>"
            # SubscribeSingle / Unsubscribe.
            await a.send(ws.SubscribeSingle("SELECT * FROM counter", 5, ws.QueryId(9)))
            applied = await a.recv()
            assert isinstance(applied, ws.SubscribeApplied) and applied.query_id == ws.QueryId(9)
            await a.send(ws.Unsubscribe(6, ws.QueryId(9)))
            un = await a.recv()
            assert isinstance(un, ws.UnsubscribeApplied) and un.request_id == 6
            # SQL DML broadcasts a TransactionUpdate with no reducer (held until durable: confirmed).
            reply = await c.sql(name, "INSERT INTO kv (key, value) VALUES ('a', 'b')", token=owner)
            assert reply.status == 200, reply
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Committed)
            assert (up.reducer_call.reducer_name, up.reducer_call.reducer_id) == ("", 0xFFFFFFFF)
            assert up.caller_connection_id.value == 0
            (t,) = up.status.database_update.tables
            assert t.table_name == "kv" and len(t.updates[0].inserts) == 1
            # An HTTP /call broadcasts too (request id 0).
            reply = await c.call(name, "set_kv", "c", "d", token=owner)
            assert reply.status == 200, reply
            up = await a.recv()
            assert isinstance(up, ws.TransactionUpdate) and up.reducer_call.reducer_name == "set_kv"
            assert up.reducer_call.request_id == 0

    wss.run(body)


def test_client_ping_gets_pong(wss: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("ping")
        await publish(c, name, CHAT)
        url = wss.url.replace("http://", "ws://") + f"/v1/database/{name}/subscribe?compression=None"
        async with aiohttp.ClientSession() as session:
            sock = await session.ws_connect(url, protocols=(BSATN,), autoping=False)
            first = await sock.receive(10)
            assert isinstance(ws.decode_server_frame(first.data), ws.IdentityToken)
            await sock.ping(b"hi")
            pong = await sock.receive(10)
            assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"hi")
            await sock.close()

    wss.run(body)


def test_keepalive_pings_once_until_answered_and_ends_when_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import routes_ws

    monkeypatch.setattr(routes_ws, "PING_INTERVAL", 0.01)
    monkeypatch.setattr(routes_ws, "IDLE_TIMEOUT", 0.2)

    class FakeWs:
        pings = 0

        async def ping(self) -> None:
            self.pings += 1

    async def main() -> None:
        fake = FakeWs()
        live = routes_ws._Liveness()
        start = time.monotonic()
        await asyncio.wait_for(routes_ws._keepalive(fake, live), 5)  # type: ignore[arg-type]
        # Silent client: one ping (never answered), then dropped after the idle timeout.
        assert fake.pings == 1 and time.monotonic() - start >= 0.2

    asyncio.run(main())
