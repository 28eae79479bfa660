"""Control-plane high availability: which control plane is active, and the fence on its writes.

Several control planes may run; one is **active**: it holds ``/controlplane/leader`` (created under
its lease; docs/cluster.md). The others are standbys: they campaign for the key and take over when
the active one's lease goes (it died, hung, or lost etcd). Every control plane also keeps
``/controlplanes/<id>`` under its lease so operators can see who runs.

Safety does not rest on a control plane knowing it was deposed in time (REPLICATION.md: locks
cannot guarantee mutual exclusion). :class:`ActiveSeat` is the :class:`~controlplane.core.Fence`
of every write: its compare holds only while the election key is the one this control plane
created, so a deposed control plane's writes fail even before it notices; on such a failure it
steps down at once. It also stops acting at its lease's *local* deadline (rule 6), before etcd can
let a standby win.

The election itself is :class:`clustermeta.coordination.Election` under a
:class:`~clustermeta.coordination.LeaseKeeper`; this module is the only user of both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from clustermeta.aio import cancel_and_wait
from clustermeta.coordination import Election, LeaseKeeper
from clustermeta.metastore import (
    Compare,
    CompareOp,
    CompareTarget,
    MetaStore,
    MetaStoreClosed,
    MetaStoreError,
)
from clustermeta.metrics import LeaseStats
from clustermeta.mirror import Change, PrefixMirror
from clustermeta.records import CONTROLPLANE_LEADER_KEY, CONTROLPLANES_PREFIX, ControlPlaneInfo
from controlplane.core import NotActive
from controlplane.logfields import kv

__all__ = ["ActiveSeat"]

log = logging.getLogger(__name__)

#: Seconds between campaign attempts after a store error.
RETRY_DELAY = 0.5


class ActiveSeat:
    """This control plane's campaign for the active seat, and the fence of its writes.

    ``on_active`` runs when it wins (start the duties only the active one has); ``on_standby``
    when it loses or stops (cancel them). Both are awaited, one at a time, in that order.
    """

    def __init__(
        self,
        store: MetaStore,
        info: ControlPlaneInfo,
        lease_ttl: float,
        *,
        on_active: Callable[[], Awaitable[None]] | None = None,
        on_standby: Callable[[], Awaitable[None]] | None = None,
        lease_stats: LeaseStats | None = None,
    ) -> None:
        self.store = store
        self.lease_stats = lease_stats or LeaseStats()
        self.info = info
        self.lease_ttl = lease_ttl
        self.on_active = on_active
        self.on_standby = on_standby
        self._lease: LeaseKeeper | None = None
        self._election: Election | None = None
        self._token = 0
        self._deposed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seat = PrefixMirror(store, CONTROLPLANE_LEADER_KEY, on_change=self._seat_changed)
        #: Set whenever this control plane becomes active or stops being active.
        self.changed = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Register (``/controlplanes/<id>`` under a new lease), then campaign in the background."""
        await self._seat.start()
        self._lease = await self._new_lease()
        self._task = asyncio.create_task(self._run(), name=f"controlplane-seat:{self.info.id}")

    async def stop(self) -> None:
        """Step down (giving the seat up at once) and end the lease."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._seat.stop()

    # --- the fence ----------------------------------------------------------------------------

    def registered(self) -> bool:
        """Whether this control plane holds a valid lease (its ``/controlplanes/<id>`` key lives)."""
        return self._lease is not None and self._lease.valid()

    def is_active(self) -> bool:
        """Whether this control plane may act as the active one right now."""
        return (
            self._token != 0
            and not self._deposed.is_set()
            and self._lease is not None
            and self._lease.valid()
        )

    def compares(self) -> list[Compare]:
        """See :class:`~controlplane.core.Fence`: the election key is still the one we created."""
        # Token 0 never matches an existing key's create_revision: a standby's write fails.
        return [Compare(CONTROLPLANE_LEADER_KEY, CompareTarget.CREATE, CompareOp.EQUAL, self._token)]

    async def check(self) -> None:
        """See :class:`~controlplane.core.Fence`: raise NotActive (and step down) unless active."""
        if self.is_active():
            try:
                kv = await self.store.get(CONTROLPLANE_LEADER_KEY)
            except MetaStoreError:
                return  # cannot tell; the fence compares still protect every write
            if kv is not None and kv.create_revision == self._token:
                return
            self._depose("the election key is no longer ours")
        raise self.not_active()

    def require_active(self) -> None:
        """Raise :class:`NotActive` unless this control plane is active (no I/O)."""
        if not self.is_active():
            raise self.not_active()

    def not_active(self) -> NotActive:
        """The error a standby answers with, naming the active control plane."""
        active = self.active()
        if active is None or active.id == self.info.id:
            return NotActive(f"control plane {self.info.id} is not active and no control plane is active now; try again")
        return NotActive(
            f"control plane {self.info.id} is a standby; the active control plane is {active.id} at {active.address}",
            active_address=active.address,
        )

    def active(self) -> ControlPlaneInfo | None:
        """The active control plane as this one last saw it (None: none)."""
        kv = self._seat.items.get(CONTROLPLANE_LEADER_KEY)
        if kv is None:
            return None
        try:
            return ControlPlaneInfo.from_json(kv.value)
        except (ValueError, KeyError, TypeError):
            return None

    # --- the campaign -------------------------------------------------------------------------

    def _seat_changed(self, changes: list[Change]) -> None:
        for change in changes:
            # Changes up to our own win (the previous holder's key going) may arrive after it.
            if change.key != CONTROLPLANE_LEADER_KEY or not self._token or change.revision <= self._token:
                continue
            if change.new is None or change.new.create_revision != self._token:
                self._depose("the election key was deleted or taken over")

    def _depose(self, why: str) -> None:
        if self._token and not self._deposed.is_set():
            log.warning("control plane deposed %s", kv(id=self.info.id, reason=why))
            self._deposed.set()

    async def _new_lease(self) -> LeaseKeeper:
        # The keeper re-grants after a loss and re-registers through this hook each time.
        async def register(lease_id: int) -> None:
            await self.store.put(CONTROLPLANES_PREFIX + self.info.id.encode(), self.info.to_json(), lease=lease_id)

        lease = LeaseKeeper(self.store, self.lease_ttl, on_new_lease=register, stats=self.lease_stats)
        await lease.start()
        return lease

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._term()
                except MetaStoreError as e:
                    if isinstance(e, MetaStoreClosed):
                        return
                    log.warning("control plane campaign interrupted %s", kv(id=self.info.id, error=e))
                    await asyncio.sleep(RETRY_DELAY)
        finally:
            await self._step_down()
            if self._lease is not None:
                await self._lease.close()
                self._lease = None

    async def _term(self) -> None:
        """One campaign: win, serve until deposed or the lease goes, step down."""
        if self._lease is None:
            self._lease = await self._new_lease()
        lease = self._lease
        self._election = Election(self.store, CONTROLPLANE_LEADER_KEY, self.info.to_json(), lease)
        token = await self._election.campaign()
        self._deposed.clear()
        self._token = token
        log.info("control plane active %s", kv(id=self.info.id, address=self.info.address, token=token))
        self._announce()
        try:
            if self.on_active is not None:
                await self.on_active()
            lost = asyncio.ensure_future(self._election.wait_lost())
            deposed = asyncio.ensure_future(self._deposed.wait())
            try:
                await asyncio.wait({lost, deposed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                deposed.cancel()
        finally:
            await self._step_down()

    async def _step_down(self) -> None:
        if not self._token:
            return
        self._deposed.set()  # is_active() is false from here on
        log.info("control plane standing down %s", kv(id=self.info.id))
        try:
            if self.on_standby is not None:
                await self.on_standby()
        finally:
            election, self._election = self._election, None
            if election is not None and self._lease is not None and self._lease.valid():
                with contextlib.suppress(MetaStoreError):
                    await election.resign()
            self._token = 0
            self._announce()

    def _announce(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

