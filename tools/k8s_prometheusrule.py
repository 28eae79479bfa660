"""Write the Kubernetes PrometheusRule of Orrery's alerts from the Prometheus rule file.

``deploy/prometheus/alerts.yaml`` (what Prometheus and ``promtool check rules`` load) is the
source; ``deploy/k8s/components/monitoring/prometheusrule.yaml`` carries the same groups for the
Prometheus Operator. kustomize cannot wrap a rule file into a custom resource, so the second is
generated, committed, and checked by tests/k8s (which fails while the two differ)::

    make k8s-rules          # or: .venv/bin/python tools/k8s_prometheusrule.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE = ROOT / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by tools/k8s_prometheusrule.py (`make k8s-rules`);
# do not edit: change alerts.yaml and regenerate (tests/k8s checks the two agree).
"""


def prometheus_rule(alerts: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule object whose spec holds ``alerts``' groups."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "orrery",
            # kube-prometheus-stack's Prometheus selects rules by its Helm release's name.
            "labels": {
                "app.kubernetes.io/name": "orrery",
                "app.kubernetes.io/component": "monitoring",
                "release": "kube-prometheus-stack",
            },
        },
        "spec": {"groups": alerts["groups"]},
    }


def render(alerts_path: Path = ALERTS) -> str:
    """The text of the generated file."""
    alerts = yaml.safe_load(alerts_path.read_text())
    if not isinstance(alerts, dict) or not isinstance(alerts.get("groups"), list):
        raise ValueError(f"{alerts_path} has no `groups:` list")
    return HEADER + yaml.safe_dump(prometheus_rule(alerts), sort_keys=False, width=100, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) the PrometheusRule."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not RULE.exists() or RULE.read_text() != text:
            print(f"{RULE.relative_to(ROOT)} is out of date: run `make k8s-rules`", file=sys.stderr)
            return 1
        return 0
    RULE.write_text(text)
    print(f"wrote {RULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
