"""The transport benchmark in a tiny mode, and the parts it is built from.

A correctness check of ``loadtest.bench_transport`` — every candidate between two real processes
(a grpc.aio stream on 127.0.0.1, a unix socket, shared-memory rings) must carry every message
intact and in order per connection, and the report must be complete; plus the batch format, the
per-connection check and the ring on their own. Not a timed test: no threshold on any speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest import bench_transport
from loadtest.bench_transport import (
    BATCHES,
    END_FRAME,
    MODES,
    PREFIX,
    TRANSPORTS,
    BatchError,
    Ring,
    Tally,
    decode_batch,
    encode_batch,
    expected_digests,
)

TINY = ["--seconds", "0.1", "--warmup", "0", "--max-messages", "20000"]


def test_tiny_run_of_every_transport_carries_every_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    # A short --dir: the unix socket's path must fit sun_path, and pytest's tmp_path can be long.
    with tempfile.TemporaryDirectory(prefix="bt-") as short:
        code = bench_transport.main([*TINY, "--dir", short, "--json", str(out)])
        left = list(Path(short).iterdir())
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert code == 0, printed
    assert report["ok"] is True
    assert report["probe_start"]["best_ms"] > 0 and report["probe_end"]["best_ms"] > 0

    runs = {(r["transport"], r["batch"], r["mode"]): r for r in report["runs"]}
    assert set(runs) == {(t, b, m) for t in TRANSPORTS for b in BATCHES for m in MODES}
    for (transport, batch, mode), r in runs.items():
        # Checked against what was sent: every message (and, echoing, every reply) arrived intact,
        # once, in order within its connection.
        assert r["errors"] == [] and r["messages"] > 0 and r["messages"] % batch == 0, r
        assert r["rate"] > 0 and r["gateway_cpu_us"] > 0 and r["host_cpu_us"] > 0, r
        assert (r["rtt_p50_ms"] is None) == (mode == "oneway"), r
        assert f"| {transport} | {batch} | **" in printed
    assert "CPU probe" in printed and "FAILED" not in printed

    # Both processes were stopped and the temporary directory (the unix socket's) removed.
    assert len(report["host_pids"]) == len(TRANSPORTS)
    for pid in report["host_pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert left == []


def test_a_host_that_cannot_start_is_reported_and_the_run_fails(tmp_path: Path) -> None:
    # A socket path longer than a unix socket address can hold: refused before anything starts.
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    cfg = bench_transport.TransportConfig(transports=("unix",), batches=(8,), seconds=0.1, warmup=0,
                                          data_parent=str(deep))  # fmt: skip
    report = bench_transport.run_benchmark(cfg, log=lambda _line: None)
    assert not report.ok and report.runs == []
    assert any("longer than 107 bytes" in n for n in report.notes), report.notes
    assert list(deep.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--transport", "tcp"], "unknown transport tcp; the transports are grpc, unix, shm"),
        (["--batch", "0"], "--batch must be between 1 and 4096, got 0"),
        (["--seconds", "0", "--window", "0"], "--seconds, --window must be positive"),
        (["--batch", "512", "--ring-bytes", "4096"], "--ring-bytes must be at least"),
    ],
)
def test_bad_flags_are_refused_before_anything_runs(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_transport.main([*args, "--dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- the batch format ------------------------------------------------------------------------------

messages_st = st.lists(st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=300)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(messages_st)
def test_a_batch_decodes_to_the_messages_it_was_made_of(messages: list[tuple[int, bytes]]) -> None:
    frame = encode_batch(messages)
    (length,) = PREFIX.unpack_from(frame)
    assert length == len(frame) - PREFIX.size
    assert decode_batch(frame[PREFIX.size :]) == messages


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x01\x00", "a batch of 2 bytes is shorter than its 4-byte message count"),
        (b"\x02\x00\x00\x00" + bytes(12), "a batch of 16 bytes cannot hold the table of the 2 messages it announces"),
        (encode_batch([(1, b"abc")])[PREFIX.size :] + b"x", "the 1 messages of a batch add up to 3 bytes, but it carries 4"),
        (encode_batch([(1, b"abc")])[PREFIX.size : -1], "the 1 messages of a batch add up to 3 bytes, but it carries 2"),
    ],
)
def test_a_damaged_batch_is_refused_with_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(BatchError, match=message):
        decode_batch(body)


# --- the per-connection check ----------------------------------------------------------------------


def test_the_check_catches_a_lost_repeated_damaged_or_reordered_message_of_a_connection() -> None:
    sent = [[(1, b"a1"), (2, b"b1"), (1, b"a2")], [(2, b"b2"), (1, b"a3")]]
    want = expected_digests(sent, 2, conns=2, replies=False)

    def tally(*batches: list[tuple[int, bytes]]) -> list[int]:
        t = Tally(2)
        for batch in batches:
            t.add(batch)
        return t.digests

    assert tally(*sent) == want
    # Connections interleave freely: only the order within each one counts.
    assert tally([(2, b"b1"), (2, b"b2")], [(1, b"a1"), (1, b"a2"), (1, b"a3")]) == want
    assert tally([(1, b"a1"), (2, b"b1")], [(2, b"b2"), (1, b"a3")]) != want  # a2 lost
    assert tally(sent[0], sent[0][2:], sent[1]) != want  # a2 twice
    assert tally([(1, b"a1"), (2, b"b1"), (1, b"aX")], sent[1]) != want  # a2 damaged
    assert tally([(1, b"a2"), (2, b"b1"), (1, b"a1")], sent[1]) != want  # a1 and a2 swapped
    assert tally([(1, b"a1"), (1, b"b1"), (1, b"a2")], sent[1]) != want  # b1 to the wrong connection

    unknown = Tally(2)
    unknown.add([(3, b"x")])
    assert unknown.errors == ["connection ids [3] are not among the run's 1..2"]


# --- the shared-memory ring ------------------------------------------------------------------------


def _ring_fds(capacity: int) -> list[int]:
    mem = os.memfd_create("test-ring")
    os.ftruncate(mem, 128 + capacity)
    return [mem, *(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(2))]


def test_the_ring_carries_frames_in_order_across_its_end_while_the_writer_waits_for_space() -> None:
    # A 4 KiB ring and ~25 KiB of frames: the writer fills it, waits for the reader, and frames
    # wrap past the end (with and without room for a wrap marker).
    capacity = 4096
    frames = [encode_batch([(i, bytes([i % 251]) * (i * 37 % 1500))]) for i in range(60)]
    fds = _ring_fds(capacity)

    async def go() -> list[bytes | None]:
        writer = Ring(fds[0], capacity, data_fd=fds[1], space_fd=fds[2])
        reader = Ring(fds[0], capacity, data_fd=fds[1], space_fd=fds[2])
        try:

            async def write() -> None:
                for f in frames:
                    await writer.put(f)
                await writer.put(END_FRAME)

            task = asyncio.ensure_future(write())
            got = [await reader.get() for _ in range(len(frames) + 1)]
            await task
            return got
        finally:
            writer.close()
            reader.close()

    try:
        got = asyncio.run(asyncio.wait_for(go(), 60))
    finally:
        for fd in fds:
            os.close(fd)
    assert got[-1] is None
    assert got[:-1] == [f[PREFIX.size :] for f in frames]


def test_a_frame_larger_than_half_the_ring_is_refused() -> None:
    fds = _ring_fds(4096)

    async def go() -> None:
        ring = Ring(fds[0], 4096, data_fd=fds[1], space_fd=fds[2])
        try:
            await ring.put(bytes(2049))
        finally:
            ring.close()

    try:
        with pytest.raises(BatchError, match="a frame of 2049 bytes does not fit a ring of 4096"):
            asyncio.run(go())
    finally:
        for fd in fds:
            os.close(fd)
