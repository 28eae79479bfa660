"""Randomized check: incremental updates equal (after − before) of re-running each query.

Each example builds ``a(id, k, v)`` / ``b(id, k, w)`` (``k`` indexed), subscribes one
connection per query (single-table filters, joins in both directions, a self-join, RLS
fragments with joins), then runs random transactions of inserts, deletes and updates on both
tables. The oracle re-runs every query before and after each commit (as a one-off query); the
engine may not, and must deliver exactly the multiset difference — and a client replica fed
the initial rows plus every update must equal the query's result after each commit.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostnode.subscriptions import SubscribeMultiApplied
from tests.hostnode.conftest import CAROL
from tests.hostnode.subscriptions.conftest import O, SubDb, U
from tests.hostnode.subscriptions.schemas import A, B, make_ab

QUERIES = [
    "SELECT * FROM a",
    "SELECT * FROM a WHERE v > 3",
    "SELECT * FROM b WHERE w = 2 OR k < 2",
    "SELECT * FROM a WHERE k = 3 AND v > 1",
    "SELECT * FROM b WHERE 2 = w",
    "SELECT a.* FROM a JOIN b ON a.k = b.k",
    "SELECT b.* FROM b JOIN a ON b.k = a.k WHERE a.v < 4",
    "SELECT a.* FROM a JOIN b ON a.k = b.k WHERE a.v = b.w",
    "SELECT x.* FROM a AS x JOIN a AS y ON x.k = y.k WHERE y.v > 2",
]
#: RLS rules on a (two fragments, one a join) for the non-owner callers.
RLS = ["SELECT * FROM a WHERE a.v < 2", "SELECT a.* FROM a JOIN b ON a.k = b.k WHERE b.w > 3"]
CALLERS = [O, U, CAROL]

row = st.tuples(st.integers(0, 5), st.integers(0, 7))  # (k, v)
op = st.tuples(st.sampled_from(["ins", "del", "upd"]), st.sampled_from(["a", "b"]), st.integers(0, 11), row)
txs = st.lists(st.lists(op, min_size=1, max_size=6), min_size=1, max_size=8)


def _result(db: SubDb, tx: Any, caller: Any, sql: str) -> Counter[bytes]:
    r = db.mgr.one_off(tx, caller, sql)
    assert r.error is None, r.error
    return Counter(r.rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 11), row), max_size=14), txs=txs)
def test_incremental_matches_rerun(initial: list[Any], txs: list[list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_ab(Path(tmp) / "ab")
        try:
            _run(SubDb(ds, rls=RLS), initial, txs)
        finally:
            ds.close()


def _run(db: SubDb, initial: list[Any], txs: list[list[Any]]) -> None:
    state: dict[str, dict[int, tuple[int, int, int]]] = {"a": {}, "b": {}}
    tids = {"a": A.table_id, "b": B.table_id}

    def apply(tx: Any, ops: list[Any]) -> None:
        for kind, table, ident, (k, v) in ops:
            rows = state[table]
            new = (ident, k, v)
            if kind == "ins" and ident not in rows:
                tx.insert(tids[table], db.encode(table, new))
                rows[ident] = new
            elif kind in ("del", "upd") and ident in rows:
                assert tx.delete_row(tids[table], db.encode(table, rows.pop(ident)))
                if kind == "upd":
                    tx.insert(tids[table], db.encode(table, new))
                    rows[ident] = new

    db.commit(lambda tx: apply(tx, [("ins", t, i, r) for t, i, r in initial]))
    replicas: dict[tuple[Any, str], Counter[bytes]] = {}
    conns: dict[tuple[Any, str], Any] = {}
    for caller in CALLERS:
        for qid, sql in enumerate(QUERIES):
            conn = db.connect(caller)
            r = db.request("subscribe_multi", conn, [sql], 0, qid)
            assert isinstance(r, SubscribeMultiApplied)
            replica: Counter[bytes] = Counter()
            for tu in r.update:
                for qu in tu.updates:
                    replica.update(qu.inserts)
            with db.view() as tx:
                assert replica == _result(db, tx, caller, sql), (caller, sql)
            replicas[caller, sql] = replica
            conns[caller, sql] = conn
    for ops in txs:
        with db.view() as tx:
            before = {key: _result(db, tx, key[0], key[1]) for key in conns}
        out = db.commit(lambda tx, ops=ops: apply(tx, ops))  # type: ignore[misc]
        with db.view() as tx:
            after = {key: _result(db, tx, key[0], key[1]) for key in conns}
        for key, conn in conns.items():
            dels: Counter[bytes] = Counter()
            ins: Counter[bytes] = Counter()
            for tu in out.update_for(conn):
                for qu in tu.updates:
                    dels.update(qu.deletes)
                    ins.update(qu.inserts)
            # Per fragment, deletes and inserts of one row never both appear (cancellation);
            # across fragments they may, so compare the net effect and the replica.
            assert ins - dels == after[key] - before[key], key
            assert dels - ins == before[key] - after[key], key
            replica = replicas[key]
            replica.subtract(dels)
            replica.update(ins)
            assert +replica == after[key] and not -replica, key
            if before[key] == after[key] and key[0] == O:  # one fragment: no change, no message
                assert out.update_for(conn) == (), key
