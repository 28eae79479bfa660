"""``orrery cluster prometheus-config``: a Prometheus configuration from a local cluster's
``cluster.json`` (orrery/monitoring.py), which promtool accepts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from orrery.cluster_local import LocalCluster
from tests.cli.conftest import run_cli
from tests.prometheus_harness import PROMTOOL_BINARY
from tests.servers import REPO_ROOT

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yaml"


def test_a_configuration_scraping_every_process(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", nodes=3, listen_addr="127.0.0.1:0")  # not started: ports only
    doc = cluster.describe()
    assert doc["gateway"]["metrics"] == f"{cluster.gateway_url}/v1/metrics"
    assert doc["nodes"][1]["metrics"] == f"http://{cluster.metrics_address('node-2')}/metrics"
    assert "--metrics-addr" in doc["nodes"][1]["argv"] and "--metrics-addr" in doc["controlplane"]["argv"]
    cluster.write_json()

    result = run_cli("cluster", "prometheus-config", "--data-dir", str(tmp_path / "c"), "--rules", str(ALERTS))
    assert result.code == 0, result.err
    config = json.loads(result.out)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"orrery-gateway", "orrery-controlplane", "orrery-hostnode", "etcd"}
    assert jobs["orrery-gateway"]["metrics_path"] == "/v1/metrics"
    assert jobs["orrery-hostnode"]["static_configs"][0]["targets"] == [
        cluster.metrics_address(n) for n in ("node-1", "node-2", "node-3")
    ]
    assert config["rule_files"] == [str(ALERTS)] and config["global"]["scrape_interval"] == "15s"
    # Ports stay what cluster.json says when the cluster is brought up again from it.
    again = LocalCluster(tmp_path / "c", nodes=3)
    assert again.metrics_address("controlplane") == cluster.metrics_address("controlplane")

    path = tmp_path / "prometheus.yml"
    path.write_text(result.out)
    check = subprocess.run([PROMTOOL_BINARY, "check", "config", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    missing = run_cli("cluster", "prometheus-config", "--data-dir", str(tmp_path / "nothing"))
    assert missing.code != 0 and "cluster.json does not exist" in missing.err
