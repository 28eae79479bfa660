"""Part D of sql-and-subscriptions.md, subscription side ("SUB" = SubscribeMulti as U)."""

from __future__ import annotations

from hostnode.subscriptions import SubscribeMultiApplied, SubscriptionError
from sats.types import SumValue
from tests.hostnode.subscriptions.conftest import O, SubDb, U, multiset, rows_of

ALICE = (1, "alice", 35, O.to_sats(), SumValue(0, "al"))
BOB = (2, "bob", 25, U.to_sats(), SumValue(1, ()))
CAT, DOG, FISH = (10, 1, "cat"), (11, 1, "dog"), (12, 2, "fish")


def sub(db: SubDb, *sqls: str, caller=U, query_id: int = 1):  # type: ignore[no-untyped-def]
    conn = db.connect(caller)
    return conn, db.request("subscribe_multi", conn, list(sqls), 0, query_id)


def test_1_2_single_table(partd: SubDb) -> None:
    _, r = sub(partd, "SELECT * FROM person")
    assert isinstance(r, SubscribeMultiApplied)
    assert [t.table_name for t in r.update] == ["person"] and r.update[0].num_rows == 2
    assert rows_of(partd, r.update) == (multiset(), multiset(ALICE, BOB))
    _, r = sub(partd, "SELECT * FROM person WHERE age > 30 AND name <> 'bob'")
    assert rows_of(partd, r.update)[1] == multiset(ALICE)


def test_8_join_projecting_pet(partd: SubDb) -> None:
    conn, r = sub(partd, "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id WHERE person.age > 30")
    assert [t.table_name for t in r.update] == ["pet"]
    assert rows_of(partd, r.update) == (multiset(), multiset(CAT, DOG))
    older = (1, "alice", 20, O.to_sats(), SumValue(0, "al"))
    out = partd.replace("person", ALICE, older)
    update = out.update_for(conn)
    assert [t.table_name for t in update] == ["pet"]  # no person rows
    assert rows_of(partd, update) == (multiset(CAT, DOG), multiset())
    # And back: the pets come back as inserts.
    assert rows_of(partd, partd.replace("person", older, ALICE).update_for(conn)) == (multiset(), multiset(CAT, DOG))


def test_9_join_projecting_person_bag_semantics(partd: SubDb) -> None:
    conn, r = sub(partd, "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id")
    assert rows_of(partd, r.update) == (multiset(), multiset(ALICE, ALICE, BOB))
    assert rows_of(partd, partd.insert("pet", (13, 2, "x")).update_for(conn)) == (multiset(), multiset(BOB))
    assert rows_of(partd, partd.delete("pet", FISH).update_for(conn)) == (multiset(BOB), multiset())
    # Both of alice's pets go at once: two deletes of alice.
    assert rows_of(partd, partd.delete("pet", CAT, DOG).update_for(conn)) == (multiset(ALICE, ALICE), multiset())


def test_9_person_update_with_partners_is_delete_plus_insert_per_partner(partd: SubDb) -> None:
    conn, _ = sub(partd, "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id")
    new = (1, "alicia", 35, O.to_sats(), SumValue(0, "al"))
    update = partd.replace("person", ALICE, new).update_for(conn)
    assert len(update) == 1 and len(update[0].updates) == 1  # one TableUpdate, one QueryUpdate
    assert rows_of(partd, update) == (multiset(ALICE, ALICE), multiset(new, new))


def test_join_both_sides_change_in_one_tx(partd: SubDb) -> None:
    conn, _ = sub(partd, "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id")
    carol = (3, "carol", 40, U.to_sats(), SumValue(1, ()))

    def run(tx):  # type: ignore[no-untyped-def]
        tx.insert(partd.table("person").table_id, partd.encode("person", carol))
        tx.insert(partd.table("pet").table_id, partd.encode("pet", (20, 3, "owl")))
        tx.insert(partd.table("pet").table_id, partd.encode("pet", (21, 3, "emu")))
        tx.delete_row(partd.table("pet").table_id, partd.encode("pet", FISH))

    assert rows_of(partd, partd.commit(run).update_for(conn)) == (multiset(BOB), multiset(carol, carol))


def test_10_11_12_15_rejections_arrive_as_subscription_errors(partd: SubDb) -> None:
    for sql, msg in (
        ("SELECT * FROM pet JOIN person ON pet.owner_id = person.id", "SELECT * is not supported for joins"),
        ("SELECT person.* FROM person JOIN msg ON person.name = msg.text", "Subscriptions require indexes on join columns"),
        ("SELECT * FROM secret", "no such table: `secret`. If the table exists, it may be marked private."),
    ):
        _, r = sub(partd, sql)
        assert r == SubscriptionError(r.micros, 0, 1, f"{msg}, executing: `{sql}`")


def test_15_owner_and_all_tables(partd: SubDb) -> None:
    _, r = sub(partd, "SELECT * FROM secret", caller=O)
    assert rows_of(partd, r.update) == (multiset(), multiset((42,)))
    conn, r = sub(partd, "SELECT * FROM *")
    # msg is empty, so its fragment is omitted (B.3).
    assert sorted(t.table_name for t in r.update) == ["person", "pet"]
    assert {k[0] for k in partd.mgr.queries_of(conn)} == {"SELECT * FROM person", "SELECT * FROM pet", "SELECT * FROM msg"}
    _, r = sub(partd, "SELECT * FROM *", caller=O)
    assert sorted(t.table_name for t in r.update) == ["person", "pet", "secret"]


def test_16_sender(partd: SubDb) -> None:
    _, r = sub(partd, "SELECT * FROM person WHERE owner = :sender")
    assert rows_of(partd, r.update)[1] == multiset(BOB)
    _, r = sub(partd, "SELECT * FROM person WHERE owner = :sender", caller=O)
    assert rows_of(partd, r.update)[1] == multiset(ALICE)
    _, r = sub(partd, f"SELECT * FROM person WHERE owner = 0x{U.to_hex()}")
    assert rows_of(partd, r.update)[1] == multiset(BOB)
    _, r = sub(partd, f"SELECT * FROM person WHERE owner = '{U.to_hex()}'")
    assert rows_of(partd, r.update)[1] == multiset(BOB)


def test_17_literals(partd: SubDb) -> None:
    _, r = sub(partd, "SELECT * FROM person WHERE age = '35'")
    assert rows_of(partd, r.update)[1] == multiset(ALICE)
    _, r = sub(partd, "SELECT * FROM person WHERE age = 35.0")
    assert rows_of(partd, r.update)[1] == multiset(ALICE)


def test_20_insert_update_delete_sequence(partd: SubDb) -> None:
    conn, _ = sub(partd, "SELECT * FROM pet")
    assert rows_of(partd, partd.insert("pet", (13, 2, "bird")).update_for(conn)) == (multiset(), multiset((13, 2, "bird")))
    update = partd.replace("pet", (13, 2, "bird"), (13, 2, "owl")).update_for(conn)
    assert len(update) == 1 and len(update[0].updates) == 1
    assert rows_of(partd, update) == (multiset((13, 2, "bird")), multiset((13, 2, "owl")))
    assert rows_of(partd, partd.delete("pet", (13, 2, "owl")).update_for(conn)) == (multiset((13, 2, "owl")), multiset())
