"""Waiting in tests for a condition rather than for a length of time.

A test that sleeps and then expects something to have happened depends on the machine's speed
(machines of this kind differ 2–4×, and CI may share its cores). These helpers wait for the
condition itself, checking it often; the timeout only turns a hang into a failure, so it is
far longer than anything takes on the slowest machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hostnode.service import HostNode
    from sats.identity import Identity

#: How long to wait for something that normally takes milliseconds before calling it a hang.
PATIENCE = 60.0


async def until(condition: Callable[[], bool], what: str, *, timeout: float = PATIENCE) -> None:
    """Return once ``condition()`` holds (checked every few ms on the event loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.005)


def until_sync(condition: Callable[[], bool], what: str, *, timeout: float = PATIENCE) -> None:
    """:func:`until` for a thread that is not running an event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


@contextlib.asynccontextmanager
async def writer_held(node: HostNode, database: Identity) -> AsyncIterator[None]:
    """Keep the database's writer thread busy for the duration of the block: the jobs submitted
    meanwhile wait in its queue (its bound is what some tests check), and run after the block."""
    started, release = threading.Event(), threading.Event()

    def hold(_db: object) -> None:
        started.set()
        release.wait(PATIENCE)

    holding = asyncio.ensure_future(node.run(database, hold))
    try:
        assert await asyncio.to_thread(started.wait, PATIENCE), "the writer never took the holding job"
        yield
    finally:
        release.set()
        await holding
