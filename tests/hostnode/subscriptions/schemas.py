"""Small hand-written schemas for subscription tests that need their own tables."""

from __future__ import annotations

from pathlib import Path

from hostnode.datastore import Datastore
from hostnode.schema import IndexSchema, TableSchema
from sats.types import U8, U32, Typespace, product

_TS = Typespace([])


def _table(table_id: int, name: str, cols: tuple[str, str, str]) -> TableSchema:
    """``name(id u32 PRIMARY KEY, k u8 btree, v u8)`` with the given column names."""
    return TableSchema(
        table_id,
        name,
        product((cols[0], U32), (cols[1], U8), (cols[2], U8)),
        _TS,
        primary_key=0,
        indexes=[
            IndexSchema(table_id * 2, f"{name}_{cols[0]}_idx_btree", table_id, (0,), "btree", True),
            IndexSchema(table_id * 2 + 1, f"{name}_{cols[1]}_idx_btree", table_id, (1,), "btree", False),
        ],
    )


#: ``a(id, k, v)`` and ``b(id, k, w)``: two tables joinable on the indexed ``k``.
A = _table(4096, "a", ("id", "k", "v"))
B = _table(4097, "b", ("id", "k", "w"))


def make_ab(path: Path) -> Datastore:
    """A datastore with the empty tables ``a`` and ``b``."""
    ds = Datastore(path, map_size=1 << 30)
    tx = ds.begin_mut()
    tx.create_table(A)
    tx.create_table(B)
    tx.commit()
    ds.checkpoint(0)
    return ds
