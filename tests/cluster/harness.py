"""Whole clusters for tests: etcd, a control plane, host nodes and a gateway as real processes
(``orrery.cluster_local.LocalCluster``, what ``orrery cluster up`` runs), plus what the fault
tests need to look inside: the database records in etcd, who leads, the HTTP API.

Timings are the fast ones (etcd heartbeat 10 ms, node leases of 1 s unless a test asks for more)
so failovers take about a second; nothing here asserts on speed — waits poll with generous bounds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from clustermeta.connect import open_metastore
from clustermeta.metastore import KeyValue, MetaStore
from clustermeta.records import DB_PREFIX, NODES_PREFIX, DatabaseRecord, db_key, node_of_key
from orrery.cluster_local import ETCD_PREFIX, LocalCluster
from sats.identity import Identity
from tests.servers import Client, Reply

__all__ = ["ClusterFixture", "eventually", "run_async"]

T = TypeVar("T")
MODULES = Path(__file__).resolve().parent.parent.parent / "modules"


def run_async(coro: Awaitable[T], timeout: float = 600.0) -> T:
    """Run a coroutine to completion in a fresh event loop (bounded)."""

    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "") -> None:
    """Poll ``check`` until true; fail after ``timeout`` (a bound for broken code, not a speed test)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class ClusterFixture:
    """A running :class:`LocalCluster` and a few ways to look at it."""

    def __init__(self, root: Path, nodes: int = 3, *, lease_ttl: float = 1.0, **kw: Any) -> None:
        # The control plane keeps the default 2 s lease: no test here fails it over, and with 1 s
        # a busy machine (every process of the cluster on two cores) can make it stand down for
        # a moment and refuse what it was asked meanwhile.
        self.cluster = LocalCluster(
            root, nodes=nodes, listen_addr="127.0.0.1:0", lease_ttl=lease_ttl, controlplane_lease_ttl=2.0,
            fast_etcd=True, **kw,
        )  # fmt: skip

    def __enter__(self) -> ClusterFixture:
        self.cluster.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.down()

    @property
    def url(self) -> str:
        """The gateway."""
        return self.cluster.gateway_url

    def client(self) -> Client:
        """An HTTP client of the gateway."""
        return Client(self.url)

    async def store(self) -> MetaStore:
        """A client of the cluster's etcd (close it when done)."""
        return await open_metastore(self.cluster.etcd_endpoints, ETCD_PREFIX)

    async def record(self, identity: Identity) -> DatabaseRecord | None:
        """The database record as etcd holds it now."""
        store = await self.store()
        try:
            kv = await store.get(db_key(identity))
        finally:
            await store.close()
        return None if kv is None else DatabaseRecord.from_json(kv.value)

    async def _under(self, prefix: bytes) -> list[KeyValue]:
        """Every key under ``prefix`` as etcd holds it now."""
        store = await self.store()
        try:
            return list((await store.get_prefix(prefix)).kvs)
        finally:
            await store.close()

    async def records(self) -> list[DatabaseRecord]:
        """Every database record."""
        return [DatabaseRecord.from_json(kv.value) for kv in await self._under(DB_PREFIX)]

    async def live_nodes(self) -> set[str]:
        """The host nodes registered in etcd now (their lease is alive)."""
        return {node_of_key(kv.key) for kv in await self._under(NODES_PREFIX)}

    async def leader(self, identity: Identity, timeout: float = 60.0) -> str:
        """The node leading the database (waits through an election)."""
        found: list[str] = []

        async def has_leader() -> bool:
            r = await self.record(identity)
            if r is not None and r.leader and self.cluster.procs[r.leader].alive():
                found.append(r.leader)
                return True
            return False

        await eventually(has_leader, timeout, f"a leader for {identity.to_hex()[:16]}")
        return found[-1]

    async def new_identity(self, c: Client) -> str:
        """A fresh identity's token."""
        return (await c.new_identity())[1]

    async def publish(
        self, c: Client, name: str, module: str, token: str, *, replicas: int | None = None
    ) -> Identity:
        """Publish ``modules/<module>/<module>.wasm`` as ``name``; its identity."""
        params = {"num_replicas": str(replicas)} if replicas is not None else None
        program = (MODULES / module / f"{module}.wasm").read_bytes()
        reply = await c.post(f"/v1/database/{name}", data=program, token=token, params=params)
        assert reply.status == 200, reply
        return Identity.from_hex(reply.json()["Success"]["database_identity"])

    async def call(self, c: Client, db: str, reducer: str, args: list[Any], token: str) -> Reply:
        """``POST /v1/database/<db>/call/<reducer>`` with JSON arguments."""
        return await c.post(f"/v1/database/{db}/call/{reducer}", json_body=args, token=token)

    async def sql(self, c: Client, db: str, query: str, token: str) -> list[list[Any]]:
        """The rows of one SQL query."""
        reply = await c.post(f"/v1/database/{db}/sql", data=query, token=token)
        assert reply.status == 200, reply
        return list(json.loads(reply.body)[0]["rows"])
