"""The durability seam: when may a committed transaction be acknowledged?

Every caller that answers a client only once a transaction is safe — HTTP ``/call``, SQL DML,
confirmed WebSocket clients, ``DurableOffset``, the LMDB checkpoint — waits on one object, the
database's :class:`Durability`. Standalone, that is the commit log's
:class:`~hostnode.commitlog.GroupCommitter` (safe = fsynced here). In a cluster it is a
:class:`QuorumDurability` (safe = fsynced by a majority of the voting replicas, the leader
included, REPLICATION.md rule 2).

Offsets follow the commit log: record ``n`` is durable when ``durable_offset > n``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from hostnode.commitlog import DurableCallback, GroupCommitter, LoopSettler, run_callback

log = logging.getLogger(__name__)

__all__ = [
    "Durability",
    "DurableCallback",
    "NoQuorum",
    "NotLeader",
    "OutcomeUnknown",
    "QuorumDurability",
    "ReplicationError",
    "StaleEpoch",
]

class ReplicationError(Exception):
    """Base of the errors replication adds; each has an error kind in ``proto/hostnode.proto``."""


class NotLeader(ReplicationError):
    """This node does not lead the database (now, or at the epoch asked for). Nothing ran."""


class NoQuorum(ReplicationError):
    """The leader cannot reach a majority of its replicas; the write was refused, nothing ran."""


class OutcomeUnknown(ReplicationError):
    """The transaction ran on the leader, but no majority confirmed it in time or the leader
    stepped down first: it may or may not survive a failover."""


class StaleEpoch(ReplicationError):
    """A request carried an epoch lower than one this replica already promised (rule 1)."""


class Durability(Protocol):
    """What every waiter for durability uses (GroupCommitter and QuorumDurability both are one)."""

    @property
    def durable_offset(self) -> int:
        """One past the last record that may be acknowledged."""
        ...

    def add_callback(self, offset: int, fn: DurableCallback) -> None:
        """Call ``fn(None)`` once record ``offset`` is durable, ``fn(error)`` if it never will be."""
        ...

    def wait_durable(self, offset: int, timeout: float | None = None) -> bool:
        """Block until record ``offset`` is durable; False on timeout."""
        ...

    async def wait_durable_async(self, offset: int) -> None:
        """Await durability of record ``offset`` (raises if it will never be acknowledged)."""
        ...


class QuorumDurability:
    """Durable = fsynced by a majority of the voting replicas (the leader counts itself once its
    own log has the record fsynced).

    Raft's commitment rule (§5.4.2, REPLICATION.md rule 5) is kept with ``epoch_start``: the
    offset of the first record of the leader's epoch. Nothing counts as committed until that
    record itself is on a majority; from then on every record below the majority point is.

    Thread-safe: the local sync thread reports through the committer's listener, follower acks
    arrive from the event loop; callbacks run outside the lock on whichever thread advanced the
    commit point. ``close(error)`` settles every pending waiter with ``error`` (a leader that
    steps down cannot know what becomes of its uncommitted tail).
    """

    def __init__(
        self,
        committer: GroupCommitter,
        *,
        voters: Sequence[str],
        epoch_start: int,
        committed: int,
        commit_timeout: float = 10.0,
    ) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._settler = LoopSettler()
        self._local = committer.durable_offset
        self._acks: dict[str, int] = dict.fromkeys(voters, 0)
        self._majority = (len(self._acks) + 1) // 2 + 1
        self._epoch_start = epoch_start
        self._commit = committed
        self.commit_timeout = commit_timeout
        self._callbacks: list[tuple[int, int, DurableCallback]] = []
        self._seq = itertools.count()
        self._error: BaseException | None = None
        self._committer = committer
        committer.listeners.append(self._on_local)
        self._advance_and_run()

    # --- inputs -----------------------------------------------------------------------------

    def _on_local(self, durable: int) -> None:
        with self._mutex:
            self._local = max(self._local, durable)
        self._advance_and_run()

    def ack(self, node_id: str, durable: int) -> None:
        """A voting follower reports its durable offset (learners are not passed here)."""
        with self._mutex:
            if node_id in self._acks and durable > self._acks[node_id]:
                self._acks[node_id] = durable
            else:
                return
        self._advance_and_run()

    # --- state --------------------------------------------------------------------------------

    @property
    def durable_offset(self) -> int:
        """One past the last committed record."""
        return self._commit

    @property
    def epoch_start(self) -> int:
        """Offset of the first record of this leader's epoch."""
        return self._epoch_start

    def acked(self) -> dict[str, int]:
        """The durable offset each voting follower reported."""
        with self._mutex:
            return dict(self._acks)

    def _advance_and_run(self) -> None:
        ready: list[DurableCallback] = []
        with self._mutex:
            if self._error is not None:
                return
            offsets = sorted([self._local, *self._acks.values()], reverse=True)
            point = offsets[self._majority - 1]
            if point > self._epoch_start and point > self._commit:
                self._commit = point
                while self._callbacks and self._callbacks[0][0] < point:
                    ready.append(heapq.heappop(self._callbacks)[2])
                self._cond.notify_all()
        for fn in ready:
            run_callback(fn, None)

    # --- waiting ------------------------------------------------------------------------------

    def add_callback(self, offset: int, fn: DurableCallback) -> None:
        """See :class:`Durability`."""
        with self._mutex:
            error = self._error
            if error is None and offset >= self._commit:
                heapq.heappush(self._callbacks, (offset, next(self._seq), fn))
                return
        run_callback(fn, None if offset < self._commit else error)

    def wait_durable(self, offset: int, timeout: float | None = None) -> bool:
        """Block until record ``offset`` is committed; False on timeout or once closed."""
        with self._mutex:
            self._cond.wait_for(lambda: offset < self._commit or self._error is not None, timeout)
            return offset < self._commit

    async def wait_durable_async(self, offset: int) -> None:
        """Await commitment of record ``offset``; :class:`OutcomeUnknown` after ``commit_timeout``
        or when the leader steps down first."""
        if offset < self._commit:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.add_callback(offset, self._settler.settle_later(fut))
        try:
            await asyncio.wait_for(fut, self.commit_timeout)
        except TimeoutError:
            raise OutcomeUnknown(
                f"transaction {offset} was not confirmed by a majority of replicas within "
                f"{self.commit_timeout:g} s; it may or may not survive"
            ) from None

    def close(self, error: BaseException) -> None:
        """Settle every pending waiter with ``error``; later waits fail at once. Idempotent."""
        with self._mutex:
            if self._error is not None:
                return
            self._error = error
            pending = [fn for _, _, fn in self._callbacks]
            self._callbacks = []
            self._cond.notify_all()
        try:
            self._committer.listeners.remove(self._on_local)
        except ValueError:
            pass
        for fn in pending:
            run_callback(fn, error)
