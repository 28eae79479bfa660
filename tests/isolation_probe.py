"""The probe of issue 12 item 1, for a standalone server and for a cluster alike: while databases
spin, every other database keeps answering.

Three databases spin in a reducer, one in ``init`` while it is being published and one in
``__describe_module__``, all at once; meanwhile ``/v1/ping``, SQL and reducer calls on another
database must be answered — each one before any spinning call has ended (a spinning call holding
the interpreter would let nothing else run until it stopped). The server must be started with a
time budget (``--time-budget``) and a fuel budget too large to matter, so the time budget is what
ends the loops, and it must name itself when it does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tests.modules_harness import MODULES_DIR
from tests.servers import Client, Reply
from tests.wat_modules import SPINNING, spinning_module

__all__ = ["FUEL_BUDGET", "probe_while_spinning"]

#: 10^14 fuel is many minutes of wasm: only the time budget can stop the loops.
FUEL_BUDGET = 10**14
MODULE_TEST = (MODULES_DIR / "module-test" / "module-test.wasm").read_bytes()


async def _wait_for_log(c: Client, db: str, token: str, text: str) -> None:
    """Until ``db``'s module log holds ``text`` (its spinning code has started)."""
    while True:
        logs = await c.get(f"/v1/database/{db}/logs", token=token, params={"num_lines": "20"})
        if logs.status == 200 and text in logs.text:
            return
        await asyncio.sleep(0.05)


async def probe_while_spinning(c: Client, time_budget_s: int, prefix: str = "") -> list[float]:
    """Run the probe against the server behind ``c`` (its time budget is ``time_budget_s``);
    returns the latencies of the requests to the other database, in seconds, sorted."""
    _, token = await c.new_identity()
    spinners = [f"{prefix}spin-{x}" for x in "abc"]
    for db in spinners:
        assert (await c.publish(db, spinning_module("reducer"), token=token)).status == 200
    calm = f"{prefix}calm"
    assert (await c.publish(calm, MODULE_TEST, token=token)).status == 200

    busy: list[asyncio.Task[Reply]] = [asyncio.create_task(c.call(db, "spin", token=token)) for db in spinners]
    busy.append(asyncio.create_task(c.publish(f"{prefix}spin-init", spinning_module("init"), token=token)))
    busy.append(asyncio.create_task(c.publish(f"{prefix}spin-describe", spinning_module("describe"), token=token)))
    latencies: list[float] = []
    # Bounded: were the server stalled, the requests below would wait as long as the loops run.
    async with asyncio.timeout(time_budget_s * 5):
        for db in spinners:
            await _wait_for_log(c, db, token, SPINNING)
        for i in range(10):
            requests: tuple[Callable[[], Awaitable[Reply]], ...] = (
                lambda: c.get("/v1/ping"),
                lambda: c.sql(calm, "SELECT * FROM kv", token=token),
                lambda: c.call(calm, "set_kv", f"k{i}", "v", token=token),  # noqa: B023 - called at once
            )
            for request in requests:
                t0 = time.perf_counter()
                reply = await request()
                latencies.append(time.perf_counter() - t0)
                assert reply.status == 200, reply
                assert not any(t.done() for t in busy), "a spinning call ended before the others were answered"

    budget = f"it ran past its time budget of {time_budget_s}s (DatabaseConfig.time_budget_s)"
    for task in busy[:3]:
        stopped = await task
        assert (stopped.status, stopped.text) == (530, f"reducer `spin` was stopped: {budget}")
    # A failed `init` is 1.12's 500 (client-api.md); a module that cannot describe itself is invalid.
    init, describe = await busy[3], await busy[4]
    assert (init.status, init.text) == (500, f"Failed to create the database: reducer `init` was stopped: {budget}")
    assert (describe.status, describe.text) == (
        400,
        f"Failed to create the database: __describe_module__ was stopped: {budget}",
    )
    # Nothing was created for them, and the spinning databases still serve their other reducers.
    for db in (f"{prefix}spin-init", f"{prefix}spin-describe"):
        assert (await c.get(f"/v1/database/{db}")).status == 404
    assert (await c.call(spinners[0], "ok", token=token)).status == 200
    assert (await c.rows(calm, "SELECT * FROM kv WHERE key = 'k9'", token=token)) == [["k9", "v"]]
    return sorted(latencies)
