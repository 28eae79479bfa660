"""Republishing a module over a live database: automatic migration or a clear refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from hostnode.database import Database, MigrationError
from hostnode.moduledef import (
    IndexAlgorithm,
    RawConstraintDefV9,
    RawIndexDefV9,
    RawModuleDefV9,
    RawTableDefV9,
    TableAccess,
    TableType,
    encode_raw_module_def,
)
from hostnode.wasm_host import ModuleLoadError
from sats.bsatn import encode
from sats.types import STRING, U32, ProductType, Typespace, product
from tests.hostnode.conftest import create_db, module_wasm

A_T = product(("id", U32), ("v", U32))
B_T = product(("x", STRING))


def table(name: str, ref: int, *, indexes: tuple[RawIndexDefV9, ...] = (), unique: tuple[tuple[int, ...], ...] = (),
          pk: tuple[int, ...] = (), public: bool = True) -> RawTableDefV9:
    pk_index = (RawIndexDefV9(None, "id", IndexAlgorithm.BTREE, pk),) if pk else ()
    constraints = tuple(RawConstraintDefV9(None, cols) for cols in ((pk,) if pk else ()) + unique)
    return RawTableDefV9(
        name, ref, pk, pk_index + indexes, constraints, (), None, TableType.USER,
        TableAccess.PUBLIC if public else TableAccess.PRIVATE,
    )


def module(types: list[ProductType], *tables: RawTableDefV9) -> bytes:
    """A module with only tables: `__describe_module__` returns the given definition."""
    raw = encode_raw_module_def(RawModuleDefV9(Typespace(list(types)), tuple(tables), (), (), (), ()))
    data = "".join(f"\\{b:02x}" for b in raw)
    wat = f"""
      (module
        (import "spacetime_10.0" "bytes_sink_write" (func $w (param i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 1024) "{data}")
        (func (export "__describe_module__") (param $sink i32)
          (i32.store (i32.const 8) (i32.const {len(raw)}))
          (drop (call $w (local.get $sink) (i32.const 1024) (i32.const 8))))
        (func (export "__call_reducer__") (param i32 i64 i64 i64 i64 i64 i64 i64 i32 i32) (result i32)
          (i32.const 0)))
    """
    return bytes(wasmtime.wat2wasm(wat))


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
