"""A database whose code loops costs only itself (issue 12, item 1): tests/isolation_probe.py
against ``orrery.standalone``, and the command line's budgets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.isolation_probe import FUEL_BUDGET, probe_while_spinning
from tests.servers import Client, ServerError, StandaloneServer

#: Long enough for the probe's requests on a slow machine; each spinning call lasts this long.
TIME_BUDGET_S = 8


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneServer]:
    """A server whose reducer calls stop after ``TIME_BUDGET_S`` seconds."""
    root: Path = tmp_path_factory.mktemp("isolation")
    args = ["--time-budget", str(TIME_BUDGET_S), "--fuel-budget", str(FUEL_BUDGET)]
    with StandaloneServer(root / "data", args=args) as srv:
        yield srv


def test_spinning_databases_leave_the_others_answering(budget_server: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        latencies = await probe_while_spinning(c, TIME_BUDGET_S)
        print(f"other database while 5 calls spin: p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
              f"max {latencies[-1] * 1e3:.1f} ms")  # fmt: skip

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
