"""The node directory and the mirror under it: events, resuming after a broken watch, re-reading
after a compaction — against a real LMDB store whose watches the test can break."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clustermeta.aio import cancel_and_wait
from clustermeta.metastore import CompactedError, MetaStoreUnavailable, Watch, WatchEvent
from clustermeta.metastore_lmdb import LmdbMetaStore
from clustermeta.mirror import Change, PrefixMirror
from clustermeta.records import NodeInfo, node_key
from controlplane.nodes import NodeDirectory, NodeEvent, NodeEventKind
from tests.controlplane.cluster_harness import eventually, run


class BreakableStore(LmdbMetaStore):
    """An LMDB store whose open watches can be broken (as a lost etcd connection breaks them) and
    whose next watch can be told that its history was compacted."""

    breaks: asyncio.Event
    compact_next: bool = False
    watches_opened: int = 0

    async def watch(
        self, key: bytes, end: bytes | None = None, *, start_revision: int | None = None, prev_kv: bool = False
    ) -> Watch:
        self.watches_opened += 1
        inner = await super().watch(key, end, start_revision=start_revision, prev_kv=prev_kv)
        compacted, self.compact_next = self.compact_next, False
        return _BreakableWatch(inner, self, compacted)

    def break_watches(self) -> None:
        self.breaks.set()
        self.breaks = asyncio.Event()


class _BreakableWatch(Watch):
    def __init__(self, inner: Watch, store: BreakableStore, compacted: bool) -> None:
        self.inner = inner
        self.broken = store.breaks
        self.compacted = compacted

    @property
    def next_revision(self) -> int:
        return self.inner.next_revision

    def cancel(self) -> None:
        self.inner.cancel()

    async def __anext__(self) -> WatchEvent:
        if self.compacted:
            raise CompactedError(self.inner.next_revision, self.inner.next_revision + 1)
        nxt = asyncio.ensure_future(self.inner.__anext__())
        broken = asyncio.ensure_future(self.broken.wait())
        done, _ = await asyncio.wait({nxt, broken}, return_when=asyncio.FIRST_COMPLETED)
        broken.cancel()
        if nxt in done:
            return nxt.result()
        await cancel_and_wait(nxt)
        self.inner.cancel()
        raise MetaStoreUnavailable("connection lost (test)")


async def open_store(tmp_path: Path) -> BreakableStore:
    store = await BreakableStore.open(tmp_path / "meta.lmdb")
    assert isinstance(store, BreakableStore)
    store.breaks = asyncio.Event()
    return store


async def register(store: LmdbMetaStore, node_id: str, incarnation: str, lease: int = 0) -> None:
    await store.put(node_key(node_id), NodeInfo(node_id, f"{node_id}:1", incarnation).to_json(), lease=lease)


def test_directory_reports_up_gone_and_restarted(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path)
        await register(store, "n1", "a")
        directory = NodeDirectory(store)
        events: list[tuple[NodeEventKind, str]] = []
        directory.subscribe(lambda e: events.append((e.kind, e.node_id)))
        await directory.start()
        try:
            assert list(directory.live()) == ["n1"] and directory.address("n1") == "n1:1"
            lease = await store.grant(30)
            await register(store, "n2", "b", lease)
            await register(store, "n1", "a")  # the same incarnation again: nothing happened
            await register(store, "n1", "c")  # a new process under the same id
            await store.revoke(lease)  # n2's lease goes: its key goes
            await eventually(lambda: len(events) == 3)
            assert events == [(NodeEventKind.UP, "n2"), (NodeEventKind.RESTARTED, "n1"), (NodeEventKind.GONE, "n2")]
            assert directory.get("n1") == NodeInfo("n1", "n1:1", "c") and not directory.is_live("n2")
        finally:
            await directory.stop()
            await store.close()

    run(body)


def test_directory_resumes_after_a_broken_watch_without_losing_or_repeating_events(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path)
        directory = NodeDirectory(store)
        events: list[NodeEvent] = []
        directory.subscribe(events.append)
        await directory.start()
        try:
            await register(store, "n1", "a")
            await eventually(lambda: len(events) == 1)
            opened = store.watches_opened
            store.break_watches()
            for i in range(2, 6):
                await register(store, f"n{i}", "a")  # while the watch is down
            await eventually(lambda: store.watches_opened > opened, what="watch re-opened")
            await eventually(lambda: len(events) == 5)
            assert [e.node_id for e in events] == ["n1", "n2", "n3", "n4", "n5"]
            assert all(e.kind is NodeEventKind.UP for e in events)
        finally:
            await directory.stop()
            await store.close()

    run(body)


def test_mirror_rereads_after_a_compaction_and_reports_the_difference(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path)
        await store.put(b"/x/a", b"1")
        await store.put(b"/x/b", b"1")
        changes: list[Change] = []
        mirror = PrefixMirror(store, b"/x/", on_change=changes.extend, retry_delay=0.01)
        await mirror.start()
        try:
            store.compact_next = True  # the watch that replaces the broken one finds its history gone
            store.break_watches()
            await store.delete(b"/x/a")
            await store.put(b"/x/b", b"2")
            await store.put(b"/x/c", b"1")
            await eventually(lambda: set(mirror.items) == {b"/x/b", b"/x/c"})
            assert mirror.items[b"/x/b"].value == b"2"
            seen = {(c.key, None if c.new is None else c.new.value) for c in changes}
            assert {(b"/x/a", None), (b"/x/b", b"2"), (b"/x/c", b"1")} <= seen
            # ... and it follows on from the re-read.
            await store.put(b"/x/d", b"1")
            await eventually(lambda: b"/x/d" in mirror.items)
        finally:
            await mirror.stop()
            await store.close()

    run(body)
