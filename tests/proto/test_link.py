"""The split standalone server's link format (proto/link.py): every event survives a round trip in
order, and a batch that does not parse is refused with a message naming what is wrong."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto import link

CONNECT = link.Connect(
    database=bytes(range(32)), identity=bytes(range(32, 64)), token="a.b.c", connection_id=(1 << 127) + 5,
    json=True, compression="Gzip", light=True, confirmed=False, jwt_payload=b'{"sub":"x\xc3\xa9"}',
)  # fmt: skip


def body_of(batch: link.Batch) -> bytes:
    data = batch.take()
    assert link.read_length(data[:4]) == len(data) - 4
    return data[4:]


def test_every_event_kind_round_trips_in_order() -> None:
    batch = link.Batch()
    batch.connect(7, CONNECT)
    batch.message(7, b"\x00\x01binary", False)
    batch.message(8, "héllo".encode(), True)
    batch.disconnect(8)
    batch.frame([7, 9, 11], b"update", False)
    batch.frame([], b"", True)
    batch.closed(9, 1008, "client too far behind — queue full")
    batch.request(link.REQUEST, 3, b'{"op":"metrics"}')
    batch.request(link.REPLY, 3, b"# metrics\n")
    batch.call(4, b"\x01" * 32, b"\x02" * 32, (5).to_bytes(16, "little"), "send_méssage", '["hi ✓"]')
    events = list(link.decode(body_of(batch)))
    assert events == [
        (link.CONNECT, 7, CONNECT),
        (link.MESSAGE, 7, b"\x00\x01binary", False),
        (link.MESSAGE, 8, "héllo".encode(), True),
        (link.DISCONNECT, 8),
        (link.FRAME, [7, 9, 11], b"update", False),
        (link.FRAME, [], b"", True),
        (link.CLOSED, 9, 1008, "client too far behind — queue full"),
        (link.REQUEST, 3, b'{"op":"metrics"}'),
        (link.REPLY, 3, b"# metrics\n"),
        (link.CALL, 4, b"\x01" * 32, b"\x02" * 32, (5).to_bytes(16, "little"), "send_méssage", '["hi ✓"]'),
    ]
    assert not batch and batch.size == 0  # take() emptied it
    assert list(link.decode(body_of(batch))) == []


@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=300), st.booleans()), max_size=40))
def test_messages_keep_their_bytes_and_order(messages: list[tuple[int, bytes, bool]]) -> None:
    batch = link.Batch()
    for ref, data, text in messages:
        batch.message(ref, data, text)
    assert batch.size == sum(14 + len(d) for _, d, _ in messages)
    assert [(ref, data, text) for _, ref, data, text in link.decode(body_of(batch))] == messages


def test_a_connect_without_a_token_payload_round_trips() -> None:
    c = link.Connect(
        database=b"\x01" * 32, identity=b"\x02" * 32, token="t", connection_id=1, json=False,
        compression="None", light=False, confirmed=True, jwt_payload=None,
    )  # fmt: skip
    assert link.Connect.from_json(c.to_json()) == c


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (bytes([99]) + b"\0" * 20, "unknown event kind 99 at byte 0"),
        (struct.pack("<BQBI", link.MESSAGE, 1, 0, 10) + b"short", "runs 5 bytes past the end"),
        (struct.pack("<BQ", link.MESSAGE, 1), "ends inside an event header"),
        (struct.pack("<BBII", link.FRAME, 0, 3, 0) + struct.pack("<Q", 1), "ends inside an event header"),
        (struct.pack("<BQI", link.CONNECT, 1, 2) + b"{}", "a CONNECT event does not parse: KeyError"),
        (struct.pack("<BQI", link.CONNECT, 1, 3) + b"{x}", "a CONNECT event does not parse"),
        (struct.pack("<BQ32s32s16sHI", link.CALL, 1, b"", b"", b"", 1, 2) + b"\xff[]", "not UTF-8"),
        (struct.pack("<BQ32s32s16sHI", link.CALL, 1, b"", b"", b"", 4, 2) + b"f[]", "runs 3 bytes past the end"),
    ],
)
def test_a_batch_that_does_not_parse_is_refused_naming_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(link.LinkError, match=problem):
        list(link.decode(body))


def test_a_batch_longer_than_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(link.LinkError, match="more than the limit"):
        link.read_length(struct.pack("<I", link.MAX_BATCH_BYTES + 1))
    assert link.read_length(struct.pack("<I", link.MAX_BATCH_BYTES)) == link.MAX_BATCH_BYTES


@given(
    outcome=st.sampled_from(["committed", "failed", "out_of_energy", "connect_rejected"]),
    message=st.text(),
    energy=st.integers(0, (1 << 64) - 1),
    duration=st.integers(0, (1 << 64) - 1),
)
def test_a_call_outcome_round_trips_without_json(outcome: str, message: str, energy: int, duration: int) -> None:
    body = link.encode_call_outcome(outcome, message, energy, duration)
    assert body is not None and body[0] == 0
    assert link.decode_call_outcome(body) == (outcome, message, energy, duration)


def test_a_call_outcome_past_64_bits_is_left_to_json_and_json_replies_are_not_outcomes() -> None:
    assert link.encode_call_outcome("committed", "", 1 << 64, 0) is None
    assert link.encode_call_outcome("committed", "", 0, -1) is None
    assert link.decode_call_outcome(b'{"ok": {"outcome": "committed"}}\n') is None
    assert link.decode_call_outcome(b'{"error": {"status": 404}}\n') is None
    assert link.decode_call_outcome(b"") is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\x00\x01", "does not parse"),
        (struct.pack("<BQQH", 0, 1, 2, 9) + b"commit", "runs past"),
        (struct.pack("<BQQH", 0, 1, 2, 1) + b"\xff", "does not parse"),
    ],
)
def test_a_call_outcome_that_does_not_parse_is_refused_naming_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(link.LinkError, match=problem):
        link.decode_call_outcome(body)
