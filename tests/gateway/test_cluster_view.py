"""The gateway's mirror of the cluster's records (gateway/cluster_view.py) over a real MetaStore:
it follows puts and deletes, resumes a broken watch without missing an event, reads everything
again after the history it needed was compacted, and a lookup it cannot answer falls back to the
store.

Every test runs on the embedded LMDB store, and on a real etcd server once the etcd MetaStore
(``clustermeta/metastore_etcd.py``) and its test harness (``tests/etcd_harness.py``) are on this
branch — skipped until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from clustermeta.connect import open_metastore
from clustermeta.metastore import MetaStore
from clustermeta.names import InvalidName
from clustermeta.records import (
    DatabaseRecord,
    DbState,
    db_key,
    dns_key,
    node_key,
    owner_key,
    rdns_key,
)
from gateway.cluster_view import Changes, ClusterView, ViewConfig
from sats.identity import Identity
from tests.gateway.cluster_harness import (
    FlakyStore,
    put_database,
    register_node,
    set_controlplane,
    set_leader,
)

OWNER = Identity.from_claims("localhost", "owner")
DB1 = Identity.from_claims("localhost", "db1")
DB2 = Identity.from_claims("localhost", "db2")
QUICK = ViewConfig(backoff_min=0.01, backoff_max=0.1)


def _etcd_missing() -> str | None:
    for module in ("clustermeta.metastore_etcd", "tests.etcd_harness"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not on this branch yet"
    return None if shutil.which("etcd") else "no etcd binary"


@pytest.fixture(params=["lmdb", pytest.param("etcd", marks=pytest.mark.skipif(bool(_etcd_missing()), reason=str(_etcd_missing())))])
def backend(request: pytest.FixtureRequest) -> str:
    """The MetaStore under the view: the embedded one, or a real etcd."""
    return str(request.param)


@contextlib.asynccontextmanager
async def opened(backend: str, tmp_path: Path) -> AsyncIterator[MetaStore]:
    """A fresh store, through the factory every cluster process uses."""
    if backend == "lmdb":
        store = await open_metastore(f"lmdb:{tmp_path / 'meta.lmdb'}")
        try:
            yield store
        finally:
            await store.close()
        return
    from tests.etcd_harness import EtcdServer  # type: ignore[import-not-found]

    with EtcdServer.start(tmp_path) as etcd:
        store = await open_metastore(etcd.endpoints, "/view-test")
        try:
            yield store
        finally:
            await store.close()


def run(backend: str, tmp_path: Path, body: Callable[[FlakyStore], Awaitable[None]]) -> None:
    async def main() -> None:
        async with opened(backend, tmp_path) as inner:
            await asyncio.wait_for(body(FlakyStore(inner)), 60)

    asyncio.run(main())


async def started(store: FlakyStore) -> ClusterView:
    view = ClusterView(store, QUICK)
    await view.start()
    return view


def test_view_loads_then_follows_puts_and_deletes(backend: str, tmp_path: Path) -> None:
    async def body(store: FlakyStore) -> None:
        await register_node(store, "n1", "127.0.0.1:1001")
        await register_node(store, "n2", "127.0.0.1:1002")
        await set_controlplane(store, "127.0.0.1:2000")
        await put_database(store, DB1, OWNER, leader="n1", name="first")
        view = await started(store)
        assert view.reads == 1 and view.revision == await store.current_revision()
        assert await view.resolve("first") == DB1
        assert await view.resolve(DB2.to_hex()) == DB2  # identities are not checked
        with pytest.raises(InvalidName):
            await view.resolve("Not_A_Name")
        record = await view.database(DB1)
        assert record is not None and record.leader == "n1" and record.owner == OWNER
        assert await view.names(DB1) == ["first"]
        assert await view.databases_of(OWNER) == [DB1]
        assert [n.id for n in view.live_nodes()] == ["n1", "n2"]
        assert await view.leader_address(DB1) == "127.0.0.1:1001"
        cp = await view.controlplane()
        assert cp is not None and cp.address == "127.0.0.1:2000"

        seen: list[Changes] = []
        view.add_listener(seen.append)
        await put_database(store, DB2, OWNER, leader="n2", name="second")
        await store.put(rdns_key(DB1, "alias"), b"")
        await store.put(dns_key("alias"), DB1.to_hex().encode())
        await set_leader(store, DB1, "n2")
        await store.delete(node_key("n1"))
        await store.delete(dns_key("first"))
        await store.delete(rdns_key(DB1, "first"))
        revision = await set_controlplane(store, "127.0.0.1:2001")
        assert await view.wait_for(revision, 10)
        assert view.revision == revision
        assert view.cached_route(DB1).leader == "n2" and await view.leader_address(DB1) == "127.0.0.1:1002"
        assert await view.names(DB1) == ["alias"] and await view.resolve("alias") == DB1
        assert view._mirror.dns.get("first") is None
        assert await view.databases_of(OWNER) == sorted([DB1, DB2], key=Identity.to_hex)
        assert [n.id for n in view.live_nodes()] == ["n2"]
        assert view.cached_controlplane() is not None and view.cached_controlplane().address == "127.0.0.1:2001"  # type: ignore[union-attr]
        assert {db for c in seen for db in c.databases} == {DB1, DB2}
        assert any(c.nodes for c in seen) and any(c.controlplane for c in seen)

        # Deleting the record: gone from the mirror and, as it is gone from the store too, for good.
        await store.delete(owner_key(OWNER, DB2))
        revision = (await store.delete(db_key(DB2))).revision
        assert await view.wait_for(revision, 10)
        assert await view.database(DB2) is None and await view.databases_of(OWNER) == [DB1]
        assert view.reads == 1  # followed, never re-read
        await view.close()

    run(backend, tmp_path, body)


def test_view_resumes_after_a_watch_error_without_missing_an_event(backend: str, tmp_path: Path) -> None:
    async def body(store: FlakyStore) -> None:
        await register_node(store, "n1", "127.0.0.1:1001")
        await put_database(store, DB1, OWNER, leader="n1", name="first")
        view = await started(store)
        await register_node(store, "n2", "127.0.0.1:1002")
        applied = await store.current_revision()
        assert await view.wait_for(applied, 10)

        store.break_watches()
        # Changes the view cannot see while its watch is down.
        await put_database(store, DB2, OWNER, leader="n2", name="second")
        await set_leader(store, DB1, "n2")
        await store.delete(node_key("n1"))
        last = await store.put(dns_key("first"), DB2.to_hex().encode())
        await asyncio.sleep(0.2)  # the view keeps retrying meanwhile
        assert view.revision == applied and await view.leader_address(DB1) == "127.0.0.1:1001"
        assert len(store.watch_starts) == 1

        store.repair()
        assert await view.wait_for(last, 20)
        assert view.reads == 1  # resumed from where it was, no full read
        assert store.watch_starts[-1] == applied + 1
        assert view.cached_route(DB1).leader == "n2"
        assert (await view.database(DB2)) is not None and await view.resolve("second") == DB2
        assert await view.resolve("first") == DB2
        assert [n.id for n in view.live_nodes()] == ["n2"]
        await view.close()

    run(backend, tmp_path, body)


def test_view_reads_everything_again_after_compaction(backend: str, tmp_path: Path) -> None:
    async def body(store: FlakyStore) -> None:
        await register_node(store, "n1", "127.0.0.1:1001")
        await put_database(store, DB1, OWNER, leader="n1", name="first")
        await put_database(store, DB2, OWNER, leader="n1", name="second")
        view = await started(store)
        changed: list[Changes] = []
        view.add_listener(changed.append)
        store.break_watches()
        await store.delete(db_key(DB2))
        await store.delete(owner_key(OWNER, DB2))
        await set_leader(store, DB1, "n2")
        await register_node(store, "n2", "127.0.0.1:1002")
        last = await store.put(b"/unrelated", b"x")
        await store.compact(last)  # the history the view would resume from is gone
        store.repair()
        assert await view.wait_for(last, 20)
        assert view.reads == 2
        assert await view.database(DB2) is None and await view.databases_of(OWNER) == [DB1]
        assert view.cached_route(DB1).leader == "n2" and await view.leader_address(DB1) == "127.0.0.1:1002"
        # Listeners hear of what the re-read changed.
        assert {db for c in changed for db in c.databases} == {DB1, DB2} and any(c.nodes for c in changed)
        # And it follows on from the re-read.
        revision = await set_leader(store, DB1, "n1")
        assert await view.wait_for(revision, 10) and view.cached_route(DB1).leader == "n1"
        await view.close()

    run(backend, tmp_path, body)


def test_a_lookup_miss_reads_the_store(backend: str, tmp_path: Path) -> None:
    """A database published a moment ago elsewhere is found before the mirror has it."""

    async def body(store: FlakyStore) -> None:
        view = await started(store)
        store.hold()  # the mirror lags from now on
        await register_node(store, "n1", "127.0.0.1:1001")
        await put_database(store, DB1, OWNER, leader="n1", name="fresh")
        await set_controlplane(store, "127.0.0.1:2000")
        assert view.cached_route(DB1).record is None  # the mirror has not seen any of it
        assert await view.resolve("fresh") == DB1
        assert await view.resolve("never-published") is None
        record = await view.database(DB1)
        assert record is not None and record.leader == "n1"
        route = await view.route(DB1)
        assert route.node is not None and route.node.address == "127.0.0.1:1001"
        assert await view.names(DB1) == ["fresh"]
        assert await view.databases_of(OWNER) == [DB1]
        cp = await view.controlplane()
        assert cp is not None and cp.address == "127.0.0.1:2000"
        store.release()
        assert await view.wait_for(await store.current_revision(), 10)
        assert view.cached_route(DB1).node is not None
        await view.close()

    run(backend, tmp_path, body)


def test_a_record_mirrored_mid_change_is_read_from_the_store(backend: str, tmp_path: Path) -> None:
    """A database the mirror last saw being created, active in the store since (published through
    another gateway), is active to this one at once — not "No such database." until the mirror
    catches up (seen once in tests/k8s/test_local_cluster.py)."""

    async def body(store: FlakyStore) -> None:
        await put_database(store, DB1, OWNER, leader="n1", name="fresh", state=DbState.CREATING)
        view = await started(store)
        assert view.cached_route(DB1).record.state is DbState.CREATING  # type: ignore[union-attr]
        store.hold()  # the mirror lags from now on
        await put_database(store, DB1, OWNER, leader="n1", name="fresh")
        record = await view.database(DB1)
        assert record is not None and record.state is DbState.ACTIVE
        store.release()
        await view.close()

    run(backend, tmp_path, body)


def test_catch_up_waits_until_the_mirror_shows_a_write(backend: str, tmp_path: Path) -> None:
    async def body(store: FlakyStore) -> None:
        await put_database(store, DB1, OWNER, leader="n1", name="old")
        view = await started(store)
        store.hold()
        await store.delete(dns_key("old"))
        await store.delete(rdns_key(DB1, "old"))
        await put_database(store, DB2, OWNER, leader="n1", name="new")
        keys = [db_key(DB2), dns_key("new"), dns_key("old")]
        waiting = asyncio.ensure_future(view.catch_up(keys, [rdns_key(DB1, "")], timeout=30))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # held back: the mirror cannot show it yet
        assert not await view.catch_up(keys, timeout=0.1)  # a bound, then False
        store.release()
        assert await waiting
        assert view._mirror.dns == {"new": DB2} and DB1 not in view._mirror.rdns
        # A write outside what the view keeps moves the store's revision, not the view's mirror
        # of those keys: catching up on the keys still succeeds.
        await store.put(b"/tld/x", b"y")
        assert await view.catch_up([db_key(DB1)], timeout=10)
        await view.close()

    run(backend, tmp_path, body)


def test_wait_for_change_sees_the_record_and_the_nodes(backend: str, tmp_path: Path) -> None:
    async def body(store: FlakyStore) -> None:
        await put_database(store, DB1, OWNER, leader=None)
        view = await started(store)
        token = view.change_token(DB1)
        assert not await view.wait_for_change(DB1, 0.1)  # nothing happens: False at the bound
        await put_database(store, DB2, OWNER, leader="n1")  # another database: not a change of DB1
        assert not await view.wait_for_change(DB1, 0.1, since=token)
        await set_leader(store, DB1, "n1")
        assert await view.wait_for_change(DB1, 10, since=token)
        token = view.change_token(DB1)
        await register_node(store, "n1", "127.0.0.1:1")
        assert await view.wait_for_change(DB1, 10, since=token)  # its leader's address may have come
        await view.close()

    run(backend, tmp_path, body)


def test_malformed_and_foreign_keys_are_skipped(backend: str, tmp_path: Path) -> None:
    async def body(store: FlakyStore) -> None:
        await store.put(db_key(DB1), b"{not json")
        await store.put(b"/nodes/n9", b"[]")
        await store.put(b"/rdns/zz", b"")
        await store.put(b"/tld/abc", OWNER.to_hex().encode())
        await put_database(store, DB2, OWNER, leader="n1", state=DbState.CREATING)
        view = await started(store)
        assert view.cached_route(DB1).record is None and view.live_nodes() == []
        record = await view.database(DB2)
        assert isinstance(record, DatabaseRecord) and record.state is DbState.CREATING
        revision = await store.put(db_key(DB1), DatabaseRecord(DB1, OWNER, leader="n1").to_json())
        assert await view.wait_for(revision, 10) and view.cached_route(DB1).leader == "n1"
        await view.close()

    run(backend, tmp_path, body)
