"""Two control planes on a real cluster: one is active; when it dies the other takes over, and
publishes, elections and failovers carry on through it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from clustermeta.records import CONTROLPLANE_LEADER_KEY, ControlPlaneInfo
from orrery.cluster_local import Proc, free_port
from tests.cluster.harness import ClusterFixture, eventually, run_async

pytestmark = pytest.mark.slow


async def _active(fx: ClusterFixture) -> str | None:
    store = await fx.store()
    try:
        kv = await store.get(CONTROLPLANE_LEADER_KEY)
    finally:
        await store.close()
    return None if kv is None else ControlPlaneInfo.from_json(kv.value).id


def test_a_standby_control_plane_takes_over(tmp_path: Path) -> None:
    with ClusterFixture(tmp_path / "c", nodes=3) as fx:
        first = fx.cluster.procs["controlplane"]
        address = f"127.0.0.1:{free_port()}"
        argv = list(first.argv)
        argv[argv.index("--id") + 1] = "controlplane-2"
        argv[argv.index("--listen-addr") + 1] = address
        argv[argv.index("--metrics-addr") + 1] = f"127.0.0.1:{free_port()}"
        second = Proc("controlplane-2", argv, fx.cluster.dir / "logs" / "controlplane-2.log", address)
        second.start(fx.cluster.env)
        try:
            second.wait_ready(60)
            run_async(_take_over(fx, first, second), 300)
        finally:
            second.stop()


async def _take_over(fx: ClusterFixture, first: Proc, second: Proc) -> None:
    assert await _active(fx) == "controlplane-1"
    async with fx.client() as c:
        token = await fx.new_identity(c)
        ident = await fx.publish(c, "bank", "bank", token, replicas=3)
        assert (await fx.call(c, "bank", "seed", [10, 100], token)).status == 200
        first.kill()

        async def second_active() -> bool:
            return await _active(fx) == "controlplane-2"

        await eventually(second_active, 60, "the standby taking over")
        # Publishing goes through the new active control plane.
        await fx.publish(c, "bank-two", "bank", token, replicas=3)
        # And it runs elections: the leader of the first database dies.
        leader = await fx.leader(ident)
        fx.cluster.procs[leader].kill()
        ids = itertools.count(1)

        async def committed() -> bool:
            tid = next(ids)
            return (await fx.call(c, "bank", "transfer", [tid, 1, 2, 1], token)).status == 200

        await eventually(committed, 60, "a failover run by the second control plane")
        assert await fx.leader(ident) != leader
