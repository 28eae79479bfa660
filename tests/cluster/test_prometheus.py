"""A real Prometheus scraping a real cluster: every panel of the Grafana dashboard has data.

``orrery cluster up``'s processes (etcd, a control plane, three host nodes, a gateway, each with
its metrics address) under a short load — a database with three replicas, HTTP calls (some
failing), a WebSocket subscriber that also calls reducers, a leader killed and restarted — and
Prometheus configured from ``cluster.json`` with ``deploy/prometheus/alerts.yaml``. Then every
query of every panel of ``deploy/grafana/orrery.json`` (``$database`` set to the database) must
return at least one finite value, Prometheus must have loaded every alert rule, every target must
be up, and every process must answer ``/healthz`` and ``/readyz`` with 200 — the restarted node
once it caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from clustermeta.records import CONTROLPLANES_PREFIX, NODES_PREFIX, ControlPlaneInfo, NodeInfo
from orrery.monitoring import prometheus_config
from orrery_client import DbConnection
from tests.cluster.harness import ClusterFixture, eventually, run_async
from tests.prometheus_harness import PrometheusServer
from tests.servers import REPO_ROOT, Client

pytestmark = pytest.mark.slow

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "orrery.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yaml"
#: What Grafana would put for ``$__rate_interval`` at a 1 s scrape interval and a short range.
RATE_INTERVAL = "20s"


def panel_queries(database: str) -> list[tuple[str, str]]:
    """``(panel title, query)`` for every target of every panel, variables substituted."""
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$database", database)
            out.append((panel["title"], expr))
    return out


def _finite(result: list[dict[str, Any]]) -> bool:
    for series in result:
        value = series.get("value") or (series.get("values") or [[0, "NaN"]])[-1]
        if math.isfinite(float(value[1])):
            return True
    return False


def _http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def test_every_dashboard_panel_has_data(tmp_path: Path) -> None:
    with ClusterFixture(tmp_path / "c", nodes=3) as fx:
        config = prometheus_config(
            fx.cluster.describe(), scrape_interval="1s", evaluation_interval="1s", rule_files=[str(ALERTS)]
        )
        with PrometheusServer.start(tmp_path / "prometheus", config) as prom:
            run_async(_scenario(fx, prom), 600)


class _Load:
    """HTTP calls (one in five fails: an empty name) and WebSocket calls, until stopped."""

    def __init__(self, fx: ClusterFixture, c: Client, token: str, ws: DbConnection) -> None:
        self.fx, self.c, self.token, self.ws = fx, c, token, ws
        self.ok = 0
        self.stopping = False

    async def run(self) -> None:
        for i in itertools.count():
            if self.stopping:
                return
            if i % 5 == 4:
                await self.fx.call(self.c, "chat", "set_name", [""], self.token)  # fails: an empty name
            elif i % 5 == 3:
                with contextlib.suppress(Exception):  # a WebSocket call; may fail during the failover
                    await asyncio.wait_for(self.ws.call_reducer("send_message", f"ws {i}"), 10)
            else:
                reply = await self.fx.call(self.c, "chat", "send_message", [f"http {i}"], self.token)
                self.ok += reply.status == 200
            await asyncio.sleep(0.02)


async def _registered_metrics(fx: ClusterFixture) -> None:
    """Host nodes and the control plane registered their metrics URLs in etcd."""
    store = await fx.store()
    try:
        nodes = {i.id: i.metrics for kv in (await store.get_prefix(NODES_PREFIX)).kvs for i in [NodeInfo.from_json(kv.value)]}
        cps = [ControlPlaneInfo.from_json(kv.value) for kv in (await store.get_prefix(CONTROLPLANES_PREFIX)).kvs]
    finally:
        await store.close()
    assert nodes == {n: fx.cluster.metrics_url(n) for n in fx.cluster.node_ids()}
    assert [cp.metrics for cp in cps] == [fx.cluster.metrics_url("controlplane")]


async def _scenario(fx: ClusterFixture, prom: PrometheusServer) -> None:
    await _registered_metrics(fx)
    async with fx.client() as c:
        token = await fx.new_identity(c)
        ident = await fx.publish(c, "chat", "quickstart-chat", token, replicas=3)
        db = ident.to_hex()
        assert (await fx.call(c, "chat", "set_name", ["Prometheus"], token)).status == 200
        ws = await DbConnection.connect(fx.url, "chat", token=token, reconnect=True)
        sub = await ws.subscribe(["SELECT * FROM message", "SELECT * FROM user"])
        await sub.applied()
        load = _Load(fx, c, token, ws)
        task = asyncio.create_task(load.run())
        try:
            async def scraped() -> bool:
                return bool(prom.query(f'spacetime_num_txns_total{{db="{db}"}}'))

            await eventually(scraped, 120, "Prometheus's first samples of the database")
            # A failover: the leader dies, another is elected, the old one comes back and catches up.
            leader = await fx.leader(ident)
            fx.cluster.procs[leader].kill()

            async def new_leader() -> bool:
                r = await fx.record(ident)
                return r is not None and r.leader not in (None, leader)

            await eventually(new_leader, 120, "a new leader")
            before = load.ok

            async def committing() -> bool:
                return load.ok > before

            await eventually(committing, 120, "calls committing at the new leader")
            fx.cluster.restart(leader)
            metrics = f"http://{fx.cluster.metrics_address(leader)}"

            async def caught_up() -> bool:
                return _http(f"{metrics}/readyz") == (200, "ok\n")

            await eventually(caught_up, 120, f"{leader} ready again (caught up with the leader)")

            # Every panel's every query has a finite value (polled: scrapes and rates need time).
            queries = panel_queries(db)
            assert len(queries) >= 40
            missing: dict[str, Any] = {}

            async def all_have_data() -> bool:
                missing.clear()
                for title, expr in queries:
                    result = prom.query(expr)
                    if not _finite(result):
                        missing[f"{title}: {expr}"] = result
                return not missing

            try:
                await eventually(all_have_data, 180, "data in every panel")
            except AssertionError:
                raise AssertionError(f"panels without data: {json.dumps(missing, indent=1)}") from None
        finally:
            load.stopping = True
            await task
            await ws.close()

    # The template variable's query (label_values(spacetime_num_txns_total, db)) offers the database.
    assert db in prom.get("label/db/values", **{"match[]": "spacetime_num_txns_total"})
    # Prometheus loaded every alert rule, and evaluates them without errors.
    groups = prom.get("rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {
        "OrreryNoQuorum", "OrreryReplicationLag", "OrreryLeaderFlapping", "OrreryFsyncSlow", "OrreryHostNodeDown",
        "OrreryProcessDown",
    }, rules  # fmt: skip

    async def rules_evaluated() -> bool:
        groups = prom.get("rules")["groups"]
        return all(r["health"] == "ok" for g in groups for r in g["rules"])

    await eventually(rules_evaluated, 60, "every rule evaluated without error")
    # Every target is up (the restarted node too), and every process is alive and ready.
    targets = prom.get("targets")["activeTargets"]
    assert len(targets) == 6, targets

    async def all_up() -> bool:
        return all(t["health"] == "up" for t in prom.get("targets")["activeTargets"])

    await eventually(all_up, 60, "every target up")
    for name in ["controlplane", *fx.cluster.node_ids()]:
        base = f"http://{fx.cluster.metrics_address(name)}"
        assert _http(f"{base}/healthz") == (200, "ok\n"), name
        assert _http(f"{base}/readyz") == (200, "ok\n"), name
    assert _http(f"{fx.url}/readyz") == (200, "ok\n")
    assert _http(f"http://{fx.cluster.metrics_address('gateway')}/readyz") == (200, "ok\n")

