"""The replica commit log: durable, checksummed, epoch-stamped records in segment files.

The engine hands the log one opaque ``bytes`` payload per committed transaction; the log
gives it the next offset, stamps it with the writer's epoch, and makes it durable on
``sync()``. It is the truth a replica recovers from (LMDB only materialises it), and it
provides what replication needs (REPLICATION.md rules 1, 5 and 7): an epoch on every
record, a durable epoch → start-offset history, a durable "highest epoch promised",
truncation to an offset, directory fsyncs, torn-tail repair, and fatal fsync errors.

On-disk layout of a log directory::

    LOCK                              flock()ed by the open CommitLog (one writer per log)
    epochs                            promised epoch + epoch history (atomic replace)
    00000000000000000000.log          segment; the name is its first offset, 20 digits
    00000000000000052113.log          ...

Segment file = 24-byte header + records. All integers are little-endian.

    header: magic b"ORRYCLOG" | version u16 | flags u16 (0) | base_offset u64 | crc u32
            (crc is CRC-32 of the 20 bytes before it)
    record: crc u32 | payload_len u32 | epoch u64 | offset u64 | payload
            (crc is CRC-32 of everything after the crc field: length, epoch, offset, payload)

The checksum is zlib's CRC-32 (IEEE polynomial): CRC-32C is not in the standard library,
and zlib.crc32 runs in C at several GB/s, so it costs far less per record than the Python
around it. It is there to detect torn writes and media corruption, not tampering.

The ``epochs`` file is text, replaced atomically (temp file, fsync, rename, directory
fsync)::

    orrery-epochs 1
    promised <epoch>
    epoch <epoch> <start offset>      one line per history entry, in order
    crc32 <8 hex digits>              CRC-32 of every byte before this line

The record and header formats are pure functions over bytes (``encode_record``,
``scan_records``, ...); ``CommitLog`` and ``GroupCommitter`` are the I/O shell around them.
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import fcntl
import heapq
import itertools
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from observability.instruments import FSYNC_BUCKETS, Histogram

logger: Final = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "LOOP_CALLBACKS",
    "MAX_PAYLOAD",
    "CommitLog",
    "CommitLogClosedError",
    "CommitLogCorruptError",
    "CommitLogError",
    "CommitLogFatalError",
    "CommitLogLockedError",
    "EpochFencedError",
    "GroupCommitter",
    "Record",
    "ScanResult",
    "decode_segment_header",
    "decode_epoch_state",
    "encode_epoch_state",
    "encode_record",
    "find_valid_record_after",
    "lost_page_in",
    "encode_segment_header",
    "scan_records",
    "segment_file_name",
]

# --------------------------------------------------------------------------- errors


class CommitLogError(Exception):
    """Base class of every error raised by the commit log."""


class CommitLogCorruptError(CommitLogError):
    """The log on disk is damaged in a way recovery must not paper over.

    Raised for bad data that is followed by valid data (so it cannot be a torn tail),
    a damaged segment header, gaps between segments, or an inconsistent epoch file.
    Nothing is modified on disk when this is raised: an operator (or a re-replication
    from a healthy replica) has to decide what to keep.
    """


class CommitLogFatalError(CommitLogError):
    """An fsync, write or rename failed. The log refuses all further writes.

    After a failed fsync the kernel may have dropped the dirty pages, so retrying would
    report durability that does not exist (REPLICATION.md rule 7). The only way on is to
    drop the process's view of the log and reopen (which re-reads what is really on disk).
    """


class CommitLogLockedError(CommitLogError):
    """Another ``CommitLog`` (in this or another process) already has the directory open."""


class CommitLogClosedError(CommitLogError):
    """The log or the group committer has been closed."""


class EpochFencedError(CommitLogError):
    """An append or epoch change used an epoch lower than one the log already accepted."""


# --------------------------------------------------------------------------- format

FORMAT_VERSION: Final = 1
SEGMENT_MAGIC: Final = b"ORRYCLOG"
DEFAULT_SEGMENT_SIZE: Final = 64 * 1024 * 1024
MAX_PAYLOAD: Final = 0xFFFF_FFFF
MAX_U64: Final = 0xFFFF_FFFF_FFFF_FFFF

_SEG_BODY: Final = struct.Struct("<8sHHQ")
_SEG_CRC: Final = struct.Struct("<I")
SEGMENT_HEADER_SIZE: Final = _SEG_BODY.size + _SEG_CRC.size  # 24

_REC_HEADER: Final = struct.Struct("<IIQQ")  # crc, payload length, epoch, offset
_REC_TAIL: Final = struct.Struct("<IQQ")  # the checksummed part of the header
_REC_CRC: Final = struct.Struct("<I")
RECORD_HEADER_SIZE: Final = _REC_HEADER.size  # 24
_OFFSET_FIELD: Final = 16  # byte position of the offset inside a record header
_U64: Final = struct.Struct("<Q")

# Every _MARK_EVERY-th record of a segment has its byte position remembered, so a read
# from the middle of a 64 MiB segment skips at most _MARK_EVERY - 1 headers.
_MARK_EVERY: Final = 64
# When bad bytes turn up in the last segment, recovery looks for valid records after
# them to tell a torn tail from corruption: records up to _RESYNC_WINDOW offsets on,
# starting within _RESYNC_SPAN bytes (a lost 4 KiB page holds at most ~170 records).
# The bounds keep that search well under a second even in a 64 MiB segment.
_RESYNC_WINDOW: Final = 256
_RESYNC_SPAN: Final = 1 << 20
# Write-back granularity assumed when telling lost unsynced pages from corruption.
_PAGE: Final = 4096

_SEGMENT_NAME: Final = re.compile(r"^(\d{20})\.log$")
_EPOCHS_FILE: Final = "epochs"
_EPOCHS_TMP: Final = "epochs.tmp"
_LOCK_FILE: Final = "LOCK"

_crc32: Final = zlib.crc32
_fdatasync: Final[Callable[[int], None]] = getattr(os, "fdatasync", os.fsync)


class Record(NamedTuple):
    """One committed transaction as stored in the log."""

    epoch: int
    offset: int
    payload: bytes


def segment_file_name(base_offset: int) -> str:
    """The file name of the segment whose first record has offset ``base_offset``."""
    return f"{base_offset:020d}.log"


def encode_segment_header(base_offset: int) -> bytes:
    """The 24-byte header that starts every segment file."""
    body = _SEG_BODY.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, base_offset)
    return body + _SEG_CRC.pack(_crc32(body))


def decode_segment_header(data: bytes) -> int:
    """Validate a segment header and return its base offset.

    Raises ``CommitLogCorruptError`` (with the reason) for a short, foreign, damaged or
    newer-version header.
    """
    if len(data) < SEGMENT_HEADER_SIZE:
        raise CommitLogCorruptError(f"segment header is {len(data)} bytes, expected {SEGMENT_HEADER_SIZE}")
    body = bytes(data[: _SEG_BODY.size])
    magic, version, _flags, base = _SEG_BODY.unpack(body)
    if magic != SEGMENT_MAGIC:
        raise CommitLogCorruptError(f"not a commit-log segment (magic {magic!r})")
    (crc,) = _SEG_CRC.unpack_from(data, _SEG_BODY.size)
    if crc != _crc32(body):
        raise CommitLogCorruptError("segment header checksum mismatch")
    if version != FORMAT_VERSION:
        raise CommitLogCorruptError(f"segment format version {version}, this build reads {FORMAT_VERSION}")
    return int(base)


def encode_record(epoch: int, offset: int, payload: bytes) -> bytes:
    """The on-disk bytes of one record (header + payload)."""
    tail = _REC_TAIL.pack(len(payload), epoch, offset)
    return _REC_CRC.pack(_crc32(payload, _crc32(tail))) + tail + payload


def _record_at(data: bytes | memoryview, pos: int) -> tuple[int, int, int] | None:
    """(epoch, offset, payload length) of a checksum-valid record at ``pos``, else None."""
    end = len(data)
    if pos < 0 or pos + RECORD_HEADER_SIZE > end:
        return None
    crc, n, epoch, offset = _REC_HEADER.unpack_from(data, pos)
    stop = pos + RECORD_HEADER_SIZE + n
    if stop > end:
        return None
    view = memoryview(data)
    if _crc32(view[pos + RECORD_HEADER_SIZE : stop], _crc32(view[pos + 4 : pos + RECORD_HEADER_SIZE])) != crc:
        return None
    return epoch, offset, n


class ScanResult(NamedTuple):
    """What ``scan_records`` found in one segment's bytes.

    ``end`` is the byte position just past the last valid record and ``next_offset`` the
    offset the next record would get. ``marks`` are the byte positions of records
    ``base, base + 64, ...``. ``epochs`` lists ``(epoch, first offset)`` for every epoch
    change (the first record counts as a change from ``prev_epoch`` if it differs).
    ``problem`` is None when the whole buffer parsed; otherwise ``problem_kind`` is
    ``"torn"`` (short or checksum-failing bytes: a torn write or media damage) or
    ``"invalid"`` (a checksum-valid record with the wrong offset or a lower epoch, which
    no crash can produce).
    """

    end: int
    next_offset: int
    last_epoch: int | None
    marks: list[int]
    epochs: list[tuple[int, int]]
    problem: str | None
    problem_kind: str | None


def scan_records(data: bytes, start: int, base_offset: int, prev_epoch: int | None) -> ScanResult:
    """Parse records from ``data[start:]``, expected to begin at ``base_offset``.

    Stops at the end of the buffer or at the first record that is incomplete, fails its
    checksum, has an offset other than the next one, or an epoch lower than its
    predecessor's. Pure: no I/O, no exceptions for bad input.
    """
    view = memoryview(data)
    pos = start
    end = len(data)
    expected = base_offset
    epoch_now = prev_epoch
    marks: list[int] = []
    epochs: list[tuple[int, int]] = []
    unpack = _REC_HEADER.unpack_from
    problem: str | None = None
    kind: str | None = None
    while pos < end:
        if pos + RECORD_HEADER_SIZE > end:
            problem, kind = f"incomplete record header ({end - pos} of {RECORD_HEADER_SIZE} bytes)", "torn"
            break
        crc, n, epoch, offset = unpack(data, pos)
        stop = pos + RECORD_HEADER_SIZE + n
        if stop > end:
            problem, kind = f"incomplete record (needs {stop - pos} bytes, {end - pos} present)", "torn"
            break
        if (
            _crc32(view[pos + RECORD_HEADER_SIZE : stop], _crc32(view[pos + 4 : pos + RECORD_HEADER_SIZE]))
            != crc
        ):
            problem, kind = "record checksum mismatch", "torn"
            break
        if offset != expected:
            problem, kind = f"record has offset {offset}, expected {expected}", "invalid"
            break
        if epoch_now is not None and epoch < epoch_now:
            problem, kind = (
                f"record {offset} has epoch {epoch}, lower than the previous {epoch_now}",
                "invalid",
            )
            break
        if epoch != epoch_now:
            epochs.append((epoch, offset))
            epoch_now = epoch
        if (offset - base_offset) % _MARK_EVERY == 0:
            marks.append(pos)
        expected = offset + 1
        pos = stop
    return ScanResult(pos, expected, epoch_now, marks, epochs, problem, kind)


def find_valid_record_after(data: bytes, pos: int, expected_offset: int) -> tuple[int, int] | None:
    """Look for a checksum-valid record starting after byte ``pos`` (position, offset).

    Recovery uses this to tell a torn tail (nothing valid follows the bad bytes) from
    corruption in the middle (valid records follow). Rather than trying every byte
    position, it searches for the encoded offsets the next records would carry, which is
    a fast ``bytes.find``. Valid data more than ``_RESYNC_WINDOW`` records or
    ``_RESYNC_SPAN`` bytes past the damage is not found, so such damage counts as a
    torn tail.
    """
    # A zero-filled tail (size extended, data never written) holds no records; cutting it
    # off first keeps the search fast in the most common crash leftover.
    # (A record's header ends at most 24 bytes after its last non-zero byte, its CRC.)
    limit = min(pos + 1 + _RESYNC_SPAN, len(data.rstrip(b"\0"))) + RECORD_HEADER_SIZE
    for candidate in range(expected_offset, min(expected_offset + _RESYNC_WINDOW, MAX_U64 + 1)):
        needle = _U64.pack(candidate)
        hit = data.find(needle, pos + 1 + _OFFSET_FIELD, limit)
        while hit != -1:
            start = hit - _OFFSET_FIELD
            found = _record_at(data, start)
            if found is not None and found[1] == candidate:
                return start, candidate
            hit = data.find(needle, hit + 1, limit)
    return None


def lost_page_in(data: bytes, start: int, stop: int) -> int | None:
    """Position of a page-aligned, all-zero page inside ``data[start:stop]``, if any.

    After a power loss the kernel may have written back later pages of the unsynced
    tail but not earlier ones; a page that never reached the disk reads back as zeros
    (appends allocate new blocks). Such a hole, followed by valid records, is therefore
    a crash artifact in never-synced data, not damage to durable records. Damaged records
    without a zero page around them are treated as corruption.
    """
    page = -(-start // _PAGE) * _PAGE
    zero = bytes(_PAGE)
    while page + _PAGE <= stop:
        if data[page : page + _PAGE] == zero:
            return page
        page += _PAGE
    return None


# --------------------------------------------------------------------------- epoch file


def encode_epoch_state(promised: int, history: list[tuple[int, int]]) -> bytes:
    """The bytes of the ``epochs`` file."""
    lines = [f"orrery-epochs {FORMAT_VERSION}", f"promised {promised}"]
    lines += [f"epoch {e} {s}" for e, s in history]
    body = ("\n".join(lines) + "\n").encode()
    return body + f"crc32 {_crc32(body):08x}\n".encode()


def decode_epoch_state(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Parse the ``epochs`` file into (promised epoch, history); CommitLogCorruptError if bad."""
    cut = data.rfind(b"crc32 ")
    if cut < 0:
        raise CommitLogCorruptError("epochs file has no checksum line")
    body = data[:cut]
    try:
        if int(data[cut + 6 :].strip(), 16) != _crc32(body):
            raise CommitLogCorruptError("epochs file checksum mismatch")
        lines = body.decode().splitlines()
        if not lines or lines[0] != f"orrery-epochs {FORMAT_VERSION}":
            raise CommitLogCorruptError(f"epochs file has an unknown header {lines[:1]!r}")
        kw, value = lines[1].split()
        if kw != "promised":
            raise ValueError(lines[1])
        history: list[tuple[int, int]] = []
        for line in lines[2:]:
            kw, e, s = line.split()
            if kw != "epoch":
                raise ValueError(line)
            history.append((int(e), int(s)))
        promised = int(value)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise CommitLogCorruptError(f"epochs file is malformed: {exc}") from exc
    for (e1, s1), (e2, s2) in itertools.pairwise(history):
        if not (e2 > e1 and s2 >= s1):
            raise CommitLogCorruptError(f"epochs file history is not increasing: {history}")
    return promised, history


# --------------------------------------------------------------------------- I/O helpers


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@dataclass
class _Segment:
    """One segment file as the log tracks it in memory."""

    base: int
    path: str
    # Byte positions of records base, base + _MARK_EVERY, base + 2 * _MARK_EVERY, ...
    marks: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- the log


class CommitLog:
    """An append-only log of ``(epoch, offset, payload)`` records for one replica.

    Threading: one writer thread calls ``append``/``set_epoch``/``truncate``; ``sync`` may
    run concurrently from another thread (see ``GroupCommitter``); ``read_from`` and the
    properties may be used from any thread. Create instances with ``CommitLog.open``.
    """

    def __init__(self, *, _token: object = None) -> None:
        if _token is not _OPEN_TOKEN:
            raise TypeError("use CommitLog.open(directory)")
        self.directory = ""
        self.segment_size = DEFAULT_SEGMENT_SIZE
        # Lock order: _sync_lock before _lock. _lock guards the writer and every field
        # below; _sync_lock serialises fsyncs of the active segment with anything that
        # closes or cuts segment files, so an fsync never runs on a closed fd.
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._lock_fd = -1
        self._write_buffer = 1 << 20
        self._segments: list[_Segment] = []
        self._bases: list[int] = []
        self._file: _Writer | None = None
        self._retired: list[_Writer] = []
        self._pos = 0
        self._next_mark = 0
        self._next_offset = 0
        self._durable_offset = 0
        self._history: list[tuple[int, int]] = []
        self._promised = 0
        # The epoch the fast path of append accepts without a check; -1 forces the slow
        # path (no epoch yet, closed, or failed).
        self._append_epoch = -1
        self._fatal: BaseException | None = None
        self._closed = False
        self._generation = 0  # bumped by truncate; live readers notice and stop
        self.sync_count = 0
        """Number of data fsyncs this log has issued (sync() calls plus segment rolls)."""
        #: Seconds per group-commit fsync (``sync()``; written under ``_sync_lock`` only).
        self.fsync_seconds = Histogram(FSYNC_BUCKETS)

    # ----------------------------------------------------------------- open / close

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        initial_offset: int = 0,
        write_buffer: int = 1 << 20,
    ) -> CommitLog:
        """Open (or create) the log in ``directory`` and recover it.

        Takes an exclusive ``flock`` on ``directory/LOCK`` (``CommitLogLockedError`` if
        held elsewhere), verifies every segment, and repairs a torn tail of the last
        segment: bytes after the last complete, checksum-valid record are cut off (with a
        warning) when no valid record follows them. Anything else that is damaged raises
        ``CommitLogCorruptError`` without changing the files.

        ``segment_size`` is the size past which appends roll to a new segment;
        ``initial_offset`` is the first offset of a log created here (ignored when the
        directory already holds segments); ``write_buffer`` is the userspace buffer size.
        """
        if segment_size < SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE:
            raise ValueError(f"segment_size {segment_size} is too small")
        if not 0 <= initial_offset <= MAX_U64:
            raise ValueError(f"initial_offset {initial_offset} is not a u64")
        log = cls(_token=_OPEN_TOKEN)
        log.directory = os.path.abspath(os.fspath(directory))
        log.segment_size = segment_size
        log._write_buffer = write_buffer
        created = not os.path.isdir(log.directory)
        os.makedirs(log.directory, exist_ok=True)
        if created:
            _fsync_dir(os.path.dirname(log.directory))
        log._take_lock()
        try:
            log._recover(initial_offset)
        except BaseException:
            log._release_lock()
            raise
        return log

    def _take_lock(self) -> None:
        fd = os.open(os.path.join(self.directory, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CommitLogLockedError(f"commit log {self.directory} is already open elsewhere") from exc
            raise
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the only fd drops the flock
            self._lock_fd = -1

    def close(self) -> None:
        """Sync what was appended, close the files and release the directory lock.

        Idempotent. If the log already failed, closes without syncing.
        """
        if self._closed:
            return
        try:
            if self._fatal is None:
                self.sync()
        finally:
            with self._sync_lock, self._lock:
                self._closed = True
                self._append_epoch = -1
                for w in [*self._retired, *([self._file] if self._file else [])]:
                    try:
                        w.close()
                    except OSError:  # only possible after a fatal error; nothing to save
                        pass
                self._retired = []
                self._file = None
            self._release_lock()

    def __enter__(self) -> CommitLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- recovery

    def _recover(self, initial_offset: int) -> None:
        d = self.directory
        tmp = os.path.join(d, _EPOCHS_TMP)
        if os.path.exists(tmp):  # a crash between writing and renaming; the old file rules
            os.unlink(tmp)
        epochs_path = os.path.join(d, _EPOCHS_FILE)
        have_epochs = os.path.exists(epochs_path)
        if have_epochs:
            self._promised, self._history = decode_epoch_state(_read_file(epochs_path))

        bases = sorted(int(m.group(1)) for name in os.listdir(d) if (m := _SEGMENT_NAME.match(name)))
        if not bases:
            if self._history:
                raise CommitLogCorruptError(f"{d}: the epochs file has a history but there are no segments")
            self._create_segment(initial_offset)
            self._next_offset = self._next_mark = initial_offset
            self._pos = SEGMENT_HEADER_SIZE
            seen: list[tuple[int, int]] = []
        else:
            seen = self._scan_segments(bases)
        if self._reconcile_history(seen, have_epochs):
            self._rewrite_epochs()
        self._file = _Writer(self._segments[-1].path, self._write_buffer)
        self._durable_offset = self._next_offset
        self._append_epoch = self.last_epoch if self._history else -1

    def _scan_segments(self, bases: list[int]) -> list[tuple[int, int]]:
        """Verify every segment, cut a torn tail; return the epoch changes the records show."""
        prev_epoch: int | None = None
        seen: list[tuple[int, int]] = []
        expected_base: int | None = None
        for i, base in enumerate(bases):
            is_last = i == len(bases) - 1
            path = os.path.join(self.directory, segment_file_name(base))
            data = _read_file(path)
            where = f"segment {os.path.basename(path)}"
            if expected_base is not None and base != expected_base:
                raise CommitLogCorruptError(
                    f"{self.directory}: {where} starts at offset {base} but the previous segment ends "
                    f"at {expected_base}; records are missing"
                )
            try:
                header_base = decode_segment_header(data)
            except CommitLogCorruptError as exc:
                # A crash between creating a segment and fsyncing its header leaves a
                # short or zero-filled file with nothing after it; that is not data loss.
                if is_last and (len(data) < SEGMENT_HEADER_SIZE or not data.strip(b"\0")):
                    logger.warning("commit log %s: rewriting unfinished header of %s", self.directory, where)
                    self._write_new_segment_file(path, base)
                    data = encode_segment_header(base)
                    header_base = base
                else:
                    raise CommitLogCorruptError(f"{self.directory}: {where}: {exc}") from exc
            if header_base != base:
                raise CommitLogCorruptError(
                    f"{self.directory}: {where} has base offset {header_base} in its header"
                )
            result = scan_records(data, SEGMENT_HEADER_SIZE, base, prev_epoch)
            if result.problem is not None:
                bad = f"{self.directory}: {where}: {result.problem} at byte {result.end} (offset {result.next_offset})"
                if result.problem_kind != "torn" or not is_last:
                    raise CommitLogCorruptError(bad)
                following = find_valid_record_after(data, result.end, result.next_offset)
                if following is not None:
                    lost = lost_page_in(data, result.end, following[0])
                    if lost is None:
                        raise CommitLogCorruptError(
                            f"{bad}, followed by a valid record (offset {following[1]} at byte "
                            f"{following[0]}); this is corruption inside the log, not a torn tail"
                        )
                    logger.warning(
                        "commit log %s: %s has a zero-filled page at byte %d followed by records: "
                        "unsynced pages were written back out of order before a crash",
                        self.directory,
                        where,
                        lost,
                    )
                logger.warning(
                    "commit log %s: torn tail in %s: %s at byte %d; truncating %d bytes after offset %d",
                    self.directory,
                    where,
                    result.problem,
                    result.end,
                    len(data) - result.end,
                    result.next_offset - 1,
                )
                self._cut_file(path, result.end)
            self._segments.append(_Segment(base, path, result.marks))
            self._bases.append(base)
            seen += result.epochs
            prev_epoch = result.last_epoch
            expected_base = result.next_offset
            self._next_offset = result.next_offset
            self._pos = result.end
        self._next_mark = self._bases[-1] + len(self._segments[-1].marks) * _MARK_EVERY
        return seen

    def _reconcile_history(self, seen: list[tuple[int, int]], have_epochs: bool) -> bool:
        """Check the epoch history against the epoch changes the records show.

        Returns True when the epochs file must be rewritten (it was repaired).
        """
        if not have_epochs:
            if seen:
                # The history is derivable from the records; losing the file loses only
                # epochs that had no records, which do not change divergence answers.
                logger.warning("commit log %s: epochs file missing; rebuilt from the records", self.directory)
                self._history = list(seen)
                return True
            return False
        # A crash inside truncate() (after cutting records, before rewriting the file)
        # leaves entries that start past the end of the log; they describe nothing.
        dropped = [(e, s) for e, s in self._history if s > self._next_offset]
        if dropped:
            self._promised = max(self._promised, *(e for e, _ in dropped))
            self._history = self._history[: len(self._history) - len(dropped)]
            logger.warning(
                "commit log %s: dropped epoch entries past the log end: %s", self.directory, dropped
            )
        # Entries that share a start offset: only the last of them can own records. Segments
        # deleted from the front (delete_segments_before) took their records along: the entry
        # in force at the first kept record shows up in the records as starting there.
        first = self._bases[0] if self._bases else 0
        effective: list[tuple[int, int]] = []
        for e, s in self._history:
            if s >= self._next_offset:
                break
            s = max(s, first)
            if effective and effective[-1][1] == s:
                effective[-1] = (e, s)
            else:
                effective.append((e, s))
        if effective != seen:
            raise CommitLogCorruptError(
                f"{self.directory}: the epochs file {self._history} does not match the epochs of the "
                f"records, which change at {seen}"
            )
        return bool(dropped)

    # ----------------------------------------------------------------- properties

    @property
    def next_offset(self) -> int:
        """The offset the next appended record gets (one past the last record)."""
        return self._next_offset

    @property
    def durable_offset(self) -> int:
        """One past the last record known to be on stable storage."""
        return self._durable_offset

    @property
    def first_offset(self) -> int:
        """The offset of the first record the log holds (or would hold)."""
        return self._bases[0]

    @property
    def last_epoch(self) -> int:
        """The epoch of the last epoch-history entry (0 for a log that has none)."""
        return self._history[-1][0] if self._history else 0

    @property
    def promised_epoch(self) -> int:
        """The highest epoch this log has promised or accepted; lower ones are refused."""
        return max(self._promised, self.last_epoch)

    @property
    def failed(self) -> bool:
        """True after a fatal I/O error: the log refuses writes until reopened."""
        return self._fatal is not None

    def segment_bases(self) -> list[int]:
        """The first offsets of the segment files, in order."""
        return list(self._bases)

    def disk_bytes(self) -> int:
        """Bytes the segment files take on disk now (any thread; a segment deleted meanwhile
        counts 0)."""
        total = 0
        for base in list(self._bases):
            try:
                total += os.stat(os.path.join(self.directory, segment_file_name(base))).st_size
            except FileNotFoundError:
                pass
        return total

    # ----------------------------------------------------------------- epochs

    def epoch_history(self) -> list[tuple[int, int]]:
        """The durable ``(epoch, start offset)`` history, oldest first."""
        return list(self._history)

    def epoch_end_offset(self, epoch: int) -> int:
        """Where ``epoch`` ended in this log: the first offset that belongs to a later epoch.

        That is the start of the first history entry with an epoch greater than
        ``epoch``, or ``next_offset`` when there is none (``epoch`` is the current or a
        future one). For an epoch with no records (never led, or lower than every
        entry) it is therefore where the next known epoch starts. A follower whose last
        epoch is ``epoch`` truncates to ``min(its next_offset, leader.epoch_end_offset(epoch))``
        (REPLICATION.md rule 5; Kafka KIP-101 OffsetsForLeaderEpoch).
        """
        with self._lock:
            for e, start in self._history:
                if e > epoch:
                    return start
            return self._next_offset

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` at the current end of the log, durably (a new leader's first step).

        A no-op when ``epoch`` is already the last history entry. Raises
        ``EpochFencedError`` for an epoch lower than ``promised_epoch`` (which includes
        ``last_epoch``): a leader may not start an epoch this replica has fenced.
        """
        with self._lock:
            self.check_epoch(epoch)
            self._enter_epoch(epoch)

    def check_epoch(self, epoch: int) -> None:
        """Raise ``EpochFencedError`` if ``epoch`` is lower than ``promised_epoch``.

        The fence for anything acting on behalf of an epoch: a replication RPC, or a
        leader about to append. ``append`` itself only refuses epochs below
        ``last_epoch``, because a follower copies records stamped with the older epochs
        in which the leader wrote them (KIP-101), after it has promised the leader's epoch.
        """
        if epoch < self.promised_epoch:
            raise EpochFencedError(
                f"epoch {epoch} is lower than the promised epoch {self.promised_epoch}; it is fenced"
            )

    def promise_epoch(self, epoch: int) -> None:
        """Durably promise never to accept an epoch lower than ``epoch`` (fsynced on return).

        Promising the current promise again is a no-op; a lower one raises
        ``EpochFencedError`` (REPLICATION.md rules 1 and 3b).
        """
        _check_u64("epoch", epoch)
        with self._lock:
            self._check_writable()
            if epoch < self.promised_epoch:
                raise EpochFencedError(
                    f"epoch {epoch} is lower than the promised epoch {self.promised_epoch}"
                )
            if epoch == self.promised_epoch:
                return
            self._promised = epoch
            self._rewrite_epochs()

    def _enter_epoch(self, epoch: int) -> None:
        """Slow path of append/set_epoch: validate ``epoch``, record it if new. Holds _lock."""
        self._check_writable()
        _check_u64("epoch", epoch)
        if epoch < self.last_epoch:
            raise EpochFencedError(
                f"epoch {epoch} is lower than the log's last epoch {self.last_epoch}; "
                "records of a deposed writer are refused"
            )
        if not self._history or epoch > self.last_epoch:
            self._history.append((epoch, self._next_offset))
            try:
                self._rewrite_epochs()
            except BaseException:
                self._history.pop()
                raise
        self._append_epoch = epoch

    def _rewrite_epochs(self) -> None:
        """Replace the epochs file atomically and durably (REPLICATION.md rule 7)."""
        data = encode_epoch_state(self._promised, self._history)
        tmp = os.path.join(self.directory, _EPOCHS_TMP)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(self.directory, _EPOCHS_FILE))
            _fsync_dir(self.directory)
        except OSError as exc:
            self._fail(exc, "writing the epochs file")

    # ----------------------------------------------------------------- append / sync

    def append(self, epoch: int, payload: bytes) -> int:
        """Append one record and return its offset. Buffers only; ``sync()`` makes it durable.

        A new, higher ``epoch`` is first recorded durably in the epoch history; one lower
        than ``last_epoch`` raises ``EpochFencedError``. (``promised_epoch`` is not checked
        here: see ``check_epoch``.)
        """
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"payload of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit")
        with self._lock:
            if epoch != self._append_epoch:
                self._enter_epoch(epoch)
            offset = self._next_offset
            tail = _REC_TAIL.pack(n, epoch, offset)
            size = RECORD_HEADER_SIZE + n
            if self._pos + size > self.segment_size and self._pos > SEGMENT_HEADER_SIZE:
                self._roll()
            file = self._file
            assert file is not None
            try:
                file.write(b"".join((_REC_CRC.pack(_crc32(payload, _crc32(tail))), tail, payload)))
            except OSError as exc:
                self._fail(exc, "writing a record")
            if offset == self._next_mark:
                self._segments[-1].marks.append(self._pos)
                self._next_mark += _MARK_EVERY
            self._pos += size
            self._next_offset = offset + 1
            return offset

    def sync(self) -> int:
        """Make every record appended so far durable; return ``durable_offset``.

        Flushes the userspace buffer under the append lock, then ``fdatasync``s outside
        it, so appends continue during the fsync (they are covered by the next one).
        Any I/O error is fatal (``CommitLogFatalError``).
        """
        with self._sync_lock:
            with self._lock:
                self._check_writable()
                target = self._next_offset
                if target == self._durable_offset:
                    return target
                file = self._flush("flushing the active segment")
                retired, self._retired = self._retired, []
            for w in retired:  # already fsynced by _roll; only closing was deferred to here
                w.close()
            started = time.perf_counter()
            try:
                _fdatasync(file.fileno())
            except OSError as exc:
                with self._lock:
                    self._fail(exc, "fsyncing the active segment")
            self.fsync_seconds.observe(time.perf_counter() - started)
            with self._lock:
                self.sync_count += 1
                if target > self._durable_offset:
                    self._durable_offset = target
                return self._durable_offset

    def _roll(self) -> None:
        """Seal the active segment and start a new one. Holds _lock.

        The old segment is fsynced before the new file exists, so on disk every segment
        but the last is complete: recovery can treat damage anywhere but the last
        segment's tail as corruption.
        """
        old = self._file
        assert old is not None
        try:
            old.flush()
            _fdatasync(old.fileno())
        except OSError as exc:
            self._fail(exc, "fsyncing a full segment")
        self.sync_count += 1
        self._durable_offset = self._next_offset
        # A sync() may be fsyncing this fd right now (it holds _sync_lock, not _lock);
        # closing it is deferred to the next sync(), which runs after that one.
        self._retired.append(old)
        base = self._next_offset
        self._create_segment(base)
        self._file = _Writer(self._segments[-1].path, self._write_buffer)
        self._pos = SEGMENT_HEADER_SIZE
        self._next_mark = base

    def _create_segment(self, base: int) -> None:
        path = os.path.join(self.directory, segment_file_name(base))
        try:
            self._write_new_segment_file(path, base)
            _fsync_dir(self.directory)
        except OSError as exc:
            self._fail(exc, "creating a segment")
        self._segments.append(_Segment(base, path))
        self._bases.append(base)

    @staticmethod
    def _write_new_segment_file(path: str, base: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, encode_segment_header(base))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _cut_file(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            self._fail(exc, f"truncating {os.path.basename(path)}")
        finally:
            os.close(fd)

    def _flush(self, doing: str) -> _Writer:
        """Push the userspace buffer of the active segment to the OS. Holds _lock."""
        file = self._file
        assert file is not None
        try:
            file.flush()
        except OSError as exc:
            self._fail(exc, doing)
        return file

    def _check_writable(self) -> None:
        if self._fatal is not None:
            raise CommitLogFatalError(
                f"commit log {self.directory} failed earlier ({self._fatal}); reopen it"
            ) from self._fatal
        if self._closed:
            raise CommitLogClosedError(f"commit log {self.directory} is closed")

    def _fail(self, exc: BaseException, doing: str) -> None:
        """Record a fatal I/O error and raise it (never returns)."""
        if self._fatal is None:
            self._fatal = exc
            logger.error("commit log %s: fatal error while %s: %s", self.directory, doing, exc)
        self._append_epoch = -1
        raise CommitLogFatalError(f"commit log {self.directory}: {doing} failed: {exc}") from exc

    # ----------------------------------------------------------------- truncate

    def truncate(self, offset: int) -> None:
        """Remove every record with offset >= ``offset``, durably; then ``next_offset == offset``.

        Later segments are deleted (newest first, so a crash leaves a prefix), the segment
        holding ``offset`` is cut at that record's first byte, and epoch-history entries
        starting at or after ``offset`` are dropped (KIP-101's truncation of the leader
        epoch cache). Their epochs stay promised, so fencing survives the truncation.
        Readers started before a truncate stop with ``CommitLogError``.
        """
        with self._sync_lock, self._lock:
            self._check_writable()
            if not self.first_offset <= offset <= self._next_offset:
                raise ValueError(
                    f"cannot truncate to {offset}: the log holds [{self.first_offset}, {self._next_offset})"
                )
            if offset == self._next_offset:
                return
            self._generation += 1
            file = self._flush("flushing before truncate")
            idx = bisect.bisect_right(self._bases, offset) - 1
            seg = self._segments[idx]
            cut = self._position_of(seg, offset)
            for w in [*self._retired, file]:
                w.close()
            self._retired = []
            self._file = None
            try:
                removed = self._segments[idx + 1 :]
                for dead in reversed(removed):
                    os.unlink(dead.path)
                if removed:
                    _fsync_dir(self.directory)
            except OSError as exc:
                self._fail(exc, "deleting segments")
            del self._segments[idx + 1 :]
            del self._bases[idx + 1 :]
            self._cut_file(seg.path, cut)
            del seg.marks[-(-(offset - seg.base) // _MARK_EVERY) :]
            self._next_mark = seg.base + len(seg.marks) * _MARK_EVERY
            self._file = _Writer(seg.path, self._write_buffer)
            self._pos = cut
            self._next_offset = offset
            self._durable_offset = min(self._durable_offset, offset)
            kept = [(e, s) for e, s in self._history if s < offset]
            if kept != self._history:
                self._promised = max(self._promised, self.last_epoch)
                self._history = kept
                self._rewrite_epochs()
                self._append_epoch = -1

    def delete_segments_before(self, offset: int) -> int:
        """Delete every segment whose records all lie below ``offset``; return the new first offset.

        The active segment always stays. Callers make sure the deleted records are covered
        elsewhere (a checkpoint, and every replica that still needs them has them durably;
        docs/cluster.md). Readers already reading a deleted segment keep their open file.
        The epoch history is kept whole: ``epoch_end_offset`` answers stay valid.
        """
        with self._sync_lock, self._lock:
            self._check_writable()
            doomed = 0
            while doomed + 1 < len(self._bases) and self._bases[doomed + 1] <= offset:
                doomed += 1
            if not doomed:
                return self._bases[0]
            try:
                for seg in self._segments[:doomed]:  # oldest first: a crash leaves a suffix
                    os.unlink(seg.path)
                _fsync_dir(self.directory)
            except OSError as exc:
                self._fail(exc, "deleting old segments")
            del self._segments[:doomed]
            del self._bases[:doomed]
            return self._bases[0]

    def _position_of(self, seg: _Segment, offset: int) -> int:
        """Byte position of record ``offset`` (or of the segment end if it is next) in ``seg``."""
        if seg.marks:
            i = min((offset - seg.base) // _MARK_EVERY, len(seg.marks) - 1)
            pos, at = seg.marks[i], seg.base + i * _MARK_EVERY
        else:  # a segment with no records yet
            pos, at = SEGMENT_HEADER_SIZE, seg.base
        with open(seg.path, "rb") as f:
            f.seek(pos)
            while at < offset:
                header = f.read(RECORD_HEADER_SIZE)
                if len(header) < RECORD_HEADER_SIZE:
                    raise CommitLogCorruptError(f"{seg.path}: record {at} is missing")
                _crc, n, _epoch, got = _REC_HEADER.unpack(header)
                if got != at:
                    raise CommitLogCorruptError(f"{seg.path}: found record {got} where {at} should be")
                pos += RECORD_HEADER_SIZE + n
                f.seek(pos)
                at += 1
        return pos

    # ----------------------------------------------------------------- read

    def read_from(self, offset: int, stop: int | None = None) -> Iterator[Record]:
        """Yield records ``offset, offset + 1, ...`` up to ``stop`` (default: the end of the
        log when this is called), verifying each checksum.

        Reads through its own file handles, so it may run in any thread alongside appends
        and syncs; records appended after the call are not included. A concurrent
        ``truncate`` makes the iterator raise ``CommitLogError``.
        """
        with self._lock:
            if self._closed:
                raise CommitLogClosedError(f"commit log {self.directory} is closed")
            end = self._next_offset if stop is None else stop
            if not self.first_offset <= offset <= self._next_offset or not offset <= end <= self._next_offset:
                raise ValueError(
                    f"cannot read [{offset}, {end}): the log holds [{self.first_offset}, {self._next_offset})"
                )
            if self._fatal is None:
                self._flush("flushing for a reader")  # make buffered records visible to our fds
            first = bisect.bisect_right(self._bases, offset) - 1
            segments = [(s, s.base, s.path) for s in self._segments[first:]]
            start_pos = self._position_of(segments[0][0], offset) if offset < end else 0
            generation = self._generation
        return self._read(segments, offset, end, start_pos, generation)

    def _read(
        self, segments: list[tuple[_Segment, int, str]], offset: int, end: int, pos: int, generation: int
    ) -> Iterator[Record]:
        at = offset
        for i, (_seg, _base, path) in enumerate(segments):
            if at >= end:
                return
            seg_end = segments[i + 1][1] if i + 1 < len(segments) else end
            if i > 0:
                pos = SEGMENT_HEADER_SIZE
            with open(path, "rb", buffering=1 << 16) as f:
                f.seek(pos)
                while at < min(seg_end, end):
                    header = f.read(RECORD_HEADER_SIZE)
                    if self._generation != generation:
                        raise CommitLogError(f"commit log {self.directory} was truncated while being read")
                    if len(header) < RECORD_HEADER_SIZE:
                        raise CommitLogCorruptError(f"{path}: record {at} is missing")
                    crc, n, epoch, got = _REC_HEADER.unpack(header)
                    payload = f.read(n)
                    if got != at or len(payload) != n or _crc32(payload, _crc32(header[4:])) != crc:
                        raise CommitLogCorruptError(
                            f"{path}: record {at} is damaged (read back offset {got})"
                        )
                    yield Record(epoch, at, payload)
                    at += 1


_OPEN_TOKEN: Final = object()


def _check_u64(what: str, value: int) -> None:
    if not 0 <= value <= MAX_U64:
        raise ValueError(f"{what} {value} is not a u64")


class _Writer:
    """The active segment opened for appending, with a userspace buffer."""

    def __init__(self, path: str, buffering: int) -> None:
        self._f = open(path, "ab", buffering=buffering)
        self.write = self._f.write
        self.flush = self._f.flush
        self.fileno = self._f.fileno

    def close(self) -> None:
        self._f.close()


# --------------------------------------------------------------------------- group commit

DurableCallback = Callable[[BaseException | None], None]


class GroupCommitter:
    """A background thread that fsyncs a ``CommitLog`` in batches (group commit).

    The writer calls ``log.append(...)`` then ``committer.notify()``. The thread runs
    ``log.sync()`` whenever something was appended since its last sync started, so one
    fsync covers every record appended before it began and records appended during it
    wait for the next one. Waiters use ``wait_durable`` (threads), ``add_callback``
    (called from the sync thread) or ``await wait_durable_async`` (asyncio).

    "``offset`` is durable" means the record with that offset is on disk, i.e.
    ``durable_offset > offset``.
    """

    def __init__(self, log: CommitLog, *, name: str = "commitlog-sync", min_interval: float = 0.0) -> None:
        self._log = log
        # Seconds between the starts of two sync rounds. Every fsync costs kernel CPU and a
        # GIL hand-off from the writer; spacing them trades a little latency for throughput.
        self._min_interval = min_interval
        self._mutex = threading.Lock()
        self._work = threading.Condition(self._mutex)  # the sync thread waits here
        self._done = threading.Condition(self._mutex)  # waiters wait here
        self._dirty = False
        self._waiting = False
        self._closing = False
        self._stopped = False
        self._durable = log.durable_offset
        self._error: BaseException | None = None
        self._callbacks: list[tuple[int, int, DurableCallback]] = []  # heap by offset
        #: Settles ``wait_durable_async`` futures: one wake-up per event loop per sync round.
        self._settler = LoopSettler()
        self._seq = itertools.count()
        self.sync_count = 0
        """Number of sync rounds the thread has run."""
        #: Called on the sync thread with the new durable offset after every sync round
        #: (replication acks and quorum tracking hang here). Keep them quick.
        self.listeners: list[Callable[[int], None]] = []
        self._sync_thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._sync_thread.start()

    @property
    def durable_offset(self) -> int:
        """One past the last record the committer has seen made durable."""
        return self._durable

    def notify(self) -> None:
        """Tell the sync thread there are new records. Cheap when a sync is already due."""
        # Lock-free unless the sync thread is parked on the condition: taking the mutex while
        # the sync thread holds it would hand the GIL back and forth on every round. The
        # thread sets _waiting (under the mutex) before it re-checks _dirty, so a flag set
        # here is either seen by that check or followed by a notify.
        self._dirty = True
        if self._waiting:
            with self._mutex:
                self._work.notify()

    def wait_durable(self, offset: int, timeout: float | None = None) -> bool:
        """Block until record ``offset`` is durable; False on timeout.

        Raises ``CommitLogFatalError`` if the log failed and ``CommitLogClosedError`` if
        the committer stopped before the record became durable.
        """
        if offset < self._durable:
            return True
        with self._mutex:
            ok = self._done.wait_for(
                lambda: offset < self._durable or self._error is not None or self._stopped, timeout
            )
            if offset < self._durable:
                return True
            self._raise_if_done()
            return bool(ok)

    def add_callback(self, offset: int, fn: DurableCallback) -> None:
        """Call ``fn(None)`` once record ``offset`` is durable, or ``fn(error)`` if it never will be.

        ``fn`` runs on the sync thread (immediately in the caller if already settled), so
        it must be quick and thread-safe, e.g. ``loop.call_soon_threadsafe(...)``.
        """
        with self._mutex:
            if offset >= self._durable and self._error is None and not self._stopped:
                heapq.heappush(self._callbacks, (offset, next(self._seq), fn))
                return
            error = None if offset < self._durable else self._settle_error()
        run_callback(fn, error)

    async def wait_durable_async(self, offset: int) -> None:
        """Await durability of record ``offset`` without blocking the event loop."""
        if offset < self._durable:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.add_callback(offset, self._settler.settle_later(fut))
        await fut

    def close(self, timeout: float | None = None) -> None:
        """Run a final sync, stop the thread and settle every waiter. Idempotent.

        Does not close the log.
        """
        with self._mutex:
            self._closing = True
            self._work.notify()
        self._sync_thread.join(timeout)

    def __enter__(self) -> GroupCommitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _settle_error(self) -> BaseException:
        return self._error or CommitLogClosedError("group committer closed before the record was durable")

    def _raise_if_done(self) -> None:
        if self._error is not None:
            raise CommitLogFatalError(f"commit log failed: {self._error}") from self._error
        if self._stopped:
            raise CommitLogClosedError("group committer closed before the record was durable")

    def _run(self) -> None:
        last_start = 0.0
        while True:
            with self._mutex:
                self._waiting = True
                while not self._dirty and not self._closing:
                    self._work.wait()
                self._waiting = False
                closing = self._closing
            if not closing and self._min_interval > 0:
                pause = last_start + self._min_interval - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            with self._mutex:
                closing = self._closing
                self._dirty = False
            last_start = time.monotonic()
            try:
                durable = self._log.sync()
            except CommitLogError as exc:
                self._finish(exc)
                return
            except BaseException as exc:  # a bug; still never leave waiters hanging
                logger.exception("group committer crashed")
                self._finish(exc)
                raise
            self.sync_count += 1
            with self._mutex:
                self._durable = max(self._durable, durable)
                ready = []
                while self._callbacks and self._callbacks[0][0] < self._durable:
                    ready.append(heapq.heappop(self._callbacks)[2])
                self._done.notify_all()
            for fn in ready:
                run_callback(fn, None)
            for listener in self.listeners:
                try:
                    listener(durable)
                except Exception:  # one broken listener must not stop the sync thread
                    logger.exception("commit log durability listener failed")
            if closing:
                self._finish(None)
                return

    def _finish(self, error: BaseException | None) -> None:
        with self._mutex:
            if error is not None and not isinstance(error, CommitLogClosedError):
                self._error = error
            self._stopped = True
            pending = [fn for _, _, fn in self._callbacks]
            self._callbacks = []
            self._done.notify_all()
            settle = self._settle_error()
        for fn in pending:
            run_callback(fn, settle)


def run_callback(fn: DurableCallback, error: BaseException | None) -> None:
    """Call a durability callback; one that raises is logged, never allowed to stop the caller."""
    try:
        fn(error)
    except Exception:  # one broken waiter must not stop the sync thread
        logger.exception("commit log durability callback failed")


def resolve_future(fut: asyncio.Future[None], error: BaseException | None) -> None:
    """Settle ``fut`` with ``error`` (or success) unless it is settled already (event loop)."""
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


#: What a :class:`LoopSettler` settles on a loop: a future, or a callback run with the outcome.
_Settled = asyncio.Future[None] | DurableCallback


class LoopSettler:
    """Settles futures of event loops from other threads, one wake-up per loop for many.

    A sync round makes many waiters durable at once (under load, one per WebSocket connection
    with ``confirmed`` replies waiting). Settling each with its own ``call_soon_threadsafe``
    costs a write to the loop's self-pipe each — a system call, a release and retake of the GIL
    beside the busy writer, a wake-up of the loop's thread: measured ~15,000 a second each on
    the sync thread and the loop thread at 64 × 40 confirmed. Here the first settlement for a
    loop schedules one callback there, and those that follow before it runs join it. One per
    durability source (a database's committer, its quorum tracker) for awaited futures, and one,
    :data:`LOOP_CALLBACKS`, for every waiter that acts on the loop at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[asyncio.AbstractEventLoop, list[tuple[_Settled, BaseException | None]]] = {}

    def settle_later(self, fut: asyncio.Future[None]) -> DurableCallback:
        """A durability callback settling ``fut`` on its loop (callable from any thread)."""
        loop = fut.get_loop()

        def settle(error: BaseException | None) -> None:
            self._post(loop, fut, error)

        return settle

    def call_later(self, loop: asyncio.AbstractEventLoop, fn: DurableCallback) -> DurableCallback:
        """A durability callback that runs ``fn(error)`` on ``loop`` (callable from any thread):
        no future, no task woken — for a waiter that acts at once (hostnode/realtime.py)."""

        def settle(error: BaseException | None) -> None:
            self._post(loop, fn, error)

        return settle

    def _post(self, loop: asyncio.AbstractEventLoop, target: _Settled, error: BaseException | None) -> None:
        with self._lock:
            due = self._due.get(loop)
            if due is not None:
                due.append((target, error))
                return
            self._due[loop] = [(target, error)]
        try:
            loop.call_soon_threadsafe(self._settle_due, loop)
        except RuntimeError:  # the loop is closed: nobody waits on its futures any more
            with self._lock:
                self._due.pop(loop, None)

    def _settle_due(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            due = self._due.pop(loop, [])
        for target, error in due:
            if isinstance(target, asyncio.Future):
                resolve_future(target, error)
            else:
                run_callback(target, error)


#: The settler of waiters that act on the loop at once (``call_later``) rather than await a
#: future: held WebSocket replies (hostnode/realtime.py) and HTTP call answers
#: (hostnode/http_calls.py) share it, so a durability advance wakes each loop once for both.
LOOP_CALLBACKS = LoopSettler()
