"""The cluster benchmark in a tiny mode: every phase runs on its own real local cluster and must
finish with only the expected answers and a complete report.

A correctness check of ``loadtest.bench_cluster`` (clusters started and stopped, R=1/R=3 load
through the gateway, a leader kill, add-replica and a follower's rejoin, a few publishes) — not
a timed test: no threshold on any speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import bench_cluster
from loadtest.bench_cluster import cpu_probe, log_growth

TINY = [
    "--seconds", "0.5", "--warmup", "0", "--conns", "2", "--inflight", "2", "--accounts", "100",
    "--kills", "1", "--lease-ttl", "1", "--fast-etcd",
    "--catchup-mb", "1", "--message-kb", "16", "--catchup-load-seconds", "10", "--rejoin-seconds", "0.5",
    "--databases", "3", "--settle-seconds", "0", "--idle-seconds", "0.2",
]  # fmt: skip


@pytest.mark.slow
def test_tiny_run_of_every_phase_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    code = bench_cluster.main([*TINY, "--dir", str(tmp_path), "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert code == 0, printed
    assert report["ok"] is True
    assert set(report["probes"]) == set(bench_cluster.PHASES)
    assert all(p["start"]["best_ms"] > 0 and p["end"]["best_ms"] > 0 for p in report["probes"].values())

    runs = report["throughput"]
    assert [r["replicas"] for r in runs] == [1, 3]
    for run in runs:
        load = run["load"]
        assert load["calls"] > 0 and load["bad_answers"] == 0, load["error_samples"]
        cpu = load["process_cpu_s"]
        assert {"gateway", "etcd", "control plane"} <= set(cpu)
        roles = sorted(k.split()[0] for k in cpu if k.startswith(("leader", "follower", "idle")))
        assert roles == (["follower", "follower", "leader"] if run["replicas"] == 3 else ["idle", "idle", "leader"])
    assert "R=3 / R=1 = " in printed

    failover = report["failover"]
    [kill] = failover["kills"]
    assert kill["first_commit_s"] is not None and kill["new_leader"] not in (None, kill["killed"])
    assert failover["probe_statuses"].get("200", 0) >= 1

    catchup = report["catchup"]
    assert catchup["caught_up_s"] is not None and catchup["fill"]["bad_answers"] == 0
    assert catchup["records"] > 0 and catchup["new_clog_bytes"] > 0
    rejoin = catchup["rejoin"]
    assert rejoin["caught_up_s"] is not None and rejoin["records"] > 0

    many = report["databases"]
    assert many["published"] == 3 and many["failures"] == []
    assert sorted(n["replicas"] for n in many["nodes"]) == [3, 3, 3]
    assert sum(n["leaders"] for n in many["nodes"]) == 3
    assert "| node-1 |" in printed


def test_cpu_probe_and_log_growth() -> None:
    probe = cpu_probe(iterations=1000, repeats=3)
    assert 0 < probe.best_ms <= probe.median_ms
    # A segment deleted in between held only older records; a new one counts whole.
    assert log_growth({"a.log": 100, "b.log": 50}, {"b.log": 80, "c.log": 30}) == 60
