"""The shapes benchmark in a tiny mode: the engine and every shape must run against a real server
and finish with only the expected answers and a complete report.

A correctness check of ``loadtest.bench_shapes`` (the engine bench in a child process, a real
standalone server, WebSocket and HTTP loads, fan-out under load, the ratio to the engine) — not
a timed test: no threshold on any speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import bench_shapes
from loadtest.bench_shapes import SHAPES, server_processes

TINY = [
    "--seconds", "0.5", "--warmup", "0.2", "--accounts", "100", "--engine-calls", "300",
    "--fanout-conns", "20", "--fanout-rounds", "2",
]  # fmt: skip


@pytest.mark.slow
def test_tiny_run_of_every_shape_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    code = bench_shapes.main([*TINY, "--dir", str(tmp_path), "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert code == 0, printed
    assert report["ok"] is True
    assert report["probe_start"]["best_ms"] > 0 and report["probe_end"]["best_ms"] > 0

    engine = {e["distribution"]: e for e in report["engine"]}
    assert set(engine) == {"uniform", "zipf"}
    for e in engine.values():
        assert e["calls"] == 300 and e["rate"] > 0 and e["writer_cpu_us"] > 0
        assert {"wasm", "host", "datastore", "commitlog"} <= set(e["split_us"])

    assert [s["shape"] for s in report["shapes"]] == list(SHAPES)
    for s in report["shapes"]:
        assert s["calls"] > 0 and s["bad_answers"] == 0 and s["error_samples"] == [], s
        assert s["engine_ratio"] == pytest.approx(s["rate"] / engine[s["distribution"]]["rate"])
        assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert s["process_cpu_us"]["server"] > 0 and s["load_generator_cpu_us"] > 0
        assert f"| {s['shape']} |" in printed
    fan = next(s["fanout"] for s in report["shapes"] if s["shape"] == "fanout-1000")
    assert fan["deliveries"] == 20 * 2 and fan["missing"] == 0 and fan["bad_answers"] == 0
    assert "× engine" in printed and "CPU probe" in printed and "FAILED" not in printed
    # The server was stopped and the temporary data directory removed.
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_one_shape_runs_alone(tmp_path: Path) -> None:
    cfg = bench_shapes.ShapesConfig(
        shapes=("ws-64x1-zipf-confirmed",), seconds=0.3, warmup=0, accounts=50, engine_calls=100,
        data_parent=str(tmp_path),
    )  # fmt: skip
    report = bench_shapes.run_benchmark(cfg, log=lambda _line: None)
    assert report.ok
    [shape] = report.shapes
    assert shape.shape == "ws-64x1-zipf-confirmed" and shape.distribution == "zipf"
    assert "Zipf 1.5, confirmed" in shape.description


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shape", "ws-64x40"], "unknown shape ws-64x40; the shapes are ws-64x40-uniform,"),
        (["--accounts", "1"], "--accounts must be at least 2"),
        (["--seconds", "0", "--engine-calls", "0"], "--seconds, --engine-calls must be positive"),
    ],
)
def test_bad_flags_are_refused_before_anything_runs(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_shapes.main([*args, "--dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_server_processes_names_each_child_by_its_module() -> None:
    # A child that waits on its stdin: alive until the test closes it.
    child = subprocess.Popen([sys.executable, "-m", "json.tool"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        found = server_processes(child.pid)
        assert found == {"server": child.pid}
        mine = server_processes(os.getpid())
        assert mine["server"] == os.getpid() and mine[f"json.tool {child.pid}"] == child.pid
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
