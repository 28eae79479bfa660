"""Leader elections of databases (docs/cluster.md "Election"; REPLICATION.md rules 1, 3 and 4).

For a record at epoch ``e``:

1. CAS the record to epoch ``e+1`` with no leader (rule 3a). A membership change (add or remove a
   voter) or a reset (new generation) rides on this same write.
2. ``Promise(db, e+1)`` to every voting replica — of the old *and* the new voter set — on a live
   node, concurrently, with a deadline. A replica that promises fsyncs its log, stops following or
   leading anything older, and reports the end of its durable log (rule 3b).
3. Fewer than a majority of the old voters, or of the new ones, answered: the record stays
   leaderless. The caller (the reconcile loop) tries again later, each attempt with a new epoch.
4. Otherwise the leader is the new voter with the highest ``(generation, last_epoch,
   next_offset)`` — never the offset alone (rule 4); ties go to the preferred node (a transfer's
   target, the current leader for a membership change), then to the node leading fewest
   databases, then to the smallest id.
5. CAS the record to that leader (same epoch), remembering its node's incarnation, then nudge every
   replica with ``Assign``.

Elections of one database run one at a time (a lock per database); elections of different
databases run concurrently, at most ``max_concurrent`` at once, so hundreds of databases fail over
together in about the time of one.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from clustermeta.records import DatabaseRecord, DbState, majority
from controlplane.dbrecords import DbRecords, Versioned
from controlplane.hostnode_client import HostNodeFailure, Peer
from controlplane.logfields import kv
from controlplane.metrics import ControlPlaneStats
from controlplane.nodes import NodeDirectory
from controlplane.placement import Load
from controlplane.replica_client import NodeClients, NodeUnreachable, PromiseReport
from sats.identity import Identity

__all__ = ["ElectionOutcome", "Elector", "KeyedLocks", "RecordChange", "evolve"]

log = logging.getLogger(__name__)

#: A change made together with the epoch bump (membership, generation); gets a private copy.
RecordChange = Callable[[DatabaseRecord], DatabaseRecord]


def evolve(record: DatabaseRecord) -> DatabaseRecord:
    """A deep copy of ``record`` to change (records are mutable dataclasses)."""
    return copy.deepcopy(record)


@dataclass
class ElectionOutcome:
    """What one election did. ``leader`` is None when no majority answered (or the record moved)."""

    identity: Identity
    old_epoch: int
    new_epoch: int
    leader: str | None
    #: Per node asked: its report, or why it gave none.
    reports: dict[str, PromiseReport | str] = field(default_factory=dict)
    record: Versioned | None = None
    reason: str = ""

    @property
    def elected(self) -> bool:
        """Whether a leader was chosen and recorded."""
        return self.leader is not None

    def describe_reports(self) -> str:
        """``n1:3/120,n2:3/118,n3:unreachable`` (last_epoch/next_offset per node)."""
        parts = []
        for node, report in sorted(self.reports.items()):
            if isinstance(report, PromiseReport):
                text = f"{report.last_epoch}/{report.next_offset}"
                if report.stale:
                    text = f"stale(promised {report.promised_epoch})"
            else:
                text = report
            parts.append(f"{node}:{text}")
        return ",".join(parts)


class KeyedLocks:
    """One asyncio lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[object, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        """Hold the key's lock."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def held(self, key: object) -> bool:
        """Whether someone holds or waits for the key's lock."""
        return key in self._locks


class Elector:
    """Runs elections against the records, the live nodes and their replicas."""

    def __init__(
        self,
        records: DbRecords,
        nodes: NodeDirectory,
        clients: NodeClients,
        load: Callable[[], Load],
        *,
        rpc_timeout: float = 2.0,
        max_concurrent: int = 64,
        stats: ControlPlaneStats | None = None,
    ) -> None:
        self.stats = stats or ControlPlaneStats()
        self.records = records
        self.nodes = nodes
        self.clients = clients
        self.load = load
        self.rpc_timeout = rpc_timeout
        self._locks = KeyedLocks()
        self._slots = asyncio.Semaphore(max_concurrent)
        # Highest epoch any replica reported promising, per database: the next attempt goes above it.
        self._seen_epochs: dict[Identity, int] = {}

    def running(self, identity: Identity) -> bool:
        """Whether an election of ``identity`` runs or waits."""
        return self._locks.held(identity)

    @asynccontextmanager
    async def exclusive(self, identity: Identity) -> AsyncIterator[None]:
        """Hold the database's election lock (no election runs meanwhile)."""
        async with self._locks.hold(identity):
            yield

    async def elect(
        self,
        identity: Identity,
        *,
        reason: str,
        preferred: str | None = None,
        change: RecordChange | None = None,
        needed: Callable[[DatabaseRecord], bool] | None = None,
        avoid: str | None = None,
    ) -> ElectionOutcome | None:
        """Elect a leader for ``identity`` in a new epoch (see the module docstring).

        ``change`` edits the record together with the epoch bump; ``needed`` is asked again under
        the lock, and a False answer skips the election (returns None), as does a record that is
        gone or not ``active``. ``avoid`` is not chosen when the others that promised form a
        majority by themselves (then every committed record is among them too: rule 4 holds
        without it) — for a leader that keeps its lease but cannot reach its followers.
        """
        async with self._locks.hold(identity), self._slots:
            bumped = await self._bump(identity, change, needed)
            if bumped is None:
                return None
            before, current = bumped
            outcome = ElectionOutcome(identity, before.epoch, current.record.epoch, None, record=current, reason=reason)
            await self._collect(before, current.record, outcome)
            chosen = self._choose(before, current.record, outcome, preferred, avoid)
            if chosen is not None:
                outcome.record = await self._install_leader(current, chosen)
                outcome.leader = chosen if outcome.record is not None else None
            self._log(outcome, before, current.record)
            self.stats.election(
                identity, elected=outcome.elected, leader_changed=outcome.elected and outcome.leader != before.leader
            )
            if outcome.record is not None:
                await self.nudge(outcome.record.record)
            return outcome

    async def _bump(
        self,
        identity: Identity,
        change: RecordChange | None,
        needed: Callable[[DatabaseRecord], bool] | None,
    ) -> tuple[DatabaseRecord, Versioned] | None:
        for _ in range(8):
            current = await self.records.get(identity)
            if current is None or current.record.state is not DbState.ACTIVE:
                return None
            if needed is not None and not needed(current.record):
                return None
            new = change(evolve(current.record)) if change is not None else evolve(current.record)
            new.epoch = max(current.record.epoch, self._seen_epochs.get(identity, 0)) + 1
            new.leader = None
            new.leader_incarnation = ""
            written = await self.records.cas(current, new)
            if written is not None:
                return current.record, written
        log.warning("election skipped %s", kv(db=identity.to_hex(), reason="record kept changing"))
        return None

    async def _collect(self, before: DatabaseRecord, after: DatabaseRecord, outcome: ElectionOutcome) -> None:
        voters = list(dict.fromkeys([*before.replicas, *after.replicas]))
        asked: dict[str, asyncio.Task[PromiseReport]] = {}
        for node in voters:
            address = self.nodes.address(node)
            if not address:
                outcome.reports[node] = "down"
                continue
            asked[node] = asyncio.ensure_future(
                self.clients.node(address).promise(after.identity, after.epoch, timeout=self.rpc_timeout)
            )
        try:
            if asked:
                await asyncio.wait(asked.values())
        finally:
            for task in asked.values():
                task.cancel()  # only those still running: an election cancelled midway
        for node, task in asked.items():
            try:
                report = task.result()
            except NodeUnreachable:
                outcome.reports[node] = "unreachable"
                continue
            except HostNodeFailure as e:
                outcome.reports[node] = f"refused({e.kind})"
                continue
            outcome.reports[node] = report
            if report.promised_epoch > after.epoch:
                self._seen_epochs[after.identity] = max(self._seen_epochs.get(after.identity, 0), report.promised_epoch)

    def _choose(
        self,
        before: DatabaseRecord,
        after: DatabaseRecord,
        outcome: ElectionOutcome,
        preferred: str | None,
        avoid: str | None = None,
    ) -> str | None:
        promised = {
            n: r for n, r in outcome.reports.items()
            if isinstance(r, PromiseReport) and not r.stale and r.promised_epoch == after.epoch
        }  # fmt: skip
        for voters in (before.replicas, after.replicas):
            if sum(1 for n in voters if n in promised) < majority(len(voters)):
                return None
        if avoid is not None and avoid in promised:
            others = {n: r for n, r in promised.items() if n != avoid}
            if all(sum(1 for n in v if n in others) >= majority(len(v)) for v in (before.replicas, after.replicas)):
                promised = others
        candidates = [n for n in after.replicas if n in promised]
        load = self.load()

        def rank(node: str) -> tuple[int, int, int, int, int, str]:
            r = promised[node]
            return (-r.generation, -r.last_epoch, -r.next_offset, node != preferred, load.leaders_on(node), node)

        return min(candidates, key=rank) if candidates else None

    async def _install_leader(self, current: Versioned, chosen: str) -> Versioned | None:
        bumped = current.record
        for _ in range(8):
            new = evolve(current.record)
            new.leader = chosen
            info = self.nodes.get(chosen)
            new.leader_incarnation = "" if info is None else info.incarnation
            written = await self.records.cas(current, new)
            if written is not None:
                self._seen_epochs.pop(new.identity, None)
                return written
            latest = await self.records.get(bumped.identity)
            if (
                latest is None
                or latest.record.epoch != bumped.epoch
                or latest.record.leader is not None
                or latest.record.replicas != bumped.replicas
            ):
                return None  # someone moved the record on; their view wins
            current = latest
        return None

    def _log(self, outcome: ElectionOutcome, before: DatabaseRecord, after: DatabaseRecord) -> None:
        fields = kv(
            db=outcome.identity.to_hex(), reason=outcome.reason, old_epoch=outcome.old_epoch,
            new_epoch=outcome.new_epoch, old_leader=before.leader, leader=outcome.leader,
            voters=",".join(after.replicas), reports=outcome.describe_reports(),
        )  # fmt: skip
        if outcome.elected:
            log.info("election %s", fields)
        else:
            log.warning("election without a leader %s", fields)

    def peers(self, record: DatabaseRecord) -> list[Peer]:
        """Every node the record names, with its address (empty for a node not live)."""
        return [Peer(n, self.nodes.address(n)) for n in dict.fromkeys(record.nodes())]

    async def nudge(self, record: DatabaseRecord, *, extra_nodes: tuple[str, ...] = ()) -> None:
        """``Assign`` the record to every live node it names (and ``extra_nodes``), best effort."""
        peers = self.peers(record)
        targets = [n for n in dict.fromkeys([*record.nodes(), *extra_nodes]) if self.nodes.is_live(n)]

        async def one(node: str) -> None:
            try:
                await self.clients.node(self.nodes.address(node)).assign(
                    record.identity, record, peers, timeout=self.rpc_timeout
                )
            except (NodeUnreachable, HostNodeFailure) as e:
                log.info("assign failed %s", kv(db=record.identity.to_hex(), node=node, error=e))

        await asyncio.gather(*(one(n) for n in targets))
