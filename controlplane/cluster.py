"""The cluster control plane: one object that wires the parts together and runs the active duties.

``Cluster(store, clients, config)`` owns

* :class:`~controlplane.nodes.NodeDirectory` — the live host nodes,
* :class:`~controlplane.watching.RecordsView` — the database records,
* :class:`~controlplane.ha.ActiveSeat` — the active/standby election and the fence of every write,
* :class:`~controlplane.elections.Elector`, :class:`~controlplane.publishing.ClusterControlPlane`,
  :class:`~controlplane.operations.Operations` and :class:`~controlplane.inspection.Inspector`,

and, while this control plane is active, the **reconcile loop**: every ``reconcile_interval`` (and
at once when a node comes, goes or restarts) it looks at every record and starts what is due —

* an election for an ``active`` record with no leader (when a majority of its voters is live),
  whose leader's node is gone, or whose leader's node restarted (another incarnation);
* the end of a delete (``deleting`` records nobody here is deleting);
* the cleanup of an abandoned create (``creating`` records nobody here publishes, unchanged for
  ``abandoned_create_timeout``).

Elections of different databases run concurrently; a database that found no majority is retried
with exponential backoff (up to ``max_election_backoff``), at once when a node comes back.

:meth:`Cluster.ops` is what :mod:`controlplane.grpc_service` serves. ``start()``/``stop()`` bracket
it all; tests and the process (:mod:`orrery.controlplane_server`) use nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from clustermeta.aio import cancel_and_wait, wait_event
from clustermeta.metastore import MetaStore
from clustermeta.metrics import LeaseStats
from clustermeta.mirror import Change
from clustermeta.records import ControlPlaneInfo, DatabaseRecord, DbState, majority
from controlplane.config import ClusterConfig
from controlplane.core import ControlPlaneError, NotActive, new_identity, parse_name_or_identity
from controlplane.dbrecords import DbRecords, leader_first
from controlplane.elections import Elector
from controlplane.grpc_service import ControlPlaneOps
from controlplane.ha import ActiveSeat
from controlplane.inspection import Inspector, Verification
from controlplane.logfields import kv
from controlplane.metrics import ControlPlaneStats
from controlplane.nodes import NodeDirectory, NodeEvent, NodeEventKind
from controlplane.operations import Operations, Steps
from controlplane.publishing import ClusterControlPlane
from controlplane.replica_client import NodeClients
from controlplane.watching import DatabaseEvent, RecordsView, database_events
from sats.identity import Identity

__all__ = ["Cluster", "ClusterOps", "election_reason"]

log = logging.getLogger(__name__)


def election_reason(record: DatabaseRecord, nodes: NodeDirectory) -> str | None:
    """Why ``record`` needs an election now, or None (see the module docstring)."""
    if record.state is not DbState.ACTIVE or not record.replicas:
        return None
    if record.leader is None:
        live = sum(1 for n in record.replicas if nodes.is_live(n))
        return "leaderless" if live >= majority(len(record.replicas)) else None
    info = nodes.get(record.leader)
    if info is None:
        return "leader-gone"
    if record.leader_incarnation and info.incarnation != record.leader_incarnation:
        return "leader-restarted"
    if record.leader not in record.replicas:
        return "leader-not-a-voter"
    return None


class Cluster:
    """The control plane of a cluster (see the module docstring)."""

    def __init__(
        self,
        store: MetaStore,
        clients: NodeClients,
        config: ClusterConfig,
        *,
        mint_identity: Callable[[], Identity] = new_identity,
    ) -> None:
        self.store = store
        self.clients = clients
        self.config = config
        #: What this control plane counts (controlplane/metrics.py) and its lease's counters.
        self.stats = ControlPlaneStats()
        self.lease_stats = LeaseStats()
        self.nodes = NodeDirectory(store)
        self.view = RecordsView(store, on_change=self._records_changed)
        self.seat = ActiveSeat(
            store, ControlPlaneInfo(config.id, config.address, config.metrics), config.lease_ttl,
            on_active=self._activate, on_standby=self._deactivate, lease_stats=self.lease_stats,
        )  # fmt: skip
        self.records = DbRecords(store, self.seat, on_write=self.view.note)
        self.elector = Elector(
            self.records, self.nodes, clients, self.view.load,
            rpc_timeout=config.rpc_timeout, max_concurrent=config.max_concurrent_elections, stats=self.stats,
        )  # fmt: skip
        self.operations = Operations(
            self.records, self.nodes, clients, self.elector, config, load=self.view.load,
            all_records=self.view.records,
        )  # fmt: skip
        self.control = ClusterControlPlane(
            store, fence=self.seat, records=self.records, nodes=self.nodes, clients=clients, elector=self.elector,
            config=config, load=self.view.load, schedulable=self.operations.schedulable, mint_identity=mint_identity,
        )  # fmt: skip
        self.inspector = Inspector(self.control, self.records, self.nodes, clients, config, self.view.records)
        self._wake = asyncio.Event()
        self._duties: list[asyncio.Task[None]] = []
        self._jobs: dict[Identity, asyncio.Task[None]] = {}
        self._backoff: dict[Identity, tuple[float, float]] = {}
        self._abandoned: dict[Identity, tuple[int, float]] = {}
        #: Databases whose leader was seen stuck: since when, and why.
        self._stuck: dict[Identity, tuple[float, str]] = {}
        self._started = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, *, address: str | None = None) -> None:
        """Follow the nodes and records, then campaign for the active seat (in the background).

        ``address``: the ControlPlane service's address to advertise, when only known once the
        server is bound (default: ``config.address``).
        """
        if address is not None:
            self.config.address = address
            self.seat.info = ControlPlaneInfo(self.config.id, address, self.config.metrics)
        await self.nodes.start()
        self.nodes.subscribe(self._node_event)
        await self.view.start()
        await self.seat.start()
        self._started = True

    async def stop(self) -> None:
        """Give the seat up (a standby takes over at once), stop following, close the clients."""
        await self.seat.stop()
        await self._deactivate()
        await self.view.stop()
        await self.nodes.stop()
        await self.clients.close()

    def is_active(self) -> bool:
        """Whether this control plane is the active one."""
        return self.seat.is_active()

    def readiness(self) -> str | None:
        """Why this control plane cannot serve (``/readyz``), or None: it is started and holds a
        valid lease in etcd (registered, campaigning or active; a standby is ready too)."""
        if not self._started:
            return "the control plane is starting"
        if not self.seat.registered():
            return "no valid lease in etcd (etcd unreachable, or the lease is being renewed)"
        return None

    async def wait_active(self, timeout: float | None = None) -> None:
        """Return once this control plane is active (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while not self.seat.is_active():
                changed = self.seat.changed
                if self.seat.is_active():
                    break
                await wait_event(changed, 0.2)

    def ops(self) -> ClusterOps:
        """The operations the gRPC service serves."""
        return ClusterOps(self)

    # --- active duties ------------------------------------------------------------------------

    async def _activate(self) -> None:
        self._wake.set()
        self._duties.append(asyncio.create_task(self._reconcile_loop(), name=f"reconcile:{self.config.id}"))
        self._duties.append(asyncio.create_task(self._health_loop(), name=f"leader-health:{self.config.id}"))

    async def _deactivate(self) -> None:
        tasks = [*self._duties, *self._jobs.values()]
        self._duties.clear()
        self._jobs.clear()
        await cancel_and_wait(*tasks)

    def _node_event(self, event: NodeEvent) -> None:
        if event.kind is not NodeEventKind.GONE:
            self._backoff.clear()  # a node is back: every leaderless database may elect now
        if event.kind is not NodeEventKind.UP:
            self.operations.draining.discard(event.node_id)  # a drain lasts as long as the process
        if event.kind is NodeEventKind.RESTARTED and self.seat.is_active():
            # Its replicas follow again as soon as they hear who leads (it also reads /db/ itself).
            records = [r for r in self.view.records() if event.node_id in r.nodes() and r.leader != event.node_id]
            if records:
                nudges = asyncio.create_task(self._nudge_all(records), name=f"nudge:{event.node_id}")
                self._duties.append(nudges)
                nudges.add_done_callback(self._forget_duty)
        self._wake.set()

    def _forget_duty(self, task: asyncio.Task[None]) -> None:
        if task in self._duties:
            self._duties.remove(task)

    async def _nudge_all(self, records: list[DatabaseRecord]) -> None:
        await asyncio.gather(*(self.elector.nudge(r) for r in records))

    def _records_changed(self, changes: list[Change]) -> None:
        # A record may have become leaderless or ``deleting`` (e.g. a deposed control plane gave up
        # midway): look now rather than at the next tick. Passes coalesce, so bursts cost one each.
        self._wake.set()

    async def _reconcile_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.reconcile_once()
            except NotActive:
                return
            except Exception:
                log.exception("reconcile pass failed")
            await wait_event(self._wake, self.config.reconcile_interval)

    def reconcile_once(self) -> None:
        """Start every election, delete and cleanup that is due (one pass; see the module docstring)."""
        if not self.seat.is_active():
            raise NotActive("standby")
        now = time.monotonic()
        present: set[Identity] = set()
        for record in self.view.records():
            identity = record.identity
            present.add(identity)
            if identity in self._jobs or identity in self.control.in_flight or self.elector.running(identity):
                continue
            if record.state is DbState.ACTIVE:
                self._abandoned.pop(identity, None)
                reason = election_reason(record, self.nodes)
                if reason is not None and self._backoff.get(identity, (0.0, 0.0))[0] <= now:
                    self._spawn(identity, self._elect(identity, reason))
            elif record.state is DbState.DELETING:
                self._spawn(identity, self._finish_delete(identity))
            elif record.state is DbState.CREATING:
                seen = self._abandoned.get(identity)
                if seen is None or seen[0] != record.epoch:
                    self._abandoned[identity] = (record.epoch, now)
                elif now - seen[1] >= self.config.abandoned_create_timeout:
                    self._spawn(identity, self._abandon_create(identity, record.epoch))
        for gone in [i for i in self._abandoned if i not in present]:
            del self._abandoned[gone]
        for gone in [i for i in self._backoff if i not in present]:
            del self._backoff[gone]

    async def _health_loop(self) -> None:
        """Replace leaders that are named but do not lead (stepped down, refused the epoch) or
        that lead without a quorum while a majority of their replicas is live (cut off from
        their followers but not from etcd: the lease alone would keep them forever)."""
        while self.seat.is_active():
            try:
                await self.check_leaders(time.monotonic())
            except NotActive:
                return
            except Exception:
                log.exception("leader health pass failed")
            await asyncio.sleep(self.config.health_interval)

    async def check_leaders(self, now: float) -> None:
        """One health pass: a Status call per node that leads something; stuck leaders are
        replaced once seen stuck for ``stuck_leader_after``."""
        by_node: dict[str, list[DatabaseRecord]] = {}
        for record in self.view.records():
            if record.state is DbState.ACTIVE and record.leader and self.nodes.is_live(record.leader):
                by_node.setdefault(record.leader, []).append(record)
        seen: set[Identity] = set()

        async def check(node: str, records: list[DatabaseRecord]) -> None:
            address = self.nodes.address(node)
            if not address:
                return
            try:
                status = await self.clients.node(address).status(timeout=self.config.rpc_timeout)
            except Exception:  # noqa: BLE001 - an unreachable node is the lease's business
                return
            for record in records:
                state = status.replica(record.identity)
                if state is not None and state.role == "leader" and state.epoch == record.epoch:
                    if state.has_quorum:
                        continue
                    live = sum(1 for n in record.replicas if self.nodes.is_live(n))
                    if live < majority(len(record.replicas)):
                        continue  # nobody else could do better
                    why = "leader-without-quorum"
                else:
                    why = "leader-not-leading"
                seen.add(record.identity)
                first, _ = self._stuck.setdefault(record.identity, (now, why))
                if now - first >= self.config.stuck_leader_after and record.identity not in self._jobs:
                    self._stuck.pop(record.identity, None)
                    avoid = node if why == "leader-without-quorum" else None
                    self._spawn(record.identity, self._replace_stuck(record, why, avoid))

        await asyncio.gather(*(check(node, records) for node, records in by_node.items()))
        for identity in [i for i in self._stuck if i not in seen]:
            del self._stuck[identity]

    async def _replace_stuck(self, record: DatabaseRecord, why: str, avoid: str | None) -> None:
        log.warning("replacing a stuck leader %s", kv(db=record.identity.to_hex(), leader=record.leader, reason=why))
        await self.elector.elect(
            record.identity, reason=why, avoid=avoid,
            needed=lambda r: r.leader == record.leader and r.epoch == record.epoch,
        )  # fmt: skip

    def _spawn(self, identity: Identity, job: Coroutine[Any, Any, None]) -> None:
        """Run ``job`` for ``identity`` in the background, unless a job for it runs already."""
        if identity in self._jobs:
            job.close()
            return

        async def run() -> None:
            try:
                await job
            except NotActive:
                pass
            except ControlPlaneError as e:
                log.warning("background job failed %s", kv(db=identity.to_hex(), error=e.message))
            except Exception:
                log.exception("background job failed for %s", identity.to_hex())
            finally:
                if self._jobs.get(identity) is task:
                    del self._jobs[identity]
                    self._wake.set()

        task = asyncio.create_task(run(), name=f"job:{identity.to_hex()[:12]}")
        self._jobs[identity] = task

    async def _elect(self, identity: Identity, reason: str) -> None:
        outcome = await self.elector.elect(
            identity, reason=reason, needed=lambda r: election_reason(r, self.nodes) is not None
        )
        if outcome is None or outcome.elected:
            self._backoff.pop(identity, None)
            return
        delay = self._backoff.get(identity, (0.0, 0.0))[1]
        delay = min(max(delay * 2, self.config.reconcile_interval), self.config.max_election_backoff)
        self._backoff[identity] = (time.monotonic() + delay, delay)

    async def _finish_delete(self, identity: Identity) -> None:
        current = await self.records.get(identity)
        if current is not None and current.record.state is DbState.DELETING:
            await self.control.finish_delete(current)

    async def _abandon_create(self, identity: Identity, epoch: int) -> None:
        current = await self.records.get(identity)
        if current is None or current.record.state is not DbState.CREATING or current.record.epoch != epoch:
            return
        log.info("abandoning create %s", kv(db=identity.to_hex(), epoch=epoch))
        await self.control.discard_create(current)


class ClusterOps(ControlPlaneOps):
    """:class:`~controlplane.grpc_service.ControlPlaneOps` of a cluster: the cluster RPCs work, and
    every change is refused by a standby."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster.control, cluster.control.reset_replica, [])
        self.cluster = cluster

    def node_ids(self) -> list[int]:
        """One number per live host node (the public API only counts them)."""
        return list(range(len(self.cluster.nodes.live())))

    def placements(self, record: DatabaseRecord) -> list[tuple[str, str]]:
        """``(node, address)`` of the voting replicas, the leader first."""
        return [(n, self.cluster.nodes.address(n)) for n in leader_first(record)]

    async def _identity(self, name_or_identity: str) -> Identity:
        target = parse_name_or_identity(name_or_identity)
        return target if isinstance(target, Identity) else await self.control.resolve(target)

    async def cluster_status(self, name_or_identity: str) -> dict[str, object]:
        """See :meth:`Inspector.status`."""
        identity = await self._identity(name_or_identity) if name_or_identity else None
        return await self.cluster.inspector.status(identity)

    async def add_replica(self, name_or_identity: str, to_node: str, timeout_ms: int, steps: Steps) -> None:
        """See :meth:`Operations.add_replica`."""
        self.cluster.seat.require_active()
        identity = await self._identity(name_or_identity)
        await self.cluster.operations.add_replica(identity, to_node, steps, self.cluster.operations.deadline(timeout_ms))

    async def move_replica(
        self, name_or_identity: str, from_node: str, to_node: str, timeout_ms: int, steps: Steps
    ) -> None:
        """See :meth:`Operations.move_replica`."""
        self.cluster.seat.require_active()
        identity = await self._identity(name_or_identity)
        ops = self.cluster.operations
        await ops.move_replica(identity, from_node, to_node, steps, ops.deadline(timeout_ms))

    async def transfer_leader(self, name_or_identity: str, to_node: str, timeout_ms: int, steps: Steps) -> None:
        """See :meth:`Operations.transfer_leader`."""
        self.cluster.seat.require_active()
        identity = await self._identity(name_or_identity)
        ops = self.cluster.operations
        await ops.transfer_leader(identity, to_node or None, steps, ops.deadline(timeout_ms))

    async def drain(self, node_id: str, timeout_ms: int, steps: Steps) -> None:
        """See :meth:`Operations.drain`."""
        self.cluster.seat.require_active()
        ops = self.cluster.operations
        await ops.drain(node_id, steps, ops.deadline(timeout_ms))

    async def verify(self, name_or_identity: str, timeout_ms: int) -> Verification:
        """See :meth:`Inspector.verify`."""
        identity = await self._identity(name_or_identity)
        return await self.cluster.inspector.verify(identity, self.cluster.operations.deadline(timeout_ms))

    def database_events(self, start_revision: int) -> AsyncIterator[DatabaseEvent]:
        """See :func:`controlplane.watching.database_events`."""
        return database_events(self.cluster.store, start_revision)
