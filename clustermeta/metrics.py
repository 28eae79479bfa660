"""What a process counts about its metadata store: etcd round trips and its lease.

:class:`EtcdStats` is owned by an :class:`~clustermeta.metastore_etcd.EtcdMetaStore` (every
unary call, keepalive and watch creation is timed on the event loop); :class:`LeaseStats` by the
process and handed to each :class:`~clustermeta.coordination.LeaseKeeper` it runs, so its
counters outlive one keeper. :class:`MetaStoreCollector` exports both.

=========================================  =========  ==========  ===================================
metric                                     type       labels      updated in
=========================================  =========  ==========  ===================================
``orrery_etcd_request_duration_seconds``   histogram  ``op``      ``EtcdMetaStore._call``, keepalive,
                                                                  watch creation
``orrery_etcd_request_failures_total``     counter    ``op``      the same, when etcd fails or times out
``orrery_lease_grants_total``              counter               ``LeaseKeeper._grant``
``orrery_lease_renewals_total``            counter    ``result``  ``LeaseKeeper._keep`` (ok, failed)
``orrery_lease_losses_total``              counter               ``LeaseKeeper._lose``
``orrery_lease_valid``                     gauge                 scrape: ``LeaseKeeper.valid()``
``orrery_lease_remaining_seconds``         gauge                 scrape: until the local deadline
=========================================  =========  ==========  ===================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from observability.families import MetricSpec, Scrape
from observability.instruments import ETCD_BUCKETS, Histogram

if TYPE_CHECKING:
    from clustermeta.coordination import LeaseKeeper
    from clustermeta.metastore import MetaStore

__all__ = ["EtcdStats", "LeaseStats", "MetaStoreCollector"]

ETCD_DURATION = MetricSpec.histogram(
    "orrery_etcd_request_duration_seconds", "Round-trip time of etcd requests, by request (range, put, txn, keepalive, ...)",
    "op",
)  # fmt: skip
ETCD_FAILURES = MetricSpec.counter(
    "orrery_etcd_request_failures_total", "etcd requests that failed or timed out, by request", "op"
)
LEASE_GRANTS = MetricSpec.counter("orrery_lease_grants_total", "Leases this process was granted (the first one and after each loss)")
LEASE_RENEWALS = MetricSpec.counter(
    "orrery_lease_renewals_total", "Lease keepalives sent, by result (ok: renewed, failed: error or timeout)", "result"
)
LEASE_LOSSES = MetricSpec.counter(
    "orrery_lease_losses_total", "Leases this process lost (etcd said gone, or the local deadline passed)"
)
LEASE_VALID = MetricSpec.gauge("orrery_lease_valid", "1 while this process holds a lease it may act on, else 0")
LEASE_REMAINING = MetricSpec.gauge(
    "orrery_lease_remaining_seconds", "Seconds until this process's lease's local deadline (0 without a valid lease)"
)
SPECS = (ETCD_DURATION, ETCD_FAILURES, LEASE_GRANTS, LEASE_RENEWALS, LEASE_LOSSES, LEASE_VALID, LEASE_REMAINING)


class EtcdStats:
    """etcd round trips of one store client (event loop only)."""

    def __init__(self) -> None:
        self.durations: dict[str, Histogram] = {}
        self.failures: dict[str, int] = {}

    def observe(self, op: str, seconds: float, *, failed: bool = False) -> None:
        """One request of kind ``op`` that took ``seconds`` (and failed, or not)."""
        h = self.durations.get(op)
        if h is None:
            h = self.durations[op] = Histogram(ETCD_BUCKETS)
        h.observe(seconds)
        if failed:
            self.failures[op] = self.failures.get(op, 0) + 1


class LeaseStats:
    """The leases of one process, across every :class:`LeaseKeeper` it runs (event loop only)."""

    def __init__(self) -> None:
        self.grants = 0
        self.renewed = 0
        self.renewal_failures = 0
        self.losses = 0
        #: The keeper running now (the last one to start), for the gauges.
        self.keeper: LeaseKeeper | None = None


class MetaStoreCollector:
    """Exports a process's :class:`EtcdStats` and :class:`LeaseStats` (either may be absent)."""

    def __init__(self, etcd: EtcdStats | None = None, lease: LeaseStats | None = None) -> None:
        self.etcd = etcd
        self.lease = lease

    @classmethod
    def of(cls, store: MetaStore, lease: LeaseStats | None = None) -> MetaStoreCollector:
        """The collector of ``store``'s round trips (an etcd store counts them; the embedded
        store does not) and of ``lease``."""
        stats = getattr(store, "stats", None)
        return cls(stats if isinstance(stats, EtcdStats) else None, lease)

    def collect(self) -> Iterator[Metric]:
        """The families of :data:`SPECS`."""
        scrape = Scrape(SPECS)
        if self.etcd is not None:
            for op, h in list(self.etcd.durations.items()):
                scrape.histogram(ETCD_DURATION, (op,), h)
            for op, n in list(self.etcd.failures.items()):
                scrape.add(ETCD_FAILURES, (op,), n)
        lease = self.lease
        if lease is not None:
            scrape.add(LEASE_GRANTS, (), lease.grants)
            scrape.add(LEASE_RENEWALS, ("ok",), lease.renewed)
            scrape.add(LEASE_RENEWALS, ("failed",), lease.renewal_failures)
            scrape.add(LEASE_LOSSES, (), lease.losses)
            keeper = lease.keeper
            valid = keeper is not None and keeper.valid()
            scrape.add(LEASE_VALID, (), 1 if valid else 0)
            scrape.add(LEASE_REMAINING, (), keeper.remaining() if keeper is not None and valid else 0.0)
        yield from scrape.families()
