"""Online membership operations: add, move and remove replicas, transfer leadership, drain a node.

Each runs while the database keeps serving, one at a time per database, and every change of the
voter set is an election (:mod:`controlplane.elections`): a new epoch with promises from a
majority of the old *and* the new voters, the leader kept if it is still the best.

* **add replica**: the node becomes a learner (the leader streams it a snapshot and the log); once
  its durable offset is within ``catchup_lag`` records of the leader's (``Replication.Status`` on
  the leader, polled), it becomes a voter in a new epoch.
* **move replica**: add the new node, hand the leadership away if the old node leads, remove the
  old node (a new epoch without it), ``Delete`` its replica.
* **transfer leader**: ``PrepareTransfer`` on the leader (it stops taking writes until the target
  has every record), then an election that prefers the target.
* **drain**: transfer every leadership off the node, then move every replica off it.

Every step goes to :class:`Steps` (returned to the CLI, logged at INFO); a step that cannot be done
raises a :class:`~controlplane.core.ControlPlaneError` and the steps so far are returned with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from clustermeta.records import DatabaseRecord, DbState, NodeInfo
from controlplane.config import ClusterConfig
from controlplane.core import BadRequest, Conflict, ControlPlaneError, DatabaseNotFound, Unavailable
from controlplane.dbrecords import DbRecords, Versioned
from controlplane.elections import ElectionOutcome, Elector, KeyedLocks, evolve
from controlplane.hostnode_client import HostNodeFailure
from controlplane.logfields import kv
from controlplane.nodes import NodeDirectory
from controlplane.placement import Load, PlacementError, choose_nodes
from controlplane.replica_client import NodeClients, NodeUnreachable
from sats.identity import Identity

__all__ = ["OperationTimeout", "Operations", "Steps"]

log = logging.getLogger(__name__)

#: Databases handled at once by a drain.
DRAIN_PARALLELISM = 4


class OperationTimeout(Unavailable):
    """An operation ran out of time; the steps say how far it got."""


@dataclass
class Steps:
    """What an operation did, one line per step (also logged at INFO)."""

    operation: str
    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        """Record and log one step."""
        self.lines.append(text)
        log.info("%s %s", self.operation, kv(step=text))


class Deadline:
    """A monotonic deadline for one operation."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (0 when passed)."""
        return max(0.0, self.at - time.monotonic())

    def check(self, what: str) -> None:
        """Raise :class:`OperationTimeout` if the deadline passed."""
        if self.left() <= 0:
            raise OperationTimeout(f"timed out {what}")


class Operations:
    """The membership operations over one cluster's records, nodes and replicas."""

    def __init__(
        self,
        records: DbRecords,
        nodes: NodeDirectory,
        clients: NodeClients,
        elector: Elector,
        config: ClusterConfig,
        load: Callable[[], Load],
        all_records: Callable[[], list[DatabaseRecord]],
    ) -> None:
        self.records = records
        self.nodes = nodes
        self.clients = clients
        self.elector = elector
        self.config = config
        self.load = load
        self.all_records = all_records
        self._changes = KeyedLocks()
        #: Nodes being drained: no new replica goes there.
        self.draining: set[str] = set()

    def schedulable(self) -> dict[str, NodeInfo]:
        """Live nodes that may take new replicas."""
        return {n: info for n, info in self.nodes.live().items() if n not in self.draining}

    # --- helpers ------------------------------------------------------------------------------

    def deadline(self, timeout_ms: int) -> Deadline:
        """The deadline of an operation asked to finish in ``timeout_ms`` (0: the default)."""
        return Deadline(timeout_ms / 1000 if timeout_ms else self.config.operation_timeout)

    async def _record(self, identity: Identity) -> Versioned:
        current = await self.records.get(identity)
        if current is None:
            raise DatabaseNotFound("No such database.")
        if current.record.state is not DbState.ACTIVE:
            raise Conflict(f"database {identity.to_hex()} is {current.record.state.value}; try again later")
        return current

    def _require_live(self, node: str) -> None:
        if not self.nodes.is_live(node):
            raise BadRequest(f"host node {node} is not live")

    # --- add ----------------------------------------------------------------------------------

    async def add_replica(self, identity: Identity, node: str, steps: Steps, deadline: Deadline) -> None:
        """Add a voting replica on ``node`` (learner first, voter once caught up)."""
        async with self._changes.hold(identity):
            await self._add(identity, node, steps, deadline)

    async def _add(self, identity: Identity, node: str, steps: Steps, deadline: Deadline) -> None:
        current = await self._record(identity)
        record = current.record
        self._require_live(node)
        if node in record.replicas:
            raise BadRequest(f"host node {node} already holds a voting replica of {identity.to_hex()}")
        others = [n for n in record.learners if n != node]
        if others:
            raise Conflict(f"a membership change of {identity.to_hex()} is in progress (learner {', '.join(others)})")
        if node not in record.learners:

            def add_learner(r: DatabaseRecord) -> DatabaseRecord | None:
                if node in r.nodes() or r.state is not DbState.ACTIVE:
                    return None
                r = evolve(r)
                r.learners.append(node)
                return r

            written = await self.records.update(identity, add_learner)
            if written is None:
                raise Conflict(f"database {identity.to_hex()} changed; try again")
            steps.add(f"{node} added to {identity.to_hex()} as a learner (epoch {written.record.epoch})")
            await self.elector.nudge(written.record)
        else:
            steps.add(f"{node} is already a learner of {identity.to_hex()}; waiting for it to catch up")
        try:
            await self._catch_up(identity, node, steps, deadline)
        except ControlPlaneError:
            await self._drop_learner(identity, node, steps)
            raise

        def promote(r: DatabaseRecord) -> DatabaseRecord:
            r.learners = [n for n in r.learners if n != node]
            r.replicas = [*r.replicas, node]
            r.num_replicas = len(r.replicas)
            return r

        outcome = await self.elector.elect(
            identity, reason="add-replica", preferred=record.leader, change=promote, needed=lambda r: node in r.learners
        )
        self._report_election(outcome, steps, f"{node} is a voting replica")

    async def _catch_up(self, identity: Identity, node: str, steps: Steps, deadline: Deadline) -> None:
        """Wait until the leader sees ``node`` durable within ``catchup_lag`` of its own log."""
        last_log = 0.0
        while True:
            deadline.check(f"waiting for {node} to catch up")
            current = await self._record(identity)
            record = current.record
            if node not in record.learners:
                raise Conflict(f"{node} is no longer a learner of {identity.to_hex()}")
            progress = None
            if record.leader is not None and self.nodes.is_live(record.leader):
                try:
                    status = await self.clients.node(self.nodes.address(record.leader)).status(identity)
                    leader_state = status.replica(identity)
                    if leader_state is not None and leader_state.role == "leader":
                        follower = leader_state.follower(node)
                        progress = (leader_state.durable_offset, follower)
                except (NodeUnreachable, HostNodeFailure) as e:
                    log.info("catch-up poll failed %s", kv(db=identity.to_hex(), leader=record.leader, error=e))
            if progress is not None:
                leader_durable, follower = progress
                if follower is not None and follower.connected:
                    if follower.durable_offset + self.config.catchup_lag >= leader_durable:
                        steps.add(
                            f"{node} caught up: durable offset {follower.durable_offset} of the leader's "
                            f"{leader_durable}"
                        )
                        return
                now = time.monotonic()
                if now - last_log >= self.config.progress_log_interval:
                    last_log = now
                    log.info(
                        "catching up %s",
                        kv(db=identity.to_hex(), node=node, leader_durable=leader_durable,
                           durable=None if follower is None else follower.durable_offset),
                    )  # fmt: skip
            await asyncio.sleep(min(self.config.poll_interval, deadline.left()))

    async def _drop_learner(self, identity: Identity, node: str, steps: Steps) -> None:
        def drop(r: DatabaseRecord) -> DatabaseRecord | None:
            if node not in r.learners:
                return None
            r = evolve(r)
            r.learners = [n for n in r.learners if n != node]
            return r

        try:
            written = await self.records.update(identity, drop)
        except ControlPlaneError as e:
            steps.add(f"could not remove learner {node}: {e.message}")
            return
        if written is not None:
            steps.add(f"learner {node} removed again")
            await self.elector.nudge(written.record, extra_nodes=(node,))
        await self._delete_replica(identity, node)

    # --- remove and move ----------------------------------------------------------------------

    async def _remove(self, identity: Identity, node: str, steps: Steps, deadline: Deadline) -> None:
        current = await self._record(identity)
        if node not in current.record.replicas:
            raise BadRequest(f"host node {node} holds no voting replica of {identity.to_hex()}")
        if len(current.record.replicas) == 1:
            raise BadRequest(f"{node} holds the only voting replica of {identity.to_hex()}")
        if current.record.leader == node:
            await self._transfer(identity, None, steps, deadline)
            current = await self._record(identity)
            if current.record.leader == node:
                raise Unavailable(f"{node} still leads {identity.to_hex()}; the replica stays")

        def drop(r: DatabaseRecord) -> DatabaseRecord:
            r.replicas = [n for n in r.replicas if n != node]
            r.num_replicas = len(r.replicas)
            return r

        outcome = await self.elector.elect(
            identity, reason="remove-replica", preferred=current.record.leader, change=drop,
            needed=lambda r: node in r.replicas and r.leader != node,
        )  # fmt: skip
        self._report_election(outcome, steps, f"{node} is no longer a replica")
        await self._delete_replica(identity, node)
        steps.add(f"replica on {node} deleted")

    async def move_replica(
        self, identity: Identity, from_node: str, to_node: str, steps: Steps, deadline: Deadline
    ) -> None:
        """Move the replica on ``from_node`` to ``to_node``: add, switch, remove."""
        async with self._changes.hold(identity):
            current = await self._record(identity)
            if from_node not in current.record.replicas:
                raise BadRequest(f"host node {from_node} holds no voting replica of {identity.to_hex()}")
            if to_node in current.record.replicas:
                raise BadRequest(f"host node {to_node} already holds a voting replica of {identity.to_hex()}")
            await self._add(identity, to_node, steps, deadline)
            await self._remove(identity, from_node, steps, deadline)

    # --- transfer -----------------------------------------------------------------------------

    async def transfer_leader(
        self, identity: Identity, to_node: str | None, steps: Steps, deadline: Deadline
    ) -> None:
        """Hand the leadership to ``to_node`` (a live voting replica; None: the best placed one)."""
        async with self._changes.hold(identity):
            await self._transfer(identity, to_node, steps, deadline)

    async def _transfer(self, identity: Identity, target: str | None, steps: Steps, deadline: Deadline) -> None:
        current = await self._record(identity)
        record = current.record
        if target is None:
            target = await self._transfer_target(record)
        if target not in record.replicas:
            raise BadRequest(f"host node {target} holds no voting replica of {identity.to_hex()}")
        self._require_live(target)
        if record.leader == target:
            steps.add(f"{target} already leads {identity.to_hex()}")
            return
        if record.leader is not None and self.nodes.is_live(record.leader):
            try:
                stop = min(deadline.left(), self.config.transfer_write_stop)
                next_offset = await self.clients.node(self.nodes.address(record.leader)).prepare_transfer(
                    identity, record.epoch, target, timeout=max(stop, 0.1)
                )
            except (NodeUnreachable, HostNodeFailure) as e:
                raise Unavailable(f"leader {record.leader} could not prepare the transfer to {target}: {e}") from None
            steps.add(f"{record.leader} stopped taking writes; {target} has the log up to offset {next_offset}")
        outcome = await self.elector.elect(
            identity, reason="transfer-leader", preferred=target, needed=lambda r: r.leader != target
        )
        if outcome is None:
            latest = await self.records.get(identity)
            if latest is not None and latest.record.leader == target:
                steps.add(f"{target} leads {identity.to_hex()}")
                return
            raise Conflict(f"database {identity.to_hex()} changed during the transfer; try again")
        self._report_election(outcome, steps, f"leadership handed from {record.leader or '(none)'}")
        if outcome.leader != target:
            raise Unavailable(
                f"{outcome.leader} was elected instead of {target} (its log was further ahead); try again"
            )

    async def _transfer_target(self, record: DatabaseRecord) -> str:
        """The live voter best placed to lead next: furthest along, then leading fewest."""
        candidates = [n for n in record.replicas if n != record.leader and self.nodes.is_live(n)]
        if not candidates:
            raise Unavailable(f"no other live voting replica of {record.identity.to_hex()} can take over")
        durable: dict[str, int] = {}
        if record.leader is not None and self.nodes.is_live(record.leader):
            try:
                status = await self.clients.node(self.nodes.address(record.leader)).status(record.identity)
                state = status.replica(record.identity)
                if state is not None:
                    durable = {f.node_id: f.durable_offset for f in state.followers if f.connected}
            except (NodeUnreachable, HostNodeFailure):
                pass
        load = self.load()
        return min(candidates, key=lambda n: (-durable.get(n, -1), load.leaders_on(n), n))

    # --- drain --------------------------------------------------------------------------------

    async def drain(self, node: str, steps: Steps, deadline: Deadline) -> None:
        """Move every leadership, then every replica, off ``node``."""
        if not self.nodes.is_live(node) and not any(node in r.nodes() for r in self.all_records()):
            raise BadRequest(f"no host node {node} is known")
        self.draining.add(node)
        steps.add(f"{node} takes no new replicas")
        failures: list[str] = []
        gate = asyncio.Semaphore(DRAIN_PARALLELISM)

        async def guarded(identity: Identity, what: str, job: Awaitable[None]) -> None:
            async with gate:
                try:
                    await job
                except ControlPlaneError as e:
                    failures.append(f"{what} {identity.to_hex()}: {e.message}")
                    steps.add(f"could not {what} {identity.to_hex()}: {e.message}")

        led = [r.identity for r in self.all_records() if r.leader == node and r.state is DbState.ACTIVE]
        await asyncio.gather(
            *(guarded(i, "move the leadership of", self.transfer_leader(i, None, steps, deadline)) for i in led)
        )
        hosted = [r for r in self.all_records() if node in r.nodes() and r.state is DbState.ACTIVE]
        await asyncio.gather(
            *(guarded(r.identity, "move the replica of", self._move_off(r, node, steps, deadline)) for r in hosted)
        )
        if failures:
            raise Unavailable(f"{node} is not fully drained: {len(failures)} of the steps failed")
        steps.add(f"{node} holds no replica any more")

    async def _move_off(self, record: DatabaseRecord, node: str, steps: Steps, deadline: Deadline) -> None:
        try:
            target = choose_nodes(self.schedulable(), 1, self.load(), exclude=record.nodes())[0]
        except PlacementError:
            raise Unavailable(f"no other live node can take a replica of {record.identity.to_hex()}") from None
        if node in record.learners:
            async with self._changes.hold(record.identity):
                await self._drop_learner(record.identity, node, steps)
            return
        await self.move_replica(record.identity, node, target, steps, deadline)

    # --- shared -------------------------------------------------------------------------------

    def _report_election(self, outcome: ElectionOutcome | None, steps: Steps, done: str) -> None:
        if outcome is None:
            raise Conflict("the database changed meanwhile; try again")
        if outcome.leader is None:
            steps.add(
                f"epoch {outcome.new_epoch}: {done}, but no majority answered yet ({outcome.describe_reports()}); "
                "the control plane keeps trying to elect a leader"
            )
            raise Unavailable(f"no majority of replicas answered for epoch {outcome.new_epoch}")
        steps.add(f"epoch {outcome.new_epoch}: {done}; {outcome.leader} leads")

    async def _delete_replica(self, identity: Identity, node: str) -> None:
        address = self.nodes.address(node)
        if not address:
            return
        try:
            await self.clients.node(address).delete(identity, timeout=self.config.rpc_timeout)
        except (NodeUnreachable, HostNodeFailure) as e:
            log.info("delete failed %s", kv(db=identity.to_hex(), node=node, error=e))

