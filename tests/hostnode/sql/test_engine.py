"""``execute_sql`` against real databases (wasm modules, LMDB, commit log): visibility, RLS,
DML permissions, DML results, commits through the engine, durability across reopen."""

from __future__ import annotations

from typing import Any

import pytest

from hostnode.database import Database, ReducerOutcome
from hostnode.sql import SqlError, execute_sql, render_response
from hostnode.txdata import TxData
from hostnode.txrecord import RecordKind, TxRecord
from tests.hostnode.conftest import ALICE, BOB, CAROL, OWNER, DbFactory, call

NO_SECRET = "no such table: `private_note`. If the table exists, it may be marked private."


def sql(db: Database, text: str, caller: Any = OWNER) -> Any:
    res = execute_sql(db, text, caller)
    db.checkpoint()  # let the next read see a DML statement's commit
    return res


def err(db: Database, text: str, caller: Any = OWNER) -> str:
    with pytest.raises(SqlError) as info:
        execute_sql(db, text, caller)
    return str(info.value)


@pytest.fixture
def mt(make_db: DbFactory) -> Database:
    db = make_db("module-test")
    for who, data in [(ALICE, "a1"), (ALICE, "a2"), (BOB, "b1")]:
        assert call(db, "insert_secret", data, caller=who).committed
    assert call(db, "insert_private", "note").committed
    db.checkpoint()
    return db


# --- visibility and row-level security -------------------------------------------------------------


def test_private_table_only_for_the_owner(mt: Database) -> None:
    assert [r[1] for r in sql(mt, "SELECT * FROM private_note").rows] == ["note"]
    assert err(mt, "SELECT * FROM private_note", ALICE) == NO_SECRET
    assert err(mt, "SELECT COUNT(*) AS n FROM private_note", ALICE) == NO_SECRET
    assert err(mt, "SELECT k.* FROM kv k JOIN private_note p ON k.key = p.text", ALICE) == NO_SECRET
    # Typing happens before the permission check, so a non-owner's DML sees "no such table" too.
    assert err(mt, "DELETE FROM private_note", ALICE) == NO_SECRET
    assert err(mt, "SELECT * FROM st_client", ALICE) == "no such table: `st_client`. If the table exists, it may be marked private."
    assert sql(mt, "SELECT * FROM st_client").rows == []


def test_rls_filters_non_owners(mt: Database) -> None:
    def data(caller: Any, q: str = "SELECT * FROM secret") -> list[str]:
        return sorted(r[2] for r in sql(mt, q, caller).rows)

    assert data(OWNER) == ["a1", "a2", "b1"]
    assert data(ALICE) == ["a1", "a2"]
    assert data(BOB) == ["b1"]
    assert data(CAROL) == []
    assert sql(mt, "SELECT COUNT(*) AS n FROM secret", ALICE).rows == [(2,)]
    assert sql(mt, "SELECT data FROM secret WHERE data <> 'a1'", ALICE).rows == [("a2",)]
    assert sql(mt, "SELECT s.data FROM secret s JOIN secret t ON s.id = t.id", BOB).rows == [("b1",)]
    assert sql(mt, "SELECT * FROM secret WHERE owner = :sender", CAROL).rows == []


# --- DML ---------------------------------------------------------------------------------------


def test_dml_is_owner_only(mt: Database) -> None:
    before = mt.last_offset
    msg = f"Caller {ALICE.to_hex()} is not authorized to run SQL DML statements"
    for stmt in ("INSERT INTO kv VALUES ('a', 'b')", "UPDATE kv SET value = 'x'", "DELETE FROM kv", "SET row_limit = 5"):
        assert err(mt, stmt, ALICE) == msg
    # Typing errors win over the permission check.
    assert err(mt, "INSERT INTO kv VALUES ('a')", ALICE) == "Inserting a row with 1 values into `kv` which has 2 fields"
    assert err(mt, "SET nope = 5", ALICE) == "nope is not a valid system variable"
    assert mt.last_offset == before  # nothing was committed


def test_dml_results_and_visibility(mt: Database) -> None:
    res = sql(mt, "INSERT INTO kv (key, value) VALUES ('a', '1'), ('b', '2'), ('c', '3')")
    assert render_response(res)[0]["stats"] == {"rows_inserted": 3, "rows_deleted": 0, "rows_updated": 0}
    assert res.schema.elements == () and res.rows == []
    # An identical row is a no-op and is not counted.
    assert sql(mt, "INSERT INTO kv VALUES ('a', '1')").stats.rows_inserted == 0
    assert sql(mt, "UPDATE kv SET value = 'z' WHERE key <> 'b'").stats.rows_updated == 2
    assert sorted(sql(mt, "SELECT * FROM kv").rows) == [("a", "z"), ("b", "2"), ("c", "z")]
    assert sql(mt, "DELETE FROM kv WHERE value = 'z'").stats.rows_deleted == 2
    assert sql(mt, "DELETE FROM kv WHERE value = 'z'").stats.rows_deleted == 0
    assert sql(mt, "SELECT * FROM kv").rows == [("b", "2")]


def test_insert_column_list_is_positional(mt: Database) -> None:
    # 1.12 quirk: names and order of the column list are ignored, only its length counts.
    sql(mt, "INSERT INTO kv (value, key) VALUES ('k', 'v')")
    assert sql(mt, "SELECT * FROM kv").rows == [("k", "v")]
    assert err(mt, "INSERT INTO kv (key) VALUES ('x', 'y')") == (
        "The number of fields (1) in the INSERT does not match the number of columns (2) of the table `kv`"
    )


@pytest.mark.parametrize(
    ("stmt", "message"),
    [
        ("INSERT INTO ranged VALUES ('1', 2, 3)", "Unexpected type: (expected) String != U32 (inferred)"),
        ("INSERT INTO ranged VALUES (true, 2, 3)", "Unexpected type: (expected) Bool != U32 (inferred)"),
        ("INSERT INTO ranged VALUES (-1, 2, 3)", "The literal expression `-1` cannot be parsed as type `U32`"),
        ("INSERT INTO kv VALUES ('a', true)", "Unexpected type: (expected) Bool != String (inferred)"),
        ("INSERT INTO nope VALUES (1)", "no such table: `nope`. If the table exists, it may be marked private."),
        ("UPDATE kv SET nope = 'x'", "`kv` does not have a field `nope`"),
        ("UPDATE ranged SET a = 'x'", "Unexpected type: (expected) String != U32 (inferred)"),
        ("UPDATE ranged SET a = 1 WHERE nope = 2", "`nope` is not in scope"),
        ("DELETE FROM ranged WHERE x.a = 2", "`x` is not in scope"),
        ("SET row_limit = true", "Unexpected type: (expected) U64 != Bool (inferred)"),
        ("SET row_limit = 'x'", "Unexpected type: (expected) U64 != String (inferred)"),
        ("SET row_limit = -1", "The literal expression `-1` cannot be parsed as type `U64`"),
        ("SET nope = 1", "nope is not a valid system variable"),
        ("SHOW nope", "nope is not a valid system variable"),
    ],
)
def test_dml_typing_errors(mt: Database, stmt: str, message: str) -> None:
    assert err(mt, stmt) == message


def test_numbers_into_strings_and_sequences(mt: Database) -> None:
    sql(mt, "INSERT INTO kv VALUES (5, 1e3)")  # numbers into String columns keep their text
    assert sql(mt, "SELECT * FROM kv").rows == [("5", "1e3")]
    # A zero in an auto-inc column takes the sequence's next value, as in a reducer.
    sql(mt, "INSERT INTO counter VALUES (0, 0, 'first'), (0, 0, 'second')")
    rows = sorted(sql(mt, "SELECT * FROM counter").rows)
    assert [r[2] for r in rows] == ["first", "second"]
    assert rows[0][0] >= 1 and rows[1][0] == rows[0][0] + 1


def test_failed_statement_is_rolled_back(mt: Database) -> None:
    sql(mt, "INSERT INTO kv VALUES ('a', '1')")
    before = mt.last_offset
    with pytest.raises(SqlError):
        execute_sql(mt, "INSERT INTO kv VALUES ('new', 'x'), ('a', 'different')", OWNER)
    mt.checkpoint()
    assert mt.last_offset == before
    assert sql(mt, "SELECT * FROM kv").rows == [("a", "1")]
    # UPDATE making two rows collide on the primary key fails as a whole.
    sql(mt, "INSERT INTO user_email VALUES (1, 'x@a'), (2, 'y@a')")
    with pytest.raises(SqlError):
        execute_sql(mt, "UPDATE user_email SET email = 'same'", OWNER)
    assert sorted(sql(mt, "SELECT * FROM user_email").rows) == [(1, "x@a"), (2, "y@a")]


def test_dml_commits_through_the_engine(mt: Database) -> None:
    seen: list[ReducerOutcome] = []
    mt.on_commit.append(seen.append)
    res = execute_sql(mt, "INSERT INTO kv VALUES ('k', 'v')", OWNER)
    assert res.offset is not None and res.offset == mt.last_offset
    assert mt.wait_durable(res.offset)
    assert len(seen) == 1
    outcome = seen[0]
    assert outcome.committed and outcome.reducer == "" and outcome.caller == OWNER and outcome.connection_id == 0
    assert outcome.txdata is not None and outcome.offset == res.offset
    record = next(iter(mt.clog.read_from(res.offset)))
    txr = TxRecord.decode(record.payload)
    assert txr.kind is RecordKind.SYSTEM and txr.reducer == "" and txr.caller_identity == OWNER.to_bsatn()
    changes = TxData.decode(txr.txdata).tables[mt.table_id("kv") or -1]
    assert len(changes.inserts) == 1 and not changes.deletes


def test_dml_and_vars_survive_reopen(make_db: DbFactory) -> None:
    db = make_db("module-test")
    path = db.path
    execute_sql(db, "INSERT INTO kv VALUES ('a', '1'), ('b', '2')", OWNER)
    execute_sql(db, "UPDATE kv SET value = 'x' WHERE key = 'a'", OWNER)
    execute_sql(db, "DELETE FROM kv WHERE key = 'b'", OWNER)
    execute_sql(db, "SET row_limit = 7", OWNER)
    db.close()
    db = make_db.track(Database.open(path))
    assert execute_sql(db, "SELECT * FROM kv", OWNER).rows == [("a", "x")]
    assert execute_sql(db, "SHOW row_limit", OWNER).rows == [(7,)]


def test_set_show_and_row_limit(mt: Database) -> None:
    assert sql(mt, "SHOW row_limit").rows == []
    assert err(mt, "SHOW row_limit", ALICE) == "no such table: `st_var`. If the table exists, it may be marked private."
    sql(mt, "SET row_limit = 2")
    sql(mt, "SET slow_tx_update_ms TO 100")
    assert sql(mt, "SHOW slow_tx_update_ms").rows == [(100,)]
    assert err(mt, "SELECT * FROM secret", ALICE) == "Estimated cardinality (3 rows) exceeds limit (2 rows)"
    assert len(sql(mt, "SELECT * FROM secret").rows) == 3  # the owner is not limited
    assert len(sql(mt, "SELECT * FROM secret WHERE id = 1", ALICE).rows) <= 1
    sql(mt, "SET row_limit = 1000")
    assert len(sql(mt, "SELECT * FROM secret", ALICE).rows) == 2


def over(var: str, what: str) -> str:
    return f"the query exceeds {var} ({what}); the database owner may change it with SET {var} = <n>"


#: Issue 12's probe: an anonymous 3-way self-join on 100 rows (10^6 result rows, 98.9 MB, 18.8 s).
JOIN3 = "SELECT a.* FROM kv a JOIN kv b ON a.value = b.value JOIN kv c ON b.value = c.value"
JOIN2 = "SELECT a.* FROM kv a JOIN kv b ON a.value = b.value"


@pytest.fixture
def kv100(mt: Database) -> Database:
    values = ", ".join(f"('k{i}', 'same')" for i in range(100))
    sql(mt, f"INSERT INTO kv VALUES {values}")
    return mt


def test_query_limits_stop_a_stranger_s_heavy_join(kv100: Database) -> None:
    db = kv100
    assert err(db, JOIN3, ALICE) == over("max_rows_returned", "more than 100000 rows")
    sql(db, "SET max_rows_returned = 10000000")
    assert sql(db, "SHOW max_rows_returned").rows == [(10_000_000,)]
    assert err(db, JOIN3, ALICE) == over("max_rows_examined", "more than 1000000 rows examined")
    # The owner's own queries are not limited.
    assert len(sql(db, JOIN2).rows) == 10_000
    # Each limit is the owner's to set; it applies to the next query.
    sql(db, "SET max_rows_examined = 50")
    assert err(db, "SELECT * FROM kv", ALICE) == over("max_rows_examined", "more than 50 rows examined")
    assert sql(db, "SELECT * FROM kv WHERE key = 'k7'", ALICE).rows == [("k7", "same")]
    sql(db, "SET max_rows_examined = 1000000")
    sql(db, "SET max_result_bytes = 100")
    assert err(db, "SELECT * FROM kv", ALICE) == over("max_result_bytes", "more than 100 bytes of rows")
    assert err(db, "SELECT key FROM kv", ALICE) == over("max_result_bytes", "more than 100 bytes of rows")
    assert sql(db, "SELECT COUNT(*) AS n FROM kv", ALICE).rows == [(100,)]
    sql(db, "SET max_result_bytes = 100000000")
    assert len(sql(db, JOIN2, ALICE).rows) == 10_000
    # The clock is read once per 1024 rows examined: a zero budget stops any query past that.
    sql(db, "SET query_timeout_ms = 0")
    assert err(db, JOIN2, ALICE) == over("query_timeout_ms", "still running after 0 ms")
    assert len(sql(db, "SELECT * FROM kv", ALICE).rows) == 100


def test_query_limits_are_owner_settings(mt: Database) -> None:
    for var in ("max_rows_examined", "max_rows_returned", "max_result_bytes", "query_timeout_ms"):
        assert err(mt, f"SET {var} = 5", ALICE) == f"Caller {ALICE.to_hex()} is not authorized to run SQL DML statements"
        assert err(mt, f"SET {var} = -1") == "The literal expression `-1` cannot be parsed as type `U64`"
        assert sql(mt, f"SHOW {var}").rows == []


def test_quickstart_chat(make_db: DbFactory) -> None:
    db = make_db("quickstart-chat")
    assert db.client_connected(ALICE, 1).committed
    assert db.client_connected(BOB, 2).committed
    assert call(db, "set_name", "alice", caller=ALICE).committed
    assert call(db, "send_message", "hi", caller=ALICE, timestamp_micros=1_700_000_000_000_000).committed
    db.checkpoint()
    res = sql(db, 'SELECT * FROM "user" WHERE identity = :sender', ALICE)
    body = render_response(res)[0]
    assert body["rows"] == [[[f"0x{ALICE.value:x}"], [0, "alice"], True]]
    res = sql(db, f"SELECT name FROM \"user\" WHERE identity = 0x{BOB.to_hex()}", ALICE)
    assert render_response(res)[0]["rows"] == [[[1, []]]]
    assert res.rows_scanned == 1
    res = sql(db, "SELECT text, sent FROM message WHERE sent >= '2023-11-14T22:13:20Z'")
    assert render_response(res)[0]["rows"] == [["hi", [1_700_000_000_000_000]]]
    assert sql(db, "SELECT * FROM message WHERE sent > '2023-11-14T22:13:20Z'").rows == []
