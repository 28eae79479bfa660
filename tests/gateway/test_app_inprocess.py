"""The gateway application over fake backends (any Protocol implementation plugs in), on a real
socket: log followers end when the client leaves or the server stops, errors map in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.auth import SigningKeys, TokenAuthority
from gateway.backends import (
    CallResult,
    DatabaseInfo,
    PrePublish,
    PublishOutcome,
    SqlAnswer,
    WsParams,
    WsSession,
)
from gateway.context import GATEWAY
from gateway.errors import ApiError
from gateway.failures import ControlErrorKind, HostErrorKind, control_error, host_error
from sats.identity import Identity

DB = Identity.from_claims("localhost", "db")


class FakeControl:
    """Every name resolves to DB; the caller given at construction owns it."""

    def __init__(self, owner: Identity) -> None:
        self.owner = owner

    async def resolve(self, name_or_identity: str) -> Identity:
        return DB

    async def database(self, name_or_identity: str) -> DatabaseInfo:
        if name_or_identity == "missing":
            raise ApiError.text(404, "No such database.")
        return DatabaseInfo(DB, self.owner)

    async def publish(
        self,
        caller: Identity,
        noi: str | None,
        program: bytes,
        *,
        clear: bool,
        break_clients: bool = False,
        token: bytes | None = None,
        num_replicas: int | None = None,
    ) -> PublishOutcome:
        raise RuntimeError("unexpected failure inside a backend")

    async def reset(self, caller: Identity, noi: str, program: bytes | None) -> PublishOutcome:
        return PublishOutcome(DB, "updated", None)

    async def delete(self, caller: Identity, noi: str) -> None:
        return None

    async def names(self, identity: Identity) -> list[str]:
        return []

    async def add_name(self, caller: Identity, noi: str, name: str) -> dict[str, Any]:
        # What a control plane behind gRPC answers for an exception of its own.
        raise control_error(ControlErrorKind.INTERNAL, "KeyError: '/secret/key/of/another/tenant'")

    async def set_names(self, caller: Identity, noi: str, names: list[str]) -> None:
        return None

    async def databases_of(self, owner: Identity) -> list[Identity]:
        return []

    async def node_ids(self) -> list[int]:
        return [0]


class FakeHost:
    """Logs: two old lines, then whatever is put on ``lines``; records when followers end."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def call(self, database: Identity, reducer: str, args_json: str, *, caller: Identity,
                   connection_id: int) -> CallResult:
        raise ApiError.text(404, "No such procedure")

    async def sql(self, database: Identity, query: str, caller: Identity) -> SqlAnswer:
        return SqlAnswer(b"[]", 0)

    async def schema(self, database: Identity) -> Any:
        # What a host node behind gRPC answers for an exception of its own.
        raise host_error(HostErrorKind.INTERNAL, "ValueError: row of another tenant")

    async def logs(self, database: Identity, num_lines: int | None, follow: bool) -> AsyncGenerator[str, None]:
        try:
            yield '{"level":"Info","message":"old 1"}'
            yield '{"level":"Info","message":"old 2"}'
            while follow:
                yield await self.lines.get()
        finally:
            self.closed.set()

    async def pre_publish(self, database: Identity, program: bytes) -> PrePublish:
        return PrePublish(automatic=False, reason="fake")

    async def connect(self, database: Identity, params: WsParams) -> WsSession | None:
        raise host_error(HostErrorKind.INTERNAL, "OSError: /data/node/connections is broken")


#: The runner's grace period for handlers still running at shutdown (long, so that a test can
#: tell a handler ended by the shutdown from one cut off when the period ran out).
SHUTDOWN_TIMEOUT = 120.0


async def _serve(authority: TokenAuthority, host: FakeHost, owner: Identity) -> tuple[web.AppRunner, str]:
    app = create_app(authority, FakeControl(owner), host)
    app[GATEWAY].config.log_follow_poll = 0.05
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host_port = runner.addresses[0]
    return runner, f"http://{host_port[0]}:{host_port[1]}"


def test_internal_errors_name_a_request_id_and_only_the_log_has_the_details(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        authority = TokenAuthority(SigningKeys.generate())
        owner = authority.new_identity()
        runner, url = await _serve(authority, FakeHost(), owner.identity)
        auth = {"Authorization": f"Bearer {owner.token}"}
        try:
            async with aiohttp.ClientSession() as session:
                failures = {
                    "RuntimeError: unexpected failure inside a backend": await session.put(
                        f"{url}/v1/database/x", data=b"wasm"
                    ),
                    "'/secret/key/of/another/tenant'": await session.post(
                        f"{url}/v1/database/x/names", data="y", headers=auth
                    ),
                    "row of another tenant": await session.get(f"{url}/v1/database/x/schema?version=9"),
                }
                seen = set()
                for detail, reply in failures.items():
                    text = await reply.text()
                    request_id = reply.headers["x-request-id"]
                    assert reply.status == 500 and len(request_id) == 32 and request_id not in seen
                    seen.add(request_id)
                    assert text == f"internal error (request id {request_id}); the server log has the details"
                    logged = [r for r in caplog.records if request_id in r.getMessage()]
                    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
                    assert detail in logged[0].getMessage() and "/v1/database/x" in logged[0].getMessage()
                # Once a WebSocket is open, the request id is the close reason.
                async with session.ws_connect(f"{url}/v1/database/x/subscribe", protocols=["v1.json.spacetimedb"]) as ws:
                    closed = await ws.receive()
                assert closed.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1011
                request_id = str(closed.extra).removeprefix("internal error (request id ").split(")")[0]
                assert closed.extra == f"internal error (request id {request_id}); the server log has the details"
                logged = [r for r in caplog.records if request_id in r.getMessage()]
                assert len(logged) == 1 and "/data/node/connections is broken" in logged[0].getMessage()
                # The unexpected exception is logged with its traceback, and nothing chained to it.
                unexpected = next(r for r in caplog.records if "unexpected failure" in r.getMessage())
                assert unexpected.exc_info is not None
                error = unexpected.exc_info[1]
                assert isinstance(error, RuntimeError) and error.__context__ is None
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_follow_ends_when_client_leaves_and_when_server_stops() -> None:
    async def main() -> None:
        authority = TokenAuthority(SigningKeys.generate())
        owner = authority.new_identity()
        host = FakeHost()
        runner, url = await _serve(authority, host, owner.identity)
        auth = {"Authorization": f"Bearer {owner.token}"}
        try:
            async with aiohttp.ClientSession() as session:
                plain = await session.get(f"{url}/v1/database/x/logs", headers=auth)
                assert plain.status == 200 and (await plain.text()).count("\n") == 2
                assert host.closed.is_set()

                host.closed.clear()
                resp = await session.get(f"{url}/v1/database/x/logs?follow=true&num_lines=5", headers=auth)
                assert b"old 1" in await resp.content.readline()
                await resp.content.readline()
                await host.lines.put('{"level":"Info","message":"new"}')
                assert b"new" in await asyncio.wait_for(resp.content.readline(), 5)
                resp.close()  # the client goes away
                await asyncio.wait_for(host.closed.wait(), 5)

                # Unexpected backend exceptions become a 500 answer; the server keeps going.
                boom = await session.put(f"{url}/v1/database/x", data=b"wasm")
                assert boom.status == 500 and "spacetime-identity" in boom.headers
                assert (await session.get(f"{url}/v1/database/missing")).status == 404

                host.closed.clear()
                resp = await session.get(f"{url}/v1/database/x/logs?follow=true", headers=auth)
                assert resp.status == 200
                # Shutting down ends the follower at once: without that, cleanup would wait out
                # the whole shutdown timeout for the handler.
                await asyncio.wait_for(runner.cleanup(), SHUTDOWN_TIMEOUT / 2)
                assert host.closed.is_set()
                resp.close()
        finally:
            await runner.cleanup()

    asyncio.run(main())
