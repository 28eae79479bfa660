"""clustermeta.aio: stopping background tasks never swallows the caller's own cancellation.

The pattern these helpers replace (``task.cancel()`` then ``with suppress(BaseException): await
task``) loses a cancellation of the caller that lands while the task winds down; the caller then
carries on, and an ``asyncio.wait_for`` around it never returns.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from clustermeta.aio import cancel_and_wait, finish


async def _slow_to_stop(stopped: asyncio.Event) -> None:
    try:
        await asyncio.sleep(60)
    finally:
        await asyncio.sleep(0.2)  # winds down for a while, as a stream closing its call does
        stopped.set()


def test_a_caller_cancelled_while_its_task_winds_down_is_cancelled() -> None:
    asyncio.run(_a_caller_cancelled_while_its_task_winds_down_is_cancelled())


async def _a_caller_cancelled_while_its_task_winds_down_is_cancelled() -> None:
    stopped = asyncio.Event()
    carried_on = asyncio.Event()

    async def caller() -> None:
        task = asyncio.create_task(_slow_to_stop(stopped))
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        carried_on.set()
        await asyncio.sleep(60)

    outer = asyncio.create_task(caller())
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(outer, 5)
    assert not carried_on.is_set()
    await asyncio.wait_for(stopped.wait(), 5)  # the task, cancelled first, winds down by itself


def test_wait_for_around_a_stop_that_is_under_way_times_out() -> None:
    asyncio.run(_wait_for_around_a_stop_that_is_under_way_times_out())


async def _wait_for_around_a_stop_that_is_under_way_times_out() -> None:
    stopped = asyncio.Event()

    async def stop_then_idle() -> None:
        task = asyncio.create_task(_slow_to_stop(stopped))
        await asyncio.sleep(0.1)
        await cancel_and_wait(task)
        await asyncio.sleep(60)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stop_then_idle(), 0.15)
    assert loop.time() - started < 5


def test_cancel_and_wait_takes_the_tasks_errors_and_skips_none(caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_cancel_and_wait_takes_the_tasks_errors_and_skips_none(caplog))


async def _cancel_and_wait_takes_the_tasks_errors_and_skips_none(caplog: pytest.LogCaptureFixture) -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("failed while stopping") from None

    done = asyncio.create_task(asyncio.sleep(0, "result"))
    failing = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        await cancel_and_wait(done, None, failing)
        assert done.result() == "result"
        assert failing.done() and not failing.cancelled()
        del failing  # its error, if nobody took it, is logged when the task is collected
        gc.collect()
    assert "never retrieved" not in caplog.text


def test_finish_waits_without_cancelling_and_drops_the_outcome(caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_finish_waits_without_cancelling_and_drops_the_outcome(caplog))


async def _finish_waits_without_cancelling_and_drops_the_outcome(caplog: pytest.LogCaptureFixture) -> None:
    async def ends_badly() -> None:
        await asyncio.sleep(0.05)
        raise ValueError("its own failure")

    task = asyncio.create_task(ends_badly())
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        await finish(task)
        assert task.done() and not task.cancelled()
        assert isinstance(task.exception(), ValueError)


def test_finish_cancels_its_task_when_the_caller_is_cancelled() -> None:
    asyncio.run(_finish_cancels_its_task_when_the_caller_is_cancelled())


async def _finish_cancels_its_task_when_the_caller_is_cancelled() -> None:
    stopped = asyncio.Event()
    task = asyncio.create_task(_slow_to_stop(stopped))

    outer = asyncio.create_task(finish(task))
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert task.cancelling() or task.done()
    await asyncio.wait_for(stopped.wait(), 5)
