"""Modules written in WebAssembly text for tests: schemas only, and code that spins.

Most are made of a module definition only, for tests that republish variants of a schema.

:func:`tables_module` assembles (with wasmtime's ``wat2wasm``) a module whose
``__describe_module__`` writes the given ``RawModuleDefV9`` — tables, indexes, row-level
security — and whose ``__call_reducer__`` does nothing: there are no reducers. Rows come from
SQL DML (``/sql`` as the owner, or the datastore directly).
"""

from __future__ import annotations

from collections.abc import Sequence

import wasmtime

from hostnode.moduledef import (
    IndexAlgorithm,
    Lifecycle,
    RawConstraintDefV9,
    RawIndexDefV9,
    RawModuleDefV9,
    RawReducerDefV9,
    RawRowLevelSecurityDefV9,
    RawTableDefV9,
    TableAccess,
    TableType,
    encode_raw_module_def,
)
from sats.types import ProductType, Typespace

__all__ = ["SPINNING", "spinning_module", "table", "tables_module"]


def table(
    name: str,
    ref: int,
    *,
    indexes: tuple[RawIndexDefV9, ...] = (),
    unique: tuple[tuple[int, ...], ...] = (),
    pk: tuple[int, ...] = (),
    public: bool = True,
) -> RawTableDefV9:
    """Table ``name`` of row type ``ref`` (an index into the typespace)."""
    pk_index = (RawIndexDefV9(None, "id", IndexAlgorithm.BTREE, pk),) if pk else ()
    constraints = tuple(RawConstraintDefV9(None, cols) for cols in ((pk,) if pk else ()) + unique)
    return RawTableDefV9(
        name, ref, pk, pk_index + indexes, constraints, (), None, TableType.USER,
        TableAccess.PUBLIC if public else TableAccess.PRIVATE,
    )  # fmt: skip


def tables_module(types: Sequence[ProductType], *tables: RawTableDefV9, rls: Sequence[str] = ()) -> bytes:
    """A module with only tables (and RLS rules): `__describe_module__` returns that definition."""
    rules = tuple(RawRowLevelSecurityDefV9(sql) for sql in rls)
    raw = encode_raw_module_def(RawModuleDefV9(Typespace(list(types)), tuple(tables), (), (), (), rules))
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


#: What :func:`spinning_module`'s spinning code logs (at Info) before it starts to loop.
SPINNING = "spinning"


def spinning_module(where: str = "reducer") -> bytes:
    """A module whose code logs ``SPINNING`` and then loops until its budget stops it.

    ``where`` is ``"reducer"`` (a reducer ``spin`` loops; ``ok`` returns at once), ``"init"``
    (its ``init`` loops, so publishing it runs the loop) or ``"describe"``
    (``__describe_module__`` loops before it describes anything).
    """
    lifecycle = Lifecycle.INIT if where == "init" else None
    reducers = (
        RawReducerDefV9("init" if where == "init" else "spin", ProductType(()), lifecycle),
        RawReducerDefV9("ok", ProductType(()), None),
    )
    raw = encode_raw_module_def(RawModuleDefV9(Typespace([]), (), reducers, (), (), ()))
    data = "".join(f"\\{b:02x}" for b in raw)
    log_and_spin = f"""
          (call $log (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                     (i32.const -1) (i32.const 512) (i32.const {len(SPINNING)}))
          (loop $forever (br $forever))"""
    wat = f"""
      (module
        (import "spacetime_10.0" "bytes_sink_write" (func $w (param i32 i32 i32) (result i32)))
        (import "spacetime_10.0" "console_log"
          (func $log (param i32 i32 i32 i32 i32 i32 i32 i32)))
        (memory (export "memory") 1)
        (data (i32.const 512) "{SPINNING}")
        (data (i32.const 1024) "{data}")
        (func (export "__describe_module__") (param $sink i32)
          {log_and_spin if where == "describe" else ""}
          (i32.store (i32.const 8) (i32.const {len(raw)}))
          (drop (call $w (local.get $sink) (i32.const 1024) (i32.const 8))))
        (func (export "__call_reducer__") (param i32 i64 i64 i64 i64 i64 i64 i64 i32 i32) (result i32)
          (if (i32.eqz (local.get 0)) (then {log_and_spin}))
          (i32.const 0)))
    """
    return bytes(wasmtime.wat2wasm(wat))
