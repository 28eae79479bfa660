"""The client cache: the rows of every subscribed table, ref-counted, and their change events.

Pure (no I/O, no callbacks run here). :meth:`ClientCache.apply` takes the table updates of one
server message, changes the cache, and returns the :class:`RowChange` list the connection then
reports to ``on_insert`` / ``on_delete`` / ``on_update`` callbacks — only after the whole
message is applied, so callbacks always see a consistent cache.

Bag semantics (``sql-and-subscriptions.md`` B.2–B.4): a row delivered by several subscribed
queries (or several times by a join) is counted once per delivery; it appears when its count
goes 0 → positive and disappears when it drops back to 0. Within one table update, a row
that disappeared and one that appeared with the same primary key are one *update*; tables
without a primary key report a delete and an insert.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from orrery_client.schema import ModuleSchema, TableSchema

__all__ = ["ClientCache", "TableCache", "RowChange"]


@dataclass(frozen=True, slots=True)
class RowChange:
    """One change to report: ``kind`` is ``"insert"``, ``"delete"`` or ``"update"``."""

    table: str
    kind: str
    row: Any
    old: Any = None


class TableCache:
    """The cached rows of one table (read-only for users: ``iter``, ``count``, ``find``)."""

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.name = schema.name
        #: row key (BSATN) → [row, count]
        self._rows: dict[bytes, list[Any]] = {}
        self._by_pk: dict[Any, bytes] = {}

    def iter(self) -> Iterator[Any]:
        """Every cached row once (in no particular order)."""
        return iter([entry[0] for entry in self._rows.values()])

    def __iter__(self) -> Iterator[Any]:
        return self.iter()

    def count(self) -> int:
        """How many distinct rows are cached."""
        return len(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def find(self, pk: Any) -> Any:
        """The row whose primary key is ``pk``, or None (a TypeError for tables without one)."""
        if self.schema.primary_key is None:
            raise TypeError(f"table `{self.name}` has no primary key")
        key = self._by_pk.get(pk)
        return None if key is None else self._rows[key][0]

    def _apply(self, deletes: Iterable[tuple[bytes, Any]], inserts: Iterable[tuple[bytes, Any]]) -> list[RowChange]:
        delta: dict[bytes, int] = {}
        rows: dict[bytes, Any] = {}
        for key, row in deletes:
            delta[key] = delta.get(key, 0) - 1
            rows.setdefault(key, row)
        for key, row in inserts:
            delta[key] = delta.get(key, 0) + 1
            rows.setdefault(key, row)
        gone: list[tuple[bytes, Any]] = []
        came: list[tuple[bytes, Any]] = []
        for key, d in delta.items():
            if d == 0:
                continue
            entry = self._rows.get(key)
            old = entry[1] if entry is not None else 0
            new = max(0, old + d)
            if old == 0 and new > 0:
                self._rows[key] = [rows[key], new]
                came.append((key, rows[key]))
            elif old > 0 and new == 0:
                assert entry is not None
                del self._rows[key]
                gone.append((key, entry[0]))
            elif entry is not None:
                entry[1] = new
        pk_col = self.schema.primary_key
        changes: list[RowChange] = []
        if pk_col is None:
            changes += [RowChange(self.name, "delete", r) for _, r in gone]
            changes += [RowChange(self.name, "insert", r) for _, r in came]
            return changes
        gone_by_pk: dict[Any, Any] = {}
        for key, r in gone:
            pk = r[pk_col]
            gone_by_pk[pk] = r
            if self._by_pk.get(pk) == key:
                del self._by_pk[pk]
        for key, r in came:
            pk = r[pk_col]
            self._by_pk[pk] = key
            old_row = gone_by_pk.pop(pk, None)
            if old_row is not None:
                changes.append(RowChange(self.name, "update", r, old_row))
            else:
                changes.append(RowChange(self.name, "insert", r))
        changes[:0] = [RowChange(self.name, "delete", r) for r in gone_by_pk.values()]
        return changes

    def _clear(self) -> list[RowChange]:
        changes = [RowChange(self.name, "delete", entry[0]) for entry in self._rows.values()]
        self._rows.clear()
        self._by_pk.clear()
        return changes

    def _snapshot(self) -> dict[bytes, list[Any]]:
        return {k: list(v) for k, v in self._rows.items()}


class ClientCache:
    """Every table's cache, created on first use from the module schema."""

    def __init__(self, schema: ModuleSchema) -> None:
        self.schema = schema
        self._tables: dict[str, TableCache] = {}

    def table(self, name: str) -> TableCache:
        """The cache of table ``name`` (empty until a subscription delivers rows)."""
        t = self._tables.get(name)
        if t is None:
            t = self._tables[name] = TableCache(self.schema.table(name))
        return t

    def tables(self) -> list[TableCache]:
        """The caches that exist so far."""
        return list(self._tables.values())

    def apply(self, updates: Iterable[tuple[str, list[tuple[bytes, Any]], list[tuple[bytes, Any]]]]) -> list[RowChange]:
        """Apply ``(table, deletes, inserts)`` triples of decoded rows; returns what changed."""
        by_table: dict[str, tuple[list[tuple[bytes, Any]], list[tuple[bytes, Any]]]] = {}
        for name, deletes, inserts in updates:
            d, i = by_table.setdefault(name, ([], []))
            d.extend(deletes)
            i.extend(inserts)
        changes: list[RowChange] = []
        for name, (d, i) in by_table.items():
            changes += self.table(name)._apply(d, i)
        return changes

    def clear(self) -> list[RowChange]:
        """Drop every row (all subscriptions ended); returns the deletes."""
        changes: list[RowChange] = []
        for t in self._tables.values():
            changes += t._clear()
        return changes

    def replace(self, fresh: ClientCache) -> list[RowChange]:
        """Take over ``fresh``'s rows (a resubscription after a reconnect); returns the difference."""
        changes: list[RowChange] = []
        names = {t.name for t in self.tables()} | {t.name for t in fresh.tables()}
        for name in names:
            mine, theirs = self.table(name), fresh.table(name)
            before, after = mine._snapshot(), theirs._snapshot()
            deletes = [(k, v[0]) for k, v in before.items() for _ in range(v[1])]
            inserts = [(k, v[0]) for k, v in after.items() for _ in range(v[1])]
            changes += mine._apply(deletes, inserts)
        return changes
