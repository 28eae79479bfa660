"""A database whose code loops costs only itself, in a cluster too (issue 12, item 1):
tests/isolation_probe.py through the gateway of a three-node cluster. A host node that stalled
while a reducer spun would also miss its lease keepalives and lose every leadership it holds."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.harness import ClusterFixture, run_async
from tests.isolation_probe import FUEL_BUDGET, probe_while_spinning

#: Long enough for the probe's requests on a slow machine; each spinning call lasts this long.
TIME_BUDGET_S = 8


def test_spinning_databases_leave_the_others_answering_in_a_cluster(tmp_path: Path) -> None:
    budgets = ["--time-budget", str(TIME_BUDGET_S), "--fuel-budget", str(FUEL_BUDGET)]
    with ClusterFixture(tmp_path / "cluster", nodes=3, lease_ttl=2.0, hostnode_args=budgets) as fx:

        async def body() -> None:
            async with fx.client() as c:
                latencies = await probe_while_spinning(c, TIME_BUDGET_S)
            print(f"other database while 5 calls spin: p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
                  f"max {latencies[-1] * 1e3:.1f} ms")  # fmt: skip

        run_async(body())
