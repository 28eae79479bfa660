"""Small asyncio helpers that keep cancellation right.

Stopping a background task by ``task.cancel()`` then ``with suppress(CancelledError): await task``
also swallows a cancellation of the *caller* that lands meanwhile, and Python 3.11's
``asyncio.wait_for`` can lose one when its timeout and a cancellation race. A loop that swallows
its own cancellation never stops; whoever waits for it then hangs. These helpers never swallow the
caller's cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait", "finish", "wait_event"]


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (None entries are skipped) and return once all are done.

    What the tasks ended with (their own cancellation, an error, a result) is taken and dropped:
    the caller stopped them and does not want it. A cancellation of the caller itself, landing
    while it waits, is raised as usual (the tasks are cancelled already)."""
    pending = [t for t in tasks if t is not None]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        for task in pending:
            if not task.cancelled():
                task.exception()  # taken, so asyncio does not log it as never retrieved


async def finish(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to end by itself and drop what it ended with. A cancellation of the
    caller, landing while it waits, cancels ``task`` too and is raised."""
    try:
        await asyncio.wait([task])
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.cancelled():
        task.exception()  # taken, so asyncio does not log it as never retrieved


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``event``; whether it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
