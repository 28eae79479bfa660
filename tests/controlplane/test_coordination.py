"""clustermeta.coordination on every MetaStore: LeaseKeeper (keepalive, local deadline, loss,
re-grant) and Election (one winner, fencing tokens, loss with the lease, resign, observe).

Stores run in real time here (``backend.use_real_time()``): the keeper keeps leases alive in real
time. Losses are caused explicitly (revoke, a store whose keepalives fail, a killed etcd), and a
keeper's *local* deadline is checked exactly with a manual clock; waits are polls with a generous
bound, never speed assertions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import pytest

from clustermeta.coordination import DEADLINE, GONE, Election, Leader, LeaseKeeper
from clustermeta.metastore import (
    Compare,
    DeleteResponse,
    LeaseInfo,
    LeaseNotFound,
    MetaStore,
    MetaStoreUnavailable,
    Op,
    RangeResponse,
    TxnResponse,
    Watch,
)
from clustermeta.metastore_etcd import EtcdMetaStore
from tests.controlplane.stores import EVENTUALLY, ManualClock, StoreBackend
from tests.etcd_harness import EtcdServer

T = TypeVar("T")


class FlakyStore(MetaStore):
    """A real store whose keepalives can be made to fail as if etcd were unreachable."""

    def __init__(self, inner: MetaStore) -> None:
        self.inner = inner
        self.fail_keepalives = False

    async def range(self, key: bytes, end: bytes | None = None, *, limit: int = 0) -> RangeResponse:
        return await self.inner.range(key, end, limit=limit)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        return await self.inner.put(key, value, lease=lease)

    async def delete(self, key: bytes, end: bytes | None = None, *, prev_kv: bool = False) -> DeleteResponse:
        return await self.inner.delete(key, end, prev_kv=prev_kv)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op] = (), failure: Sequence[Op] = ()
    ) -> TxnResponse:
        return await self.inner.txn(compares, success, failure)

    async def compact(self, revision: int) -> None:
        await self.inner.compact(revision)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def grant(self, ttl: float) -> int:
        return await self.inner.grant(ttl)

    async def keepalive(self, lease_id: int) -> float:
        if self.fail_keepalives:
            raise MetaStoreUnavailable("keepalives switched off by the test")
        return await self.inner.keepalive(lease_id)

    async def revoke(self, lease_id: int) -> None:
        await self.inner.revoke(lease_id)

    async def lease_info(self, lease_id: int) -> LeaseInfo:
        return await self.inner.lease_info(lease_id)

    async def watch(
        self, key: bytes, end: bytes | None = None, *, start_revision: int | None = None, prev_kv: bool = False
    ) -> Watch:
        return await self.inner.watch(key, end, start_revision=start_revision, prev_kv=prev_kv)

    async def close(self) -> None:
        await self.inner.close()


async def until(check: Callable[[], bool | Awaitable[bool]], what: str = "") -> None:
    """Poll ``check`` until true; fails after EVENTUALLY seconds."""
    t0 = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() - t0 < EVENTUALLY, f"not true after {EVENTUALLY} s: {what}"
        await asyncio.sleep(0.02)


async def lease_gone(s: MetaStore, lease_id: int) -> bool:
    try:
        await s.lease_info(lease_id)
    except LeaseNotFound:
        return True
    return False


async def bounded(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, EVENTUALLY)


class Recorder:
    """on_lost / on_new_lease hooks that remember what happened and re-put the owner's key."""

    def __init__(self, store: MetaStore, key: bytes = b"/nodes/me") -> None:
        self.store = store
        self.key = key
        self.lost: list[tuple[int, str, float]] = []
        self.granted: list[int] = []

    def on_lost(self, lease_id: int, reason: str) -> None:
        self.lost.append((lease_id, reason, time.monotonic()))

    async def on_new_lease(self, lease_id: int) -> None:
        self.granted.append(lease_id)
        await self.store.put(self.key, b"up", lease=lease_id)


async def second_client(backend: StoreBackend, s: MetaStore) -> MetaStore:
    """Another client of the same data: a new etcd connection, or the one LMDB store."""
    return await backend.open() if backend.kind == "etcd" else s


# ----------------------------------------------------------------------------- LeaseKeeper


def test_keeper_keeps_a_lease_alive_and_close_revokes(backend: StoreBackend) -> None:
    backend.use_real_time()

    async def body(s: MetaStore) -> None:
        rec = Recorder(s)
        keeper = LeaseKeeper(s, 2, on_lost=rec.on_lost, on_new_lease=rec.on_new_lease)
        lease = await keeper.start()
        assert rec.granted == [lease] and keeper.lease_id == lease and keeper.valid()
        assert 0 < keeper.remaining() <= 2 - keeper.drift_margin
        kv = await s.get(b"/nodes/me")
        assert kv is not None and kv.lease == lease
        # A lease granted with it but not kept alive expires; the kept one outlives it.
        bare = await s.grant(2)
        await s.put(b"/nodes/bare", b"up", lease=bare)
        await backend.until_gone(s, b"/nodes/bare")
        assert await s.get(b"/nodes/me") is not None
        assert keeper.lease_id == lease and keeper.valid() and rec.lost == []
        await keeper.close()
        assert keeper.lease_id == 0 and not keeper.valid()
        assert await s.get(b"/nodes/me") is None and await lease_gone(s, lease)
        assert await bounded(keeper.wait_lost()) == lease  # returns at once without a lease
        await keeper.close()  # idempotent

    backend.run(body)


def test_keeper_local_deadline_is_sent_time_plus_ttl_minus_margin(backend: StoreBackend) -> None:
    """Rule 6 with a manual clock: the deadline is exact, and valid() turns false at it by itself."""
    backend.use_real_time()

    async def body(s: MetaStore) -> None:
        clock = ManualClock(100.0)
        rec = Recorder(s)
        keeper = LeaseKeeper(s, 3, drift_margin=0.5, clock=clock, on_lost=rec.on_lost, on_new_lease=rec.on_new_lease)
        first = await keeper.start()
        assert keeper.deadline == 100.0 + 3 - 0.5
        # A keepalive is due at 101.0 (TTL/3); it was sent at 101.25 and etcd granted >= 3 s.
        clock.advance(1.25)
        await until(lambda: keeper.deadline > 102.5, "keepalive extended the deadline")
        granted = await s.keepalive(first)
        assert keeper.deadline == 101.25 + granted - 0.5
        # No keepalive happens while the clock stands still; when it jumps past the deadline the
        # lease is invalid at once, before the keeper's task has even looked.
        clock.advance(keeper.deadline - clock() - 1e-6)
        assert keeper.valid()
        clock.advance(1e-6)
        assert not keeper.valid() and keeper.remaining() == 0
        # Then the keeper notices, reports the loss and grants a new lease.
        await until(lambda: rec.lost != [], "loss reported")
        assert rec.lost[0][:2] == (first, DEADLINE)
        await until(lambda: keeper.valid() and len(rec.granted) == 2, "re-granted")
        assert keeper.lease_id == rec.granted[1] != first
        assert keeper.deadline == clock() + 3 - 0.5
        # The old lease was locally lost but still alive in the store: revoked.
        await until(lambda: lease_gone(s, first), "old lease revoked")
        kv = await s.get(b"/nodes/me")
        assert kv is not None and kv.lease == keeper.lease_id
        await keeper.close()

    backend.run(body)


def test_keeper_regrants_when_the_store_says_the_lease_is_gone(backend: StoreBackend) -> None:
    backend.use_real_time()

    async def body(s: MetaStore) -> None:
        rec = Recorder(s)
        async with LeaseKeeper(s, 1.5, on_lost=rec.on_lost, on_new_lease=rec.on_new_lease) as keeper:
            first = keeper.lease_id
            waiter = asyncio.ensure_future(keeper.wait_lost())
            await s.revoke(first)  # as if etcd had expired it
            assert await bounded(waiter) == first
            assert rec.lost[0][:2] == (first, GONE)
            new = await bounded(keeper.wait_valid())
            assert new != first and rec.granted == [first, new]
            # The owner's key is back, under the new lease.
            await until(lambda: _has_lease(s, b"/nodes/me", new), "key re-put")

    backend.run(body)


async def _has_lease(s: MetaStore, key: bytes, lease: int) -> bool:
    kv = await s.get(key)
    return kv is not None and kv.lease == lease


def test_keeper_loses_the_lease_at_its_local_deadline_when_keepalives_fail(backend: StoreBackend) -> None:
    backend.use_real_time()

    async def body(inner: MetaStore) -> None:
        s = FlakyStore(inner)
        rec = Recorder(s)
        keeper = LeaseKeeper(s, 1.5, on_lost=rec.on_lost, on_new_lease=rec.on_new_lease)
        first = await keeper.start()
        s.fail_keepalives = True
        deadline = keeper.deadline
        assert await bounded(keeper.wait_lost()) == first
        lost_id, reason, at = rec.lost[0]
        assert (lost_id, reason) == (first, DEADLINE)
        assert at >= deadline  # never declared lost early (nor valid late: valid() reads the clock)
        # A new lease comes while keepalives still fail (grants work); it too is lost at its deadline.
        second = await bounded(keeper.wait_valid())
        assert second != first
        await until(lambda: len(rec.lost) >= 2, "second loss")
        s.fail_keepalives = False
        third = await bounded(keeper.wait_valid())
        await until(lambda: lease_gone(inner, first), "stale lease revoked")
        await until(lambda: lease_gone(inner, second), "stale lease revoked")
        await until(lambda: _has_lease(inner, b"/nodes/me", third), "key under the newest lease")
        await keeper.close()

    backend.run(body)


def test_keeper_rides_out_an_etcd_restart(private_etcd: EtcdServer) -> None:
    async def body() -> None:
        s = await EtcdMetaStore.open(private_etcd.endpoints, timeout=1)
        rec = Recorder(s)
        keeper = LeaseKeeper(s, 1.5, on_lost=rec.on_lost, on_new_lease=rec.on_new_lease)
        try:
            first = await keeper.start()
            private_etcd.kill()
            assert await bounded(keeper.wait_lost()) == first  # local deadline passes: lost
            assert not keeper.valid() and rec.lost[0][:2] == (first, DEADLINE)
            private_etcd.restart()  # etcd restores `first` with a fresh TTL
            new = await bounded(keeper.wait_valid())
            assert new != first
            await until(lambda: lease_gone(s, first), "restored old lease revoked")
            await until(lambda: _has_lease(s, b"/nodes/me", new), "key re-put under the new lease")
        finally:
            await keeper.close()
            await s.close()

    asyncio.run(asyncio.wait_for(body(), 120))


def test_keeper_rejects_bad_settings(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        for kw in ({"ttl": 0}, {"ttl": float("inf")}, {"ttl": 3, "drift_margin": 2}, {"ttl": 3, "drift_margin": -1}):
            with pytest.raises(ValueError):
                LeaseKeeper(s, **kw)  # type: ignore[arg-type]
        keeper = LeaseKeeper(s, 3)
        assert keeper.drift_margin == pytest.approx(0.3) and keeper.interval == 1.0
        assert keeper.lease_id == 0 and not keeper.valid() and keeper.deadline == float("-inf")

    backend.run(body)


# ----------------------------------------------------------------------------- Election


KEY = b"/controlplane/leader"


async def two_candidates(backend: StoreBackend, s: MetaStore) -> tuple[Election, Election]:
    """Elections for nodes a and b on KEY, each with its own started keeper (TTL 3 s)."""
    s2 = await second_client(backend, s)
    ka, kb = LeaseKeeper(s, 3), LeaseKeeper(s2, 3)
    await ka.start()
    await kb.start()
    return Election(s, KEY, b"node-a", ka), Election(s2, KEY, b"node-b", kb)


async def close_all(*elections: Election) -> None:
    for e in elections:
        await e.close()
        await e.keeper.close()


def test_one_winner_then_the_next_with_a_higher_token(backend: StoreBackend) -> None:
    backend.use_real_time()

    async def body(s: MetaStore) -> None:
        a, b = await two_candidates(backend, s)
        ka, kb = a.keeper, b.keeper
        assert await a.leader() is None and not a.is_leader() and a.token is None
        seen: list[Leader | None] = []
        observer = asyncio.ensure_future(_collect(b.observe(), seen, 4))
        await until(lambda: seen == [None], "observer started")
        token_a = await bounded(a.campaign())
        assert a.is_leader() and a.token == token_a
        assert await a.campaign() == token_a  # already leader: same token
        b_campaign = asyncio.ensure_future(b.campaign())
        await asyncio.sleep(0.1)  # b waits (can only pass wrongly on a slow machine)
        assert not b_campaign.done() and not b.is_leader()
        holder = await b.leader()
        assert holder == Leader(b"node-a", token_a, ka.lease_id)
        kv = await s.get(KEY)
        assert kv is not None and kv.create_revision == token_a
        await a.resign()
        assert not a.is_leader() and a.token is None
        await bounded(a.wait_lost())
        token_b = await bounded(b_campaign)
        assert b.is_leader() and token_b > token_a
        assert await a.leader() == Leader(b"node-b", token_b, kb.lease_id)
        await bounded(observer)
        assert seen == [
            None,
            Leader(b"node-a", token_a, ka.lease_id),
            None,
            Leader(b"node-b", token_b, kb.lease_id),
        ]
        await b.close()
        assert await a.leader() is None
        await close_all(a, b)

    backend.run(body)


async def _collect(it: AsyncIterator[Leader | None], out: list[Leader | None], n: int) -> None:
    async for item in it:
        out.append(item)
        if len(out) == n:
            return


def test_leadership_ends_with_the_lease(backend: StoreBackend) -> None:
    backend.use_real_time()

    async def body(s: MetaStore) -> None:
        a, b = await two_candidates(backend, s)
        token_a = await bounded(a.campaign())
        b_campaign = asyncio.ensure_future(b.campaign())
        await s.revoke(a.keeper.lease_id)  # a's lease ends in the store (as if expired)
        await bounded(a.wait_lost())
        assert not a.is_leader()
        token_b = await bounded(b_campaign)
        assert token_b > token_a and b.is_leader()
        # a campaigns again with its new lease and waits behind b.
        a_again = asyncio.ensure_future(a.campaign())
        await b.store.delete(KEY)  # an operator deletes the key: b is no longer leader
        await bounded(b.wait_lost())
        assert not b.is_leader()
        token_a2 = await bounded(a_again)
        assert token_a2 > token_b and a.is_leader()
        await close_all(a, b)

    backend.run(body)


def test_leadership_ends_at_the_local_deadline(backend: StoreBackend) -> None:
    """Rule 6: a leader whose keepalives stall stops being leader at its own deadline."""
    backend.use_real_time()

    async def body(s: MetaStore) -> None:
        clock = ManualClock()
        keeper = LeaseKeeper(s, 3, clock=clock)
        await keeper.start()
        e = Election(s, KEY, b"me", keeper)
        token = await bounded(e.campaign())
        assert e.is_leader() and e.token == token
        clock.advance(keeper.deadline - clock())  # no keepalive was sent: the clock jumped
        assert not e.is_leader() and e.token is None  # at once, whatever the tasks are doing
        await bounded(e.wait_lost())
        await e.close()
        await keeper.close()

    backend.run(body)


def test_campaign_adopts_its_own_key(backend: StoreBackend) -> None:
    """A campaign whose earlier put went through (reply lost) finds the key under its own lease."""
    backend.use_real_time()

    async def body(s: MetaStore) -> None:
        async with LeaseKeeper(s, 3) as keeper:
            rev = await s.put(KEY, b"me", lease=keeper.lease_id)
            e = Election(s, KEY, b"me", keeper)
            assert await bounded(e.campaign()) == rev
            await e.resign()
            assert await s.get(KEY) is None

    backend.run(body)
