"""Row-level security rewriting (Part C) with hand-written rules over the Part D tables:
join rules, rules referencing other RLS tables, bag union of several rules, cycles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from hostnode.sql import SqlError
from sats.identity import Identity
from tests.hostnode.sql.conftest import O, SqlDb, U, make_partd

OWN_PERSON = "SELECT * FROM person WHERE person.owner = :sender"
# A pet is visible when its owner is: a join rule whose other table has rules of its own.
OWN_PET = "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id"


Maker = Callable[[Sequence[str]], SqlDb]


@pytest.fixture
def rls_db(tmp_path: Path) -> Iterator[Maker]:
    """``rls_db(rules)``: a fresh Part D database whose module declares ``rules``."""
    dbs: list[SqlDb] = []

    def make(rules: Sequence[str]) -> SqlDb:
        db = make_partd(tmp_path / f"db{len(dbs)}", rules)
        dbs.append(db)
        return db

    yield make
    for db in dbs:
        db.ds.close()


def pets(db: SqlDb, caller: Identity, sql: str = "SELECT * FROM pet") -> Counter[int]:
    return Counter(r[0] for r in db.rows(sql, caller))


def test_single_table_rule(rls_db: Maker) -> None:
    db = rls_db([OWN_PERSON])
    assert [r[0] for r in db.rows("SELECT * FROM person", U)] == [2]
    assert sorted(r[0] for r in db.rows("SELECT * FROM person", O)) == [1, 2]  # the owner bypasses RLS
    assert db.rows("SELECT COUNT(*) AS n FROM person", U) == [(1,)]
    assert db.rows("SELECT name FROM person WHERE age > 30", U) == []
    # Joins see only the visible person rows (pet has no rules here).
    assert pets(db, U, "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id") == Counter([12])


def test_rules_expand_recursively(rls_db: Maker) -> None:
    db = rls_db([OWN_PERSON, OWN_PET])
    assert pets(db, U) == Counter([12])
    assert pets(db, O) == Counter([10, 11, 12])
    assert pets(db, U, "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id") == Counter([12])
    assert db.rows("SELECT COUNT(*) AS n FROM pet WHERE pet.kind <> 'fish'", U) == [(0,)]


def test_several_rules_are_a_bag_union(rls_db: Maker) -> None:
    db = rls_db(["SELECT * FROM pet WHERE pet.owner_id = 1", "SELECT * FROM pet WHERE pet.kind = 'cat'"])
    # The cat matches both rules and is returned once per rule, like the reference's fragments.
    assert pets(db, U) == Counter({10: 2, 11: 1})
    assert db.rows("SELECT COUNT(*) AS n FROM pet", U) == [(3,)]
    assert len(db.rows("SELECT * FROM pet LIMIT 2", U)) == 2


def test_rule_on_the_table_itself_is_not_reexpanded(rls_db: Maker) -> None:
    db = rls_db(["SELECT p.* FROM person p JOIN pet ON pet.owner_id = p.id WHERE pet.kind = 'fish'"])
    assert [r[0] for r in db.rows("SELECT * FROM person", U)] == [2]


def test_cyclic_rules(rls_db: Maker) -> None:
    db = rls_db(
        [
            "SELECT person.* FROM person JOIN pet ON pet.owner_id = person.id",
            "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id",
        ]
    )
    with pytest.raises(SqlError) as info:
        db.sql("SELECT * FROM pet", U)
    assert str(info.value) == "Discovered cyclic dependency when resolving RLS rules for table id `4097`"
    assert len(db.rows("SELECT * FROM pet", O)) == 3
