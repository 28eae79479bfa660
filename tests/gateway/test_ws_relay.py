"""The gateway's WebSocket relay internals: batching of received frames and our own framing of
sent ones (gateway/routes_ws.py), on a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import routes_ws
from gateway.backends import WsParams
from gateway.grpc_backends import WS_CLOSE_TOO_SLOW, WS_MAX_QUEUED_BYTES, RelayedWsSession, WsBudget
from sats.identity import Identity
from tests.waits import until


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frame_header_follows_rfc6455(n: int) -> None:
    head = routes_ws._frame_header(0x2, n)
    assert head[0] == 0x82  # FIN + binary
    assert head[1] & 0x80 == 0  # servers never mask
    size = head[1] & 0x7F
    if n < 126:
        assert (size, len(head)) == (n, 2)
    elif n < 1 << 16:
        assert (size, len(head)) == (126, 4) and struct.unpack(">H", head[2:])[0] == n
    else:
        assert (size, len(head)) == (127, 10) and struct.unpack(">Q", head[2:])[0] == n


class _Session:
    """A stand-in host node: records the batches the gateway hands over, echoes every frame."""

    close_code = 1000
    close_reason = ""
    sink = None  # never used: every frame goes through recv_many

    def __init__(self) -> None:
        self.batches: list[list[bytes | str]] = []
        self.out: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    def handle(self, frame: bytes | str) -> str | None:
        return self.handle_many([frame])

    def handle_many(self, frames: Any) -> str | None:
        self.batches.append(list(frames))
        for f in frames:
            self.out.put_nowait(f)
        return None

    async def recv(self) -> bytes | str | None:
        return await self.out.get()

    async def recv_many(self) -> list[bytes | str] | None:
        first = await self.out.get()
        if first is None:
            return None
        frames = [first]
        while not self.out.empty():
            nxt = self.out.get_nowait()
            if nxt is None:
                break
            frames.append(nxt)
        return frames

    async def wait_closed(self) -> None:
        await self.closed.wait()

    async def close(self) -> None:
        self.closed.set()


@contextlib.asynccontextmanager
async def _relay_server(session: Any) -> AsyncIterator[tuple[TestServer, list[Any]]]:
    """An aiohttp server on 127.0.0.1 relaying ``/ws`` to ``session``; the transports it served."""
    transports: list[Any] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, compress=False)
        await ws.prepare(request)
        transports.append(request.transport)
        routes_ws._TRANSPORT.set(request.transport)
        await routes_ws._relay(ws, session, asyncio.Event())
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server, transports


def test_frames_received_together_reach_the_host_in_one_batch_and_echo_back_in_order() -> None:
    asyncio.run(_batching())


async def _batching() -> None:
    session = _Session()

    async with _relay_server(session) as (server, _), aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/ws")) as client:
            # 200 frames written at once (one TCP write of the client's writer per frame, but
            # they arrive together): the gateway must not hand them over one by one.
            frames = [struct.pack("<I", i) * 3 for i in range(200)] + ["text ✓"]
            for f in frames:
                await (client.send_str(f) if isinstance(f, str) else client.send_bytes(f))
            got: list[bytes | str] = []
            while len(got) < len(frames):
                msg = await asyncio.wait_for(client.receive(), 10)
                assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT)
                got.append(msg.data)
            assert got == frames
            await client.close()
    handed = [f for batch in session.batches for f in batch]
    assert handed == frames
    assert len(session.batches) < len(frames) / 4, f"{len(session.batches)} batches for {len(frames)} frames"


class _Stream:
    """The stream a :class:`RelayedWsSession` belongs to, with nothing on the other end."""

    def __init__(self) -> None:
        self.budget = WsBudget()
        self.sessions: dict[int, RelayedWsSession] = {}
        self.dead = False
        self.out_bytes = 0
        self.flushing: list[RelayedWsSession] = []

    def send_message(self, ref: int, frame: bytes | str) -> None:
        pass

    def send_disconnected(self, ref: int) -> None:
        pass

    def flush_later(self, session: RelayedWsSession) -> None:
        self.flushing.append(session)


def _count_writes(transport: Any) -> Any:
    """Count ``transport.write`` calls from now on; returns the counter."""
    calls = [0]
    write = transport.write

    def counted(data: bytes) -> None:
        calls[0] += 1
        write(data)

    transport.write = counted
    return lambda: calls[0]


def _session() -> RelayedWsSession:
    params = WsParams(Identity.from_claims("localhost", "relay"), "t", 1, False, "None", False, False)
    return RelayedWsSession(_Stream(), 1, params)


def test_frames_delivered_while_the_writer_waits_are_written_at_once_in_order() -> None:
    asyncio.run(_direct_writes())


async def _direct_writes() -> None:
    session = _session()
    woken: list[int] = []
    async with _relay_server(session) as (server, request_transport), aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/ws")) as client:
            await until(lambda: session.sink is not None, what="the writer waiting for frames")
            frames = [struct.pack("<I", i) * 5 for i in range(300)]
            for batch in range(3):  # three batches of the stream
                for f in frames[batch * 100 : (batch + 1) * 100]:
                    session.deliver(f)
                writes = _count_writes(request_transport[0])
                session.flush()
                assert writes() == 1  # the batch's frames in one socket write
                woken.append(int(session._wake.is_set()))
                assert not session._queue  # written, not queued for the writer's task
            got: list[bytes | str] = []
            while len(got) < len(frames):
                msg = await asyncio.wait_for(client.receive(), 10)
                assert msg.type is aiohttp.WSMsgType.BINARY
                got.append(msg.data)
            assert got == frames and not any(woken)
            await client.close()


def test_a_relayed_session_never_hands_its_sink_frames_ahead_of_queued_ones() -> None:
    async def main() -> None:
        session = _session()
        taken: list[bytes | str] = []
        accept = [False]

        def sink(frames: list[bytes | str]) -> bool:
            if accept[0]:
                taken.extend(frames)
            return accept[0]

        session.sink = sink
        session.deliver(b"refused")  # a full socket, say: queued once the batch is read
        session.flush()
        accept[0] = True
        session.deliver(b"behind")  # the sink would take it, but one frame waits before it
        session.flush()
        assert taken == [] and list(session._queue) == [b"refused", b"behind"]
        assert await session.recv_many() == [b"refused", b"behind"]
        session.deliver(b"now")
        session.deliver(b"and then")
        assert taken == []  # kept until the stream's batch is read
        session.flush()
        assert taken == [b"now", b"and then"] and not session._queue

    asyncio.run(main())


def test_a_relayed_sessions_sink_is_never_handed_more_than_its_bounds_at_once() -> None:
    async def main() -> None:
        session = _session()
        taken: list[bytes | str] = []
        session.sink = lambda frames: taken.extend(frames) or True
        big = b"x" * (WS_MAX_QUEUED_BYTES // 2 + 1)
        session.deliver(big)
        session.deliver(big)  # two in one batch: past the byte bound together
        session.flush()
        assert taken == [] and (session.close_code, session.close_reason) == WS_CLOSE_TOO_SLOW
        alone = _session()
        alone.sink = lambda frames: taken.extend(frames) or True
        alone.deliver(b"y" * (WS_MAX_QUEUED_BYTES + 1))  # one message may exceed it, as when queued
        alone.flush()
        assert len(taken) == 1 and not alone._queue

    asyncio.run(main())
