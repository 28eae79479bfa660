"""The control plane's metrics: elections and leader changes it ran, and (while active) the health
of every database as the records and live nodes show it.

Elections are counted by :class:`~controlplane.elections.Elector` into :class:`ControlPlaneStats`
(event loop); the per-database gauges are computed at scrape time from the records view and the
node directory, by the active control plane only (a standby's copy would duplicate them).

=====================================  =======  ===========  ==============================================
metric                                 type     labels       what
=====================================  =======  ===========  ==============================================
``orrery_controlplane_active``         gauge                 1 on the active control plane, 0 on a standby
``orrery_elections_total``             counter  db, result   elections run here: ``elected``, or
                                                             ``no_majority`` (fewer than a majority promised)
``orrery_leader_changes_total``        counter  db           elections that installed a different leader
``orrery_database_replicas``           gauge    db           voting replicas the record names
``orrery_database_live_replicas``      gauge    db           of them, on a live node (holding its lease)
``orrery_database_has_leader``         gauge    db           1 when the record names a leader whose node is
                                                             live, else 0
``orrery_database_epoch``              gauge    db           the record's epoch
``orrery_controlplane_live_nodes``     gauge                 host nodes registered in etcd
=====================================  =======  ===========  ==============================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from clustermeta.records import DbState
from observability.families import MetricSpec, Scrape

if TYPE_CHECKING:
    from controlplane.cluster import Cluster
    from sats.identity import Identity

__all__ = ["ControlPlaneCollector", "ControlPlaneStats"]

ACTIVE = MetricSpec.gauge("orrery_controlplane_active", "1 on the active control plane, 0 on a standby")
ELECTIONS = MetricSpec.counter(
    "orrery_elections_total", "Leader elections this control plane ran, by result (elected, no_majority)", "db", "result"
)
LEADER_CHANGES = MetricSpec.counter(
    "orrery_leader_changes_total", "Elections run by this control plane that installed a different leader", "db"
)
REPLICAS = MetricSpec.gauge("orrery_database_replicas", "Voting replicas of the database (its record)", "db")
LIVE_REPLICAS = MetricSpec.gauge(
    "orrery_database_live_replicas", "Voting replicas of the database on host nodes that hold their lease", "db"
)
HAS_LEADER = MetricSpec.gauge(
    "orrery_database_has_leader", "1 when the database's record names a leader whose node is live, else 0", "db"
)
EPOCH = MetricSpec.gauge("orrery_database_epoch", "The epoch in the database's record", "db")
LIVE_NODES = MetricSpec.gauge("orrery_controlplane_live_nodes", "Host nodes registered in etcd (holding their lease)")
SPECS = (ACTIVE, ELECTIONS, LEADER_CHANGES, REPLICAS, LIVE_REPLICAS, HAS_LEADER, EPOCH, LIVE_NODES)


class ControlPlaneStats:
    """Elections this control plane ran (event loop only)."""

    def __init__(self) -> None:
        #: (database, result) → elections.
        self.elections: dict[tuple[Identity, str], int] = {}
        self.leader_changes: dict[Identity, int] = {}

    def election(self, identity: Identity, *, elected: bool, leader_changed: bool) -> None:
        """One election of ``identity`` ended."""
        key = (identity, "elected" if elected else "no_majority")
        self.elections[key] = self.elections.get(key, 0) + 1
        if leader_changed:
            self.leader_changes[identity] = self.leader_changes.get(identity, 0) + 1


class ControlPlaneCollector:
    """Exports a :class:`~controlplane.cluster.Cluster`'s stats and, while it is active, the
    state of every database."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def collect(self) -> Iterator[Metric]:
        """The families of :data:`SPECS`."""
        scrape = Scrape(SPECS)
        cluster = self.cluster
        stats = cluster.stats
        active = cluster.is_active()
        scrape.add(ACTIVE, (), 1 if active else 0)
        for (identity, result), n in list(stats.elections.items()):
            scrape.add(ELECTIONS, (identity.to_hex(), result), n)
        for identity, n in list(stats.leader_changes.items()):
            scrape.add(LEADER_CHANGES, (identity.to_hex(),), n)
        nodes = cluster.nodes
        scrape.add(LIVE_NODES, (), len(nodes.live()))
        if active:
            for record in cluster.view.records():
                if record.state is not DbState.ACTIVE:
                    continue
                db_hex = record.identity.to_hex()
                scrape.add(REPLICAS, (db_hex,), len(record.replicas))
                scrape.add(LIVE_REPLICAS, (db_hex,), sum(1 for n in record.replicas if nodes.is_live(n)))
                has_leader = record.leader is not None and nodes.is_live(record.leader)
                scrape.add(HAS_LEADER, (db_hex,), 1 if has_leader else 0)
                scrape.add(EPOCH, (db_hex,), record.epoch)
                if record.identity not in stats.leader_changes:  # exported from the start, at 0
                    scrape.add(LEADER_CHANGES, (db_hex,), 0)
        yield from scrape.families()
