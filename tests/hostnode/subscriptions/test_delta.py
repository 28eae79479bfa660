"""Incremental evaluation reads O(changed rows), not O(table): proven by counting rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hostnode.subscriptions import SubscribeMultiApplied
from hostnode.txdata import TableChanges, TxData
from tests.hostnode.subscriptions.conftest import SubDb, multiset, rows_of
from tests.hostnode.subscriptions.schemas import A, B, make_ab

N = 100_000


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SubDb]:
    """``a`` with 100,000 rows (k = id % 250, so 400 rows per k), ``b`` with 250 rows."""
    ds = make_ab(Path(tmp_path_factory.mktemp("big")))
    db = SubDb(ds)
    a_codec = db.encode
    tx = ds.begin_mut()
    for i in range(N):
        tx.insert(A.table_id, a_codec("a", (i, i % 250, i % 7)))
    for k in range(250):
        tx.insert(B.table_id, a_codec("b", (k, k, k % 3)))
    tx.commit()
    ds.checkpoint(1)
    yield db
    ds.close()


def test_single_table_filter_update_evaluates_two_rows(big: SubDb) -> None:
    c = big.connect()
    r = big.request("subscribe_multi", c, ["SELECT * FROM a WHERE v > 3"], 0, 1)
    assert isinstance(r, SubscribeMultiApplied) and r.update[0].num_rows == sum(1 for i in range(N) if i % 7 > 3)
    before = big.mgr.rows_evaluated
    out = big.replace("a", (5, 5, 5), (5, 5, 1))
    assert out.rows_evaluated == 2 and big.mgr.rows_evaluated - before == 2
    assert rows_of(big, out.update_for(c)) == (multiset((5, 5, 5)), multiset())
    big.mgr.disconnect(c)


def test_join_update_on_the_big_side_looks_up_one_partner(big: SubDb) -> None:
    c = big.connect()
    big.request("subscribe_multi", c, ["SELECT a.* FROM a JOIN b ON a.k = b.k WHERE b.w = 1"], 0, 1)
    out = big.replace("a", (1, 1, 1), (1, 1, 2))  # b(1, 1, 1) matches
    # 2 changed rows + one b row found by index lookup for each.
    assert out.rows_evaluated == 4
    assert rows_of(big, out.update_for(c)) == (multiset((1, 1, 1)), multiset((1, 1, 2)))
    big.replace("a", (1, 1, 2), (1, 1, 1))
    big.mgr.disconnect(c)


def test_join_update_on_the_small_side_touches_only_its_partners(big: SubDb) -> None:
    c = big.connect()
    big.request("subscribe_multi", c, ["SELECT a.* FROM a JOIN b ON a.k = b.k WHERE b.w = 2"], 0, 1)
    out = big.replace("b", (7, 7, 1), (7, 7, 2))  # b(7) now matches: its 400 a-rows appear
    assert rows_of(big, out.update_for(c))[1] == multiset(*((i, 7, i % 7) for i in range(7, N, 250)))
    # 2 changed b rows; only the new one passes `w = 2` and looks up its 400 partners in a.
    assert out.rows_evaluated == 2 + 400
    big.replace("b", (7, 7, 2), (7, 7, 1))
    big.mgr.disconnect(c)


def test_many_subscribers_one_evaluation(big: SubDb) -> None:
    conns = [big.connect() for _ in range(50)]
    for c in conns:
        big.request("subscribe_multi", c, ["SELECT * FROM a WHERE id = 42"], 0, 1)
    assert big.mgr.num_queries == 1
    out = big.replace("a", (42, 42, 0), (42, 42, 6))
    assert out.queries_evaluated == 1 and out.rows_evaluated == 2
    assert len(out.groups) == 1 and out.groups[0][0] == frozenset(conns)
    for c in conns:
        big.mgr.disconnect(c)
    assert big.mgr.num_queries == 0


def test_point_queries_are_evaluated_only_for_matching_rows(big: SubDb) -> None:
    conns = [big.connect() for _ in range(300)]
    for i, c in enumerate(conns):
        big.request("subscribe_multi", c, [f"SELECT * FROM a WHERE id = {i}"], 0, 1)
    assert big.mgr.num_queries == 300
    out = big.replace("a", (7, 7, 0), (7, 7, 1))
    assert out.queries_evaluated == 1 and out.rows_evaluated == 2
    assert [g for g, _ in out.groups] == [frozenset({conns[7]})]
    big.replace("a", (7, 7, 1), (7, 7, 0))
    for c in conns:
        big.mgr.disconnect(c)
    assert big.mgr.num_queries == 0
    assert not big.mgr.affected_by(TxData({A.table_id: TableChanges([b"x"], [], [1])}))


def test_a_commit_affects_subscribers_only_through_changed_rows_of_their_tables(big: SubDb) -> None:
    """``affected_by`` lets the writer skip opening a read view for a commit nobody watches; it
    must say yes whenever a subscribed table's rows changed, whichever kind of query reads it."""
    assert not big.mgr.affected_by(TxData({A.table_id: TableChanges([b"x"], [], [1])}))  # nobody subscribed
    c = big.connect()
    big.request("subscribe_multi", c, ["SELECT * FROM a"], 0, 1)
    assert big.mgr.affected_by(TxData({A.table_id: TableChanges([b"x"], [], [1])}))
    assert big.mgr.affected_by(TxData({A.table_id: TableChanges([], [b"x"], [])}))
    assert not big.mgr.affected_by(TxData({A.table_id: TableChanges()}))  # touched, nothing changed
    assert not big.mgr.affected_by(TxData({A.table_id + 1000: TableChanges([b"x"], [], [1])}))
    big.mgr.disconnect(c)
    p = big.connect()
    big.request("subscribe_multi", p, ["SELECT * FROM a WHERE id = 3"], 0, 1)  # a point query
    assert big.mgr.affected_by(TxData({A.table_id: TableChanges([b"x"], [], [1])}))
    big.mgr.disconnect(p)
    assert big.mgr.num_queries == 0
