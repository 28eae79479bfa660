"""The commit-log payload of one database transaction (a pure codec, no I/O).

Every committed transaction becomes one commit-log record whose payload is a ``TxRecord``:
what produced it (program install, reducer call, lifecycle event, schedule bookkeeping) and the
``TxData`` it changed. Replaying the payloads in order rebuilds the datastore exactly.

Layout (little-endian): ``u8 version(=1) | u8 kind | u32 len + reducer name | 32 B caller
identity | 16 B connection id | i64 timestamp µs | u32 len + args | u32 len + program (INSTALL
only, else 0) | rest = TxData``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from sats.errors import DecodeError

FORMAT_VERSION: Final = 1
_HEAD: Final = struct.Struct("<BBI")
_FIXED: Final = struct.Struct("<32s16sqI")
_U32: Final = struct.Struct("<I")
_NO_PROGRAM: Final = _U32.pack(0)


class RecordKind(enum.IntEnum):
    """Why a transaction happened."""

    INSTALL = 1  # program installed (first publish, or update); txdata = schema + init changes
    REDUCER = 2  # a reducer call (client, scheduled, or lifecycle)
    SYSTEM = 3  # host bookkeeping with no reducer (e.g. deleting a fired one-shot schedule row)


@dataclass(frozen=True, slots=True)
class TxRecord:
    """One committed transaction as stored in the commit log."""

    kind: RecordKind
    reducer: str
    caller_identity: bytes  # 32 bytes LE
    connection_id: bytes  # 16 bytes LE
    timestamp_micros: int
    args: bytes
    program: bytes
    txdata: bytes  # TxData.encode()

    def encode(self) -> bytes:
        """Serialise to the commit-log payload."""
        return encode_record(
            self.kind, self.reducer, self.caller_identity, self.connection_id, self.timestamp_micros,
            self.args, self.program, self.txdata,
        )

    @staticmethod
    def decode(buf: bytes) -> TxRecord:
        """Parse a commit-log payload; raises DecodeError on malformed input."""
        try:
            version, kind, nlen = _HEAD.unpack_from(buf, 0)
            if version != FORMAT_VERSION:
                raise DecodeError(f"unknown transaction record version {version}")
            pos = _HEAD.size
            name = bytes(buf[pos : pos + nlen]).decode()
            pos += nlen
            ident, conn, ts, alen = _FIXED.unpack_from(buf, pos)
            pos += _FIXED.size
            args = bytes(buf[pos : pos + alen])
            pos += alen
            (plen,) = _U32.unpack_from(buf, pos)
            pos += 4
            program = bytes(buf[pos : pos + plen])
            pos += plen
            if pos > len(buf):
                raise DecodeError("transaction record is truncated")
            return TxRecord(RecordKind(kind), name, ident, conn, ts, args, program, bytes(buf[pos:]))
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            raise DecodeError(f"malformed transaction record: {e}") from None


def record_txdata(buf: bytes) -> tuple[int, bytes]:
    """A payload's kind and TxData bytes without the rest of a :class:`TxRecord` (a follower
    applies every record it is sent; only an INSTALL needs the whole record). Raises
    DecodeError on malformed input, as :meth:`TxRecord.decode` does."""
    try:
        version, kind, nlen = _HEAD.unpack_from(buf, 0)
        if version != FORMAT_VERSION:
            raise DecodeError(f"unknown transaction record version {version}")
        pos = _HEAD.size + nlen
        alen = _U32.unpack_from(buf, pos + _FIXED.size - 4)[0]
        pos += _FIXED.size + alen
        pos += 4 + _U32.unpack_from(buf, pos)[0]
    except struct.error as e:
        raise DecodeError(f"malformed transaction record: {e}") from None
    if pos > len(buf):
        raise DecodeError("transaction record is truncated")
    return kind, bytes(buf[pos:])


def encode_record(
    kind: RecordKind,
    reducer: str,
    caller_identity: bytes,
    connection_id: bytes,
    timestamp_micros: int,
    args: bytes,
    program: bytes,
    txdata: bytes,
) -> bytes:
    """Encode a record without building a TxRecord."""
    parts = record_parts(record_head(kind, reducer), caller_identity, connection_id, timestamp_micros, args, program)
    parts.append(txdata)
    return b"".join(parts)


def record_head(kind: RecordKind, reducer: str) -> bytes:
    """A record's first bytes (version, kind, reducer name): the same for every call of a
    reducer, so the engine keeps them per reducer."""
    name = reducer.encode()
    return _HEAD.pack(FORMAT_VERSION, kind, len(name)) + name


def record_parts(
    head: bytes, caller_identity: bytes, connection_id: bytes, timestamp_micros: int, args: bytes, program: bytes
) -> list[bytes]:
    """A record up to its TxData, as pieces for one join: ``head`` from :func:`record_head`, then
    the TxData's bytes appended (the engine's per-transaction hot path: ``TxData.encode_into``)."""
    fixed = _FIXED.pack(caller_identity, connection_id, timestamp_micros, len(args))
    if program:
        return [head, fixed, args, _U32.pack(len(program)), program]
    return [head, fixed, args, _NO_PROGRAM]
