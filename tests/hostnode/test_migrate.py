"""Republishing a module over a live database: automatic migration or a clear refusal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hostnode.database import Database, MigrationError
from hostnode.migrate import (
    BREAKS_CLIENTS,
    INVALID_TOKEN,
    MigrationPlan,
    MigrationPolicyError,
    check_policy,
    migration_token,
)
from hostnode.moduledef import IndexAlgorithm, RawIndexDefV9
from hostnode.wasm_host import ModuleLoadError
from sats.bsatn import encode
from sats.identity import Identity
from sats.types import STRING, U32, ProductType, product
from tests.hostnode.conftest import create_db, module_wasm
from tests.wat_modules import table
from tests.wat_modules import tables_module as module

A_T = product(("id", U32), ("v", U32))
B_T = product(("x", STRING))

V1 = module([A_T], table("a", 0, pk=(0,)))
BY_V = RawIndexDefV9(None, "v", IndexAlgorithm.BTREE, (1,))


def put_rows(db: Database, table_name: str, ty: ProductType, rows: list[tuple[object, ...]]) -> None:
    tx = db.datastore.begin_mut()
    tid = tx.table_id(table_name)
    for r in rows:
        tx.insert(tid, encode(ty, r))
    tx.commit()
    db.checkpoint()


def test_identical_module_updates_in_place(tmp_path: Path) -> None:
    db, _ = create_db(tmp_path / "db", module_wasm("module-test"))
    try:
        tables_before = db.datastore.tables()
        plan = db.update_program(module_wasm("module-test"))
        assert plan.is_empty
        assert db.datastore.tables() == tables_before
        db.checkpoint()
        assert any(r[1] == "init" for r in db.table_rows("lifecycle_event"))
    finally:
        db.close()


def test_adding_a_table_and_an_index_keeps_rows_and_survives_reopen(tmp_path: Path) -> None:
    db, _ = create_db(tmp_path / "db", V1)
    put_rows(db, "a", A_T, [(1, 10), (2, 20), (3, 10)])
    v2 = module([A_T, B_T], table("a", 0, pk=(0,), indexes=(BY_V,)), table("b", 1))
    plan = db.update_program(v2)
    assert [t.name for t in plan.create_tables] == ["b"]
    assert [i.name for i in plan.create_indexes] == ["a_v_idx_btree"]
    index_id = db.index_id("a_v_idx_btree")
    assert index_id is not None and db.table_id("b") is not None
    with db.read() as tx:
        assert sorted(tx.index_scan_point(index_id, encode(U32, 10))) == sorted(
            [encode(A_T, (1, 10)), encode(A_T, (3, 10))]
        )
    db.close()
    db = Database.open(tmp_path / "db")
    try:
        assert db.program_bytes == v2
        assert sorted(db.table_rows("a")) == [(1, 10), (2, 20), (3, 10)]
        assert db.table_rows("b") == []
        assert db.index_id("a_v_idx_btree") is not None
        # Removing the index again is automatic too.
        v3 = module([A_T, B_T], table("a", 0, pk=(0,)), table("b", 1))
        assert db.update_program(v3).drop_indexes == [index_id]
        assert db.index_id("a_v_idx_btree") is None
    finally:
        db.close()


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        (module([B_T], table("b", 0)), "table `a` would be removed"),
        (module([product(("id", U32), ("v", STRING))], table("a", 0, pk=(0,))), "table `a`: its columns change"),
        (module([product(("id", U32))], table("a", 0, pk=(0,))), "table `a`: its columns change"),
        (
            module([A_T], table("a", 0, pk=(0,), indexes=(BY_V,), unique=((1,),))),
            "adding a unique constraint (`a_v_idx_btree`)",
        ),
        (module([A_T], table("a", 0, pk=(0,), public=False)), "changing public/private access"),
    ],
    ids=["remove-table", "retype-column", "remove-column", "add-unique", "access"],
)
def test_incompatible_updates_change_nothing(tmp_path: Path, new: bytes, problem: str) -> None:
    db, _ = create_db(tmp_path / "db", V1)
    try:
        put_rows(db, "a", A_T, [(1, 10)])
        offset, tables = db.last_offset, db.datastore.tables()
        with pytest.raises(MigrationError) as err:
            db.update_program(new)
        assert problem in str(err.value)
        assert "--clear-database" in str(err.value)
        assert db.last_offset == offset
        assert db.datastore.tables() == tables
        assert db.program_bytes == V1
        assert db.table_rows("a") == [(1, 10)]
    finally:
        db.close()


def test_invalid_program_changes_nothing(tmp_path: Path) -> None:
    db, _ = create_db(tmp_path / "db", V1)
    try:
        with pytest.raises(ModuleLoadError):
            db.update_program(b"\0asm garbage")
        assert db.program_bytes == V1
    finally:
        db.close()


def test_changing_rls_rules_is_automatic_and_disconnects_clients(tmp_path: Path) -> None:
    keep, old, new = "SELECT * FROM a WHERE a.v = 0", "SELECT * FROM a WHERE a.v = 1", "SELECT * FROM a WHERE a.v = 2"
    db, _ = create_db(tmp_path / "db", module([A_T], table("a", 0, pk=(0,)), rls=[keep, old]))
    try:
        same = db.update_program(module([A_T], table("a", 0, pk=(0,)), rls=[old, keep]))  # order is no change
        assert same.is_empty and not same.disconnects_clients
        changed = module([A_T], table("a", 0, pk=(0,)), rls=[keep, new])
        plan = db.update_program(changed, token=migration_token(db.identity, db.program_bytes, changed))
        assert (plan.drop_rls, plan.create_rls) == ([old], [new])
        assert plan.disconnects_clients and not plan.is_empty
        assert db.row_level_security == (keep, new)
        db.close()
        db = Database.open(tmp_path / "db")
        assert db.row_level_security == (keep, new)
    finally:
        db.close()


def test_an_update_that_disconnects_clients_needs_its_token(tmp_path: Path) -> None:
    old, new = "SELECT * FROM a WHERE a.v = 1", "SELECT * FROM a WHERE a.v = 2"
    v1 = module([A_T], table("a", 0, pk=(0,)), rls=[old])
    breaking = module([A_T], table("a", 0, pk=(0,)), rls=[new])
    compatible = module([A_T, B_T], table("a", 0, pk=(0,)), table("b", 1), rls=[old])
    db, _ = create_db(tmp_path / "db", v1)
    try:
        token = migration_token(db.identity, v1, breaking)
        other_db = migration_token(Identity.from_claims("localhost", "elsewhere"), v1, breaking)
        other_old = migration_token(db.identity, compatible, breaking)
        for given, problem in ((None, BREAKS_CLIENTS), (bytes(32), INVALID_TOKEN), (other_db, INVALID_TOKEN),
                               (other_old, INVALID_TOKEN)):  # fmt: skip
            with pytest.raises(MigrationPolicyError, match=f"^{re.escape(problem)}$"):
                db.update_program(breaking, token=given)
            assert db.program_bytes == v1 and db.row_level_security == (old,)
        # The running program again: nothing to migrate, so no token to check (as 1.12).
        assert db.update_program(v1, token=bytes(32)).is_empty
        # A token, when given, must be the update's even if the update keeps the clients.
        with pytest.raises(MigrationPolicyError, match=f"^{re.escape(INVALID_TOKEN)}$"):
            db.update_program(compatible, token=token)
        assert db.update_program(breaking, token=token).disconnects_clients
        assert db.row_level_security == (new,)
    finally:
        db.close()


def test_migration_token_is_1_12s() -> None:
    """1.12's ``MigrationToken::hash``: Keccak-256 of identity hex + old hash hex + new hash hex."""
    from Crypto.Hash import keccak

    def k(data: bytes) -> bytes:
        return keccak.new(data=data, digest_bits=256).digest()

    identity = Identity.from_hex("c200" + "11" * 30)
    text = identity.to_hex() + k(b"old").hex() + k(b"new").hex()
    assert len(text) == 192 and text.startswith("c2001111")
    token = migration_token(identity, b"old", b"new")
    assert token == k(text.encode())
    assert token.hex() == "d92f7222201c80f0e32c8a80feafbebd3d72c151fbb161509e48132184d189ca"


def test_check_policy() -> None:
    keeps, breaks = MigrationPlan(), MigrationPlan(create_rls=["SELECT * FROM a"])
    mine = migration_token(Identity.ZERO, b"old", b"new")
    assert len(mine) == 32 and mine != migration_token(Identity.ZERO, b"new", b"old")
    check_policy(keeps, None, mine)
    check_policy(keeps, mine, mine)
    check_policy(breaks, mine, mine)
    with pytest.raises(MigrationPolicyError, match="client-breaking"):
        check_policy(breaks, None, mine)
    with pytest.raises(MigrationPolicyError, match="does not match"):
        check_policy(keeps, bytes(32), mine)
