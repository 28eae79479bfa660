"""The isolation benchmark in a tiny mode: both phases must run against a real server, answer
200, and see the spinning call stopped by its time budget. Not a timed test: no threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import bench_isolation


def test_tiny_run_reports_both_phases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    argv = ["--target", "standalone", "--spinners", "1", "--rounds", "5", "--time-budget", "5"]
    code = bench_isolation.main([*argv, "--dir", str(tmp_path), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["ok"] is True
    [target] = report["targets"]
    assert [p["name"] for p in target["phases"]] == ["quiet", "spinning"]
    for phase in target["phases"]:
        assert phase["non_200"] == 0 and phase["spinners_ended_early"] == 0
        assert [(lat["kind"], len(lat["ms"])) for lat in phase["latencies"]] == [("ping", 5), ("sql", 5), ("call", 5)]
    assert target["spinners_not_stopped_by_budget"] == 0
    assert "spinning  ping" in printed and "CPU probe" in printed
    # The server was stopped and its data removed.
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.parametrize("bad", [["--rounds", "0"], ["--time-budget", "2"], ["--spinners", "0"]])
def test_unusable_settings_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_isolation.main(bad)
    assert exc.value.code == 2
