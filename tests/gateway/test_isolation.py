"""A database whose code loops costs only itself (issue 12, item 1).

Three databases spin in a reducer, one in ``init`` while it is published and one in
``__describe_module__``, all at once; meanwhile ``/v1/ping``, SQL and reducer calls on another
database must be answered — each one before any spinning call has ended (a spinning call holding
the interpreter would let nothing else run until it stopped). The spinning calls run until the
server's time budget (``--time-budget``) stops them, with a fuel budget far too large to matter,
so this also checks that the time budget ends a call and names itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.conftest import MODULE_TEST
from tests.servers import Client, Reply, ServerError, StandaloneServer
from tests.wat_modules import SPINNING, spinning_module

#: Long enough for the checks below on a slow machine; each spinning call lasts this long.
TIME_BUDGET_S = 8
#: 10^14 fuel is many minutes of wasm: only the time budget can stop the loops.
FUEL_BUDGET = 10**14


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneServer]:
    """A server whose reducer calls stop after ``TIME_BUDGET_S`` seconds."""
    root: Path = tmp_path_factory.mktemp("isolation")
    args = ["--time-budget", str(TIME_BUDGET_S), "--fuel-budget", str(FUEL_BUDGET)]
    with StandaloneServer(root / "data", args=args) as srv:
        yield srv


async def _wait_for_log(c: Client, db: str, token: str, text: str) -> None:
    """Until ``db``'s module log holds ``text`` (its spinning code has started)."""
    for _ in range(600):
        logs = await c.get(f"/v1/database/{db}/logs", token=token, params={"num_lines": "20"})
        if logs.status == 200 and text in logs.text:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{db} never logged {text!r}")


def test_spinning_databases_leave_the_others_answering(budget_server: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        _, token = await c.new_identity()
        spinners = ["spin-a", "spin-b", "spin-c"]
        for db in spinners:
            assert (await c.publish(db, spinning_module("reducer"), token=token)).status == 200
        assert (await c.publish("calm", MODULE_TEST, token=token)).status == 200

        busy: list[asyncio.Task[Reply]] = [
            asyncio.create_task(c.call(db, "spin", token=token)) for db in spinners
        ]
        busy.append(asyncio.create_task(c.publish("spin-init", spinning_module("init"), token=token)))
        busy.append(asyncio.create_task(c.publish("spin-describe", spinning_module("describe"), token=token)))
        # Bounded: were the server stalled, the requests below would wait as long as the loops run.
        async with asyncio.timeout(TIME_BUDGET_S * 5):
            for db in spinners:
                await _wait_for_log(c, db, token, SPINNING)

            latencies: list[float] = []
            for i in range(10):
                for request in (
                    lambda: c.get("/v1/ping"),
                    lambda: c.sql("calm", "SELECT * FROM kv", token=token),
                    lambda: c.call("calm", "set_kv", f"k{i}", "v", token=token),  # noqa: B023 - called at once
                ):
                    t0 = time.perf_counter()
                    reply = await request()
                    latencies.append(time.perf_counter() - t0)
                    assert reply.status == 200, reply
                    assert not any(t.done() for t in busy), "a spinning call ended before the others were answered"
        latencies.sort()
        print(f"other database while 5 calls spin: p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
              f"max {latencies[-1] * 1e3:.1f} ms")  # fmt: skip

        for task in busy[:3]:
            stopped = await task
            assert stopped.status == 530, stopped
            assert stopped.text == (
                f"reducer `spin` was stopped: it ran past its time budget of {TIME_BUDGET_S}s "
                "(DatabaseConfig.time_budget_s)"
            )
        # A failed `init` is 1.12's 500 (client-api.md); a module that cannot describe itself is invalid.
        init, describe = await busy[3], await busy[4]
        assert (init.status, init.text) == (
            500,
            f"Failed to create the database: reducer `init` was stopped: it ran past its time budget of "
            f"{TIME_BUDGET_S}s (DatabaseConfig.time_budget_s)",
        )
        assert (describe.status, describe.text) == (
            400,
            f"Failed to create the database: __describe_module__ was stopped: it ran past its time budget of "
            f"{TIME_BUDGET_S}s (DatabaseConfig.time_budget_s)",
        )
        # Nothing was created for them, and the spinning databases still serve their other reducers.
        for db in ("spin-init", "spin-describe"):
            assert (await c.get(f"/v1/database/{db}")).status == 404
        assert (await c.call("spin-a", "ok", token=token)).status == 200
        assert (await c.rows("calm", "SELECT * FROM kv WHERE key = 'k9'", token=token)) == [["k9", "v"]]

    budget_server.run(body)


def test_budgets_given_on_the_command_line_are_checked(tmp_path: Path) -> None:
    for args, message in (
        (["--time-budget", "0"], "--time-budget must be a positive number of seconds, not 0.0"),
        (["--time-budget", "nan"], "--time-budget must be a positive number of seconds, not nan"),
        (["--fuel-budget", "-5"], "--fuel-budget must be a positive number of fuel units, not -5"),
    ):
        server = StandaloneServer(tmp_path / "data", args=args)
        with pytest.raises(ServerError, match="exited before becoming ready"):
            server.start()
        assert message in server.log_text()
