"""What one committed transaction changed, and its compact binary form (a pure codec).

A :class:`TxData` is produced by ``MutTx.commit()``, written by the engine into the commit log
(``TxData.encode()``) and replayed on recovery or on a follower by ``Datastore.apply()``.
Rows are *net* changes: a row inserted and deleted in the same transaction appears in
neither list, an update is the delete of the old row plus the insert of the new one.

Replay order (the only order in which every transaction can be re-applied, see
``Datastore.apply``): deletes, then schema operations in their original order, then inserts,
then sequence positions.

Layout, little-endian::

    u8 version (=1)
    u32 table count, then per table:
        u32 table_id | u32 insert count | u32 delete count
        inserts: u64 row id | u32 len | row bytes
        deletes: u32 len | row bytes
    u32 sequence count, then per sequence: u32 seq_id | i128 next value
    u32 schema-op count, then per op: u8 kind | u32 len | payload
        (CREATE_TABLE / CREATE_INDEX: JSON of the schema; DROP_*: u32 id;
        PUT_META: u32 key length | key | value — datastore metadata the log must carry, such
        as SQL system variables)

The row ids are the datastore's internal ids of inserted rows; carrying them makes a replayed
datastore identical to the original down to the order of rows with equal index keys.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from hostnode.schema import (
    IndexSchema,
    SchemaError,
    TableSchema,
    dumps,
    index_from_json,
    index_to_json,
    loads,
    table_from_json,
    table_to_json,
)
from sats.errors import DecodeError

FORMAT_VERSION: Final = 1

_HEAD: Final = struct.Struct("<BI")
_TABLE: Final = struct.Struct("<III")
_INS: Final = struct.Struct("<QI")
_U32: Final = struct.Struct("<I")
_SEQ: Final = struct.Struct("<I16s")
_OP: Final = struct.Struct("<BI")
#: The tail of a transaction that moved no sequence and changed no schema: two zero counts.
_NO_SEQUENCES_NO_OPS: Final = bytes(8)
# The encoder's per-call work is mostly struct calls (~500-1,000 instructions each); the
# headers of up to 15 tables and the length prefixes of rows under 1 KiB are looked up instead.
_HEADS: Final = tuple(_HEAD.pack(FORMAT_VERSION, n) for n in range(16))
_SHORT_LENGTHS: Final = tuple(_U32.pack(n) for n in range(1024))
_table_pack: Final = _TABLE.pack
_ins_pack: Final = _INS.pack
_u32_pack: Final = _U32.pack


class SchemaOpKind(enum.IntEnum):
    """The schema changes a transaction can make."""

    CREATE_TABLE = 1
    DROP_TABLE = 2
    CREATE_INDEX = 3
    DROP_INDEX = 4
    #: Not a schema change: a datastore metadata value replicas and recovery must see.
    PUT_META = 5


@dataclass(frozen=True, slots=True)
class SchemaOp:
    """One schema change: ``table`` for CREATE_TABLE, ``index`` for CREATE_INDEX, ``id`` for
    drops, ``key``/``value`` for PUT_META."""

    kind: SchemaOpKind
    table: TableSchema | None = None
    index: IndexSchema | None = None
    id: int = 0
    key: bytes = b""
    value: bytes = b""

    def payload(self) -> bytes:
        """The encoded payload of this op."""
        if self.kind == SchemaOpKind.CREATE_TABLE:
            assert self.table is not None
            return dumps(table_to_json(self.table))
        if self.kind == SchemaOpKind.CREATE_INDEX:
            assert self.index is not None
            return dumps(index_to_json(self.index))
        if self.kind == SchemaOpKind.PUT_META:
            return _U32.pack(len(self.key)) + self.key + self.value
        return _U32.pack(self.id)

    @classmethod
    def from_payload(cls, kind: int, payload: bytes) -> SchemaOp:
        """Inverse of :meth:`payload`; DecodeError on a bad kind or payload."""
        try:
            k = SchemaOpKind(kind)
            if k == SchemaOpKind.CREATE_TABLE:
                return cls(k, table=table_from_json(loads(payload)))
            if k == SchemaOpKind.CREATE_INDEX:
                return cls(k, index=index_from_json(loads(payload)))
            if k == SchemaOpKind.PUT_META:
                if len(payload) < 4 or 4 + _U32.unpack_from(payload)[0] > len(payload):
                    raise DecodeError("schema op PUT_META: key runs past the payload")
                end = 4 + _U32.unpack_from(payload)[0]
                return cls(k, key=bytes(payload[4:end]), value=bytes(payload[end:]))
            if len(payload) != 4:
                raise DecodeError(f"schema op {k.name} payload must be 4 bytes, got {len(payload)}")
            return cls(k, id=_U32.unpack(payload)[0])
        except (ValueError, SchemaError) as e:
            raise DecodeError(f"bad schema op {kind}: {e}") from None


@dataclass(slots=True, init=False)
class TableChanges:
    """Net row changes of one table. ``insert_rids[i]`` is the row id of ``inserts[i]``.

    (``__init__`` written out here and in :class:`TxData`: ``dataclass``'s own is interpreted
    Python even when this module is compiled, and both are made for every commit.)"""

    inserts: list[bytes]
    deletes: list[bytes]
    insert_rids: list[int]

    def __init__(
        self, inserts: list[bytes] | None = None, deletes: list[bytes] | None = None,
        insert_rids: list[int] | None = None,
    ) -> None:  # fmt: skip
        self.inserts = [] if inserts is None else inserts
        self.deletes = [] if deletes is None else deletes
        self.insert_rids = [] if insert_rids is None else insert_rids


@dataclass(slots=True, init=False)
class TxData:
    """Everything one committed transaction changed."""

    tables: dict[int, TableChanges]
    #: seq_id → the sequence's next value after the transaction (only sequences that moved).
    sequences: dict[int, int]
    schema_ops: list[SchemaOp]

    def __init__(
        self, tables: dict[int, TableChanges] | None = None, sequences: dict[int, int] | None = None,
        schema_ops: list[SchemaOp] | None = None,
    ) -> None:  # fmt: skip
        self.tables = {} if tables is None else tables
        self.sequences = {} if sequences is None else sequences
        self.schema_ops = [] if schema_ops is None else schema_ops

    def is_empty(self) -> bool:
        """True when the transaction changed nothing."""
        return not self.tables and not self.sequences and not self.schema_ops

    def encode(self) -> bytes:
        """The binary form (module docstring)."""
        parts: list[bytes] = []
        self.encode_into(parts)
        return b"".join(parts)

    def encode_into(self, parts: list[bytes]) -> None:
        """Append the binary form to ``parts`` as pieces to join (the engine joins them with the
        commit-log record's head in one go)."""
        tables = self.tables
        n = len(tables)
        parts.append(_HEADS[n] if n < 16 else _HEAD.pack(FORMAT_VERSION, n))
        for tid, ch in tables.items():
            inserts = ch.inserts
            deletes = ch.deletes
            parts.append(_table_pack(tid, len(inserts), len(deletes)))
            # `parts += a, b` is one list extend per row; two appends cost more bytecodes.
            for rid, row in zip(ch.insert_rids, inserts, strict=True):
                parts += _ins_pack(rid, len(row)), row
            for row in deletes:
                n = len(row)
                parts += _SHORT_LENGTHS[n] if n < 1024 else _u32_pack(n), row
        if not self.sequences and not self.schema_ops:
            # What a reducer's transaction almost always is: two zero counts, one append.
            parts.append(_NO_SEQUENCES_NO_OPS)
            return
        parts.append(_u32_pack(len(self.sequences)))
        for sid, value in self.sequences.items():
            parts.append(_SEQ.pack(sid, value.to_bytes(16, "little", signed=True)))
        parts.append(_u32_pack(len(self.schema_ops)))
        for op in self.schema_ops:
            payload = op.payload()
            parts += _OP.pack(op.kind, len(payload)), payload

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> TxData:
        """Parse :meth:`encode` output; any malformation raises sats.errors.DecodeError."""
        buf = bytes(data)
        n = len(buf)
        try:
            version, ntables = _HEAD.unpack_from(buf, 0)
            if version != FORMAT_VERSION:
                raise DecodeError(f"unknown TxData version {version}")
            pos = _HEAD.size
            tables: dict[int, TableChanges] = {}
            ins_unpack = _INS.unpack_from
            u32 = _U32.unpack_from
            for _ in range(ntables):
                tid, nins, ndel = _TABLE.unpack_from(buf, pos)
                pos += 12
                # Each row costs at least its length prefix: reject absurd counts before looping.
                if (nins + ndel) * 4 > n - pos:
                    raise DecodeError(f"TxData row counts for table {tid} exceed the input")
                inserts: list[bytes] = []
                rids: list[int] = []
                for _ in range(nins):
                    rid, ln = ins_unpack(buf, pos)
                    pos += 12
                    end = pos + ln
                    if end > n:
                        raise DecodeError("TxData row runs past the end of the input")
                    rids.append(rid)
                    inserts.append(buf[pos:end])
                    pos = end
                deletes: list[bytes] = []
                for _ in range(ndel):
                    (ln,) = u32(buf, pos)
                    pos += 4
                    end = pos + ln
                    if end > n:
                        raise DecodeError("TxData row runs past the end of the input")
                    deletes.append(buf[pos:end])
                    pos = end
                if tid in tables:
                    raise DecodeError(f"TxData lists table {tid} twice")
                tables[tid] = TableChanges(inserts, deletes, rids)
            (nseq,) = u32(buf, pos)
            pos += 4
            seqs: dict[int, int] = {}
            for _ in range(nseq):
                sid, raw = _SEQ.unpack_from(buf, pos)
                pos += _SEQ.size
                seqs[sid] = int.from_bytes(raw, "little", signed=True)
            (nops,) = u32(buf, pos)
            pos += 4
            ops: list[SchemaOp] = []
            for _ in range(nops):
                kind, ln = _OP.unpack_from(buf, pos)
                pos += _OP.size
                end = pos + ln
                if end > n:
                    raise DecodeError("TxData schema op runs past the end of the input")
                ops.append(SchemaOp.from_payload(kind, buf[pos:end]))
                pos = end
        except struct.error:
            raise DecodeError("TxData is truncated") from None
        if pos != n:
            raise DecodeError(f"{n - pos} trailing byte(s) after TxData")
        return cls(tables, seqs, ops)
