"""Fixtures for the SQL engine tests.

``partd`` is the Part D fixture of ``sql-and-subscriptions.md`` built directly on a real LMDB
datastore (hand-written table schemas, no wasm module: none of the committed modules has these
tables). ``SqlDb`` runs statements the way the HTTP layer will: queries on a read snapshot of
the last checkpoint, DML/SET in one mutable transaction that is committed and checkpointed.
Engine-level tests (real wasm, commit log) use ``make_db`` from ``tests/hostnode/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hostnode.datastore import Datastore
from hostnode.schema import IndexSchema, TableSchema
from hostnode.sql import SqlResult, execute_in_tx, mutates, parse_sql
from sats.bsatn import codec_for
from sats.identity import Identity
from sats.types import IDENTITY, STRING, TIMESTAMP, U8, U64, SumValue, Typespace, option, product
from tests.hostnode.conftest import BOB, OWNER

#: Part D's owner O and other caller U.
O = OWNER  # noqa: E741 - the spec calls the owner O
U = BOB

_TS = Typespace([])


def _pk_index(index_id: int, table_id: int, name: str) -> IndexSchema:
    return IndexSchema(index_id, f"{name}_id_idx_btree", table_id, (0,), "btree", True)


PERSON = TableSchema(
    4096,
    "person",
    product(("id", U64), ("name", STRING), ("age", U8), ("owner", IDENTITY), ("nick", option(STRING))),
    _TS,
    primary_key=0,
    indexes=[
        _pk_index(4096, 4096, "person"),
        IndexSchema(4097, "person_owner_idx_btree", 4096, (3,), "btree", False),
    ],
)
PET = TableSchema(
    4097,
    "pet",
    product(("id", U64), ("owner_id", U64), ("kind", STRING)),
    _TS,
    primary_key=0,
    indexes=[
        _pk_index(4098, 4097, "pet"),
        IndexSchema(4099, "pet_owner_id_idx_btree", 4097, (1,), "btree", False),
    ],
)
MSG = TableSchema(4098, "msg", product(("sender", IDENTITY), ("text", STRING), ("sent", TIMESTAMP)), _TS)
SECRET = TableSchema(4099, "secret", product(("answer", U8)), _TS, is_public=False)
TABLES = (PERSON, PET, MSG, SECRET)


class SqlDb:
    """A datastore plus the RLS rules of a pretend module; runs SQL like the HTTP layer."""

    def __init__(self, ds: Datastore, rls: Sequence[str] = ()) -> None:
        self.ds = ds
        self.rls = tuple(rls)
        self._offset = 0

    def insert(self, table: TableSchema, *rows: tuple[Any, ...]) -> None:
        """Insert rows directly (fixture data) and checkpoint."""
        codec = codec_for(table.row_type, table.typespace)
        tx = self.ds.begin_mut()
        for row in rows:
            tx.insert(table.table_id, codec.encode(row))
        tx.commit()
        self._checkpoint()

    def _checkpoint(self) -> None:
        self._offset += 1
        self.ds.checkpoint(self._offset)

    def sql(self, text: str, caller: Identity = U, *, is_owner: bool | None = None) -> SqlResult:
        """Run one statement as ``caller`` (owner iff caller is O unless ``is_owner`` says)."""
        owner = caller == O if is_owner is None else is_owner
        stmt = parse_sql(text)
        if not mutates(stmt):
            with self.ds.begin_read() as rtx:
                return execute_in_tx(rtx, stmt, caller, is_owner=owner, rls=self.rls)
        tx = self.ds.begin_mut()
        try:
            result = execute_in_tx(tx, stmt, caller, is_owner=owner, rls=self.rls)
        except BaseException:
            tx.rollback()
            raise
        tx.commit()
        self._checkpoint()
        return result

    def rows(self, text: str, caller: Identity = U) -> list[tuple[Any, ...]]:
        """The result rows of a query."""
        return self.sql(text, caller).rows


def make_partd(path: Path, rls: Sequence[str] = ()) -> SqlDb:
    """The Part D database: person, pet, msg (empty), secret (private) with their rows."""
    ds = Datastore(path)
    tx = ds.begin_mut()
    for t in TABLES:
        tx.create_table(t)
    tx.commit()
    db = SqlDb(ds, rls)
    db.insert(
        PERSON,
        (1, "alice", 35, O.to_sats(), SumValue(0, "al")),
        (2, "bob", 25, U.to_sats(), SumValue(1, ())),
    )
    db.insert(PET, (10, 1, "cat"), (11, 1, "dog"), (12, 2, "fish"))
    db.insert(SECRET, (42,))
    return db


@pytest.fixture
def partd(tmp_path: Path) -> Iterator[SqlDb]:
    """The Part D database (no RLS rules)."""
    db = make_partd(tmp_path / "partd")
    yield db
    db.ds.close()
