"""The MetaStore implementations under test, behind one small interface (:class:`StoreBackend`).

The conformance suite (``test_metastore.py``, ``test_coordination.py``) takes the ``backend``
fixture (see ``conftest.py``), parametrized over :data:`STORE_KINDS`; a test marked
``@pytest.mark.stores("lmdb")`` runs against that store only.

Time: the LMDB store runs on a :class:`ManualClock`, so lease expiry happens exactly when a test
says (:meth:`StoreBackend.pass_time` advances the clock and expires what is due); etcd runs on real
time, so the same call sleeps. Tests therefore wait for expiry with :meth:`StoreBackend.until_gone`
(poll while passing time, with a generous bound) and never assert how long something took. Tests
of code that keeps leases alive on its own (``coordination``) call :meth:`StoreBackend.use_real_time`
first: the keeper and the store must agree on time, and the keeper's clock is real.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

from clustermeta.metastore import MetaStore
from clustermeta.metastore_etcd import EtcdMetaStore
from clustermeta.metastore_lmdb import LmdbMetaStore
from tests.etcd_harness import EtcdServer

__all__ = ["STORE_KINDS", "ManualClock", "StoreBackend", "revoke_all_leases"]

#: Every MetaStore implementation the suite runs against.
STORE_KINDS = ("lmdb", "etcd")
#: Upper bound on waiting for something that must happen eventually (never a speed assertion).
EVENTUALLY = 30.0


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


class StoreBackend:
    """One store implementation with fresh, isolated data for one test."""

    def __init__(self, kind: str, tmp_path: Path, etcd: EtcdServer | None = None) -> None:
        if kind not in STORE_KINDS:
            raise ValueError(f"unknown store kind {kind!r}")
        self.kind = kind
        self.path = tmp_path / "meta.lmdb"
        self.etcd = etcd
        #: The test's own key namespace in the shared etcd.
        self.prefix = f"/t/{uuid.uuid4().hex[:12]}/".encode()
        #: The LMDB store's clock (``None``: real time).
        self.clock: ManualClock | None = ManualClock()
        self._open: list[MetaStore] = []

    def use_real_time(self) -> None:
        """Let LMDB leases expire in real time too (before the first :meth:`open`)."""
        assert not self._open, "use_real_time() before opening a store"
        self.clock = None

    async def open(self, **kw: Any) -> MetaStore:
        """A store over this test's data (each call: a new handle/client on the same data)."""
        if self.kind == "lmdb":
            store: MetaStore = await LmdbMetaStore.open(self.path, clock=self.clock or time.monotonic, **kw)
        else:
            assert self.etcd is not None
            store = await EtcdMetaStore.open(self.etcd.endpoints, prefix=self.prefix, **kw)
        self._open.append(store)
        return store

    async def pass_time(self, seconds: float) -> None:
        """Let ``seconds`` pass for leases: advance the manual clock and expire, or sleep."""
        if self.kind == "lmdb" and self.clock is not None:
            self.clock.advance(seconds)
            for store in self._open:
                if isinstance(store, LmdbMetaStore) and not store._closed:
                    await store.expire_leases()
        else:
            await asyncio.sleep(seconds)

    async def until_gone(self, store: MetaStore, key: bytes, *, step: float = 0.1) -> None:
        """Pass time until ``key`` is deleted (lease expiry); fails after :data:`EVENTUALLY` s."""
        await self.until(lambda: _absent(store, key), step=step, what=f"{key!r} deleted")

    async def until(self, check: Callable[[], Awaitable[bool]], *, step: float = 0.1, what: str = "") -> None:
        """Pass time in ``step``s until ``check()`` is true; fails after :data:`EVENTUALLY` s."""
        t0 = time.monotonic()
        while not await check():
            assert time.monotonic() - t0 < EVENTUALLY, f"not true after {EVENTUALLY} s: {what}"
            await self.pass_time(step)

    def run(self, body: Callable[[MetaStore], Awaitable[None]], *, timeout: float = 60.0, **kw: Any) -> None:
        """Open a store, run ``body(store)`` in a new event loop (bounded), close every store."""

        async def main() -> None:
            store = await self.open(**kw)
            try:
                await asyncio.wait_for(body(store), timeout)
            finally:
                for s in self._open:
                    await s.close()
                self._open.clear()

        asyncio.run(main())

    def cleanup(self) -> None:
        """After the test: revoke every lease in the shared etcd so none expires during a later test."""
        if self.etcd is not None and self.etcd.running:
            asyncio.run(revoke_all_leases(self.etcd.endpoints))


async def _absent(store: MetaStore, key: bytes) -> bool:
    return await store.get(key) is None


async def revoke_all_leases(endpoints: str) -> int:
    """Revoke every lease of the etcd at ``endpoints``; returns how many (test hygiene only)."""
    async with grpc.aio.insecure_channel(endpoints) as channel:
        stub = rpc.LeaseStub(channel)
        leases = await stub.LeaseLeases(rpc.LeaseLeasesRequest(), timeout=10)
        n = 0
        for lease in leases.leases:
            try:
                await stub.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease.ID), timeout=10)
                n += 1
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        return n
