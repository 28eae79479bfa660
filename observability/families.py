"""Metric descriptions, and the metric families one scrape builds from plain values.

Each component declares its metrics once, as :class:`MetricSpec` constants (the exact name,
type, help and label names Prometheus will see), and its collector fills a :class:`Scrape` with
values read from the engine's own counters. A scrape describes every declared family, with or
without samples, so ``/metrics`` always lists the full set of names.

Counters keep the name they are declared with. Most end in ``_total`` (the Prometheus
convention, and what 1.12 uses, e.g. ``spacetime_num_txns_total``); a few of 1.12's counters do
not (``reducer_wasmtime_fuel_used``), and :mod:`observability.exposition` exposes those under
their own name rather than appending ``_total`` as ``prometheus_client`` would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from observability.instruments import Histogram

__all__ = ["Kind", "MetricSpec", "Scrape", "SuffixlessCounter"]

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric as Prometheus sees it: exact name, type, help text and label names."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    @classmethod
    def counter(cls, name: str, help: str, *labels: str) -> MetricSpec:
        """A counter (``name`` as exposed, usually ending in ``_total``)."""
        return cls(name, "counter", help, labels)

    @classmethod
    def gauge(cls, name: str, help: str, *labels: str) -> MetricSpec:
        """A gauge."""
        return cls(name, "gauge", help, labels)

    @classmethod
    def histogram(cls, name: str, help: str, *labels: str) -> MetricSpec:
        """A histogram (its samples are ``name_bucket``, ``name_sum``, ``name_count``)."""
        return cls(name, "histogram", help, labels)


class SuffixlessCounter(Metric):
    """A counter family exposed under its own name (no ``_total`` appended)."""


class Scrape:
    """The families of one scrape: declare specs, add samples, then hand :meth:`families` out."""

    def __init__(self, specs: Iterable[MetricSpec] = ()) -> None:
        self._families: dict[str, tuple[MetricSpec, Metric]] = {}
        for spec in specs:
            self._family(spec)

    def _family(self, spec: MetricSpec) -> Metric:
        found = self._families.get(spec.name)
        if found is not None:
            if found[0] != spec:
                raise ValueError(f"metric {spec.name} declared twice, differently")
            return found[1]
        metric: Metric
        if spec.kind == "counter" and not spec.name.endswith("_total"):
            metric = SuffixlessCounter(spec.name, spec.help, "counter")
        elif spec.kind == "counter":
            metric = Metric(spec.name[: -len("_total")], spec.help, "counter")
        else:
            metric = Metric(spec.name, spec.help, spec.kind)
        self._families[spec.name] = (spec, metric)
        return metric

    def _labels(self, spec: MetricSpec, values: Sequence[str]) -> dict[str, str]:
        if len(values) != len(spec.labels):
            raise ValueError(f"{spec.name} takes labels {spec.labels}, got {len(values)} values")
        return dict(zip(spec.labels, values, strict=True))

    def add(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        """One sample of a counter or gauge."""
        if spec.kind == "histogram":
            raise ValueError(f"{spec.name} is a histogram: use Scrape.histogram")
        self._family(spec).samples.append(Sample(spec.name, self._labels(spec, labels), float(value)))

    def histogram(self, spec: MetricSpec, labels: Sequence[str], hist: Histogram) -> None:
        """The buckets, sum and count of one histogram series."""
        if spec.kind != "histogram":
            raise ValueError(f"{spec.name} is not a histogram")
        family = self._family(spec)
        base = self._labels(spec, labels)
        total = 0
        for bound, total in hist.cumulative():
            family.samples.append(Sample(f"{spec.name}_bucket", {**base, "le": floatToGoString(bound)}, float(total)))
        family.samples.append(Sample(f"{spec.name}_count", base, float(total)))
        family.samples.append(Sample(f"{spec.name}_sum", base, float(hist.sum)))

    def families(self) -> list[Metric]:
        """Every family, in declaration order."""
        return [metric for _, metric in self._families.values()]
