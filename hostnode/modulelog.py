"""Per-database module logs: JSON lines in SpacetimeDB's format (module-abi.md §3.10).

Each line is one object: ``{"level":"Info","ts":<µs>,"target":…,"filename":…,"line_number":…,
"function":…,"message":…}`` with absent fields omitted. These are the lines that
``GET /v1/database/:name/logs`` serves. The file is appended with one ``write`` per record so a
crash loses at most the record being written; readers tolerate a torn last line.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LEVELS: dict[int, str] = {0: "Error", 1: "Warn", 2: "Info", 3: "Debug", 4: "Trace", 101: "Panic"}


def level_name(level: int) -> str:
    """The log level name for a ``console_log`` level number (unknown levels are Debug)."""
    return LEVELS.get(level, "Debug")


class ModuleLog:
    """An append-only JSON-lines log file for one database, with optional live followers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()
        self._followers: list[Callable[[str], None]] = []

    def write(
        self,
        level: str,
        message: str,
        *,
        function: str | None = None,
        target: str | None = None,
        filename: str | None = None,
        line_number: int | None = None,
        trace: list[dict[str, str]] | None = None,
        ts_micros: int | None = None,
    ) -> None:
        """Append one record."""
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
        data = (line + "\n").encode()
        with self._lock:
            os.write(self._fd, data)
            followers = list(self._followers)
        for follower in followers:
            follower(line)

    def follow(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(line)`` for every record written from now on; returns an unsubscribe function."""
        with self._lock:
            self._followers.append(callback)

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
        """The last ``num_lines`` complete lines (all when None)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.decode("utf-8", errors="replace").split("\n")
        # The last element is "" after a complete line, or a torn partial line: drop it either way.
        lines = lines[:-1]
        if num_lines is not None:
            lines = lines[-num_lines:] if num_lines > 0 else []
        return lines

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
