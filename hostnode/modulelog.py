"""Per-database module logs: JSON lines in SpacetimeDB's format (module-abi.md §3.10).

Each line is one object: ``{"level":"Info","ts":<µs>,"target":…,"filename":…,"line_number":…,
"function":…,"message":…}`` with absent fields omitted. These are the lines that
``GET /v1/database/:name/logs`` serves. The file is appended with one ``write`` per record so a
crash loses at most the record being written; readers tolerate a torn last line.

Memory and disk stay bounded whatever a module logs: once the file reaches ``max_bytes`` it is
renamed to ``module.log.1`` (the older rotated files shift up, the oldest beyond ``keep`` is
removed) and a new file starts, and a tail reads backwards from the end of the files, never a
whole file. Followers are called from :meth:`ModuleLog.write` itself, so a rotation is invisible
to them.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Default size at which a database's module log is rotated, and how many rotated files are kept:
#: a database's logs take at most ``(1 + keep) × max_bytes`` of disk.
DEFAULT_MAX_BYTES = 4 << 20
DEFAULT_KEEP = 1
#: Bytes read per step when a tail scans backwards.
_TAIL_BLOCK = 64 << 10

LEVELS: dict[int, str] = {0: "Error", 1: "Warn", 2: "Info", 3: "Debug", 4: "Trace", 101: "Panic"}


def level_name(level: int) -> str:
    """The log level name for a ``console_log`` level number (unknown levels are Debug)."""
    return LEVELS.get(level, "Debug")


def record_line(
    level: str,
    message: str,
    *,
    function: str | None = None,
    target: str | None = None,
    filename: str | None = None,
    line_number: int | None = None,
    trace: list[dict[str, str]] | None = None,
    ts_micros: int | None = None,
) -> str:
    """One record as its JSON line (without the newline)."""
    record: dict[str, Any] = {"level": level, "ts": ts_micros if ts_micros is not None else time.time_ns() // 1000}
    if target is not None:
        record["target"] = target
    if filename is not None:
        record["filename"] = filename
    if line_number is not None:
        record["line_number"] = line_number
    if function is not None:
        record["function"] = function
    record["message"] = message
    if trace is not None:
        record["trace"] = trace
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return line


class ModuleLog:
    """An append-only JSON-lines log file for one database, rotated by size, with optional live
    followers."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        if max_bytes <= 0 or keep < 0:
            raise ValueError(f"module log limits must be positive (max_bytes={max_bytes}, keep={keep})")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._lock = threading.Lock()
        self._followers: list[Callable[[str], None]] = []

    def write(self, level: str, message: str, **fields: Any) -> None:
        """Append one record (``fields`` as :func:`record_line` takes them)."""
        line = record_line(level, message, **fields)
        data = (line + "\n").encode()
        with self._lock:
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            os.write(self._fd, data)
            self._size += len(data)
            followers = list(self._followers)
        for follower in followers:
            follower(line)

    def _rotate(self) -> None:
        """(under the lock) ``module.log`` becomes ``module.log.1``, ``.1`` becomes ``.2``, …; the
        file beyond ``keep`` is removed. A new ``module.log`` is started."""
        os.close(self._fd)
        self._fd = -1
        for i in range(self.keep, 0, -1):
            older = self.rotated(i)
            if i == self.keep:
                older.unlink(missing_ok=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    older.rename(self.rotated(i + 1))
        if self.keep:
            self.path.rename(self.rotated(1))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0

    def rotated(self, i: int) -> Path:
        """The ``i``-th rotated file (1 is the newest)."""
        return self.path.with_name(f"{self.path.name}.{i}")

    def follow(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(line)`` for every record written from now on; returns an unsubscribe function."""
        with self._lock:
            self._followers.append(callback)
        return self._unsubscriber(callback)

    def _unsubscriber(self, callback: Callable[[str], None]) -> Callable[[], None]:
        def unsubscribe() -> None:
            with self._lock:
                if callback in self._followers:
                    self._followers.remove(callback)

        return unsubscribe

    @property
    def follower_count(self) -> int:
        """How many followers are registered (lets a caller see that one has started)."""
        with self._lock:
            return len(self._followers)

    def tail(self, num_lines: int | None = None) -> list[str]:
        """The last ``num_lines`` complete lines (all that the files hold when None), oldest first.

        Reads backwards from the end, a block at a time, through the current file and then the
        rotated ones, so the cost is the lines asked for, not the size of the log.
        """
        with self._lock:  # a rotation must not move the files while they are read
            return self._tail(num_lines)

    def tail_and_follow(
        self, num_lines: int | None, callback: Callable[[str], None]
    ) -> tuple[list[str], Callable[[], None]]:
        """:meth:`tail`, then :meth:`follow` from exactly there: no line is missed or repeated."""
        with self._lock:  # write() appends under it: no line falls between the two
            lines = self._tail(num_lines)
            self._followers.append(callback)
        return lines, self._unsubscriber(callback)

    def _tail(self, num_lines: int | None) -> list[str]:
        if num_lines is not None and num_lines <= 0:
            return []
        files = [self.path, *(self.rotated(i) for i in range(1, self.keep + 1))]
        lines: list[bytes] = []
        for path in files:
            try:
                got = _tail_file(path, None if num_lines is None else num_lines - len(lines))
            except FileNotFoundError:
                break
            lines[:0] = got
            if num_lines is not None and len(lines) >= num_lines:
                break
        return [line.decode("utf-8", errors="replace") for line in lines]

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _tail_file(path: Path, num_lines: int | None) -> list[bytes]:
    """The last ``num_lines`` complete lines of one file (all when None), read backwards in
    blocks. A torn last line (a crash mid-write) is left out."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        buf = b""
        while pos > 0 and (num_lines is None or buf.count(b"\n") <= num_lines):
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
    # Only what ends in a newline is a complete line; the first piece may be cut (unless the
    # file's start was reached).
    complete = buf[: buf.rfind(b"\n") + 1]
    lines = complete.split(b"\n")[:-1]
    if pos > 0:
        lines = lines[1:]
    if num_lines is not None:
        lines = lines[-num_lines:]
    return lines
