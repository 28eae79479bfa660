"""The gateway's WebSocket relay internals: batching of received frames and our own framing of
sent ones (gateway/routes_ws.py), on a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import routes_ws


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


def test_frames_received_together_reach_the_host_in_one_batch_and_echo_back_in_order() -> None:
    asyncio.run(_batching())


async def _batching() -> None:
    session = _Session()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, compress=False)
        await ws.prepare(request)
        routes_ws._TRANSPORT.set(request.transport)
        await routes_ws._relay(ws, session, asyncio.Event())  # type: ignore[arg-type]
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
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
