"""The split server's gateway remembers name lookups (gateway/link_backend.CachedControlPlane), and
must never route a request by a lookup that a rename, delete or publish made stale — not even one
that was under way while the change happened. The inner control plane is a real one of the
project (the embedded store's), reached in-process."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from clustermeta.metastore_lmdb import LmdbMetaStore
from controlplane.core import ControlPlane, Placement
from gateway.errors import ApiError
from gateway.link_backend import CachedControlPlane
from hostnode.service import HostNode, HostNodeConfig
from orrery.standalone import LocalControlPlane
from sats.identity import Identity
from tests.gateway.conftest import CHAT

OWNER = Identity.from_claims("test", "owner")


class Gated:
    """The real control plane, with lookups that wait for ``gate`` (to overlap them with a change)."""

    def __init__(self, inner: LocalControlPlane) -> None:
        self.inner = inner
        self.gate: asyncio.Event | None = None
        self.lookups = 0

    async def resolve(self, name: str) -> Identity:
        self.lookups += 1
        found = await self.inner.resolve(name)
        if self.gate is not None:
            await self.gate.wait()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def with_control(tmp_path: Path, body: Any) -> None:
    async def main() -> None:
        store = await LmdbMetaStore.open(tmp_path / "meta.lmdb")
        node = HostNode(HostNodeConfig(tmp_path / "node"))
        await node.start()
        try:
            gated = Gated(LocalControlPlane(ControlPlane(store, node, Placement("node-0", "")), node))
            await body(CachedControlPlane(gated), gated)  # type: ignore[arg-type]
        finally:
            await node.stop()
            await store.close()

    asyncio.run(main())


def test_lookups_are_remembered_until_a_change(tmp_path: Path) -> None:
    async def body(cached: CachedControlPlane, gated: Gated) -> None:
        first = (await cached.publish(OWNER, "x", CHAT, clear=False)).identity
        assert await cached.resolve("x") == first
        assert await cached.resolve("x") == first
        assert gated.lookups == 1  # the second came from memory
        second = (await cached.publish(OWNER, "y", CHAT, clear=False)).identity
        await cached.delete(OWNER, "x")
        with pytest.raises(ApiError) as gone:
            await cached.database("x")
        assert gone.value.status == 404
        assert await cached.resolve("y") == second

    with_control(tmp_path, body)


def test_a_lookup_that_overlapped_a_change_is_not_kept(tmp_path: Path) -> None:
    async def body(cached: CachedControlPlane, gated: Gated) -> None:
        a = (await cached.publish(OWNER, "a", CHAT, clear=False)).identity
        gated.gate = asyncio.Event()
        lookup = asyncio.ensure_future(cached.resolve("a"))  # answered, then held at the gate
        await asyncio.sleep(0)
        await cached.delete(OWNER, "a")  # meanwhile, the database goes
        gated.gate.set()
        assert await lookup == a  # what it was when asked
        asked = gated.lookups
        with contextlib.suppress(ApiError):
            await cached.resolve("a")
        assert gated.lookups == asked + 1  # not remembered: asked again
        with pytest.raises(ApiError) as gone:
            await cached.database("a")
        assert gone.value.status == 404

    with_control(tmp_path, body)
