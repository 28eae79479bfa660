"""observability: the histogram, metric families and the text format, against prometheus_client."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from observability.exposition import CONTENT_TYPE, encode_text
from observability.families import MetricSpec, Scrape
from observability.http import Endpoints, metrics_app
from observability.instruments import TXN_BUCKETS, Histogram
from observability.registry import new_registry
from tests.observability.samples import parse_samples


def test_a_bound_belongs_to_its_own_bucket() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.1, 0.05, 1.0, 1.5, 7.0):
        h.observe(v)
    h.observe_many(0.5, 3)
    assert h.cumulative() == [(0.1, 2), (1.0, 6), (math.inf, 8)]
    assert h.count == 8 and h.sum == pytest.approx(0.1 + 0.05 + 1.0 + 1.5 + 7.0 + 1.5)
    with pytest.raises(ValueError):
        Histogram((1.0, 0.5))


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=50))
def test_cumulative_counts_match_a_direct_count(values: list[float]) -> None:
    h = Histogram(TXN_BUCKETS)
    for v in values:
        h.observe(v)
    for le, n in h.cumulative():
        assert n == sum(1 for v in values if v <= le)


class _Static:
    """A collector of fixed families (prometheus_client's own family classes)."""

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily("requests", "Requests.", labels=["path"])
        c.add_metric(["/a"], 3)
        c.add_metric(['/"quoted"\\n'], 1)
        yield c
        g = GaugeMetricFamily("temperature_celsius", "Line one\nline two.", labels=["room"])
        g.add_metric(["kitchen"], 21.5)
        yield g
        h = HistogramMetricFamily("latency_seconds", "Latency.", labels=["op"])
        h.add_metric(["get"], buckets=[("0.1", 2), ("1.0", 5), ("+Inf", 6)], sum_value=3.25)
        yield h
        yield GaugeMetricFamily("no_samples", "Declared, never set.")


def test_the_text_format_is_prometheus_clients() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static())
    assert encode_text(registry) == generate_latest(registry)


def test_specs_scrape_and_suffixless_counters() -> None:
    fuel = MetricSpec.counter("reducer_wasmtime_fuel_used", "The total wasmtime fuel used", "db", "reducer")
    txns = MetricSpec.counter("spacetime_num_txns_total", "Transactions", "db", "committed")
    size = MetricSpec.gauge("spacetime_table_size_bytes", "Bytes", "db")
    elapsed = MetricSpec.histogram("spacetime_txn_elapsed_time_sec", "Seconds", "db")
    h = Histogram((0.001, 0.01))
    h.observe(0.002)

    class Collector:
        def collect(self) -> Iterator[Metric]:
            scrape = Scrape([fuel, txns, size, elapsed])
            scrape.add(fuel, ("c200", "transfer"), 12345)
            scrape.add(txns, ("c200", "true"), 7)
            scrape.add(size, ("c200",), 4096)
            scrape.histogram(elapsed, ("c200",), h)
            yield from scrape.families()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    text = encode_text(registry).decode()
    assert "# TYPE reducer_wasmtime_fuel_used counter\n" in text
    assert 'reducer_wasmtime_fuel_used{db="c200",reducer="transfer"} 12345.0\n' in text
    assert "# TYPE spacetime_num_txns_total counter\n" in text
    assert 'spacetime_num_txns_total{committed="true",db="c200"} 7.0\n' in text
    assert 'spacetime_txn_elapsed_time_sec_bucket{db="c200",le="0.01"} 1.0\n' in text
    assert 'spacetime_txn_elapsed_time_sec_bucket{db="c200",le="+Inf"} 1.0\n' in text
    samples = parse_samples(text)
    assert samples.value("spacetime_txn_elapsed_time_sec_count", db="c200") == 1
    assert samples.value("spacetime_txn_elapsed_time_sec_bucket", db="c200", le="0.001") == 0
    # Prometheus's own parser reads it back (the suffixless counter as a family of its own).
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["spacetime_table_size_bytes"].type == "gauge"
    assert families["spacetime_txn_elapsed_time_sec"].type == "histogram"
    with pytest.raises(ValueError):
        Scrape([fuel]).add(fuel, ("only-one-label",), 1)
    with pytest.raises(ValueError):
        Scrape([elapsed]).add(elapsed, ("c200",), 1)


def test_a_process_registry_has_cpu_memory_and_info() -> None:
    samples = parse_samples(encode_text(new_registry("hostnode", "node-7")).decode())
    assert samples.value("orrery_process_info", role="hostnode", id="node-7") == 1
    assert samples.value("orrery_process_cpu_seconds_total") > 0
    assert samples.value("orrery_process_resident_memory_bytes") > 0
    # Separate registries: nothing is shared between two of them.
    assert "orrery_process_info" not in encode_text(CollectorRegistry()).decode()


def test_metrics_healthz_readyz_routes() -> None:
    reason: list[str | None] = ["replica of c200 is 5000 records behind its leader node-2"]

    def ready() -> str | None:
        if reason[0] == "boom":
            raise RuntimeError("boom")
        return reason[0]

    async def main() -> None:
        client = TestClient(TestServer(metrics_app(Endpoints(new_registry("controlplane", "cp"), ready))))
        await client.start_server()
        try:
            metrics = await client.get("/metrics")
            assert metrics.status == 200 and metrics.headers["Content-Type"] == CONTENT_TYPE
            assert 'orrery_process_info{id="cp",role="controlplane"} 1.0' in await metrics.text()
            assert ((await client.get("/healthz")).status, await (await client.get("/healthz")).text()) == (200, "ok\n")
            not_ready = await client.get("/readyz")
            assert (not_ready.status, await not_ready.text()) == (
                503, "not ready: replica of c200 is 5000 records behind its leader node-2\n",
            )  # fmt: skip
            reason[0] = "boom"
            failing = await client.get("/readyz")
            assert failing.status == 503 and "RuntimeError: boom" in await failing.text()
            reason[0] = None
            ok = await client.get("/readyz")
            assert (ok.status, await ok.text()) == (200, "ok\n")
        finally:
            await client.close()

    asyncio.run(main())
