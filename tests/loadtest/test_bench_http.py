"""The HTTP benchmark harness in a tiny mode: it must finish with only 200 answers and a sane report.

A correctness check of ``loadtest.bench_http`` (real server subprocess, publish, seed, /call load,
/sql queries, server stopped) — not a timed test: no threshold on any speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import bench_http
from loadtest.bench_http import percentile

TINY = [
    "--seconds",
    "1",
    "--clients",
    "2",
    "--accounts",
    "100",
    "--queries",
    "50",
    "--warmup",
    "0.2",
    "--no-uvloop",
]


def test_tiny_run_answers_200_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    code = bench_http.main([*TINY, "--dir", str(tmp_path), "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert code == 0, printed
    assert report["ok"] is True

    assert report["accounts_seeded"] == 100
    assert [load["label"] for load in report["loads"]] == ["/call transfer", "/call transfer (hand-written client)"]
    for load in report["loads"]:  # aiohttp's client, then the hand-written one
        assert load["clients"] == 2
        assert load["requests"] > 0
        assert load["statuses"] == {"200": load["requests"]}, load["error_samples"]
        assert load["non_200"] == 0 and load["error_samples"] == []
        assert 0 < load["seconds"] < 1 + 30 + 5  # the time bound, plus at most one request timeout
        assert 0 < load["p50_ms"] <= load["p95_ms"] <= load["p99_ms"] <= load["max_ms"]
        assert load["rps"] == pytest.approx(load["requests"] / load["seconds"])
        assert 1 <= load["connections_opened"] <= 2  # keep-alive: at most one connection per client
        assert load["reducer_us_mean"] > 0
    assert set(report["warmup_statuses"]) <= {"200"}

    sql = report["sql"]
    assert sql["queries"] == 50
    assert sql["statuses"] == {"200": 50} and sql["wrong_rows"] == 0 and sql["failures"] == 0
    assert 0 < sql["p50_ms"] <= sql["p95_ms"] <= sql["p99_ms"] <= sql["max_ms"]

    assert report["machine"]["cores"] >= 1 and report["machine"]["python"].startswith("CPython")
    assert "| /call transfer | asyncio | 2 |" in printed
    assert "| /call transfer (hand-written client) | asyncio | 2 |" in printed
    assert "| /sql point query | blocking socket | 1 (sequential) | 50 |" in printed
    assert "| /sql point query (aiohttp client) | asyncio | 1 (sequential) | 50 |" in printed
    both = report["sql_aiohttp"]
    assert both["statuses"] == {"200": 50} and both["wrong_rows"] == 0 and both["failures"] == 0
    assert "FAILED" not in printed
    # The server was stopped and the temporary data directory removed.
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_time_bound_and_count_bound(tmp_path: Path) -> None:
    cfg = bench_http.BenchConfig(
        seconds=30,
        clients=2,
        accounts=10,
        max_calls=25,
        warmup=0,
        queries=5,
        uvloop=False,
        data_parent=tmp_path,
    )
    report = bench_http.run_benchmark(cfg, log=lambda _line: None)
    assert report.ok
    for load in report.loads:  # both clients
        assert load.requests == 25  # the count bound ended the phase, long before 30 s
        assert load.seconds < 30


@pytest.mark.parametrize(
    "bad", [["--accounts", "1"], ["--clients", "0"], ["--seconds", "0"], ["--queries", "0"]]
)
def test_rejects_unusable_settings(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bench_http.main(bad)
    assert e.value.code == 2


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0


def test_error_answers_are_counted_and_fail_the_run(tmp_path: Path) -> None:
    # Zero balances: every transfer fails with 530 insufficient_funds, which must show, not vanish.
    cfg = bench_http.BenchConfig(
        seconds=30, clients=2, accounts=10, max_calls=20, warmup=0, queries=5, balance=0, uvloop=False,
        data_parent=tmp_path,
    )  # fmt: skip
    report = bench_http.run_benchmark(cfg, log=lambda _line: None)
    for load in report.loads:  # aiohttp's client and the hand-written one read error answers alike
        assert load.statuses == {"530": 20} and load.non_200 == 20
        assert len(load.error_samples) == bench_http.ERROR_SAMPLES
        assert all(s.startswith("530 ") and "insufficient_funds" in s for s in load.error_samples)
    assert not report.ok
    text = bench_http.render(report)
    assert "| 20×530 |" in text and "insufficient_funds" in text and "FAILED" in text
