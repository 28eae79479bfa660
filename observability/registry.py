"""One metrics registry per process, never ``prometheus_client``'s global one.

Tests start many servers in one interpreter and several components share a process
(standalone is gateway, control plane and host node at once): each process entry point makes
its own registry here and registers the collectors of the components it runs.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from observability.families import MetricSpec, Scrape

__all__ = ["PROCESS_INFO", "ProcessInfo", "new_registry"]

PROCESS_INFO = MetricSpec.gauge(
    "orrery_process_info", "Always 1: what this process is (role: standalone, gateway, controlplane, hostnode) and its id",
    "role", "id",
)  # fmt: skip


class ProcessInfo:
    """Collector of :data:`PROCESS_INFO`."""

    def __init__(self, role: str, process_id: str) -> None:
        self.role = role
        self.process_id = process_id

    def collect(self) -> Iterator[Metric]:
        """One sample."""
        scrape = Scrape([PROCESS_INFO])
        scrape.add(PROCESS_INFO, (self.role, self.process_id), 1)
        yield from scrape.families()


def new_registry(role: str, process_id: str = "") -> CollectorRegistry:
    """A fresh registry with this process's CPU, memory and file descriptors
    (``orrery_process_cpu_seconds_total``, ``orrery_process_resident_memory_bytes``, …) and
    :data:`PROCESS_INFO`."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(namespace="orrery", registry=registry)
    registry.register(ProcessInfo(role, process_id))
    return registry
