"""A Prometheus configuration for a local cluster, from its ``cluster.json`` (pure: no I/O).

``orrery cluster prometheus-config --data-dir DIR`` prints it; the Prometheus test builds its
server's configuration with it. One job per kind of process, named so the alert rules
(``deploy/prometheus/alerts.yaml``) recognise them:

=========================  =================================================================
job                        targets
=========================  =================================================================
``orrery-gateway``         the gateway's ``/v1/metrics`` (its public port)
``orrery-controlplane``    the control plane's ``--metrics-addr`` ``/metrics``
``orrery-hostnode``        every host node's ``--metrics-addr`` ``/metrics``
``etcd``                   etcd's own ``/metrics``
=========================  =================================================================

The output is JSON, which is YAML too, so Prometheus reads it as it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["prometheus_config", "render"]


def _target(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc, parts.path or "/metrics"


def prometheus_config(
    doc: dict[str, Any], *, scrape_interval: str = "15s", evaluation_interval: str | None = None,
    rule_files: Sequence[str] = (),
) -> dict[str, Any]:  # fmt: skip
    """The configuration scraping every process ``doc`` (a ``cluster.json``) names."""
    groups: dict[str, list[str]] = {}
    for job, entries in (
        ("orrery-gateway", [doc["gateway"]]),
        ("orrery-controlplane", [doc["controlplane"]]),
        ("orrery-hostnode", list(doc["nodes"])),
        ("etcd", [doc["etcd"]]),
    ):
        for entry in entries:
            url = entry.get("metrics")
            if url:
                groups.setdefault(job, []).append(url)
    scrape_configs = []
    for job, urls in groups.items():
        by_path: dict[str, list[str]] = {}
        for url in urls:
            target, path = _target(url)
            by_path.setdefault(path, []).append(target)
        for i, (path, targets) in enumerate(by_path.items()):
            name = job if i == 0 else f"{job}-{i + 1}"  # job names must be unique
            scrape_configs.append({"job_name": name, "metrics_path": path, "static_configs": [{"targets": targets}]})
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval or scrape_interval},
        "scrape_configs": scrape_configs,
    }
    if rule_files:
        config["rule_files"] = list(rule_files)
    return config


def render(config: dict[str, Any]) -> str:
    """The configuration file's text (JSON, a subset of YAML)."""
    return json.dumps(config, indent=2) + "\n"
