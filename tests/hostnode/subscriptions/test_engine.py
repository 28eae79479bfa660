"""The subscription engine on real databases (LMDB + wasm modules), wired with ``attach``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from hostnode.database import Database, ReducerOutcome
from hostnode.sql import execute_sql
from hostnode.subscriptions import (
    CommitUpdates,
    InitialSubscription,
    SubscribeApplied,
    SubscribeMultiApplied,
    SubscriptionError,
    SubscriptionManager,
    attach,
    writer_view,
)
from sats.bsatn import codec_for
from sats.types import SumValue
from tests.hostnode.conftest import ALICE, BOB, CAROL, OWNER, DbFactory, call


class Harness:
    """A database, a manager attached to it, and everything ``deliver`` was handed."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.mgr = SubscriptionManager.for_database(db)
        self.delivered: list[tuple[ReducerOutcome, CommitUpdates | None]] = []
        attach(self.mgr, db, lambda outcome, updates: self.delivered.append((outcome, updates)))

    def connect(self, conn: str, identity: Any, connection_id: int = 0) -> str:
        self.mgr.connect(conn, identity, connection_id)
        return conn

    def request(self, method: str, conn: str, *args: Any) -> Any:
        with writer_view(self.db) as tx:
            return getattr(self.mgr, method)(conn, tx, *args)

    @property
    def last(self) -> CommitUpdates:
        updates = self.delivered[-1][1]
        assert updates is not None
        return updates

    def decoded(self, table: str, raws: Any) -> Counter[Any]:
        assert self.db.moduledef is not None
        tid = self.db.table_id(table)
        with writer_view(self.db) as tx:
            schema = tx.table_schema(tid)
        codec = codec_for(schema.row_type, schema.typespace)
        return Counter(codec.decode_all(r) for r in raws)

    def changes(self, conn: str, table: str) -> tuple[Counter[Any], Counter[Any]]:
        dels: list[bytes] = []
        ins: list[bytes] = []
        for tu in self.last.update_for(conn):
            assert tu.table_name == table
            for qu in tu.updates:
                dels.extend(qu.deletes)
                ins.extend(qu.inserts)
        return self.decoded(table, dels), self.decoded(table, ins)


@pytest.fixture
def mt(make_db: DbFactory) -> Harness:
    return Harness(make_db("module-test"))


def _secret_rows(h: Harness, update: Any) -> list[Any]:
    return sorted(r[2] for r in h.decoded("secret", [x for tu in update for qu in tu.updates for x in qu.inserts]))


def test_rls_secret_visible_to_its_owner_row_and_the_database_owner(mt: Harness) -> None:
    call(mt.db, "insert_secret", "alice-1", caller=ALICE)
    call(mt.db, "insert_secret", "bob-1", caller=BOB)
    a, b, o = mt.connect("a", ALICE), mt.connect("b", BOB), mt.connect("o", OWNER)
    q = "SELECT * FROM secret"
    ra, rb, ro = (mt.request("subscribe_multi", c, [q], 0, 1) for c in (a, b, o))
    assert _secret_rows(mt, ra.update) == ["alice-1"]
    assert _secret_rows(mt, rb.update) == ["bob-1"]
    assert _secret_rows(mt, ro.update) == ["alice-1", "bob-1"]
    assert mt.mgr.num_queries == 3  # RLS with :sender: one query per caller
    call(mt.db, "insert_secret", "alice-2", caller=ALICE)
    updates = mt.last
    assert _secret_rows(mt, updates.update_for(a)) == ["alice-2"]
    assert updates.update_for(b) == ()
    assert _secret_rows(mt, updates.update_for(o)) == ["alice-2"]
    # One-off queries go through RLS too.
    with writer_view(mt.db) as tx:
        r = mt.mgr.one_off(tx, BOB, q)
    assert sorted(row[2] for row in mt.decoded("secret", r.rows)) == ["bob-1"]


def test_private_table_and_all_tables(mt: Harness) -> None:
    a = mt.connect("a", ALICE)
    r = mt.request("subscribe_single", a, "SELECT * FROM private_note", 1, 1)
    assert isinstance(r, SubscriptionError)
    assert r.error == (
        "no such table: `private_note`. If the table exists, it may be marked private., "
        "executing: `SELECT * FROM private_note`"
    )
    r = mt.request("subscribe", a, ["SELECT * FROM *"], 2)
    assert isinstance(r, InitialSubscription)
    names = {k[0] for k in mt.mgr.queries_of(a)}
    assert "SELECT * FROM kv" in names and "SELECT * FROM secret" in names
    assert "SELECT * FROM private_note" not in names and not any("st_client" in n for n in names)
    o = mt.connect("o", OWNER)
    mt.request("subscribe", o, ["SELECT * FROM *"], 2)
    assert "SELECT * FROM private_note" in {k[0] for k in mt.mgr.queries_of(o)}


def test_reducer_update_is_delete_plus_insert_and_caller_always_gets_its_update(mt: Harness) -> None:
    a, b = mt.connect("a", ALICE), mt.connect("b", BOB)
    r = mt.request("subscribe_single", a, "SELECT * FROM kv WHERE key = 'color'", 0, 1)
    assert isinstance(r, SubscribeApplied) and r.rows.num_rows == 0
    mt.request("subscribe_multi", b, ["SELECT * FROM lifecycle_event"], 0, 1)
    call(mt.db, "set_kv", "color", "red", caller=BOB)
    assert mt.changes(a, "kv") == (Counter(), Counter({("color", "red"): 1}))
    # Bob's queries matched nothing: no group holds him, his caller view is empty tables.
    assert mt.last.update_for(b) == () and all(b not in g for g, _ in mt.last.groups)
    call(mt.db, "set_kv", "color", "blue", caller=BOB)
    update = mt.last.update_for(a)
    assert len(update) == 1 and len(update[0].updates) == 1
    assert mt.changes(a, "kv") == (Counter({("color", "red"): 1}), Counter({("color", "blue"): 1}))
    call(mt.db, "set_kv", "other", "x", caller=BOB)
    assert mt.last.groups == []
    # Failed reducers: nothing to evaluate.
    out = call(mt.db, "fail_with", "nope", caller=ALICE)
    assert not out.committed and mt.delivered[-1] == (out, None)
    # Unsubscribe stops updates.
    mt.request("unsubscribe", a, 0, 1)
    call(mt.db, "set_kv", "color", "green", caller=BOB)
    assert mt.last.groups == []


def test_sql_dml_reaches_subscribers(mt: Harness) -> None:
    a = mt.connect("a", ALICE)
    mt.request("subscribe_multi", a, ["SELECT * FROM kv"], 0, 1)
    execute_sql(mt.db, "INSERT INTO kv (key, value) VALUES ('k', 'v')", OWNER)
    outcome, _ = mt.delivered[-1]
    assert outcome.reducer == ""
    assert mt.changes(a, "kv") == (Counter(), Counter({("k", "v"): 1}))
    execute_sql(mt.db, "UPDATE kv SET value = 'w' WHERE key = 'k'", OWNER)
    assert mt.changes(a, "kv") == (Counter({("k", "v"): 1}), Counter({("k", "w"): 1}))


def test_quickstart_chat_join_both_directions(make_db: DbFactory) -> None:
    h = Harness(make_db("quickstart-chat"))
    h.db.client_connected(ALICE, 1)
    call(h.db, "set_name", "Alice", caller=ALICE)
    call(h.db, "send_message", "hello", caller=ALICE)
    c = h.connect("carol", CAROL)
    q = "SELECT message.* FROM message JOIN user ON message.sender = user.identity WHERE user.online = true"
    r = h.request("subscribe_multi", c, [q, "SELECT * FROM user"], 0, 1)
    assert isinstance(r, SubscribeMultiApplied)
    assert sorted(tu.table_name for tu in r.update) == ["message", "user"]
    # A new message from an online user: one insert (message side changes).
    call(h.db, "send_message", "again", caller=ALICE)
    assert [row[2] for row in h.changes(c, "message")[1]] == ["again"]
    # Alice goes offline: her messages leave the join (user side changes), and the user row
    # is updated (delete + insert) in the other query.
    h.db.client_disconnected(ALICE, 1)
    tables = {tu.table_name: tu for tu in h.last.update_for(c)}
    assert set(tables) == {"message", "user"}
    msgs = h.decoded("message", [x for qu in tables["message"].updates for x in qu.deletes])
    assert sorted(row[2] for row in msgs) == ["again", "hello"]
    users = tables["user"].updates[0]
    assert [row[2] for row in h.decoded("user", users.deletes)] == [True]
    assert [row[2] for row in h.decoded("user", users.inserts)] == [False]
    assert [row[1] for row in h.decoded("user", users.inserts)] == [SumValue(0, "Alice")]


def test_commits_nobody_watches_are_not_evaluated(mt: Harness) -> None:
    a = mt.connect("a", ALICE)
    mt.request("subscribe_multi", a, ["SELECT * FROM secret"], 0, 1)
    call(mt.db, "set_kv", "k", "v", caller=BOB)
    assert mt.last.groups == [] and mt.last.queries_evaluated == 0
    assert mt.mgr.queries_evaluated == 0
    call(mt.db, "insert_secret", "x", caller=ALICE)
    assert mt.last.queries_evaluated == 1 and mt.last.update_for(a) != ()
