"""The LMDB datastore of one database replica: tables, indexes, sequences, transactions.

Everything the module ABI needs from storage (``module-abi.md`` §3.3–§3.8): row counts,
snapshot scans, point and range scans over any index, deletes by scan or by row equality,
inserts with sequences and write-back bytes, updates through a unique index, set semantics
and unique constraints. Errors carry the ABI errno (§2) in ``errno``.

Transactions. All mutation happens on one writer thread. A long-lived *outer* LMDB write
transaction holds everything applied since the last :meth:`Datastore.checkpoint`; each
:class:`MutTx` is a nested child of it, so committing a reducer costs a child commit
(~1 µs) instead of an LMDB commit. The commit log (written by the engine) is the truth and
LMDB the materialised state: :meth:`Datastore.checkpoint` commits the outer transaction
together with the applied log offset, and only then do readers on other threads
(:meth:`Datastore.begin_read`) see the changes. Checkpoints are the only LMDB commits and each
fsyncs its data pages before LMDB writes the meta page that points at them (``sync=True``), so
after a crash of the machine the file holds a whole checkpoint — with LMDB's no-sync mode the
meta page could reach the disk before the pages it points at, and the replica would not open.
The meta page itself is not fsynced (``metasync=False``): a crash may undo the newest
checkpoint, which the log replays. Cost: one fsync per checkpoint, not per transaction (a
checkpoint of 1,200 transfers takes ~5.6 ms instead of ~1.4 ms). Recovery replays the log tail after
:meth:`Datastore.applied_offset` with :meth:`Datastore.apply`.

Storage layout (one LMDB environment per replica directory):

* ``meta`` — schema (``ds/table/<id>`` JSON), sequence positions (``ds/seq/<id>``), row-id
  counters (``ds/rid/<id>``), the applied offset (``ds/applied``), and the engine's own keys
  (``user/<key>``, via ``get_meta``/``put_meta``).
* ``t<table_id>`` — the rows. Every row has an internal 8-byte big-endian row id (``rid``);
  the value is ``rid ++ row BSATN``. The LMDB key (the row's *locator*) clusters rows:
  by the primary-key index key when the table has a primary key with a unique index on
  exactly that column, else by ``blake2b-128(row) ++ rid`` (this hash clustering is what
  gives tables without a primary key their set semantics).
* ``i<index_id>`` — every other index: LMDB key = index key (unique index) or index key ++
  rid (non-unique), value = the row's locator.

Index keys are the order-preserving encoding of :mod:`sats.keys`, so cursor order is SATS
order. LMDB keys are limited to 511 bytes: a key of ``KEY_TRUNC`` bytes or more is stored as
its first ``KEY_TRUNC`` bytes ++ rid. Such entries are recognised by their length
(``KEY_TRUNC + 8``, which no untruncated entry has); lookups and scans fetch their rows to
compare full keys, and a run of truncated entries sharing a prefix is sorted by full key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import repeat
from typing import Any, ClassVar, Final, Literal

import lmdb

from hostnode.schema import (
    IndexSchema,
    SchemaError,
    TableSchema,
    dumps,
    loads,
    table_from_json,
    table_to_json,
)
from hostnode.txdata import SchemaOp, SchemaOpKind, TableChanges, TxData
from sats.bsatn import codec_for
from sats.errors import DecodeError, SatsError
from sats.keys import key_converter, prefix_end, reversed_bsatn_width, row_key_extractor
from sats.types import (
    INT_LAYOUT,
    U8,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    Typespace,
    TypeTag,
)

log = logging.getLogger(__name__)

__all__ = [
    "Datastore",
    "DatastoreConfig",
    "ReadTx",
    "MutTx",
    "DatastoreError",
    "BsatnDecodeError",
    "NoSuchTable",
    "NoSuchIndex",
    "WrongIndexAlgo",
    "UniqueAlreadyExists",
    "IndexNotUnique",
    "NoSuchRow",
    "SchemaConflict",
    "TransactionStateError",
    "KEY_TRUNC",
]

#: Index keys this long or longer are stored truncated (+ rid); see the module docstring.
KEY_TRUNC: Final = 480
_TRUNC_LEN: Final = KEY_TRUNC + 8

_RID: Final = struct.Struct(">Q")
_APPLIED: Final = struct.Struct("<q")
_U32: Final = struct.Struct("<I")

_META_DB: Final = b"meta"
_K_APPLIED: Final = b"ds/applied"
_K_TABLE: Final = b"ds/table/"
_K_SEQ = b"ds/seq/"
_K_RID = b"ds/rid/"
_K_USER: Final = b"user/"


# LMDB point reads and writes on the writer thread: py-lmdb releases the GIL around every call,
# which under load hands the GIL to the waiting event loop on each one (a futex wake, and often a
# wait to get it back); hostnode/_lmdbfast.c makes the same calls keeping it, once it has checked
# the installed py-lmdb's layout (on the first write transaction). Without it: py-lmdb's calls.
_fast_lmdb_module: Any
try:
    from hostnode import _lmdbfast as _fast_lmdb_module
except ImportError:  # not built (make native)
    _fast_lmdb_module = None
_FAST_LMDB: Final[Any] = _fast_lmdb_module


def _py_get(txn: Any, key: bytes, db: Any) -> Any:
    return txn.get(key, None, db)


def _py_put(txn: Any, key: bytes, value: bytes, db: Any) -> Any:
    return txn.put(key, value, True, True, False, db)


_lmdb_get: Final[Callable[[Any, bytes, Any], Any]] = _py_get if _FAST_LMDB is None else _FAST_LMDB.get
_lmdb_put: Final[Callable[[Any, bytes, bytes, Any], Any]] = _py_put if _FAST_LMDB is None else _FAST_LMDB.put
#: Whether the GIL-keeping LMDB calls are in use: "" until checked, then "on" or why they are off.
_fast_lmdb_state: list[str] = ["" if _FAST_LMDB is not None else "off: hostnode._lmdbfast is not built"]


def fast_lmdb_status() -> str:
    """``"on"``, or why the datastore calls py-lmdb itself (``""``: not decided yet)."""
    return _fast_lmdb_state[0]


def _check_fast_lmdb(env: Any, txn: Any, db: Any) -> None:
    """Decide, once (the caller checks that it is still undecided), whether to use _lmdbfast."""
    if os.environ.get("ORRERY_LMDB_FAST") == "0":
        _fast_lmdb_state[0] = "off: ORRERY_LMDB_FAST=0"
        return
    problem = _FAST_LMDB.check(env, txn, db)
    _fast_lmdb_state[0] = "on" if not problem else f"off: {problem} (py-lmdb {lmdb.__version__})"
    if problem:
        log.info("LMDB point calls go through py-lmdb: %s", _fast_lmdb_state[0])


def _blake(row: bytes) -> bytes:
    return hashlib.blake2b(row, digest_size=16).digest()


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class DatastoreError(Exception):
    """Base of datastore errors. ``errno`` is the module-ABI errno (0 = none: the host traps)."""

    errno: ClassVar[int] = 0


class BsatnDecodeError(DatastoreError):
    """A row, key, bound or relation that does not decode at its type."""

    errno: ClassVar[int] = 3


class NoSuchTable(DatastoreError):
    """Unknown table id or name."""

    errno: ClassVar[int] = 4


class NoSuchIndex(DatastoreError):
    """Unknown index id or name, or an index of another table."""

    errno: ClassVar[int] = 5


class WrongIndexAlgo(DatastoreError):
    """A range scan on an index that cannot seek ranges (hash)."""

    errno: ClassVar[int] = 10


class UniqueAlreadyExists(DatastoreError):
    """The row collides with another row on a unique index."""

    errno: ClassVar[int] = 12


class IndexNotUnique(DatastoreError):
    """``update`` through an index that is not unique."""

    errno: ClassVar[int] = 14


class NoSuchRow(DatastoreError):
    """``update`` found no row with the new row's key."""

    errno: ClassVar[int] = 15


class SchemaConflict(DatastoreError):
    """A schema change that contradicts the current schema (duplicate id or name, bad columns)."""


class TransactionStateError(DatastoreError):
    """Transaction misuse: a second MutTx, a finished transaction, checkpoint inside a MutTx."""


@dataclass(frozen=True, slots=True)
class DatastoreConfig:
    """LMDB environment settings of one replica directory."""

    #: Upper bound of the data file (address space only; the file grows as needed).
    map_size: int = 1 << 34
    #: Named-DB slots: one per table, one per non-primary-key index, one for meta. LMDB zeroes
    #: this many slots in every child transaction (measured: 0.40 µs per begin+commit at 256,
    #: 0.55 at 512, 0.81 at 1024), so it is not set "large just in case".
    max_dbs: int = 512
    #: Concurrent read transactions (reader-table slots).
    max_readers: int = 256


# ---------------------------------------------------------------------------------------------
# Compiled per-table / per-index runtime
# ---------------------------------------------------------------------------------------------


def _entry_key(unique: bool, key: bytes, rid8: bytes) -> bytes:
    """The LMDB key of an index entry (or of a clustered row) for full key ``key``."""
    if len(key) >= KEY_TRUNC:
        return key[:KEY_TRUNC] + rid8
    return key if unique else key + rid8


class _Index:
    """One index, compiled: key extractors and converters, and where its entries live."""

    __slots__ = (
        "schema",
        "index_id",
        "name",
        "table_id",
        "table_name",
        "unique",
        "ordered",
        "clustered",
        "db",
        "table_db",
        "extract",
        "point_key",
        "point_conv",
        "fixed_off",
        "point_rev",
        "rev_slice",
        "fast_table",
        "range_convs",
        "range_product",
    )

    def __init__(self, schema: IndexSchema, table: TableSchema, db: Any, table_db: Any, clustered: bool) -> None:
        self.schema = schema
        self.index_id = schema.index_id
        #: Its table, when this index is that table's ``fast_pk`` (set by _Table).
        self.fast_table: _Table | None = None
        self.name = schema.name
        self.table_id = schema.table_id
        self.table_name = table.name
        self.unique = schema.unique or clustered
        self.ordered = schema.ordered
        self.clustered = clustered
        self.db = db
        self.table_db = table_db
        ts = table.typespace
        elems = table.row_type.elements
        self.extract: Callable[[bytes], bytes] = row_key_extractor(table.row_type, ts, schema.columns)
        col_types = [elems[c].algebraic_type for c in schema.columns]
        convs = [key_converter(t, ts) for t in col_types]
        #: The converter of a one-column key (None for several columns), for inlined calls.
        self.point_conv = convs[0] if len(convs) == 1 else None
        #: Byte offset of that column in every row, when all columns before it are fixed-size.
        self.fixed_off: int | None = None
        if len(convs) == 1:
            off = 0
            for e in elems[: schema.columns[0]]:
                size = codec_for(e.algebraic_type, ts).fixed_size
                if size is None:
                    break
                off += size
            else:
                self.fixed_off = off
        #: For a clustered index on one unsigned fixed-size integer column: that column's width,
        #: whose key is its BSATN reversed (the primary-key lookup hot path). Else 0.
        self.point_rev = reversed_bsatn_width(col_types[0], ts) if clustered and len(convs) == 1 else 0
        #: With ``point_rev`` and a fixed offset: the slice that takes the key from a row (the
        #: column's bytes, reversed) in one step.
        self.rev_slice: slice | None = None
        if self.point_rev and self.fixed_off is not None:
            off = self.fixed_off
            self.rev_slice = slice(off + self.point_rev - 1, off - 1 if off else None, -1)
        if len(convs) == 1:
            conv = convs[0]

            def point_key(buf: Any) -> bytes:
                return conv(buf, 0)[0]

        else:

            def point_key(buf: Any) -> bytes:
                pos = 0
                parts = []
                for c in convs:
                    k, pos = c(buf, pos)
                    parts.append(k)
                return b"".join(parts)

        # Trailing bytes after the key are ignored, as the reference's decoder does.
        self.point_key: Callable[[Any], bytes] = point_key
        # Range-scan key elements (module-abi.md §3.4): the columns, or for a single column of
        # product type that product's fields.
        only = ts.resolve(col_types[0]) if len(col_types) == 1 else None
        if only is None or isinstance(only, ProductType):
            self.range_product = True
            self.range_convs = convs if only is None else [key_converter(e.algebraic_type, ts) for e in only.elements]
        else:
            self.range_product = False
            self.range_convs = convs


def _clustered_key(idx: _Index, row: bytes) -> bytes | None:
    """The locator of ``row`` in a table clustered by ``idx`` (as :meth:`MutTx.update`'s hot
    path computes it), or None when the row does not decode or its key would be truncated."""
    rev = idx.rev_slice
    try:
        if rev is not None:
            untyped: Any = row  # compiled code indexes typed bytes by an integer (MutTx.update)
            key: bytes = untyped[rev]
            return key
        off = idx.fixed_off
        key = idx.extract(row) if off is None else idx.point_conv(row, off)[0]  # type: ignore[misc]
    except DecodeError:
        return None
    return None if len(key) >= KEY_TRUNC else key


_FIXED, _STR, _BYTES, _BOOL, _OTHER = range(5)


def _row_walker(row_type: ProductType, ts: Typespace) -> Callable[[Any, int], int]:
    """``(buf, pos) -> end``: check one BSATN row fully (lengths, UTF-8, bool bytes, sum tags)
    without building its value — cheaper than decoding on the insert/update path."""
    steps: list[tuple[int, Any]] = []
    for e in row_type.elements:
        t = ts.resolve(e.algebraic_type)
        if _plain_fixed(t, ts):
            size = codec_for(t, ts).fixed_size or 0
            if steps and steps[-1][0] == _FIXED:
                steps[-1] = (_FIXED, steps[-1][1] + size)
            else:
                steps.append((_FIXED, size))
        elif isinstance(t, PrimitiveType) and t.kind == TypeTag.STRING:
            steps.append((_STR, None))
        elif isinstance(t, PrimitiveType) and t.kind == TypeTag.BOOL:
            steps.append((_BOOL, None))
        elif isinstance(t, ArrayType) and ts.resolve(t.elem_ty) == U8:
            steps.append((_BYTES, None))
        else:
            steps.append((_OTHER, codec_for(t, ts).decode))
    unpack_len = _U32.unpack_from

    def walk(buf: Any, pos: int) -> int:
        try:
            for kind, arg in steps:
                if kind == _FIXED:
                    pos += arg
                elif kind == _STR:
                    start = pos + 4
                    pos = start + unpack_len(buf, pos)[0]
                    if pos > len(buf):
                        raise DecodeError(f"string at byte {start} runs past the end of the row")
                    str(buf[start:pos], "utf-8")
                elif kind == _BYTES:
                    pos += 4 + unpack_len(buf, pos)[0]
                elif kind == _BOOL:
                    if buf[pos] > 1:
                        raise DecodeError(f"invalid bool byte at {pos}")
                    pos += 1
                else:
                    pos = arg(buf, pos)[1]
        except (struct.error, IndexError):
            raise DecodeError(f"row truncated at byte {pos}") from None
        except UnicodeDecodeError as e:
            raise DecodeError(f"invalid UTF-8 in a string: {e.reason}") from None
        if pos > len(buf):
            raise DecodeError(f"row truncated at byte {len(buf)}")
        return pos

    return walk


def _plain_fixed(ty: AlgebraicType, ts: Typespace) -> bool:
    """True when every byte string of the right length is a valid value (ints, floats, products)."""
    ty = ts.resolve(ty)
    if isinstance(ty, PrimitiveType):
        return ty.kind in INT_LAYOUT or ty.kind in (TypeTag.F32, TypeTag.F64)
    if isinstance(ty, ProductType):
        return all(_plain_fixed(e.algebraic_type, ts) for e in ty.elements)
    return False


class _Seq:
    """A sequence bound to its column: width for truncation, schema for stepping."""

    __slots__ = ("schema", "seq_id", "column", "size", "mask", "zero")

    def __init__(self, schema: Any, size: int) -> None:
        self.schema = schema
        self.seq_id = schema.seq_id
        self.column = schema.column
        self.size = size
        self.mask = (1 << (8 * size)) - 1
        self.zero = bytes(size)


def _seq_step(schema: Any, value: int) -> int:
    """The value after ``value``: wraps past max to min (and below min to max)."""
    nxt = value + schema.increment
    if nxt > schema.max_value:
        return int(schema.min_value)
    if nxt < schema.min_value:
        return int(schema.max_value)
    return int(nxt)


class _Table:
    """One table, compiled: its DB, clustering index, secondary indexes, sequences, validator."""

    __slots__ = (
        "schema",
        "table_id",
        "name",
        "db",
        "pk",
        "indexes",
        "secondary",
        "sec_unique",
        "fast_pk",
        "seqs",
        "validate",
        "fixed_size",
        "min_size",
        "split",
        "seq_spans",
        "decode_row",
    )

    def __init__(self, schema: TableSchema, db: Any, index_dbs: dict[int, Any], cluster: int | None) -> None:
        self.schema = schema
        self.table_id = schema.table_id
        self.name = schema.name
        self.db = db
        ts = schema.typespace
        row_type = schema.row_type
        self.indexes: list[_Index] = []
        self.pk: _Index | None = None
        for ix in schema.indexes:
            clustered = ix.index_id == cluster
            idx = _Index(ix, schema, db if clustered else index_dbs[ix.index_id], db, clustered)
            self.indexes.append(idx)
            if clustered:
                self.pk = idx
        self.secondary = [i for i in self.indexes if not i.clustered]
        self.sec_unique = [i for i in self.secondary if i.unique]
        #: The clustering index when it is the only index: updates through it take the hot path.
        self.fast_pk = self.pk if not self.secondary else None
        if self.fast_pk is not None:
            self.fast_pk.fast_table = self

        codec = codec_for(row_type, ts)
        self.decode_row = codec.decode_all
        self.fixed_size: int | None = None
        split: Callable[[Any, int], int]
        if _plain_fixed(row_type, ts):
            size = codec.fixed_size
            assert size is not None
            self.fixed_size = size

            def validate(row: bytes) -> None:
                if len(row) != size:
                    raise DecodeError(f"row is {len(row)} bytes, the row type needs exactly {size}")

            def split_fixed(buf: Any, pos: int) -> int:
                end = pos + size
                if end > len(buf):
                    raise DecodeError(f"row at byte {pos} is truncated")
                return end

            split = split_fixed

        else:
            split = _row_walker(row_type, ts)

            def validate(row: bytes) -> None:
                end = split(row, 0)
                if end != len(row):
                    raise DecodeError(f"{len(row) - end} trailing byte(s) after the row")

        self.min_size = codec.min_size
        self.validate: Callable[[bytes], None] = validate
        self.split: Callable[[Any, int], int] = split

        # Sequences, with the byte span of their columns inside a row.
        seqs = []
        for s in sorted(schema.sequences, key=lambda s: s.column):
            cty = ts.resolve(row_type.elements[s.column].algebraic_type)
            if not isinstance(cty, PrimitiveType) or cty.kind not in INT_LAYOUT:
                raise SchemaConflict(f"table {schema.name!r}: sequence {s.name!r} is on a non-integer column")
            seqs.append(_Seq(s, INT_LAYOUT[cty.kind][0] // 8))
        self.seqs = seqs
        self.seq_spans = _span_finder(row_type, ts, [s.column for s in seqs]) if seqs else None


def _span_finder(row_type: ProductType, ts: Typespace, cols: list[int]) -> Callable[[bytes], list[tuple[int, int]]]:
    """``row -> [(start, end)]`` of the given (ascending) columns inside a BSATN row."""
    codecs = [codec_for(e.algebraic_type, ts) for e in row_type.elements[: max(cols) + 1]]
    offsets: list[int] = []
    off = 0
    for c in codecs:
        if c.fixed_size is None:
            break
        offsets.append(off)
        off += c.fixed_size
    if len(offsets) == len(codecs):
        spans = [(offsets[c], offsets[c] + (codecs[c].fixed_size or 0)) for c in cols]
        return lambda row: spans
    skips = [c.skip for c in codecs]
    wanted = set(cols)

    def find(row: bytes) -> list[tuple[int, int]]:
        out = []
        pos = 0
        for i, skip in enumerate(skips):
            end = skip(row, pos)
            if i in wanted:
                out.append((pos, end))
            pos = end
        return out

    return find


class _Catalog:
    """The compiled schema at one point in time. Replaced, never mutated, once published."""

    __slots__ = ("tables", "indexes", "table_names", "index_names", "clusters")

    def __init__(self) -> None:
        self.tables: dict[int, _Table] = {}
        self.indexes: dict[int, _Index] = {}
        self.table_names: dict[str, int] = {}
        self.index_names: dict[str, int] = {}
        #: table_id → id of the clustering index (persisted: it fixes the storage layout).
        self.clusters: dict[int, int | None] = {}

    def copy(self) -> _Catalog:
        c = _Catalog()
        c.tables = dict(self.tables)
        c.indexes = dict(self.indexes)
        c.table_names = dict(self.table_names)
        c.index_names = dict(self.index_names)
        c.clusters = dict(self.clusters)
        return c

    def put_table(self, tbl: _Table, cluster: int | None) -> None:
        old = self.tables.get(tbl.table_id)
        if old is not None:
            self.drop_table(tbl.table_id)
        self.tables[tbl.table_id] = tbl
        self.table_names[tbl.name] = tbl.table_id
        self.clusters[tbl.table_id] = cluster
        for ix in tbl.indexes:
            self.indexes[ix.index_id] = ix
            self.index_names[ix.name] = ix.index_id

    def drop_table(self, table_id: int) -> _Table:
        tbl = self.tables.pop(table_id)
        self.table_names.pop(tbl.name, None)
        self.clusters.pop(table_id, None)
        for ix in tbl.indexes:
            self.indexes.pop(ix.index_id, None)
            self.index_names.pop(ix.name, None)
        return tbl


def _table_db_name(table_id: int) -> bytes:
    return b"t%d" % table_id


def _index_db_name(index_id: int) -> bytes:
    return b"i%d" % index_id


def _choose_cluster(schema: TableSchema) -> int | None:
    """The index rows are clustered by: the unique index on exactly the primary-key column."""
    if schema.primary_key is None:
        return None
    for ix in schema.indexes:
        if ix.unique and ix.columns == (schema.primary_key,):
            return ix.index_id
    return None


# ---------------------------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------------------------


class _TxBase:
    """The read API shared by :class:`ReadTx` and :class:`MutTx`."""

    __slots__ = ("_cat", "_meta", "_done")
    _cat: _Catalog
    _meta: Any
    _done: bool

    # A property in both subclasses, never a plain attribute here: compiled (mypyc) code reads a
    # base-class attribute directly, past a subclass's property (MutTx materialises on access).
    @property
    def _txn(self) -> Any:
        """The LMDB transaction the reads go to."""
        raise NotImplementedError

    def _clustered_get(self, db: Any, key: bytes) -> Any:
        return _lmdb_get(self._txn, key, db)

    # -- names and schema ------------------------------------------------------------------------

    def table_id(self, name: str) -> int:
        """The id of the table called ``name`` (ABI #1); NoSuchTable otherwise."""
        tid = self._cat.table_names.get(name)
        if tid is None:
            raise NoSuchTable(f"no table named {name!r}")
        return tid

    def index_id(self, name: str) -> int:
        """The id of the index called ``name`` (ABI #2); NoSuchIndex otherwise."""
        iid = self._cat.index_names.get(name)
        if iid is None:
            raise NoSuchIndex(f"no index named {name!r}")
        return iid

    def table_schema(self, table_id: int) -> TableSchema:
        """The schema of a table visible to this transaction."""
        return self._table(table_id).schema

    def tables(self) -> dict[int, TableSchema]:
        """Every table visible to this transaction."""
        return {tid: t.schema for tid, t in self._cat.tables.items()}

    def _table(self, table_id: int) -> _Table:
        tbl = self._cat.tables.get(table_id)
        if tbl is None:
            raise NoSuchTable(f"no table with id {table_id}")
        return tbl

    def _index(self, index_id: int) -> _Index:
        idx = self._cat.indexes.get(index_id)
        if idx is None:
            raise NoSuchIndex(f"no index with id {index_id}")
        return idx

    # -- reads -----------------------------------------------------------------------------------

    def get_meta(self, key: bytes) -> bytes | None:
        """The engine's metadata value under ``key``, or None."""
        v = self._txn.get(_K_USER + key, None, self._meta)
        return None if v is None else bytes(v)

    def row_count(self, table_id: int) -> int:
        """Number of rows visible to this transaction (ABI #3)."""
        return int(self._txn.stat(self._table(table_id).db)["entries"])

    def scan(self, table_id: int) -> list[bytes]:
        """Every visible row, as a snapshot list (ABI #4; order: storage order)."""
        tbl = self._table(table_id)
        cur = self._txn.cursor(tbl.db)
        return [v[8:] for v in cur.iternext(keys=False, values=True)]

    def index_scan_point(self, index_id: int, key_bsatn: bytes) -> list[bytes]:
        """Rows whose index key equals ``bsatn(key)`` (ABI #28), in rid order; any algorithm."""
        idx = self._cat.indexes.get(index_id)
        if idx is None:
            raise NoSuchIndex(f"no index with id {index_id}")
        if idx.point_rev and len(key_bsatn) == idx.point_rev:
            # Hot path (an integer primary key): the key is the bytes reversed, one get.
            v = self._clustered_get(idx.db, key_bsatn[::-1])
            return [] if v is None else [v[8:]]
        try:
            conv = idx.point_conv
            key = conv(key_bsatn, 0)[0] if conv is not None else idx.point_key(key_bsatn)
        except DecodeError as e:
            raise BsatnDecodeError(f"point key for index {idx.name!r} does not decode: {e}") from None
        if idx.clustered and len(key) < KEY_TRUNC:
            # Hot path (primary-key lookup): one LMDB get, or none if the row is in the overlay.
            v = self._clustered_get(idx.db, key)
            return [] if v is None else [v[8:]]
        return [val[8:] for _, val in self._lookup(idx, key)]

    def index_scan_range(self, index_id: int, prefix: bytes, prefix_elems: int, rstart: bytes, rend: bytes) -> list[bytes]:
        """Rows in a prefix + bound range (ABI #5, §3.4), in key order then rid order."""
        idx = self._index(index_id)
        lo, hi = self._range_bounds(idx, prefix, prefix_elems, rstart, rend)
        if lo is None:
            return []
        return [val[8:] for _, val in self._range_entries(idx, lo, hi)]

    # -- internals -------------------------------------------------------------------------------

    def _range_bounds(
        self, idx: _Index, prefix: bytes, prefix_elems: int, rstart: bytes, rend: bytes
    ) -> tuple[bytes | None, bytes | None]:
        """Turn ABI range arguments into key bounds ``[lo, hi)`` (None: empty / unbounded).

        Exact semantics for an Excluded bound on a non-last key element: ``Excluded(v)`` on
        element p excludes every key whose element p equals v, whatever follows. (The 1.12
        reference pads bounds with Min/Max sentinels and so treats such an Excluded like
        Included; we deliberately don't reproduce that quirk — module-abi.md §3.4.2.)
        """
        if not idx.ordered:
            raise WrongIndexAlgo(f"index {idx.name!r} of table {idx.table_name!r} is a hash index: no range scans")
        convs = idx.range_convs
        try:
            if idx.range_product:
                if prefix_elems >= len(convs):
                    raise DecodeError(f"prefix_elems {prefix_elems} must be below the key's {len(convs)} element(s)")
                p = prefix_elems
            else:
                if prefix_elems and prefix:
                    raise DecodeError(f"prefix_elems {prefix_elems} on a single-column index")
                p = 0
            kp = b""
            if p:
                pos = 0
                parts = []
                for conv in convs[:p]:
                    k, pos = conv(prefix, pos)
                    parts.append(k)
                kp = b"".join(parts)
            conv = convs[p]
            lo_tag, lo_key = _bound(conv, rstart)
            hi_tag, hi_key = _bound(conv, rend)
        except DecodeError as e:
            raise BsatnDecodeError(f"range bounds for index {idx.name!r} do not decode: {e}") from None
        lo: bytes | None
        if lo_tag == 2:
            lo = kp
        elif lo_tag == 0:
            lo = kp + lo_key
        else:
            lo = prefix_end(kp + lo_key)
        hi: bytes | None
        if hi_tag == 2:
            hi = prefix_end(kp)
        elif hi_tag == 0:
            hi = prefix_end(kp + hi_key)
        else:
            hi = kp + hi_key
        return lo, hi

    def _lookup(self, idx: _Index, key: bytes) -> list[tuple[bytes, bytes]]:
        """``(locator, rid ++ row)`` of every row whose key on ``idx`` equals ``key``."""
        if idx.unique and len(key) < KEY_TRUNC:
            txn = self._txn
            v = _lmdb_get(txn, key, idx.db)
            if v is None:
                return []
            if idx.clustered:
                return [(key, v)]
            return [(v, _lmdb_get(txn, v, idx.table_db))]
        # Keys are prefix-free, so "starts with key" is "equals key".
        return self._range_entries(idx, key, prefix_end(key))

    def _range_entries(self, idx: _Index, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        """``(locator, rid ++ row)`` of the rows with ``lo <= key < hi``, in key then rid order."""
        out: list[tuple[bytes, bytes]] = []
        if hi is not None and lo >= hi:
            return out
        txn = self._txn
        cur = txn.cursor(idx.db)
        # A truncated entry's stored prefix is <= its full key, so start at lo's prefix.
        if not cur.set_range(lo[:KEY_TRUNC]):
            return out
        clustered = idx.clustered
        unique = idx.unique
        tdb = idx.table_db
        get = txn.get
        extract = idx.extract
        group: list[tuple[bytes, bytes, bytes]] = []
        group_prefix = b""
        for ekey, v in cur.iternext():
            if len(ekey) == _TRUNC_LEN:
                stored = ekey[:KEY_TRUNC]
                # stored >= hi implies full key >= hi (stored is a prefix of the full key).
                if hi is not None and stored >= hi:
                    break
                if stored != group_prefix:
                    _flush(group, out)
                    group_prefix = stored
                loc, val = (ekey, v) if clustered else (v, get(v, None, tdb))
                full = extract(val[8:])
                if full >= lo and (hi is None or full < hi):
                    group.append((full, loc, val))
                continue
            if group:
                _flush(group, out)
            full = ekey if unique else ekey[:-8]
            if hi is not None and full >= hi:
                break
            if full < lo:
                continue
            out.append((ekey, v) if clustered else (v, get(v, None, tdb)))
        _flush(group, out)
        return out

    def _find_row(self, tbl: _Table, row: bytes) -> tuple[bytes, bytes] | None:
        """The stored ``(locator, rid ++ row)`` byte-identical to ``row``, or None."""
        pk = tbl.pk
        if pk is not None:
            for loc, val in self._lookup(pk, pk.extract(row)):
                if val[8:] == row:
                    return loc, val
            return None
        return self._hash_find(tbl, _blake(row), row)

    def _hash_find(self, tbl: _Table, h: bytes, row: bytes) -> tuple[bytes, bytes] | None:
        cur = self._txn.cursor(tbl.db)
        if not cur.set_range(h):
            return None
        for k, v in cur.iternext():
            if k[:16] != h:
                return None
            if v[8:] == row:
                return k, v
        return None


def _flush(group: list[tuple[bytes, bytes, bytes]], out: list[tuple[bytes, bytes]]) -> None:
    """Emit a run of truncated entries sharing a stored prefix, in full-key order.

    The run is in rid order already and the sort is stable, so equal keys stay in rid order.
    """
    if group:
        group.sort(key=lambda t: t[0])
        out.extend((loc, val) for _, loc, val in group)
        group.clear()


def _bound(conv: Callable[[Any, int], tuple[bytes, int]], buf: bytes) -> tuple[int, bytes]:
    """Decode a BSATN ``Bound<T>`` (§3.4.1) into (tag, key of the value)."""
    if not buf:
        raise DecodeError("empty Bound")
    tag = buf[0]
    if tag == 2:
        return 2, b""
    if tag > 2:
        raise DecodeError(f"invalid Bound tag {tag}")
    return tag, conv(buf, 1)[0]


class ReadTx(_TxBase):
    """A read-only snapshot of the last checkpoint; usable from any thread. Close it promptly."""

    __slots__ = ("_snapshot",)

    def __init__(self, txn: Any, cat: _Catalog, meta_db: Any) -> None:
        self._snapshot = txn
        self._cat = cat
        self._meta = meta_db
        self._done = False

    @property
    def _txn(self) -> Any:
        return self._snapshot

    def close(self) -> None:
        """Release the snapshot.

        py-lmdb frees a read transaction's reader slot only when the Transaction object is
        deallocated, so the reference is dropped here rather than left for the garbage collector:
        a ReadTx caught in a reference cycle would otherwise pin a slot (of ``max_readers``)
        until the next collection.
        """
        if not self._done:
            self._done = True
            self._snapshot.abort()
            self._snapshot = None

    def abort(self) -> None:
        """The same as :meth:`close` (a def, not an alias: compiled classes take no aliases)."""
        self.close()

    def applied_offset(self) -> int:
        """The commit-log offset this snapshot's checkpoint was taken at (-1: none)."""
        v = self._txn.get(_K_APPLIED, None, self._meta)
        return -1 if v is None else _APPLIED.unpack(v)[0]

    def table_sizes(self) -> dict[int, tuple[str, int, int]]:
        """Per table: ``(name, rows, bytes)``, the bytes being the LMDB pages of its rows (to the
        precision of a page, as 1.12's ``spacetime_table_size_bytes``; indexes not included)."""
        out: dict[int, tuple[str, int, int]] = {}
        for tid, tbl in self._cat.tables.items():
            st = self._txn.stat(tbl.db)
            pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            out[tid] = (tbl.name, int(st["entries"]), int(pages * st["psize"]))
        return out

    def __enter__(self) -> ReadTx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ABSENT: Final[Any] = object()
#: ``int.from_bytes``'s byte order for row ids, as ``map`` wants it (one per row).
_BIG: Final[repeat[Literal["big"]]] = repeat("big")


#: Rows the committed overlay holds at most before they are written into LMDB together. A put
#: long after the read that found its row costs more (the row's pages have left the CPU caches):
#: one thread alone, `transfer` over 100,000 accounts cost 34.8 µs plain Python writing at once,
#: 37.8 with 16 rows deferred, 42.9 with 256, 47 without a bound; served (64 × 40 confirmed,
#: split) 32 rows gave 16.1–17.7k calls/s against 13.0–14.5k writing at once (RESULTS.md).
PENDING_ROWS: Final = 32


class MutTx(_TxBase):
    """A mutable transaction (writer thread only, one at a time): a child of the outer txn.

    The LMDB child transaction is created lazily. Until something needs it, the hot paths
    (primary-key point scans and updates through the clustering key) work on an in-memory
    overlay over the outer transaction: writes go to ``_ov`` (what commit keeps) and to ``_rc``
    (every row this transaction has read or written), and reads consult ``_rc``, then the
    datastore's committed overlay (below), then the outer transaction — one dictionary lookup
    per read. Rollback just drops the overlay. A nested LMDB transaction costs ~3 µs per reducer
    under random access (page copies and dirty-list merging), which is a large share of a small
    reducer. Any other operation first materialises the child transaction (replaying the
    overlay into it) through the ``_txn`` property, so every general code path keeps plain
    child-transaction semantics.

    Commit does not write the overlay into LMDB either: it joins the datastore's *committed
    overlay* (``Datastore._pending``: rows overwritten in place since LMDB was last written),
    which the hot paths read before the outer transaction and which is written into it in one go
    once it holds :data:`PENDING_ROWS` rows, and before anything else reads the outer transaction
    — a materialised child, a checkpoint, metadata. Why: py-lmdb lets the GIL go around every
    ``put``, and beside a busy event-loop thread each such release hands the interpreter to the
    other thread and back (loadtest/RESULTS.md, "The writer's GIL releases"); a burst of puts
    pays that once, as the other thread goes back to waiting for I/O after its turn.
    """

    __slots__ = (
        "_ds", "_changes", "_seq_local", "_schema_ops", "_cat_owned", "_child", "_outer", "_ov", "_rc", "_pending",
    )

    def __init__(self, ds: Datastore, outer: Any) -> None:
        # Assigned directly (no super() call): a MutTx is created per reducer call.
        self._child: Any = None
        self._outer = outer
        self._ov: dict[tuple[Any, bytes], bytes] = {}
        self._rc: dict[tuple[Any, bytes], Any] = {}
        self._pending = ds._pending
        self._cat = ds._cat
        self._meta = ds._meta
        self._done = False
        self._ds = ds
        #: table_id → [inserted {row: rid8}, deleted {row: rid8}] (net).
        self._changes: dict[int, list[dict[bytes, bytes]]] = {}
        #: seq_id → next value (None: the sequence was dropped).
        self._seq_local: dict[int, int | None] = {}
        self._schema_ops: list[SchemaOp] = []
        self._cat_owned = False

    @property
    def _txn(self) -> Any:
        child = self._child
        if child is None:
            child = self._materialize()
        return child

    def _clustered_get(self, db: Any, key: bytes) -> Any:
        if self._child is not None:
            return _lmdb_get(self._child, key, db)
        ck = (db, key)
        v = self._rc.get(ck, _ABSENT)
        if v is _ABSENT:
            v = self._pending.get(ck, _ABSENT)
            if v is _ABSENT:
                v = _lmdb_get(self._outer, key, db)
            self._rc[ck] = v
        return v

    def index_scan_point(self, index_id: int, key_bsatn: bytes) -> list[bytes]:
        """Rows whose index key equals ``bsatn(key)`` (ABI #28), in rid order; any algorithm."""
        rows = self.index_scan_point_rows(index_id, key_bsatn)
        return [rows] if type(rows) is bytes else rows  # type: ignore[return-value]

    def index_scan_point_rows(self, index_id: int, key_bsatn: bytes) -> bytes | list[bytes]:
        """:meth:`index_scan_point`, with a single row as the row itself (what the module host
        hands out as one iterator chunk): no list is built on the primary-key lookup path."""
        idx = self._cat.indexes.get(index_id)
        if idx is None or not idx.point_rev or len(key_bsatn) != idx.point_rev or self._child is not None:
            return _TxBase.index_scan_point(self, index_id, key_bsatn)
        # Hot path (an integer primary key, overlay in use): _clustered_get inlined.
        db = idx.db
        ck = (db, key_bsatn[::-1])
        v = self._rc.get(ck, _ABSENT)
        if v is _ABSENT:
            v = self._pending.get(ck, _ABSENT)
            if v is _ABSENT:
                v = _lmdb_get(self._outer, ck[1], db)
            self._rc[ck] = v
        return [] if v is None else v[8:]

    def _apply_updates(self, txdata: TxData) -> bool:
        """Replay ``txdata`` on the overlay when every change of it is a row replaced in place
        through the clustering key of a table with no other index (the row id kept): a delete
        and an insert under one key, the delete byte-identical to the stored row. False, with
        nothing changed, when any change is of another kind (:meth:`apply` then takes the
        general path, which also reports a diverged replica)."""
        plan: list[tuple[int, tuple[Any, bytes], bytes, bytes, bytes]] = []
        for tid, ch in txdata.tables.items():
            deletes = ch.deletes
            if len(deletes) != len(ch.inserts):
                return False
            tbl = self._cat.tables.get(tid)
            idx = None if tbl is None else tbl.fast_pk
            if idx is None:
                return False
            assert tbl is not None
            db = tbl.db
            old_rows: dict[bytes, bytes] = {}
            for row in deletes:
                key = _clustered_key(idx, row)
                if key is None or key in old_rows:
                    return False
                old_rows[key] = row
            for row, rid in zip(ch.inserts, ch.insert_rids, strict=True):
                key = _clustered_key(idx, row)
                if key is None:
                    return False
                old_row = old_rows.pop(key, None)
                if old_row is None:
                    return False
                old_val = self._clustered_get(db, key)
                rid8 = _RID.pack(rid)
                if old_val is None or old_val[:8] != rid8 or old_val[8:] != old_row:
                    return False
                plan.append((tid, (db, key), old_row, row, rid8))
        for tid, ck, old_row, row, rid8 in plan:
            ch2 = self._changes.get(tid)
            if ch2 is None:
                ch2 = self._changes[tid] = [{}, {}]
            ins, dels = ch2  # net changes, kept as MutTx.update keeps them
            if old_row in ins:
                del ins[old_row]
            else:
                dels[old_row] = rid8
            if row in dels:
                del dels[row]
            else:
                ins[row] = rid8
            self._ov[ck] = self._rc[ck] = rid8 + row
        return True

    def _materialize(self) -> Any:
        self._ds._write_pending()
        child = self._ds._env.begin(None, self._outer, True)
        for (db, key), val in self._ov.items():
            child.put(key, val, True, True, False, db)
        self._ov.clear()
        self._rc.clear()
        self._child = child
        return child


    def __enter__(self) -> MutTx:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.rollback()

    # -- finishing -------------------------------------------------------------------------------

    def commit(self) -> TxData:
        """Commit into the outer transaction; returns what changed (for the commit log)."""
        seqs = self._finish()
        tables: dict[int, TableChanges] = {}
        for tid, (ins, dels) in self._changes.items():
            if ins or dels:
                tables[tid] = TableChanges(list(ins), list(dels), list(map(int.from_bytes, ins.values(), _BIG)))
        return TxData(tables, seqs, self._schema_ops)

    def _finish(self) -> dict[int, int]:
        """Commit into the outer transaction (what :meth:`commit` does but build its TxData,
        which a replay, :meth:`Datastore.apply`, has already); the sequences that moved."""
        if self._done:
            raise TransactionStateError("transaction already finished")
        if self._child is None:
            if self._ov:
                pending = self._pending
                pending.update(self._ov)
                if len(pending) >= PENDING_ROWS:
                    self._ds._write_pending()
        else:
            self._child.commit()
        self._done = True
        ds = self._ds
        ds._mut = None
        if self._cat_owned:
            ds._cat = self._cat
        seqs: dict[int, int] = {}
        if not self._seq_local:
            return seqs
        for sid, v in self._seq_local.items():
            if v is None:
                ds._seq.pop(sid, None)
                ds._seq_dirty.discard(sid)
                ds._seq_deleted.add(sid)
            else:
                ds._seq[sid] = v
                ds._seq_dirty.add(sid)
                ds._seq_deleted.discard(sid)
                seqs[sid] = v
        return seqs

    def rollback(self) -> None:
        """Discard every change of this transaction."""
        if self._done:
            return
        self._done = True
        if self._child is not None:
            self._child.abort()
        self._ds._mut = None

    # -- meta ------------------------------------------------------------------------------------

    def put_meta(self, key: bytes, value: bytes) -> None:
        """Store an engine metadata value (not part of TxData: the engine replays its own)."""
        self._txn.put(_K_USER + key, value, True, True, False, self._meta)

    def put_logged_meta(self, key: bytes, value: bytes) -> None:
        """Store a metadata value that is part of TxData (logged, replayed on recovery and by
        followers), e.g. an SQL system variable."""
        self.put_meta(key, value)
        self._schema_ops.append(SchemaOp(SchemaOpKind.PUT_META, key=key, value=value))

    def delete_meta(self, key: bytes) -> None:
        """Remove an engine metadata value."""
        self._txn.delete(_K_USER + key, b"", self._meta)

    # -- row writes ------------------------------------------------------------------------------

    def insert(self, table_id: int, row: bytes) -> tuple[bytes, bytes]:
        """Insert a row (ABI #12, §3.8); returns (stored row, generated-values BSATN).

        Zero values in sequence columns are replaced by the sequence's next value; the
        generated bytes are those values in column order (what the guest reads back).
        Inserting a row identical to a visible one is a no-op that still returns the row and
        the generated bytes (the sequence values are consumed, as in the reference).
        """
        return self._insert(self._table(table_id), row, None)

    def _insert(self, tbl: _Table, row: bytes, replay_rid8: bytes | None) -> tuple[bytes, bytes]:
        """Insert; ``replay_rid8`` (from apply) skips sequences and imposes the row id."""
        table_id = tbl.table_id
        if type(row) is not bytes:
            row = bytes(row)
        gen = b""
        seq_updates: list[tuple[int, int]] | None = None
        try:
            if len(row) != tbl.fixed_size:
                tbl.validate(row)
            if tbl.seqs and replay_rid8 is None:
                row, gen, seq_updates = self._gen_seqs(tbl, row)
            pk = tbl.pk
            pk_key = pk.extract(row) if pk is not None else b""
            sec_keys = [ix.extract(row) for ix in tbl.secondary]
        except DecodeError as e:
            raise BsatnDecodeError(f"row for table {tbl.name!r} does not decode: {e}") from None
        if pk is not None:
            found = self._lookup(pk, pk_key)
            if found:
                if found[0][1][8:] == row and replay_rid8 is None:
                    self._seq_apply(seq_updates)
                    return row, gen
                raise self._unique_error(tbl, pk, row)
            h = b""
        else:
            h = _blake(row)
            if self._hash_find(tbl, h, row) is not None:
                if replay_rid8 is not None:
                    raise DatastoreError(f"replay: row already present in table {tbl.name!r}")
                self._seq_apply(seq_updates)
                return row, gen
        for ix, key in zip(tbl.secondary, sec_keys, strict=True):
            if ix.unique and self._lookup(ix, key):
                raise self._unique_error(tbl, ix, row)
        # Every check passed: from here on nothing can fail half-way (but LMDB itself).
        self._seq_apply(seq_updates)
        ch = self._changes.get(table_id)
        if ch is None:
            ch = self._changes[table_id] = [{}, {}]
        rid8 = ch[1].pop(row, None)
        if replay_rid8 is not None:
            self._ds._bump_rid(table_id, replay_rid8)
            if rid8 is None:
                ch[0][row] = replay_rid8
            rid8 = replay_rid8
        elif rid8 is None:
            # A row deleted earlier in this tx comes back with its old rid (no net change).
            rid8 = self._ds._new_rid(table_id)
            ch[0][row] = rid8
        self._put_row(tbl, row, rid8, pk_key, h, sec_keys)
        return row, gen

    def update(self, table_id: int, index_id: int, row: bytes) -> tuple[bytes, bytes]:
        """Replace the row with the same key on unique index ``index_id`` (ABI #13, §3.8)."""
        cat = self._cat
        idx = cat.indexes.get(index_id)
        if idx is None or (tbl := idx.fast_table) is None or tbl.table_id != table_id:
            return self._update(cat.tables.get(table_id), idx, table_id, index_id, row)
        # Hot path: through the clustering key of a table with no other index, where the
        # locator is the key itself — one get and one put.
        if type(row) is not bytes:
            row = bytes(row)
        gen = b""
        seq_updates: list[tuple[int, int]] | None = None
        try:
            if len(row) != tbl.fixed_size:
                tbl.validate(row)
            if tbl.seqs:
                row, gen, seq_updates = self._gen_seqs(tbl, row)
            rev = idx.rev_slice
            if rev is not None:
                # Through an untyped name: compiled (mypyc) code indexes typed bytes as by an
                # integer, whatever the index is.
                untyped: Any = row
                key = untyped[rev]
            else:
                off = idx.fixed_off
                key = idx.extract(row) if off is None else idx.point_conv(row, off)[0]  # type: ignore[misc]
        except DecodeError as e:
            raise BsatnDecodeError(f"row for table {tbl.name!r} does not decode: {e}") from None
        if rev is None and len(key) >= KEY_TRUNC:
            return self._update(tbl, idx, table_id, index_id, row)
        child = self._child
        db = tbl.db
        if child is None:
            ck = (db, key)
            old_val = self._rc.get(ck, _ABSENT)
            if old_val is _ABSENT:
                old_val = self._pending.get(ck, _ABSENT)
                if old_val is _ABSENT:
                    old_val = self._outer.get(key, None, db)
        else:
            old_val = child.get(key, None, db)
        if old_val is None:
            raise NoSuchRow(f"no row in table {tbl.name!r} with that key on index {idx.name!r}")
        if seq_updates:
            self._seq_apply(seq_updates)
        old_row = old_val[8:]
        if old_row == row:
            return row, gen
        rid8 = old_val[:8]
        ch = self._changes.get(table_id)
        if ch is None:
            ch = self._changes[table_id] = [{}, {}]
        ins, dels = ch
        if old_row in ins:
            del ins[old_row]
        else:
            dels[old_row] = rid8
        if row in dels:  # `in` then pop: no method call in the common case (not deleted before)
            rid8 = dels.pop(row)
        else:
            ins[row] = rid8
        if child is None:
            self._ov[ck] = self._rc[ck] = rid8 + row
        else:
            child.put(key, rid8 + row, True, True, False, db)
        return row, gen

    def _update(self, tbl: _Table | None, idx: _Index | None, table_id: int, index_id: int, row: bytes) -> tuple[bytes, bytes]:
        """The general update path (any index layout, long keys, secondary indexes)."""
        if tbl is None:
            raise NoSuchTable(f"no table with id {table_id}")
        if idx is None or idx.table_id != table_id:
            raise NoSuchIndex(f"no index with id {index_id} on table {tbl.name!r}")
        if not idx.unique:
            raise IndexNotUnique(f"index {idx.name!r} of table {tbl.name!r} is not unique")
        if type(row) is not bytes:
            row = bytes(row)
        gen = b""
        seq_updates: list[tuple[int, int]] | None = None
        try:
            if len(row) != tbl.fixed_size:
                tbl.validate(row)
            if tbl.seqs:
                row, gen, seq_updates = self._gen_seqs(tbl, row)
            key = idx.extract(row)
            pk = tbl.pk
            pk_key = key if idx is pk else (pk.extract(row) if pk is not None else b"")
            sec_keys = [key if ix is idx else ix.extract(row) for ix in tbl.secondary]
        except DecodeError as e:
            raise BsatnDecodeError(f"row for table {tbl.name!r} does not decode: {e}") from None
        found = self._lookup(idx, key)
        if not found:
            raise NoSuchRow(f"no row in table {tbl.name!r} with that key on index {idx.name!r}")
        old_loc, old_val = found[0]
        old_row = old_val[8:]
        if old_row == row:
            self._seq_apply(seq_updates)
            return row, gen
        # Other unique constraints, against every row but the old one.
        if pk is not None and idx is not pk:
            for loc, _ in self._lookup(pk, pk_key):
                if loc != old_loc:
                    raise self._unique_error(tbl, pk, row)
        for ix, k in zip(tbl.secondary, sec_keys, strict=True):
            if ix.unique and ix is not idx:
                for loc, _ in self._lookup(ix, k):
                    if loc != old_loc:
                        raise self._unique_error(tbl, ix, row)
        self._seq_apply(seq_updates)
        old_rid8 = old_val[:8]
        ch = self._changes.get(table_id)
        if ch is None:
            ch = self._changes[table_id] = [{}, {}]
        ins, dels = ch
        if old_row in ins:
            del ins[old_row]
        else:
            dels[old_row] = old_rid8
        rid8 = dels.pop(row, None)
        if rid8 is None:
            rid8 = old_rid8
            ins[row] = rid8
        if pk is not None and rid8 == old_rid8 and _entry_key(True, pk_key, rid8) == old_loc:
            # Same locator and rid: overwrite in place, touch only index entries whose key moved.
            txn = self._txn
            txn.put(old_loc, rid8 + row, True, True, False, tbl.db)
            for ix, k in zip(tbl.secondary, sec_keys, strict=True):
                ok = ix.extract(old_row)
                if ok != k:
                    txn.delete(_entry_key(ix.unique, ok, rid8), b"", ix.db)
                    txn.put(_entry_key(ix.unique, k, rid8), old_loc, True, True, False, ix.db)
        else:
            self._unlink_row(tbl, old_loc, old_val)
            self._put_row(tbl, row, rid8, pk_key, b"" if pk is not None else _blake(row), sec_keys)
        return row, gen

    def delete_by_index_scan_point(self, index_id: int, key_bsatn: bytes) -> int:
        """Delete the rows :meth:`index_scan_point` would return; returns their number (ABI #29)."""
        idx = self._index(index_id)
        try:
            key = idx.point_key(key_bsatn)
        except DecodeError as e:
            raise BsatnDecodeError(f"point key for index {idx.name!r} does not decode: {e}") from None
        return self._delete_entries(self._cat.tables[idx.table_id], self._lookup(idx, key))

    def delete_by_index_scan_range(self, index_id: int, prefix: bytes, prefix_elems: int, rstart: bytes, rend: bytes) -> int:
        """Delete the rows :meth:`index_scan_range` would return; returns their number (ABI #7)."""
        idx = self._index(index_id)
        lo, hi = self._range_bounds(idx, prefix, prefix_elems, rstart, rend)
        if lo is None:
            return 0
        return self._delete_entries(self._cat.tables[idx.table_id], self._range_entries(idx, lo, hi))

    def delete_by_rel(self, table_id: int, rel: bytes) -> int:
        """Delete every stored row equal to a row of ``rel`` (BSATN array of rows, ABI #9)."""
        tbl = self._table(table_id)
        rows: list[bytes] = []
        try:
            if len(rel) < 4:
                raise DecodeError("relation shorter than its u32 count")
            (n,) = _U32.unpack_from(rel, 0)
            if tbl.min_size and n * tbl.min_size > len(rel) - 4:
                raise DecodeError(f"relation count {n} exceeds the input")
            pos = 4
            split = tbl.split
            for _ in range(n):
                end = split(rel, pos)
                rows.append(bytes(rel[pos:end]))
                pos = end
        except DecodeError as e:
            raise BsatnDecodeError(f"relation for table {tbl.name!r} does not decode: {e}") from None
        count = 0
        for row in rows:
            found = self._find_row(tbl, row)
            if found is not None:
                self._del_row(tbl, *found)
                count += 1
        return count

    def delete_row(self, table_id: int, row: bytes) -> bool:
        """Delete the stored row byte-identical to ``row``; False if there is none."""
        tbl = self._table(table_id)
        found = self._find_row(tbl, bytes(row))
        if found is None:
            return False
        self._del_row(tbl, *found)
        return True

    # -- row-write internals ---------------------------------------------------------------------

    def _gen_seqs(self, tbl: _Table, row: bytes) -> tuple[bytes, bytes, list[tuple[int, int]]]:
        """Fill zero sequence columns; returns (row, generated bytes, pending seq positions)."""
        assert tbl.seq_spans is not None
        spans = tbl.seq_spans(row)
        gen: list[bytes] = []
        updates: list[tuple[int, int]] = []
        local = self._seq_local
        ds_seq = self._ds._seq
        for seq, (s, e) in zip(tbl.seqs, spans, strict=True):
            if row[s:e] != seq.zero:
                continue
            cur = local.get(seq.seq_id)
            if cur is None:
                cur = ds_seq[seq.seq_id]
            # The reference writes the value with a plain cast: truncated to the column width.
            val = (cur & seq.mask).to_bytes(seq.size, "little")
            row = row[:s] + val + row[e:]
            gen.append(val)
            nxt = _seq_step(seq.schema, cur)
            # Pending until the whole operation succeeds (a failed insert consumes nothing).
            updates.append((seq.seq_id, nxt))
        return row, b"".join(gen), updates

    def _seq_apply(self, updates: list[tuple[int, int]] | None) -> None:
        if updates:
            for sid, v in updates:
                self._seq_local[sid] = v

    def _put_row(self, tbl: _Table, row: bytes, rid8: bytes, pk_key: bytes, h: bytes, sec_keys: list[bytes]) -> None:
        txn = self._txn
        loc = _entry_key(True, pk_key, rid8) if tbl.pk is not None else h + rid8
        txn.put(loc, rid8 + row, True, True, False, tbl.db)
        for ix, key in zip(tbl.secondary, sec_keys, strict=True):
            txn.put(_entry_key(ix.unique, key, rid8), loc, True, True, False, ix.db)

    def _unlink_row(self, tbl: _Table, loc: bytes, val: bytes) -> None:
        """Remove a row and its index entries from storage (no change tracking)."""
        txn = self._txn
        row = val[8:]
        rid8 = val[:8]
        txn.delete(loc, b"", tbl.db)
        for ix in tbl.secondary:
            txn.delete(_entry_key(ix.unique, ix.extract(row), rid8), b"", ix.db)

    def _del_row(self, tbl: _Table, loc: bytes, val: bytes) -> None:
        """Delete a row and record it in this transaction's net changes."""
        self._unlink_row(tbl, loc, val)
        row = val[8:]
        rid8 = val[:8]
        ch = self._changes.get(tbl.table_id)
        if ch is None:
            ch = self._changes[tbl.table_id] = [{}, {}]
        if row in ch[0]:
            del ch[0][row]
        else:
            ch[1][row] = rid8

    def _delete_entries(self, tbl: _Table, entries: list[tuple[bytes, bytes]]) -> int:
        for loc, val in entries:
            self._del_row(tbl, loc, val)
        return len(entries)

    def _unique_error(self, tbl: _Table, ix: _Index, row: bytes) -> UniqueAlreadyExists:
        names = tbl.schema.column_names()
        cols = ", ".join(names[c] for c in ix.schema.columns)
        try:
            values = tbl.decode_row(row)
            shown = ", ".join(repr(values[c]) for c in ix.schema.columns)
        except SatsError:
            shown = "?"
        return UniqueAlreadyExists(
            f"duplicate key in unique index {ix.name!r} of table {tbl.name!r}: ({cols}) = ({shown})"
        )

    # -- schema changes (recorded in TxData) -----------------------------------------------------

    def _own_cat(self) -> _Catalog:
        """Copy-on-write: the published catalog is shared with readers and must not change."""
        if not self._cat_owned:
            self._cat = self._cat.copy()
            self._cat_owned = True
        return self._cat

    def _seq_exists(self, seq_id: int) -> bool:
        if seq_id in self._seq_local:
            return self._seq_local[seq_id] is not None
        return seq_id in self._ds._seq

    def _open_db(self, name: bytes, clear: bool) -> Any:
        try:
            db = self._ds._env.open_db(name, txn=self._txn, create=True)
        except lmdb.DbsFullError:
            raise SchemaConflict(
                f"no free LMDB database slot for {name.decode()}: too many tables and indexes "
                "for DatastoreConfig.max_dbs"
            ) from None
        if clear and self._txn.stat(db)["entries"]:
            # Left over from a dropped table/index with the same id (DBs are emptied, not deleted).
            self._txn.drop(db, delete=False)
        return db

    def _write_schema(self, schema: TableSchema, cluster: int | None) -> None:
        doc = {"table": table_to_json(schema), "cluster": cluster}
        self._txn.put(_K_TABLE + b"%d" % schema.table_id, dumps(doc), True, True, False, self._meta)

    def create_table(self, schema: TableSchema) -> None:
        """Create a table with its indexes and sequences."""
        schema = replace(schema, indexes=list(schema.indexes), sequences=list(schema.sequences))
        try:
            schema.validate()
        except SchemaError as e:
            raise SchemaConflict(str(e)) from None
        cat = self._cat
        if schema.table_id in cat.tables or schema.name in cat.table_names:
            raise SchemaConflict(f"table {schema.name!r} (id {schema.table_id}): id or name already exists")
        names = set()
        for ix in schema.indexes:
            if ix.index_id in cat.indexes or ix.name in cat.index_names or ix.name in names:
                raise SchemaConflict(f"index {ix.name!r} (id {ix.index_id}): id or name already exists")
            names.add(ix.name)
        for sq in schema.sequences:
            if self._seq_exists(sq.seq_id):
                raise SchemaConflict(f"sequence {sq.name!r} (id {sq.seq_id}) already exists")
        cluster = _choose_cluster(schema)
        db = self._open_db(_table_db_name(schema.table_id), clear=True)
        index_dbs = {
            ix.index_id: self._open_db(_index_db_name(ix.index_id), clear=True)
            for ix in schema.indexes
            if ix.index_id != cluster
        }
        tbl = _Table(schema, db, index_dbs, cluster)
        self._own_cat().put_table(tbl, cluster)
        self._write_schema(schema, cluster)
        for sq in schema.sequences:
            self._seq_local[sq.seq_id] = sq.start
        self._schema_ops.append(SchemaOp(SchemaOpKind.CREATE_TABLE, table=schema))

    def drop_table(self, table_id: int) -> None:
        """Drop a table, its rows, indexes and sequences."""
        tbl = self._table(table_id)
        self._own_cat().drop_table(table_id)
        txn = self._txn
        txn.drop(tbl.db, delete=False)
        for ix in tbl.secondary:
            txn.drop(ix.db, delete=False)
        txn.delete(_K_TABLE + b"%d" % table_id, b"", self._meta)
        for sq in tbl.schema.sequences:
            self._seq_local[sq.seq_id] = None
        # The rows vanish with the table; TxData reports the drop, not row deletes.
        self._changes.pop(table_id, None)
        self._schema_ops.append(SchemaOp(SchemaOpKind.DROP_TABLE, id=table_id))

    def create_index(self, index: IndexSchema) -> None:
        """Add an index and build it over the existing rows (UniqueAlreadyExists if it can't)."""
        tbl = self._table(index.table_id)
        cat = self._cat
        if index.index_id in cat.indexes or index.name in cat.index_names:
            raise SchemaConflict(f"index {index.name!r} (id {index.index_id}): id or name already exists")
        schema = replace(tbl.schema, indexes=[*tbl.schema.indexes, index])
        try:
            schema.validate()
        except SchemaError as e:
            raise SchemaConflict(str(e)) from None
        cluster = cat.clusters[tbl.table_id]
        handles = {ix.index_id: ix.db for ix in tbl.secondary}
        handles[index.index_id] = self._open_db(_index_db_name(index.index_id), clear=True)
        new = _Table(schema, tbl.db, handles, cluster)
        idx = next(i for i in new.indexes if i.index_id == index.index_id)
        entries = [(idx.extract(v[8:]), v[:8], k) for k, v in self._txn.cursor(tbl.db).iternext()]
        if idx.unique:
            entries.sort(key=lambda t: t[0])
            for a, b in zip(entries, entries[1:], strict=False):
                if a[0] == b[0]:
                    val = self._txn.get(b[2], None, tbl.db)
                    raise self._unique_error(new, idx, val[8:])
        put = self._txn.put
        for key, rid8, loc in entries:
            put(_entry_key(idx.unique, key, rid8), loc, True, True, False, idx.db)
        self._own_cat().put_table(new, cluster)
        self._write_schema(schema, cluster)
        self._schema_ops.append(SchemaOp(SchemaOpKind.CREATE_INDEX, index=index))

    def drop_index(self, index_id: int) -> None:
        """Drop an index. Dropping the clustering (primary-key) index re-clusters the table by row hash."""
        idx = self._index(index_id)
        tbl = self._cat.tables[idx.table_id]
        schema = replace(tbl.schema, indexes=[i for i in tbl.schema.indexes if i.index_id != index_id])
        handles = {ix.index_id: ix.db for ix in tbl.secondary if ix.index_id != index_id}
        txn = self._txn
        if not idx.clustered:
            txn.drop(idx.db, delete=False)
            cluster = self._cat.clusters[tbl.table_id]
            new = _Table(schema, tbl.db, handles, cluster)
        else:
            cluster = None
            new = _Table(schema, tbl.db, handles, None)
            rows = [(v[:8], v[8:]) for v in txn.cursor(tbl.db).iternext(keys=False, values=True)]
            txn.drop(tbl.db, delete=False)
            for ix in new.secondary:
                txn.drop(ix.db, delete=False)
            for rid8, row in rows:
                self._put_row(new, row, rid8, b"", _blake(row), [ix.extract(row) for ix in new.secondary])
        self._own_cat().put_table(new, cluster)
        self._write_schema(schema, cluster)
        self._schema_ops.append(SchemaOp(SchemaOpKind.DROP_INDEX, id=index_id))

    # -- replay ----------------------------------------------------------------------------------

    def apply(self, txdata: TxData) -> None:
        """Re-apply a committed TxData: deletes, schema ops, inserts (with their rids), sequences.

        Deletes go first because every deleted row existed before the transaction, and the
        state "before minus deletes" is a subset of the final state, so no schema op or
        insert that succeeded originally can fail on it.

        A transaction that only replaced rows in place (what a follower applies for most
        reducer calls) takes :meth:`_apply_updates` on the overlay, as :meth:`update` does.
        """
        if not txdata.schema_ops and self._child is None and self._apply_updates(txdata):
            for sid, v in txdata.sequences.items():
                self._seq_local[sid] = v
            return
        for tid, ch in txdata.tables.items():
            if ch.deletes:
                tbl = self._table(tid)
                for row in ch.deletes:
                    found = self._find_row(tbl, row)
                    if found is None:
                        raise DatastoreError(f"replay: row to delete is not in table {tbl.name!r}")
                    self._del_row(tbl, *found)
        for op in txdata.schema_ops:
            if op.kind == SchemaOpKind.CREATE_TABLE:
                assert op.table is not None
                self.create_table(op.table)
            elif op.kind == SchemaOpKind.DROP_TABLE:
                self.drop_table(op.id)
            elif op.kind == SchemaOpKind.CREATE_INDEX:
                assert op.index is not None
                self.create_index(op.index)
            elif op.kind == SchemaOpKind.PUT_META:
                self.put_meta(op.key, op.value)
            else:
                self.drop_index(op.id)
        pack = _RID.pack
        for tid, ch in txdata.tables.items():
            if ch.inserts:
                tbl = self._table(tid)
                for rid, row in zip(ch.insert_rids, ch.inserts, strict=True):
                    self._insert(tbl, row, pack(rid))
        for sid, v in txdata.sequences.items():
            self._seq_local[sid] = v


# ---------------------------------------------------------------------------------------------
# The datastore
# ---------------------------------------------------------------------------------------------


def read_applied_offset(directory: str | os.PathLike[str]) -> int:
    """The applied offset recorded in the LMDB environment in ``directory`` (-1: none)."""
    env = lmdb.open(os.fspath(directory), readonly=True, lock=False, max_dbs=2, subdir=True)
    try:
        meta = env.open_db(_META_DB, create=False)
        with env.begin() as txn:
            v = txn.get(_K_APPLIED, None, meta)
        return -1 if v is None else _APPLIED.unpack(v)[0]
    finally:
        env.close()


class Datastore:
    """The LMDB-backed state of one database replica (see the module docstring).

    Threading: ``begin_mut``, ``checkpoint``, ``apply``, the schema helpers and ``close`` belong
    to the one writer thread (LMDB write transactions are bound to the thread that began
    them). ``begin_read`` may be called from any thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: DatastoreConfig | None = None,
        *,
        map_size: int | None = None,
        max_dbs: int | None = None,
    ) -> None:
        cfg = config or DatastoreConfig()
        if map_size is not None:
            cfg = replace(cfg, map_size=map_size)
        if max_dbs is not None:
            cfg = replace(cfg, max_dbs=max_dbs)
        self.config = cfg
        os.makedirs(path, exist_ok=True)
        # Synced commits: only checkpoints commit (see the module docstring).
        self._env = lmdb.open(
            os.fspath(path),
            map_size=cfg.map_size,
            max_dbs=cfg.max_dbs,
            max_readers=cfg.max_readers,
            sync=True,
            metasync=False,
            readahead=False,
        )
        self._lock = threading.Lock()
        self._outer: Any = None
        #: Rows committed into the outer transaction but not written into it yet (see MutTx).
        self._pending: dict[tuple[Any, bytes], bytes] = {}
        self._mut: MutTx | None = None
        self._seq: dict[int, int] = {}
        self._seq_dirty: set[int] = set()
        self._seq_deleted: set[int] = set()
        self._rid: dict[int, int] = {}
        self._rid_dirty: set[int] = set()
        self._applied = -1
        self._meta = self._env.open_db(_META_DB)
        self._cat = self._load()
        self._ckpt_cat = self._cat

    def _load(self) -> _Catalog:
        """Restore schema, sequences, row-id counters and the applied offset; drop orphan DBs."""
        env = self._env
        cat = _Catalog()
        typespaces: dict[str, Typespace] = {}
        with env.begin(write=True) as txn:
            cur = txn.cursor(self._meta)
            if cur.set_range(b"ds/"):
                for k, v in cur.iternext():
                    if not k.startswith(b"ds/"):
                        break
                    if k.startswith(_K_TABLE):
                        doc = loads(v)
                        schema = table_from_json(doc["table"], typespaces)
                        cluster = doc["cluster"]
                        db = env.open_db(_table_db_name(schema.table_id), txn=txn, create=True)
                        index_dbs = {
                            ix.index_id: env.open_db(_index_db_name(ix.index_id), txn=txn, create=True)
                            for ix in schema.indexes
                            if ix.index_id != cluster
                        }
                        cat.put_table(_Table(schema, db, index_dbs, cluster), cluster)
                    elif k.startswith(_K_SEQ):
                        self._seq[int(k[len(_K_SEQ) :])] = int.from_bytes(v, "little", signed=True)
                    elif k.startswith(_K_RID):
                        self._rid[int(k[len(_K_RID) :])] = _RID.unpack(v)[0]
                    elif k == _K_APPLIED:
                        self._applied = _APPLIED.unpack(v)[0]
            live = {_table_db_name(t) for t in cat.tables} | {
                _index_db_name(i.index_id) for i in cat.indexes.values() if not i.clustered
            }
            orphans = [
                k
                for k in txn.cursor().iternext(keys=True, values=False)
                if k[:1] in (b"t", b"i") and k[1:].isdigit() and k not in live
            ]
            # Dropped tables/indexes are only emptied while running (a reader may still hold a
            # handle); nothing can hold one now, so delete them for good.
            for name in orphans:
                txn.drop(env.open_db(name, txn=txn), delete=True)
        return cat

    # -- transactions ----------------------------------------------------------------------------

    def _outer_txn(self) -> Any:
        """The outer transaction with every committed row written into it."""
        if self._outer is None:
            self._outer = self._env.begin(write=True)
            if not _fast_lmdb_state[0]:
                _check_fast_lmdb(self._env, self._outer, self._meta)
        else:
            self._write_pending()
        return self._outer

    def _write_pending(self) -> None:
        """Write the committed overlay into the outer transaction (before anything reads it there)."""
        pending = self._pending
        if pending:
            outer = self._outer
            for (db, key), val in pending.items():
                _lmdb_put(outer, key, val, db)
            pending.clear()

    def begin_mut(self) -> MutTx:
        """Start the (only) mutable transaction: a child of the outer write transaction."""
        if self._mut is not None:
            raise TransactionStateError("a mutable transaction is already open")
        # Positional (db, parent, write): keyword parsing is measurable at this call rate.
        m = self._mut = MutTx(self, self._outer if self._outer is not None else self._outer_txn())
        return m

    def begin_read(self) -> ReadTx:
        """A read-only snapshot of the last checkpoint (any thread)."""
        with self._lock:
            txn = self._env.begin()
            cat = self._ckpt_cat
        return ReadTx(txn, cat, self._meta)

    def checkpoint(self, applied_offset: int) -> None:
        """Commit everything applied so far, with ``applied_offset``, and publish it to readers."""
        if self._mut is not None:
            raise TransactionStateError("checkpoint while a mutable transaction is open")
        txn = self._outer_txn()
        meta = self._meta
        put = txn.put
        for sid in self._seq_deleted:
            txn.delete(_K_SEQ + b"%d" % sid, b"", meta)
        for sid in self._seq_dirty:
            put(_K_SEQ + b"%d" % sid, self._seq[sid].to_bytes(16, "little", signed=True), True, True, False, meta)
        for tid in self._rid_dirty:
            put(_K_RID + b"%d" % tid, _RID.pack(self._rid[tid]), True, True, False, meta)
        put(_K_APPLIED, _APPLIED.pack(applied_offset), True, True, False, meta)
        with self._lock:
            txn.commit()
            self._outer = None
            self._ckpt_cat = self._cat
        self._seq_deleted.clear()
        self._seq_dirty.clear()
        self._rid_dirty.clear()
        self._applied = applied_offset

    def _live_txn(self) -> Any:
        # A parent LMDB txn must not be used while it has a child: go through the child.
        return self._mut._txn if self._mut is not None else self._outer_txn()

    def get_meta(self, key: bytes) -> bytes | None:
        """The engine's metadata value under ``key`` in the writer's current state, or None."""
        v = self._live_txn().get(_K_USER + key, None, self._meta)
        return None if v is None else bytes(v)

    def put_meta(self, key: bytes, value: bytes) -> None:
        """Store an engine metadata value (inside the open MutTx if any; visible after checkpoint)."""
        self._live_txn().put(_K_USER + key, value, True, True, False, self._meta)

    def applied_offset(self) -> int:
        """The offset given to the last checkpoint (-1 if none ever ran)."""
        return self._applied

    def sync(self) -> None:
        """Flush checkpointed data to disk (fsync)."""
        self._env.sync(True)

    def copy_to(self, directory: str | os.PathLike[str]) -> int:
        """Write a compacted copy of the last checkpoint into the empty ``directory`` (any
        thread; writers go on meanwhile) and return the applied offset the copy holds."""
        os.makedirs(directory, exist_ok=True)
        self._env.copy(os.fspath(directory), compact=True)
        return read_applied_offset(directory)

    def close(self) -> None:
        """Close the environment. Changes since the last checkpoint are discarded (the commit
        log replays them on reopen)."""
        if self._mut is not None:
            self._mut.rollback()
        if self._outer is not None:
            self._outer.abort()
            self._outer = None
        self._pending.clear()
        self._env.close()

    def __enter__(self) -> Datastore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- row ids -------------------------------------------------------------------------------

    def _new_rid(self, table_id: int) -> bytes:
        n = self._rid.get(table_id, 0)
        self._rid[table_id] = n + 1
        self._rid_dirty.add(table_id)
        return _RID.pack(n)

    def _bump_rid(self, table_id: int, rid8: bytes) -> None:
        n = _RID.unpack(rid8)[0] + 1
        if n > self._rid.get(table_id, 0):
            self._rid[table_id] = n
            self._rid_dirty.add(table_id)

    # -- schema (writer thread; each call is its own transaction) --------------------------------

    def tables(self) -> dict[int, TableSchema]:
        """Every table, as of the writer's current state (shared objects: don't mutate them)."""
        return {tid: t.schema for tid, t in self._cat.tables.items()}

    def table_by_name(self, name: str) -> TableSchema | None:
        """The table called ``name``, or None."""
        tid = self._cat.table_names.get(name)
        return None if tid is None else self._cat.tables[tid].schema

    def index_by_name(self, name: str) -> IndexSchema | None:
        """The index called ``name``, or None."""
        iid = self._cat.index_names.get(name)
        return None if iid is None else self._cat.indexes[iid].schema

    def _run(self, fn: Callable[[MutTx], None]) -> TxData:
        tx = self.begin_mut()
        try:
            fn(tx)
        except BaseException:
            tx.rollback()
            raise
        return tx.commit()

    def create_table(self, schema: TableSchema) -> TxData:
        """Create a table in its own transaction; returns its TxData."""
        return self._run(lambda tx: tx.create_table(schema))

    def drop_table(self, table_id: int) -> TxData:
        """Drop a table in its own transaction; returns its TxData."""
        return self._run(lambda tx: tx.drop_table(table_id))

    def create_index(self, index: IndexSchema) -> TxData:
        """Create (and build) an index in its own transaction; returns its TxData."""
        return self._run(lambda tx: tx.create_index(index))

    def drop_index(self, index_id: int) -> TxData:
        """Drop an index in its own transaction; returns its TxData."""
        return self._run(lambda tx: tx.drop_index(index_id))

    def apply(self, txdata: TxData) -> None:
        """Replay a committed TxData (recovery, followers), atomically."""
        tx = self.begin_mut()
        try:
            tx.apply(txdata)
        except BaseException:
            tx.rollback()
            raise
        tx._finish()

