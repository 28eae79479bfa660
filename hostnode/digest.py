"""Table digests for ``orrery cluster verify``: do all replicas hold the same rows at one offset?

A replica's digest at offset ``X`` (one past the last record included) is the sum, modulo
2^256, of ``BLAKE3(table id as u32 LE ‖ row BSATN)`` over every row of every table. The sum is
order-independent, so replicas whose LMDB files differ in layout (a snapshot is compacted, a
follower applies in batches) agree exactly when their rows do. It is computed from the replica's
LMDB checkpoint ``C ≤ X`` plus the rows the log records ``C+1 … X-1`` insert and delete; a
replica whose checkpoint is already past ``X`` cannot answer for ``X`` and names the offset to
ask again at.
"""

from __future__ import annotations

from dataclasses import dataclass

import blake3

from hostnode.commitlog import CommitLog
from hostnode.datastore import Datastore
from hostnode.txdata import SchemaOpKind, TxData
from hostnode.txrecord import TxRecord

__all__ = ["Digest", "table_digest"]

_MOD = 1 << 256


@dataclass(frozen=True)
class Digest:
    """A replica's answer: the digest and row count at ``offset``, or ``retry_at``."""

    digest: bytes = b""
    rows: int = 0
    offset: int = 0
    #: Nonzero: the checkpoint is past the offset asked for; ask again at this one.
    retry_at: int = 0


def _h(table_id: int, row: bytes) -> int:
    return int.from_bytes(blake3.blake3(table_id.to_bytes(4, "little") + bytes(row)).digest(), "little")


def table_digest(datastore: Datastore, clog: CommitLog, offset: int) -> Digest:
    """The digest of the tables as of ``offset`` (blocking; any thread). The log must already
    hold ``offset - 1`` durably (callers wait for that)."""
    sums: dict[int, int] = {}
    counts: dict[int, int] = {}
    with datastore.begin_read() as rt:
        applied = rt.applied_offset()
        if applied + 1 > offset:
            return Digest(retry_at=applied + 1)
        for tid in rt.tables():
            total = 0
            rows = rt.scan(tid)
            for row in rows:
                total += _h(tid, row)
            sums[tid] = total % _MOD
            counts[tid] = len(rows)
    if applied + 1 < offset:
        for rec in clog.read_from(applied + 1, offset):
            txdata = TxData.decode(TxRecord.decode(rec.payload).txdata)
            for op in txdata.schema_ops:
                if op.kind == SchemaOpKind.DROP_TABLE:
                    sums.pop(op.id, None)
                    counts.pop(op.id, None)
            for tid, ch in txdata.tables.items():
                s = sums.get(tid, 0)
                for row in ch.inserts:
                    s += _h(tid, row)
                for row in ch.deletes:
                    s -= _h(tid, row)
                sums[tid] = s % _MOD
                counts[tid] = counts.get(tid, 0) + len(ch.inserts) - len(ch.deletes)
    total = sum(sums.values()) % _MOD
    return Digest(total.to_bytes(32, "little"), sum(counts.values()), offset)
