"""TxRecord: the commit-log payload codec, and the engine's piecewise encoding of the same bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostnode.txdata import TableChanges, TxData
from hostnode.txrecord import RecordKind, TxRecord, encode_record, record_head, record_parts, record_txdata
from sats.errors import DecodeError

records = st.builds(
    TxRecord,
    st.sampled_from(list(RecordKind)),
    st.text(max_size=20),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=16, max_size=16),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.binary(max_size=40),
    st.binary(max_size=40),
    st.binary(max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(records)
def test_round_trip_and_pieces_give_the_same_bytes(rec: TxRecord) -> None:
    data = rec.encode()
    assert TxRecord.decode(data) == rec
    assert record_txdata(data) == (rec.kind, rec.txdata)  # what a follower applies
    parts = record_parts(
        record_head(rec.kind, rec.reducer), rec.caller_identity, rec.connection_id, rec.timestamp_micros, rec.args,
        rec.program,
    )  # fmt: skip
    assert b"".join([*parts, rec.txdata]) == data


def test_engine_path_matches_the_codec() -> None:
    td = TxData({7: TableChanges([b"new"], [b"old"], [9])})
    parts = record_parts(record_head(RecordKind.REDUCER, "transfer"), bytes(range(32)), bytes(16), 1_700_000, b"ab", b"")
    td.encode_into(parts)
    payload = b"".join(parts)
    assert payload == encode_record(RecordKind.REDUCER, "transfer", bytes(range(32)), bytes(16), 1_700_000, b"ab", b"", td.encode())
    rec = TxRecord.decode(payload)
    assert (rec.reducer, rec.args, rec.program, TxData.decode(rec.txdata)) == ("transfer", b"ab", b"", td)


def test_truncated_record_is_a_decode_error() -> None:
    data = encode_record(RecordKind.INSTALL, "", bytes(32), bytes(16), 0, b"", b"program", b"")
    with pytest.raises(DecodeError):
        TxRecord.decode(data[:-3])
    with pytest.raises(DecodeError, match="truncated"):
        record_txdata(data[:-3])
    with pytest.raises(DecodeError, match="version 9"):
        record_txdata(b"\x09" + data[1:])
    with pytest.raises(DecodeError):
        record_txdata(data[:5])
