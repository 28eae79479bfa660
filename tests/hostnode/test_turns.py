"""hostnode/turns.py: the event loop and the writer threads take the interpreter in turns.

The turn is a scheduling hint, so what a user relies on is that it never costs liveness: the loop
runs its callbacks even while something else holds the turn for good, an idle loop does not keep
it from the writers, a writer job holds it (the point of it), and a reducer that runs long gives
it up so the loop — every other client of the process — does not wait behind a spinning call.
"""

from __future__ import annotations

import asyncio
import threading

from hostnode import turns
from hostnode.database import Status
from tests.hostnode.conftest import DbFactory, call
from tests.waits import PATIENCE


def test_an_idle_loop_leaves_the_turn_to_others_and_takes_it_back_to_run() -> None:
    taken_while_idle = threading.Event()
    release = threading.Event()

    def other() -> None:  # a writer: takes the turn while the loop sleeps in select
        assert turns._TURN.acquire(timeout=PATIENCE)
        taken_while_idle.set()
        release.wait(PATIENCE)
        turns._TURN.release()

    async def main() -> bool:
        thread = threading.Thread(target=other)
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, taken_while_idle.wait, PATIENCE)
        release.set()
        thread.join()
        await asyncio.sleep(0.01)  # one more select: the loop takes the turn back after it
        return turns._TURN.locked() and getattr(turns._held, "turn", False)

    assert turns.run(main()) is True
    assert not turns._TURN.locked()  # closing the loop gave it up


def test_the_loop_runs_its_callbacks_while_another_thread_keeps_the_turn() -> None:
    """Waits for the turn are bounded: a thread that never gives it up only costs the loop
    TURN_WAIT_S per iteration, never its liveness."""
    holding = threading.Event()
    done = threading.Event()

    def hog() -> None:
        assert turns._TURN.acquire(timeout=PATIENCE)
        holding.set()
        done.wait(PATIENCE)
        turns._TURN.release()

    async def main() -> int:
        ran = 0
        for _ in range(20):
            await asyncio.sleep(0)
            ran += 1
        return ran

    thread = threading.Thread(target=hog)
    thread.start()
    assert holding.wait(PATIENCE)
    try:
        assert turns.run(main()) == 20
    finally:
        done.set()
        thread.join()


def test_a_writer_job_holds_the_turn() -> None:
    attempts: list[bool] = []
    with turns.turn():
        assert turns._held.turn
        other = threading.Thread(target=lambda: attempts.append(turns._TURN.acquire(timeout=turns.TURN_WAIT_S)))
        other.start()
        other.join()
    assert attempts == [False]
    assert not turns._TURN.locked()


def test_a_long_call_gives_the_turn_up_until_it_ends(make_db: DbFactory) -> None:
    db = make_db("module-test", fuel_budget=10**15, time_budget_s=1.0)
    ended = threading.Event()
    holding = threading.Event()
    outcome: list[object] = []

    def writer_job() -> None:
        with turns.turn():
            holding.set()
            outcome.append(call(db, "infinite_loop"))
            outcome.append(getattr(turns._held, "turn", False))  # taken back when the call ended
        ended.set()

    thread = threading.Thread(target=writer_job)
    thread.start()
    try:
        assert holding.wait(PATIENCE)
        assert turns._TURN.acquire(timeout=PATIENCE)
        taken_before_the_end = not ended.is_set()
        turns._TURN.release()
    finally:
        thread.join()
    assert taken_before_the_end, "the turn was held until the spinning call ended"
    out, retaken = outcome
    assert getattr(out, "status", None) is Status.FAILED and "time budget" in getattr(out, "message", "")
    assert retaken is True
