"""Leases and elections over the MetaStore (etcd's ``concurrency`` package, minimal).

Written for the control plane's own election until the shared etcd helpers land; the control
plane reaches it only through :mod:`controlplane.ha`, so swapping this module is one adapter.

* :class:`LeaseKeeper` holds one lease: it grants it, keeps it alive in the background and keeps
  the holder's *own* deadline, ``monotonic time the last successful keepalive was sent + TTL −
  margin`` (REPLICATION.md rule 6: etcd may extend a lease's life, the holder may pause, so the
  holder must stop acting before the store could expire the lease). Once the deadline passes or
  the store says the lease is gone, :attr:`LeaseKeeper.lost` is set and stays set: a holder that
  lost its lease starts over with a new one.
* :class:`Election` campaigns for one key: create-if-absent under the lease. The winner's fencing
  token is the key's ``create_revision``; :meth:`Election.fence` is the compare every write made
  as the winner must carry, so a deposed winner's writes fail even if it has not noticed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from clustermeta.aio import cancel_and_wait
from clustermeta.metastore import (
    Compare,
    CompareOp,
    CompareTarget,
    DeleteOp,
    EventType,
    KeyValue,
    LeaseNotFound,
    MetaStore,
    MetaStoreClosed,
    MetaStoreError,
    PutOp,
    RangeOp,
    RangeResponse,
    key_absent,
)

__all__ = ["Election", "LeaseKeeper", "LeaseLost"]

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The lease expired, was revoked, or its holder's deadline passed."""


class LeaseKeeper:
    """One lease, kept alive every ``ttl / 3`` seconds, with the holder's monotonic deadline.

    ``margin`` (default a quarter of the TTL, at most 0.5 s) covers clock drift between this host
    and the store's leader.
    """

    def __init__(self, store: MetaStore, ttl: float, *, margin: float | None = None) -> None:
        if ttl <= 0:
            raise ValueError("lease TTL must be positive")
        self.store = store
        self.ttl = ttl
        self.margin = min(ttl / 4, 0.5) if margin is None else margin
        self.lease_id = 0
        self._deadline = 0.0
        #: Set once the lease is no longer ours to act on; never cleared.
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Grant the lease and start keeping it alive; returns its id."""
        sent = time.monotonic()
        self.lease_id = await self.store.grant(self.ttl)
        self._deadline = sent + self.ttl - self.margin
        self._task = asyncio.create_task(self._keep(), name=f"lease-keeper:{self.lease_id:#x}")
        return self.lease_id

    def deadline(self) -> float:
        """The monotonic time after which the holder must not act on the lease."""
        return self._deadline

    def valid(self) -> bool:
        """Whether the holder may still act on the lease now."""
        return not self.lost.is_set() and time.monotonic() < self._deadline

    async def stop(self, *, revoke: bool = True) -> None:
        """Stop the keepalives and (``revoke``) end the lease at once, deleting its keys."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        was_valid = self.valid()
        self.lost.set()
        if revoke and was_valid and self.lease_id:
            with contextlib.suppress(MetaStoreError):
                await self.store.revoke(self.lease_id)

    async def _keep(self) -> None:
        await self._renew_until_lost()
        self.lost.set()  # not reached when stop() cancels: stop() decides about revoking

    async def _renew_until_lost(self) -> None:
        interval = self.ttl / 3
        while True:
            await asyncio.sleep(interval)
            while True:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("lease %#x: deadline passed without a keepalive", self.lease_id)
                    return
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(remaining):
                        ttl = await self.store.keepalive(self.lease_id)
                except (LeaseNotFound, MetaStoreClosed):
                    log.warning("lease %#x is gone", self.lease_id)
                    return
                except (TimeoutError, MetaStoreError) as e:
                    log.warning("lease %#x: keepalive failed (%s); retrying", self.lease_id, e)
                    await asyncio.sleep(min(interval / 4, max(self._deadline - time.monotonic(), 0)))
                    continue
                self._deadline = sent + ttl - self.margin
                break


class Election:
    """Campaign for ``key`` under a :class:`LeaseKeeper`'s lease (one winner at a time)."""

    def __init__(self, store: MetaStore, key: bytes, lease: LeaseKeeper) -> None:
        self.store = store
        self.key = key
        self.lease = lease
        #: The winning key's create_revision while this campaign holds it, else 0.
        self.token = 0

    async def campaign(self, value: bytes) -> int:
        """Wait until this campaign holds the key; returns the fencing token (create_revision).

        Raises :class:`LeaseLost` if the lease goes first.
        """
        while True:
            if not self.lease.valid():
                raise LeaseLost(f"lease {self.lease.lease_id:#x} is gone")
            resp = await self.store.txn(
                [key_absent(self.key)], [PutOp(self.key, value, lease=self.lease.lease_id)], [RangeOp(self.key)]
            )
            if resp.succeeded:
                self.token = resp.revision
                return self.token
            current = resp.responses[0]
            assert isinstance(current, RangeResponse)
            if current.kvs and current.kvs[0].lease == self.lease.lease_id:
                self.token = current.kvs[0].create_revision  # ours already (a campaign retried)
                return self.token
            await self._wait_for_vacancy(resp.revision + 1)

    async def _wait_for_vacancy(self, from_revision: int) -> None:
        watch = await self.store.watch(self.key, start_revision=from_revision)
        lost = asyncio.ensure_future(self.lease.lost.wait())
        try:
            async with watch:
                while True:
                    nxt = asyncio.ensure_future(anext(watch))
                    done, _ = await asyncio.wait({nxt, lost}, return_when=asyncio.FIRST_COMPLETED)
                    if nxt not in done:
                        await cancel_and_wait(nxt)
                        raise LeaseLost(f"lease {self.lease.lease_id:#x} is gone")
                    try:
                        event = nxt.result()
                    except StopAsyncIteration:
                        return
                    except MetaStoreError:
                        return  # re-check from scratch
                    if event.type is EventType.DELETE:
                        return
        finally:
            lost.cancel()

    async def leader(self) -> KeyValue | None:
        """The key as it stands (its value names the winner), or None while nobody holds it."""
        return await self.store.get(self.key)

    def fence(self) -> Compare:
        """The compare that holds only while this campaign's win stands."""
        return Compare(self.key, CompareTarget.CREATE, CompareOp.EQUAL, self.token)

    async def resign(self) -> None:
        """Give the key up (if still ours) so another campaign wins at once."""
        if self.token:
            with contextlib.suppress(MetaStoreError):
                await self.store.txn([self.fence()], [DeleteOp(self.key)])
        self.token = 0
