"""The Prometheus text format (0.0.4) of a registry: families in, bytes out (no I/O).

The same output as ``prometheus_client.generate_latest`` except in two things: a counter family
declared without the ``_total`` suffix (:class:`~observability.families.SuffixlessCounter`, for
1.12's ``reducer_wasmtime_fuel_used`` and its siblings) keeps its name in ``# HELP`` and
``# TYPE``, matching its samples, as 1.12's own exporter writes it; and OpenMetrics-only
samples (``_created``, ``_gsum``, ``_gcount``), which no Orrery collector produces, are left out.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from observability.families import SuffixlessCounter

__all__ = ["CONTENT_TYPE", "encode_families", "encode_text"]

#: The ``Content-Type`` of :func:`encode_text`'s output.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def encode_text(registry: Collector) -> bytes:
    """Everything ``registry`` collects, in the text format."""
    return encode_families(registry.collect())


def encode_families(families: Iterable[Metric]) -> bytes:
    """The text format of ``families``."""
    out: list[str] = []
    for metric in families:
        name, kind = metric.name, metric.type
        if kind == "counter" and not isinstance(metric, SuffixlessCounter):
            name += "_total"
        elif kind == "info":
            name, kind = name + "_info", "gauge"
        elif kind == "stateset":
            kind = "gauge"
        elif kind == "gaugehistogram":
            kind = "histogram"
        elif kind == "unknown":
            kind = "untyped"
        out.append(f"# HELP {name} {_escape_help(metric.documentation)}\n")
        out.append(f"# TYPE {name} {kind}\n")
        for s in metric.samples:
            if s.name.endswith(("_created", "_gsum", "_gcount")) and s.name.startswith(metric.name):
                continue  # OpenMetrics-only samples (the 0.0.4 format has no place for them)
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(s.labels.items()))
            ts = "" if s.timestamp is None else f" {int(float(s.timestamp) * 1000)}"
            out.append(f"{s.name}{{{labels}}} {floatToGoString(s.value)}{ts}\n" if labels else f"{s.name} {floatToGoString(s.value)}{ts}\n")
    return "".join(out).encode()


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
