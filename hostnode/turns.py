"""Turns: a process's event loop and its databases' writer threads take the interpreter in turns.

Why. A writer thread runs reducers with the GIL held, but lets it go for a moment many times
per call — every LMDB put (py-lmdb releases the GIL around ``mdb_put``), every lock it waits
on. Whenever the event-loop thread is waiting for the GIL at such a moment, the release has to
wake it (a futex wake, on a VM an inter-processor interrupt) and the writer waits to get the GIL
back. Under load the loop almost always has something to do, so the two threads hand the GIL
back and forth several times per reducer call: measured on this project's 2-vCPU VMs, a busy
loop thread costing 5 µs per call made the writer's own CPU per ``transfer`` grow from ~34 µs to
~47 µs, and in the split standalone server's host-node process the writer ran at 75 µs per call
with a third of its samples inside ``pthread_cond_signal`` under py-lmdb's ``trans_put``
(loadtest/RESULTS.md, "Turns").

What. One process-wide lock, the *turn*. The event loop holds it while it runs callbacks and
gives it up while it waits in ``select`` (:class:`TurnSelector`); a writer holds it while it
runs one job (:func:`turn`) — a job is a whole batch of a client's messages. So while a writer
runs a job, the loop thread, woken by I/O, waits for the turn (not for the GIL), and the
writer's many short GIL releases wake nobody; the two switch once per job and once per loop
iteration instead of several times per call.

The turn is only a hint for the scheduler, never needed for correctness: every wait for it is
bounded (:data:`TURN_WAIT_S`), after which the thread goes on without it (as without turns);
so a job or callback that blocks on the other side cannot deadlock, it only loses the gain. A
reducer call that turns out long (hostnode/wasm_host.py) gives the turn up for the rest of the
call (:func:`set_aside`), so a spinning reducer never holds the loop back.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["TURN_WAIT_S", "TurnSelector", "loop_factory", "set_aside", "turn"]

#: The longest a thread waits for the turn before it goes on without it (seconds).
TURN_WAIT_S = 0.005

_TURN = threading.Lock()
_held = threading.local()
_OFF = os.environ.get("ORRERY_TURNS", "1") == "0"


def _take() -> bool:
    if _OFF:
        return False
    took = _TURN.acquire(timeout=TURN_WAIT_S)
    _held.turn = took
    return took


def _give(took: bool) -> None:
    if took:
        _held.turn = False
        _TURN.release()


@contextmanager
def turn() -> Iterator[None]:
    """Hold the turn (if it comes within :data:`TURN_WAIT_S`) while the block runs: one writer job."""
    took = _take()
    try:
        yield
    finally:
        _give(took)


def set_aside() -> Callable[[], None]:
    """Give the turn up for a while if this thread holds it; returns what takes it back."""
    if not getattr(_held, "turn", False):
        return _nothing
    _give(True)
    return _retake


def _nothing() -> None:
    pass


def _retake() -> None:
    _take()


class TurnSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The event loop's selector: the loop holds the turn except while it waits for I/O."""

    def __init__(self) -> None:
        super().__init__()
        self._took = _take()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait for I/O without the turn; take it back (or time out waiting) before returning."""
        _give(self._took)
        try:
            return super().select(timeout)  # type: ignore[no-any-return]
        finally:
            self._took = _take()

    def close(self) -> None:
        """Close the selector and give the turn up for good."""
        _give(self._took)
        self._took = False
        super().close()


def loop_factory() -> asyncio.AbstractEventLoop:
    """A new event loop taking turns with the writer threads (``asyncio.Runner(loop_factory=…)``)."""
    return asyncio.SelectorEventLoop(TurnSelector())


def run(main: Any) -> Any:
    """``asyncio.run(main)`` on a loop from :func:`loop_factory`."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)
