"""loadtest/probe_fanout.py: a tiny run delivers every round to every subscriber and reports."""

from __future__ import annotations

import re

import pytest

from loadtest import probe_fanout


def test_tiny_run_delivers_every_round_and_reports_each_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert probe_fanout.main(["--rounds", "3", "--conns", "5"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^5 subscribers × 3 rounds \(split\): p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms, 0 missing, 0 bad$", out, re.M), out
    assert len(re.findall(r"\d+/\d+/\d+/\d+", out)) == 3, out
    processes = re.findall(r"^  (.+): [\d.]+ ms CPU per round$", out, re.M)
    assert processes[0] == "server" and "generator" in processes and any("standalone_node" in p for p in processes), out


@pytest.mark.parametrize("bad", [["--rounds", "0"], ["--conns", "0"], ["--transport", "carrier-pigeon"]])
def test_unusable_settings_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        probe_fanout.main(bad)
    assert e.value.code == 2
