"""``gateway.http_util.read_body``: the whole body, however it arrives, or 413 past the limit."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from aiohttp import streams
from aiohttp.test_utils import make_mocked_request

from gateway.errors import ApiError
from gateway.http_util import read_body


def _request(parts: list[bytes], *, eof: bool, headers: dict[str, str] | None = None) -> tuple[object, streams.StreamReader]:
    protocol = mock.Mock(_reading_paused=False)
    payload = streams.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    for part in parts:
        payload.feed_data(part)
    if eof:
        payload.feed_eof()
    return make_mocked_request("POST", "/v1/database/x/sql", headers=headers or {}, payload=payload), payload


def test_a_body_that_is_all_here_is_returned_whole() -> None:
    async def body() -> None:
        request, _ = _request([b"SELECT ", b"* FROM t"], eof=True)
        assert await read_body(request, 100) == b"SELECT * FROM t"  # type: ignore[arg-type]
        request, _ = _request([], eof=True)
        assert await read_body(request, 100) == b""  # type: ignore[arg-type]

    asyncio.run(body())


def test_a_body_still_arriving_is_read_to_its_end() -> None:
    async def body() -> None:
        request, payload = _request([b"first "], eof=False)
        reading = asyncio.ensure_future(read_body(request, 100))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        payload.feed_data(b"second")
        payload.feed_eof()
        assert await reading == b"first second"

    asyncio.run(body())


@pytest.mark.parametrize("eof", [True, False])
def test_a_body_past_the_limit_without_a_declared_length_is_refused_with_413(eof: bool) -> None:
    async def body() -> None:
        request, payload = _request([b"x" * 60, b"y" * 60], eof=eof)
        reading = asyncio.ensure_future(read_body(request, 100))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        if not eof:
            payload.feed_eof()
        with pytest.raises(ApiError) as caught:
            await reading
        assert caught.value.status == 413 and b"too large" in caught.value.body

    asyncio.run(body())
