"""SubscriptionManager requests (B.2, B.3, B.5, B.6, B.7) and per-commit delivery (B.4, §11)."""

from __future__ import annotations

import struct

from hostnode.sql.execute import ST_VAR_META
from hostnode.subscriptions import (
    InitialSubscription,
    OneOffResult,
    SubscribeApplied,
    SubscribeMultiApplied,
    SubscriptionError,
    TransactionFailure,
    UnsubscribeApplied,
    UnsubscribeMultiApplied,
)
from sats.types import SumValue
from tests.hostnode.conftest import CAROL
from tests.hostnode.subscriptions.conftest import O, SubDb, U, multiset, rows_of

ALICE = (1, "alice", 35, O.to_sats(), SumValue(0, "al"))
BOB = (2, "bob", 25, U.to_sats(), SumValue(1, ()))
CAT, DOG, FISH = (10, 1, "cat"), (11, 1, "dog"), (12, 2, "fish")
PERSON_Q = "SELECT * FROM person"
PET_Q = "SELECT * FROM pet"


# --- SubscribeSingle / Unsubscribe -------------------------------------------------------------


def test_subscribe_single_and_unsubscribe(partd: SubDb) -> None:
    c = partd.connect()
    r = partd.request("subscribe_single", c, PET_Q, 5, 7)
    assert isinstance(r, SubscribeApplied) and (r.request_id, r.query_id) == (5, 7)
    assert (r.rows.table_id, r.rows.table_name, len(r.rows.updates)) == (partd.table("pet").table_id, "pet", 1)
    assert rows_of(partd, r.rows) == (multiset(), multiset(CAT, DOG, FISH))
    # Empty result: still one TableUpdate with one (empty) QueryUpdate.
    r = partd.request("subscribe_single", c, "SELECT * FROM msg", 6, 8)
    assert isinstance(r, SubscribeApplied) and r.rows.table_name == "msg" and r.rows.num_rows == 0
    u = partd.request("unsubscribe", c, 9, 7)
    assert isinstance(u, UnsubscribeApplied) and (u.request_id, u.query_id) == (9, 7)
    assert rows_of(partd, u.rows) == (multiset(CAT, DOG, FISH), multiset())
    # No more pet updates.
    assert partd.insert("pet", (13, 2, "x")).update_for(c) == ()
    assert partd.mgr.num_queries == 1


def test_subscribe_single_keeps_text_untrimmed_and_returns_rows_even_if_held(partd: SubDb) -> None:
    c = partd.connect()
    partd.request("subscribe_single", c, PET_Q, 0, 1)
    r = partd.request("subscribe_single", c, PET_Q + " ", 0, 2)
    assert isinstance(r, SubscribeApplied) and r.rows.num_rows == 3
    assert len(partd.mgr.queries_of(c)) == 2  # two different texts
    r = partd.request("subscribe_single", c, PET_Q, 0, 3)
    assert isinstance(r, SubscribeApplied) and r.rows.num_rows == 3
    # Held twice (ids 1 and 3), delivered once.
    update = partd.insert("pet", (13, 2, "x")).update_for(c)
    assert len(update) == 1 and len(update[0].updates) == 2  # two distinct texts


def test_subscribe_single_errors(partd: SubDb) -> None:
    c = partd.connect()
    r = partd.request("subscribe_single", c, "SELECT * FROM secret", 3, 4)
    assert isinstance(r, SubscriptionError) and (r.request_id, r.query_id, r.table_id) == (3, 4, None)
    assert r.error == "no such table: `secret`. If the table exists, it may be marked private., executing: `SELECT * FROM secret`"
    partd.request("subscribe_single", c, PET_Q, 0, 4)
    r = partd.request("subscribe_single", c, PERSON_Q, 0, 4)
    assert isinstance(r, TransactionFailure)
    assert r.message.startswith("Subscription with id QueryId { id: 4 } already exists for client: ")
    r = partd.request("subscribe_multi", c, [PERSON_Q], 0, 4)
    assert isinstance(r, TransactionFailure)


def test_unsubscribe_unknown_and_the_1_12_shared_id_quirk(partd: SubDb) -> None:
    c = partd.connect()
    r = partd.request("unsubscribe", c, 1, 99)
    assert r == SubscriptionError(r.micros, 1, 99, "Subscription not found: QueryId { id: 99 }")
    r = partd.request("unsubscribe_multi", c, 1, 99)
    assert isinstance(r, SubscriptionError) and r.error.startswith("Subscription not found")
    partd.request("subscribe_single", c, PET_Q, 0, 1)
    partd.request("subscribe_multi", c, [PET_Q], 0, 2)
    r = partd.request("unsubscribe", c, 0, 1)
    assert isinstance(r, SubscriptionError) and r.error == "Internal error"
    # Removed all the same; the query is still held through id 2.
    assert partd.insert("pet", (13, 2, "x")).update_for(c) != ()
    assert isinstance(partd.request("unsubscribe", c, 0, 1), SubscriptionError)


# --- SubscribeMulti / UnsubscribeMulti ---------------------------------------------------------


def test_subscribe_multi_only_new_queries_and_dedupe(partd: SubDb) -> None:
    c = partd.connect()
    r = partd.request("subscribe_multi", c, [PET_Q, " " + PET_Q, PERSON_Q], 1, 1)
    assert isinstance(r, SubscribeMultiApplied)
    assert sorted(t.table_name for t in r.update) == ["person", "pet"]  # trimmed duplicates deduped
    r = partd.request("subscribe_multi", c, [PET_Q, "SELECT * FROM pet WHERE kind = 'cat'"], 2, 2)
    assert isinstance(r, SubscribeMultiApplied)
    assert rows_of(partd, r.update) == (multiset(), multiset(CAT))  # pet already held: not re-sent
    # Unsubscribing set 1: person drops to 0 (deleted), pet is still held by set 2 (not sent).
    u = partd.request("unsubscribe_multi", c, 3, 1)
    assert isinstance(u, UnsubscribeMultiApplied) and (u.request_id, u.query_id) == (3, 1)
    assert rows_of(partd, u.update) == (multiset(ALICE, BOB), multiset())
    assert [t.table_name for t in u.update] == ["person"]
    assert rows_of(partd, partd.insert("pet", (13, 1, "cat")).update_for(c)) == (
        multiset(),
        multiset((13, 1, "cat"), (13, 1, "cat")),  # two distinct queries, one QueryUpdate each
    )
    assert partd.insert("person", (3, "c", 1, U.to_sats(), SumValue(1, ()))).update_for(c) == ()


def test_subscribe_multi_is_all_or_nothing(partd: SubDb) -> None:
    c = partd.connect()
    r = partd.request("subscribe_multi", c, [PET_Q, "SELECT * FROM secret"], 1, 1)
    assert isinstance(r, SubscriptionError) and (r.request_id, r.query_id) == (1, 1)
    assert r.error.endswith(", executing: `SELECT * FROM secret`")
    assert partd.mgr.queries_of(c) == frozenset() and partd.mgr.num_queries == 0
    # The id was not taken.
    assert isinstance(partd.request("subscribe_multi", c, [PET_Q], 1, 1), SubscribeMultiApplied)


def test_subscribe_multi_empty_tables_are_omitted(partd: SubDb) -> None:
    c = partd.connect()
    r = partd.request("subscribe_multi", c, ["SELECT * FROM msg"], 1, 1)
    assert isinstance(r, SubscribeMultiApplied) and r.update == ()


# --- legacy Subscribe --------------------------------------------------------------------------


def test_legacy_subscribe_replaces_its_set(partd: SubDb) -> None:
    c = partd.connect()
    r = partd.request("subscribe", c, [PET_Q], 4)
    assert isinstance(r, InitialSubscription) and r.request_id == 4
    assert rows_of(partd, r.update)[1] == multiset(CAT, DOG, FISH)
    r = partd.request("subscribe", c, [PET_Q, PERSON_Q], 5)
    # Every query of the new set, even the one already held.
    assert sorted(t.table_name for t in r.update) == ["person", "pet"]
    r = partd.request("subscribe", c, [PERSON_Q], 6)
    assert partd.insert("pet", (13, 2, "x")).update_for(c) == ()
    assert partd.mgr.num_queries == 1
    r = partd.request("subscribe", c, ["SELECT * FROM nope"], 7)
    assert isinstance(r, TransactionFailure)
    assert r.message == "no such table: `nope`. If the table exists, it may be marked private., executing: `SELECT * FROM nope`"
    assert {k[0] for k in partd.mgr.queries_of(c)} == {PERSON_Q}  # failure keeps the old set


def test_disconnect_drops_everything(partd: SubDb) -> None:
    c = partd.connect()
    partd.request("subscribe", c, [PET_Q], 0)
    partd.request("subscribe_multi", c, [PERSON_Q], 0, 1)
    partd.request("subscribe_single", c, "SELECT * FROM pet WHERE id = 10", 0, 2)
    partd.mgr.disconnect(c)
    assert partd.mgr.num_queries == 0
    assert partd.insert("pet", (13, 2, "x")).groups == []


# --- delivery ----------------------------------------------------------------------------------


def test_shared_evaluation_and_grouping(partd: SubDb) -> None:
    a, b, c, d = (partd.connect(who) for who in (U, CAROL, U, CAROL))
    for conn in (a, b):
        partd.request("subscribe_multi", conn, [PET_Q], 0, 1)
    partd.request("subscribe_multi", c, [PET_Q, PERSON_Q], 0, 1)
    partd.request("subscribe_multi", d, [PERSON_Q], 0, 1)
    assert partd.mgr.num_queries == 2
    out = partd.insert("pet", (13, 2, "x"))
    assert out.queries_evaluated == 1  # pet query, once for three connections
    assert out.rows_evaluated == 1
    # a, b, c hold the same matching set ({pet}): one group, one shared update object.
    assert len(out.groups) == 1
    conns, update = out.groups[0]
    assert conns == {a, b, c}
    assert out.update_for(a) is out.update_for(c) is update
    assert out.update_for(d) == ()
    out = partd.insert("person", (3, "c", 1, U.to_sats(), SumValue(1, ())))
    assert out.queries_evaluated == 1 and {frozenset(g) for g, _ in out.groups} == {frozenset({c, d})}


def test_commit_touching_nothing_subscribed(partd: SubDb) -> None:
    c = partd.connect()
    partd.request("subscribe_multi", c, ["SELECT * FROM pet WHERE kind = 'cat'"], 0, 1)
    out = partd.insert("pet", (13, 2, "dog"))
    # `kind = 'cat'` is indexed by value: a dog does not even evaluate the query.
    assert out.groups == [] and out.update_for(c) == () and out.queries_evaluated == 0
    partd.request("subscribe_multi", c, ["SELECT * FROM pet WHERE kind <> 'cat'"], 0, 2)
    out = partd.insert("pet", (14, 2, "cat"))
    assert out.queries_evaluated == 2 and len(out.update_for(c)[0].updates) == 1
    out = partd.insert("msg", (U.to_sats(), "hi", (0,)))
    assert out.queries_evaluated == 0


def test_identical_delete_and_reinsert_is_no_change(partd: SubDb) -> None:
    c = partd.connect()
    partd.request("subscribe_multi", c, [PET_Q, "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id"], 0, 1)
    tid = partd.table("pet").table_id
    raw = partd.encode("pet", CAT)

    def run(tx):  # type: ignore[no-untyped-def]
        assert tx.delete_row(tid, raw)
        tx.insert(tid, raw)

    assert partd.commit(run).groups == []


def test_update_that_leaves_the_filter_is_only_a_delete(partd: SubDb) -> None:
    c = partd.connect()
    partd.request("subscribe_multi", c, ["SELECT * FROM pet WHERE kind = 'cat'"], 0, 1)
    assert rows_of(partd, partd.replace("pet", CAT, (10, 1, "lion")).update_for(c)) == (multiset(CAT), multiset())
    assert rows_of(partd, partd.replace("pet", (10, 1, "lion"), CAT).update_for(c)) == (multiset(), multiset(CAT))


# --- RLS, row limit, one-off -------------------------------------------------------------------


RLS = ["SELECT * FROM pet WHERE pet.owner_id = 2", "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id WHERE person.owner = :sender"]


def test_rls_hides_rows_from_non_owners_not_from_the_owner(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.hostnode.sql.conftest import make_partd

    sql = make_partd(tmp_path / "rls")
    db = SubDb(sql.ds, rls=RLS)
    try:
        owner, u, carol = db.connect(O), db.connect(U), db.connect(CAROL)
        ro = db.request("subscribe_multi", owner, [PET_Q], 0, 1)
        ru = db.request("subscribe_multi", u, [PET_Q], 0, 1)
        rc = db.request("subscribe_multi", carol, [PET_Q], 0, 1)
        assert rows_of(db, ro.update)[1] == multiset(CAT, DOG, FISH)
        # U owns bob (id 2): rule 1 and rule 2 both match fish, two fragments → fish twice.
        assert rows_of(db, ru.update)[1] == multiset(FISH, FISH)
        assert len(ru.update) == 2
        assert rows_of(db, rc.update)[1] == multiset(FISH)
        assert db.mgr.num_queries == 3  # per caller
        out = db.insert("pet", (13, 1, "rat"), (14, 2, "owl"))
        assert rows_of(db, out.update_for(owner))[1] == multiset((13, 1, "rat"), (14, 2, "owl"))
        assert rows_of(db, out.update_for(u))[1] == multiset((14, 2, "owl"), (14, 2, "owl"))
        assert rows_of(db, out.update_for(carol))[1] == multiset((14, 2, "owl"))
        # Handing alice's person row to U makes her pets visible to U (RLS join incremental).
        new_alice = (1, "alice", 35, U.to_sats(), SumValue(0, "al"))
        out = db.replace("person", ALICE, new_alice)
        assert rows_of(db, out.update_for(u)) == (multiset(), multiset(CAT, DOG, (13, 1, "rat")))
        assert out.update_for(owner) == () and out.update_for(carol) == ()
        r = db.mgr.one_off(_view(db), U, PET_Q)
        assert r.table_name == "pet" and multiset(*(db.decode("pet", x) for x in r.rows)) == multiset(
            CAT, DOG, (13, 1, "rat"), FISH, FISH, (14, 2, "owl"), (14, 2, "owl")
        )
    finally:
        sql.ds.close()


def _view(db: SubDb):  # type: ignore[no-untyped-def]
    # One-off queries just need a consistent read view; a checkpointed ReadTx is one.
    db.ds.checkpoint(db.ds.applied_offset() + 1)
    return db.ds.begin_read()


def test_row_limit_applies_to_non_owners(partd: SubDb) -> None:
    partd.commit(lambda tx: tx.put_meta(ST_VAR_META + b"row_limit", struct.pack("<Q", 1)))
    u, o = partd.connect(U), partd.connect(O)
    r = partd.request("subscribe_single", u, PERSON_Q, 0, 1)
    assert isinstance(r, SubscriptionError)
    assert r.error == "Estimated cardinality (2 rows) exceeds limit (1 rows), executing: `SELECT * FROM person`"
    r = partd.request("subscribe_multi", u, [PERSON_Q], 0, 1)
    assert isinstance(r, SubscriptionError) and r.error == "Internal error evaluating queries"
    assert isinstance(partd.request("subscribe", u, [PERSON_Q], 0), TransactionFailure)
    assert isinstance(partd.request("subscribe_single", o, PERSON_Q, 0, 1), SubscribeApplied)
    with partd.view() as tx:
        assert partd.mgr.one_off(tx, U, PERSON_Q).error == "Estimated cardinality (2 rows) exceeds limit (1 rows)"
        assert len(partd.mgr.one_off(tx, O, PERSON_Q).rows) == 2


def test_initial_rows_run_under_the_query_limits(partd: SubDb) -> None:
    """A stranger's subscription whose initial rows go over a limit is refused, naming it; the
    owner's is not limited, and nothing of the refused one stays subscribed."""
    partd.commit(lambda tx: tx.put_meta(ST_VAR_META + b"max_rows_returned", struct.pack("<Q", 1)))
    error = (
        "the query exceeds max_rows_returned (more than 1 rows); "
        "the database owner may change it with SET max_rows_returned = <n>"
    )
    u, o = partd.connect(U), partd.connect(O)
    r = partd.request("subscribe_single", u, PERSON_Q, 0, 1)
    assert isinstance(r, SubscriptionError) and r.error == f"{error}, executing: `{PERSON_Q}`"
    r = partd.request("subscribe_multi", u, [PERSON_Q], 0, 2)
    assert isinstance(r, SubscriptionError) and r.error == error
    r = partd.request("subscribe", u, [PERSON_Q], 0)
    assert isinstance(r, TransactionFailure) and r.message == error
    assert partd.mgr.queries_of(u) == frozenset()
    assert isinstance(partd.request("subscribe_single", o, PERSON_Q, 0, 1), SubscribeApplied)


def test_one_off_queries(partd: SubDb) -> None:
    with partd.view() as tx:
        r = partd.mgr.one_off(tx, U, "SELECT person.* FROM person JOIN msg ON person.name = msg.text")
        assert r == OneOffResult(r.micros, "person", (), table_id=partd.table("person").table_id)
        r = partd.mgr.one_off(tx, U, "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id")
        assert multiset(*(partd.decode("person", x) for x in r.rows)) == multiset(ALICE, ALICE, BOB)
        r = partd.mgr.one_off(tx, U, "SELECT * FROM secret")
        assert r.error == "no such table: `secret`. If the table exists, it may be marked private." and r.rows == ()
        assert r.table_name is None
        assert partd.mgr.one_off(tx, U, "SELECT * FROM pet; SELECT * FROM person").error == (
            "Multiple SQL statements are not supported"
        )
        assert partd.mgr.one_off(tx, U, "SELECT name FROM person").error.startswith("Column projections")  # type: ignore[union-attr]
        assert partd.mgr.one_off(tx, O, "SELECT * FROM secret").rows == (partd.encode("secret", (42,)),)


def test_one_off_queries_run_under_the_query_limits(partd: SubDb) -> None:
    join = "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id"
    partd.commit(lambda tx: tx.put_meta(ST_VAR_META + b"max_rows_returned", struct.pack("<Q", 2)))
    with partd.view() as tx:
        r = partd.mgr.one_off(tx, U, join)
        assert r.error == (
            "the query exceeds max_rows_returned (more than 2 rows); "
            "the database owner may change it with SET max_rows_returned = <n>"
        )
        assert r.rows == ()
        assert len(partd.mgr.one_off(tx, O, join).rows) == 3  # the owner is not limited


# --- module updates ----------------------------------------------------------------------------


def test_module_updated_recompiles_queries_and_drops_those_that_no_longer_compile(partd: SubDb) -> None:
    db = partd
    by_id = "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id"  # person.id: the primary key
    siblings = "SELECT a.* FROM pet a JOIN pet b ON a.owner_id = b.owner_id"  # only pet.owner_id is indexed
    a, b = db.connect(U), db.connect(CAROL)
    assert isinstance(db.request("subscribe_multi", a, [by_id], 0, 1), SubscribeMultiApplied)
    assert isinstance(db.request("subscribe_multi", b, [by_id, siblings], 0, 1), SubscribeMultiApplied)
    tx = db.ds.begin_mut()
    tx.drop_index(db.table("pet").indexes[1].index_id)  # pet_owner_id_idx_btree, as an update does
    tx.commit()
    with db.view() as view:
        failed = db.mgr.module_updated(view, ())
    error = f"Subscriptions require indexes on join columns, executing: `{siblings}`"
    assert failed == [(b, SubscriptionError(0, None, None, error))]
    assert db.mgr.queries_of(a) == {(by_id, None)} and db.mgr.queries_of(b) == frozenset()
    # A new person row is joined to its pets without the dropped index (a stale plan would
    # still look them up by it).
    assert db.insert("pet", (13, 3, "rat")).update_for(a) == ()
    out = db.insert("person", (3, "carl", 40, U.to_sats(), SumValue(1, ())))
    assert rows_of(db, out.update_for(a)) == (multiset(), multiset((13, 3, "rat")))
    assert out.update_for(b) == ()


def test_module_updated_takes_the_new_rls_rules(partd: SubDb) -> None:
    db = partd
    u = db.connect(U)
    assert rows_of(db, db.request("subscribe_multi", u, [PET_Q], 0, 1).update)[1] == multiset(CAT, DOG, FISH)
    with db.view() as view:
        failed = db.mgr.module_updated(view, ["SELECT * FROM pet WHERE pet.owner_id = 2"])
    # The hub disconnects every client before this; a query that is left becomes caller-specific.
    error = f"the module's row-level-security rules changed: subscribe again, executing: `{PET_Q}`"
    assert failed == [(u, SubscriptionError(0, None, None, error))]
    assert rows_of(db, db.request("subscribe_multi", u, [PET_Q], 0, 2).update)[1] == multiset(FISH)
    assert db.mgr.one_off(_view(db), U, PET_Q).rows == (db.encode("pet", FISH),)
