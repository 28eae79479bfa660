"""clustermeta.metastore + metastore_lmdb: revisions, ranges, txn compares, CAS races, leases,
watches (replay, live, compaction), restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from clustermeta.metastore import (
    FROM_KEY,
    MAX_KEY_BYTES,
    MAX_TXN_OPS,
    CompactedError,
    Compare,
    CompareOp,
    CompareTarget,
    DeleteOp,
    DeleteResponse,
    EventType,
    InvalidRequest,
    KeyValue,
    LeaseNotFound,
    MetaStore,
    MetaStoreClosed,
    MetaStoreError,
    PutOp,
    PutResponse,
    RangeOp,
    RangeResponse,
    Watch,
    WatchEvent,
    create_revision_equals,
    key_absent,
    key_exists,
    mod_revision_equals,
    prefix_end,
    value_equals,
    version_equals,
)
from clustermeta.metastore_lmdb import LmdbMetaStore


def run(tmp_path: Path, body: Callable[[LmdbMetaStore], Awaitable[None]], **kw: Any) -> None:
    """Open a fresh store under ``tmp_path``, run ``body`` in a new event loop, close the store."""

    async def main() -> None:
        store = await LmdbMetaStore.open(tmp_path / "meta.lmdb", **kw)
        try:
            await asyncio.wait_for(body(store), timeout=20)
        finally:
            await store.close()

    asyncio.run(main())


async def take(watch: Watch, n: int, timeout: float = 5.0) -> list[WatchEvent]:
    return [await asyncio.wait_for(watch.__anext__(), timeout) for _ in range(n)]


async def nothing_more(watch: Watch, wait: float = 0.05) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(watch.__anext__(), wait)


async def until_gone(s: MetaStore, key: bytes, timeout: float = 5.0) -> float:
    """Poll until ``key`` is deleted; returns the seconds it took."""
    t0 = time.monotonic()
    while await s.get(key) is not None:
        assert time.monotonic() - t0 < timeout, f"{key!r} still there after {timeout} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def kinds(events: list[WatchEvent]) -> list[tuple[str, bytes, int]]:
    return [(e.type.value, e.kv.key, e.revision) for e in events]


# ----------------------------------------------------------------------------- KV basics


def test_revisions_versions_and_deletes(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        assert await s.current_revision() == 1  # empty store, as etcd
        assert await s.get(b"a") is None
        assert await s.put(b"a", b"1") == 2
        assert await s.put(b"a", b"2") == 3
        assert await s.put(b"b", b"x") == 4
        assert await s.get(b"a") == KeyValue(b"a", b"2", create_revision=2, mod_revision=3, version=2)
        # Deleting nothing is not a write.
        resp = await s.delete(b"nope")
        assert (resp.deleted, resp.revision) == (0, 4)
        assert await s.current_revision() == 4
        resp = await s.delete(b"a", prev_kv=True)
        assert resp.deleted == 1 and resp.revision == 5
        assert resp.prev_kvs == [KeyValue(b"a", b"2", 2, 3, 2)]
        # Re-creation starts a new life: new create_revision, version 1.
        assert await s.put(b"a", b"3") == 6
        assert await s.get(b"a") == KeyValue(b"a", b"3", 6, 6, 1)
        # A txn's writes share one revision; a failed compare with no writes changes nothing.
        t = await s.txn([], [PutOp(b"c", b"1"), PutOp(b"d", b"1"), DeleteOp(b"b")])
        assert t.succeeded and t.revision == 7
        assert [r.revision for r in t.responses if isinstance(r, PutResponse | DeleteResponse)] == [7, 7, 7]
        t = await s.txn([value_equals(b"c", b"no")], [PutOp(b"c", b"2")], [RangeOp(b"c")])
        assert not t.succeeded and t.revision == 7
        assert await s.current_revision() == 7
        # Empty value is a value.
        await s.put(b"e", b"")
        kv = await s.get(b"e")
        assert kv is not None and kv.value == b""

    run(tmp_path, body)


def test_ranges_and_prefixes(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        keys = [b"/db/a", b"/db/b", b"/db/c", b"/db0", b"/dc", b"/names/x", b"\xff\xff"]
        for k in keys:
            await s.put(k, k.upper())
        rev = await s.current_revision()
        r = await s.get_prefix(b"/db/")
        assert [kv.key for kv in r.kvs] == [b"/db/a", b"/db/b", b"/db/c"]
        assert (r.count, r.more, r.revision) == (3, False, rev)
        r = await s.get_prefix(b"/db/", limit=2)
        assert [kv.key for kv in r.kvs] == [b"/db/a", b"/db/b"] and r.count == 3 and r.more
        r = await s.range(b"/db/b", b"/dc")
        assert [kv.key for kv in r.kvs] == [b"/db/b", b"/db/c", b"/db0"]
        r = await s.range(b"/names", FROM_KEY)
        assert [kv.key for kv in r.kvs] == [b"/names/x", b"\xff\xff"]
        r = await s.range(b"\x00", FROM_KEY)
        assert r.count == len(keys)
        assert (await s.range(b"/db/zz")).kvs == []
        assert [kv.key for kv in (await s.get_prefix(b"\xff")).kvs] == [b"\xff\xff"]
        assert prefix_end(b"/db/") == b"/db0"
        assert prefix_end(b"a\xff") == b"b"
        assert prefix_end(b"\xff\xff") == FROM_KEY
        # Prefix delete, one revision.
        d = await s.delete_prefix(b"/db/", prev_kv=True)
        assert d.deleted == 3 and d.revision == rev + 1
        assert [kv.value for kv in d.prev_kvs] == [b"/DB/A", b"/DB/B", b"/DB/C"]
        assert (await s.get_prefix(b"/db")).count == 1  # /db0 survives
        d = await s.delete(b"/dc", b"\xff")
        assert d.deleted == 2 and not d.prev_kvs  # /dc, /names/x

    run(tmp_path, body)


def test_invalid_requests(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        with pytest.raises(InvalidRequest, match="empty"):
            await s.put(b"", b"v")
        with pytest.raises(InvalidRequest, match="at most"):
            await s.put(b"k" * (MAX_KEY_BYTES + 1), b"v")
        await s.put(b"k" * MAX_KEY_BYTES, b"v")
        with pytest.raises(InvalidRequest):
            await s.put("k", b"v")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest):
            await s.put(b"k", "v")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest, match="duplicate key"):
            await s.txn([], [PutOp(b"k", b"1"), PutOp(b"k", b"2")])
        with pytest.raises(InvalidRequest, match="duplicate key"):
            await s.txn([], [DeleteOp(b"a", b"z"), PutOp(b"k", b"2")])
        await s.txn([], [DeleteOp(b"a", b"z"), DeleteOp(b"j", b"m"), RangeOp(b"k"), PutOp(b"zz", b"1")])
        with pytest.raises(InvalidRequest, match="too many"):
            await s.txn([], [PutOp(b"k%d" % i, b"") for i in range(MAX_TXN_OPS + 1)])
        with pytest.raises(InvalidRequest, match="needs bytes"):
            Compare(b"k", CompareTarget.VALUE, CompareOp.EQUAL, 1)
        with pytest.raises(InvalidRequest, match="needs an int"):
            Compare(b"k", CompareTarget.MOD, CompareOp.EQUAL, b"1")
        with pytest.raises(InvalidRequest):
            await s.grant(0)
        with pytest.raises(InvalidRequest):
            await s.watch(b"k", start_revision=-1)

    run(tmp_path, body)


# ----------------------------------------------------------------------------- txn


def test_txn_compare_kinds(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        await s.put(b"k", b"m")  # rev 2
        await s.put(b"k", b"m")  # rev 3, version 2
        lease = await s.grant(60)
        await s.put(b"l", b"x", lease=lease)  # rev 4

        async def holds(c: Compare) -> bool:
            resp = await s.txn([c])
            return resp.succeeded

        V, VER, C, M, L = (
            CompareTarget.VALUE,
            CompareTarget.VERSION,
            CompareTarget.CREATE,
            CompareTarget.MOD,
            CompareTarget.LEASE,
        )
        EQ, NE, LT, GT = CompareOp.EQUAL, CompareOp.NOT_EQUAL, CompareOp.LESS, CompareOp.GREATER
        cases: list[tuple[Compare, bool]] = [
            (Compare(b"k", V, EQ, b"m"), True),
            (Compare(b"k", V, NE, b"m"), False),
            (Compare(b"k", V, LT, b"n"), True),
            (Compare(b"k", V, GT, b"l"), True),
            (Compare(b"k", V, GT, b"m"), False),
            (Compare(b"k", VER, EQ, 2), True),
            (Compare(b"k", VER, LT, 2), False),
            (Compare(b"k", C, EQ, 2), True),
            (Compare(b"k", M, EQ, 3), True),
            (Compare(b"k", M, GT, 2), True),
            (Compare(b"k", L, EQ, 0), True),
            (Compare(b"l", L, EQ, lease), True),
            (Compare(b"l", L, NE, lease), False),
            # A missing key: numeric targets see 0, VALUE compares are always false.
            (Compare(b"missing", V, EQ, b""), False),
            (Compare(b"missing", V, NE, b"x"), False),
            (Compare(b"missing", VER, EQ, 0), True),
            (Compare(b"missing", M, EQ, 0), True),
            (Compare(b"missing", C, GT, 0), False),
            (Compare(b"missing", L, EQ, 0), True),
            (value_equals(b"k", b"m"), True),
            (version_equals(b"k", 2), True),
            (mod_revision_equals(b"k", 3), True),
            (create_revision_equals(b"k", 2), True),
            (key_absent(b"k"), False),
            (key_absent(b"missing"), True),
            (key_exists(b"k"), True),
            (key_exists(b"missing"), False),
        ]
        for compare, expected in cases:
            assert await holds(compare) is expected, compare
        # Several compares are a conjunction.
        assert not (await s.txn([value_equals(b"k", b"m"), key_exists(b"missing")])).succeeded
        assert await s.current_revision() == 4

    run(tmp_path, body)


def test_txn_branches_and_own_writes(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        await s.put(b"epoch", b"1")
        t = await s.txn(
            [value_equals(b"epoch", b"1")],
            [PutOp(b"epoch", b"2", prev_kv=True), RangeOp(b"epoch"), PutOp(b"leader", b"n2")],
            [RangeOp(b"epoch")],
        )
        assert t.succeeded
        put, rng, _ = t.responses
        assert isinstance(put, PutResponse) and put.prev_kv is not None and put.prev_kv.value == b"1"
        assert isinstance(rng, RangeResponse) and rng.kvs[0].value == b"2"  # sees the earlier op
        t = await s.txn([value_equals(b"epoch", b"1")], [PutOp(b"epoch", b"3")], [RangeOp(b"epoch")])
        assert not t.succeeded
        (rng,) = t.responses
        assert isinstance(rng, RangeResponse) and rng.kvs[0].value == b"2"

    run(tmp_path, body)


def test_failed_txn_is_atomic(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        with pytest.raises(LeaseNotFound):
            await s.txn([], [PutOp(b"a", b"1"), PutOp(b"b", b"1", lease=12345)])
        assert await s.get(b"a") is None
        assert await s.current_revision() == 1
        with pytest.raises(LeaseNotFound):
            await s.put(b"a", b"1", lease=999)

    run(tmp_path, body)


def test_create_if_absent_races(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        for n in (2, 16):
            key = b"/db/%d/leader" % n
            results = await asyncio.gather(*(s.create(key, b"node-%d" % i) for i in range(n)))
            winners = [i for i, r in enumerate(results) if r.succeeded]
            assert len(winners) == 1
            kv = await s.get(key)
            assert kv is not None and kv.value == b"node-%d" % winners[0] and kv.version == 1
            for r in results:
                if not r.succeeded:
                    assert r.current == kv

    run(tmp_path, body)


def test_cas_helpers_and_epoch_fencing(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        r = await s.cas(b"e", None, b"1")
        assert r.succeeded and r.current is None
        r = await s.cas(b"e", None, b"1")
        assert not r.succeeded and r.current is not None and r.current.value == b"1"
        assert (await s.cas(b"e", b"1", b"2")).succeeded
        assert not (await s.cas(b"e", b"1", b"3")).succeeded
        # Two control planes read the same epoch, both try to bump it: exactly one wins.
        kv = await s.get(b"e")
        assert kv is not None

        async def bump(tag: bytes) -> bool:
            return (await s.put_if_mod_revision(b"e", kv.mod_revision, tag)).succeeded

        assert sorted(await asyncio.gather(bump(b"3a"), bump(b"3b"))) == [False, True]
        assert (await s.put_if_mod_revision(b"new", 0, b"x")).succeeded
        assert not (await s.put_if_mod_revision(b"new", 0, b"y")).succeeded
        assert not (await s.delete_if(b"new", b"y")).succeeded
        assert (await s.delete_if(b"new", b"x")).succeeded
        assert await s.get(b"new") is None
        assert not (await s.delete_if(b"new", b"x")).succeeded

    run(tmp_path, body)


# ----------------------------------------------------------------------------- leases


def test_lease_expiry_deletes_keys_and_emits_events(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        lease = await s.grant(0.25)
        await s.put(b"/nodes/1", b"up", lease=lease)
        await s.put(b"/nodes/2", b"up", lease=lease)
        await s.put(b"/nodes/3", b"up")  # not leased
        info = await s.lease_info(lease)
        assert (
            info.keys == [b"/nodes/1", b"/nodes/2"]
            and info.granted_ttl == 0.25
            and 0 < info.remaining <= 0.25
        )
        w = await s.watch_prefix(b"/nodes/", prev_kv=True)
        t0 = time.monotonic()
        events = await take(w, 2)
        assert 0.15 < time.monotonic() - t0 < 2.0
        assert [e.type for e in events] == [EventType.DELETE, EventType.DELETE]
        assert [e.kv.key for e in events] == [b"/nodes/1", b"/nodes/2"]
        assert events[0].revision == events[1].revision == await s.current_revision()  # one revision
        assert events[0].prev_kv is not None and events[0].prev_kv.lease == lease
        assert [kv.key for kv in (await s.get_prefix(b"/nodes/")).kvs] == [b"/nodes/3"]
        with pytest.raises(LeaseNotFound):
            await s.keepalive(lease)
        with pytest.raises(LeaseNotFound):
            await s.lease_info(lease)
        with pytest.raises(LeaseNotFound):
            await s.put(b"/nodes/1", b"up", lease=lease)

    run(tmp_path, body)


def test_keepalive_extends_and_revoke(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        lease = await s.grant(0.6)
        await s.put(b"k", b"v", lease=lease)
        for _ in range(8):  # 0.8 s > TTL, kept alive
            await asyncio.sleep(0.1)
            assert await s.keepalive(lease) == 0.6
        assert await s.get(b"k") is not None
        # Revoke: keys gone at once.
        other = await s.grant(60)
        await s.put(b"o", b"v", lease=other)
        rev = await s.current_revision()
        await s.revoke(other)
        assert await s.get(b"o") is None and await s.current_revision() == rev + 1
        with pytest.raises(LeaseNotFound):
            await s.revoke(other)
        # An empty lease revokes without a revision.
        empty = await s.grant(60)
        await s.revoke(empty)
        assert await s.current_revision() == rev + 1
        # Stop keeping alive: gone after the TTL.
        assert await until_gone(s, b"k") > 0.4

    run(tmp_path, body)


def test_put_moves_key_between_leases(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        short = await s.grant(0.2)
        long = await s.grant(60)
        await s.put(b"detached", b"1", lease=short)
        await s.put(b"detached", b"2")  # no lease: detached, survives
        await s.put(b"moved", b"1", lease=short)
        await s.put(b"moved", b"2", lease=long)
        await s.put(b"stays", b"1", lease=short)
        assert (await s.lease_info(short)).keys == [b"stays"]
        assert (await s.lease_info(long)).keys == [b"moved"]
        await until_gone(s, b"stays")
        assert (await s.get(b"detached")) is not None
        moved = await s.get(b"moved")
        assert moved is not None and moved.lease == long
        await s.delete(b"moved")
        assert (await s.lease_info(long)).keys == []

    run(tmp_path, body)


# ----------------------------------------------------------------------------- watches


def test_watch_replays_then_follows(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        await s.put(b"/db/a", b"1")  # 2
        await s.put(b"/other", b"x")  # 3
        await s.put(b"/db/a", b"2")  # 4
        await s.delete(b"/db/a")  # 5
        w = await s.watch_prefix(b"/db/", start_revision=2, prev_kv=True)
        assert w.next_revision == 2
        past = await take(w, 3)
        assert kinds(past) == [("PUT", b"/db/a", 2), ("PUT", b"/db/a", 4), ("DELETE", b"/db/a", 5)]
        assert past[0].prev_kv is None and past[1].prev_kv is not None and past[1].prev_kv.value == b"1"
        assert past[2].kv == KeyValue(b"/db/a", b"", 0, 5, 0, 0) and past[2].prev_kv is not None
        await nothing_more(w)
        # Live events, including a txn's events together at one revision; other keys filtered out.
        later = asyncio.ensure_future(take(w, 3))
        await asyncio.sleep(0.01)
        await s.put(b"/other", b"y")  # 6
        await s.txn([], [PutOp(b"/db/b", b"1"), PutOp(b"/db/c", b"1")])  # 7
        await s.put(b"/db/b", b"2")  # 8
        assert kinds(await later) == [("PUT", b"/db/b", 7), ("PUT", b"/db/c", 7), ("PUT", b"/db/b", 8)]
        assert w.next_revision == 9
        w.cancel()
        with pytest.raises(StopAsyncIteration):
            await w.__anext__()

    run(tmp_path, body)


def test_watch_from_now_single_key_and_prev_kv_off(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        await s.put(b"k", b"old")
        async with await s.watch(b"k") as w:
            await s.put(b"k2", b"x")
            await s.put(b"k", b"new")
            (ev,) = await take(w, 1)
            assert ev.kv.value == b"new" and ev.prev_kv is None
            await nothing_more(w)
        async with await s.watch(b"k", start_revision=0) as w0:  # 0 = now, as etcd
            await s.put(b"k", b"newer")
            assert (await take(w0, 1))[0].kv.value == b"newer"

    run(tmp_path, body)


def test_many_watchers_all_see_everything(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        watches = [await s.watch_prefix(b"/") for _ in range(5)]
        readers = [asyncio.ensure_future(take(w, 50)) for w in watches]

        async def writer(i: int) -> None:
            for j in range(10):
                await s.put(b"/%d/%d" % (i, j), b"v")

        await asyncio.gather(*(writer(i) for i in range(5)))
        results = [await r for r in readers]
        revs = [[e.revision for e in evs] for evs in results]
        assert all(r == list(range(2, 52)) for r in revs)

    run(tmp_path, body)


def test_watch_compacted(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        slow = await s.watch_prefix(b"/", start_revision=2)
        for i in range(10):
            await s.put(b"/k", b"%d" % i)  # revisions 2..11; history keeps 4..11
        with pytest.raises(CompactedError) as e:
            await (await s.watch_prefix(b"/", start_revision=3)).__anext__()
        assert e.value.requested == 3 and e.value.oldest_revision == 4
        # A watcher that fell behind the retained history is told so too, then stops.
        with pytest.raises(CompactedError):
            await slow.__anext__()
        with pytest.raises(StopAsyncIteration):
            await slow.__anext__()
        # Recovery: read the state, watch from its revision + 1.
        r = await s.range(b"/k")
        w = await s.watch_prefix(b"/", start_revision=r.revision + 1)
        await s.put(b"/k", b"x")
        assert (await take(w, 1))[0].revision == r.revision + 1
        ok = await s.watch_prefix(b"/", start_revision=5)
        assert [e.revision for e in await take(ok, 3)] == [5, 6, 7]
        # Explicit compaction.
        await s.compact(8)
        with pytest.raises(CompactedError):
            await (await s.watch_prefix(b"/", start_revision=8)).__anext__()
        with pytest.raises(CompactedError):
            await s.compact(7)
        with pytest.raises(InvalidRequest, match="future"):
            await s.compact(1000)
        # Compacting everything, up to the current revision, leaves an empty history.
        await s.compact(await s.current_revision())
        with pytest.raises(CompactedError):
            await (await s.watch_prefix(b"/", start_revision=9)).__anext__()

    run(tmp_path, body, history_limit=8)


def test_close_ends_watches_and_calls(tmp_path: Path) -> None:
    async def main() -> None:
        s = await LmdbMetaStore.open(tmp_path / "m.lmdb")
        w = await s.watch_prefix(b"/")
        pending = asyncio.ensure_future(w.__anext__())
        await asyncio.sleep(0.01)
        await s.close()
        with pytest.raises(MetaStoreClosed):
            await pending
        with pytest.raises(MetaStoreClosed):
            await s.put(b"a", b"b")
        with pytest.raises(MetaStoreClosed):
            await s.get(b"a")
        await s.close()  # idempotent

    asyncio.run(main())


def test_cancelled_caller_still_commits_and_notifies(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        w = await s.watch(b"k")
        task = asyncio.ensure_future(s.put(b"k", b"v"))
        await asyncio.sleep(0)
        task.cancel()
        (ev,) = await take(w, 1)
        assert ev.kv.value == b"v"

    run(tmp_path, body)


# ----------------------------------------------------------------------------- restart


def test_restart_keeps_data_revision_history_and_leases(tmp_path: Path) -> None:
    path = tmp_path / "meta.lmdb"

    async def first() -> tuple[int, int, int]:
        s = await LmdbMetaStore.open(path)
        await s.put(b"/db/1", b"one")
        await s.put(b"/db/1", b"uno")
        long = await s.grant(60)
        short = await s.grant(0.5)
        await s.put(b"/nodes/a", b"up", lease=long)
        await s.put(b"/nodes/b", b"up", lease=short)
        rev = await s.current_revision()
        await s.close()
        return rev, long, short

    rev, long, short = asyncio.run(first())

    async def second() -> None:
        s = await LmdbMetaStore.open(path)
        try:
            # Leases come back with a fresh TTL; the short one then expires here.
            assert (await s.lease_info(short)).keys == [b"/nodes/b"]
            nodes = await s.watch_prefix(b"/nodes/")
            info = await s.lease_info(long)
            assert info.keys == [b"/nodes/a"] and info.remaining > 50
            assert await s.current_revision() == rev
            assert await s.get(b"/db/1") == KeyValue(b"/db/1", b"uno", 2, 3, 2)
            assert await s.put(b"/db/2", b"two") == rev + 1
            w = await s.watch_prefix(b"/db/", start_revision=2)
            assert [e.kv.value for e in await take(w, 3)] == [b"one", b"uno", b"two"]
            (gone,) = await take(nodes, 1)
            assert gone.type is EventType.DELETE and gone.kv.key == b"/nodes/b"
            assert await s.get(b"/nodes/a") is not None
            assert await s.grant(1) not in (long, short)  # ids are never reused
        finally:
            await s.close()

    asyncio.run(second())


def test_second_open_is_refused(tmp_path: Path) -> None:
    async def body(s: LmdbMetaStore) -> None:
        with pytest.raises(MetaStoreError, match="already open"):
            await LmdbMetaStore.open(s.path)
        await s.put(b"k", b"v")

    run(tmp_path, body)

    async def reopen() -> None:  # closing released the lock
        async with await LmdbMetaStore.open(tmp_path / "meta.lmdb") as s:
            assert await s.get(b"k") is not None

    asyncio.run(reopen())


def test_interface_is_abstract() -> None:
    with pytest.raises(TypeError):
        MetaStore()  # type: ignore[abstract]
