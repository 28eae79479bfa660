"""Tests for hostnode.commitlog: real files under tmp_path, real fsyncs, no mocks."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hostnode.commitlog import (
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    CommitLog,
    CommitLogClosedError,
    CommitLogCorruptError,
    CommitLogFatalError,
    CommitLogLockedError,
    EpochFencedError,
    GroupCommitter,
    Record,
    decode_epoch_state,
    decode_segment_header,
    encode_epoch_state,
    encode_record,
    encode_segment_header,
    scan_records,
    segment_file_name,
)
from tests.waits import PATIENCE, until_sync

REPO = Path(__file__).resolve().parents[2]


def payload(offset: int) -> bytes:
    """A payload whose content and length both depend on the offset."""
    return f"tx-{offset}|".encode() * (1 + offset % 5)


def fill(log: CommitLog, count: int, epoch: int = 1) -> None:
    for _ in range(count):
        log.append(epoch, payload(log.next_offset))


def everything(log: CommitLog) -> list[Record]:
    return list(log.read_from(log.first_offset))


def segment_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "LOCK"}


# --------------------------------------------------------------------------- pure format


def test_segment_header_roundtrip_and_rejections() -> None:
    header = encode_segment_header(123456789)
    assert len(header) == SEGMENT_HEADER_SIZE
    assert decode_segment_header(header) == 123456789
    for bad in (header[:10], b"X" + header[1:], header[:-1] + bytes([header[-1] ^ 1])):
        with pytest.raises(CommitLogCorruptError):
            decode_segment_header(bad)
    assert segment_file_name(42) == "00000000000000000042.log"


def test_scan_records_reports_torn_and_invalid() -> None:
    data = b"".join(encode_record(1 + (i >= 3), 10 + i, payload(i)) for i in range(5))
    full = scan_records(data, 0, 10, None)
    assert (full.end, full.next_offset, full.problem, full.epochs) == (
        len(data),
        15,
        None,
        [(1, 10), (2, 13)],
    )
    torn = scan_records(data[:-1], 0, 10, None)
    assert (torn.next_offset, torn.problem_kind) == (14, "torn")
    flipped = bytearray(data)
    flipped[RECORD_HEADER_SIZE + 1] ^= 0xFF
    assert scan_records(bytes(flipped), 0, 10, None)[1:2] == (10,)
    assert scan_records(data, 0, 11, None).problem_kind == "invalid"  # offsets do not match
    assert scan_records(data, 0, 10, 5).problem_kind == "invalid"  # epoch went backwards


def test_epoch_state_roundtrip_and_checksum() -> None:
    data = encode_epoch_state(9, [(1, 0), (4, 17), (9, 17)])
    assert decode_epoch_state(data) == (9, [(1, 0), (4, 17), (9, 17)])
    with pytest.raises(CommitLogCorruptError):
        decode_epoch_state(data.replace(b"epoch 4 17", b"epoch 4 18"))
    with pytest.raises(CommitLogCorruptError):
        decode_epoch_state(encode_epoch_state(1, [(3, 0), (2, 5)]))


# --------------------------------------------------------------------------- basics


def test_roundtrip_across_segments_and_reads_from_every_offset(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path, segment_size=400) as log:
        assert (log.next_offset, log.durable_offset, everything(log)) == (0, 0, [])
        for i in range(200):
            assert log.append(1 + i // 70, payload(i)) == i
        assert log.next_offset == 200 and log.durable_offset < 200
        assert len(log.segment_bases()) > 10
        assert log.sync() == 200 == log.durable_offset
        expected = [Record(1 + i // 70, i, payload(i)) for i in range(200)]
        for start in range(201):
            assert list(log.read_from(start)) == expected[start:]
        assert list(log.read_from(65, 140)) == expected[65:140]
        with pytest.raises(ValueError):
            log.read_from(201)
    names = [p.name for p in segment_paths(tmp_path)]
    assert names[0] == "00000000000000000000.log" and all(len(n) == 24 for n in names)


def test_reads_see_unsynced_appends_but_not_later_ones(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path) as log:
        fill(log, 3)
        it = log.read_from(0)
        fill(log, 2)
        assert [r.offset for r in it] == [0, 1, 2]
        assert [r.offset for r in log.read_from(3)] == [3, 4]


def test_reopen_preserves_everything(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path, segment_size=300) as log:
        fill(log, 30, epoch=2)
        log.set_epoch(5)
        fill(log, 30, epoch=5)
        before = (everything(log), log.segment_bases(), log.epoch_history())
    with CommitLog.open(tmp_path, segment_size=300) as log:
        assert (everything(log), log.segment_bases(), log.epoch_history()) == before
        assert log.next_offset == log.durable_offset == 60
        assert log.last_epoch == 5
        assert log.append(5, b"more") == 60
    with CommitLog.open(tmp_path, segment_size=300) as log:
        assert everything(log)[-1] == Record(5, 60, b"more")


def test_initial_offset_and_empty_payload(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path, initial_offset=1000) as log:
        assert log.append(3, b"") == 1000
    with CommitLog.open(tmp_path, initial_offset=7) as log:  # ignored: segments exist
        assert (log.first_offset, everything(log)) == (1000, [Record(3, 1000, b"")])
        with pytest.raises(ValueError):
            log.truncate(999)


def test_second_open_is_refused_by_the_lock(tmp_path: Path) -> None:
    log = CommitLog.open(tmp_path)
    with pytest.raises(CommitLogLockedError):
        CommitLog.open(tmp_path)
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from hostnode.commitlog import CommitLog; CommitLog.open({str(tmp_path)!r})"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert child.returncode != 0 and "CommitLogLockedError" in child.stderr
    log.close()
    CommitLog.open(tmp_path).close()


def test_closed_log_refuses_use(tmp_path: Path) -> None:
    log = CommitLog.open(tmp_path)
    fill(log, 1)
    log.close()
    log.close()
    with pytest.raises(CommitLogClosedError):
        log.append(1, b"x")
    with pytest.raises(CommitLogClosedError):
        log.sync()
    with pytest.raises(CommitLogClosedError):
        log.read_from(0)


# --------------------------------------------------------------------------- recovery


def build_two_segment_log(directory: Path, count: int = 12) -> list[Record]:
    with CommitLog.open(directory, segment_size=200) as log:
        fill(log, count)
        assert len(log.segment_bases()) >= 2
        return everything(log)


LAST_RECORD_SIZE = RECORD_HEADER_SIZE + len(payload(11))


@pytest.mark.parametrize("keep", range(LAST_RECORD_SIZE))
def test_torn_tail_at_every_byte_of_the_last_record(
    tmp_path: Path, keep: int, caplog: pytest.LogCaptureFixture
) -> None:
    records = build_two_segment_log(tmp_path)
    last = segment_paths(tmp_path)[-1]
    size = last.stat().st_size
    good_end = size - LAST_RECORD_SIZE
    os.truncate(last, good_end + keep)
    with caplog.at_level(logging.WARNING, logger="hostnode.commitlog"), CommitLog.open(tmp_path) as log:
        assert everything(log) == records[:-1]
        assert log.next_offset == log.durable_offset == 11
        assert last.stat().st_size == good_end
        assert log.append(1, b"after") == 11
    assert (keep == 0) == ("torn tail" not in caplog.text)
    with CommitLog.open(tmp_path) as log:
        assert everything(log) == [*records[:-1], Record(1, 11, b"after")]


def test_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    records = build_two_segment_log(tmp_path)
    with segment_paths(tmp_path)[-1].open("ab") as f:
        f.write(bytes(4096))  # what a crash can leave when size was updated but data was not
    with CommitLog.open(tmp_path) as log:
        assert everything(log) == records


def test_unfinished_header_of_a_new_last_segment_is_rewritten(tmp_path: Path) -> None:
    records = build_two_segment_log(tmp_path)
    (tmp_path / segment_file_name(12)).write_bytes(encode_segment_header(12)[:7])
    with CommitLog.open(tmp_path) as log:
        assert everything(log) == records
        assert log.segment_bases()[-1] == 12
        assert log.append(1, b"x") == 12


def test_bad_checksum_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    records = build_two_segment_log(tmp_path)
    last = segment_paths(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[-3] ^= 0x40
    last.write_bytes(bytes(data))
    with CommitLog.open(tmp_path) as log:
        assert everything(log) == records[:-1]


def test_bad_record_followed_by_valid_ones_in_the_last_segment_raises(tmp_path: Path) -> None:
    build_two_segment_log(tmp_path)
    last = segment_paths(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE] ^= 0x01  # payload of the segment's first record
    last.write_bytes(bytes(data))
    before = file_bytes(tmp_path)
    with pytest.raises(CommitLogCorruptError, match="not a torn tail"):
        CommitLog.open(tmp_path)
    assert file_bytes(tmp_path) == before


def test_lost_unsynced_page_before_valid_records_is_cut(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path) as log:
        fill(log, 500)  # about 20 KiB: several pages in one segment
        records = everything(log)
    seg = segment_paths(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[8192 : 8192 + 4096] = bytes(4096)  # page 2 never reached the disk, page 3 did
    seg.write_bytes(bytes(data))
    with CommitLog.open(tmp_path) as log:
        kept = everything(log)
        assert kept == records[: len(kept)]
        assert 0 < len(kept) < 500
        assert seg.stat().st_size <= 8192
        assert log.append(1, b"after") == len(kept)


@pytest.mark.parametrize("where", ["payload", "length", "tail-of-segment", "header"])
def test_corruption_in_an_older_segment_raises(tmp_path: Path, where: str) -> None:
    build_two_segment_log(tmp_path, count=30)
    first = segment_paths(tmp_path)[0]
    data = bytearray(first.read_bytes())
    if where == "payload":
        data[SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 2] ^= 0x10
    elif where == "length":
        data[SEGMENT_HEADER_SIZE + 4] ^= 0x10
    elif where == "tail-of-segment":
        del data[-5:]
    else:
        data[0] ^= 0x01
    first.write_bytes(bytes(data))
    before = file_bytes(tmp_path)
    with pytest.raises(CommitLogCorruptError, match=first.name):
        CommitLog.open(tmp_path)
    assert file_bytes(tmp_path) == before


def test_missing_middle_segment_raises(tmp_path: Path) -> None:
    build_two_segment_log(tmp_path, count=30)
    segment_paths(tmp_path)[1].unlink()
    with pytest.raises(CommitLogCorruptError, match="missing"):
        CommitLog.open(tmp_path)


def test_epochs_file_rebuilt_when_missing_and_rejected_when_inconsistent(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path) as log:
        fill(log, 3, epoch=2)
        fill(log, 3, epoch=4)
    (tmp_path / "epochs").unlink()
    with CommitLog.open(tmp_path) as log:
        assert log.epoch_history() == [(2, 0), (4, 3)]
    (tmp_path / "epochs").write_bytes(encode_epoch_state(4, [(2, 0), (4, 2)]))
    with pytest.raises(CommitLogCorruptError, match="epochs"):
        CommitLog.open(tmp_path)


# --------------------------------------------------------------------------- truncate


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 5, 12, 16, 17, 29, 30])
def test_truncate_then_append_again(tmp_path: Path, cut: int) -> None:
    with CommitLog.open(tmp_path, segment_size=200) as log:
        fill(log, 30)
        log.sync()
        bases = log.segment_bases()
        assert {4, 12, 16} <= set(bases)  # the boundary cases really are segment boundaries
        expected = everything(log)[:cut]
        log.truncate(cut)
        assert log.next_offset == cut and log.durable_offset == cut
        assert everything(log) == expected
        assert all(b <= cut for b in log.segment_bases())
        assert log.append(1, b"new") == cut
        fill(log, 5)
        expected = everything(log)
    assert len(expected) == cut + 6
    with CommitLog.open(tmp_path, segment_size=200) as log:
        assert everything(log) == expected


def test_truncate_fixes_epoch_history_and_keeps_fencing(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path) as log:
        fill(log, 5, epoch=1)
        fill(log, 5, epoch=3)
        log.set_epoch(4)  # an epoch with no records yet, starting at 10
        assert log.epoch_history() == [(1, 0), (3, 5), (4, 10)]
        log.truncate(7)
        assert log.epoch_history() == [(1, 0), (3, 5)]
        log.truncate(5)
        assert log.epoch_history() == [(1, 0)]
        assert log.promised_epoch == 4
        with pytest.raises(EpochFencedError):
            log.check_epoch(3)
        with pytest.raises(EpochFencedError):
            log.set_epoch(3)
        with pytest.raises(EpochFencedError):
            log.append(0, b"below the last epoch")
        assert log.append(5, b"new leader") == 5
    with CommitLog.open(tmp_path) as log:
        assert log.epoch_history() == [(1, 0), (5, 5)]
        assert log.promised_epoch == 5


def test_epoch_end_offset_answers_divergence_queries(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path) as log:
        fill(log, 4, epoch=2)
        fill(log, 3, epoch=5)
        log.set_epoch(7)
        fill(log, 2, epoch=7)
        assert log.epoch_history() == [(2, 0), (5, 4), (7, 7)]
        assert [log.epoch_end_offset(e) for e in range(1, 9)] == [0, 4, 4, 4, 7, 7, 9, 9]


def test_reader_stops_when_the_log_is_truncated(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path) as log:
        fill(log, 10)
        it = log.read_from(0)
        assert next(it).offset == 0
        log.truncate(3)
        with pytest.raises(Exception, match="truncated"):
            list(it)


# --------------------------------------------------------------------------- epochs


def test_lower_epoch_is_refused_and_history_is_durable(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path) as log:
        assert (log.last_epoch, log.epoch_history()) == (0, [])
        fill(log, 2, epoch=3)
        with pytest.raises(EpochFencedError):
            log.append(2, b"old leader")
        with pytest.raises(EpochFencedError):
            log.set_epoch(1)
        log.set_epoch(3)  # same epoch: no-op
        fill(log, 1, epoch=6)
        assert log.next_offset == 3
    # The epochs file is durable without a sync() of the records: reopen sees it.
    with CommitLog.open(tmp_path) as log:
        assert log.epoch_history() == [(3, 0), (6, 2)]
        assert log.last_epoch == 6
        with pytest.raises(EpochFencedError):
            log.append(5, b"x")


def test_promise_epoch_is_monotonic_durable_and_fences(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path) as log:
        fill(log, 2, epoch=1)
        log.promise_epoch(4)
        log.promise_epoch(4)
        with pytest.raises(EpochFencedError):
            log.promise_epoch(3)
        for stale in (1, 3):
            with pytest.raises(EpochFencedError):
                log.check_epoch(stale)
        log.check_epoch(4)
        with pytest.raises(EpochFencedError):
            log.set_epoch(3)  # a deposed leader may not start its epoch here
        assert log.promised_epoch == 4 and log.last_epoch == 1
    assert "promised 4" in (tmp_path / "epochs").read_text()
    with CommitLog.open(tmp_path) as log:
        assert log.promised_epoch == 4
        with pytest.raises(EpochFencedError):
            log.check_epoch(3)
        # A follower of the epoch-4 leader copies the leader's epoch-2 records as they are.
        assert log.append(2, b"copied from the leader") == 2
        with pytest.raises(EpochFencedError):
            log.append(1, b"x")
        log.set_epoch(4)
        assert log.append(4, b"new leader") == 3
        assert log.epoch_history() == [(1, 0), (2, 2), (4, 3)]
        assert log.promised_epoch == 4
        with pytest.raises(ValueError):
            log.promise_epoch(2**64)


# --------------------------------------------------------------------------- fatal errors


def test_fsync_error_is_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = CommitLog.open(tmp_path)
    fill(log, 3)
    log.sync()
    fill(log, 1)
    # Close the fd underneath the log: the next flush/fsync fails for real (EBADF).
    file = log._file
    assert file is not None
    os.close(file.fileno())
    with pytest.raises(CommitLogFatalError):
        log.sync()
    assert log.failed
    with pytest.raises(CommitLogFatalError):
        log.append(1, b"x")
    with pytest.raises(CommitLogFatalError):
        log.sync()
    assert log.durable_offset == 3
    log.close()
    assert "fatal" in caplog.text
    with CommitLog.open(tmp_path) as log:
        assert log.next_offset == 3


# --------------------------------------------------------------------------- group commit


def test_group_commit_batches_and_wakes_many_waiters(tmp_path: Path) -> None:
    log = CommitLog.open(tmp_path, segment_size=1 << 20)
    committer = GroupCommitter(log)
    results: list[tuple[int, bool, int]] = []
    lock = threading.Lock()

    def waiter(offset: int) -> None:
        ok = committer.wait_durable(offset, timeout=10)
        with lock:
            results.append((offset, ok, log.durable_offset))

    threads = [threading.Thread(target=waiter, args=(o,)) for o in range(0, 5000, 250)]
    for t in threads:
        t.start()
    for _ in range(5000):
        log.append(1, b"x" * 100)
        committer.notify()
    for t in threads:
        t.join(10)
    assert len(results) == len(threads)
    assert all(ok and durable > offset for offset, ok, durable in results)
    assert committer.wait_durable(4999, timeout=10)
    # How many sync rounds that took depends on the machine's speed (a fast fsync and a slow
    # writer give one round per append); test_one_sync_round_covers_every_earlier_append
    # checks the batching itself.
    assert committer.wait_durable(10**6, timeout=0.01) is False
    committer.close()
    log.close()


def test_one_sync_round_covers_every_earlier_append(tmp_path: Path) -> None:
    """Group commit: a sync round makes everything appended before it durable, so records
    appended while a round is pending share it (however fast or slow the machine)."""
    log = CommitLog.open(tmp_path, segment_size=1 << 20)
    committer = GroupCommitter(log)
    fill(log, 1000)  # appended with no notify: the sync thread has nothing to do yet
    assert committer.sync_count == 0 and log.sync_count == 0 and log.durable_offset == 0
    committer.notify()
    assert committer.wait_durable(999, timeout=PATIENCE)
    assert committer.durable_offset == log.durable_offset == 1000
    assert (committer.sync_count, log.sync_count) == (1, 1)
    # A round with nothing new appended syncs nothing.
    committer.notify()
    until_sync(lambda: committer.sync_count == 2, "the second sync round")
    assert log.sync_count == 1
    committer.close()
    log.close()


def test_callbacks_fire_after_durability_in_order(tmp_path: Path) -> None:
    log = CommitLog.open(tmp_path)
    committer = GroupCommitter(log)
    fired: list[tuple[int, BaseException | None, int]] = []
    done = threading.Event()

    def callback(offset: int):  # type: ignore[no-untyped-def]
        def fn(error: BaseException | None) -> None:
            fired.append((offset, error, log.durable_offset))
            if offset == 999:
                done.set()

        return fn

    for _ in range(1000):
        offset = log.append(1, b"y" * 50)
        committer.add_callback(offset, callback(offset))
        committer.notify()
    assert done.wait(10)
    assert [f[0] for f in fired] == list(range(1000))
    assert all(error is None and durable > offset for offset, error, durable in fired)
    late: list[BaseException | None] = []
    committer.add_callback(3, late.append)  # already durable: runs at once
    assert late == [None]
    committer.close()
    log.close()


def test_wait_durable_async(tmp_path: Path) -> None:
    log = CommitLog.open(tmp_path)
    committer = GroupCommitter(log)

    async def main() -> list[int]:
        async def one(i: int) -> int:
            offset = log.append(1, payload(i))
            committer.notify()
            await committer.wait_durable_async(offset)
            assert log.durable_offset > offset
            return offset

        return await asyncio.gather(*(one(i) for i in range(200)))

    assert sorted(asyncio.run(asyncio.wait_for(main(), 10))) == list(range(200))
    committer.close()
    log.close()


def test_readers_and_committer_run_alongside_the_writer(tmp_path: Path) -> None:
    log = CommitLog.open(tmp_path, segment_size=2048)
    committer = GroupCommitter(log)
    stop = threading.Event()
    problems: list[str] = []

    def reader(seed: int) -> None:
        n = 0
        while not stop.is_set():
            end = log.next_offset
            start = (seed * 7919 + n * 104729) % (end + 1)
            n += 1
            for record in log.read_from(start):
                if record != Record(1, record.offset, payload(record.offset)):
                    problems.append(f"bad record {record}")
            if n % 8 == 0:
                time.sleep(0.001)

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in readers:
        t.start()
    for _ in range(4000):
        offset = log.append(1, payload(log.next_offset))
        committer.notify()
        if offset % 500 == 0:
            assert committer.wait_durable(offset, timeout=10)
    stop.set()
    for t in readers:
        t.join(10)
    assert committer.wait_durable(3999, timeout=10)
    committer.close()
    assert problems == []
    assert len(log.segment_bases()) > 20
    assert [r.offset for r in log.read_from(0)] == list(range(4000))
    log.close()


def test_close_is_clean_and_settles_pending_waiters(tmp_path: Path) -> None:
    log = CommitLog.open(tmp_path)
    committer = GroupCommitter(log)
    errors: list[BaseException | None] = []
    committer.add_callback(10, errors.append)  # never appended
    fill(log, 5)  # appended without notify(): close() must still sync it
    committer.close()
    committer.close()
    assert not committer._sync_thread.is_alive()
    assert log.durable_offset == 5 and committer.durable_offset == 5
    assert len(errors) == 1 and isinstance(errors[0], CommitLogClosedError)
    with pytest.raises(CommitLogClosedError):
        committer.wait_durable(10, timeout=1)
    assert committer.wait_durable(4, timeout=0)
    log.close()


def test_committer_reports_a_fatal_log(tmp_path: Path) -> None:
    log = CommitLog.open(tmp_path)
    committer = GroupCommitter(log)
    fill(log, 1)
    committer.notify()
    assert committer.wait_durable(0, timeout=10)
    fill(log, 1)
    file = log._file
    assert file is not None
    os.close(file.fileno())
    committer.notify()
    with pytest.raises(CommitLogFatalError):
        committer.wait_durable(1, timeout=10)
    errors: list[BaseException | None] = []
    committer.add_callback(1, errors.append)
    assert isinstance(errors[0], CommitLogFatalError)
    committer.close()
    log.close()


# --------------------------------------------------------------------------- model-based


class CommitLogMachine(RuleBasedStateMachine):
    """Random append/sync/truncate/reopen/read sequences against a list-based model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="commitlog-model-")
        self.log = CommitLog.open(self.dir, segment_size=256)
        self.model: list[Record] = []
        self.history: list[tuple[int, int]] = []
        self.promised = 0

    @initialize()
    def nothing(self) -> None:
        pass

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def top(self) -> int:
        return max(self.promised, self.history[-1][0] if self.history else 0)

    @property
    def last(self) -> int:
        return self.history[-1][0] if self.history else 0

    def enter(self, epoch: int) -> None:
        if not self.history or epoch > self.last:
            self.history.append((epoch, len(self.model)))

    @rule(data=st.binary(max_size=120), bump=st.sampled_from([0, 0, 0, 0, 1, 2]))
    def append(self, data: bytes, bump: int) -> None:
        epoch = self.last + bump  # may stay below a promise: a follower copying records
        self.enter(epoch)
        assert self.log.append(epoch, data) == len(self.model)
        self.model.append(Record(epoch, len(self.model), data))

    @rule(bump=st.integers(0, 2))
    def set_epoch(self, bump: int) -> None:
        self.log.set_epoch(self.top + bump)
        self.enter(self.top + bump)

    @precondition(lambda self: self.top > 0)
    @rule(data=st.data())
    def stale_epochs_are_refused(self, data: st.DataObject) -> None:
        with pytest.raises(EpochFencedError):
            self.log.check_epoch(data.draw(st.integers(0, self.top - 1)))
        with pytest.raises(EpochFencedError):
            self.log.set_epoch(data.draw(st.integers(0, self.top - 1)))
        if self.last > 0:
            with pytest.raises(EpochFencedError):
                self.log.append(data.draw(st.integers(0, self.last - 1)), b"stale")

    @rule(bump=st.integers(0, 2))
    def promise(self, bump: int) -> None:
        self.log.promise_epoch(self.top + bump)
        self.promised = self.top + bump

    @rule()
    def sync(self) -> None:
        assert self.log.sync() == len(self.model)

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        cut = data.draw(st.integers(0, len(self.model)))
        if cut < len(self.model):
            self.promised = self.top
            self.history = [(e, s) for e, s in self.history if s < cut]
        self.log.truncate(cut)
        del self.model[cut:]

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = CommitLog.open(self.dir, segment_size=256)
        assert self.log.durable_offset == len(self.model)

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(0, len(self.model)))
        assert list(self.log.read_from(start)) == self.model[start:]

    @invariant()
    def matches_model(self) -> None:
        assert self.log.next_offset == len(self.model)
        assert self.log.epoch_history() == self.history
        assert self.log.promised_epoch == self.top


TestCommitLogModel = CommitLogMachine.TestCase
TestCommitLogModel.settings = settings(
    max_examples=30,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --------------------------------------------------------------------------- kill -9

CHILD = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {repo!r})
    from hostnode.commitlog import CommitLog, GroupCommitter

    def payload(offset):
        return f"tx-{{offset}}|".encode() * (1 + offset % 5)

    log = CommitLog.open(sys.argv[1], segment_size=4096, write_buffer=64)
    print("start", log.next_offset, flush=True)
    if sys.argv[2] == "sync":
        n = 0
        while True:
            n += 1
            for _ in range(1 + n % 7):
                log.append(1, payload(log.next_offset))
            print(log.sync(), flush=True)
    else:
        committer = GroupCommitter(log)
        out = threading.Lock()
        def report(offset):
            def fn(error):
                with out:
                    print(offset + 1, flush=True)
            return fn
        while True:
            offset = log.append(1, payload(log.next_offset))
            committer.notify()
            if offset % 10 == 0:
                committer.add_callback(offset, report(offset))
    """
)


#: Durable offsets the child reports before each kill (sync mode: one per sync of 1–7 records;
#: group mode: one per tenth record).
KILL_AFTER_REPORTS = 40


@pytest.mark.parametrize("mode", ["sync", "group"])
def test_sigkill_while_appending_loses_nothing_reported_durable(tmp_path: Path, mode: str) -> None:
    script = CHILD.format(repo=str(REPO))
    reported = 0
    for _round in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        start = child.stdout.readline().split()
        assert start[0] == "start" and int(start[1]) >= reported
        # Kill it after a number of reports rather than a time, so every round does the same
        # work on a fast machine and on a slow one.
        for _ in range(KILL_AFTER_REPORTS):
            line = child.stdout.readline()
            assert line, "child died"
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait(10)
        assert child.returncode == -signal.SIGKILL
        durable = [int(x) for x in (line + rest).split()]
        assert durable, "child reported nothing"
        reported = max(reported, *durable)
        with CommitLog.open(tmp_path) as log:
            assert log.next_offset >= reported
            for record in log.read_from(0):
                assert record == Record(1, record.offset, payload(record.offset))
    assert reported > 100


def test_waiters_made_durable_together_cost_their_loop_one_wake_up() -> None:
    """A sync round settles many asyncio waiters at once: they are settled correctly (each with
    its own outcome) through one ``call_soon_threadsafe`` per loop, not one each (each is a
    self-pipe write and a wake-up of the loop's thread)."""
    from hostnode.commitlog import LoopSettler

    settler = LoopSettler()  # a GroupCommitter's (each has one)

    async def main() -> tuple[int, list[object]]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        real = loop.call_soon_threadsafe

        def counting(*args: object, **kw: object) -> object:
            nonlocal wakeups
            wakeups += 1
            return real(*args, **kw)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        futs = [loop.create_future() for _ in range(100)]
        callbacks = [settler.settle_later(f) for f in futs]
        failure = RuntimeError("never durable")
        # The sync thread settles all of them while the loop is busy (blocked here on purpose).
        sync = threading.Thread(target=lambda: [cb(failure if i == 7 else None) for i, cb in enumerate(callbacks)])
        sync.start()
        sync.join()
        results = await asyncio.gather(*futs, return_exceptions=True)
        return wakeups, results

    wakeups, results = asyncio.run(main())
    assert wakeups == 1
    assert results[7] is not None and str(results[7]) == "never durable"
    assert results[:7] + results[8:] == [None] * 99
