"""clustermeta.metastore_etcd against a real etcd: what the conformance suite cannot show —
key prefixes, endpoints, and behaviour while etcd dies, hangs, restarts or compacts behind a
watch's back (each such test runs its own etcd)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from clustermeta.metastore import (
    FROM_KEY,
    CompactedError,
    EventType,
    MetaStoreUnavailable,
    PutOp,
    RangeOp,
    RangeResponse,
    Watch,
    WatchEvent,
    key_absent,
)
from clustermeta.metastore_etcd import EtcdConfig, EtcdMetaStore, parse_endpoints
from orrery.cluster_local import owns_listener
from tests.controlplane.stores import EVENTUALLY, revoke_all_leases
from tests.etcd_harness import EtcdError, EtcdServer, free_port

T = TypeVar("T")


async def take(watch: Watch, n: int, timeout: float = EVENTUALLY) -> list[WatchEvent]:
    return [await asyncio.wait_for(watch.__anext__(), timeout) for _ in range(n)]


async def nothing_more(watch: Watch, wait: float = 0.1) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(watch.__anext__(), wait)


async def eventually(call: Callable[[], Awaitable[T]]) -> T:
    """Retry ``call`` while etcd is unavailable (e.g. coming back up); bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENTUALLY
    while True:
        try:
            return await call()
        except MetaStoreUnavailable:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


def run(body: Callable[[], Awaitable[None]], timeout: float = 120.0) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


# ----------------------------------------------------------------------------- configuration


def test_parse_endpoints() -> None:
    assert parse_endpoints("127.0.0.1:2379") == ("127.0.0.1:2379",)
    assert parse_endpoints(" http://10.0.0.1:2379/, 10.0.0.2:2379 ,") == ("10.0.0.1:2379", "10.0.0.2:2379")
    assert parse_endpoints(["etcd:2379"]) == ("etcd:2379",)
    for bad in ("", "host", "host:port", "https://10.0.0.1:2379", ":2379"):
        with pytest.raises(ValueError):
            parse_endpoints(bad)
    with pytest.raises(ValueError, match="IP addresses"):
        EtcdMetaStore(EtcdConfig(("etcd-0:2379", "etcd-1:2379")))
    with pytest.raises(ValueError):
        EtcdConfig(("127.0.0.1:2379",), timeout=0)


def test_several_endpoints_fail_over(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        dead = f"127.0.0.1:{free_port()}"
        async with await EtcdMetaStore.open(f"{dead},{etcd_server.endpoints}", prefix=b"/eps/") as s:
            rev = await s.put(b"k", b"v")
            assert (await s.range(b"k")).revision == rev

    run(body)


def test_open_fails_fast_when_nothing_listens() -> None:
    async def body() -> None:
        with pytest.raises(MetaStoreUnavailable, match="127.0.0.1"):
            await asyncio.wait_for(EtcdMetaStore.open(f"127.0.0.1:{free_port()}", timeout=2), EVENTUALLY)

    run(body)


# ----------------------------------------------------------------------------- key prefixes


def test_the_harness_does_not_take_another_etcd_on_its_port_for_its_own(
    private_etcd: EtcdServer, tmp_path: Path
) -> None:
    # Two test workers can pick the same free port; the second etcd then cannot bind it, and the
    # first one's /health must not pass for the second's (its tests would pause the wrong etcd).
    other = EtcdServer(
        tmp_path / "other-data",
        tmp_path / "other.log",
        client_port=private_etcd.client_port,
        peer_port=free_port(),
        name="other",
        start_timeout=10,
    )
    with pytest.raises(EtcdError, match="exited"):
        other.restart()
    assert not other.running and private_etcd.running


def test_prefixes_isolate_clusters(etcd_server: EtcdServer) -> None:
    async def body() -> None:
        a = await EtcdMetaStore.open(etcd_server.endpoints, prefix=b"/iso/a/")
        b = await EtcdMetaStore.open(etcd_server.endpoints, prefix="/iso/b/")
        raw = await EtcdMetaStore.open(etcd_server.endpoints)
        try:
            wa = await a.watch(b"\x00", FROM_KEY, prev_kv=True)
            lease = await a.grant(60)
            await a.put(b"k", b"a1", lease=lease)
            await b.put(b"k", b"b1", lease=lease)  # leases are global: b may use a's lease
            await b.put(b"\xff", b"b2")
            await a.put(b"k", b"a2", lease=lease)
            assert (await a.get(b"k")) is not None and (await a.get(b"k")).value == b"a2"  # type: ignore[union-attr]
            assert [kv.key for kv in (await a.range(b"\x00", FROM_KEY)).kvs] == [b"k"]
            assert [kv.key for kv in (await b.range(b"\x00", FROM_KEY)).kvs] == [b"k", b"\xff"]
            # The raw (unprefixed) view shows where the keys really are.
            assert [kv.key for kv in (await raw.get_prefix(b"/iso/")).kvs] == [b"/iso/a/k", b"/iso/b/k", b"/iso/b/\xff"]
            # Each prefix sees only its own keys of the shared lease.
            assert (await a.lease_info(lease)).keys == [b"k"]
            assert (await b.lease_info(lease)).keys == [b"k"]
            assert sorted((await raw.lease_info(lease)).keys) == [b"/iso/a/k", b"/iso/b/k"]
            # Compares and txn responses use the store's own keys.
            t = await a.txn([key_absent(b"k")], [PutOp(b"k", b"x")], [RangeOp(b"k")])
            assert not t.succeeded
            rng = t.responses[0]
            assert isinstance(rng, RangeResponse) and rng.kvs[0].key == b"k"
            # A FROM_KEY delete stays inside the prefix.
            d = await a.delete(b"\x00", FROM_KEY, prev_kv=True)
            assert d.deleted == 1 and [kv.key for kv in d.prev_kvs] == [b"k"]
            assert (await b.range(b"\x00", FROM_KEY)).count == 2
            # a's watch saw only a's changes, keys unprefixed, prev_kv too.
            events = await take(wa, 3)
            assert [(e.type, e.kv.key) for e in events] == [
                (EventType.PUT, b"k"),
                (EventType.PUT, b"k"),
                (EventType.DELETE, b"k"),
            ]
            assert events[1].prev_kv is not None and events[1].prev_kv.key == b"k"
            await nothing_more(wa)
            await raw.delete_prefix(b"/iso/")
        finally:
            for s in (a, b, raw):
                await s.close()
            await revoke_all_leases(etcd_server.endpoints)

    run(body)


# ----------------------------------------------------------------------------- faults


def test_watch_resumes_exactly_once_across_etcd_restarts(private_etcd: EtcdServer) -> None:
    async def body() -> None:
        s = await EtcdMetaStore.open(private_etcd.endpoints, prefix=b"/r/", watch_backoff_max=0.2)
        try:
            w = await s.watch_prefix(b"/k/", prev_kv=True)
            revs = [await s.put(b"/k/%d" % i, b"v%d" % i) for i in range(3)]
            assert [e.revision for e in await take(w, 1)] == revs[:1]  # two left in the buffer
            expected = revs[1:]
            for round_ in range(3):
                if round_ == 1:
                    private_etcd.stop()  # SIGTERM
                    private_etcd.restart()
                else:
                    private_etcd.kill()  # SIGKILL
                    private_etcd.restart()
                # Written as soon as etcd answers: before or after the watch is back, it must arrive once.
                await eventually(s.current_revision)
                expected.append(await s.put(b"/k/r%d" % round_, b"x"))
                expected.append((await s.delete(b"/k/%d" % round_)).revision)
            events = await take(w, len(expected))
            assert [e.revision for e in events] == expected
            assert [e.type for e in events[-2:]] == [EventType.PUT, EventType.DELETE]
            assert events[-1].prev_kv is not None and events[-1].prev_kv.key == b"/k/2"
            await nothing_more(w)
            assert w.next_revision == expected[-1] + 1
            assert getattr(w, "resumes", 0) >= 1
        finally:
            await s.close()

    run(body)


def test_watch_reports_compaction_of_its_resume_point(private_etcd: EtcdServer, tmp_path: Path) -> None:
    async def body() -> None:
        s = await EtcdMetaStore.open(private_etcd.endpoints, prefix=b"/c/", watch_backoff_max=0.2)
        try:
            w = await s.watch_prefix(b"/k/")
            first = await s.put(b"/k/1", b"a")
            # Cut the watch off: etcd moves to another client port, where another client writes
            # and compacts; then etcd comes back where the watch looks for it.
            private_etcd.restart(client_port=free_port())
            other = await EtcdMetaStore.open(f"127.0.0.1:{private_etcd.serving_port}", prefix=b"/c/")
            missed = await other.put(b"/k/2", b"b")
            last = await other.put(b"/k/3", b"c")
            await other.compact(last)
            await other.close()
            private_etcd.restart()
            # Received before the outage: delivered. Then the gap is reported, once.
            assert [e.revision for e in await take(w, 1)] == [first]
            with pytest.raises(CompactedError) as e:
                await asyncio.wait_for(w.__anext__(), EVENTUALLY)
            assert e.value.requested == missed and e.value.oldest_revision == last
            with pytest.raises(StopAsyncIteration):
                await w.__anext__()
            # Recovery as documented: re-read, re-watch from its revision + 1.
            r = await eventually(lambda: s.get_prefix(b"/k/"))
            assert [kv.value for kv in r.kvs] == [b"a", b"b", b"c"]
            w2 = await s.watch_prefix(b"/k/", start_revision=r.revision + 1)
            rev = await s.put(b"/k/4", b"d")
            assert [e.revision for e in await take(w2, 1)] == [rev]
        finally:
            await s.close()

    run(body)


def test_calls_fail_fast_while_etcd_is_down_and_work_again_after(private_etcd: EtcdServer) -> None:
    async def body() -> None:
        s = await EtcdMetaStore.open(private_etcd.endpoints, prefix=b"/d/", timeout=2)
        try:
            lease = await s.grant(60)
            await s.put(b"k", b"v", lease=lease)
            w = await s.watch(b"k")
            private_etcd.kill()
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: s.put(b"k", b"v2"),
                lambda: s.get(b"k"),
                lambda: s.delete(b"k"),
                lambda: s.txn([key_absent(b"k")], [PutOp(b"k", b"v")]),
                lambda: s.grant(10),
                lambda: s.keepalive(lease),
                lambda: s.lease_info(lease),
                lambda: s.revoke(lease),
                lambda: s.compact(1),
                lambda: s.watch(b"k"),
                s.current_revision,
            ]
            for call in calls:
                with pytest.raises(MetaStoreUnavailable):
                    await asyncio.wait_for(call(), EVENTUALLY)
            private_etcd.restart()
            # The same client works again, the lease survived the restart (etcd restores it with a
            # fresh TTL), and the open watch carries on.
            kv = await eventually(lambda: s.get(b"k"))
            assert kv is not None and kv.lease == lease
            assert await eventually(lambda: s.keepalive(lease)) >= 60
            rev = await s.put(b"k", b"v3", lease=lease)
            assert [e.revision for e in await take(w, 1)] == [rev]
        finally:
            await s.close()

    run(body)


def test_calls_to_a_hung_etcd_hit_their_deadline(private_etcd: EtcdServer) -> None:
    async def body() -> None:
        s = await EtcdMetaStore.open(private_etcd.endpoints, prefix=b"/p/", timeout=0.5)
        try:
            lease = await s.grant(60)
            w = await s.watch(b"k")
            private_etcd.pause()
            try:
                calls = {
                    "put": lambda: s.put(b"k", b"maybe"), "keepalive": lambda: s.keepalive(lease),
                    "watch": lambda: s.watch(b"j"),
                }  # fmt: skip
                for what, call in calls.items():
                    try:
                        answer = await asyncio.wait_for(call(), EVENTUALLY)
                    except MetaStoreUnavailable as e:
                        assert "did not" in str(e), (what, e)
                    else:  # say everything that could explain it (seen once under xdist, cause unknown)
                        listeners = _listening_on(private_etcd.client_port)
                        pytest.fail(f"{what} answered {answer!r} while etcd (pid {private_etcd.proc.pid if private_etcd.proc else None}) "
                                    f"was stopped; processes listening on its port: {listeners}")  # fmt: skip
            finally:
                private_etcd.resume()
            rev = await eventually(lambda: s.put(b"k", b"v"))
            # A put that hit its deadline may still have been applied once etcd woke up
            # (MetaStoreUnavailable means "maybe"), and so may an attempt of "v" that was retried
            # — in either order, since a retried call may travel on a new connection. The watch
            # shows each applied put once, in revision order, and "v" at ``rev`` among them.
            events: list[WatchEvent] = []
            while len(events) < 5:
                try:
                    events += await take(w, 1, timeout=EVENTUALLY if not events else 0.5)
                except TimeoutError:
                    break
            assert [e.revision for e in events] == sorted({e.revision for e in events})
            assert {e.kv.value for e in events} <= {b"maybe", b"v"}
            assert [e.kv.value for e in events if e.revision == rev] == [b"v"]
            assert sum(e.kv.value == b"maybe" for e in events) <= 1
            assert await eventually(lambda: s.keepalive(lease)) >= 60
        finally:
            await s.close()

    run(body)


def _listening_on(port: int) -> list[int]:
    """The processes holding a socket that listens on ``port`` (from /proc; for diagnostics)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                if owns_listener(int(entry.name), f"127.0.0.1:{port}"):
                    pids.append(int(entry.name))
    return pids
