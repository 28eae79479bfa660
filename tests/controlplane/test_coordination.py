"""clustermeta.coordination: a kept lease and its holder's deadline; one election winner at a time,
fenced."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from clustermeta.coordination import Election, LeaseKeeper, LeaseLost
from clustermeta.metastore import PutOp
from clustermeta.metastore_lmdb import LmdbMetaStore
from tests.controlplane.cluster_harness import eventually, run

KEY = b"/controlplane/leader"


def test_a_kept_lease_outlives_its_ttl_and_its_deadline_moves_on(tmp_path: Path) -> None:
    async def body() -> None:
        async with await LmdbMetaStore.open(tmp_path / "m.lmdb") as store:
            keeper = LeaseKeeper(store, 1.0)
            await keeper.start()
            first_deadline = keeper.deadline()
            assert first_deadline <= time.monotonic() + 1.0 - keeper.margin + 0.01
            await store.put(b"/held", b"x", lease=keeper.lease_id)
            await eventually(lambda: keeper.deadline() > first_deadline + 1.0, what="renewed past the first TTL")
            assert keeper.valid() and await store.get(b"/held") is not None
            await keeper.stop()
            assert keeper.lost.is_set() and await store.get(b"/held") is None  # revoked on stop

    run(body)


def test_a_revoked_lease_is_lost_for_good(tmp_path: Path) -> None:
    async def body() -> None:
        async with await LmdbMetaStore.open(tmp_path / "m.lmdb") as store:
            keeper = LeaseKeeper(store, 1.0)
            await keeper.start()
            await store.revoke(keeper.lease_id)
            await eventually(keeper.lost.is_set, what="the keeper notices")
            assert not keeper.valid()
            await keeper.stop()

    run(body)


def test_one_winner_the_other_waits_and_the_losers_fence_fails(tmp_path: Path) -> None:
    async def body() -> None:
        async with await LmdbMetaStore.open(tmp_path / "m.lmdb") as store:
            a_lease, b_lease = LeaseKeeper(store, 5.0), LeaseKeeper(store, 5.0)
            await a_lease.start()
            await b_lease.start()
            a, b = Election(store, KEY, a_lease), Election(store, KEY, b_lease)
            token = await a.campaign(b"a")
            waiting = asyncio.ensure_future(b.campaign(b"b"))
            await asyncio.sleep(0.05)
            assert not waiting.done() and (await a.leader()) is not None
            assert (await store.txn([a.fence()], [PutOp(b"/w", b"a")])).succeeded
            old_fence = a.fence()
            await a.resign()
            b_token = await asyncio.wait_for(waiting, 30)
            assert b_token > token
            assert not (await store.txn([old_fence], [PutOp(b"/w", b"stale")])).succeeded
            assert (await store.get(b"/w")).value == b"a"  # type: ignore[union-attr]
            # A campaign whose lease goes while it waits gives up.
            waiting = asyncio.ensure_future(a.campaign(b"a"))
            await store.revoke(a_lease.lease_id)
            with pytest.raises(LeaseLost):
                await asyncio.wait_for(waiting, 30)
            await a_lease.stop()
            await b_lease.stop()
            assert await store.get(KEY) is None

    run(body)
