"""The WebSocket v1 protocol's messages, without I/O (spec ``client-api.md`` §10–§12).

Shared by the host node (encodes server messages), the gateway (relays frames, decodes
client messages) and the Python client SDK (the other way round). Everything here is a
pure function over bytes, text and frozen dataclasses.

Two wire formats carry the same messages:

* ``v1.bsatn.spacetimedb`` — binary frames. Rows travel as :class:`BsatnRowList` (raw BSATN
  of each row, concatenated, with a :data:`RowSizeHint`); reducer/procedure arguments and
  procedure return values as ``bytes`` of their BSATN.
* ``v1.json.spacetimedb`` — text frames of typed SATS-JSON (flavour A of
  ``sats-bsatn.md`` §5.1). Rows travel as a tuple of ``str``, each the JSON text of one row;
  arguments and return values as ``str`` of JSON text.

So a message object is built for one format: a :class:`QueryUpdate` holds either two
:class:`BsatnRowList` or two tuples of JSON strings, and ``args`` is ``bytes`` or ``str``.
Encoding a message in the other format's shape is an :class:`~sats.errors.EncodeError`; the
row helpers at the end of this module convert between the two given the row type.

The schemas are declared once as SATS types (:func:`_schemas`), so decoding is one compiled
BSATN codec or the generic SATS-JSON reader plus a thin mapping to the dataclasses, and
encoding the reverse. The one exception is BSATN server messages, which the host node
encodes on every commit: they are written by hand for speed, and the tests decode that
output with the schema's codec. Every malformed input raises :class:`WsProtocolError`,
whose text is what a 1011 close reports (:attr:`WsProtocolError.close_reason` fits it to a
close frame).

Binary server frames additionally carry the compression envelope of §10.3
(:func:`frame_server_message` / :func:`unframe_server_message`).
"""

from __future__ import annotations

import enum
import gzip
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import brotli

from sats.bsatn import Codec, codec_for
from sats.errors import DecodeError, EncodeError
from sats.identity import ConnectionId, Identity
from sats.json import _writer, dumps, from_json, loads, to_json_row, to_json_untyped
from sats.types import (
    BYTES,
    CONNECTION_ID,
    EMPTY_TYPESPACE,
    IDENTITY,
    STRING,
    TIME_DURATION,
    TIMESTAMP,
    U8,
    U16,
    U32,
    U64,
    U128,
    UNIT,
    AlgebraicType,
    ArrayType,
    SumType,
    SumValue,
    Typespace,
    option,
    product,
    sum_type,
)

__all__ = [
    # errors and envelope
    "WsProtocolError",
    "MAX_CLOSE_REASON",
    "Compression",
    "COMPRESSION_THRESHOLD",
    "MAX_DECOMPRESSED_SIZE",
    "frame_server_message",
    "unframe_server_message",
    # codecs
    "encode_server_message_bsatn",
    "decode_server_message_bsatn",
    "encode_client_message_bsatn",
    "decode_client_message_bsatn",
    "encode_server_message_json",
    "decode_server_message_json",
    "encode_client_message_json",
    "decode_client_message_json",
    "encode_server_frame",
    "decode_server_frame",
    # nested types
    "QueryId",
    "Timestamp",
    "TimeDuration",
    "EnergyQuanta",
    "FixedSize",
    "RowOffsets",
    "RowSizeHint",
    "BsatnRowList",
    "RowList",
    "QueryUpdate",
    "TableUpdate",
    "DatabaseUpdate",
    "SubscribeRows",
    "Committed",
    "Failed",
    "OutOfEnergy",
    "UpdateStatus",
    "ReducerCallInfo",
    "OneOffTable",
    "Returned",
    "InternalError",
    "ProcedureStatus",
    "CallReducerFlags",
    "CallProcedureFlags",
    # client messages
    "CallReducer",
    "Subscribe",
    "OneOffQuery",
    "SubscribeSingle",
    "SubscribeMulti",
    "Unsubscribe",
    "UnsubscribeMulti",
    "CallProcedure",
    "ClientMessage",
    # server messages
    "InitialSubscription",
    "TransactionUpdate",
    "TransactionUpdateLight",
    "IdentityToken",
    "OneOffQueryResponse",
    "SubscribeApplied",
    "UnsubscribeApplied",
    "SubscriptionError",
    "SubscribeMultiApplied",
    "UnsubscribeMultiApplied",
    "ProcedureResult",
    "ServerMessage",
    # row helpers
    "row_to_json",
    "rows_to_json",
    "value_to_json",
    "json_to_bsatn",
    "json_rows_to_bsatn",
]


#: A WebSocket close frame's reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5).
MAX_CLOSE_REASON = 123


class WsProtocolError(DecodeError):
    """A malformed WebSocket message or frame; the text is what a 1011 close reports."""

    @property
    def close_reason(self) -> str:
        """The text cut to fit a close frame (:data:`MAX_CLOSE_REASON` bytes of UTF-8)."""
        return str(self).encode()[:MAX_CLOSE_REASON].decode(errors="ignore")


# ---------------------------------------------------------------------------------------------
# Small nested types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryId:
    """A client-chosen subscription id (``{id: u32}``)."""

    id: int


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """Microseconds since the Unix epoch (i64)."""

    micros_since_unix_epoch: int

    UNIX_EPOCH: ClassVar[Timestamp]


Timestamp.UNIX_EPOCH = Timestamp(0)


@dataclass(frozen=True, slots=True, order=True)
class TimeDuration:
    """A signed duration in microseconds (i64)."""

    micros: int

    ZERO: ClassVar[TimeDuration]


TimeDuration.ZERO = TimeDuration(0)


@dataclass(frozen=True, slots=True)
class EnergyQuanta:
    """Energy used by a reducer (u128)."""

    quanta: int

    ZERO: ClassVar[EnergyQuanta]


EnergyQuanta.ZERO = EnergyQuanta(0)


class CallReducerFlags(enum.IntEnum):
    """``CallReducer.flags``: whether the caller hears about its own successful call."""

    FULL_UPDATE = 0
    NO_SUCCESS_NOTIFY = 1


class CallProcedureFlags(enum.IntEnum):
    """``CallProcedure.flags``: 1.12 defines only the default."""

    DEFAULT = 0


# ---------------------------------------------------------------------------------------------
# Row lists
# ---------------------------------------------------------------------------------------------

_MAX_FIXED_SIZE = 0xFFFF


@dataclass(frozen=True, slots=True)
class FixedSize:
    """Every row in the list is ``size`` bytes (1 … 65535)."""

    size: int


@dataclass(frozen=True, slots=True)
class RowOffsets:
    """``offsets[i]`` is where row ``i`` starts; it ends where row ``i + 1`` starts, or at the end."""

    offsets: tuple[int, ...]


RowSizeHint: TypeAlias = FixedSize | RowOffsets


def _row_list_problem(hint: Any, data: bytes) -> str | None:
    """Why ``(hint, data)`` is not a consistent BsatnRowList, or None when it is."""
    n = len(data)
    if isinstance(hint, FixedSize):
        size = hint.size
        if type(size) is not int or not 1 <= size <= _MAX_FIXED_SIZE:
            return f"row size hint FixedSize({size!r}) is not in 1..{_MAX_FIXED_SIZE}"
        if n % size:
            return f"row data of {n} bytes is not a whole number of {size}-byte rows"
        return None
    if isinstance(hint, RowOffsets):
        offsets = hint.offsets
        if not offsets:
            return f"row data of {n} bytes with no row offsets" if n else None
        if offsets[0] != 0:
            return f"first row offset is {offsets[0]}, not 0"
        prev = 0
        for off in offsets:
            if type(off) is not int or off < prev:
                return f"row offsets are not non-decreasing ({prev} then {off!r})"
            prev = off
        if prev > n:
            return f"row offset {prev} is past the end of {n} bytes of row data"
        return None
    return f"{hint!r} is not a row size hint"


@dataclass(frozen=True, slots=True)
class BsatnRowList:
    """Rows as BSATN: the concatenated rows and a hint saying where each one starts.

    Build one with :meth:`from_rows`; iterating yields each row's bytes, following the hint.
    Constructing an inconsistent list (data not a whole number of fixed-size rows, offsets
    out of order or past the data) is an EncodeError.
    """

    size_hint: RowSizeHint
    rows_data: bytes

    EMPTY: ClassVar[BsatnRowList]

    def __post_init__(self) -> None:
        problem = _row_list_problem(self.size_hint, self.rows_data)
        if problem is not None:
            raise EncodeError(problem)

    @classmethod
    def from_rows(cls, rows: Iterable[bytes]) -> BsatnRowList:
        """Pack rows exactly: ``FixedSize`` when all share one size in 1..65535, else ``RowOffsets``."""
        rows = list(rows)
        if not rows:
            return cls.EMPTY
        size = len(rows[0])
        if 0 < size <= _MAX_FIXED_SIZE and all(len(r) == size for r in rows):
            return cls(FixedSize(size), b"".join(rows))
        offsets = []
        pos = 0
        for r in rows:
            offsets.append(pos)
            pos += len(r)
        return cls(RowOffsets(tuple(offsets)), b"".join(rows))

    def __len__(self) -> int:
        hint = self.size_hint
        if isinstance(hint, FixedSize):
            return len(self.rows_data) // hint.size
        return len(hint.offsets)

    def __iter__(self) -> Iterator[bytes]:
        data = self.rows_data
        hint = self.size_hint
        if isinstance(hint, FixedSize):
            size = hint.size
            for start in range(0, len(data), size):
                yield data[start : start + size]
            return
        offsets = hint.offsets
        last = len(offsets) - 1
        for i, start in enumerate(offsets):
            yield data[start : offsets[i + 1] if i < last else len(data)]


BsatnRowList.EMPTY = BsatnRowList(RowOffsets(()), b"")

#: A BSATN message's rows are a :class:`BsatnRowList`; a JSON message's, a tuple of JSON texts.
RowList: TypeAlias = BsatnRowList | tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Updates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryUpdate:
    """The rows one subscribed query lost and gained."""

    deletes: RowList
    inserts: RowList


@dataclass(frozen=True, slots=True)
class TableUpdate:
    """All of one table's changes, one :class:`QueryUpdate` per matching query.

    The wire's ``num_rows`` is derived (:attr:`num_rows`); a decoded value is not kept.
    """

    table_id: int
    table_name: str
    updates: tuple[QueryUpdate, ...]

    @property
    def num_rows(self) -> int:
        """Rows in all updates, deletes and inserts alike."""
        return sum(len(u.deletes) + len(u.inserts) for u in self.updates)


@dataclass(frozen=True, slots=True)
class DatabaseUpdate:
    """The changes of one transaction (or one subscription's rows), per table."""

    tables: tuple[TableUpdate, ...]

    EMPTY: ClassVar[DatabaseUpdate]


DatabaseUpdate.EMPTY = DatabaseUpdate(())


@dataclass(frozen=True, slots=True)
class SubscribeRows:
    """The rows of one single-query (un)subscription."""

    table_id: int
    table_name: str
    table_rows: TableUpdate


@dataclass(frozen=True, slots=True)
class Committed:
    """``UpdateStatus::Committed``: the transaction committed with these changes."""

    database_update: DatabaseUpdate


@dataclass(frozen=True, slots=True)
class Failed:
    """``UpdateStatus::Failed``: the reducer failed (rolled back) with this message."""

    message: str


@dataclass(frozen=True, slots=True)
class OutOfEnergy:
    """``UpdateStatus::OutOfEnergy`` and ``ProcedureStatus::OutOfEnergy`` (no payload)."""


UpdateStatus: TypeAlias = Committed | Failed | OutOfEnergy


@dataclass(frozen=True, slots=True)
class ReducerCallInfo:
    """Which reducer call a TransactionUpdate reports; ``args`` is BSATN bytes or JSON text."""

    reducer_name: str
    reducer_id: int
    args: bytes | str
    request_id: int


@dataclass(frozen=True, slots=True)
class OneOffTable:
    """One table's result rows of a one-off query."""

    table_name: str
    rows: RowList


@dataclass(frozen=True, slots=True)
class Returned:
    """``ProcedureStatus::Returned``: the return value, BSATN bytes or JSON text."""

    value: bytes | str


@dataclass(frozen=True, slots=True)
class InternalError:
    """``ProcedureStatus::InternalError``."""

    message: str


ProcedureStatus: TypeAlias = Returned | OutOfEnergy | InternalError


# ---------------------------------------------------------------------------------------------
# Client messages (§10.1)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallReducer:
    """Call ``reducer``; ``args`` is the BSATN of the args product (bytes) or its JSON text (str)."""

    reducer: str
    args: bytes | str
    request_id: int
    flags: CallReducerFlags = CallReducerFlags.FULL_UPDATE


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Legacy subscribe: replace the connection's query set; answered by InitialSubscription."""

    query_strings: tuple[str, ...]
    request_id: int


@dataclass(frozen=True, slots=True)
class OneOffQuery:
    """Run one query once; ``message_id`` is echoed in the OneOffQueryResponse."""

    message_id: bytes
    query_string: str


@dataclass(frozen=True, slots=True)
class SubscribeSingle:
    """Subscribe to one query under ``query_id``."""

    query: str
    request_id: int
    query_id: QueryId


@dataclass(frozen=True, slots=True)
class SubscribeMulti:
    """Subscribe to several queries under one ``query_id``."""

    query_strings: tuple[str, ...]
    request_id: int
    query_id: QueryId


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Drop a SubscribeSingle subscription."""

    request_id: int
    query_id: QueryId


@dataclass(frozen=True, slots=True)
class UnsubscribeMulti:
    """Drop a SubscribeMulti subscription."""

    request_id: int
    query_id: QueryId


@dataclass(frozen=True, slots=True)
class CallProcedure:
    """Call ``procedure``; ``args`` as for CallReducer."""

    procedure: str
    args: bytes | str
    request_id: int
    flags: CallProcedureFlags = CallProcedureFlags.DEFAULT


ClientMessage: TypeAlias = (
    CallReducer
    | Subscribe
    | OneOffQuery
    | SubscribeSingle
    | SubscribeMulti
    | Unsubscribe
    | UnsubscribeMulti
    | CallProcedure
)


# ---------------------------------------------------------------------------------------------
# Server messages (§10.2)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitialSubscription:
    """The rows of a legacy Subscribe."""

    database_update: DatabaseUpdate
    request_id: int
    total_host_execution_duration: TimeDuration


@dataclass(frozen=True, slots=True)
class TransactionUpdate:
    """A transaction's outcome and, when committed, the changes the client can see."""

    status: UpdateStatus
    timestamp: Timestamp
    caller_identity: Identity
    caller_connection_id: ConnectionId
    reducer_call: ReducerCallInfo
    energy_quanta_used: EnergyQuanta
    total_host_execution_duration: TimeDuration


@dataclass(frozen=True, slots=True)
class TransactionUpdateLight:
    """The changes of a committed transaction, for light-mode clients."""

    request_id: int
    update: DatabaseUpdate


@dataclass(frozen=True, slots=True)
class IdentityToken:
    """The first message on every connection."""

    identity: Identity
    token: str
    connection_id: ConnectionId


@dataclass(frozen=True, slots=True)
class OneOffQueryResponse:
    """The answer to a OneOffQuery: ``error`` set and no tables, or the result tables."""

    message_id: bytes
    error: str | None
    tables: tuple[OneOffTable, ...]
    total_host_execution_duration: TimeDuration


@dataclass(frozen=True, slots=True)
class SubscribeApplied:
    """A SubscribeSingle took effect; ``rows`` are its initial rows."""

    request_id: int
    total_host_execution_duration_micros: int
    query_id: QueryId
    rows: SubscribeRows


@dataclass(frozen=True, slots=True)
class UnsubscribeApplied:
    """An Unsubscribe took effect; ``rows`` are the rows the client should drop."""

    request_id: int
    total_host_execution_duration_micros: int
    query_id: QueryId
    rows: SubscribeRows


@dataclass(frozen=True, slots=True)
class SubscriptionError:
    """A subscription failed; with all ids None, every subscription of the client was dropped."""

    total_host_execution_duration_micros: int
    request_id: int | None
    query_id: int | None
    table_id: int | None
    error: str


@dataclass(frozen=True, slots=True)
class SubscribeMultiApplied:
    """A SubscribeMulti took effect; ``update`` holds its initial rows as inserts."""

    request_id: int
    total_host_execution_duration_micros: int
    query_id: QueryId
    update: DatabaseUpdate


@dataclass(frozen=True, slots=True)
class UnsubscribeMultiApplied:
    """An UnsubscribeMulti took effect; ``update`` holds the dropped rows as deletes."""

    request_id: int
    total_host_execution_duration_micros: int
    query_id: QueryId
    update: DatabaseUpdate


@dataclass(frozen=True, slots=True)
class ProcedureResult:
    """The outcome of a CallProcedure, to its caller only."""

    status: ProcedureStatus
    timestamp: Timestamp
    total_host_execution_duration: TimeDuration
    request_id: int


ServerMessage: TypeAlias = (
    InitialSubscription
    | TransactionUpdate
    | TransactionUpdateLight
    | IdentityToken
    | OneOffQueryResponse
    | SubscribeApplied
    | UnsubscribeApplied
    | SubscriptionError
    | SubscribeMultiApplied
    | UnsubscribeMultiApplied
    | ProcedureResult
)


# ---------------------------------------------------------------------------------------------
# Schemas as SATS types
# ---------------------------------------------------------------------------------------------

_QUERY_ID = product(("id", U32))
_ENERGY_QUANTA = product(("quanta", U128))
_ROW_SIZE_HINT = sum_type(("FixedSize", U16), ("RowOffsets", ArrayType(U64)))
_BSATN_ROW_LIST = product(("size_hint", _ROW_SIZE_HINT), ("rows_data", BYTES))
_BSATN_QUERY_UPDATE = product(("deletes", _BSATN_ROW_LIST), ("inserts", _BSATN_ROW_LIST))
_COMPRESSABLE_QUERY_UPDATE = sum_type(
    ("Uncompressed", _BSATN_QUERY_UPDATE), ("Brotli", BYTES), ("Gzip", BYTES)
)
_JSON_ROW_LIST = ArrayType(STRING)
_JSON_QUERY_UPDATE = product(("deletes", _JSON_ROW_LIST), ("inserts", _JSON_ROW_LIST))


def _schemas(
    query_update: AlgebraicType, row_list: AlgebraicType, single: AlgebraicType
) -> tuple[SumType, SumType]:
    """``(ClientMessage, ServerMessage)`` of one format: its query update, row list and "single" types."""
    table_update = product(
        ("table_id", U32), ("table_name", STRING), ("num_rows", U64), ("updates", ArrayType(query_update))
    )
    database_update = product(("tables", ArrayType(table_update)))
    subscribe_rows = product(("table_id", U32), ("table_name", STRING), ("table_rows", table_update))
    update_status = sum_type(("Committed", database_update), ("Failed", STRING), ("OutOfEnergy", UNIT))
    reducer_call_info = product(
        ("reducer_name", STRING), ("reducer_id", U32), ("args", single), ("request_id", U32)
    )
    one_off_table = product(("table_name", STRING), ("rows", row_list))
    procedure_status = sum_type(("Returned", single), ("OutOfEnergy", UNIT), ("InternalError", STRING))
    applied = product(
        ("request_id", U32),
        ("total_host_execution_duration_micros", U64),
        ("query_id", _QUERY_ID),
        ("rows", subscribe_rows),
    )
    multi_applied = product(
        ("request_id", U32),
        ("total_host_execution_duration_micros", U64),
        ("query_id", _QUERY_ID),
        ("update", database_update),
    )
    server = sum_type(
        (
            "InitialSubscription",
            product(
                ("database_update", database_update),
                ("request_id", U32),
                ("total_host_execution_duration", TIME_DURATION),
            ),
        ),
        (
            "TransactionUpdate",
            product(
                ("status", update_status),
                ("timestamp", TIMESTAMP),
                ("caller_identity", IDENTITY),
                ("caller_connection_id", CONNECTION_ID),
                ("reducer_call", reducer_call_info),
                ("energy_quanta_used", _ENERGY_QUANTA),
                ("total_host_execution_duration", TIME_DURATION),
            ),
        ),
        ("TransactionUpdateLight", product(("request_id", U32), ("update", database_update))),
        (
            "IdentityToken",
            product(("identity", IDENTITY), ("token", STRING), ("connection_id", CONNECTION_ID)),
        ),
        (
            "OneOffQueryResponse",
            product(
                ("message_id", BYTES),
                ("error", option(STRING)),
                ("tables", ArrayType(one_off_table)),
                ("total_host_execution_duration", TIME_DURATION),
            ),
        ),
        ("SubscribeApplied", applied),
        ("UnsubscribeApplied", applied),
        (
            "SubscriptionError",
            product(
                ("total_host_execution_duration_micros", U64),
                ("request_id", option(U32)),
                ("query_id", option(U32)),
                ("table_id", option(U32)),
                ("error", STRING),
            ),
        ),
        ("SubscribeMultiApplied", multi_applied),
        ("UnsubscribeMultiApplied", multi_applied),
        (
            "ProcedureResult",
            product(
                ("status", procedure_status),
                ("timestamp", TIMESTAMP),
                ("total_host_execution_duration", TIME_DURATION),
                ("request_id", U32),
            ),
        ),
    )
    client = sum_type(
        ("CallReducer", product(("reducer", STRING), ("args", single), ("request_id", U32), ("flags", U8))),
        ("Subscribe", product(("query_strings", ArrayType(STRING)), ("request_id", U32))),
        ("OneOffQuery", product(("message_id", BYTES), ("query_string", STRING))),
        ("SubscribeSingle", product(("query", STRING), ("request_id", U32), ("query_id", _QUERY_ID))),
        (
            "SubscribeMulti",
            product(("query_strings", ArrayType(STRING)), ("request_id", U32), ("query_id", _QUERY_ID)),
        ),
        ("Unsubscribe", product(("request_id", U32), ("query_id", _QUERY_ID))),
        ("UnsubscribeMulti", product(("request_id", U32), ("query_id", _QUERY_ID))),
        (
            "CallProcedure",
            product(("procedure", STRING), ("args", single), ("request_id", U32), ("flags", U8)),
        ),
    )
    return client, server


# ---------------------------------------------------------------------------------------------
# Compression (§10.3)
# ---------------------------------------------------------------------------------------------


class Compression(enum.Enum):
    """The ``compression`` query parameter; ``Compression("Gzip")`` parses it (case-sensitive)."""

    NONE = "None"
    BROTLI = "Brotli"
    GZIP = "Gzip"


#: Server messages whose BSATN is longer than this many bytes get compressed.
COMPRESSION_THRESHOLD = 1024

#: Decompressed data larger than this is refused, so a small frame cannot exhaust memory.
MAX_DECOMPRESSED_SIZE = 256 << 20

_TAG_NONE, _TAG_BROTLI, _TAG_GZIP = 0, 1, 2
_CHUNK = 1 << 16


def _too_large(what: str, limit: int) -> WsProtocolError:
    return WsProtocolError(f"{what} decompresses to more than {limit} bytes")


def _brotli_decompress(data: bytes | bytearray | memoryview, limit: int) -> bytes:
    d = brotli.Decompressor()
    parts: list[bytes] = []
    total = 0
    try:
        chunk = d.process(bytes(data), output_buffer_limit=_CHUNK)
        while True:
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _too_large("brotli data", limit)
            if d.is_finished():
                break
            chunk = d.process(b"", output_buffer_limit=_CHUNK)
            if not chunk and not d.is_finished():
                # All input consumed and no output pending, yet the stream has not ended.
                raise WsProtocolError("brotli data is truncated")
    except brotli.error:
        raise WsProtocolError("invalid brotli data") from None
    return b"".join(parts)


def _gzip_decompress(data: bytes | bytearray | memoryview, limit: int) -> bytes:
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing only
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise WsProtocolError(f"invalid gzip data: {e}") from None
    if len(out) > limit:
        raise _too_large("gzip data", limit)
    if not d.eof:
        raise WsProtocolError("gzip data is truncated")
    if d.unused_data:
        raise WsProtocolError(f"{len(d.unused_data)} trailing byte(s) after the gzip data")
    return out


def _decompress(tag: int, data: bytes | bytearray | memoryview, limit: int) -> bytes:
    if tag == _TAG_BROTLI:
        return _brotli_decompress(data, limit)
    return _gzip_decompress(data, limit)


def frame_server_message(bsatn: bytes, compression: Compression) -> bytes:
    """A binary frame: tag byte + the BSATN, compressed when it is over 1024 bytes (§10.3).

    Brotli uses quality 1 and gzip the fastest level, as 1.12 does.
    """
    if compression is Compression.NONE or len(bsatn) <= COMPRESSION_THRESHOLD:
        return b"\x00" + bsatn
    if compression is Compression.BROTLI:
        return b"\x01" + brotli.compress(bsatn, quality=1)
    if compression is Compression.GZIP:
        return b"\x02" + gzip.compress(bsatn, compresslevel=1, mtime=0)
    raise EncodeError(f"{compression!r} is not a Compression")


def unframe_server_message(
    frame: bytes | bytearray | memoryview, max_size: int = MAX_DECOMPRESSED_SIZE
) -> bytes:
    """The BSATN inside a binary server frame of any compression tag."""
    if not frame:
        raise WsProtocolError("empty server frame (no compression tag)")
    tag = frame[0]
    body = memoryview(frame)[1:]
    if tag == _TAG_NONE:
        return bytes(body)
    if tag in (_TAG_BROTLI, _TAG_GZIP):
        return _decompress(tag, body, max_size)
    raise WsProtocolError(f"unknown compression tag {tag} in server frame")


# ---------------------------------------------------------------------------------------------
# The two formats: how rows, args and query updates map to SATS values
# ---------------------------------------------------------------------------------------------


class _Format:
    """What differs between the BSATN and JSON forms of the messages.

    The ``*_to_value`` methods serve the generic encoders (JSON messages, BSATN client
    messages); BSATN server messages have a hand-written encoder (:func:`_put_server`).
    """

    client_type: SumType
    server_type: SumType

    def rows_to_value(self, rows: RowList) -> Any:
        raise NotImplementedError

    def rows_from_value(self, v: Any) -> RowList:
        raise NotImplementedError

    def query_update_to_value(self, qu: QueryUpdate) -> Any:
        raise NotImplementedError

    def query_update_from_value(self, v: Any) -> QueryUpdate:
        raise NotImplementedError

    def single_to_value(self, x: bytes | str, what: str) -> Any:
        raise NotImplementedError

    def single_from_value(self, v: Any) -> bytes | str:
        return v  # type: ignore[no-any-return]


class _BsatnFormat(_Format):
    def __init__(self) -> None:
        self.client_type, self.server_type = _schemas(_COMPRESSABLE_QUERY_UPDATE, _BSATN_ROW_LIST, BYTES)
        self.client_codec: Codec = codec_for(self.client_type)
        self.server_codec: Codec = codec_for(self.server_type)
        self.query_update_codec: Codec = codec_for(_BSATN_QUERY_UPDATE)

    def rows_from_value(self, v: Any) -> RowList:
        (tag, payload), data = v
        hint = FixedSize(payload) if tag == 0 else RowOffsets(tuple(payload))
        try:
            return BsatnRowList(hint, data)
        except EncodeError as e:  # an inconsistent hint, as __post_init__ reports it
            raise WsProtocolError(str(e)) from None

    def query_update_from_value(self, v: Any) -> QueryUpdate:
        tag, payload = v
        if tag != 0:
            raw = _decompress(tag, payload, MAX_DECOMPRESSED_SIZE)
            try:
                payload = self.query_update_codec.decode_all(raw)
            except DecodeError as e:
                raise WsProtocolError(f"in a compressed query update: {e}") from None
        deletes, inserts = payload
        return QueryUpdate(self.rows_from_value(deletes), self.rows_from_value(inserts))

    def single_to_value(self, x: bytes | str, what: str) -> Any:
        if not isinstance(x, (bytes, bytearray, memoryview)):
            raise EncodeError(f"a BSATN message carries {what} as BSATN bytes, got {type(x).__name__}")
        return x


class _JsonFormat(_Format):
    def __init__(self) -> None:
        self.client_type, self.server_type = _schemas(_JSON_QUERY_UPDATE, _JSON_ROW_LIST, STRING)

    def rows_to_value(self, rows: RowList) -> Any:
        if isinstance(rows, BsatnRowList):
            raise EncodeError(
                "a JSON message carries rows as JSON texts, not a BsatnRowList (see rows_to_json)"
            )
        return rows

    def rows_from_value(self, v: Any) -> RowList:
        return tuple(v)

    def query_update_to_value(self, qu: QueryUpdate) -> Any:
        return (self.rows_to_value(qu.deletes), self.rows_to_value(qu.inserts))

    def query_update_from_value(self, v: Any) -> QueryUpdate:
        deletes, inserts = v
        return QueryUpdate(tuple(deletes), tuple(inserts))

    def single_to_value(self, x: bytes | str, what: str) -> Any:
        if not isinstance(x, str):
            raise EncodeError(f"a JSON message carries {what} as JSON text, got {type(x).__name__}")
        return x


_BSATN = _BsatnFormat()
_JSON = _JsonFormat()

#: Flavour A of sats-bsatn.md §5.1 (Rust-derived types): objects by name, sums
#: ``{"Variant": payload}``, unit ``[]`` — the shape of every v1.json envelope.
_write_derived = _writer(
    product_as_object=True, sum_by_name=True, unit=list, in_array=None, names_required=True
)


# ---------------------------------------------------------------------------------------------
# Messages -> SATS values
# ---------------------------------------------------------------------------------------------


def _table_update_value(t: TableUpdate, f: _Format) -> Any:
    return (t.table_id, t.table_name, t.num_rows, [f.query_update_to_value(u) for u in t.updates])


def _db_update_value(d: DatabaseUpdate, f: _Format) -> Any:
    return ([_table_update_value(t, f) for t in d.tables],)


def _update_status_value(s: UpdateStatus, f: _Format) -> SumValue:
    if isinstance(s, Committed):
        return SumValue(0, _db_update_value(s.database_update, f))
    if isinstance(s, Failed):
        return SumValue(1, s.message)
    if isinstance(s, OutOfEnergy):
        return SumValue(2, ())
    raise EncodeError(f"{s!r} is not an UpdateStatus")


def _procedure_status_value(s: ProcedureStatus, f: _Format) -> SumValue:
    if isinstance(s, Returned):
        return SumValue(0, f.single_to_value(s.value, "a procedure's return value"))
    if isinstance(s, OutOfEnergy):
        return SumValue(1, ())
    if isinstance(s, InternalError):
        return SumValue(2, s.message)
    raise EncodeError(f"{s!r} is not a ProcedureStatus")


def _applied_value(m: SubscribeApplied | UnsubscribeApplied, f: _Format) -> Any:
    r = m.rows
    return (
        m.request_id,
        m.total_host_execution_duration_micros,
        (m.query_id.id,),
        (r.table_id, r.table_name, _table_update_value(r.table_rows, f)),
    )


def _multi_applied_value(m: SubscribeMultiApplied | UnsubscribeMultiApplied, f: _Format) -> Any:
    return (
        m.request_id,
        m.total_host_execution_duration_micros,
        (m.query_id.id,),
        _db_update_value(m.update, f),
    )


def _transaction_update_value(m: TransactionUpdate, f: _Format) -> Any:
    rc = m.reducer_call
    return (
        _update_status_value(m.status, f),
        (m.timestamp.micros_since_unix_epoch,),
        (m.caller_identity.value,),
        (m.caller_connection_id.value,),
        (rc.reducer_name, rc.reducer_id, f.single_to_value(rc.args, "reducer args"), rc.request_id),
        (m.energy_quanta_used.quanta,),
        (m.total_host_execution_duration.micros,),
    )


_SERVER_TO_VALUE: dict[type, tuple[int, Callable[[Any, _Format], Any]]] = {
    InitialSubscription: (
        0,
        lambda m, f: (
            _db_update_value(m.database_update, f),
            m.request_id,
            (m.total_host_execution_duration.micros,),
        ),
    ),
    TransactionUpdate: (1, _transaction_update_value),
    TransactionUpdateLight: (2, lambda m, f: (m.request_id, _db_update_value(m.update, f))),
    IdentityToken: (3, lambda m, f: ((m.identity.value,), m.token, (m.connection_id.value,))),
    OneOffQueryResponse: (
        4,
        lambda m, f: (
            m.message_id,
            SumValue(1, ()) if m.error is None else SumValue(0, m.error),
            [(t.table_name, f.rows_to_value(t.rows)) for t in m.tables],
            (m.total_host_execution_duration.micros,),
        ),
    ),
    SubscribeApplied: (5, _applied_value),
    UnsubscribeApplied: (6, _applied_value),
    SubscriptionError: (
        7,
        lambda m, f: (
            m.total_host_execution_duration_micros,
            _option_value(m.request_id),
            _option_value(m.query_id),
            _option_value(m.table_id),
            m.error,
        ),
    ),
    SubscribeMultiApplied: (8, _multi_applied_value),
    UnsubscribeMultiApplied: (9, _multi_applied_value),
    ProcedureResult: (
        10,
        lambda m, f: (
            _procedure_status_value(m.status, f),
            (m.timestamp.micros_since_unix_epoch,),
            (m.total_host_execution_duration.micros,),
            m.request_id,
        ),
    ),
}


def _option_value(v: Any) -> SumValue:
    return SumValue(1, ()) if v is None else SumValue(0, v)


def _flags_value(flags: Any, allowed: type[enum.IntEnum]) -> int:
    try:
        return int(allowed(flags))
    except ValueError:
        raise EncodeError(f"{flags!r} is not a valid {allowed.__name__} value") from None


_CLIENT_TO_VALUE: dict[type, tuple[int, Callable[[Any, _Format], Any]]] = {
    CallReducer: (
        0,
        lambda m, f: (
            m.reducer,
            f.single_to_value(m.args, "reducer args"),
            m.request_id,
            _flags_value(m.flags, CallReducerFlags),
        ),
    ),
    Subscribe: (1, lambda m, f: (m.query_strings, m.request_id)),
    OneOffQuery: (2, lambda m, f: (m.message_id, m.query_string)),
    SubscribeSingle: (3, lambda m, f: (m.query, m.request_id, (m.query_id.id,))),
    SubscribeMulti: (4, lambda m, f: (m.query_strings, m.request_id, (m.query_id.id,))),
    Unsubscribe: (5, lambda m, f: (m.request_id, (m.query_id.id,))),
    UnsubscribeMulti: (6, lambda m, f: (m.request_id, (m.query_id.id,))),
    CallProcedure: (
        7,
        lambda m, f: (
            m.procedure,
            f.single_to_value(m.args, "procedure args"),
            m.request_id,
            _flags_value(m.flags, CallProcedureFlags),
        ),
    ),
}


def _to_value(
    msg: Any, table: dict[type, tuple[int, Callable[[Any, _Format], Any]]], f: _Format, kind: str
) -> SumValue:
    try:
        tag, fn = table[type(msg)]
    except KeyError:
        raise EncodeError(f"{type(msg).__name__} is not a {kind} message") from None
    try:
        return SumValue(tag, fn(msg, f))
    except (AttributeError, TypeError) as e:
        # A field of the wrong Python type (say an int where a Timestamp belongs).
        raise EncodeError(f"{type(msg).__name__}: {e}") from None


# ---------------------------------------------------------------------------------------------
# SATS values -> messages (input already checked against the schema by the codec/reader)
# ---------------------------------------------------------------------------------------------


def _table_update_from(v: Any, f: _Format) -> TableUpdate:
    # num_rows (v[2]) is derived from the updates, so it is not kept.
    table_id, table_name, _num_rows, updates = v
    return TableUpdate(table_id, table_name, tuple(f.query_update_from_value(u) for u in updates))


def _db_update_from(v: Any, f: _Format) -> DatabaseUpdate:
    return DatabaseUpdate(tuple(_table_update_from(t, f) for t in v[0]))


def _update_status_from(v: SumValue, f: _Format) -> UpdateStatus:
    if v.tag == 0:
        return Committed(_db_update_from(v.value, f))
    if v.tag == 1:
        return Failed(v.value)
    return OutOfEnergy()


def _procedure_status_from(v: SumValue, f: _Format) -> ProcedureStatus:
    if v.tag == 0:
        return Returned(f.single_from_value(v.value))
    if v.tag == 1:
        return OutOfEnergy()
    return InternalError(v.value)


def _option_from(v: SumValue) -> Any:
    return v.value if v.tag == 0 else None


def _subscribe_rows_from(v: Any, f: _Format) -> SubscribeRows:
    return SubscribeRows(v[0], v[1], _table_update_from(v[2], f))


def _transaction_update_from(p: Any, f: _Format) -> TransactionUpdate:
    status, (ts,), (identity,), (conn,), (name, reducer_id, args, request_id), (quanta,), (micros,) = p
    return TransactionUpdate(
        _update_status_from(status, f),
        Timestamp(ts),
        Identity(identity),
        ConnectionId(conn),
        ReducerCallInfo(name, reducer_id, f.single_from_value(args), request_id),
        EnergyQuanta(quanta),
        TimeDuration(micros),
    )


_SERVER_FROM_VALUE: list[Callable[[Any, _Format], ServerMessage]] = [
    lambda p, f: InitialSubscription(_db_update_from(p[0], f), p[1], TimeDuration(p[2][0])),
    _transaction_update_from,
    lambda p, f: TransactionUpdateLight(p[0], _db_update_from(p[1], f)),
    lambda p, f: IdentityToken(Identity(p[0][0]), p[1], ConnectionId(p[2][0])),
    lambda p, f: OneOffQueryResponse(
        bytes(p[0]),
        _option_from(p[1]),
        tuple(OneOffTable(name, f.rows_from_value(rows)) for name, rows in p[2]),
        TimeDuration(p[3][0]),
    ),
    lambda p, f: SubscribeApplied(p[0], p[1], QueryId(p[2][0]), _subscribe_rows_from(p[3], f)),
    lambda p, f: UnsubscribeApplied(p[0], p[1], QueryId(p[2][0]), _subscribe_rows_from(p[3], f)),
    lambda p, f: SubscriptionError(p[0], _option_from(p[1]), _option_from(p[2]), _option_from(p[3]), p[4]),
    lambda p, f: SubscribeMultiApplied(p[0], p[1], QueryId(p[2][0]), _db_update_from(p[3], f)),
    lambda p, f: UnsubscribeMultiApplied(p[0], p[1], QueryId(p[2][0]), _db_update_from(p[3], f)),
    lambda p, f: ProcedureResult(
        _procedure_status_from(p[0], f), Timestamp(p[1][0]), TimeDuration(p[2][0]), p[3]
    ),
]


def _flags_from(v: int, allowed: type[enum.IntEnum], what: str) -> Any:
    try:
        return allowed(v)
    except ValueError:
        raise WsProtocolError(f"invalid {what} flags {v}") from None


_CLIENT_FROM_VALUE: list[Callable[[Any, _Format], ClientMessage]] = [
    lambda p, f: CallReducer(
        p[0], f.single_from_value(p[1]), p[2], _flags_from(p[3], CallReducerFlags, "call reducer")
    ),
    lambda p, f: Subscribe(tuple(p[0]), p[1]),
    lambda p, f: OneOffQuery(bytes(p[0]), p[1]),
    lambda p, f: SubscribeSingle(p[0], p[1], QueryId(p[2][0])),
    lambda p, f: SubscribeMulti(tuple(p[0]), p[1], QueryId(p[2][0])),
    lambda p, f: Unsubscribe(p[0], QueryId(p[1][0])),
    lambda p, f: UnsubscribeMulti(p[0], QueryId(p[1][0])),
    lambda p, f: CallProcedure(
        p[0], f.single_from_value(p[1]), p[2], _flags_from(p[3], CallProcedureFlags, "call procedure")
    ),
]


# ---------------------------------------------------------------------------------------------
# BSATN server messages, by hand
# ---------------------------------------------------------------------------------------------
# The host node encodes a server message per commit and subscriber group; writing the bytes
# directly is ~4x faster than building SATS values for the generic codec. The layout is the
# one declared in _schemas: the tests decode this encoder's output with the codec compiled
# from those types (and check num_rows, which decoding derives rather than keeps).

_pack_u32 = struct.Struct("<I").pack
_pack_u64 = struct.Struct("<Q").pack
_pack_i64 = struct.Struct("<q").pack
_pack_fixed_hint = struct.Struct("<BH").pack  # RowSizeHint::FixedSize tag + u16


def _put_str(out: bytearray, s: str) -> None:
    data = s.encode()
    out += _pack_u32(len(data))
    out += data


def _put_bytes(out: bytearray, data: Any, what: str) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodeError(f"a BSATN message carries {what} as BSATN bytes, got {type(data).__name__}")
    out += _pack_u32(len(data))
    out += data


def _put_rows(out: bytearray, rows: RowList) -> None:
    if not isinstance(rows, BsatnRowList):
        raise EncodeError(
            "a BSATN message carries rows as a BsatnRowList, not JSON texts (see json_rows_to_bsatn)"
        )
    hint = rows.size_hint
    if isinstance(hint, FixedSize):
        out += _pack_fixed_hint(0, hint.size)
    else:
        offsets = hint.offsets
        out.append(1)
        out += struct.pack(f"<I{len(offsets)}Q", len(offsets), *offsets)
    data = rows.rows_data
    out += _pack_u32(len(data))
    out += data


def _put_table_update(out: bytearray, t: TableUpdate) -> None:
    out += _pack_u32(t.table_id)
    _put_str(out, t.table_name)
    out += _pack_u64(t.num_rows)
    out += _pack_u32(len(t.updates))
    for u in t.updates:
        out.append(0)  # CompressableQueryUpdate::Uncompressed: 1.12 compresses whole messages
        _put_rows(out, u.deletes)
        _put_rows(out, u.inserts)


def _put_db_update(out: bytearray, d: DatabaseUpdate) -> None:
    out += _pack_u32(len(d.tables))
    for t in d.tables:
        _put_table_update(out, t)


def _put_option_u32(out: bytearray, v: int | None) -> None:
    if v is None:
        out.append(1)
    else:
        out.append(0)
        out += _pack_u32(v)


def _put_transaction_update(out: bytearray, m: TransactionUpdate) -> None:
    status = m.status
    if isinstance(status, Committed):
        out.append(0)
        _put_db_update(out, status.database_update)
    elif isinstance(status, Failed):
        out.append(1)
        _put_str(out, status.message)
    elif isinstance(status, OutOfEnergy):
        out.append(2)
    else:
        raise EncodeError(f"{status!r} is not an UpdateStatus")
    out += _pack_i64(m.timestamp.micros_since_unix_epoch)
    out += m.caller_identity.value.to_bytes(32, "little")
    out += m.caller_connection_id.value.to_bytes(16, "little")
    rc = m.reducer_call
    _put_str(out, rc.reducer_name)
    out += _pack_u32(rc.reducer_id)
    _put_bytes(out, rc.args, "reducer args")
    out += _pack_u32(rc.request_id)
    out += m.energy_quanta_used.quanta.to_bytes(16, "little")
    out += _pack_i64(m.total_host_execution_duration.micros)


def _put_applied(out: bytearray, m: SubscribeApplied | UnsubscribeApplied) -> None:
    out += _pack_u32(m.request_id)
    out += _pack_u64(m.total_host_execution_duration_micros)
    out += _pack_u32(m.query_id.id)
    out += _pack_u32(m.rows.table_id)
    _put_str(out, m.rows.table_name)
    _put_table_update(out, m.rows.table_rows)


def _put_multi_applied(out: bytearray, m: SubscribeMultiApplied | UnsubscribeMultiApplied) -> None:
    out += _pack_u32(m.request_id)
    out += _pack_u64(m.total_host_execution_duration_micros)
    out += _pack_u32(m.query_id.id)
    _put_db_update(out, m.update)


def _put_initial_subscription(out: bytearray, m: InitialSubscription) -> None:
    _put_db_update(out, m.database_update)
    out += _pack_u32(m.request_id)
    out += _pack_i64(m.total_host_execution_duration.micros)


def _put_light(out: bytearray, m: TransactionUpdateLight) -> None:
    out += _pack_u32(m.request_id)
    _put_db_update(out, m.update)


def _put_identity_token(out: bytearray, m: IdentityToken) -> None:
    out += m.identity.value.to_bytes(32, "little")
    _put_str(out, m.token)
    out += m.connection_id.value.to_bytes(16, "little")


def _put_one_off_response(out: bytearray, m: OneOffQueryResponse) -> None:
    _put_bytes(out, m.message_id, "message_id")
    if m.error is None:
        out.append(1)
    else:
        out.append(0)
        _put_str(out, m.error)
    out += _pack_u32(len(m.tables))
    for t in m.tables:
        _put_str(out, t.table_name)
        _put_rows(out, t.rows)
    out += _pack_i64(m.total_host_execution_duration.micros)


def _put_subscription_error(out: bytearray, m: SubscriptionError) -> None:
    out += _pack_u64(m.total_host_execution_duration_micros)
    _put_option_u32(out, m.request_id)
    _put_option_u32(out, m.query_id)
    _put_option_u32(out, m.table_id)
    _put_str(out, m.error)


def _put_procedure_result(out: bytearray, m: ProcedureResult) -> None:
    status = m.status
    if isinstance(status, Returned):
        out.append(0)
        _put_bytes(out, status.value, "a procedure's return value")
    elif isinstance(status, OutOfEnergy):
        out.append(1)
    elif isinstance(status, InternalError):
        out.append(2)
        _put_str(out, status.message)
    else:
        raise EncodeError(f"{status!r} is not a ProcedureStatus")
    out += _pack_i64(m.timestamp.micros_since_unix_epoch)
    out += _pack_i64(m.total_host_execution_duration.micros)
    out += _pack_u32(m.request_id)


_SERVER_PUT: dict[type, tuple[int, Callable[[bytearray, Any], None]]] = {
    InitialSubscription: (0, _put_initial_subscription),
    TransactionUpdate: (1, _put_transaction_update),
    TransactionUpdateLight: (2, _put_light),
    IdentityToken: (3, _put_identity_token),
    OneOffQueryResponse: (4, _put_one_off_response),
    SubscribeApplied: (5, _put_applied),
    UnsubscribeApplied: (6, _put_applied),
    SubscriptionError: (7, _put_subscription_error),
    SubscribeMultiApplied: (8, _put_multi_applied),
    UnsubscribeMultiApplied: (9, _put_multi_applied),
    ProcedureResult: (10, _put_procedure_result),
}


def _put_server(out: bytearray, msg: Any) -> None:
    try:
        tag, put = _SERVER_PUT[type(msg)]
    except KeyError:
        raise EncodeError(f"{type(msg).__name__} is not a server message") from None
    out.append(tag)
    try:
        put(out, msg)
    except (struct.error, OverflowError) as e:
        raise EncodeError(f"{type(msg).__name__}: a number does not fit its field: {e}") from None
    except (AttributeError, TypeError, UnicodeEncodeError) as e:
        raise EncodeError(f"{type(msg).__name__}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Public codecs
# ---------------------------------------------------------------------------------------------


def _decode_bsatn(
    data: bytes | bytearray | memoryview, codec: Codec, table: list[Callable[[Any, _Format], Any]], kind: str
) -> Any:
    try:
        tag, payload = codec.decode_all(data)
        return table[tag](payload, _BSATN)
    except WsProtocolError:
        raise
    except DecodeError as e:
        raise WsProtocolError(f"malformed BSATN {kind} message: {e}") from None


def _decode_json(
    text: str | bytes | bytearray, ty: SumType, table: list[Callable[[Any, _Format], Any]], kind: str
) -> Any:
    try:
        tag, payload = from_json(ty, loads(text), root="message")
        return table[tag](payload, _JSON)
    except WsProtocolError:
        raise
    except DecodeError as e:
        raise WsProtocolError(f"malformed JSON {kind} message: {e}") from None


def encode_server_message_bsatn(msg: ServerMessage) -> bytes:
    """The BSATN of a server message (without the compression tag; see :func:`frame_server_message`)."""
    out = bytearray()
    _put_server(out, msg)
    return bytes(out)


def decode_server_message_bsatn(data: bytes | bytearray | memoryview) -> ServerMessage:
    """Decode the BSATN of a server message (compressed query updates are decompressed)."""
    return _decode_bsatn(data, _BSATN.server_codec, _SERVER_FROM_VALUE, "server")  # type: ignore[no-any-return]


def encode_client_message_bsatn(msg: ClientMessage) -> bytes:
    """The BSATN of a client message (a binary frame as is: client frames have no tag)."""
    return _BSATN.client_codec.encode(_to_value(msg, _CLIENT_TO_VALUE, _BSATN, "client"))


def decode_client_message_bsatn(data: bytes | bytearray | memoryview) -> ClientMessage:
    """Decode a binary client frame (the server reads ``CallReducer`` frames, the message clients
    send most, with :func:`hostnode.realtime.read_call` first)."""
    return _decode_bsatn(data, _BSATN.client_codec, _CLIENT_FROM_VALUE, "client")  # type: ignore[no-any-return]


def encode_server_message_json(msg: ServerMessage) -> str:
    """The text frame of a server message: ``{"Variant":{fields…}}``, compact."""
    return dumps(
        _write_derived(_JSON.server_type, _to_value(msg, _SERVER_TO_VALUE, _JSON, "server"), EMPTY_TYPESPACE)
    )


def decode_server_message_json(text: str | bytes | bytearray) -> ServerMessage:
    """Decode a JSON server message (every input form of sats-bsatn.md §5.2 is accepted)."""
    return _decode_json(text, _JSON.server_type, _SERVER_FROM_VALUE, "server")  # type: ignore[no-any-return]


def encode_client_message_json(msg: ClientMessage) -> str:
    """The text frame of a client message, e.g. ``{"Subscribe":{"query_strings":[…],"request_id":0}}``."""
    return dumps(
        _write_derived(_JSON.client_type, _to_value(msg, _CLIENT_TO_VALUE, _JSON, "client"), EMPTY_TYPESPACE)
    )


def decode_client_message_json(text: str | bytes | bytearray) -> ClientMessage:
    """Decode a text client frame; ``message_id`` may be a hex string or an array of numbers."""
    return _decode_json(text, _JSON.client_type, _CLIENT_FROM_VALUE, "client")  # type: ignore[no-any-return]


def encode_server_frame(msg: ServerMessage, compression: Compression) -> bytes:
    """A complete binary server frame: BSATN plus the compression envelope."""
    return frame_server_message(encode_server_message_bsatn(msg), compression)


def decode_server_frame(frame: bytes | bytearray | memoryview) -> ServerMessage:
    """Decode a complete binary server frame of any compression."""
    return decode_server_message_bsatn(unframe_server_message(frame))


# ---------------------------------------------------------------------------------------------
# Rows between BSATN and JSON text
# ---------------------------------------------------------------------------------------------


def _decode_value(ty: AlgebraicType, data: bytes, typespace: Typespace) -> Any:
    try:
        return codec_for(ty, typespace).decode_all(data)
    except WsProtocolError:
        raise
    except DecodeError as e:
        raise WsProtocolError(f"malformed BSATN value: {e}") from None


def row_to_json(row_type: AlgebraicType, row: bytes, typespace: Typespace = EMPTY_TYPESPACE) -> str:
    """The JSON text of one row from its BSATN: flavour D, objects by column name, sums ``[tag, payload]``."""
    return dumps(to_json_row(row_type, _decode_value(row_type, row, typespace), typespace))


def rows_to_json(
    row_type: AlgebraicType, rows: Iterable[bytes], typespace: Typespace = EMPTY_TYPESPACE
) -> tuple[str, ...]:
    """The JSON-protocol row list of BSATN rows (e.g. a :class:`BsatnRowList`)."""
    codec = codec_for(row_type, typespace)
    out = []
    for row in rows:
        try:
            value = codec.decode_all(row)
        except DecodeError as e:
            raise WsProtocolError(f"malformed BSATN row: {e}") from None
        out.append(dumps(to_json_row(row_type, value, typespace)))
    return tuple(out)


def value_to_json(ty: AlgebraicType, data: bytes, typespace: Typespace = EMPTY_TYPESPACE) -> str:
    """JSON text of any BSATN value in flavour C (arrays, ``[tag, payload]``).

    This is how 1.12 echoes BSATN-called reducer args (``["Alice"]``) and writes procedure
    return values in JSON messages.
    """
    return dumps(to_json_untyped(ty, _decode_value(ty, data, typespace), typespace))


def json_to_bsatn(ty: AlgebraicType, text: str | bytes, typespace: Typespace = EMPTY_TYPESPACE) -> bytes:
    """The BSATN of a JSON text read as ``ty`` in any form of sats-bsatn.md §5.2 (rows, args, values)."""
    try:
        value = from_json(ty, loads(text), typespace)
    except DecodeError as e:
        raise WsProtocolError(str(e)) from None
    return codec_for(ty, typespace).encode(value)


def json_rows_to_bsatn(
    row_type: AlgebraicType, rows: Sequence[str], typespace: Typespace = EMPTY_TYPESPACE
) -> BsatnRowList:
    """A :class:`BsatnRowList` of the rows of a JSON row list (objects or arrays alike)."""
    return BsatnRowList.from_rows(json_to_bsatn(row_type, r, typespace) for r in rows)
