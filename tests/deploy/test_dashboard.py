"""deploy/grafana/orrery.json and deploy/prometheus/alerts.yaml, without a running cluster: the
dashboard is what tools/grafana_dashboard.py builds, every metric they name is one Orrery
exports, and promtool accepts the rules and passes their unit tests (alerts_test.yaml).

(tests/cluster/test_prometheus.py runs every panel's query against a real Prometheus.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from clustermeta.metrics import SPECS as METASTORE_SPECS
from controlplane.metrics import SPECS as CONTROLPLANE_SPECS
from gateway.metrics import SPECS as GATEWAY_SPECS
from hostnode.metrics import SPECS as HOSTNODE_SPECS
from observability.exposition import encode_text
from observability.registry import new_registry
from tests.prometheus_harness import PROMTOOL_BINARY
from tests.servers import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "orrery.json"
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
_NAME = re.compile(r"\b((?:spacetime|orrery|reducer)_[a-z0-9_]+|up)\b")


SPECS = (*HOSTNODE_SPECS, *GATEWAY_SPECS, *CONTROLPLANE_SPECS, *METASTORE_SPECS)
#: Label names that look like metric names to the pattern (``reducer_symbol``).
LABELS = {label for spec in SPECS for label in spec.labels}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression mentions."""
    return set(_NAME.findall(expr)) - LABELS


def exported_names() -> set[str]:
    """Every sample name an Orrery process can expose."""
    names: set[str] = set()
    for spec in SPECS:
        names.add(spec.name)
        if spec.kind == "histogram":
            names |= {f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"}
    process = encode_text(new_registry("test")).decode()
    names |= {line.split("{")[0].split(" ")[0] for line in process.splitlines() if not line.startswith("#")}
    return names | {"up"}


def test_the_dashboard_is_what_the_generator_builds() -> None:
    check = subprocess.run(
        [sys.executable, "tools/grafana_dashboard.py", "--check"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_the_dashboard_has_a_database_variable_and_names_only_exported_metrics() -> None:
    doc = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["database"]["definition"] == "label_values(spacetime_num_txns_total, db)"
    assert variables["database"]["includeAll"] and variables["datasource"]["query"] == "prometheus"
    known = exported_names()
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == [
        "Overview", "Throughput and latency", "Errors", "Energy", "Clients and subscriptions", "Replication",
        "Storage", "Nodes",
    ]  # fmt: skip
    using_database = 0
    for panel in panels:
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and names <= known, (panel["title"], names - known)
            using_database += "$database" in target["expr"]
    assert using_database >= 30


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts_test.yaml"]):
        run = subprocess.run([PROMTOOL_BINARY, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    text = (PROMETHEUS_DIR / "alerts.yaml").read_text()
    exprs = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", "summary", "description")))
    names = metric_names(exprs)
    assert names and names <= exported_names(), names - exported_names()
