"""HTTP ``/call`` read by gateway/fast_calls.py instead of aiohttp: the same answers, the same
connection semantics, and every other request still aiohttp's.

The reference for "the same answer" is aiohttp's own route on the same server: a request whose
body is sent chunked is one the fast reader declines, so it reaches the route through aiohttp
(the connection is handed over), and both answers must agree but for ``Date`` and header order.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from gateway.fast_calls import read_head
from tests.gateway.conftest import TRANSFER
from tests.servers import Client, StandaloneServer

MAX_BODY = 1024 * 1024


class Answer:
    """One HTTP response as read off the socket."""

    def __init__(self, status_line: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status_line = status_line
        self.headers = headers
        self.body = body

    @property
    def status(self) -> int:
        return int(self.status_line.split(" ")[1])

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(found) <= 1, f"{name} appears {len(found)} times"
        return found[0] if found else None

    def comparable(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """All but ``Date`` (which moves) and the order of the headers."""
        return (
            self.status_line,
            sorted((k.lower(), v) for k, v in self.headers if k.lower() != "date"),
            self.body,
        )


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode()
    lines = head[:-4].split("\r\n")
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    answer = Answer(lines[0], headers, b"")
    length = answer.header("Content-Length")
    assert length is not None, f"no Content-Length in {head!r}"
    answer.body = await asyncio.wait_for(reader.readexactly(int(length)), 30)
    return answer


async def exchange(server: StandaloneServer, sends: list[bytes], answers: int) -> tuple[list[Answer], bytes]:
    """Send ``sends`` (one write each, in order) on one connection, read ``answers`` responses;
    then what the connection still yields before it closes or goes quiet for 0.3 s."""
    host, port = server.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for data in sends:
            writer.write(data)
            await writer.drain()
        got = [await read_answer(reader) for _ in range(answers)]
        try:
            rest = await asyncio.wait_for(reader.read(65536), 0.3)
        except TimeoutError:
            rest = b"(open)"
        return got, rest
    finally:
        writer.close()


def call_request(
    db: str,
    reducer: str,
    body: bytes,
    token: str | None,
    *,
    extra: str = "",
    content_type: str = "application/json",
) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return (
        f"POST /v1/database/{db}/call/{reducer} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n{auth}"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def chunked_request(db: str, reducer: str, body: bytes, token: str) -> bytes:
    """The same call with a chunked body: aiohttp's route answers it."""
    return (
        (
            f"POST /v1/database/{db}/call/{reducer} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n"
        ).encode()
        + body
        + b"\r\n0\r\n\r\n"
    )


@pytest.fixture
def transfer_db(server: StandaloneServer, name: str) -> tuple[str, str]:
    """A published, seeded ``transfer`` database and its owner's token."""

    async def setup() -> str:
        async with Client(server.url) as c:
            _, token = await c.new_identity()
            assert (await c.publish(name, TRANSFER, token=token)).status == 200
            assert (await c.call(name, "seed", 10, 1000, token=token)).status == 200
        return token

    return name, asyncio.run(setup())


async def balances(server: StandaloneServer, db: str, token: str) -> list[int]:
    async with Client(server.url) as c:
        reply = await c.sql(db, "SELECT * FROM accounts", token=token)
        assert reply.status == 200, reply.text
        rows = reply.json()[0]["rows"]
        return [row[1] for row in sorted(rows)]


@pytest.mark.parametrize(
    ("reducer", "body", "status"),
    [
        ("transfer", b"[1,2,5]", 200),
        ("transfer", b"[1,2,1000000]", 530),  # the reducer fails: its message, energy and duration
        ("transfer", b"[1,2]", 400),  # arguments that do not fit
        ("transfer", b"[1,2", 400),  # not JSON
        ("nosuch", b"[]", 404),
        ("transfer", b"\xff\xfe", 400),  # not UTF-8
    ],
)
def test_answers_match_aiohttps_route(
    server: StandaloneServer, transfer_db: tuple[str, str], reducer: str, body: bytes, status: int
) -> None:
    async def check() -> None:
        db, token = transfer_db
        (fast, slow), _ = await exchange(
            server, [call_request(db, reducer, body, token), chunked_request(db, reducer, body, token)], 2
        )
        assert fast.status == status, fast.body
        if status in (200, 530):  # energy and duration differ from one run of the reducer to the next
            for answer in (fast, slow):
                answer.headers = [(k, "N" if k.startswith("spacetime-e") else v) for k, v in answer.headers]
        assert fast.comparable() == slow.comparable()
        assert fast.header("spacetime-identity-token") == token
        assert fast.header("Access-Control-Allow-Origin") == "*"
        assert fast.header("Date") is not None

    asyncio.run(check())


def test_unknown_database_matches_aiohttp(server: StandaloneServer, transfer_db: tuple[str, str]) -> None:
    async def check() -> None:
        _, token = transfer_db
        (fast, slow), _ = await exchange(
            server, [call_request("no-such-db-here", "transfer", b"[]", token), chunked_request("no-such-db-here", "transfer", b"[]", token)], 2
        )  # fmt: skip
        assert fast.status == 404
        assert fast.comparable() == slow.comparable()

    asyncio.run(check())


def test_pipelined_calls_commit_in_order(server: StandaloneServer, transfer_db: tuple[str, str]) -> None:
    async def check() -> None:
        db, token = transfer_db
        # Three calls in one write, the last one failing: three answers, in order.
        burst = b"".join(
            call_request(db, "transfer", body, token) for body in (b"[0,1,10]", b"[0,2,20]", b"[0,3,5000]")
        )
        answers, rest = await exchange(server, [burst], 3)
        assert [a.status for a in answers] == [200, 200, 530]
        assert rest == b"(open)"  # keep-alive
        assert (await balances(server, db, token))[:4] == [970, 1010, 1020, 1000]

    asyncio.run(check())


def test_a_request_in_pieces_is_answered_whole(
    server: StandaloneServer, transfer_db: tuple[str, str]
) -> None:
    async def check() -> None:
        db, token = transfer_db
        request = call_request(db, "transfer", b"[4,5,7]", token)
        pieces = [request[i : i + 7] for i in range(0, len(request), 7)]
        answers, _ = await exchange(server, pieces, 1)
        assert answers[0].status == 200
        assert (await balances(server, db, token))[4:6] == [993, 1007]

    asyncio.run(check())


def test_other_requests_then_go_to_aiohttp(server: StandaloneServer, transfer_db: tuple[str, str]) -> None:
    async def check() -> None:
        db, token = transfer_db
        sql = b"SELECT * FROM accounts WHERE id = 6"
        sql_request = (
            f"POST /v1/database/{db}/sql HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(sql)}\r\n\r\n"
        ).encode() + sql
        sends = [
            call_request(db, "transfer", b"[6,7,1]", token),
            sql_request,
            call_request(db, "transfer", b"[6,7,1]", token),
        ]
        answers, rest = await exchange(server, [b"".join(sends)], 3)
        assert [a.status for a in answers] == [200, 200, 200]
        assert b"999" in answers[1].body
        assert rest == b"(open)"
        assert (await balances(server, db, token))[6:8] == [998, 1002]

    asyncio.run(check())


def test_no_token_mints_one_a_bad_one_is_refused(
    server: StandaloneServer, transfer_db: tuple[str, str]
) -> None:
    async def check() -> None:
        db, token = transfer_db
        (anonymous,), _ = await exchange(server, [call_request(db, "transfer", b"[8,9,1]", None)], 1)
        assert anonymous.status == 200
        minted = anonymous.header("spacetime-identity-token")
        assert minted is not None and minted != token
        (refused,), _ = await exchange(server, [call_request(db, "transfer", b"[8,9,1]", "not-a-token")], 1)
        assert refused.status in (400, 401), refused.body
        assert refused.header("spacetime-identity") is None
        assert (await balances(server, db, token))[8:10] == [999, 1001]

    asyncio.run(check())


def test_connection_close_is_honoured(server: StandaloneServer, transfer_db: tuple[str, str]) -> None:
    async def check() -> None:
        db, token = transfer_db
        (answer,), rest = await exchange(
            server, [call_request(db, "transfer", b"[1,0,1]", token, extra="Connection: close\r\n")], 1
        )
        assert answer.status == 200
        assert answer.header("Connection") == "close"
        assert rest == b""  # closed by the server

    asyncio.run(check())


@pytest.mark.parametrize(
    ("content_type", "status"), [("text/plain", 415), ("application/json; charset=utf-8", 415)]
)
def test_a_wrong_content_type_is_refused_as_before(
    server: StandaloneServer, transfer_db: tuple[str, str], content_type: str, status: int
) -> None:
    async def check() -> None:
        db, token = transfer_db
        (answer,), _ = await exchange(
            server, [call_request(db, "transfer", b"[1,0,1]", token, content_type=content_type)], 1
        )
        assert answer.status == status

    asyncio.run(check())


def test_a_body_over_the_limit_is_413(server: StandaloneServer, transfer_db: tuple[str, str]) -> None:
    async def check() -> None:
        db, token = transfer_db
        head = call_request(db, "transfer", b"", token).replace(
            b"Content-Length: 0", b"Content-Length: %d" % (MAX_BODY + 1)
        )
        (answer,), _ = await exchange(server, [head], 1)
        assert answer.status == 413

    asyncio.run(check())


def test_calls_are_counted_and_read_without_aiohttp(
    server: StandaloneServer, transfer_db: tuple[str, str]
) -> None:
    """The three plain calls are answered by the fast reader (its counter moves by 3), the chunked
    one by aiohttp (it does not), and all four count as requests of the calls route."""
    db, token = transfer_db
    route = 'route="/v1/database/{name_or_identity}/call/{reducer}"'

    async def counted() -> tuple[float, float]:
        async with Client(server.url) as c:
            text = (await c.request("GET", "/v1/metrics")).text
        lines = text.splitlines()
        calls = [ln for ln in lines if ln.startswith("orrery_gateway_http_requests_total") and route in ln
                 and 'method="POST"' in ln and 'code="200"' in ln]  # fmt: skip
        fast = [ln for ln in lines if ln.startswith("orrery_gateway_http_fast_calls_total ")]
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in calls), sum(
            float(ln.rsplit(" ", 1)[1]) for ln in fast
        )

    async def check() -> None:
        calls, fast = await counted()
        plain = b"".join(call_request(db, "transfer", b"[2,3,1]", token) for _ in range(3))
        await exchange(server, [plain + chunked_request(db, "transfer", b"[2,3,1]", token)], 4)
        assert await counted() == (calls + 4, fast + 3)

    asyncio.run(check())


def test_a_call_outlives_its_client(server: StandaloneServer, transfer_db: tuple[str, str]) -> None:
    async def check() -> None:
        db, token = transfer_db
        host, port = server.address.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as s:
            s.sendall(call_request(db, "transfer", b"[3,4,9]", token))
        for _ in range(100):
            if (await balances(server, db, token))[3:5] != [1000, 1000]:
                break
            await asyncio.sleep(0.05)
        assert (await balances(server, db, token))[3:5] == [991, 1009]
        # and the server still answers
        (answer,), _ = await exchange(server, [call_request(db, "transfer", b"[3,4,1]", token)], 1)
        assert answer.status == 200

    asyncio.run(check())


# --- which heads the fast reader takes (every other one goes to aiohttp) ---------------------------

GOOD = (
    b"POST /v1/database/db/call/transfer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer t.t.t\r\nContent-Length: 7"
)


def test_a_plain_call_head_is_read() -> None:
    head = read_head(GOOD, MAX_BODY)
    assert head is not None
    assert (head.name, head.reducer, head.authorization, head.length, head.close) == (
        "db",
        "transfer",
        "Bearer t.t.t",
        7,
        False,
    )
    varied = (
        GOOD.replace(b"Content-Type: application/json", b"content-type:  Application/JSON \t")
        + b"\r\nConnection: Close"
    )
    head = read_head(varied, MAX_BODY)
    assert head is not None and head.close


@pytest.mark.parametrize(
    "change",
    [
        (b"POST /v1", b"post /v1"),
        (b"HTTP/1.1", b"HTTP/1.0"),
        (b"/call/transfer", b"/call/transfer?x=1"),
        (b"/call/transfer", b"/call/trans%66er"),
        (b"/database/db/", b"/database/../"),
        (b"/database/db/", b"/database//"),
        (b"/call/transfer", b"/call/transfer/more"),
        (b"Content-Length: 7", b"Transfer-Encoding: chunked"),
        (b"Content-Length: 7", b"Content-Length: 7\r\nContent-Length: 7"),
        (b"Content-Length: 7", b"Content-Length: +7"),
        (b"Content-Length: 7", b"Content-Length: 2000000"),
        (b"Content-Length: 7", b"Content-Length: 7\r\nExpect: 100-continue"),
        (b"Content-Length: 7", b"Content-Length: 7\r\nUpgrade: websocket"),
        (b"Content-Length: 7", b"Content-Length: 7\r\nConnection: keep-alive, Upgrade"),
        (b"Content-Type: application/json\r\n", b""),
        (b"Content-Type: application/json", b"Content-Type: text/plain"),
        (b"Authorization: Bearer t.t.t\r\n", b""),
        (b"Authorization: Bearer t.t.t", b"Authorization: Bearer t.t.t\r\nAuthorization: Bearer u.u.u"),
        (b"Host: x", b"Host: \xc3\xa9"),
        (b"Host: x", b"Host: x\ny: z"),
        (b"Host: x", b"Host: x\r\n folded"),
        (b"Host: x", b"Ho st: x"),
        (b"Host: x", b": x"),
    ],
)
def test_anything_else_is_left_to_aiohttp(change: tuple[bytes, bytes]) -> None:
    old, new = change
    assert old in GOOD
    assert read_head(GOOD.replace(old, new), MAX_BODY) is None


def test_stopping_closes_kept_alive_connections_and_exits(tmp_path: Path) -> None:
    """A client between two calls does not hold the server up: SIGTERM closes its connection (it
    reads the end of the stream) and the server exits cleanly."""
    server = StandaloneServer(tmp_path / "data").start()
    try:

        async def first_call() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
            async with Client(server.url) as c:
                _, token = await c.new_identity()
                assert (await c.publish("stop-test", TRANSFER, token=token)).status == 200
                assert (await c.call("stop-test", "seed", 2, 10, token=token)).status == 200
            host, port = server.address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(call_request("stop-test", "transfer", b"[0,1,1]", token))
            return reader, writer, (await read_answer(reader)).status

        async def check() -> None:
            reader, writer, status = await first_call()
            assert status == 200
            started = time.monotonic()
            code = await asyncio.to_thread(server.stop)
            assert code == 0
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            assert time.monotonic() - started < 15
            writer.close()

        asyncio.run(check())
    finally:
        server.kill()


@pytest.mark.parametrize("cut", ["head", "body"])
def test_a_request_cut_short_by_the_client_closes_the_connection(
    server: StandaloneServer, transfer_db: tuple[str, str], cut: str
) -> None:
    db, token = transfer_db
    request = call_request(db, "transfer", b"[5,6,1]", token)
    partial = request[:30] if cut == "head" else request[:-3]

    async def check() -> None:
        host, port = server.address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(partial)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing answered
        writer.close()
        assert (await balances(server, db, token))[5:7] == [1000, 1000]

    asyncio.run(check())


def test_a_large_request_behind_a_call_in_flight_is_read_whole(
    server: StandaloneServer, transfer_db: tuple[str, str]
) -> None:
    """Reading pauses while a call is in flight and much is waiting behind it; a request larger
    than that pause is still read to its end once the call is answered."""
    db, token = transfer_db
    big = b"[" + b" " * 900_000 + b"1,2,3]"  # valid JSON, 900 kB: within the 1 MiB body limit

    async def check() -> None:
        burst = call_request(db, "transfer", b"[7,8,1]", token) + call_request(db, "transfer", big, token)
        answers, rest = await exchange(server, [burst], 2)
        assert [a.status for a in answers] == [200, 200]
        assert rest == b"(open)"
        assert (await balances(server, db, token))[7:9] == [999, 1001]

    asyncio.run(check())
