"""What a database counts while it runs: plain ints and histograms, read by ``hostnode.metrics``.

Every field is written by one thread only — the database's writer thread (transactions, the
realtime hub) or, for a commit log's fsyncs, its sync thread — so no update takes a lock, and
none calls into ``prometheus_client``. The scraper reads them from the event loop, copying a
dict before iterating it (a C-level copy of a builtin dict cannot interleave with the writer).

Names follow the SpacetimeDB 1.12 metric each field feeds (``hostnode/metrics.py`` maps them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from hostnode.txdata import TableChanges
from observability.instruments import (
    CHECKPOINT_BUCKETS,
    DEFAULT_BUCKETS,
    MESSAGE_SIZE_BUCKETS,
    SNAPSHOT_BUCKETS,
    TXN_BUCKETS,
    WAIT_BUCKETS,
    Histogram,
)

__all__ = [
    "ABI_SAMPLE_EVERY",
    "INTERNAL",
    "REDUCER",
    "SQL",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "UPDATE",
    "DatabaseStats",
    "ReplicaCounters",
    "SentStats",
    "TxnStats",
]

# 1.12's WorkloadType names (the ``txn_type`` / ``workload`` label values).
REDUCER: Final = "Reducer"
SQL: Final = "Sql"
SUBSCRIBE: Final = "Subscribe"
UNSUBSCRIBE: Final = "Unsubscribe"
UPDATE: Final = "Update"
INTERNAL: Final = "Internal"

#: Time spent in host calls (``reducer_abi_time_usec``) is measured on one call in this many of
#: each reducer (the first included), which then stands for itself and the calls since the previous
#: sample: timing every host call would cost the engine a few percent (two clock reads per host
#: call, several host calls per reducer); sampling costs nothing measurable. The counter trails
#: the calls by at most this many, and never decreases.
ABI_SAMPLE_EVERY: Final = 16


class TxnStats:
    """The transactions of one ``(txn_type, reducer)`` of a database."""

    __slots__ = (
        "txn_type", "reducer", "committed", "failed", "elapsed", "wait", "energy", "wasm_us", "abi_us", "abi_calls",
        "traps", "rows",
    )  # fmt: skip

    def __init__(self, txn_type: str, reducer: str) -> None:
        self.txn_type = txn_type
        self.reducer = reducer
        self.committed = 0
        self.failed = 0
        #: Seconds from the transaction's start to its commit or rollback (no lock waits inside:
        #: the writer thread has the database to itself, so this is also its CPU time in 1.12's
        #: sense, ``elapsed − lock wait``).
        self.elapsed = Histogram(TXN_BUCKETS)
        #: Seconds a reducer call waited for the writer thread.
        self.wait = Histogram(WAIT_BUCKETS)
        #: Wasmtime fuel, microseconds inside wasm, microseconds in host calls (sampled).
        self.energy = 0
        self.wasm_us = 0
        self.abi_us = 0
        #: Calls ``abi_us`` accounts for so far (hostnode/database.py samples).
        self.abi_calls = 0
        #: Calls that trapped (wasm instance errors, out of energy included, as 1.12 counts them).
        self.traps = 0
        #: table id → [rows inserted, rows deleted] by committed transactions.
        self.rows: dict[int, list[int]] = {}

    @property
    def calls(self) -> int:
        """Transactions counted so far."""
        return self.committed + self.failed

    def count_rows(self, tables: dict[int, TableChanges]) -> None:
        """Add a committed transaction's net row changes (``TxData.tables``)."""
        rows = self.rows
        for tid, ch in tables.items():
            r = rows.get(tid)
            if r is None:
                r = rows[tid] = [0, 0]
            r[0] += len(ch.inserts)
            r[1] += len(ch.deletes)


@dataclass
class SentStats:
    """Messages sent to WebSocket clients for one workload."""

    sizes: Histogram = field(default_factory=lambda: Histogram(MESSAGE_SIZE_BUCKETS))
    bytes: int = 0


class DatabaseStats:
    """Everything one database counts (one object per open :class:`~hostnode.database.Database`)."""

    def __init__(self) -> None:
        #: Reducer transactions by reducer name (lifecycle and scheduled reducers included).
        self.reducers: dict[str, TxnStats] = {}
        #: SQL DML transactions, and transactions no reducer ran in (client rows, schedules).
        self.sql = TxnStats(SQL, "")
        self.internal = TxnStats(INTERNAL, "")
        #: Seconds the last open spent replaying the commit log (None: created, not replayed).
        self.replay_seconds: float | None = None
        #: LMDB checkpoints (the engine's snapshots of its state).
        self.checkpoints = Histogram(CHECKPOINT_BUCKETS)
        #: Linear memory of the module instance, as of the last checkpoint.
        self.wasm_memory_bytes = 0
        #: WebSocket messages received: [binary, text] (1.12's ``protocol`` label).
        self.ws_requests = [0, 0]
        #: Messages sent, by workload (Update, Subscribe, Unsubscribe, Sql).
        self.sent: dict[str, SentStats] = {w: SentStats() for w in (UPDATE, SUBSCRIBE, UNSUBSCRIBE, SQL)}
        #: Request round trips (received → answered): CallReducer by reducer, others by workload.
        self.round_trips: dict[str, Histogram] = {}
        self.round_trips_other: dict[str, Histogram] = {
            w: Histogram(DEFAULT_BUCKETS) for w in (SUBSCRIBE, UNSUBSCRIBE, SQL)
        }
        #: Rows read while evaluating queries, by workload (Sql, Subscribe, Update).
        self.rows_scanned: dict[str, int] = {SQL: 0, SUBSCRIBE: 0, UPDATE: 0}

    def reducer(self, name: str) -> TxnStats:
        """The stats of reducer ``name`` (created on first use)."""
        st = self.reducers.get(name)
        if st is None:
            st = self.reducers[name] = TxnStats(REDUCER, name)
        return st

    def round_trip(self, reducer: str) -> Histogram:
        """The round-trip histogram of ``CallReducer`` messages for ``reducer``."""
        h = self.round_trips.get(reducer)
        if h is None:
            h = self.round_trips[reducer] = Histogram(DEFAULT_BUCKETS)
        return h


class ReplicaCounters:
    """What a host node counts about one database across its roles (leader, follower): these
    outlive the per-epoch objects, so the counters only ever grow."""

    __slots__ = ("became_leader", "stepped_down", "quorum_losses", "snapshots", "snapshot_bytes")

    def __init__(self) -> None:
        self.became_leader = 0
        self.stepped_down = 0
        self.quorum_losses = 0
        #: Snapshot transfers: "sent" (leader side: copy and stream) and "installed" (follower
        #: side: fetch and install), durations and bytes.
        self.snapshots = {"sent": Histogram(SNAPSHOT_BUCKETS), "installed": Histogram(SNAPSHOT_BUCKETS)}
        self.snapshot_bytes = {"sent": 0, "installed": 0}
