"""Counting on hot paths: a histogram made of plain Python ints, and the bucket sets in use.

A :class:`Histogram` is updated by exactly one thread (a database's writer, a commit log's sync
thread, the event loop) and read by the scraper: ``observe`` is a ``bisect`` and two in-place
additions, no lock. The scraper may see an observation's bucket before its sum; Prometheus
tolerates that (the next scrape is consistent again), and counts are derived from the buckets
so ``_count`` always equals the ``+Inf`` bucket.
"""

from __future__ import annotations

import math
from bisect import bisect_left

__all__ = [
    "CHECKPOINT_BUCKETS",
    "DEFAULT_BUCKETS",
    "ETCD_BUCKETS",
    "FSYNC_BUCKETS",
    "MESSAGE_SIZE_BUCKETS",
    "SNAPSHOT_BUCKETS",
    "TXN_BUCKETS",
    "WAIT_BUCKETS",
    "Histogram",
]

#: Prometheus's default buckets (what 1.12 uses where it names none: request round trips).
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Transaction wall and CPU time (1.12's ``spacetime_txn_*_time_sec``): OLTP work is microseconds.
TXN_BUCKETS: tuple[float, ...] = (10e-6, 50e-6, 100e-6, 500e-6, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
#: Time a reducer waits for its database (1.12's ``spacetime_reducer_wait_time_sec``).
WAIT_BUCKETS: tuple[float, ...] = (100e-6, 500e-6, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
#: Bytes of one WebSocket message (1.12's ``spacetime_websocket_sent_msg_size_bytes``).
MESSAGE_SIZE_BUCKETS: tuple[float, ...] = (
    100, 500, 1e3, 10e3, 100e3, 500e3, 1e6, 5e6, 10e6, 25e6, 50e6, 75e6, 100e6, 500e6,
)  # fmt: skip
#: One fsync of a commit log: ~0.1 ms on a quiet SSD, tens of ms on a struggling disk.
FSYNC_BUCKETS: tuple[float, ...] = (
    50e-6, 100e-6, 250e-6, 500e-6, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
#: One etcd round trip.
ETCD_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Taking a snapshot of a database's state (1.12's ``spacetime_snapshot_creation_time_total_sec``;
#: Orrery's LMDB checkpoint).
CHECKPOINT_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.005, 0.01, 0.1, 1.0, 5.0, 10.0)
#: A replica snapshot sent or installed (copy, transfer, install).
SNAPSHOT_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)


class Histogram:
    """Counts of observations per bucket (upper bounds ``bounds``, plus +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = bounds
        #: ``counts[i]`` observations fell in ``(bounds[i-1], bounds[i]]``; the last is +Inf.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (a bucket's bound is inclusive, as Prometheus's ``le``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, value: float, n: int) -> None:
        """Count ``n`` observations of the same value."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, observations <= le)`` per bound, then ``(inf, all)``: Prometheus's buckets."""
        out: list[tuple[float, int]] = []
        total = 0
        counts = list(self.counts)  # one consistent copy (the writer may go on meanwhile)
        for bound, n in zip(self.bounds, counts, strict=False):
            total += n
            out.append((bound, total))
        out.append((math.inf, total + counts[-1]))
        return out
