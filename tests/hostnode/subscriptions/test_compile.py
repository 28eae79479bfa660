"""The subscription grammar (B.1): every rejection text, ``SELECT * FROM *``, query identity (B.2)."""

from __future__ import annotations

import pytest

from hostnode.sql import SqlError
from hostnode.sql.typecheck import SchemaView
from hostnode.subscriptions.compile import all_tables_queries, compile_query, is_all_tables
from tests.hostnode.conftest import CAROL
from tests.hostnode.sql.conftest import MSG, PERSON, PET, SECRET, TABLES, O, U

NO_SECRET = "no such table: `secret`. If the table exists, it may be marked private."
PROJ = "Column projections are not supported in subscriptions; Subscriptions must return a table type"


def view(caller=U, rls=()):  # type: ignore[no-untyped-def]
    return SchemaView(TABLES, caller=caller, is_owner=caller == O, rls=rls)


def error(sql: str, caller=U, **kw) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SqlError) as e:
        compile_query(sql, view(caller), **kw)
    return e.value.message


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("INSERT INTO pet (id, owner_id, kind) VALUES (13, 2, 'bird')", "Unsupported: Non-SELECT queries"),
        ("INSERT INTO pet VALUES (1 + 2, 1, 'x')", "Unsupported: Non-SELECT queries"),
        ("UPDATE pet SET kind = 'owl' WHERE id = 13", "Unsupported: Non-SELECT queries"),
        ("DELETE FROM pet WHERE id = 13", "Unsupported: Non-SELECT queries"),
        ("SET row_limit = 5", "Unsupported: Non-SELECT queries"),
        ("SHOW row_limit", "Unsupported: Non-SELECT queries"),
        ("DROP TABLE pet", "Unsupported: Non-SELECT queries"),
        ("SELECT * FROM person LIMIT 1", "Unsupported: SELECT * FROM person LIMIT 1"),
        ("SELECT * FROM person ORDER BY age", "Unsupported: SELECT * FROM person ORDER BY age"),
        ("SELECT DISTINCT * FROM person", "Unsupported SELECT: SELECT DISTINCT * FROM person"),
        ("SELECT * FROM person GROUP BY age", "Unsupported SELECT: SELECT * FROM person GROUP BY age"),
        (
            "SELECT * FROM person UNION SELECT * FROM person",
            "Unsupported set operation: SELECT * FROM person UNION SELECT * FROM person",
        ),
        ("SELECT name, age FROM person WHERE id = 1", PROJ),  # Part D #3
        ("SELECT COUNT(*) AS n FROM person WHERE age > 100", PROJ),  # Part D #4
        ("SELECT COUNT(*) FROM person", "Aggregate expressions must have column aliases"),  # #5
        ("SELECT * FROM pet JOIN person ON pet.owner_id = person.id", "SELECT * is not supported for joins"),  # #10
        ("SELECT person.* FROM person JOIN msg ON person.name = msg.text", "Subscriptions require indexes on join columns"),
        ("SELECT person.* FROM person JOIN pet", "Subscriptions require indexes on join columns"),
        (
            "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id JOIN pet AS p2 ON p2.owner_id = person.id",
            "Invalid number of tables in subscription: 3",
        ),  # #12
        ("SELECT name FROM person JOIN pet ON person.id = pet.owner_id", "Names must be qualified when using joins"),
        ("SELECT * FROM person LEFT JOIN pet ON person.id = pet.owner_id", "Non-inner joins are not supported"),
        ("SELECT * FROM person, pet", "Implicit joins are not supported"),
        ("SELECT * FROM secret", NO_SECRET),  # #15 as U
        ("SELECT * FROM nope", "no such table: `nope`. If the table exists, it may be marked private."),
        ("SELECT * FROM Person", "no such table: `Person`. If the table exists, it may be marked private."),
        ("SELECT * FROM person WHERE person.height > 3", "`height` is not in scope"),
        ("SELECT * FROM person WHERE owner = 0xABCD", "The literal expression `ABCD` cannot be parsed as type `(__identity__: U256)`"),
        ("SELECT * FROM person WHERE age = 300", "The literal expression `300` cannot be parsed as type `U8`"),
        ("SELECT * FROM person WHERE age = 'abc'", "The literal expression `abc` cannot be parsed as type `U8`"),
        ("SELECT * FROM person WHERE nick = 'al'", "The literal expression `al` cannot be parsed as type `(some: String | none: ())`"),
        ("SELECT * FROM person WHERE 1 = 1", "Cannot resolve type for literal expression"),
        ("SELECT * FROM person WHERE age + 1 > 3", "Unsupported binary operator: +"),
        ('SELECT * FROM person WHERE name = "alice"', "`alice` is not in scope"),
        ("SELECT * FROM person p WHERE person.age > 3", "`person` is not in scope"),
        ("", "SubscriptionError: Empty string"),
        ("   \n\t", "SubscriptionError: Empty string"),
        ("SELECT * FROM person; SELECT * FROM pet", "Multiple SQL statements are not supported"),
    ],
)
def test_rejection_texts(sql: str, message: str) -> None:
    assert error(sql) == message


def test_too_long() -> None:
    sql = "SELECT * FROM person WHERE " + " OR ".join(["age = 1"] * 8000)
    assert error(sql).startswith('SQL query exceeds maximum allowed length: "SELECT * FROM person WHERE age = 1')


def test_accepted_forms() -> None:
    for sql in (
        "SELECT * FROM person",
        "select * from person where age > 30 and name <> 'bob'",
        "SELECT p.* FROM person AS p WHERE p.age = '35'",
        "SELECT * FROM person WHERE age = 35.0",
        "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id WHERE person.age > 30",
        "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id",
        "SELECT person.* FROM person INNER JOIN pet ON pet.owner_id = person.id",
        'SELECT * FROM "person"',
        "SELECT * FROM person WHERE owner = :sender",
    ):
        cq = compile_query(sql, view())
        assert cq.table_name in ("person", "pet")


def test_index_rule_one_indexed_side_is_enough() -> None:
    # msg has no index; person.id is the primary key: accepted (superset of 1.12, B.1).
    cq = compile_query("SELECT msg.* FROM msg JOIN person ON msg.sender = person.owner", view())
    assert cq.table_name == "msg" and cq.table_ids == {MSG.table_id, PERSON.table_id}
    # Neither pet.kind nor person.name has an index.
    assert error("SELECT pet.* FROM pet JOIN person ON pet.kind = person.name") == (
        "Subscriptions require indexes on join columns"
    )


def test_one_off_skips_index_and_table_count_checks() -> None:
    compile_query("SELECT person.* FROM person JOIN msg ON person.name = msg.text", view(), one_off=True)
    compile_query(
        "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id JOIN pet AS p2 ON p2.owner_id = person.id",
        view(),
        one_off=True,
    )
    assert error("SELECT name FROM person", one_off=True) == PROJ


def test_owner_sees_private_tables() -> None:
    assert compile_query("SELECT * FROM secret", view(O)).table_id == SECRET.table_id


def test_all_tables_expansion() -> None:
    assert is_all_tables("SELECT * FROM *") and is_all_tables("  select  *  from  *  ")
    assert not is_all_tables("SELECT * FROM person")
    assert all_tables_queries(view(U)) == ["SELECT * FROM person", "SELECT * FROM pet", "SELECT * FROM msg"]
    assert all_tables_queries(view(O))[-1] == "SELECT * FROM secret"


def test_query_identity() -> None:
    a = compile_query("SELECT * FROM person", view(U))
    b = compile_query("SELECT * FROM person", view(CAROL))
    assert a.key == b.key == ("SELECT * FROM person", None)
    # A different spelling is a different query.
    assert compile_query("select * from person", view(U)).key != a.key
    # :sender makes the query per caller.
    s1 = compile_query("SELECT * FROM person WHERE owner = :sender", view(U))
    s2 = compile_query("SELECT * FROM person WHERE owner = :sender", view(CAROL))
    assert s1.key != s2.key and s1.key[1] == U


def test_rls_makes_queries_per_caller_and_expands_fragments() -> None:
    rls = ["SELECT * FROM pet WHERE pet.kind = 'cat'", "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id WHERE person.owner = :sender"]
    u = compile_query("SELECT * FROM pet", view(U, rls))
    assert len(u.fragments) == 2 and u.key == ("SELECT * FROM pet", U)
    assert u.table_ids == {PET.table_id, PERSON.table_id}
    owner = compile_query("SELECT * FROM pet", view(O, rls))
    assert len(owner.fragments) == 1 and owner.key == ("SELECT * FROM pet", O)
