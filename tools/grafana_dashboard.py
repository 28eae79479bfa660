"""Builds ``deploy/grafana/orrery.json``, the Grafana dashboard of an Orrery cluster (or server).

    .venv/bin/python tools/grafana_dashboard.py            # rewrite deploy/grafana/orrery.json
    .venv/bin/python tools/grafana_dashboard.py --check    # exit 1 if the file is not what this builds

The dashboard is code here and JSON in the repository (what Grafana and the Kubernetes ConfigMap
take); ``tests/deploy/test_dashboard.py`` fails when the two disagree, and the Prometheus test
(``tests/cluster/test_prometheus.py``) runs every panel's query against a real Prometheus
scraping a real cluster. Two template variables: ``datasource`` (any Prometheus) and
``database`` (database identities, from ``spacetime_num_txns_total``; several or all).

Queries use ``$__rate_interval`` (Grafana's window for ``rate``) and ``$database``; labels are
1.12's (``db`` on datastore metrics, ``database_identity`` on worker metrics) and Orrery's.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "orrery.json"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DB = 'db=~"$database"'
DBI = 'database_identity=~"$database"'
RATE = "$__rate_interval"


@dataclass
class Panel:
    """One time-series (or stat) panel: a title, what it shows, its queries ``(expr, legend)``."""

    title: str
    description: str
    targets: list[tuple[str, str]]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8


@dataclass
class Row:
    """A row of panels, with the sentence the README uses to describe it."""

    title: str
    description: str
    panels: list[Panel] = field(default_factory=list)


def _q(quantile: float, metric: str, selector: str, by: str) -> str:
    return f"histogram_quantile({quantile}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


ROWS = [
    Row(
        "Overview",
        "The whole deployment at a glance: transactions per second, connected clients, live host nodes, "
        "databases without a leader, and failed transactions.",
        [
            Panel("Transactions / s", "Committed and failed transactions of the selected databases.",
                  [(f'sum(rate(spacetime_num_txns_total{{{DB}}}[{RATE}]))', "transactions/s")], "ops", "stat", 5),
            Panel("Connected clients", "WebSocket clients connected to the selected databases.",
                  [(f"sum(spacetime_worker_connected_clients{{{DBI}}})", "clients")], "short", "stat", 5),
            Panel("Live host nodes", "Host nodes holding their lease in etcd, as the active control plane sees them.",
                  [("max(orrery_controlplane_live_nodes)", "nodes")], "short", "stat", 4),
            Panel("Databases without a leader",
                  "Databases whose record names no live leader right now (an election runs, or no majority).",
                  [(f"sum(1 - orrery_database_has_leader{{{DB}}})", "leaderless")], "short", "stat", 5),
            Panel("Failed transactions / s", "Transactions rolled back (reducer errors, traps, out of energy).",
                  [(f'sum(rate(spacetime_num_txns_total{{{DB},committed="false"}}[{RATE}]))', "failed/s")],
                  "ops", "stat", 5),
        ],
    ),
    Row(
        "Throughput and latency",
        "Per database and reducer: calls per second, transaction time (p50 and p99), the time calls wait "
        "for their database, WebSocket request round trips, and the gateway's HTTP traffic and latency.",
        [
            Panel("Reducer calls / s", "Transactions per second by database and reducer.",
                  [(f'sum by (db, reducer) (rate(spacetime_num_txns_total{{{DB},txn_type="Reducer"}}[{RATE}]))',
                    "{{reducer}} {{db}}")], "ops"),
            Panel("Transaction time p50 / p99", "Wall time of a reducer's transaction, from begin to commit.",
                  [(_q(0.5, "spacetime_txn_elapsed_time_sec", DB, "db, reducer"), "p50 {{reducer}}"),
                   (_q(0.99, "spacetime_txn_elapsed_time_sec", DB, "db, reducer"), "p99 {{reducer}}")], "s"),
            Panel("Reducer wait p99", "Time a call waited for its database's writer before it ran.",
                  [(_q(0.99, "spacetime_reducer_wait_time_sec", DB, "db, reducer"), "{{reducer}}")], "s"),
            Panel("WebSocket round trip p99", "Request received → answered, by request kind and reducer.",
                  [(_q(0.99, "spacetime_request_round_trip_time", DBI, "txn_type, reducer_symbol"),
                    "{{txn_type}} {{reducer_symbol}}")], "s"),
            Panel("HTTP requests / s", "Requests the gateways answered, by route.",
                  [(f"sum by (route) (rate(orrery_gateway_http_requests_total[{RATE}]))", "{{route}}")], "reqps"),
            Panel("HTTP latency p99", "Time to answer an HTTP request, by route (WebSocket sessions excluded).",
                  [(_q(0.99, "orrery_gateway_http_request_duration_seconds", "", "route"), "{{route}}")], "s"),
        ],
    ),
    Row(
        "Errors",
        "What went wrong: failed transactions by reducer, wasm traps, HTTP answers by status code, and the "
        "gateway's retries during failovers.",
        [
            Panel("Failed transactions / s", "Rolled-back transactions by database and reducer.",
                  [(f'sum by (db, reducer) (rate(spacetime_num_txns_total{{{DB},committed="false"}}[{RATE}]))',
                    "{{reducer}} {{db}}")], "ops"),
            Panel("WASM instance errors", "Reducer calls that trapped (panics, out of energy), over 5 minutes.",
                  [(f"sum by (database_identity, reducer_symbol) "
                    f"(increase(spacetime_worker_wasm_instance_errors_total{{{DBI}}}[5m]))", "{{reducer_symbol}}")]),
            Panel("HTTP answers by status", "Gateway answers per second by status code (503: failover or no quorum).",
                  [(f"sum by (code) (rate(orrery_gateway_http_requests_total[{RATE}]))", "{{code}}")], "reqps"),
            Panel("Gateway routing retries", "Requests a gateway retried, by reason (leader moved, no leader, ...).",
                  [(f"sum by (reason) (rate(orrery_gateway_routing_retries_total[{RATE}]))", "{{reason}}")], "ops"),
        ],
    ),
    Row(
        "Energy",
        "What reducers cost: wasmtime fuel (1.12's energy) per second, time inside wasm against time in host "
        "calls, and each module instance's linear memory.",
        [
            Panel("Energy (fuel) / s", "Wasmtime fuel reducers used, by reducer.",
                  [(f"sum by (db, reducer) (rate(reducer_wasmtime_fuel_used{{{DB}}}[{RATE}]))", "{{reducer}}")]),
            Panel("Time in wasm and in host calls", "Microseconds per second spent inside wasm and in host (ABI) calls.",
                  [(f"sum by (reducer) (rate(reducer_wasm_time_usec{{{DB}}}[{RATE}]))", "wasm {{reducer}}"),
                   (f"sum by (reducer) (rate(reducer_abi_time_usec{{{DB}}}[{RATE}]))", "host calls {{reducer}}")],
                  "µs"),
            Panel("WASM memory", "Linear memory of each database's module instance.",
                  [(f"max by (database_identity) (spacetime_worker_wasm_memory_bytes{{{DBI}}})",
                    "{{database_identity}}")], "bytes"),
        ],
    ),
    Row(
        "Clients and subscriptions",
        "Connected clients, connections with subscriptions and distinct live queries per database; messages "
        "and bytes sent to clients by kind; and subscription fan-out: messages sent per committed reducer call.",
        [
            Panel("Connected clients", "WebSocket clients per database.",
                  [(f"sum by (database_identity) (spacetime_worker_connected_clients{{{DBI}}})", "clients {{database_identity}}"),
                   (f"sum by (database_identity) (spacetime_subscription_connections{{{DBI}}})",
                    "subscribed {{database_identity}}")]),
            Panel("Active queries", "Distinct subscription queries evaluated on every commit.",
                  [(f"sum by (database_identity) (spacetime_active_queries{{{DBI}}})", "{{database_identity}}")]),
            Panel("Messages sent / s", "WebSocket messages sent to clients, by kind.",
                  [(f"sum by (workload) (rate(spacetime_websocket_sent_msg_size_bytes_count{{{DB}}}[{RATE}]))",
                    "{{workload}}")], "ops"),
            Panel("Bytes sent / s", "Bytes of WebSocket messages sent to clients, by kind.",
                  [(f"sum by (txn_type) (rate(spacetime_num_bytes_sent_to_clients_total{{{DB}}}[{RATE}]))",
                    "{{txn_type}}")], "Bps"),
            Panel("Subscription fan-out", "Update messages sent per committed reducer call.",
                  [(f'sum(rate(spacetime_websocket_sent_msg_size_bytes_count{{{DB},workload="Update"}}[{RATE}])) / '
                    f'sum(rate(spacetime_num_txns_total{{{DB},txn_type="Reducer",committed="true"}}[{RATE}]))',
                    "messages per commit")]),
            Panel("Message size p99", "Size of WebSocket messages sent, by kind.",
                  [(_q(0.99, "spacetime_websocket_sent_msg_size_bytes", DB, "workload"), "{{workload}}")], "bytes"),
        ],
    ),
    Row(
        "Replication",
        "Per database: how far each follower trails its leader (records and seconds), leader changes, the "
        "epoch, live replicas against the replica count, quorum losses, and durable against committed offsets.",
        [
            Panel("Replication lag (records)", "Records of the leader's log each follower has not made durable.",
                  [(f"max by (db, follower) (orrery_replication_lag_records{{{DB}}})", "{{follower}} {{db}}")]),
            Panel("Replication lag (seconds)", "Age of the oldest batch each follower has not acknowledged.",
                  [(f"max by (db, follower) (orrery_replication_lag_seconds{{{DB}}})", "{{follower}} {{db}}")], "s"),
            Panel("Leader changes", "Elections that installed a new leader, over 15 minutes.",
                  [(f"sum by (db) (increase(orrery_leader_changes_total{{{DB}}}[15m]))", "{{db}}")]),
            Panel("Epoch", "The epoch of each database's record (it rises with every election).",
                  [(f"max by (db) (orrery_database_epoch{{{DB}}})", "{{db}}")]),
            Panel("Live replicas", "Voting replicas on live nodes, against the replicas the record names.",
                  [(f"max by (db) (orrery_database_live_replicas{{{DB}}})", "live {{db}}"),
                   (f"max by (db) (orrery_database_replicas{{{DB}}})", "replicas {{db}}")]),
            Panel("Quorum losses", "Times a leader lost its majority, over 15 minutes.",
                  [(f"sum by (db) (increase(orrery_quorum_losses_total{{{DB}}}[15m]))", "{{db}}")]),
            Panel("Durable and committed offsets", "Per replica: records fsynced locally, and the commit point it knows.",
                  [(f"max by (db, instance) (orrery_replica_durable_offset{{{DB}}})", "durable {{instance}}"),
                   (f"max by (db, instance) (orrery_replica_committed_offset{{{DB}}})", "committed {{instance}}")]),
        ],
    ),
    Row(
        "Storage",
        "The commit log and the datastore: fsync latency (p50, p99) per node, commit-log bytes and segment "
        "files per database, rows and bytes per table, and LMDB checkpoint time.",
        [
            Panel("fsync latency", "Group-commit fsyncs of the commit logs, per node.",
                  [(_q(0.5, "orrery_fsync_duration_seconds", DB, "instance"), "p50 {{instance}}"),
                   (_q(0.99, "orrery_fsync_duration_seconds", DB, "instance"), "p99 {{instance}}")], "s"),
            Panel("Commit-log size", "Bytes of each replica's commit-log segment files.",
                  [(f"sum by (db, instance) (spacetime_message_log_size_bytes{{{DB}}})", "{{instance}} {{db}}")],
                  "bytes"),
            Panel("Commit-log segments", "Segment files per replica (old ones go once every replica has them).",
                  [(f"sum by (db, instance) (orrery_commitlog_segments{{{DB}}})", "{{instance}} {{db}}")]),
            Panel("Table rows", "Rows per table (as of the last checkpoint).",
                  [(f"max by (db, table_name) (spacetime_num_table_rows{{{DB}}})", "{{table_name}}")]),
            Panel("Table size", "Bytes per table, to the page.",
                  [(f"max by (db, table_name) (spacetime_table_size_bytes{{{DB}}})", "{{table_name}}")], "bytes"),
            Panel("Checkpoint time p99", "LMDB checkpoints (1.12's snapshot creation time).",
                  [(_q(0.99, "spacetime_snapshot_creation_time_total_sec", DB, "db"), "{{db}}")], "s"),
        ],
    ),
    Row(
        "Nodes",
        "Every process: CPU and resident memory (labelled with its role and id), etcd round trips, lease "
        "renewals, and which scrape targets are up.",
        [
            Panel("CPU per process", "CPU seconds per second of each Orrery process.",
                  [(f"rate(orrery_process_cpu_seconds_total[{RATE}]) * on (instance) group_left (role, id) "
                    "orrery_process_info", "{{role}} {{id}} {{instance}}")], "percentunit"),
            Panel("Memory per process", "Resident memory of each Orrery process.",
                  [("orrery_process_resident_memory_bytes * on (instance) group_left (role, id) orrery_process_info",
                    "{{role}} {{id}} {{instance}}")], "bytes"),
            Panel("etcd round trip p99", "etcd requests of every process, by request.",
                  [(_q(0.99, "orrery_etcd_request_duration_seconds", "", "op"), "{{op}}")], "s"),
            Panel("Lease renewals / s", "Lease keepalives by process and result.",
                  [(f"sum by (instance, result) (rate(orrery_lease_renewals_total[{RATE}]))",
                    "{{result}} {{instance}}")], "ops"),
            Panel("Targets up", "1 per scrape target that answered its last scrape.",
                  [("up", "{{job}} {{instance}}")]),
        ],
    ),
]


def _panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 4 if p.kind == "stat" else 8, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(p.targets)
        ],
    }
    if p.kind == "stat":
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value", "graphMode": "area"}
    else:
        panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    return panel


def build() -> dict[str, Any]:
    """The dashboard's JSON model."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in ROWS:
        panels.append({
            "id": pid, "type": "row", "title": row.title, "description": row.description, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": [],
        })  # fmt: skip
        pid, y, x, height = pid + 1, y + 1, 0, 0
        for p in row.panels:
            if x + p.width > 24:
                x, y, height = 0, y + height, 0
            panels.append(_panel(p, pid, x, y))
            pid, x = pid + 1, x + p.width
            height = max(height, panels[-1]["gridPos"]["h"])
        y += height
    return {
        "title": "Orrery",
        "uid": "orrery",
        "description": "An Orrery cluster (or standalone server): throughput, latency, errors, energy, clients, "
        "replication, storage and nodes. Metric names follow SpacetimeDB 1.12 where it has them.",
        "tags": ["orrery", "spacetimedb"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "graphTooltip": 1,
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                    "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [],
                },
                {
                    "name": "database", "label": "Database", "type": "query", "datasource": DATASOURCE,
                    "definition": "label_values(spacetime_num_txns_total, db)",
                    "query": {"query": "label_values(spacetime_num_txns_total, db)", "refId": "database"},
                    "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "sort": 1,
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0, "options": [],
                },
            ]
        },  # fmt: skip
        "panels": panels,
    }


def render() -> str:
    """The file's text."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard (or, with ``--check``, compare it with the file)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from what this builds")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: run tools/grafana_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
