"""SIGTERM on a host node hands its leaderships over before it exits (hostnode/handoff.py): the
leader of a 3-replica bank database is sent SIGTERM under transfer load, round after round (a
rolling restart of whichever node leads). Each time:

* the process exits by itself with code 0 (no SIGKILL needed) within the handoff timeout;
* etcd's history proves the order: the database record names another node as leader at a lower
  revision than the one at which the terminating node's ``/nodes/<id>`` key is deleted — which
  it does as the last step of its shutdown (the lease revoked) — so the database had a new leader
  while the old one was still running, rather than one elected after it died;
* afterwards every acknowledged transfer is in the ledger and the money adds up (the bank load
  and checks of tests/cluster/bank_load.py).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from clustermeta.metastore import EventType, MetaStore
from clustermeta.records import DatabaseRecord, db_key, node_key
from orrery.hostnode_process import DEFAULT_HANDOFF_TIMEOUT_S, HANDOFF_MARGIN_S
from sats.identity import Identity
from tests.cluster.bank_load import BankLoad, Ledger, check_bank
from tests.cluster.harness import ClusterFixture, eventually, run_async

pytestmark = pytest.mark.slow

ROUNDS = 3
WORKERS = 4
ACCOUNTS = 20
BALANCE = 1_000_000


async def _leadership_moved_before_exit(store: MetaStore, ident: Identity, node: str, since: int) -> tuple[int, int, str]:
    """(revision at which the record first named another leader, revision of the deletion of the
    node's key, that leader), from etcd's history after revision ``since``."""
    moved: tuple[int, str] | None = None
    watch = await store.watch_prefix(b"/", start_revision=since + 1)
    try:
        async with asyncio.timeout(30):
            async for event in watch:
                if event.kv.key == db_key(ident) and event.type is EventType.PUT and moved is None:
                    leader = DatabaseRecord.from_json(event.kv.value).leader
                    if leader is not None and leader != node:
                        moved = (event.revision, leader)
                if event.kv.key == node_key(node) and event.type is EventType.DELETE:
                    assert moved is not None, f"{node} left the cluster before another node led the database"
                    return moved[0], event.revision, moved[1]
    finally:
        watch.cancel()
    raise AssertionError("unreachable")


async def _wait_exit(fx: ClusterFixture, node: str, bound: float) -> float:
    proc = fx.cluster.procs[node]
    t0 = time.monotonic()

    async def exited() -> bool:
        return not proc.alive()

    await eventually(exited, bound, f"{node} exiting after SIGTERM")
    assert proc.popen is not None and proc.popen.returncode == 0, f"{node} exited with {proc.popen and proc.popen.returncode}:\n{proc.log_tail()}"
    return time.monotonic() - t0


async def _handoffs(fx: ClusterFixture) -> None:
    ledger = Ledger()
    async with fx.client() as c:
        token = await fx.new_identity(c)
        ident = await fx.publish(c, "bank", "bank", token, replicas=3)
        assert (await fx.call(c, "bank", "seed", [ACCOUNTS, BALANCE], token)).status == 200
        store = await fx.store()
        try:
            async with BankLoad(fx.url, "bank", token, ledger, accounts=ACCOUNTS, workers=WORKERS) as load:
                for i in range(ROUNDS):
                    await load.acked_more(len(ledger.acked), what=f"transfers committing before round {i + 1}")
                    leader = await fx.leader(ident)
                    since = await store.current_revision()
                    fx.cluster.procs[leader].signal(signal.SIGTERM)
                    took = await _wait_exit(fx, leader, DEFAULT_HANDOFF_TIMEOUT_S + HANDOFF_MARGIN_S)
                    moved_at, left_at, new_leader = await _leadership_moved_before_exit(store, ident, leader, since)
                    assert moved_at < left_at
                    print(f"\nround {i + 1}: {leader} handed over to {new_leader} and exited in {took:.2f}s "
                          f"(leader at revision {moved_at}, node key deleted at {left_at})")  # fmt: skip
                    record = await fx.record(ident)
                    assert record is not None and record.leader not in (None, leader)
                    fx.cluster.restart(leader)
                await load.acked_more(len(ledger.acked), what="transfers committing after the last round")
        finally:
            await store.close()
        await check_bank(c, "bank", token, ledger, accounts=ACCOUNTS, balance=BALANCE)
    print(
        f"handoff: {len(ledger.acked)} acknowledged, {len(ledger.failed)} failed, {len(ledger.unknown)} unknown "
        f"({dict(ledger.refusals) or 'no refusals'})"
    )


def test_sigterm_hands_leadership_over_before_the_node_exits(tmp_path: Path) -> None:
    with ClusterFixture(tmp_path / "cluster", nodes=3) as fx:
        run_async(_handoffs(fx), timeout=900)


async def _all_at_once(fx: ClusterFixture) -> None:
    """Every host node gets SIGTERM at the same moment (a StatefulSet or namespace deleted)."""
    async with fx.client() as c:
        token = await fx.new_identity(c)
        await fx.publish(c, "bank", "bank", token, replicas=3)
        assert (await fx.call(c, "bank", "seed", [ACCOUNTS, BALANCE], token)).status == 200
        acked = []
        for tid in range(1, 21):
            if (await fx.call(c, "bank", "transfer", [tid, 0, 1, 1], token)).status == 200:
                acked.append(tid)
        nodes = fx.cluster.node_ids()
        for n in nodes:
            fx.cluster.procs[n].signal(signal.SIGTERM)
        for n in nodes:
            await _wait_exit(fx, n, DEFAULT_HANDOFF_TIMEOUT_S + HANDOFF_MARGIN_S)
            log = fx.cluster.procs[n].log.read_text(errors="replace")
            # Nobody waited for its timeout passing leaderships to nodes that were leaving too.
            assert "handoff done" in log and "handoff gave up" not in log, fx.cluster.procs[n].log_tail()
        for n in nodes:
            fx.cluster.restart(n)
        rows = await fx.sql(c, "bank", "SELECT * FROM ledger", token)
    assert set(acked) <= {int(r[0]) for r in rows}


def test_sigterm_to_every_node_at_once_stops_them_without_waiting(tmp_path: Path) -> None:
    with ClusterFixture(tmp_path / "cluster", nodes=3) as fx:
        run_async(_all_at_once(fx), timeout=600)
