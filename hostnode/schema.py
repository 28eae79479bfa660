"""Table, index, sequence and schedule schemas of one database, as the datastore sees them.

The engine builds these plain dataclasses from the module definition (``module-abi.md`` §11)
and assigns every id; the datastore only stores and enforces them. They serialise to JSON
(types as their BSATN meta-encoding in hex) so the datastore can persist its schema next to
the rows and restore it on reopen, and so schema changes can travel inside a ``TxData``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from sats.bsatn import BsatnReader, BsatnWriter
from sats.errors import SatsError
from sats.types import ProductType, Typespace

IndexAlgorithm = Literal["btree", "hash", "direct"]
_ALGORITHMS = ("btree", "hash", "direct")


class SchemaError(ValueError):
    """A schema that cannot be stored: bad column ids, duplicate names, undecodable JSON, …"""


@dataclass(frozen=True, slots=True)
class IndexSchema:
    """One index: the key is the projection of the row onto ``columns`` (in that order)."""

    index_id: int
    name: str
    table_id: int
    columns: tuple[int, ...]
    algorithm: IndexAlgorithm
    unique: bool

    @property
    def ordered(self) -> bool:
        """True when the index can serve range scans (B-tree and direct; hash cannot)."""
        return self.algorithm != "hash"


@dataclass(frozen=True, slots=True)
class SequenceSchema:
    """An auto-increment sequence feeding ``column`` (module-abi.md §3.8)."""

    seq_id: int
    name: str
    table_id: int
    column: int
    start: int
    min_value: int
    max_value: int
    increment: int


@dataclass(frozen=True, slots=True)
class ScheduleSchema:
    """Marks a table as the schedule of ``reducer_name`` (module-abi.md §8)."""

    name: str
    reducer_name: str
    scheduled_at_column: int


@dataclass(slots=True)
class TableSchema:
    """One table: its row type (a product; columns are its elements) and what hangs off it."""

    table_id: int
    name: str
    row_type: ProductType
    typespace: Typespace
    primary_key: int | None = None
    indexes: list[IndexSchema] = field(default_factory=list)
    sequences: list[SequenceSchema] = field(default_factory=list)
    is_public: bool = True
    schedule: ScheduleSchema | None = None

    def column_names(self) -> list[str]:
        """Column names in column order (``col_{n}`` for an unnamed column)."""
        return [e.name if e.name is not None else f"col_{i}" for i, e in enumerate(self.row_type.elements)]

    def index(self, index_id: int) -> IndexSchema | None:
        """The index with that id, if it belongs to this table."""
        for ix in self.indexes:
            if ix.index_id == index_id:
                return ix
        return None

    def validate(self) -> None:
        """Raise SchemaError if column ids or ownership are inconsistent."""
        ncols = len(self.row_type.elements)
        if self.primary_key is not None and not 0 <= self.primary_key < ncols:
            raise SchemaError(f"table {self.name!r}: primary key column {self.primary_key} is out of range")
        seen: set[int] = set()
        for ix in self.indexes:
            if ix.table_id != self.table_id:
                raise SchemaError(f"index {ix.name!r} belongs to table {ix.table_id}, not {self.table_id}")
            _check_index(ix, ncols, self.name)
            if ix.index_id in seen:
                raise SchemaError(f"table {self.name!r}: index id {ix.index_id} appears twice")
            seen.add(ix.index_id)
        cols: set[int] = set()
        for s in self.sequences:
            if s.table_id != self.table_id or not 0 <= s.column < ncols or s.column in cols:
                raise SchemaError(f"table {self.name!r}: bad sequence {s.name!r} (column {s.column})")
            if s.increment == 0 or s.min_value > s.max_value:
                raise SchemaError(f"table {self.name!r}: sequence {s.name!r} has an empty range or a zero increment")
            cols.add(s.column)


def _check_index(ix: IndexSchema, ncols: int, table: str) -> None:
    if ix.algorithm not in _ALGORITHMS:
        raise SchemaError(f"index {ix.name!r}: unknown algorithm {ix.algorithm!r}")
    if not ix.columns or len(set(ix.columns)) != len(ix.columns):
        raise SchemaError(f"index {ix.name!r}: columns must be non-empty and distinct")
    for c in ix.columns:
        if not 0 <= c < ncols:
            raise SchemaError(f"index {ix.name!r}: column {c} is out of range for table {table!r}")


# ---------------------------------------------------------------------------------------------
# JSON form (persisted in the datastore's meta DB and inside TxData schema ops)
# ---------------------------------------------------------------------------------------------


def index_to_json(ix: IndexSchema) -> dict[str, Any]:
    """The JSON-able form of an index schema."""
    return {
        "index_id": ix.index_id,
        "name": ix.name,
        "table_id": ix.table_id,
        "columns": list(ix.columns),
        "algorithm": ix.algorithm,
        "unique": ix.unique,
    }


def index_from_json(d: dict[str, Any]) -> IndexSchema:
    """Inverse of :func:`index_to_json`."""
    try:
        algo = d["algorithm"]
        if algo not in _ALGORITHMS:
            raise SchemaError(f"unknown index algorithm {algo!r}")
        return IndexSchema(
            int(d["index_id"]), str(d["name"]), int(d["table_id"]), tuple(int(c) for c in d["columns"]), algo, bool(d["unique"])
        )
    except (KeyError, TypeError, ValueError) as e:
        raise SchemaError(f"bad index schema JSON: {e}") from None


def table_to_json(t: TableSchema) -> dict[str, Any]:
    """The JSON-able form of a table schema; types are hex of their BSATN meta-encoding."""
    return {
        "table_id": t.table_id,
        "name": t.name,
        "row_type": BsatnWriter().product_type(t.row_type).getvalue().hex(),
        "typespace": BsatnWriter().typespace(t.typespace).getvalue().hex(),
        "primary_key": t.primary_key,
        "indexes": [index_to_json(ix) for ix in t.indexes],
        "sequences": [
            {
                "seq_id": s.seq_id,
                "name": s.name,
                "table_id": s.table_id,
                "column": s.column,
                # i128 bounds survive JSON as strings (not every JSON reader keeps big ints).
                "start": str(s.start),
                "min_value": str(s.min_value),
                "max_value": str(s.max_value),
                "increment": str(s.increment),
            }
            for s in t.sequences
        ],
        "is_public": t.is_public,
        "schedule": None
        if t.schedule is None
        else {
            "name": t.schedule.name,
            "reducer_name": t.schedule.reducer_name,
            "scheduled_at_column": t.schedule.scheduled_at_column,
        },
    }


def table_from_json(d: dict[str, Any], typespaces: dict[str, Typespace] | None = None) -> TableSchema:
    """Inverse of :func:`table_to_json`.

    ``typespaces`` (hex → Typespace) lets tables loaded together share one Typespace object,
    so compiled codecs (cached per typespace object) are shared too.
    """
    try:
        r = BsatnReader(bytes.fromhex(d["row_type"]))
        row_type = r.product_type()
        r.expect_end("row type")
        ts_hex = d["typespace"]
        ts = typespaces.get(ts_hex) if typespaces is not None else None
        if ts is None:
            r = BsatnReader(bytes.fromhex(ts_hex))
            ts = r.typespace()
            r.expect_end("typespace")
            if typespaces is not None:
                typespaces[ts_hex] = ts
        sched = d.get("schedule")
        return TableSchema(
            table_id=int(d["table_id"]),
            name=str(d["name"]),
            row_type=row_type,
            typespace=ts,
            primary_key=None if d["primary_key"] is None else int(d["primary_key"]),
            indexes=[index_from_json(x) for x in d["indexes"]],
            sequences=[
                SequenceSchema(
                    int(s["seq_id"]),
                    str(s["name"]),
                    int(s["table_id"]),
                    int(s["column"]),
                    int(s["start"]),
                    int(s["min_value"]),
                    int(s["max_value"]),
                    int(s["increment"]),
                )
                for s in d["sequences"]
            ],
            is_public=bool(d["is_public"]),
            schedule=None
            if sched is None
            else ScheduleSchema(str(sched["name"]), str(sched["reducer_name"]), int(sched["scheduled_at_column"])),
        )
    except (KeyError, TypeError, ValueError, SatsError) as e:
        raise SchemaError(f"bad table schema JSON: {e}") from None


def dumps(obj: dict[str, Any]) -> bytes:
    """Compact, deterministic JSON bytes (sorted keys), so equal schemas give equal bytes."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def loads(data: bytes | memoryview) -> dict[str, Any]:
    """Parse JSON bytes written by :func:`dumps`; SchemaError on garbage."""
    try:
        obj = json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError) as e:
        raise SchemaError(f"bad schema JSON: {e}") from None
    if not isinstance(obj, dict):
        raise SchemaError("bad schema JSON: not an object")
    return obj
