"""The host node's metrics: what its databases count (``hostnode/stats.py``), exported at scrape time.

Names, types and labels are SpacetimeDB 1.12's where 1.12 has the metric (its ``worker_metrics``
and ``db_metrics`` modules), so its dashboards and alerts work unchanged; the rest are
``orrery_``. ``db`` and ``database_identity`` are the database identity in hex, as 1.12 labels
them; ``txn_type`` / ``workload`` are 1.12's workload names (``Reducer``, ``Sql``, ``Subscribe``,
``Unsubscribe``, ``Update``, ``Internal``).

Per database this node **serves** (standalone, or a cluster database it leads):

==============================================  =========  =============================================  ==================================
metric                                          type       labels                                         counted in
==============================================  =========  =============================================  ==================================
``spacetime_num_txns_total``                    counter    txn_type, db, reducer, committed               ``Database._run_reducer`` / ``_commit``
``spacetime_txn_elapsed_time_sec``              histogram  txn_type, db, reducer                          ``Database._run_reducer``, SQL DML
``spacetime_txn_cpu_time_sec``                  histogram  txn_type, db, reducer                          the same samples (no lock waits
                                                                                                          inside a transaction here)
``spacetime_reducer_wait_time_sec``             histogram  db, reducer                                    ``Database._run_reducer``: since
                                                                                                          the writer's job was queued
``reducer_wasmtime_fuel_used``                  counter    db, reducer                                    ``Database._run_reducer``
``reducer_wasm_time_usec``                      counter    db, reducer                                    ``Database._run_reducer``
``reducer_abi_time_usec``                       counter    db, reducer                                    host calls of 1 call in 16, scaled
``spacetime_worker_wasm_instance_errors_total`` counter    database_identity, module_hash, reducer_symbol a call that trapped
``spacetime_num_rows_inserted_total``           counter    txn_type, db, reducer_or_query, table_id,      ``Database._commit``
                                                           table_name
``spacetime_num_rows_deleted_total``            counter    (the same)                                     ``Database._commit``
``spacetime_num_rows_scanned_total``            counter    txn_type, db                                   SQL, subscribe, incremental eval
``spacetime_num_table_rows``                    gauge      db, table_id, table_name                       scrape: LMDB stat at the checkpoint
``spacetime_table_size_bytes``                  gauge      db, table_id, table_name                       scrape: LMDB pages of the table
``spacetime_worker_wasm_memory_bytes``          gauge      database_identity                              ``Database.checkpoint``
``spacetime_replay_total_time_seconds``         gauge      db                                             ``Database.open``
``spacetime_snapshot_creation_time_total_sec``  histogram  db                                             ``Database.checkpoint`` (LMDB)
``spacetime_worker_connected_clients``          gauge      database_identity                              scrape: the realtime hub
``spacetime_subscription_connections``          gauge      database_identity                              scrape: the subscription manager
``spacetime_active_queries``                    gauge      database_identity                              scrape: the subscription manager
``spacetime_websocket_requests_total``          counter    database_identity, protocol                    ``RealtimeHub.handle_many``
``spacetime_request_round_trip_time``           histogram  txn_type, database_identity, reducer_symbol    ``RealtimeHub.handle``
``spacetime_websocket_sent_msg_size_bytes``     histogram  db, workload                                   ``RealtimeHub._send``
``spacetime_num_bytes_sent_to_clients_total``   counter    txn_type, db                                   ``RealtimeHub._send``
==============================================  =========  =============================================  ==================================

Per replica on this node (every database it serves or follows):

======================================  =========  ========  ==============================================
metric                                  type       labels    what
======================================  =========  ========  ==============================================
``spacetime_message_log_size_bytes``    gauge      db        bytes of the commit log's segment files
``orrery_commitlog_segments``           gauge      db        segment files
``orrery_fsync_duration_seconds``       histogram  db        each group-commit fsync (``CommitLog.sync``)
``orrery_replica_durable_offset``       gauge      db        records fsynced here (one past the last)
``orrery_replica_committed_offset``     gauge      db        commit point (leader: quorum; follower: told)
``orrery_replica_epoch``                gauge      db        epoch led or followed (promised, if neither)
``orrery_replica_leader``               gauge      db        1 on the node leading the database, else 0
``orrery_replica_has_quorum``           gauge      db        (leader) a majority answered lately
``orrery_replica_caught_up``            gauge      db        (follower) streaming and within the ready lag
``orrery_replication_lag_records``      gauge      db, follower  (leader) records the follower lacks
``orrery_replication_lag_seconds``      gauge      db, follower  (leader) age of the oldest unacked batch
``orrery_replication_follower_connected`` gauge    db, follower  (leader) its stream is up
``orrery_replica_role_changes_total``   counter    db, change  became_leader, stepped_down
``orrery_quorum_losses_total``          counter    db        (leader) quorum went from present to absent
``orrery_snapshot_duration_seconds``    histogram  db, kind  replica snapshots sent / installed
``orrery_snapshot_bytes_total``         counter    db, kind  their bytes
======================================  =========  ========  ==============================================
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from hostnode.stats import SQL, SUBSCRIBE, UNSUBSCRIBE, UPDATE, DatabaseStats, TxnStats
from observability.families import MetricSpec, Scrape
from sats.hash import hash_bytes

if TYPE_CHECKING:
    from hostnode.cluster import ClusterNode
    from hostnode.commitlog import CommitLog, GroupCommitter
    from hostnode.database import Database
    from hostnode.realtime import RealtimeHub
    from hostnode.service import HostNode
    from sats.identity import Identity

__all__ = ["HostNodeCollector", "SPECS"]

C, G, H = MetricSpec.counter, MetricSpec.gauge, MetricSpec.histogram

# --- 1.12's (crates/datastore/src/db_metrics, crates/core/src/worker_metrics) -------------------
NUM_TXNS = C(
    "spacetime_num_txns_total", "The cumulative number of transactions, including both commits and rollbacks",
    "txn_type", "db", "reducer", "committed",
)  # fmt: skip
TXN_ELAPSED = H(
    "spacetime_txn_elapsed_time_sec", "The total elapsed (wall) time of a transaction (in seconds)", "txn_type", "db", "reducer"
)
TXN_CPU = H(
    "spacetime_txn_cpu_time_sec",
    "The time spent executing a transaction (in seconds), excluding time spent waiting to acquire database locks",
    "txn_type", "db", "reducer",
)  # fmt: skip
REDUCER_WAIT = H(
    "spacetime_reducer_wait_time_sec", "The amount of time (in seconds) a reducer spends in the queue waiting to run",
    "db", "reducer",
)  # fmt: skip
FUEL = C("reducer_wasmtime_fuel_used", "The total wasmtime fuel used", "db", "reducer")
WASM_TIME = C("reducer_wasm_time_usec", "The total runtime of reducer calls", "db", "reducer")
ABI_TIME = C("reducer_abi_time_usec", "The total time spent in reducer ABI calls", "db", "reducer")
INSTANCE_ERRORS = C(
    "spacetime_worker_wasm_instance_errors_total", "The number of fatal WASM instance errors, such as reducer panics.",
    "database_identity", "module_hash", "reducer_symbol",
)  # fmt: skip
ROWS_INSERTED = C(
    "spacetime_num_rows_inserted_total", "The cumulative number of rows inserted into a table",
    "txn_type", "db", "reducer_or_query", "table_id", "table_name",
)  # fmt: skip
ROWS_DELETED = C(
    "spacetime_num_rows_deleted_total", "The cumulative number of rows deleted from a table",
    "txn_type", "db", "reducer_or_query", "table_id", "table_name",
)  # fmt: skip
ROWS_SCANNED = C(
    "spacetime_num_rows_scanned_total", "The cumulative number of rows scanned from the database", "txn_type", "db"
)
TABLE_ROWS = G("spacetime_num_table_rows", "The number of rows in a table", "db", "table_id", "table_name")
TABLE_SIZE = G(
    "spacetime_table_size_bytes", "The number of bytes in a table with the precision of a page size",
    "db", "table_id", "table_name",
)  # fmt: skip
WASM_MEMORY = G(
    "spacetime_worker_wasm_memory_bytes",
    "The number of bytes of linear memory allocated by the database's WASM module instance", "database_identity",
)  # fmt: skip
REPLAY_TIME = G(
    "spacetime_replay_total_time_seconds",
    "Total time spent replaying a database upon restart, including snapshot read, snapshot restore and commitlog replay",
    "db",
)  # fmt: skip
SNAPSHOT_CREATION = H(
    "spacetime_snapshot_creation_time_total_sec",
    "The time (in seconds) it took to take and store a database snapshot, including scheduling overhead", "db",
)  # fmt: skip
CONNECTED_CLIENTS = G("spacetime_worker_connected_clients", "Number of clients connected to the worker.", "database_identity")
SUBSCRIPTION_CONNECTIONS = G(
    "spacetime_subscription_connections", "Number of connections with active subscriptions", "database_identity"
)
ACTIVE_QUERIES = G("spacetime_active_queries", "The number of active subscription queries", "database_identity")
WS_REQUESTS = C(
    "spacetime_websocket_requests_total", "The cumulative number of websocket request messages",
    "database_identity", "protocol",
)  # fmt: skip
ROUND_TRIP = H(
    "spacetime_request_round_trip_time", "The total time it takes for request to complete",
    "txn_type", "database_identity", "reducer_symbol",
)  # fmt: skip
SENT_SIZE = H("spacetime_websocket_sent_msg_size_bytes", "The size of messages sent to connected sessions", "db", "workload")
BYTES_SENT = C(
    "spacetime_num_bytes_sent_to_clients_total", "The cumulative number of bytes sent to clients", "txn_type", "db"
)
MESSAGE_LOG_SIZE = G(
    "spacetime_message_log_size_bytes", "For a given database, the number of bytes occupied by its message log", "db"
)

# --- Orrery's -------------------------------------------------------------------------------------
SEGMENTS = G("orrery_commitlog_segments", "Segment files of the database's commit log on this node", "db")
FSYNC = H("orrery_fsync_duration_seconds", "Time of each group-commit fsync of the database's commit log on this node", "db")
DURABLE_OFFSET = G(
    "orrery_replica_durable_offset", "One past the last commit-log record fsynced on this node", "db"
)
COMMITTED_OFFSET = G(
    "orrery_replica_committed_offset",
    "One past the last committed record, as this node knows it (leader: quorum-durable; follower: what the leader said)",
    "db",
)  # fmt: skip
EPOCH = G("orrery_replica_epoch", "The epoch this node's replica leads or follows (else the highest it promised)", "db")
LEADER = G("orrery_replica_leader", "1 when this node leads the database, 0 when it holds a replica it does not lead", "db")
HAS_QUORUM = G(
    "orrery_replica_has_quorum", "On the leader: 1 while a majority of the voting replicas answered lately, else 0", "db"
)
CAUGHT_UP = G(
    "orrery_replica_caught_up",
    "On a follower of a led database: 1 while it streams from the leader and is caught up to the commit point "
    "(within the readiness lag), else 0",
    "db",
)  # fmt: skip
LAG_RECORDS = G(
    "orrery_replication_lag_records", "On the leader: records of its log the follower has not made durable yet",
    "db", "follower",
)  # fmt: skip
LAG_SECONDS = G(
    "orrery_replication_lag_seconds",
    "On the leader: seconds since the oldest batch the follower has not acknowledged was sent "
    "(while the stream is down: since it went down)",
    "db", "follower",
)  # fmt: skip
FOLLOWER_CONNECTED = G(
    "orrery_replication_follower_connected", "On the leader: 1 while the replication stream to the follower is up",
    "db", "follower",
)  # fmt: skip
ROLE_CHANGES = C(
    "orrery_replica_role_changes_total", "This node became leader of the database, or stepped down", "db", "change"
)
QUORUM_LOSSES = C(
    "orrery_quorum_losses_total", "Times this node, leading the database, went from having a quorum to not having one", "db"
)
SNAPSHOT_DURATION = H(
    "orrery_snapshot_duration_seconds", "Replica snapshots this node sent (leader) or fetched and installed (follower)",
    "db", "kind",
)  # fmt: skip
SNAPSHOT_BYTES = C("orrery_snapshot_bytes_total", "Bytes of replica snapshots sent or installed", "db", "kind")

SPECS = (
    NUM_TXNS, TXN_ELAPSED, TXN_CPU, REDUCER_WAIT, FUEL, WASM_TIME, ABI_TIME, INSTANCE_ERRORS, ROWS_INSERTED,
    ROWS_DELETED, ROWS_SCANNED, TABLE_ROWS, TABLE_SIZE, WASM_MEMORY, REPLAY_TIME, SNAPSHOT_CREATION,
    CONNECTED_CLIENTS, SUBSCRIPTION_CONNECTIONS, ACTIVE_QUERIES, WS_REQUESTS, ROUND_TRIP, SENT_SIZE, BYTES_SENT,
    MESSAGE_LOG_SIZE, SEGMENTS, FSYNC, DURABLE_OFFSET, COMMITTED_OFFSET, EPOCH, LEADER, HAS_QUORUM, CAUGHT_UP,
    LAG_RECORDS, LAG_SECONDS, FOLLOWER_CONNECTED, ROLE_CHANGES, QUORUM_LOSSES, SNAPSHOT_DURATION, SNAPSHOT_BYTES,
)  # fmt: skip

_PROTOCOLS = ("binary", "text")


class HostNodeCollector:
    """Collects a :class:`~hostnode.service.HostNode` (and, in a cluster, its
    :class:`~hostnode.cluster.ClusterNode`) at scrape time. Runs on the event loop."""

    def __init__(self, node: HostNode, cluster: ClusterNode | None = None) -> None:
        self.node = node
        self.cluster = cluster
        #: id(database) → (its program, the program's 1.12 module hash in hex), for the
        #: instance-error label; only the databases of the last scrape are kept.
        self._hashes: dict[int, tuple[bytes, str]] = {}

    def collect(self) -> Iterator[Metric]:
        """Every family of :data:`SPECS`."""
        scrape = Scrape(SPECS)
        served: set[Identity] = set()
        hashes, self._hashes = self._hashes, {}
        for identity, db, hub in self.node.serving():
            if id(db) in hashes:
                self._hashes[id(db)] = hashes[id(db)]
            served.add(identity)
            hex_id = identity.to_hex()
            self._database(scrape, hex_id, db)
            self._realtime(scrape, hex_id, db.stats, hub)
            self._log(scrape, hex_id, db.clog, db.committer)
        if self.cluster is not None:
            self._replicas(scrape, served)
        yield from scrape.families()

    # --- databases served ------------------------------------------------------------------------

    def _module_hash(self, db: Database) -> str:
        program = db.program_bytes
        cached = self._hashes.get(id(db))
        if cached is None or cached[0] is not program:
            cached = self._hashes[id(db)] = (program, hash_bytes(program).hex())
        return cached[1]

    def _database(self, scrape: Scrape, db_hex: str, db: Database) -> None:
        stats = db.stats
        names = db.table_names()
        for st in [*list(stats.reducers.values()), stats.sql, stats.internal]:
            self._txns(scrape, db_hex, st, db, names)
        for tid, (name, rows, size) in _table_sizes(db).items():
            scrape.add(TABLE_ROWS, (db_hex, str(tid), name), rows)
            scrape.add(TABLE_SIZE, (db_hex, str(tid), name), size)
        scrape.add(WASM_MEMORY, (db_hex,), stats.wasm_memory_bytes)
        if stats.replay_seconds is not None:
            scrape.add(REPLAY_TIME, (db_hex,), stats.replay_seconds)
        scrape.histogram(SNAPSHOT_CREATION, (db_hex,), stats.checkpoints)
        for workload, n in list(stats.rows_scanned.items()):
            scrape.add(ROWS_SCANNED, (workload, db_hex), n)

    def _txns(self, scrape: Scrape, db_hex: str, st: TxnStats, db: Database, names: dict[int, str]) -> None:
        if not st.calls:
            return
        labels = (st.txn_type, db_hex, st.reducer)
        scrape.add(NUM_TXNS, (*labels, "true"), st.committed)
        scrape.add(NUM_TXNS, (*labels, "false"), st.failed)
        if st.elapsed.count:  # (transactions no reducer ran in are counted, not timed)
            scrape.histogram(TXN_ELAPSED, labels, st.elapsed)
            scrape.histogram(TXN_CPU, labels, st.elapsed)
        if st.txn_type == "Reducer":
            scrape.histogram(REDUCER_WAIT, (db_hex, st.reducer), st.wait)
            scrape.add(FUEL, (db_hex, st.reducer), st.energy)
            scrape.add(WASM_TIME, (db_hex, st.reducer), st.wasm_us)
            scrape.add(ABI_TIME, (db_hex, st.reducer), st.abi_us)
            scrape.add(INSTANCE_ERRORS, (db_hex, self._module_hash(db), st.reducer), st.traps)
        for tid, (inserted, deleted) in list(st.rows.items()):
            table = names.get(tid)
            if table is None:
                continue  # dropped since
            row_labels = (st.txn_type, db_hex, st.reducer, str(tid), table)
            scrape.add(ROWS_INSERTED, row_labels, inserted)
            scrape.add(ROWS_DELETED, row_labels, deleted)

    def _realtime(self, scrape: Scrape, db_hex: str, stats: DatabaseStats, hub: RealtimeHub | None) -> None:
        if hub is not None and not hub.closed:
            scrape.add(CONNECTED_CLIENTS, (db_hex,), len(hub.connections))
            scrape.add(SUBSCRIPTION_CONNECTIONS, (db_hex,), hub.manager.subscribed_connections())
            scrape.add(ACTIVE_QUERIES, (db_hex,), hub.manager.num_queries)
        else:
            for spec in (CONNECTED_CLIENTS, SUBSCRIPTION_CONNECTIONS, ACTIVE_QUERIES):
                scrape.add(spec, (db_hex,), 0)
        for i, n in enumerate(list(stats.ws_requests)):
            scrape.add(WS_REQUESTS, (db_hex, _PROTOCOLS[i]), n)
        for reducer, h in list(stats.round_trips.items()):
            scrape.histogram(ROUND_TRIP, ("Reducer", db_hex, reducer), h)
        for workload in (SUBSCRIBE, UNSUBSCRIBE, SQL):
            h = stats.round_trips_other[workload]
            if h.count:
                scrape.histogram(ROUND_TRIP, (workload, db_hex, ""), h)
        for workload in (UPDATE, SUBSCRIBE, UNSUBSCRIBE, SQL):
            sent = stats.sent[workload]
            if sent.sizes.count:
                scrape.histogram(SENT_SIZE, (db_hex, workload), sent.sizes)
                scrape.add(BYTES_SENT, (workload, db_hex), sent.bytes)

    # --- every replica -------------------------------------------------------------------------

    def _log(self, scrape: Scrape, db_hex: str, clog: CommitLog, committer: GroupCommitter) -> None:
        scrape.add(MESSAGE_LOG_SIZE, (db_hex,), clog.disk_bytes())
        scrape.add(SEGMENTS, (db_hex,), len(clog.segment_bases()))
        scrape.histogram(FSYNC, (db_hex,), clog.fsync_seconds)
        scrape.add(DURABLE_OFFSET, (db_hex,), committer.durable_offset)

    def _replicas(self, scrape: Scrape, served: set[Identity]) -> None:
        cluster = self.cluster
        assert cluster is not None
        now = time.monotonic()
        for identity, leader in list(cluster.leading.items()):
            db = leader.db
            if db is None:
                continue
            db_hex = identity.to_hex()
            if identity not in served:  # (between opening and serving)
                self._log(scrape, db_hex, db.clog, db.committer)
            scrape.add(LEADER, (db_hex,), 1)
            scrape.add(EPOCH, (db_hex,), leader.epoch)
            scrape.add(COMMITTED_OFFSET, (db_hex,), leader.commit_offset)
            scrape.add(HAS_QUORUM, (db_hex,), 1 if leader.has_quorum() else 0)
            leader_next = db.clog.next_offset
            for node_id, link in list(leader.links.items()):
                records, seconds = link.lag(leader_next, now)
                scrape.add(LAG_RECORDS, (db_hex, node_id), records)
                scrape.add(LAG_SECONDS, (db_hex, node_id), seconds)
                scrape.add(FOLLOWER_CONNECTED, (db_hex, node_id), 1 if link.state.connected else 0)
        for identity, follower in list(cluster.followers.items()):
            db_hex = identity.to_hex()
            clog = follower.clog
            self._log(scrape, db_hex, clog, follower.committer)
            scrape.add(LEADER, (db_hex,), 0)
            scrape.add(EPOCH, (db_hex,), cluster.stream_epoch(identity) or clog.promised_epoch)
            scrape.add(COMMITTED_OFFSET, (db_hex,), cluster.known_commit.get(identity, 0))
            if cluster.follows_leader(identity):
                scrape.add(CAUGHT_UP, (db_hex,), 0 if cluster.lagging(identity) else 1)
        for identity, counters in list(cluster.counters.items()):
            db_hex = identity.to_hex()
            scrape.add(ROLE_CHANGES, (db_hex, "became_leader"), counters.became_leader)
            scrape.add(ROLE_CHANGES, (db_hex, "stepped_down"), counters.stepped_down)
            scrape.add(QUORUM_LOSSES, (db_hex,), counters.quorum_losses)
            for kind, h in counters.snapshots.items():
                if h.count:
                    scrape.histogram(SNAPSHOT_DURATION, (db_hex, kind), h)
                    scrape.add(SNAPSHOT_BYTES, (db_hex, kind), counters.snapshot_bytes[kind])


def _table_sizes(db: Database) -> dict[int, tuple[str, int, int]]:
    """Rows and bytes of every table as of the database's last checkpoint (a read transaction:
    safe beside the writer)."""
    try:
        with db.read() as tx:
            sizes: dict[int, tuple[str, int, int]] = tx.table_sizes()
            return sizes
    except Exception:  # noqa: BLE001 - a database closing under the scrape: no table figures this time
        return {}
