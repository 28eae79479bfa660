"""The HTTP ``/sql`` halves of ``sql-and-subscriptions.md`` Part D's 20 cases (+ its quick checks)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from hostnode.sql import SqlError, render_response
from sats.types import IDENTITY, STRING, U8, U64, option, product
from tests.hostnode.sql.conftest import MSG, O, SqlDb, U


def err(db: SqlDb, sql: str, caller: Any = U) -> str:
    with pytest.raises(SqlError) as info:
        db.sql(sql, caller)
    return str(info.value)


def ids(rows: list[tuple[Any, ...]]) -> Counter[int]:
    return Counter(r[0] for r in rows)


PERSON_SCHEMA = product(("id", U64), ("name", STRING), ("age", U8), ("owner", IDENTITY), ("nick", option(STRING)))


def test_01_select_star(partd: SqlDb) -> None:
    res = partd.sql("SELECT * FROM person")
    assert res.schema == PERSON_SCHEMA
    body = render_response(res)[0]
    assert [e["name"]["some"] for e in body["schema"]["elements"]] == ["id", "name", "age", "owner", "nick"]
    assert body["schema"]["elements"][3]["algebraic_type"] == {
        "Product": {"elements": [{"name": {"some": "__identity__"}, "algebraic_type": {"U256": []}}]}
    }
    rows = sorted(body["rows"])
    assert rows[0] == [1, "alice", 35, [f"0x{O.value:x}"], [0, "al"]]
    assert rows[1] == [2, "bob", 25, [f"0x{U.value:x}"], [1, []]]


def test_02_and_filter(partd: SqlDb) -> None:
    assert ids(partd.rows("SELECT * FROM person WHERE age > 30 AND name <> 'bob'")) == Counter([1])


def test_03_projection(partd: SqlDb) -> None:
    res = partd.sql("SELECT name, age FROM person WHERE id = 1")
    assert res.schema == product(("name", STRING), ("age", U8))
    assert render_response(res)[0]["rows"] == [["alice", 35]]


def test_04_count_over_empty(partd: SqlDb) -> None:
    res = partd.sql("SELECT COUNT(*) AS n FROM person WHERE age > 100")
    assert res.schema == product(("n", U64))
    assert res.rows == [(0,)]


def test_05_count_needs_alias(partd: SqlDb) -> None:
    assert err(partd, "SELECT COUNT(*) FROM person") == "Aggregate expressions must have column aliases"


def test_06_limit(partd: SqlDb) -> None:
    assert len(partd.rows("SELECT * FROM person LIMIT 1")) == 1
    assert partd.rows("SELECT * FROM person LIMIT 0") == []


def test_07_order_by(partd: SqlDb) -> None:
    assert err(partd, "SELECT * FROM person ORDER BY age") == "Unsupported: SELECT * FROM person ORDER BY age"


def test_08_join_with_filter_on_inner(partd: SqlDb) -> None:
    rows = partd.rows(
        "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id WHERE person.age > 30"
    )
    assert ids(rows) == Counter([10, 11])


def test_09_join_bag_semantics(partd: SqlDb) -> None:
    rows = partd.rows("SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id")
    assert ids(rows) == Counter({1: 2, 2: 1})


def test_10_star_over_join(partd: SqlDb) -> None:
    assert (
        err(partd, "SELECT * FROM pet JOIN person ON pet.owner_id = person.id")
        == "SELECT * is not supported for joins"
    )


def test_11_join_on_unindexed_columns(partd: SqlDb) -> None:
    assert partd.rows("SELECT person.* FROM person JOIN msg ON person.name = msg.text") == []
    partd.insert(MSG, (U.to_sats(), "alice", (1,)), (U.to_sats(), "alice", (2,)), (U.to_sats(), "zed", (3,)))
    rows = partd.rows("SELECT person.* FROM person JOIN msg ON person.name = msg.text")
    assert ids(rows) == Counter({1: 2})


def test_12_three_way_join(partd: SqlDb) -> None:
    rows = partd.rows(
        "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id JOIN pet AS p2 ON p2.owner_id = person.id"
    )
    assert ids(rows) == Counter({1: 4, 2: 1})


def test_13_unqualified_with_join(partd: SqlDb) -> None:
    assert (
        err(partd, "SELECT name FROM person JOIN pet ON person.id = pet.owner_id")
        == "Names must be qualified when using joins"
    )


def test_14_non_inner_and_implicit_joins(partd: SqlDb) -> None:
    assert (
        err(partd, "SELECT * FROM person LEFT JOIN pet ON person.id = pet.owner_id")
        == "Non-inner joins are not supported"
    )
    assert err(partd, "SELECT * FROM person, pet") == "Implicit joins are not supported"


def test_15_private_table(partd: SqlDb) -> None:
    assert partd.rows("SELECT * FROM secret", O) == [(42,)]
    assert (
        err(partd, "SELECT * FROM secret", U)
        == "no such table: `secret`. If the table exists, it may be marked private."
    )


def test_16_sender(partd: SqlDb) -> None:
    assert ids(partd.rows("SELECT * FROM person WHERE owner = :sender", U)) == Counter([2])
    assert ids(partd.rows("SELECT * FROM person WHERE owner = :sender", O)) == Counter([1])
    assert ids(partd.rows(f"SELECT * FROM person WHERE owner = 0x{U.to_hex()}")) == Counter([2])
    assert ids(partd.rows(f"SELECT * FROM person WHERE owner = X'{U.to_hex()}'")) == Counter([2])
    assert ids(partd.rows(f"SELECT * FROM person WHERE owner = '{U.to_hex()}'")) == Counter([2])
    assert (
        err(partd, "SELECT * FROM person WHERE owner = 0xABCD")
        == "The literal expression `ABCD` cannot be parsed as type `(__identity__: U256)`"
    )


def test_17_literal_typing(partd: SqlDb) -> None:
    assert err(partd, "SELECT * FROM person WHERE age = 300") == (
        "The literal expression `300` cannot be parsed as type `U8`"
    )
    assert err(partd, "SELECT * FROM person WHERE age = 'abc'") == (
        "The literal expression `abc` cannot be parsed as type `U8`"
    )
    assert ids(partd.rows("SELECT * FROM person WHERE age = '35'")) == Counter([1])
    assert ids(partd.rows("SELECT * FROM person WHERE age = 35.0")) == Counter([1])


def test_18_option_not_comparable(partd: SqlDb) -> None:
    assert err(partd, "SELECT * FROM person WHERE nick = 'al'") == (
        "The literal expression `al` cannot be parsed as type `(some: String | none: ())`"
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM person WHERE 1 = 1", "Cannot resolve type for literal expression"),
        ("SELECT * FROM person WHERE age + 1 > 3", "Unsupported binary operator: +"),
        ('SELECT * FROM person WHERE name = "alice"', "`alice` is not in scope"),
        ("SELECT * FROM person p WHERE person.age > 3", "`person` is not in scope"),
    ],
)
def test_19_errors(partd: SqlDb, sql: str, message: str) -> None:
    assert err(partd, sql) == message


def test_20_dml(partd: SqlDb) -> None:
    res = partd.sql("INSERT INTO pet (id, owner_id, kind) VALUES (13, 2, 'bird')", O)
    body = render_response(res)[0]
    assert body["schema"] == {"elements": []} and body["rows"] == []
    assert body["stats"] == {"rows_inserted": 1, "rows_deleted": 0, "rows_updated": 0}
    assert (13, 2, "bird") in partd.rows("SELECT * FROM pet")
    res = partd.sql("UPDATE pet SET kind = 'owl' WHERE id = 13", O)
    assert (res.stats.rows_inserted, res.stats.rows_deleted, res.stats.rows_updated) == (0, 0, 1)
    assert partd.rows("SELECT * FROM pet WHERE id = 13") == [(13, 2, "owl")]
    res = partd.sql("DELETE FROM pet WHERE id = 13", O)
    assert (res.stats.rows_inserted, res.stats.rows_deleted, res.stats.rows_updated) == (0, 1, 0)
    assert partd.rows("SELECT * FROM pet WHERE id = 13") == []
    assert err(partd, "INSERT INTO pet (id, owner_id, kind) VALUES (13, 2, 'bird')", U) == (
        f"Caller {U.to_hex()} is not authorized to run SQL DML statements"
    )
    assert partd.rows("SELECT * FROM pet WHERE id = 13") == []
    assert err(partd, "SELECT * FROM pet; SELECT * FROM person") == "Multiple SQL statements are not supported"


def test_row_limit(partd: SqlDb) -> None:
    partd.sql("SET row_limit = 1", O)
    assert err(partd, "SELECT * FROM person", U) == "Estimated cardinality (2 rows) exceeds limit (1 rows)"
    assert len(partd.rows("SELECT * FROM person", O)) == 2
    # A unique-index point lookup is estimated at one row.
    assert len(partd.rows("SELECT * FROM person WHERE id = 1", U)) == 1
    res = partd.sql("SHOW row_limit", O)
    assert res.schema == product(("value", U64)) and res.rows == [(1,)]


def test_quoted_and_case_sensitive_names(partd: SqlDb) -> None:
    assert len(partd.rows('SELECT * FROM "person"')) == 2
    assert err(partd, "SELECT * FROM Person") == (
        "no such table: `Person`. If the table exists, it may be marked private."
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT pet.* FROM pet JOIN pet ON pet.id = pet.id", "Duplicate name `pet`"),
        ("SELECT id AS x, name AS x FROM person", "Duplicate name `x`"),
        ("SELECT q.* FROM person", "`q` is not in scope"),
        ("SELECT person.* FROM person p", "`person` is not in scope"),
        ("SELECT p.nope FROM person p", "`nope` is not in scope"),
        ("SELECT pet.* FROM pet JOIN person ON pet.kind = person.id", "Unexpected type: (expected) U64 != String (inferred)"),
        ("SELECT * FROM person WHERE nick = nick", "Invalid binary operator `=` for type `(some: String | none: ())`"),
    ],
)
def test_name_resolution_errors(partd: SqlDb, sql: str, message: str) -> None:
    assert err(partd, sql) == message


def test_projection_aliases_and_cross_join(partd: SqlDb) -> None:
    res = partd.sql("SELECT p.name AS who, pet.kind FROM person p JOIN pet ON pet.owner_id = p.id WHERE pet.id = 12")
    assert res.schema == product(("who", STRING), ("kind", STRING))
    assert res.rows == [("bob", "fish")]
    assert len(partd.rows("SELECT person.* FROM person CROSS JOIN pet")) == 6
    assert partd.rows("SELECT COUNT(*) AS n FROM person JOIN pet") == [(6,)]
