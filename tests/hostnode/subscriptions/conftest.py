"""Fixtures for the subscription engine tests.

``SubDb`` is a real LMDB datastore (the Part D fixture of ``sql-and-subscriptions.md``, or any
tables) plus a :class:`SubscriptionManager`, driven the way the host drives it on the writer
thread: requests read a rolled-back ``MutTx`` over the live state, each commit's ``TxData`` is
evaluated against the state right after it. Engine-level tests (real wasm modules, commit log)
use ``make_db`` and :func:`hostnode.subscriptions.attach` instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hostnode.datastore import Datastore, MutTx
from hostnode.schema import TableSchema
from hostnode.subscriptions import CommitUpdates, DatabaseUpdate, SubscriptionManager, TableUpdate
from sats.bsatn import codec_for
from sats.identity import Identity
from tests.hostnode.sql.conftest import MSG, PERSON, PET, SECRET, TABLES, O, U, make_partd

__all__ = ["MSG", "PERSON", "PET", "SECRET", "TABLES", "U", "O", "SubDb", "rows_of", "multiset"]


class SubDb:
    """A datastore and a subscription manager over it (module docstring)."""

    def __init__(self, ds: Datastore, rls: Sequence[str] = (), owner: Identity = O) -> None:
        self.ds = ds
        self.mgr = SubscriptionManager(owner=owner, rls=rls)
        self.tables = {t.name: t for t in ds.tables().values()}
        self._conns = 0

    def table(self, name: str) -> TableSchema:
        """The schema of table ``name``."""
        return self.tables[name]

    @contextmanager
    def view(self) -> Iterator[MutTx]:
        """The live state, read-only (what ``writer_view`` gives the host)."""
        tx = self.ds.begin_mut()
        try:
            yield tx
        finally:
            tx.rollback()

    def connect(self, identity: Identity = U, conn: Any = None) -> Any:
        """Register a connection; returns its handle."""
        self._conns += 1
        handle = conn if conn is not None else f"c{self._conns}"
        self.mgr.connect(handle, identity, self._conns)
        return handle

    def request(self, method: str, conn: Any, *args: Any, **kw: Any) -> Any:
        """Call ``mgr.<method>(conn, tx, *args)`` inside a read view."""
        with self.view() as tx:
            return getattr(self.mgr, method)(conn, tx, *args, **kw)

    def commit(self, fn: Callable[[MutTx], Any]) -> CommitUpdates:
        """Run ``fn`` in a transaction, commit it and evaluate the subscriptions."""
        tx = self.ds.begin_mut()
        try:
            fn(tx)
        except BaseException:
            tx.rollback()
            raise
        txdata = tx.commit()
        with self.view() as rtx:
            return self.mgr.on_commit(rtx, txdata)

    def encode(self, table: str, row: tuple[Any, ...]) -> bytes:
        """BSATN of ``row`` in ``table``."""
        t = self.tables[table]
        return codec_for(t.row_type, t.typespace).encode(row)

    def decode(self, table: str, raw: bytes) -> tuple[Any, ...]:
        """A BSATN row of ``table`` decoded."""
        t = self.tables[table]
        return codec_for(t.row_type, t.typespace).decode_all(raw)  # type: ignore[no-any-return]

    def insert(self, table: str, *rows: tuple[Any, ...]) -> CommitUpdates:
        """Insert rows in one transaction."""
        tid = self.tables[table].table_id
        return self.commit(lambda tx: [tx.insert(tid, self.encode(table, r)) for r in rows])

    def delete(self, table: str, *rows: tuple[Any, ...]) -> CommitUpdates:
        """Delete rows (by value) in one transaction."""
        tid = self.tables[table].table_id

        def run(tx: MutTx) -> None:
            for r in rows:
                assert tx.delete_row(tid, self.encode(table, r))

        return self.commit(run)

    def replace(self, table: str, old: tuple[Any, ...], new: tuple[Any, ...]) -> CommitUpdates:
        """Delete ``old`` and insert ``new`` in one transaction (an update)."""
        tid = self.tables[table].table_id

        def run(tx: MutTx) -> None:
            assert tx.delete_row(tid, self.encode(table, old))
            tx.insert(tid, self.encode(table, new))

        return self.commit(run)


def rows_of(db: SubDb, update: DatabaseUpdate | TableUpdate, table: str | None = None) -> tuple[Counter[Any], Counter[Any]]:
    """``(deletes, inserts)`` of an update as multisets of decoded rows (optionally one table)."""
    tables: Iterable[TableUpdate] = (update,) if isinstance(update, TableUpdate) else update
    dels: Counter[Any] = Counter()
    ins: Counter[Any] = Counter()
    for tu in tables:
        if table is not None and tu.table_name != table:
            continue
        for qu in tu.updates:
            dels.update(_hashable(db.decode(tu.table_name, r)) for r in qu.deletes)
            ins.update(_hashable(db.decode(tu.table_name, r)) for r in qu.inserts)
    return dels, ins


def _hashable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    return v


def multiset(*rows: tuple[Any, ...]) -> Counter[Any]:
    """A multiset of rows, for comparing with :func:`rows_of`."""
    return Counter(_hashable(r) for r in rows)


@pytest.fixture
def partd(tmp_path: Path) -> Iterator[SubDb]:
    """The Part D database (no RLS rules) with a subscription manager."""
    sql = make_partd(tmp_path / "partd")
    yield SubDb(sql.ds)
    sql.ds.close()
