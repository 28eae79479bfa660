"""A standalone Orrery subprocess shared by the client SDK tests, and helpers to use it.

Each test publishes its own database (:func:`publish`) and bounds every wait
(:func:`wait_until`), so a bug shows up as a timeout failure rather than a hung suite.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator

import pytest

from tests.modules_harness import MODULES_DIR
from tests.servers import TRANSPORTS, Client, StandaloneServer

_names = itertools.count()

CHAT = (MODULES_DIR / "quickstart-chat" / "quickstart-chat.wasm").read_bytes()
MODULE_TEST = (MODULES_DIR / "module-test" / "module-test.wasm").read_bytes()


@pytest.fixture(scope="session", params=TRANSPORTS)
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[StandaloneServer]:
    """One running server per transport (gateway → host node in-process, and over gRPC) for the
    whole client suite: every server test runs against both."""
    transport = str(request.param)
    root = tmp_path_factory.mktemp(f"orrery-client-{transport}")
    with StandaloneServer(root / "data", transport=transport) as srv:
        yield srv


def db_name(base: str) -> str:
    """A database name no other test uses."""
    return f"client-{base}-{next(_names)}-{os.getpid()}"


async def publish(url: str, base: str, program: bytes) -> tuple[str, str]:
    """Publish ``program`` under a fresh name; returns (name, owner token)."""
    name = db_name(base)
    async with Client(url) as c:
        _, token = await c.new_identity()
        reply = await c.publish(name, program, token=token)
        assert reply.status == 200, reply
    return name, token


async def sql(url: str, db: str, query: str, token: str) -> None:
    """Run one SQL statement as ``token`` (DML needs the owner)."""
    async with Client(url) as c:
        reply = await c.sql(db, query, token=token)
        assert reply.status == 200, reply


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``pred`` until it holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
