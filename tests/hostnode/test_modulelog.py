"""Module logs stay bounded (issue 12): rotated by size, tails read from the end, followers
survive a rotation, and a follower that does not read loses lines (with a marker) instead of
making the server hold them."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from hostnode.grpc_service import LogFollowQueue
from hostnode.modulelog import ModuleLog


def messages(lines: list[str]) -> list[str]:
    return [json.loads(line)["message"] for line in lines]


def test_rotates_by_size_keeping_one_file(tmp_path: Path) -> None:
    log = ModuleLog(tmp_path / "module.log", max_bytes=2000, keep=1)
    for i in range(200):
        log.write("Info", f"line {i:03d}")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["module.log", "module.log.1"]
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)
    # The tail spans both files, oldest first, and ends with the newest line.
    everything = messages(log.tail())
    assert everything[-1] == "line 199"
    assert everything == [f"line {i:03d}" for i in range(200 - len(everything), 200)]
    assert len(everything) < 200  # the oldest lines are gone
    assert messages(log.tail(3)) == ["line 197", "line 198", "line 199"]
    # More than the current file holds comes from the rotated one.
    current = len((tmp_path / "module.log").read_text().splitlines())
    assert messages(log.tail(current + 2)) == everything[-(current + 2) :]


def test_rotation_keeps_configured_number_of_files(tmp_path: Path) -> None:
    log = ModuleLog(tmp_path / "module.log", max_bytes=500, keep=2)
    for i in range(100):
        log.write("Info", f"line {i}")
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["module.log", "module.log.1", "module.log.2"]


def test_tail_reads_from_the_end_not_the_whole_file(tmp_path: Path) -> None:
    """A log with 64 GiB before its last lines (a sparse hole: no disk used): reading the whole
    file could not finish; the tail reads only the blocks at the end."""
    path = tmp_path / "module.log"
    with path.open("wb") as f:
        f.truncate(64 << 30)
        f.seek(0, os.SEEK_END)
        f.write(b"\n")
    log = ModuleLog(path, max_bytes=1 << 40)
    for i in range(3):
        log.write("Info", f"line {i}")
    assert messages(log.tail(2)) == ["line 1", "line 2"]
    log.write("Info", "torn")
    with path.open("ab") as f:
        f.write(b'{"level":"Info","mess')  # a crash mid-write: not a line yet
    assert messages(log.tail(1)) == ["torn"]
    log.close()


def test_followers_keep_receiving_across_rotations(tmp_path: Path) -> None:
    log = ModuleLog(tmp_path / "module.log", max_bytes=300, keep=1)
    got: list[str] = []
    log.follow(got.append)
    for i in range(50):
        log.write("Info", f"line {i}")
    log.close()
    assert (tmp_path / "module.log.1").exists()
    assert messages(got) == [f"line {i}" for i in range(50)]


def test_a_slow_follower_skips_lines_with_a_marker() -> None:
    async def body() -> None:
        queue = LogFollowQueue(max_bytes=100)
        lines = [json.dumps({"level": "Info", "message": f"line {i}"}) for i in range(20)]
        for line in lines:  # nobody reads: only what fits in 100 bytes is kept
            queue.put(line)
        assert queue.queued_bytes <= 100
        first = await queue.batch(1000)
        kept = len(first) - 1
        assert 0 < kept < 20
        assert first[:kept] == lines[:kept]
        marker = json.loads(first[-1])
        assert marker["level"] == "Warn" and marker["target"] == "orrery"
        assert marker["message"].startswith(f"{20 - kept} log lines skipped: this reader fell behind")
        # Caught up: new lines arrive again, in order.
        queue.put(lines[0])
        assert await queue.batch(1000) == [lines[0]]

    asyncio.run(body())
