"""Index usage: predicates on indexed columns become index point/range scans, joins use index
lookups on the inner side; checked by the rows the datastore hands back (``rows_scanned``) and
by the plan's shape."""

from __future__ import annotations

from typing import Any

import pytest

from hostnode.database import Database
from hostnode.sql import execute_sql, parse_sql
from hostnode.sql.plan import build_plan
from hostnode.sql.typecheck import SchemaView, TQuery, check_statement
from tests.hostnode.conftest import OWNER, DbFactory, call
from tests.hostnode.sql.conftest import O, SqlDb


@pytest.fixture
def ranged(make_db: DbFactory) -> Database:
    """module-test with `ranged` = 50 rows {id: a*10+b, a: 0..5, b: 0..10}; pk id, btree (a, b),
    btree b (`ranged_by_b`)."""
    db = make_db("module-test")
    assert call(db, "seed_ranged").committed
    db.checkpoint()
    return db


def plan_of(db: Database, sql: str) -> list[str]:
    with db.read() as tx:
        view = SchemaView(tx.tables(), caller=OWNER, is_owner=True)
        typed = check_statement(parse_sql(sql), view)
        assert isinstance(typed, TQuery)
        return build_plan(typed.fragments[0], tx.row_count).describe()


def run(db: Database, sql: str) -> tuple[list[tuple[Any, ...]], int]:
    res = execute_sql(db, sql, OWNER)
    return res.rows, res.rows_scanned


@pytest.mark.parametrize(
    ("where", "expected_ids", "scanned", "plan"),
    [
        ("id = 23", {23}, 1, "point ranged_id_idx_btree"),
        ("23 = id", {23}, 1, "point ranged_id_idx_btree"),
        ("id = 23 AND b = 4", set(), 1, "point ranged_id_idx_btree"),
        ("a = 2", set(range(20, 30)), 10, "range ranged_a_b_idx_btree"),
        ("a = 2 AND b = 3", {23}, 1, "point ranged_a_b_idx_btree"),
        ("a = 2 AND b >= 3 AND b < 6", {23, 24, 25}, 3, "range ranged_a_b_idx_btree"),
        ("a = 4 AND b > 8", {49}, 1, "range ranged_a_b_idx_btree"),
        ("b > 7", {8, 18, 28, 38, 48, 9, 19, 29, 39, 49}, 10, "range ranged_by_b"),
        ("b >= 3 AND b <= 3", {3, 13, 23, 33, 43}, 5, "range ranged_by_b"),
        ("5 > b AND b > 3", {4, 14, 24, 34, 44}, 5, "range ranged_by_b"),
        ("b > 7 AND b < 3", set(), 0, "range ranged_by_b"),
        ("id >= 40", set(range(40, 50)), 10, "range ranged_id_idx_btree"),
        ("a >= 4", set(range(40, 50)), 10, "range ranged_a_b_idx_btree"),
        ("a = 1 OR a = 2", set(range(10, 30)), 50, "scan"),
        ("b <> 3", set(range(50)) - {3, 13, 23, 33, 43}, 50, "scan"),
    ],
)
def test_single_table_access(ranged: Database, where: str, expected_ids: set[int], scanned: int, plan: str) -> None:
    sql = f"SELECT * FROM ranged WHERE {where}"
    rows, n = run(ranged, sql)
    assert {r[0] for r in rows} == expected_ids
    assert n == scanned
    assert plan_of(ranged, sql) == [f"ranged: {plan}"]


def test_count_and_projection_use_the_index(ranged: Database) -> None:
    rows, n = run(ranged, "SELECT COUNT(*) AS n FROM ranged WHERE a = 3")
    assert rows == [(10,)] and n == 10
    rows, n = run(ranged, "SELECT b AS bee FROM ranged WHERE id = 7")
    assert rows == [(7,)] and n == 1


def test_index_join(ranged: Database) -> None:
    sql = "SELECT r.* FROM ranged r JOIN ranged s ON r.id = s.id WHERE s.a = 1"
    rows, n = run(ranged, sql)
    assert sorted(r[0] for r in rows) == list(range(10, 20))
    # s by the (a, b) prefix (10 rows), then one pk lookup per s row.
    assert n == 20
    assert plan_of(ranged, sql) == ["s: range ranged_a_b_idx_btree", "r: point ranged_id_idx_btree"]


def test_index_join_through_multi_column_prefix(ranged: Database) -> None:
    sql = "SELECT s.* FROM ranged r JOIN ranged s ON s.a = r.b WHERE r.id = 3"
    rows, n = run(ranged, sql)
    assert sorted(r[0] for r in rows) == list(range(30, 40))
    assert n == 11
    assert plan_of(ranged, sql) == ["r: point ranged_id_idx_btree", "s: range ranged_a_b_idx_btree"]


def test_hash_join_without_index(make_db: DbFactory) -> None:
    db = make_db("module-test")
    for k, v in [("a", "x"), ("b", "y"), ("x", "1"), ("y", "2"), ("z", "3")]:
        assert call(db, "set_kv", k, v).committed
    db.checkpoint()
    # The inner side's join column is its primary key: one index lookup per outer row.
    sql = "SELECT k2.* FROM kv k1 JOIN kv k2 ON k1.value = k2.key"
    rows, n = run(db, sql)
    assert sorted(rows) == [("x", "1"), ("y", "2")]
    assert n == 5 + 2
    assert plan_of(db, sql) == ["k1: scan", "k2: point kv_key_idx_btree"]
    # Neither join column is indexed: the inner side is read once into a hash table.
    sql = "SELECT k1.* FROM kv k1 JOIN kv k2 ON k1.value = k2.value WHERE k2.key <> 'a'"
    rows, n = run(db, sql)
    assert sorted(rows) == [("b", "y"), ("x", "1"), ("y", "2"), ("z", "3")]
    assert n == 5 + 5
    assert plan_of(db, sql) == ["k1: scan", "k2: hash"]


def test_cross_join_reads_inner_once(ranged: Database) -> None:
    rows, n = run(ranged, "SELECT a.* FROM ranged a JOIN ranged b WHERE a.id = 1 AND b.a = 2")
    assert len(rows) == 10 and n == 11


def test_hash_and_direct_indexes(make_db: DbFactory) -> None:
    db = make_db("module-test")
    execute_sql(db, "INSERT INTO hashed VALUES (1, 'x', 10), (2, 'x', 20), (3, 'y', 30)", OWNER)
    execute_sql(db, "INSERT INTO direct_t VALUES (1, 10), (5, 50), (9, 90)", OWNER)
    db.checkpoint()
    rows, n = run(db, "SELECT * FROM hashed WHERE name = 'x'")
    assert sorted(r[0] for r in rows) == [1, 2] and n == 2
    assert plan_of(db, "SELECT * FROM hashed WHERE name = 'x'") == ["hashed: point hashed_name_idx_hash"]
    rows, n = run(db, "SELECT * FROM hashed WHERE code = 30")
    assert rows == [(3, "y", 30)] and n == 1
    # A hash index cannot serve a range: scan.
    rows, n = run(db, "SELECT * FROM hashed WHERE code > 15")
    assert sorted(r[0] for r in rows) == [2, 3] and n == 3
    rows, n = run(db, "SELECT * FROM direct_t WHERE k = 5")
    assert rows == [(5, 50)] and n == 1
    rows, n = run(db, "SELECT * FROM direct_t WHERE k > 1 AND k <= 9")
    assert sorted(rows) == [(5, 50), (9, 90)] and n == 2


def test_dml_uses_indexes(ranged: Database) -> None:
    res = execute_sql(ranged, "DELETE FROM ranged WHERE a = 4 AND b < 5", OWNER)
    assert res.stats.rows_deleted == 5 and res.rows_scanned == 5
    res = execute_sql(ranged, "UPDATE ranged SET b = 99 WHERE id = 3", OWNER)
    assert res.stats.rows_updated == 1 and res.rows_scanned == 1


def test_identity_index_in_partd(partd: SqlDb) -> None:
    # person.owner has a btree index on an Identity column: equality and ranges use it.
    res = partd.sql(f"SELECT * FROM person WHERE owner = 0x{O.to_hex()}")
    assert [r[0] for r in res.rows] == [1] and res.rows_scanned == 1
    res = partd.sql(f"SELECT * FROM person WHERE owner > 0x{O.to_hex()}")
    assert res.rows_scanned == len(res.rows)
    # pet join person: one pk lookup per pet.
    res = partd.sql("SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id WHERE person.age > 30")
    assert res.rows_scanned == 6
