"""TxData: the binary codec (round-trips, malformed input) and its speed on a small update."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostnode.schema import IndexSchema, ScheduleSchema, SequenceSchema, TableSchema
from hostnode.txdata import SchemaOp, SchemaOpKind, TableChanges, TxData
from loadtest.bench_txdata import best_micros_per_encode, two_row_update
from sats.errors import DecodeError
from sats.types import SCHEDULE_AT, STRING, U64, Ref, Typespace, product

ROW = product(("id", U64), ("name", STRING))
SCHED = product(("scheduled_id", U64), ("at", SCHEDULE_AT))

TABLE = TableSchema(
    table_id=4,
    name="tick",
    row_type=SCHED,
    typespace=Typespace([ROW, SCHED]),
    primary_key=0,
    indexes=[IndexSchema(9, "tick_scheduled_id_idx_btree", 4, (0,), "btree", True)],
    sequences=[SequenceSchema(3, "tick_scheduled_id_seq", 4, 0, 1, 1, (1 << 127) - 1, 1)],
    is_public=False,
    schedule=ScheduleSchema("tick_sched", "tick", 1),
)

rows = st.lists(st.binary(max_size=40), max_size=5)
table_changes = st.builds(
    lambda ins, dels, rids: TableChanges(ins, dels, rids[: len(ins)] + [0] * (len(ins) - len(rids))),
    rows,
    rows,
    st.lists(st.integers(0, (1 << 64) - 1), max_size=5),
)
put_meta_ops = st.builds(
    lambda k, v: SchemaOp(SchemaOpKind.PUT_META, key=k, value=v), st.binary(max_size=20), st.binary(max_size=20)
)
schema_ops = put_meta_ops | st.sampled_from(
    [
        SchemaOp(SchemaOpKind.CREATE_TABLE, table=TABLE),
        SchemaOp(
            SchemaOpKind.CREATE_TABLE,
            table=TableSchema(1, "t", product(("r", Ref(0))), Typespace([ROW])),
        ),
        SchemaOp(SchemaOpKind.DROP_TABLE, id=7),
        SchemaOp(SchemaOpKind.CREATE_INDEX, index=IndexSchema(2, "t_x", 1, (0, 1), "hash", False)),
        SchemaOp(SchemaOpKind.DROP_INDEX, id=(1 << 32) - 1),
    ]
)
txdatas = st.builds(
    TxData,
    st.dictionaries(st.integers(0, (1 << 32) - 1), table_changes, max_size=4),
    st.dictionaries(st.integers(0, (1 << 32) - 1), st.integers(-(1 << 127), (1 << 127) - 1), max_size=3),
    st.lists(schema_ops, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(txdatas)
def test_round_trip(td: TxData) -> None:
    data = td.encode()
    assert TxData.decode(data) == td
    assert TxData.decode(memoryview(data)) == td


@settings(max_examples=200, deadline=None)
@given(txdatas, st.data())
def test_truncation_and_garbage_are_decode_errors(td: TxData, data: st.DataObject) -> None:
    enc = td.encode()
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(DecodeError):
        TxData.decode(enc[:cut])
    with pytest.raises(DecodeError):
        TxData.decode(enc + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_leak_other_errors(data: bytes) -> None:
    try:
        TxData.decode(data)
    except DecodeError:
        pass


def test_empty_and_layout() -> None:
    assert TxData().is_empty()
    assert TxData().encode() == b"\x01" + bytes(12)
    td = TxData({5: TableChanges([b"ab"], [b"c"], [258])})
    assert td.encode() == (
        b"\x01\x01\x00\x00\x00"
        + b"\x05\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00"
        + (258).to_bytes(8, "little")
        + b"\x02\x00\x00\x00ab"
        + b"\x01\x00\x00\x00c"
        + bytes(8)
    )
    with pytest.raises(DecodeError):
        TxData.decode(b"\x02" + bytes(12))  # unknown version
    with pytest.raises(DecodeError):
        TxData.decode(b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09\x00\x00\x00\x00")  # bad op kind


def test_two_row_update_round_trips() -> None:
    """The commit of a two-row update (its encoding speed is measured by ``make bench``:
    loadtest/bench_txdata.py)."""
    td = two_row_update()
    assert TxData.decode(td.encode()) == td
    assert best_micros_per_encode(10, 1) > 0  # the benchmark itself runs


def test_put_meta_payload_must_hold_its_key() -> None:
    for payload in (b"", b"\x01\x00\x00", b"\x05\x00\x00\x00abc"):
        with pytest.raises(DecodeError):
            SchemaOp.from_payload(SchemaOpKind.PUT_META, payload)
    assert SchemaOp.from_payload(SchemaOpKind.PUT_META, b"\x01\x00\x00\x00kv") == SchemaOp(
        SchemaOpKind.PUT_META, key=b"k", value=b"v"
    )


def test_long_rows_and_many_tables_round_trip() -> None:
    # Past the encoder's lookup tables: 16+ tables, rows of 1 KiB and more.
    tables = {t: TableChanges([b"i" * (1020 + t)], [b"d" * (1030 - t)], [t]) for t in range(20)}
    td = TxData(tables, {1: -5}, [SchemaOp(SchemaOpKind.DROP_TABLE, id=3)])
    data = td.encode()
    assert data[:5] == b"\x01" + (20).to_bytes(4, "little")
    assert TxData.decode(data) == td
    parts = [b"head"]
    td.encode_into(parts)
    assert b"".join(parts) == b"head" + data


def test_mismatched_row_ids_are_refused() -> None:
    with pytest.raises(ValueError):
        TxData({1: TableChanges([b"a", b"b"], [], [1])}).encode()
