"""The MetaStore conformance suite, run against every implementation (LMDB and a real etcd):
revisions, ranges, txn compares, CAS races, leases, watches (replay, live, compaction), close.

Revisions are asserted relative to the store's revision when the test starts (the etcd is shared
by the session, each test in a key prefix of its own). Lease expiry runs on a manual clock for LMDB
and in real time for etcd (``backend.pass_time``/``until_gone``); no test asserts a duration.
Tests for one store only (LMDB durability and locking; etcd prefixes, restarts and outages) are
marked ``@pytest.mark.stores(...)``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clustermeta.metastore import (
    FROM_KEY,
    MAX_KEY_BYTES,
    MAX_TXN_OPS,
    MAX_VALUE_BYTES,
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
from tests.controlplane.stores import ManualClock, StoreBackend


async def take(watch: Watch, n: int, timeout: float = 30.0) -> list[WatchEvent]:
    """The next ``n`` events (``timeout`` only bounds a broken test; it is not a speed check)."""
    return [await asyncio.wait_for(watch.__anext__(), timeout) for _ in range(n)]


async def nothing_more(watch: Watch, wait: float = 0.05) -> None:
    """No event is pending (can only pass wrongly on a slow machine, never fail wrongly)."""
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(watch.__anext__(), wait)


def kinds(events: list[WatchEvent], base: int = 0) -> list[tuple[str, bytes, int]]:
    return [(e.type.value, e.kv.key, e.revision - base) for e in events]


# ----------------------------------------------------------------------------- KV basics


def test_revisions_versions_and_deletes(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        base = await s.current_revision()
        if backend.kind == "lmdb":
            assert base == 1  # empty store, as etcd
        assert await s.get(b"a") is None
        assert await s.put(b"a", b"1") == base + 1
        assert await s.put(b"a", b"2") == base + 2
        assert await s.put(b"b", b"x") == base + 3
        assert await s.get(b"a") == KeyValue(b"a", b"2", base + 1, base + 2, version=2)
        # Deleting nothing is not a write.
        resp = await s.delete(b"nope")
        assert (resp.deleted, resp.revision) == (0, base + 3)
        assert await s.current_revision() == base + 3
        resp = await s.delete(b"a", prev_kv=True)
        assert resp.deleted == 1 and resp.revision == base + 4
        assert resp.prev_kvs == [KeyValue(b"a", b"2", base + 1, base + 2, 2)]
        # Re-creation starts a new life: new create_revision, version 1.
        assert await s.put(b"a", b"3") == base + 5
        assert await s.get(b"a") == KeyValue(b"a", b"3", base + 5, base + 5, 1)
        # A txn's writes share one revision; a failed compare with no writes changes nothing.
        t = await s.txn([], [PutOp(b"c", b"1"), PutOp(b"d", b"1"), DeleteOp(b"b")])
        assert t.succeeded and t.revision == base + 6
        revs = [r.revision for r in t.responses if isinstance(r, PutResponse | DeleteResponse)]
        assert revs == [base + 6] * 3
        t = await s.txn([value_equals(b"c", b"no")], [PutOp(b"c", b"2")], [RangeOp(b"c")])
        assert not t.succeeded and t.revision == base + 6
        assert await s.current_revision() == base + 6
        # Inside a txn a read sees the revision so far: before any write the old one.
        t = await s.txn([], [RangeOp(b"c"), PutOp(b"c", b"3"), RangeOp(b"c"), DeleteOp(b"zz")])
        assert [r.revision for r in t.responses] == [base + 6, base + 7, base + 7, base + 7]
        # Empty value is a value.
        await s.put(b"e", b"")
        kv = await s.get(b"e")
        assert kv is not None and kv.value == b""

    backend.run(body)


def test_ranges_and_prefixes(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
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
        assert (await s.range(b"/db/c", b"/db/a")).kvs == []  # end before start: empty
        assert (await s.range(b"/db/a", b"")).kvs == []  # an empty end is an empty range
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
        d = await s.delete(b"\x00", FROM_KEY)
        assert d.deleted == 2  # /db0, \xff\xff
        assert (await s.range(b"\x00", FROM_KEY)).count == 0

    backend.run(body)


def test_large_values(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        big = bytes(range(256)) * (MAX_VALUE_BYTES // 256)
        for i in range(5):  # 5 MiB in one range: more than gRPC's default message limit
            await s.put(b"big/%d" % i, big)
        r = await s.get_prefix(b"big/")
        assert r.count == 5 and all(kv.value == big for kv in r.kvs)
        with pytest.raises(InvalidRequest, match="at most"):
            await s.put(b"big/x", big + b"!")

    backend.run(body)


def test_invalid_requests(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        with pytest.raises(InvalidRequest, match="empty"):
            await s.put(b"", b"v")
        with pytest.raises(InvalidRequest, match="at most"):
            await s.put(b"k" * (MAX_KEY_BYTES + 1), b"v")
        await s.put(b"k" * MAX_KEY_BYTES, b"v")
        with pytest.raises(InvalidRequest):
            await s.put("k", b"v")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest):
            await s.put(b"k", "v")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest):
            await s.range(b"")
        with pytest.raises(InvalidRequest):
            await s.range(b"k", limit=-1)
        with pytest.raises(InvalidRequest, match="duplicate key"):
            await s.txn([], [PutOp(b"k", b"1"), PutOp(b"k", b"2")])
        with pytest.raises(InvalidRequest, match="duplicate key"):
            await s.txn([], [DeleteOp(b"a", b"z"), PutOp(b"k", b"2")])
        await s.txn([], [DeleteOp(b"a", b"z"), DeleteOp(b"j", b"m"), RangeOp(b"k"), PutOp(b"zz", b"1")])
        with pytest.raises(InvalidRequest, match="too many"):
            await s.txn([], [PutOp(b"k%d" % i, b"") for i in range(MAX_TXN_OPS + 1)])
        await s.txn([], [PutOp(b"k%d" % i, b"") for i in range(MAX_TXN_OPS)])
        with pytest.raises(InvalidRequest, match="needs bytes"):
            Compare(b"k", CompareTarget.VALUE, CompareOp.EQUAL, 1)
        with pytest.raises(InvalidRequest, match="needs an int"):
            Compare(b"k", CompareTarget.MOD, CompareOp.EQUAL, b"1")
        with pytest.raises(InvalidRequest):
            await s.grant(0)
        with pytest.raises(InvalidRequest):
            await s.grant(float("nan"))
        with pytest.raises(InvalidRequest):
            await s.watch(b"k", start_revision=-1)
        with pytest.raises(InvalidRequest):
            await s.compact(0)

    backend.run(body)


# ----------------------------------------------------------------------------- txn


def test_txn_compare_kinds(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        base = await s.current_revision()
        await s.put(b"k", b"m")  # base + 1
        await s.put(b"k", b"m")  # base + 2, version 2
        lease = await s.grant(60)
        await s.put(b"l", b"x", lease=lease)  # base + 3

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
            (Compare(b"k", C, EQ, base + 1), True),
            (Compare(b"k", M, EQ, base + 2), True),
            (Compare(b"k", M, GT, base + 1), True),
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
            (mod_revision_equals(b"k", base + 2), True),
            (create_revision_equals(b"k", base + 1), True),
            (key_absent(b"k"), False),
            (key_absent(b"missing"), True),
            (key_exists(b"k"), True),
            (key_exists(b"missing"), False),
        ]
        for compare, expected in cases:
            assert await holds(compare) is expected, compare
        # Several compares are a conjunction.
        assert not (await s.txn([value_equals(b"k", b"m"), key_exists(b"missing")])).succeeded
        assert await s.current_revision() == base + 3

    backend.run(body)


def test_txn_branches_and_own_writes(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        await s.put(b"epoch", b"1")
        t = await s.txn(
            [value_equals(b"epoch", b"1")],
            [PutOp(b"epoch", b"2", prev_kv=True), RangeOp(b"epoch"), PutOp(b"leader", b"n2")],
            [RangeOp(b"epoch")],
        )
        assert t.succeeded
        put, rng, other = t.responses
        assert isinstance(put, PutResponse) and put.prev_kv is not None and put.prev_kv.value == b"1"
        assert put.prev_kv.key == b"epoch"
        assert isinstance(rng, RangeResponse) and rng.kvs[0].value == b"2"  # sees the earlier op
        assert isinstance(other, PutResponse) and other.prev_kv is None
        t = await s.txn([value_equals(b"epoch", b"1")], [PutOp(b"epoch", b"3")], [RangeOp(b"epoch")])
        assert not t.succeeded
        (rng,) = t.responses
        assert isinstance(rng, RangeResponse) and rng.kvs[0].value == b"2"
        assert rng.kvs[0].key == b"epoch"
        # Deletes in a txn report what they deleted.
        t = await s.txn([], [DeleteOp(b"e", b"m", prev_kv=True)])
        (d,) = t.responses
        assert isinstance(d, DeleteResponse) and d.deleted == 2
        assert [kv.key for kv in d.prev_kvs] == [b"epoch", b"leader"]

    backend.run(body)


def test_failed_txn_is_atomic(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        base = await s.current_revision()
        live = await s.grant(60)
        with pytest.raises(LeaseNotFound) as e:
            await s.txn([], [PutOp(b"a", b"1", lease=live), PutOp(b"b", b"1", lease=12345)])
        assert e.value.lease_id == 12345
        assert await s.get(b"a") is None
        assert await s.current_revision() == base
        with pytest.raises(LeaseNotFound) as e:
            await s.put(b"a", b"1", lease=999)
        assert e.value.lease_id == 999
        # Only the branch that runs needs its leases.
        t = await s.txn([key_exists(b"a")], [PutOp(b"a", b"1", lease=12345)], [PutOp(b"a", b"2")])
        assert not t.succeeded and (await s.get(b"a")) is not None

    backend.run(body)


def test_create_if_absent_races(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
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

    backend.run(body)


def test_cas_helpers_and_epoch_fencing(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
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

    backend.run(body)


@pytest.mark.stores("etcd")
def test_two_clients_see_each_other(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        other = await backend.open()
        w = await other.watch_prefix(b"/x/")
        rev = await s.put(b"/x/1", b"a")
        assert (await other.get(b"/x/1")) is not None  # linearizable: a read after the write sees it
        assert [e.revision for e in await take(w, 1)] == [rev]
        assert (await other.create(b"/x/1", b"b")).current == await s.get(b"/x/1")

    backend.run(body)


# ----------------------------------------------------------------------------- leases


def test_lease_expiry_deletes_keys_and_emits_events(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        lease = await s.grant(1)
        await s.put(b"/nodes/1", b"up", lease=lease)
        await s.put(b"/nodes/2", b"up", lease=lease)
        await s.put(b"/nodes/3", b"up")  # not leased
        info = await s.lease_info(lease)
        assert info.id == lease and info.keys == [b"/nodes/1", b"/nodes/2"]
        assert info.granted_ttl >= 1 and 0 <= info.remaining <= info.granted_ttl
        w = await s.watch_prefix(b"/nodes/", prev_kv=True)
        await backend.until_gone(s, b"/nodes/1")
        events = await take(w, 2)
        assert [e.type for e in events] == [EventType.DELETE, EventType.DELETE]
        assert [e.kv.key for e in events] == [b"/nodes/1", b"/nodes/2"]
        assert events[0].revision == events[1].revision == await s.current_revision()  # one revision
        assert events[0].prev_kv is not None and events[0].prev_kv.lease == lease
        assert [kv.key for kv in (await s.get_prefix(b"/nodes/")).kvs] == [b"/nodes/3"]
        with pytest.raises(LeaseNotFound):
            await s.keepalive(lease)
        with pytest.raises(LeaseNotFound):
            await s.lease_info(lease)
        with pytest.raises(LeaseNotFound) as e:
            await s.put(b"/nodes/1", b"up", lease=lease)
        assert e.value.lease_id == lease

    backend.run(body)


def test_keepalive_keeps_a_lease_past_its_ttl(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        kept = await s.grant(2)
        dropped = await s.grant(2)
        await s.put(b"kept", b"v", lease=kept)
        await s.put(b"dropped", b"v", lease=dropped)

        async def dropped_gone() -> bool:
            assert await s.keepalive(kept) >= 2  # the TTL granted (etcd may round up)
            return await s.get(b"dropped") is None

        # Keep one lease alive (every 0.2 s, 10x within its TTL) until the other, granted with
        # it, has expired: the kept one must have outlived its TTL.
        await backend.until(dropped_gone, step=0.2, what="unrefreshed lease expired")
        assert await s.get(b"kept") is not None
        assert (await s.lease_info(kept)).keys == [b"kept"]
        with pytest.raises(LeaseNotFound):
            await s.keepalive(dropped)

    backend.run(body)


def test_revoke(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        lease = await s.grant(60)
        await s.put(b"o", b"v", lease=lease)
        await s.put(b"p", b"v", lease=lease)
        w = await s.watch(b"\x00", FROM_KEY)
        rev = await s.current_revision()
        await s.revoke(lease)
        assert await s.get(b"o") is None and await s.current_revision() == rev + 1
        assert [(e.type, e.kv.key, e.revision) for e in await take(w, 2)] == [
            (EventType.DELETE, b"o", rev + 1),
            (EventType.DELETE, b"p", rev + 1),
        ]
        with pytest.raises(LeaseNotFound):
            await s.revoke(lease)
        with pytest.raises(LeaseNotFound):
            await s.keepalive(lease)
        # An empty lease revokes without a revision.
        empty = await s.grant(60)
        await s.revoke(empty)
        assert await s.current_revision() == rev + 1

    backend.run(body)


def test_concurrent_keepalives(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        leases = [await s.grant(30) for _ in range(5)]
        gone = await s.grant(30)
        await s.revoke(gone)
        ttls = await asyncio.gather(*(s.keepalive(lease) for lease in leases * 4))
        assert all(ttl >= 30 for ttl in ttls)
        results = await asyncio.gather(*(s.keepalive(x) for x in [gone, *leases]), return_exceptions=True)
        assert isinstance(results[0], LeaseNotFound) and results[0].lease_id == gone
        assert all(isinstance(r, float) for r in results[1:])

    backend.run(body)


def test_put_moves_key_between_leases(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        short = await s.grant(1)
        long = await s.grant(60)
        await s.put(b"detached", b"1", lease=short)
        await s.put(b"detached", b"2")  # no lease: detached, survives
        await s.put(b"moved", b"1", lease=short)
        await s.put(b"moved", b"2", lease=long)
        await s.put(b"stays", b"1", lease=short)
        assert (await s.lease_info(short)).keys == [b"stays"]
        assert (await s.lease_info(long)).keys == [b"moved"]
        await backend.until_gone(s, b"stays")
        assert (await s.get(b"detached")) is not None
        moved = await s.get(b"moved")
        assert moved is not None and moved.lease == long
        await s.delete(b"moved")
        assert (await s.lease_info(long)).keys == []

    backend.run(body)


@pytest.mark.stores("lmdb")
def test_lease_deadlines_follow_the_clock(backend: StoreBackend) -> None:
    """LMDB with a manual clock: expiry and keepalive exactly at the TTL, nothing in between."""

    async def body(s: MetaStore) -> None:
        lease = await s.grant(0.6)
        await s.put(b"k", b"v", lease=lease)
        for _ in range(8):  # 0.8 s > TTL, kept alive
            await backend.pass_time(0.1)
            assert await s.keepalive(lease) == 0.6
        assert (await s.lease_info(lease)).remaining == pytest.approx(0.6)
        await backend.pass_time(0.59)
        assert await s.get(b"k") is not None
        assert (await s.lease_info(lease)).remaining == pytest.approx(0.01)
        await backend.pass_time(0.01)
        assert await s.get(b"k") is None
        with pytest.raises(LeaseNotFound):
            await s.keepalive(lease)

    backend.run(body)


@pytest.mark.stores("etcd")
def test_etcd_rounds_lease_ttls_up(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        lease = await s.grant(1.2)
        assert await s.keepalive(lease) == 2.0
        assert (await s.lease_info(lease)).granted_ttl == 2.0
        tiny = await s.grant(0.01)  # etcd's minimum here is 1 s (3/2 of a 100 ms election timeout)
        assert await s.keepalive(tiny) >= 1.0

    backend.run(body)


# ----------------------------------------------------------------------------- watches


def test_watch_replays_then_follows(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        base = await s.current_revision()
        await s.put(b"/db/a", b"1")  # +1
        await s.put(b"/other", b"x")  # +2
        await s.put(b"/db/a", b"2")  # +3
        await s.delete(b"/db/a")  # +4
        w = await s.watch_prefix(b"/db/", start_revision=base + 1, prev_kv=True)
        assert w.next_revision == base + 1
        past = await take(w, 3)
        assert kinds(past, base) == [("PUT", b"/db/a", 1), ("PUT", b"/db/a", 3), ("DELETE", b"/db/a", 4)]
        assert past[0].prev_kv is None and past[1].prev_kv is not None and past[1].prev_kv.value == b"1"
        assert past[2].kv == KeyValue(b"/db/a", b"", 0, base + 4, 0, 0) and past[2].prev_kv is not None
        assert past[2].prev_kv.key == b"/db/a"
        await nothing_more(w)
        # Live events, including a txn's events together at one revision; other keys filtered out.
        later = asyncio.ensure_future(take(w, 3))
        await asyncio.sleep(0.01)
        await s.put(b"/other", b"y")  # +5
        await s.txn([], [PutOp(b"/db/b", b"1"), PutOp(b"/db/c", b"1")])  # +6
        await s.put(b"/db/b", b"2")  # +7
        assert kinds(await later, base) == [("PUT", b"/db/b", 6), ("PUT", b"/db/c", 6), ("PUT", b"/db/b", 7)]
        assert w.next_revision == base + 8
        w.cancel()
        with pytest.raises(StopAsyncIteration):
            await w.__anext__()

    backend.run(body)


def test_watch_from_now_single_key_and_prev_kv_off(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        await s.put(b"k", b"old")
        async with await s.watch(b"k") as w:
            assert w.next_revision == await s.current_revision() + 1
            await s.put(b"k2", b"x")
            await s.put(b"k", b"new")
            (ev,) = await take(w, 1)
            assert ev.kv.value == b"new" and ev.prev_kv is None and ev.kv.key == b"k"
            await nothing_more(w)
        async with await s.watch(b"k", start_revision=0) as w0:  # 0 = now, as etcd
            await s.put(b"k", b"newer")
            assert (await take(w0, 1))[0].kv.value == b"newer"
        async with await s.watch(b"k", FROM_KEY) as w1:  # every key >= k
            await s.put(b"a", b"no")
            await s.put(b"kz", b"yes")
            assert (await take(w1, 1))[0].kv.key == b"kz"

    backend.run(body)


def test_many_watchers_all_see_everything(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        base = await s.current_revision()
        watches = [await s.watch_prefix(b"/") for _ in range(5)]
        readers = [asyncio.ensure_future(take(w, 50)) for w in watches]

        async def writer(i: int) -> None:
            for j in range(10):
                await s.put(b"/%d/%d" % (i, j), b"v")

        await asyncio.gather(*(writer(i) for i in range(5)))
        results = [await r for r in readers]
        revs = [[e.revision for e in evs] for evs in results]
        assert all(r == list(range(base + 1, base + 51)) for r in revs)

    backend.run(body)


def test_compaction(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        base = await s.current_revision()
        for i in range(10):
            await s.put(b"/k", b"%d" % i)  # base+1 .. base+10
        await s.compact(base + 5)  # history below base+5 goes; base+5 stays watchable
        with pytest.raises(CompactedError) as e:
            await (await s.watch_prefix(b"/", start_revision=base + 4)).__anext__()
        assert e.value.requested == base + 4 and e.value.oldest_revision == base + 5
        ok = await s.watch_prefix(b"/", start_revision=base + 5)
        assert [e.revision for e in await take(ok, 3)] == [base + 5, base + 6, base + 7]
        # Compacting again at or below the compaction revision, or in the future, is refused.
        with pytest.raises(CompactedError) as e:
            await s.compact(base + 5)
        assert e.value.oldest_revision == base + 5
        with pytest.raises(CompactedError):
            await s.compact(base + 3)
        with pytest.raises(InvalidRequest, match="future"):
            await s.compact(base + 1000)
        # Recovery: read the state, watch from its revision + 1.
        r = await s.range(b"/k")
        w = await s.watch_prefix(b"/", start_revision=r.revision + 1)
        await s.put(b"/k", b"x")
        assert (await take(w, 1))[0].revision == r.revision + 1
        # The current state is untouched.
        kv = await s.get(b"/k")
        assert kv is not None and kv.version == 11 and kv.create_revision == base + 1

    backend.run(body)


@pytest.mark.stores("lmdb")
def test_lmdb_history_limit_compacts(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
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
        ok = await s.watch_prefix(b"/", start_revision=4)
        assert [e.revision for e in await take(ok, 3)] == [4, 5, 6]
        with pytest.raises(CompactedError):
            await s.compact(4)
        await s.compact(5)
        with pytest.raises(CompactedError):
            await (await s.watch_prefix(b"/", start_revision=4)).__anext__()
        # Compacting at the current revision keeps only that revision watchable.
        now = await s.current_revision()
        await s.compact(now)
        w = await s.watch_prefix(b"/", start_revision=now + 1)
        await s.put(b"/k", b"after")
        assert (await take(w, 1))[0].revision == now + 1

    backend.run(body, history_limit=8)


def test_close_ends_watches_and_calls(backend: StoreBackend) -> None:
    async def body(first: MetaStore) -> None:
        await first.close()
        s = await backend.open()
        w = await s.watch_prefix(b"/")
        await s.put(b"/a", b"1")
        pending_w = await s.watch_prefix(b"/")
        pending = asyncio.ensure_future(pending_w.__anext__())
        await asyncio.sleep(0.01)
        # An event received before close is still delivered, then the watch reports the close.
        assert (await take(w, 1))[0].kv.key == b"/a"
        await s.close()
        with pytest.raises(MetaStoreClosed):
            await asyncio.wait_for(pending, 30)
        with pytest.raises(MetaStoreClosed):
            await w.__anext__()
        with pytest.raises(MetaStoreClosed):
            await s.put(b"a", b"b")
        with pytest.raises(MetaStoreClosed):
            await s.get(b"a")
        with pytest.raises(MetaStoreClosed):
            await s.grant(10)
        with pytest.raises(MetaStoreClosed):
            await s.watch(b"a")
        await s.close()  # idempotent

    backend.run(body)


# ----------------------------------------------------------------------------- LMDB only


@pytest.mark.stores("lmdb")
def test_cancelled_caller_still_commits_and_notifies(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        w = await s.watch(b"k")
        task = asyncio.ensure_future(s.put(b"k", b"v"))
        await asyncio.sleep(0)
        task.cancel()
        (ev,) = await take(w, 1)
        assert ev.kv.value == b"v"

    backend.run(body)


def test_lmdb_restart_keeps_data_revision_history_and_leases(tmp_path: Path) -> None:
    path = tmp_path / "meta.lmdb"
    clock = ManualClock()

    async def first() -> tuple[int, int, int]:
        s = await LmdbMetaStore.open(path, clock=clock)
        await s.put(b"/db/1", b"one")
        await s.put(b"/db/1", b"uno")
        long = await s.grant(60)
        short = await s.grant(0.5)
        await s.put(b"/nodes/a", b"up", lease=long)
        await s.put(b"/nodes/b", b"up", lease=short)
        rev = await s.current_revision()
        clock.advance(0.4)  # not expired yet; the restart gives it a fresh TTL anyway
        await s.close()
        return rev, long, short

    rev, long, short = asyncio.run(first())

    async def second() -> None:
        s = await LmdbMetaStore.open(path, clock=clock)
        try:
            # Leases come back with a fresh full TTL.
            assert (await s.lease_info(short)).keys == [b"/nodes/b"]
            assert (await s.lease_info(short)).remaining == pytest.approx(0.5)
            nodes = await s.watch_prefix(b"/nodes/")
            info = await s.lease_info(long)
            assert info.keys == [b"/nodes/a"] and info.remaining == pytest.approx(60)
            assert await s.current_revision() == rev
            assert await s.get(b"/db/1") == KeyValue(b"/db/1", b"uno", 2, 3, 2)
            assert await s.put(b"/db/2", b"two") == rev + 1
            w = await s.watch_prefix(b"/db/", start_revision=2)
            assert [e.kv.value for e in await take(w, 3)] == [b"one", b"uno", b"two"]
            # The short lease then expires here.
            clock.advance(0.5)
            assert await s.expire_leases() == 1
            (gone,) = await take(nodes, 1)
            assert gone.type is EventType.DELETE and gone.kv.key == b"/nodes/b"
            assert await s.get(b"/nodes/a") is not None
            assert await s.grant(1) not in (long, short)  # ids are never reused
        finally:
            await s.close()

    asyncio.run(second())


@pytest.mark.stores("lmdb")
def test_lmdb_second_open_is_refused(backend: StoreBackend) -> None:
    async def body(s: MetaStore) -> None:
        assert isinstance(s, LmdbMetaStore)
        with pytest.raises(MetaStoreError, match="already open"):
            await LmdbMetaStore.open(s.path)
        await s.put(b"k", b"v")

    backend.run(body)

    async def reopen() -> None:  # closing released the lock
        async with await LmdbMetaStore.open(backend.path) as s:
            assert await s.get(b"k") is not None

    asyncio.run(reopen())


def test_interface_is_abstract() -> None:
    with pytest.raises(TypeError):
        MetaStore()  # type: ignore[abstract]
