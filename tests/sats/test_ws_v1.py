"""WebSocket v1 messages: the spec's byte vectors (client-api.md §12), round trips of every
message in both protocols, RowSizeHint rules, the compression envelope, and malformed input."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sats.bsatn import codec_for
from sats.errors import DecodeError, EncodeError
from sats.identity import ConnectionId, Identity
from sats.types import BOOL, F32, F64, I32, STRING, U32, U256, ArrayType, SumValue, option, product, sum_type
from sats.ws_v1 import (
    _BSATN,  # the schema's compiled codec, to inspect raw values
    COMPRESSION_THRESHOLD,
    MAX_CLOSE_REASON,
    BsatnRowList,
    CallProcedure,
    CallProcedureFlags,
    CallReducer,
    CallReducerFlags,
    Committed,
    Compression,
    DatabaseUpdate,
    EnergyQuanta,
    Failed,
    FixedSize,
    IdentityToken,
    InitialSubscription,
    InternalError,
    OneOffQuery,
    OneOffQueryResponse,
    OneOffTable,
    OutOfEnergy,
    ProcedureResult,
    QueryId,
    QueryUpdate,
    ReducerCallInfo,
    Returned,
    RowOffsets,
    Subscribe,
    SubscribeApplied,
    SubscribeMulti,
    SubscribeMultiApplied,
    SubscribeRows,
    SubscribeSingle,
    SubscriptionError,
    TableUpdate,
    TimeDuration,
    Timestamp,
    TransactionUpdate,
    TransactionUpdateLight,
    Unsubscribe,
    UnsubscribeApplied,
    UnsubscribeMulti,
    UnsubscribeMultiApplied,
    WsProtocolError,
    decode_client_message_bsatn,
    decode_client_message_json,
    decode_server_frame,
    decode_server_message_bsatn,
    decode_server_message_json,
    encode_client_message_bsatn,
    encode_client_message_json,
    encode_server_frame,
    encode_server_message_bsatn,
    encode_server_message_json,
    frame_server_message,
    json_rows_to_bsatn,
    json_to_bsatn,
    row_to_json,
    rows_to_json,
    unframe_server_message,
    value_to_json,
)
from tests.sats.strategies import types_and_values

# ---------------------------------------------------------------------------------------------
# §12 vectors
# ---------------------------------------------------------------------------------------------

IDENT = Identity.from_claims("localhost", "00000000-0000-4000-8000-000000000000")
CONN = ConnectionId.from_hex("0123456789abcdef0123456789abcdef")
IDENT_JSON = '{"__identity__":"0xc200085d8c451325cc207f963918b762072fff5388fca7006b89f4a2a7d3ee5e"}'
CONN_JSON = '{"__connection_id__":1512366075204170929049582354406559215}'

VECTOR_12_1 = bytes.fromhex(
    "00 03"
    "5e ee d3 a7 a2 f4 89 6b 00 a7 fc 88 53 ff 2f 07"
    "62 b7 18 39 96 7f 20 cc 25 13 45 8c 5d 08 00 c2"
    "05 00 00 00 78 2e 79 2e 7a"
    "ef cd ab 89 67 45 23 01 ef cd ab 89 67 45 23 01"
)
JSON_12_1 = f'{{"IdentityToken":{{"identity":{IDENT_JSON},"token":"x.y.z","connection_id":{CONN_JSON}}}}}'

VECTOR_12_2 = bytes.fromhex(
    """
    00 01 00 01 00 00 00 00 10 00 00 06 00 00 00 70
    65 72 73 6f 6e 01 00 00 00 00 00 00 00 01 00 00
    00 00 01 00 00 00 00 00 00 00 00 00 0d 00 0d 00
    00 00 01 00 00 00 05 00 00 00 41 6c 69 63 65 00
    40 1e 18 24 0a 06 00 5e ee d3 a7 a2 f4 89 6b 00
    a7 fc 88 53 ff 2f 07 62 b7 18 39 96 7f 20 cc 25
    13 45 8c 5d 08 00 c2 ef cd ab 89 67 45 23 01 ef
    cd ab 89 67 45 23 01 03 00 00 00 61 64 64 02 00
    00 00 09 00 00 00 05 00 00 00 41 6c 69 63 65 07
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 d2 04 00 00 00 00 00 00
    """
)
JSON_12_2 = (
    '{"TransactionUpdate":{"status":{"Committed":{"tables":[{"table_id":4096,"table_name":"person",'
    '"num_rows":1,"updates":[{"deletes":[],"inserts":["{\\"id\\":1,\\"name\\":\\"Alice\\"}"]}]}]}},'
    '"timestamp":{"__timestamp_micros_since_unix_epoch__":1700000000000000},'
    f'"caller_identity":{IDENT_JSON},"caller_connection_id":{CONN_JSON},'
    '"reducer_call":{"reducer_name":"add","reducer_id":2,"args":"[\\"Alice\\"]","request_id":7},'
    '"energy_quanta_used":{"quanta":0},"total_host_execution_duration":{"__time_duration_micros__":1234}}}'
)

PERSON = product(("id", U32), ("name", STRING))
ADD_PARAMS = product(("name", STRING))
ALICE_ROW = bytes.fromhex("0100000005000000416c696365")
ALICE_ARGS = bytes.fromhex("05000000416c696365")


def _transaction_update(rows: Any, args: bytes | str) -> TransactionUpdate:
    table = TableUpdate(4096, "person", (QueryUpdate(rows[0], rows[1]),))
    return TransactionUpdate(
        status=Committed(DatabaseUpdate((table,))),
        timestamp=Timestamp(1_700_000_000_000_000),
        caller_identity=IDENT,
        caller_connection_id=CONN,
        reducer_call=ReducerCallInfo("add", 2, args, 7),
        energy_quanta_used=EnergyQuanta(0),
        total_host_execution_duration=TimeDuration(1234),
    )


def test_vector_12_1_identity_token() -> None:
    msg = IdentityToken(IDENT, "x.y.z", CONN)
    assert len(VECTOR_12_1) == 59
    for compression in Compression:  # under the threshold every mode sends tag 0
        assert encode_server_frame(msg, compression) == VECTOR_12_1
    assert decode_server_frame(VECTOR_12_1) == msg
    assert encode_server_message_json(msg) == JSON_12_1
    assert decode_server_message_json(JSON_12_1) == msg


def test_vector_12_2_transaction_update() -> None:
    msg = _transaction_update((BsatnRowList.EMPTY, BsatnRowList.from_rows([ALICE_ROW])), ALICE_ARGS)
    assert len(VECTOR_12_2) == 171
    assert encode_server_frame(msg, Compression.BROTLI) == VECTOR_12_2
    decoded = decode_server_frame(VECTOR_12_2)
    assert decoded == msg
    assert isinstance(decoded.status, Committed)  # type: ignore[union-attr]
    table = decoded.status.database_update.tables[0]  # type: ignore[union-attr]
    assert table.num_rows == 1
    assert table.updates[0].inserts.size_hint == FixedSize(13)  # type: ignore[union-attr]
    assert list(table.updates[0].inserts) == [ALICE_ROW]


def test_vector_12_2_json() -> None:
    # The host builds the JSON form from the same BSATN rows and args with the row helpers.
    rows = ((), rows_to_json(PERSON, BsatnRowList.from_rows([ALICE_ROW])))
    msg = _transaction_update(rows, value_to_json(ADD_PARAMS, ALICE_ARGS))
    assert encode_server_message_json(msg) == JSON_12_2
    assert decode_server_message_json(JSON_12_2) == msg
    assert json_rows_to_bsatn(PERSON, rows[1]) == BsatnRowList.from_rows([ALICE_ROW])


# ---------------------------------------------------------------------------------------------
# Strategies: every message, for one format ("bsatn" or "json")
# ---------------------------------------------------------------------------------------------

u8 = st.integers(0, 255)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
u128 = st.integers(0, 2**128 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
texts = st.text(max_size=8)
query_ids = st.builds(QueryId, u32)
timestamps = st.builds(Timestamp, i64)
durations = st.builds(TimeDuration, i64)


def _tuples(elem: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(elem, max_size=max_size).map(tuple)


def _bsatn_row_lists() -> st.SearchStrategy[BsatnRowList]:
    mixed = st.lists(st.binary(max_size=6), max_size=4)
    same = st.integers(0, 5).flatmap(lambda n: st.lists(st.binary(min_size=n, max_size=n), max_size=4))
    return st.one_of(mixed, same).map(BsatnRowList.from_rows)


def _row_lists(fmt: str) -> st.SearchStrategy[Any]:
    return _bsatn_row_lists() if fmt == "bsatn" else _tuples(texts)


def _singles(fmt: str) -> st.SearchStrategy[Any]:
    return st.binary(max_size=10) if fmt == "bsatn" else texts


def _db_updates(fmt: str) -> st.SearchStrategy[DatabaseUpdate]:
    rows = _row_lists(fmt)
    query_updates = st.builds(QueryUpdate, rows, rows)
    tables = st.builds(TableUpdate, u32, texts, _tuples(query_updates, 2))
    return st.builds(DatabaseUpdate, _tuples(tables, 2))


def _table_updates(fmt: str) -> st.SearchStrategy[TableUpdate]:
    rows = _row_lists(fmt)
    return st.builds(TableUpdate, u32, texts, _tuples(st.builds(QueryUpdate, rows, rows), 2))


def server_strategies(fmt: str) -> dict[type, st.SearchStrategy[Any]]:
    """One strategy per server message type."""
    db = _db_updates(fmt)
    single = _singles(fmt)
    statuses = st.one_of(st.builds(Committed, db), st.builds(Failed, texts), st.just(OutOfEnergy()))
    procedure_statuses = st.one_of(
        st.builds(Returned, single), st.just(OutOfEnergy()), st.builds(InternalError, texts)
    )
    subscribe_rows = st.builds(SubscribeRows, u32, texts, _table_updates(fmt))
    return {
        InitialSubscription: st.builds(InitialSubscription, db, u32, durations),
        TransactionUpdate: st.builds(
            TransactionUpdate,
            statuses,
            timestamps,
            st.builds(Identity, st.integers(0, 2**256 - 1)),
            st.builds(ConnectionId, u128),
            st.builds(ReducerCallInfo, texts, u32, single, u32),
            st.builds(EnergyQuanta, u128),
            durations,
        ),
        TransactionUpdateLight: st.builds(TransactionUpdateLight, u32, db),
        IdentityToken: st.builds(
            IdentityToken,
            st.builds(Identity, st.integers(0, 2**256 - 1)),
            texts,
            st.builds(ConnectionId, u128),
        ),
        OneOffQueryResponse: st.builds(
            OneOffQueryResponse,
            st.binary(max_size=16),
            st.none() | texts,
            _tuples(st.builds(OneOffTable, texts, _row_lists(fmt)), 2),
            durations,
        ),
        SubscribeApplied: st.builds(SubscribeApplied, u32, u64, query_ids, subscribe_rows),
        UnsubscribeApplied: st.builds(UnsubscribeApplied, u32, u64, query_ids, subscribe_rows),
        SubscriptionError: st.builds(
            SubscriptionError, u64, st.none() | u32, st.none() | u32, st.none() | u32, texts
        ),
        SubscribeMultiApplied: st.builds(SubscribeMultiApplied, u32, u64, query_ids, db),
        UnsubscribeMultiApplied: st.builds(UnsubscribeMultiApplied, u32, u64, query_ids, db),
        ProcedureResult: st.builds(ProcedureResult, procedure_statuses, timestamps, durations, u32),
    }


def client_strategies(fmt: str) -> dict[type, st.SearchStrategy[Any]]:
    """One strategy per client message type."""
    single = _singles(fmt)
    return {
        CallReducer: st.builds(CallReducer, texts, single, u32, st.sampled_from(CallReducerFlags)),
        Subscribe: st.builds(Subscribe, _tuples(texts), u32),
        OneOffQuery: st.builds(OneOffQuery, st.binary(max_size=16), texts),
        SubscribeSingle: st.builds(SubscribeSingle, texts, u32, query_ids),
        SubscribeMulti: st.builds(SubscribeMulti, _tuples(texts), u32, query_ids),
        Unsubscribe: st.builds(Unsubscribe, u32, query_ids),
        UnsubscribeMulti: st.builds(UnsubscribeMulti, u32, query_ids),
        CallProcedure: st.builds(CallProcedure, texts, single, u32),
    }


SERVER_TYPES = list(server_strategies("bsatn"))
CLIENT_TYPES = list(client_strategies("bsatn"))
ROUND_TRIP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_message_type_is_covered() -> None:
    import sats.ws_v1 as ws

    assert set(SERVER_TYPES) == set(ws.ServerMessage.__args__)  # type: ignore[attr-defined]
    assert set(CLIENT_TYPES) == set(ws.ClientMessage.__args__)  # type: ignore[attr-defined]
    assert set(server_strategies("json")) == set(SERVER_TYPES)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def _raw_table_updates(v: Any) -> Iterator[tuple[Any, ...]]:
    """The TableUpdate values inside a decoded SATS value: the only 4-tuples (u32, str, u64, list)."""
    if isinstance(v, SumValue):
        yield from _raw_table_updates(v.value)
    elif isinstance(v, (tuple, list)):
        if isinstance(v, tuple) and len(v) == 4 and isinstance(v[1], str) and isinstance(v[3], list):
            yield v
        for x in v:
            yield from _raw_table_updates(x)


def _raw_row_count(row_list: Any) -> int:
    (tag, payload), data = row_list
    return len(data) // payload if tag == 0 else len(payload)


CODECS: dict[tuple[str, str], tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    ("server", "bsatn"): (encode_server_message_bsatn, decode_server_message_bsatn),
    ("server", "json"): (encode_server_message_json, decode_server_message_json),
    ("client", "bsatn"): (encode_client_message_bsatn, decode_client_message_bsatn),
    ("client", "json"): (encode_client_message_json, decode_client_message_json),
}
STRATEGIES = {"server": server_strategies, "client": client_strategies}
ROUND_TRIP_CASES = [
    (direction, fmt, kind)
    for direction, kinds in (("server", SERVER_TYPES), ("client", CLIENT_TYPES))
    for fmt in ("bsatn", "json")
    for kind in kinds
]


@pytest.mark.parametrize(
    ("direction", "fmt", "kind"), ROUND_TRIP_CASES, ids=lambda x: x.__name__ if isinstance(x, type) else x
)
@ROUND_TRIP
@given(data=st.data())
def test_round_trip(direction: str, fmt: str, kind: type, data: st.DataObject) -> None:
    msg = data.draw(STRATEGIES[direction](fmt)[kind])
    encode, decode = CODECS[direction, fmt]
    encoded = encode(msg)
    decoded = decode(encoded)
    assert decoded == msg
    assert encode(decoded) == encoded
    if fmt == "json":
        assert list(json.loads(encoded)) == [kind.__name__]  # {"Variant": {fields}}
    elif direction == "server":
        # Decoding drops num_rows (it is derived), so check it on the schema codec's raw value.
        for _table_id, _name, num_rows, updates in _raw_table_updates(
            _BSATN.server_codec.decode_all(encoded)
        ):
            assert num_rows == sum(
                _raw_row_count(qu.value[0]) + _raw_row_count(qu.value[1]) for qu in updates
            )
        for compression in Compression:
            assert decode_server_frame(encode_server_frame(msg, compression)) == msg


# ---------------------------------------------------------------------------------------------
# Exact shapes
# ---------------------------------------------------------------------------------------------


def test_client_bsatn_layout() -> None:
    msg = CallReducer("add", ALICE_ARGS, 7, CallReducerFlags.NO_SUCCESS_NOTIFY)
    assert encode_client_message_bsatn(msg) == (
        b"\x00" + b"\x03\x00\x00\x00add" + b"\x09\x00\x00\x00" + ALICE_ARGS + b"\x07\x00\x00\x00" + b"\x01"
    )
    assert encode_client_message_bsatn(UnsubscribeMulti(1, QueryId(2))) == bytes.fromhex(
        "06 01000000 02000000"
    )
    assert encode_client_message_bsatn(OneOffQuery(b"\xab", "q")) == bytes.fromhex(
        "02 01000000 ab 01000000 71"
    )


def test_client_json_shapes() -> None:
    assert (
        encode_client_message_json(CallReducer("add", '["Alice"]', 7))
        == '{"CallReducer":{"reducer":"add","args":"[\\"Alice\\"]","request_id":7,"flags":0}}'
    )
    assert (
        encode_client_message_json(Subscribe(("SELECT * FROM t",), 0))
        == '{"Subscribe":{"query_strings":["SELECT * FROM t"],"request_id":0}}'
    )
    assert (
        encode_client_message_json(OneOffQuery(b"\x01\xff", "q"))
        == '{"OneOffQuery":{"message_id":"01ff","query_string":"q"}}'
    )
    assert (
        encode_client_message_json(Unsubscribe(3, QueryId(4)))
        == '{"Unsubscribe":{"request_id":3,"query_id":{"id":4}}}'
    )


def test_client_json_accepts_every_sats_form() -> None:
    # message_id as hex (either case) or an array of numbers.
    for text in (
        '{"OneOffQuery":{"message_id":"01FF","query_string":"q"}}',
        '{"OneOffQuery":{"message_id":[1,255],"query_string":"q"}}',
        '{"OneOffQuery":{"query_string":"q","message_id":"01ff"}}',  # any key order
        '{"OneOffQuery":[[1,255],"q"]}',  # products positionally
        '{"2":{"message_id":"01ff","query_string":"q"}}',  # variant by tag
        '["OneOffQuery",{"message_id":"01ff","query_string":"q"}]',  # [name, payload]
    ):
        assert decode_client_message_json(text) == OneOffQuery(b"\x01\xff", "q")
    assert decode_client_message_json(
        '{"CallReducer":{"reducer":"r","args":"{\\"a\\":1}","request_id":1,"flags":1}}'
    ) == CallReducer("r", '{"a":1}', 1, CallReducerFlags.NO_SUCCESS_NOTIFY)


def test_server_json_shapes() -> None:
    failed = TransactionUpdate(
        OutOfEnergy(),
        Timestamp(0),
        Identity.ZERO,
        ConnectionId.ZERO,
        ReducerCallInfo("r", 0, "[]", 0),
        EnergyQuanta(5),
        TimeDuration(0),
    )
    obj = json.loads(encode_server_message_json(failed))["TransactionUpdate"]
    assert obj["status"] == {"OutOfEnergy": []}
    assert obj["caller_identity"] == {"__identity__": "0x0"}
    assert obj["caller_connection_id"] == {"__connection_id__": 0}
    assert obj["energy_quanta_used"] == {"quanta": 5}
    assert json.loads(encode_server_message_json(SubscriptionError(1, None, 2, None, "bad"))) == {
        "SubscriptionError": {
            "total_host_execution_duration_micros": 1,
            "request_id": {"none": []},
            "query_id": {"some": 2},
            "table_id": {"none": []},
            "error": "bad",
        }
    }
    big = 2**128 - 1
    text = encode_server_message_json(OneOffQueryResponse(b"\x00\x10", "e", (), TimeDuration(-1)))
    assert text == (
        '{"OneOffQueryResponse":{"message_id":"0010","error":{"some":"e"},"tables":[],'
        '"total_host_execution_duration":{"__time_duration_micros__":-1}}}'
    )
    text = encode_server_message_json(IdentityToken(Identity(1), "t", ConnectionId(big)))
    assert f'"__connection_id__":{big}' in text and '"__identity__":"0x1"' in text
    assert json.loads(
        encode_server_message_json(ProcedureResult(Returned("5"), Timestamp(0), TimeDuration(0), 1))
    )["ProcedureResult"]["status"] == {"Returned": "5"}


def test_num_rows_is_derived() -> None:
    rows = BsatnRowList.from_rows([b"a", b"b", b"c"])
    table = TableUpdate(1, "t", (QueryUpdate(rows, BsatnRowList.EMPTY), QueryUpdate(rows, rows)))
    assert table.num_rows == 9
    assert TableUpdate(1, "t", (QueryUpdate(("x",), ()),)).num_rows == 1


# ---------------------------------------------------------------------------------------------
# RowSizeHint
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "hint"),
    [
        ([], RowOffsets(())),
        ([b"abc"], FixedSize(3)),
        ([b"ab", b"cd", b"ef"], FixedSize(2)),
        ([b"ab", b"c"], RowOffsets((0, 2))),
        ([b"a", b"bc", b"", b"d"], RowOffsets((0, 1, 3, 3))),
        ([b"", b""], RowOffsets((0, 0))),  # zero-size rows never use FixedSize
        ([b"x" * 65535] * 2, FixedSize(65535)),
        ([b"x" * 65536] * 2, RowOffsets((0, 65536))),  # too big for a u16
    ],
)
def test_row_size_hint_choice(rows: list[bytes], hint: Any) -> None:
    packed = BsatnRowList.from_rows(rows)
    assert packed.size_hint == hint
    assert packed.rows_data == b"".join(rows)
    assert list(packed) == rows
    assert len(packed) == len(rows)


@given(st.lists(st.binary(max_size=5), max_size=8))
def test_row_list_iteration_round_trips(rows: list[bytes]) -> None:
    packed = BsatnRowList.from_rows(rows)
    assert list(packed) == rows
    assert len(packed) == len(rows)
    # Both hints describe the same rows; RowOffsets is always a valid alternative.
    offsets, pos = [], 0
    for r in rows:
        offsets.append(pos)
        pos += len(r)
    assert list(BsatnRowList(RowOffsets(tuple(offsets)), packed.rows_data)) == rows


@pytest.mark.parametrize(
    ("hint", "data"),
    [
        (FixedSize(0), b""),
        (FixedSize(65536), b""),
        (FixedSize(3), b"abcd"),
        (RowOffsets(()), b"a"),
        (RowOffsets((1,)), b"ab"),
        (RowOffsets((0, 2, 1)), b"abc"),
        (RowOffsets((0, 4)), b"abc"),
    ],
)
def test_inconsistent_row_lists(hint: Any, data: bytes) -> None:
    with pytest.raises(EncodeError):
        BsatnRowList(hint, data)
    # The same list on the wire is a protocol error. Build the bytes by hand.
    if isinstance(hint, FixedSize):
        wire_hint = b"\x00" + struct.pack("<H", hint.size % 65536)
    else:
        wire_hint = b"\x01" + struct.pack(f"<I{len(hint.offsets)}Q", len(hint.offsets), *hint.offsets)
    row_list = wire_hint + struct.pack("<I", len(data)) + data
    frame = (
        bytes([8])  # SubscribeMultiApplied
        + bytes(4 + 8 + 4)  # request_id, duration, query_id
        + struct.pack("<I", 1)  # one table
        + struct.pack("<I", 1)
        + struct.pack("<I", 1)
        + b"t"
        + struct.pack("<Q", 0)
        + struct.pack("<I", 1)  # one update
        + b"\x00"
        + BSATN_EMPTY_LIST
        + row_list
    )
    with pytest.raises(WsProtocolError):
        decode_server_message_bsatn(frame)


BSATN_EMPTY_LIST = b"\x01" + bytes(4) + bytes(4)


def test_decode_row_size_hint_from_wire() -> None:
    msg = TransactionUpdateLight(
        1,
        DatabaseUpdate(
            (
                TableUpdate(
                    1, "t", (QueryUpdate(BsatnRowList(RowOffsets((0, 1, 3)), b"abcd"), BsatnRowList.EMPTY),)
                ),
            )
        ),
    )
    decoded = decode_server_message_bsatn(encode_server_message_bsatn(msg))
    assert list(decoded.update.tables[0].updates[0].deletes) == [b"a", b"bc", b"d"]  # type: ignore[union-attr, arg-type]


# ---------------------------------------------------------------------------------------------
# Compression envelope and compressed query updates
# ---------------------------------------------------------------------------------------------


def test_compression_threshold() -> None:
    small = bytes(range(256)) * 4  # exactly 1024 bytes: never compressed
    assert len(small) == COMPRESSION_THRESHOLD
    for c in Compression:
        assert frame_server_message(small, c) == b"\x00" + small
    big = small + b"!"
    assert frame_server_message(big, Compression.NONE) == b"\x00" + big
    brotli_frame = frame_server_message(big, Compression.BROTLI)
    assert brotli_frame[0] == 1 and brotli.decompress(brotli_frame[1:]) == big
    gzip_frame = frame_server_message(big, Compression.GZIP)
    assert gzip_frame[0] == 2 and gzip.decompress(gzip_frame[1:]) == big
    for frame in (b"\x00" + big, brotli_frame, gzip_frame):
        assert unframe_server_message(frame) == big


def test_compression_parses_query_parameter() -> None:
    assert [Compression(s) for s in ("None", "Brotli", "Gzip")] == [
        Compression.NONE,
        Compression.BROTLI,
        Compression.GZIP,
    ]
    with pytest.raises(ValueError):
        Compression("gzip")


def test_large_message_is_compressed_and_round_trips() -> None:
    rows = BsatnRowList.from_rows([i.to_bytes(4, "little") * 8 for i in range(200)])
    msg = SubscribeMultiApplied(
        1, 2, QueryId(3), DatabaseUpdate((TableUpdate(9, "t", (QueryUpdate(BsatnRowList.EMPTY, rows),)),))
    )
    raw = encode_server_message_bsatn(msg)
    assert len(raw) > COMPRESSION_THRESHOLD
    for c, tag in ((Compression.NONE, 0), (Compression.BROTLI, 1), (Compression.GZIP, 2)):
        frame = encode_server_frame(msg, c)
        assert frame[0] == tag
        assert decode_server_frame(frame) == msg
    assert len(encode_server_frame(msg, Compression.BROTLI)) < len(raw)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x03" + b"abc",
        b"\xff",
        b"\x01not brotli at all",
        b"\x02not gzip",
        b"\x01" + brotli.compress(b"x" * 5000)[:-2],  # truncated
        b"\x02" + gzip.compress(b"x" * 5000, mtime=0)[:-3],
        b"\x02" + gzip.compress(b"x", mtime=0) + b"trailing",
    ],
)
def test_bad_frames(frame: bytes) -> None:
    with pytest.raises(WsProtocolError):
        unframe_server_message(frame)


@pytest.mark.parametrize("tag", [1, 2])
def test_decompression_limit(tag: int) -> None:
    payload = bytes(300_000)
    body = brotli.compress(payload) if tag == 1 else gzip.compress(payload)
    assert unframe_server_message(bytes([tag]) + body, max_size=300_000) == payload
    with pytest.raises(WsProtocolError, match="more than"):
        unframe_server_message(bytes([tag]) + body, max_size=200_000)


def _with_compressed_update(
    msg: TransactionUpdateLight, tag: int, compress: Callable[[bytes], bytes]
) -> bytes:
    """Re-encode a one-table, one-update TransactionUpdateLight with its QueryUpdate compressed.

    The message ends with the update, so everything after the Uncompressed tag is the
    QueryUpdate's BSATN.
    """
    raw = encode_server_message_bsatn(msg)
    qu = encode_server_message_bsatn(
        TransactionUpdateLight(msg.request_id, DatabaseUpdate((TableUpdate(1, "t", ()),)))
    )
    # Same prefix up to the updates count; the uncompressed message adds the update itself.
    prefix_len = len(qu)
    prefix = raw[: prefix_len - 4] + struct.pack("<I", 1)
    assert raw[prefix_len] == 0  # Uncompressed
    body = raw[prefix_len + 1 :]
    packed = compress(body)
    return prefix + bytes([tag]) + struct.pack("<I", len(packed)) + packed


@pytest.mark.parametrize(
    ("tag", "compress"),
    [(1, lambda b: brotli.compress(b, quality=1)), (2, lambda b: gzip.compress(b, compresslevel=1))],
    ids=["brotli", "gzip"],
)
def test_compressed_query_updates_decode(tag: int, compress: Callable[[bytes], bytes]) -> None:
    inserts = BsatnRowList.from_rows([b"row-one", b"row-2", b""])
    deletes = BsatnRowList.from_rows([b"abcd"] * 3)
    msg = TransactionUpdateLight(5, DatabaseUpdate((TableUpdate(1, "t", (QueryUpdate(deletes, inserts),)),)))
    wire = _with_compressed_update(msg, tag, compress)
    assert wire != encode_server_message_bsatn(msg)
    decoded = decode_server_message_bsatn(wire)
    assert decoded == msg
    # Re-encoding emits Uncompressed.
    assert encode_server_message_bsatn(decoded) == encode_server_message_bsatn(msg)
    # Corrupt compressed payloads and bad BSATN inside them are protocol errors.
    with pytest.raises(WsProtocolError):
        decode_server_message_bsatn(_with_compressed_update(msg, tag, lambda b: b"\x00garbage"))
    with pytest.raises(WsProtocolError, match="compressed query update"):
        decode_server_message_bsatn(_with_compressed_update(msg, tag, lambda b: compress(b[:-1])))


# ---------------------------------------------------------------------------------------------
# Errors: encoding the wrong shape, malformed input
# ---------------------------------------------------------------------------------------------


def test_encode_errors() -> None:
    json_rows = TransactionUpdateLight(0, DatabaseUpdate((TableUpdate(1, "t", (QueryUpdate(("{}",), ()),)),)))
    with pytest.raises(EncodeError, match="BsatnRowList"):
        encode_server_message_bsatn(json_rows)
    bsatn_rows = TransactionUpdateLight(
        0, DatabaseUpdate((TableUpdate(1, "t", (QueryUpdate(BsatnRowList.EMPTY, ()),)),))
    )
    with pytest.raises(EncodeError, match="JSON texts"):
        encode_server_message_json(bsatn_rows)
    with pytest.raises(EncodeError, match="JSON text"):
        encode_client_message_json(CallReducer("r", b"", 0))
    with pytest.raises(EncodeError, match="bytes"):
        encode_client_message_bsatn(CallReducer("r", "[]", 0))
    with pytest.raises(EncodeError):
        encode_client_message_bsatn(CallReducer("r", b"", 0, 2))  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_client_message_bsatn(CallReducer("r", b"", 2**32))
    with pytest.raises(EncodeError, match="not a server message"):
        encode_server_message_bsatn(CallReducer("r", b"", 0))  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="not a client message"):
        encode_client_message_json(IdentityToken(IDENT, "", CONN))  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_server_message_bsatn(IdentityToken(IDENT, "", 5))  # type: ignore[arg-type]


def test_flags_other_than_defined_are_decode_errors() -> None:
    good = encode_client_message_bsatn(CallReducer("r", b"", 0, CallReducerFlags.NO_SUCCESS_NOTIFY))
    assert decode_client_message_bsatn(good).flags is CallReducerFlags.NO_SUCCESS_NOTIFY  # type: ignore[union-attr]
    with pytest.raises(WsProtocolError, match="call reducer flags 2"):
        decode_client_message_bsatn(good[:-1] + b"\x02")
    proc = encode_client_message_bsatn(CallProcedure("p", b"", 0))
    assert decode_client_message_bsatn(proc).flags is CallProcedureFlags.DEFAULT  # type: ignore[union-attr]
    with pytest.raises(WsProtocolError, match="call procedure flags 1"):
        decode_client_message_bsatn(proc[:-1] + b"\x01")
    with pytest.raises(WsProtocolError, match="flags 7"):
        decode_client_message_json('{"CallReducer":{"reducer":"r","args":"[]","request_id":0,"flags":7}}')


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "null",
        "[]",
        "{}",
        '{"Nope":{}}',
        '{"Subscribe":{"query_strings":["a"]}}',  # missing field
        '{"Subscribe":{"query_strings":["a"],"request_id":0,"extra":1}}',
        '{"Subscribe":{"query_strings":"a","request_id":0}}',
        '{"Subscribe":{"query_strings":[],"request_id":-1}}',
        '{"Subscribe":{"query_strings":[],"request_id":4294967296}}',
        '{"CallReducer":{"reducer":"r","args":["x"],"request_id":0,"flags":0}}',  # args must be a string
        '{"OneOffQuery":{"message_id":"0x01","query_string":"q"}}',
        '{"OneOffQuery":{"message_id":"abc","query_string":"q"}}',
        '{"Unsubscribe":{"request_id":0,"query_id":5}}',
        '{"Subscribe":{"query_strings":[],"request_id":0},"Unsubscribe":{}}',
        '{"Subscribe":{"query_strings":[],"request_id":0,"request_id":1}}',  # duplicate key
    ],
)
def test_malformed_client_json(text: str) -> None:
    with pytest.raises(WsProtocolError):
        decode_client_message_json(text)


def test_error_types_and_text() -> None:
    assert issubclass(WsProtocolError, DecodeError)
    with pytest.raises(WsProtocolError) as info:
        decode_client_message_bsatn(b"\x09")
    assert "invalid sum tag 9" in str(info.value)
    with pytest.raises(WsProtocolError) as info:
        decode_client_message_bsatn(encode_client_message_bsatn(Unsubscribe(1, QueryId(2))) + b"\x00")
    assert "trailing" in str(info.value)
    assert info.value.close_reason == str(info.value)
    with pytest.raises(WsProtocolError) as info:
        decode_client_message_json('{"Nope€":1}')
    assert len(str(info.value).encode()) > MAX_CLOSE_REASON
    reason = info.value.close_reason
    assert str(info.value).startswith(reason) and len(reason.encode()) <= MAX_CLOSE_REASON


def _some_bsatn_messages() -> st.SearchStrategy[bytes]:
    servers = st.one_of(*server_strategies("bsatn").values()).map(encode_server_message_bsatn)
    clients = st.one_of(*client_strategies("bsatn").values()).map(encode_client_message_bsatn)
    return servers | clients


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decodes_or_protocol_error(fn: Callable[[Any], Any], data: Any) -> None:
    try:
        fn(data)
    except WsProtocolError:
        pass


@FUZZ
@given(
    st.one_of(*server_strategies("bsatn").values()).map(
        lambda m: (decode_server_message_bsatn, encode_server_message_bsatn(m))
    )
    | st.one_of(*client_strategies("bsatn").values()).map(
        lambda m: (decode_client_message_bsatn, encode_client_message_bsatn(m))
    )
)
def test_every_truncation_is_a_protocol_error(case: tuple[Callable[[bytes], Any], bytes]) -> None:
    # Decoding is deterministic and must consume everything, so no strict prefix of a
    # message is a message of the same direction.
    decode, encoded = case
    for cut in range(len(encoded)):
        with pytest.raises(WsProtocolError):
            decode(encoded[:cut])


@FUZZ
@given(_some_bsatn_messages(), st.data())
def test_mutated_bsatn_decodes_or_fails_cleanly(encoded: bytes, data: st.DataObject) -> None:
    mutated = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] = data.draw(u8)
    for fn in (decode_server_message_bsatn, decode_client_message_bsatn, decode_server_frame):
        _decodes_or_protocol_error(fn, bytes(mutated))


@FUZZ
@given(st.binary(max_size=80))
def test_random_bytes_decode_or_fail_cleanly(data: bytes) -> None:
    for fn in (
        decode_server_message_bsatn,
        decode_client_message_bsatn,
        decode_server_frame,
        unframe_server_message,
    ):
        _decodes_or_protocol_error(fn, data)
    for prefix in (b"\x01", b"\x02"):  # random "compressed" frames
        _decodes_or_protocol_error(decode_server_frame, prefix + data)


_JSON_ATOMS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), texts, st.floats(allow_nan=False)
)
_JSON_VALUES = st.recursive(
    _JSON_ATOMS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["id", "flags", "args", "x", "some", "0"]), inner, max_size=3)
    ),
    max_leaves=10,
)


@FUZZ
@given(st.data())
def test_random_json_decodes_or_fails_cleanly(data: st.DataObject) -> None:
    variant = data.draw(st.sampled_from([t.__name__ for t in SERVER_TYPES + CLIENT_TYPES] + ["0", "7", "99"]))
    text = json.dumps({variant: data.draw(_JSON_VALUES)})
    for fn in (decode_server_message_json, decode_client_message_json):
        _decodes_or_protocol_error(fn, text)
    _decodes_or_protocol_error(decode_client_message_json, data.draw(st.text(max_size=20)))


@FUZZ
@given(st.one_of(*client_strategies("json").values()).map(encode_client_message_json), st.data())
def test_mutated_json_decodes_or_fails_cleanly(text: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(text) - 1))
    mutated = text[:i] + data.draw(st.sampled_from(['"', "{", "]", "1", ",", "x", ""])) + text[i + 1 :]
    _decodes_or_protocol_error(decode_client_message_json, mutated)
    _decodes_or_protocol_error(decode_client_message_json, text[:i])


# ---------------------------------------------------------------------------------------------
# Row helpers
# ---------------------------------------------------------------------------------------------


ROW = product(
    ("id", U32),
    ("owner", product(("__identity__", U256))),
    ("nick", option(STRING)),
    ("pos", product(("x", I32), ("y", I32))),
    ("tags", ArrayType(product(("k", STRING), ("v", BOOL)))),
    ("kind", sum_type(("A", product()), ("B", F64))),
)
ROW_VALUE = (7, (1,), (0, "al"), (-1, 2), [("t", True)], (1, 0.5))


def test_row_json_is_flavour_d_and_parses_back() -> None:
    data = codec_for(ROW).encode(ROW_VALUE)
    text = row_to_json(ROW, data)
    assert text == (
        '{"id":7,"owner":{"__identity__":"0x1"},"nick":[0,"al"],"pos":{"x":-1,"y":2},'
        '"tags":[["t",true]],"kind":[1,0.5]}'
    )
    assert json_to_bsatn(ROW, text) == data
    # The positional (flavour C) form and sums by name parse to the same row.
    assert json_to_bsatn(ROW, value_to_json(ROW, data)) == data
    assert json_to_bsatn(ROW, '[7,["0x1"],{"some":"al"},[-1,2],[{"k":"t","v":true}],{"B":0.5}]') == data
    assert rows_to_json(ROW, BsatnRowList.from_rows([data, data])) == (text, text)
    with pytest.raises(WsProtocolError):
        json_to_bsatn(ROW, '{"id":7}')
    with pytest.raises(WsProtocolError):
        row_to_json(ROW, data[:-1])
    with pytest.raises(WsProtocolError):
        rows_to_json(ROW, [data + b"\x00"])


def _has_f32(case: tuple[Any, Any, Any]) -> bool:
    ts, ty, _ = case
    return "F32" in repr(ty) or any("F32" in repr(t) for t in ts.types)


@settings(max_examples=60, deadline=None)
@given(types_and_values(named=True, allow_nan=False))
def test_row_json_round_trips(case: tuple[Any, Any, Any]) -> None:
    ts, ty, value = case
    data = codec_for(ty, ts).encode(value)
    assert json_to_bsatn(ty, row_to_json(ty, data, ts), ts) == data
    assert json_to_bsatn(ty, value_to_json(ty, data, ts), ts) == data


def test_row_json_f32_near_max() -> None:
    ty = product(("f", F32))
    data = codec_for(ty).encode((3.4025001647762064e38,))
    assert json_to_bsatn(ty, row_to_json(ty, data)) == data
