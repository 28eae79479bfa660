"""Coordination over any :class:`~clustermeta.metastore.MetaStore`: a kept-alive lease with a local
deadline (:class:`LeaseKeeper`) and leader election with a fencing token (:class:`Election`).

Both use only the MetaStore interface, so they behave the same on the embedded store and on etcd.

**LeaseKeeper** keeps REPLICATION.md rule 6 ("leases give liveness, not safety"). etcd counts a
lease's TTL on its own leader and may extend it, and the holder may pause, so the holder cannot
learn from etcd when to stop. It keeps its own **local deadline** on the monotonic clock:
``time the last successful keepalive was sent + TTL granted − drift margin`` (at grant time, the
time the grant was sent + the TTL asked for). :meth:`LeaseKeeper.valid` is false from that instant
on, whether or not the keeper's task has run, and a lease that was invalid once is never used
again: a late keepalive reply does not revive it. The keeper sends a keepalive every TTL/3; when
etcd says the lease is gone, or the local deadline passes without a successful keepalive, the
lease is **lost**: ``on_lost`` runs, :meth:`LeaseKeeper.wait_lost` returns, and the keeper grants
a new lease (a new id), calls ``on_new_lease`` so the owner re-puts its keys under it, then
revokes the old lease in case etcd still holds it.

**Election** campaigns for one key (e.g. ``/controlplane/leader``) with create-if-absent in a txn
(``create_revision == 0`` → put with the keeper's lease), the etcd ``concurrency.Election`` recipe
without its queue. The winner's **fencing token** is the key's ``create_revision``: it grows with
every new leader, so it serves as the epoch of REPLICATION.md rule 1 — stamp it on every side
effect and have the resource reject lower tokens (or guard etcd writes with
``create_revision_equals(key, token)``). Leadership ends when the keeper's lease is lost (rule 6:
:meth:`Election.is_leader` turns false at the lease's local deadline), when the key is deleted or
replaced, or on :meth:`Election.resign`. Leadership is liveness only: two processes may both
believe they lead for a moment (a paused one has not noticed yet), so safety must come from the
token (rules 1 and 3), never from "I am leader".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from clustermeta.aio import cancel_and_wait
from clustermeta.metastore import (
    CompactedError,
    DeleteOp,
    EventType,
    LeaseNotFound,
    MetaStore,
    MetaStoreClosed,
    MetaStoreError,
    PutOp,
    RangeOp,
    RangeResponse,
    WatchEvent,
    check_key,
    create_revision_equals,
    key_absent,
)
from clustermeta.metrics import LeaseStats

__all__ = ["DEFAULT_DRIFT_FRACTION", "Election", "Leader", "LeaseKeeper"]

log = logging.getLogger(__name__)

#: Default drift margin as a fraction of the TTL.
DEFAULT_DRIFT_FRACTION = 0.1

# Reasons a lease is lost (passed to ``on_lost``).
GONE = "the store says the lease is gone"
DEADLINE = "the local deadline passed without a successful keepalive"


class LeaseKeeper:
    """Grants a lease, keeps it alive, and knows until when it may be relied on (module docstring).

    ``ttl``: seconds asked for. ``drift_margin``: subtracted from every deadline (default
    :data:`DEFAULT_DRIFT_FRACTION` × ``ttl``; at most 2/3 of the TTL so a deadline always spans a
    keepalive interval). ``clock``: monotonic seconds (a test may pass a manual clock; the keeper
    then acts when it moves, looking at least every TTL/3 of real time). ``on_lost(lease_id,
    reason)`` runs once per lost lease; ``on_new_lease(lease_id)`` is awaited after every grant,
    the first included — put the owner's keys there with ``lease=lease_id``.
    """

    def __init__(
        self,
        store: MetaStore,
        ttl: float,
        *,
        drift_margin: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_lost: Callable[[int, str], None] | None = None,
        on_new_lease: Callable[[int], Awaitable[None]] | None = None,
        stats: LeaseStats | None = None,
    ) -> None:
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        margin = ttl * DEFAULT_DRIFT_FRACTION if drift_margin is None else drift_margin
        if not 0 <= margin < ttl * 2 / 3:
            raise ValueError(f"drift_margin must be in [0, 2/3 of the TTL), got {margin!r}")
        self.store = store
        self.ttl = float(ttl)
        self.drift_margin = float(margin)
        #: Seconds between keepalives (TTL/3).
        self.interval = self.ttl / 3
        #: Pause before retrying a failed keepalive or grant.
        self.retry_delay = min(self.interval / 4, 0.5)
        self._clock = clock
        self._on_lost = on_lost
        self._on_new_lease = on_new_lease
        self._lease_id = 0
        self._deadline = -math.inf
        self._next_keepalive = -math.inf
        self._last_lost = 0
        self._lost = asyncio.Event()  # set when the current lease is lost (replaced per lease)
        self._lost.set()
        self._has_lease = asyncio.Event()
        self._stale: list[int] = []  # lost locally; etcd may still hold them: revoke
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        #: Counted into (clustermeta/metrics.py); shared by the process's keepers.
        self.stats = stats or LeaseStats()
        self.stats.keeper = self

    # -- state

    @property
    def lease_id(self) -> int:
        """The current lease (0 while there is none: before start, between loss and re-grant)."""
        return self._lease_id

    @property
    def deadline(self) -> float:
        """The current lease's local deadline on ``clock`` (``-inf`` without a lease)."""
        return self._deadline if self._lease_id else -math.inf

    def valid(self) -> bool:
        """Whether the holder may act on the lease now: it exists and its local deadline is ahead."""
        return self._lease_id != 0 and self._clock() < self._deadline

    def remaining(self) -> float:
        """Seconds until the local deadline (0 without a valid lease)."""
        return max(0.0, self._deadline - self._clock()) if self._lease_id else 0.0

    # -- lifecycle

    async def start(self) -> int:
        """Grant the first lease (errors propagate) and start keeping it alive; returns its id."""
        if self._task is not None:
            raise RuntimeError("LeaseKeeper already started")
        lease_id = await self._grant()
        self._task = asyncio.create_task(self._run(), name=f"lease-keeper:{lease_id:#x}")
        return lease_id

    async def close(self) -> None:
        """Stop keeping alive and revoke the lease (best effort: errors are ignored)."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        lease_id = self._lease_id
        if lease_id:
            self._last_lost = lease_id
        self._drop()
        for old in [lease_id, *self._stale]:
            if old:
                await self._revoke_quietly(old)
        self._stale.clear()

    async def __aenter__(self) -> LeaseKeeper:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- waiting

    async def wait_lost(self) -> int:
        """Wait until the current lease is lost (or the keeper closes); returns its id.

        Returns at once when there is no lease now (with the id of the last one lost, or 0).
        """
        if not self._lease_id:
            return self._last_lost
        lease_id, lost = self._lease_id, self._lost
        await lost.wait()
        return lease_id

    async def wait_valid(self) -> int:
        """Wait until there is a valid lease (the keeper re-grants after a loss); returns its id."""
        while True:
            if self._closed:
                raise MetaStoreClosed("the lease keeper was closed")
            if self.valid():
                return self._lease_id
            if self._lease_id:  # past its local deadline; the keeper's task will notice
                await asyncio.sleep(min(self.retry_delay, 0.05))
            else:
                await self._has_lease.wait()

    def invalidate(self, lease_id: int, reason: str = GONE) -> None:
        """Report that ``lease_id`` is gone (e.g. a put with it raised ``LeaseNotFound``).

        If it is the current lease it is lost now, and the keeper grants a new one.
        """
        if lease_id and lease_id == self._lease_id:
            self._lose(reason, stale=False)

    # -- plumbing

    def _drop(self) -> None:
        self._lease_id = 0
        self._deadline = -math.inf
        self._has_lease.clear()
        self._lost.set()

    def _lose(self, reason: str, *, stale: bool) -> None:
        lease_id = self._lease_id
        if not lease_id:
            return
        log.warning("lease %#x lost: %s", lease_id, reason)
        self.stats.losses += 1
        self._last_lost = lease_id
        self._drop()
        if stale:
            self._stale.append(lease_id)
        if self._on_lost is not None:
            try:
                self._on_lost(lease_id, reason)
            except Exception:
                log.exception("lease keeper: on_lost callback failed")

    async def _grant(self) -> int:
        sent = self._clock()
        lease_id = await self.store.grant(self.ttl)
        self.stats.grants += 1
        self._lease_id = lease_id
        self._deadline = sent + self.ttl - self.drift_margin  # granted TTL >= asked: conservative
        self._next_keepalive = sent + self.interval
        self._lost = asyncio.Event()
        self._has_lease.set()
        if self._on_new_lease is not None:
            try:
                await self._on_new_lease(lease_id)
            except Exception:
                log.exception("lease keeper: on_new_lease hook failed for lease %#x", lease_id)
        while self._stale:  # the old lease's keys now live on the new lease (the hook re-put them)
            await self._revoke_quietly(self._stale.pop())
        return lease_id

    async def _revoke_quietly(self, lease_id: int) -> None:
        with contextlib.suppress(MetaStoreError):
            await self.store.revoke(lease_id)

    async def _run(self) -> None:
        while not self._closed:
            if not self._lease_id:
                try:
                    await self._grant()
                except MetaStoreClosed:
                    return
                except MetaStoreError as e:
                    log.warning("lease keeper: grant failed (%s); retrying", e)
                    await asyncio.sleep(self.retry_delay)
                continue
            await self._keep(self._lease_id)

    async def _keep(self, lease_id: int) -> None:
        """Keep ``lease_id`` alive until it is lost."""
        while self._lease_id == lease_id:
            now = self._clock()
            if now >= self._deadline:
                self._lose(DEADLINE, stale=True)
                return
            wait = min(self._next_keepalive, self._deadline) - now
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            sent = self._clock()
            try:
                # Never wait for a reply past the local deadline: by then the lease is lost anyway.
                async with asyncio.timeout(max(self._deadline - sent, 0.0)):
                    granted = await self.store.keepalive(lease_id)
            except LeaseNotFound:
                self._lose(GONE, stale=False)
                return
            except MetaStoreClosed:
                self._lose("the store was closed", stale=False)
                return
            except (MetaStoreError, TimeoutError) as e:
                log.info("lease keeper: keepalive of %#x failed (%s); retrying", lease_id, str(e) or "timeout")
                self.stats.renewal_failures += 1
                self._next_keepalive = self._clock() + self.retry_delay
                continue
            self.stats.renewed += 1
            if self._lease_id != lease_id:
                return
            if self._clock() >= self._deadline:  # answered too late: lost is lost (never revived)
                self._lose(DEADLINE, stale=True)
                return
            self._deadline = max(self._deadline, sent + granted - self.drift_margin)
            self._next_keepalive = sent + self.interval


@dataclass(frozen=True, slots=True)
class Leader:
    """The holder of an election key: its value, its fencing token and its lease."""

    value: bytes
    #: The key's create_revision: grows with every new leader (REPLICATION.md rule 1).
    token: int
    lease: int


class Election:
    """Campaign for ``key`` with ``value`` under ``keeper``'s lease (see the module docstring).

    The keeper must be started; the election does not close it (a node usually runs one keeper
    for all its keys).
    """

    def __init__(self, store: MetaStore, key: bytes, value: bytes, keeper: LeaseKeeper) -> None:
        check_key(key)
        self.store = store
        self.key = key
        self.value = value
        self.keeper = keeper
        self._token: int | None = None
        self._lease = 0
        self._ended = asyncio.Event()  # leadership over (set while not leader)
        self._ended.set()
        self._monitor: asyncio.Task[None] | None = None

    # -- state

    @property
    def token(self) -> int | None:
        """The fencing token (election key's create_revision) while leader, else ``None``."""
        return self._token if self.is_leader() else None

    def is_leader(self) -> bool:
        """Whether this process may act as leader now (won, key still ours, lease locally valid)."""
        return (
            self._token is not None and self.keeper.lease_id == self._lease and self.keeper.valid()
        )

    async def leader(self) -> Leader | None:
        """The current holder of the key, as the store sees it now (``None``: no leader)."""
        return _leader(await self.store.range(self.key))

    # -- campaigning

    async def campaign(self) -> int:
        """Wait until this process is leader; returns the fencing token.

        Retries through store outages and lease losses (cancel the call to give up).
        """
        while True:
            if self.is_leader():
                assert self._token is not None
                return self._token
            lease = await self.keeper.wait_valid()
            try:
                resp = await self.store.txn(
                    [key_absent(self.key)],
                    [PutOp(self.key, self.value, lease=lease)],
                    [RangeOp(self.key)],
                )
            except LeaseNotFound:
                self.keeper.invalidate(lease)
                continue
            except MetaStoreClosed:
                raise
            except MetaStoreError as e:  # unavailable: the put may have happened; the next try tells
                log.info("election %r: campaign attempt failed (%s); retrying", self.key, e)
                await asyncio.sleep(self.keeper.retry_delay)
                continue
            if resp.succeeded:
                token = resp.revision
            else:
                holder = _leader(resp.responses[0])
                if holder is not None and holder.lease == lease:
                    token = holder.token  # ours already (an earlier attempt whose reply was lost)
                else:
                    await self._wait_vacant(resp.revision + 1, lease)
                    continue
            if not (self.keeper.lease_id == lease and self.keeper.valid()):
                continue  # the lease lapsed while we won; the key goes with it
            self._won(token, lease, resp.revision + 1)
            return token

    async def _wait_vacant(self, from_revision: int, lease: int) -> None:
        """Wait until the key is deleted after ``from_revision``, or our lease is lost."""
        lost = asyncio.ensure_future(self.keeper.wait_lost())
        deleted = asyncio.ensure_future(self._watch_until(from_revision, lambda ev: ev.type is EventType.DELETE))
        try:
            await asyncio.wait({lost, deleted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(lost, deleted)
        if deleted.done() and not deleted.cancelled() and deleted.exception() is not None:
            await asyncio.sleep(self.keeper.retry_delay)  # the watch failed; look again shortly

    async def _watch_until(self, from_revision: int, done: Callable[[WatchEvent], bool]) -> None:
        """Return at the first change of the key from ``from_revision`` on that satisfies ``done``.

        A compacted history just returns (the caller re-reads the key).
        """
        try:
            async with await self.store.watch(self.key, start_revision=from_revision) as w:
                async for ev in w:
                    if done(ev):
                        return
        except CompactedError:
            return

    def _won(self, token: int, lease: int, from_revision: int) -> None:
        self._token = token
        self._lease = lease
        self._ended = asyncio.Event()
        log.info("election %r: leader with token %d", self.key, token)
        self._monitor = asyncio.create_task(self._watch_leadership(token, lease, from_revision))

    async def _watch_leadership(self, token: int, lease: int, from_revision: int) -> None:
        """End leadership when the lease is lost or the key stops being ours."""
        if self.keeper.lease_id != lease:  # lost between winning and this task starting
            if self._token == token:
                self._end()
            return
        lost = asyncio.ensure_future(self.keeper.wait_lost())
        try:
            while True:
                changed = asyncio.ensure_future(
                    self._watch_until(
                        from_revision, lambda ev: ev.type is EventType.DELETE or ev.kv.create_revision != token
                    )
                )
                try:
                    await asyncio.wait({lost, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                if lost.done():
                    return
                if not changed.cancelled() and changed.exception() is not None:
                    await asyncio.sleep(self.keeper.retry_delay)
                # The watch ended: a change, a compaction or an error. Look at the key itself.
                try:
                    resp = await self.store.range(self.key)
                except MetaStoreError:
                    continue
                holder = _leader(resp)
                if holder is None or holder.token != token:
                    return
                from_revision = resp.revision + 1
        finally:
            lost.cancel()
            if self._token == token:
                self._end()

    def _end(self) -> None:
        if self._token is not None:
            log.info("election %r: no longer leader (token %d)", self.key, self._token)
        self._token = None
        self._lease = 0
        self._ended.set()

    async def wait_lost(self) -> None:
        """Wait until this process's leadership ends (returns at once when it is not leader)."""
        await self._ended.wait()

    async def resign(self) -> None:
        """Give up leadership: delete the key if it is still ours (best effort) and stop leading."""
        token, monitor = self._token, self._monitor
        self._monitor = None
        self._end()
        await cancel_and_wait(monitor)
        if token is not None:
            with contextlib.suppress(MetaStoreError):
                await self.store.txn([create_revision_equals(self.key, token)], [DeleteOp(self.key)])

    async def close(self) -> None:
        """Resign (the keeper stays open)."""
        await self.resign()

    # -- observing

    async def observe(self) -> AsyncIterator[Leader | None]:
        """The current leader, then every change of it (``None``: no leader), for as long as iterated.

        Follows the key with a watch; after a compaction it re-reads and watches on.
        """
        last: Leader | None | bool = False  # nothing yielded yet
        while True:
            resp = await self.store.range(self.key)
            current = _leader(resp)
            if current != last:
                yield current
                last = current
            try:
                async with await self.store.watch(self.key, start_revision=resp.revision + 1) as w:
                    async for ev in w:
                        current = (
                            None
                            if ev.type is EventType.DELETE
                            else Leader(ev.kv.value, ev.kv.create_revision, ev.kv.lease)
                        )
                        if current != last:
                            yield current
                            last = current
            except CompactedError:
                continue


def _leader(resp: object) -> Leader | None:
    assert isinstance(resp, RangeResponse)
    if not resp.kvs:
        return None
    kv = resp.kvs[0]
    return Leader(kv.value, kv.create_revision, kv.lease)
