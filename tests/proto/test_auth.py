"""The channel every cluster process calls another with (proto/auth.py): each of the four kinds of
call carries the cluster secret, alongside any metadata its caller passes, so a gated server
admits it; a channel without the secret is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from proto import auth

SECRET = auth.ClusterSecret.generate()
SERVICE = "orrery.test.Echo"


def _seen(context: Any) -> bytes:
    """What the server saw: the caller's ``x-tag`` header (or ``-``), as the reply."""
    tags = [v for k, v in context.invocation_metadata() if k == "x-tag"]
    return (tags[0] if tags else "-").encode()


async def _unary_unary(request: bytes, context: Any) -> bytes:
    return _seen(context) + request


async def _unary_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield _seen(context) + request


async def _stream_unary(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return _seen(context) + b"".join([r async for r in requests])


async def _stream_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for r in requests:
        yield _seen(context) + r


async def _server() -> tuple[grpc.aio.Server, str]:
    handlers = {
        "UU": grpc.unary_unary_rpc_method_handler(_unary_unary),
        "US": grpc.unary_stream_rpc_method_handler(_unary_stream),
        "SU": grpc.stream_unary_rpc_method_handler(_stream_unary),
        "SS": grpc.stream_stream_rpc_method_handler(_stream_stream),
    }
    server = grpc.aio.server(interceptors=auth.server_interceptors(SECRET))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _all_kinds(channel: grpc.aio.Channel, metadata: Any) -> list[bytes]:
    async def requests() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    uu = await channel.unary_unary(f"/{SERVICE}/UU")(b"1", metadata=metadata, timeout=10)
    us = [r async for r in channel.unary_stream(f"/{SERVICE}/US")(b"2", metadata=metadata, timeout=10)]
    su = await channel.stream_unary(f"/{SERVICE}/SU")(requests(), metadata=metadata, timeout=10)
    call = channel.stream_stream(f"/{SERVICE}/SS")(metadata=metadata, timeout=10)
    await call.write(b"x")
    ss = [await call.read()]
    await call.write(b"y")
    ss.append(await call.read())
    await call.done_writing()
    return [uu, *us, su, *ss]


def test_every_kind_of_call_carries_the_secret_and_the_callers_metadata() -> None:
    async def main() -> None:
        server, address = await _server()
        try:
            async with auth.channel(address, SECRET) as channel:
                assert await _all_kinds(channel, None) == [b"-1", b"-2", b"-2", b"-ab", b"-x", b"-y"]
                tagged = await _all_kinds(channel, (("x-tag", "t7"),))
                assert tagged == [b"t71", b"t72", b"t72", b"t7ab", b"t7x", b"t7y"]
                await channel.channel_ready()
                assert channel.get_state() == grpc.ChannelConnectivity.READY
        finally:
            await server.stop(None)

    asyncio.run(main())


@pytest.mark.parametrize("who", ["no secret", "another secret"])
def test_a_call_without_the_clusters_secret_is_refused(who: str) -> None:
    async def main() -> None:
        server, address = await _server()
        try:
            if who == "no secret":
                channel = grpc.aio.insecure_channel(address)
            else:
                channel = auth.channel(address, auth.ClusterSecret.generate())
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await channel.unary_unary(f"/{SERVICE}/UU")(b"1", timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                call = channel.stream_stream(f"/{SERVICE}/SS")(timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call.write(b"x")
                    await call.read()
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            await server.stop(None)

    asyncio.run(main())
