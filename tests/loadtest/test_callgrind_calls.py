"""loadtest/callgrind_calls.py: instructions of the server's processes per reducer call, from callgrind's dumps."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from loadtest import callgrind_calls

DUMP = """# callgrind format
version: 1
positions: line
events: Ir
summary: 0

ob=(1) /lib/libpython.so
fn=(1) outer
10 100
+2 50
cfn=(2) inner
calls=3 20
12 400
fn=(2) inner
20 400
"""


def test_the_total_counts_self_costs_only_and_every_dump(tmp_path: Path) -> None:
    (tmp_path / "counted.1.cg").write_text(DUMP)
    (tmp_path / "counted.cg").write_text(DUMP.replace("20 400", "20 7"))
    (tmp_path / "cg.123").write_text(DUMP)  # another process: not counted
    # outer's 150 + inner's 400 (the 400 after calls= is inner's inclusive cost, already counted).
    assert callgrind_calls._total(tmp_path) == (100 + 50 + 400) + (100 + 50 + 7)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
@pytest.mark.parametrize("protocol", ["http", "ws"])
def test_it_counts_the_gateway_per_call(protocol: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--protocol", protocol, "--calls", "20", "--warmup", "5", "--clients", "4", "--inflight", "2", "--accounts", "100"]
    assert callgrind_calls.main(args) == 0
    out = capsys.readouterr().out
    m = re.search(rf"gateway: ([\d,]+) instructions for 20 {protocol} calls = ([\d,]+) per call", out)
    assert m is not None, out
    # A call through aiohttp and the link is some tens to hundreds of thousands of instructions, never 0.
    assert 10_000 < int(m.group(2).replace(",", "")) < 20_000_000


def test_each_threads_dump_is_counted_apart(tmp_path: Path) -> None:
    (tmp_path / "counted.1-01.cg").write_text(DUMP)
    (tmp_path / "counted.1-11.cg").write_text(DUMP.replace("20 400", "20 7"))
    (tmp_path / "counted.cg").write_text(DUMP)  # the process's last dump, no thread number: not a thread
    assert callgrind_calls._per_thread(tmp_path) == {1: 550, 11: 157}
