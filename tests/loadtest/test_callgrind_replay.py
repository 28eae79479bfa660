"""loadtest/callgrind_replay.py: the follower-apply cost probe replays real transfers and checks
that the replica ends with the leader's rows (so a figure from it is of a correct replay)."""

from __future__ import annotations

import pytest

from loadtest import callgrind_replay


def test_replaying_transfers_reproduces_the_leaders_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert callgrind_replay.main(["60"]) == 0
    out = capsys.readouterr().out
    assert "replayed 60 records" in out
    assert "the replica holds the leader's rows" in out
