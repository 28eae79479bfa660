"""The embedded :class:`~clustermeta.metastore.MetaStore`: one LMDB file, for standalone mode.

Layout of the LMDB environment (one file, ``subdir=False``; named databases):

* ``kv``: user key → ``create_revision, mod_revision, version, lease`` (4 × u64 BE) + value.
* ``hist``: ``revision`` (u64 BE) + index in that revision (u32 BE) → an encoded event (type, key,
  new state, previous state). The last :attr:`LmdbMetaStore.history_limit` revisions are kept;
  older ones are compacted away as new revisions are written. Watches read from here.
* ``meta``: ``revision``, ``compact_revision`` (events at or below it are gone) and the next lease id.
* ``leases``: lease id (u64 BE) → granted TTL (f64). ``lease_keys``: lease id + key → ``b""``.

Every write is one LMDB write transaction committed with sync (metadata writes are rare, and a
write must survive power loss before its caller hears "ok"). Writes run one at a time on a single
worker thread so the fsync never stalls the event loop; reads are short read transactions on the
loop thread. Leases expire on a monotonic clock (``clock=``, :func:`time.monotonic` by default),
driven by a background asyncio task; their TTLs are not persisted as deadlines, so after a restart
every lease gets a fresh full TTL — the same as etcd after a leader change. Tests that inject a
manual clock advance it and call :meth:`LmdbMetaStore.expire_leases` to expire leases on the spot.
Unlike etcd, TTLs are kept as given (no rounding to whole seconds, no minimum).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import lmdb

from clustermeta.aio import cancel_and_wait
from clustermeta.metastore import (
    FROM_KEY,
    CompactedError,
    Compare,
    DeleteOp,
    DeleteResponse,
    EventType,
    InvalidRequest,
    KeyValue,
    LeaseInfo,
    LeaseNotFound,
    MetaStore,
    MetaStoreClosed,
    MetaStoreError,
    Op,
    OpResponse,
    PutOp,
    PutResponse,
    RangeOp,
    RangeResponse,
    TxnResponse,
    Watch,
    WatchEvent,
    check_compact_revision,
    check_range,
    check_start_revision,
    check_ttl,
    check_txn,
    key_in_range,
)

__all__ = ["LmdbMetaStore", "DEFAULT_HISTORY_LIMIT"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Revisions of watch history retained by default.
DEFAULT_HISTORY_LIMIT = 10_000
# Events decoded per wake-up of one watch, so a long replay yields to the loop between batches.
_WATCH_BATCH = 512

_KV_HEAD = struct.Struct(">QQQQ")  # create_revision, mod_revision, version, lease
_U64 = struct.Struct(">Q")
_HIST_KEY = struct.Struct(">QI")  # revision, index within the revision
_EVENT_HEAD = struct.Struct(">BBHI")  # type (0 put, 1 delete), has_prev, key length, new-record length
_F64 = struct.Struct(">d")
_REVISION = b"revision"
_COMPACT = b"compact_revision"
_NEXT_LEASE = b"next_lease"


def _enc_kv(kv: KeyValue) -> bytes:
    return _KV_HEAD.pack(kv.create_revision, kv.mod_revision, kv.version, kv.lease) + kv.value


def _dec_kv(key: bytes, rec: bytes | memoryview) -> KeyValue:
    create, mod, version, lease = _KV_HEAD.unpack_from(rec)
    return KeyValue(key, bytes(rec[_KV_HEAD.size :]), create, mod, version, lease)


def _enc_event(ev: WatchEvent) -> bytes:
    new = _enc_kv(ev.kv) if ev.type is EventType.PUT else b""
    prev = _enc_kv(ev.prev_kv) if ev.prev_kv is not None else b""
    head = _EVENT_HEAD.pack(ev.type is EventType.DELETE, ev.prev_kv is not None, len(ev.kv.key), len(new))
    return head + ev.kv.key + new + prev


def _event_key(buf: bytes) -> bytes:
    _, _, klen, _ = _EVENT_HEAD.unpack_from(buf)
    return bytes(buf[_EVENT_HEAD.size : _EVENT_HEAD.size + klen])


def _dec_event(buf: bytes, revision: int) -> WatchEvent:
    is_delete, has_prev, klen, nlen = _EVENT_HEAD.unpack_from(buf)
    pos = _EVENT_HEAD.size
    key = bytes(buf[pos : pos + klen])
    pos += klen
    prev = _dec_kv(key, buf[pos + nlen :]) if has_prev else None
    if is_delete:
        return WatchEvent(EventType.DELETE, KeyValue(key, b"", 0, revision, 0, 0), prev)
    return WatchEvent(EventType.PUT, _dec_kv(key, buf[pos : pos + nlen]), prev)


def _get_u64(txn: lmdb.Transaction, db: Any, key: bytes, default: int) -> int:
    raw = txn.get(key, db=db)
    return default if raw is None else _U64.unpack(raw)[0]


def _lock_owner(path: str) -> int:
    """Take an exclusive ``flock`` on the data file: lease deadlines and the write path live in one
    process, so a second opener (another process, or this one twice) must fail, not corrupt leases."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MetaStoreError(f"metadata store {path} is already open (in this or another process)") from None
    return fd


class _Write:
    """One write transaction: applies ops at ``revision + 1`` and records the events."""

    def __init__(self, store: LmdbMetaStore, txn: lmdb.Transaction) -> None:
        self.s = store
        self.txn = txn
        self.base = _get_u64(txn, store._meta, _REVISION, 1)
        self.events: list[WatchEvent] = []

    @property
    def revision(self) -> int:
        return self.base + 1 if self.events else self.base

    def get(self, key: bytes) -> KeyValue | None:
        rec = self.txn.get(key, db=self.s._kv)
        return None if rec is None else _dec_kv(key, rec)

    def range(self, op: RangeOp) -> RangeResponse:
        kvs, count = self.s._scan(self.txn, op.key, op.end, op.limit)
        return RangeResponse(kvs, count, op.limit > 0 and count > len(kvs), self.revision)

    def put(self, op: PutOp) -> PutResponse:
        if op.lease and self.txn.get(_U64.pack(op.lease), db=self.s._leases) is None:
            raise LeaseNotFound(op.lease)
        rev = self.base + 1
        prev = self.get(op.key)
        if prev is None:
            kv = KeyValue(op.key, op.value, rev, rev, 1, op.lease)
        else:
            kv = KeyValue(op.key, op.value, prev.create_revision, rev, prev.version + 1, op.lease)
            if prev.lease and prev.lease != op.lease:
                self.txn.delete(_U64.pack(prev.lease) + op.key, db=self.s._lease_keys)
        if op.lease and (prev is None or prev.lease != op.lease):
            self.txn.put(_U64.pack(op.lease) + op.key, b"", db=self.s._lease_keys)
        self.txn.put(op.key, _enc_kv(kv), db=self.s._kv)
        self.events.append(WatchEvent(EventType.PUT, kv, prev))
        return PutResponse(rev, prev if op.prev_kv else None)

    def delete_keys(self, keys: Sequence[bytes]) -> list[KeyValue]:
        rev = self.base + 1
        gone: list[KeyValue] = []
        for key in keys:
            prev = self.get(key)
            if prev is None:
                continue
            self.txn.delete(key, db=self.s._kv)
            if prev.lease:
                self.txn.delete(_U64.pack(prev.lease) + key, db=self.s._lease_keys)
            self.events.append(WatchEvent(EventType.DELETE, KeyValue(key, b"", 0, rev, 0, 0), prev))
            gone.append(prev)
        return gone

    def delete(self, op: DeleteOp) -> DeleteResponse:
        kvs, _ = self.s._scan(self.txn, op.key, op.end, 0)
        gone = self.delete_keys([kv.key for kv in kvs])
        return DeleteResponse(len(gone), self.revision, gone if op.prev_kv else [])

    def apply(self, op: Op) -> OpResponse:
        if isinstance(op, PutOp):
            return self.put(op)
        if isinstance(op, DeleteOp):
            return self.delete(op)
        return self.range(op)

    def finish(self) -> None:
        """Persist the new revision and its events, and compact history past the limit."""
        if not self.events:
            return
        rev = self.base + 1
        txn, hist = self.txn, self.s._hist
        for i, ev in enumerate(self.events):
            txn.put(_HIST_KEY.pack(rev, i), _enc_event(ev), db=hist)
        txn.put(_REVISION, _U64.pack(rev), db=self.s._meta)
        compact = _get_u64(txn, self.s._meta, _COMPACT, 0)
        if rev - compact > self.s.history_limit:
            self.s._compact_in(txn, rev - self.s.history_limit)


class _LmdbWatch(Watch):
    def __init__(
        self,
        store: LmdbMetaStore,
        key: bytes,
        end: bytes | None,
        next_revision: int,
        prev_kv: bool,
    ) -> None:
        self._store = store
        self._key = key
        self._end = end
        self._next = next_revision
        self._prev_kv = prev_kv
        self._buffer: deque[WatchEvent] = deque()
        self._done = False

    @property
    def next_revision(self) -> int:
        return self._buffer[0].revision if self._buffer else self._next

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._store._notify()

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._done:
                raise StopAsyncIteration
            if self._store._closed:
                self._done = True
                raise MetaStoreClosed("the metadata store was closed")
            wake = self._store._changed  # taken before reading, so no commit can slip between
            try:
                self._fill()
            except CompactedError:
                self.cancel()
                raise
            if not self._buffer:
                await wake.wait()

    def _fill(self) -> None:
        s = self._store
        with s._env.begin() as txn:
            compact = _get_u64(txn, s._meta, _COMPACT, 0)
            if self._next <= compact:
                raise CompactedError(self._next, compact + 1)
            cur = txn.cursor(db=s._hist)
            if not cur.set_range(_HIST_KEY.pack(self._next, 0)):
                return
            for n, (hkey, buf) in enumerate(cur):
                rev, _ = _HIST_KEY.unpack(hkey)
                if n >= _WATCH_BATCH and rev >= self._next:
                    break  # only at a revision boundary, so every revision is delivered whole
                self._next = rev + 1
                if key_in_range(_event_key(buf), self._key, self._end):
                    ev = _dec_event(buf, rev)
                    if not self._prev_kv and ev.prev_kv is not None:
                        ev = WatchEvent(ev.type, ev.kv, None)
                    self._buffer.append(ev)


class LmdbMetaStore(MetaStore):
    """The embedded metadata store. Create with ``await LmdbMetaStore.open(path)``.

    ``path`` is the LMDB data file (a ``-lock`` file sits next to it). ``history_limit`` is the
    number of revisions of watch history kept; a watch from an older revision, or a watcher that
    falls further behind, gets :class:`~clustermeta.metastore.CompactedError`. ``clock`` gives
    the lease deadlines (seconds, monotonic).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        history_limit: int,
        map_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be >= 1")
        self.path = os.fspath(path)
        self.history_limit = history_limit
        self._clock = clock
        self._owner_fd = _lock_owner(self.path)
        try:
            self._env = lmdb.open(
                self.path,
                subdir=False,
                max_dbs=8,
                map_size=map_size,
                sync=True,
                metasync=True,
                readahead=False,
            )
        except BaseException:
            os.close(self._owner_fd)
            raise
        self._kv = self._env.open_db(b"kv")
        self._hist = self._env.open_db(b"hist")
        self._meta = self._env.open_db(b"meta")
        self._leases = self._env.open_db(b"leases")
        self._lease_keys = self._env.open_db(b"lease_keys")
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metastore-writer")
        self._write_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._closed = False
        # Lease deadlines on the monotonic clock; the persistent truth is the ``leases`` table.
        self._lease_ttl: dict[int, float] = {}
        self._lease_deadline: dict[int, float] = {}
        self._lease_wakeup = asyncio.Event()
        # The store's revision, kept in memory: every write goes through _in_txn in this process
        # (the flock above), and every HTTP request asks for it (controlplane/core.py's cache).
        with self._env.begin() as txn:
            self._revision = _get_u64(txn, self._meta, _REVISION, 1)
        self._expiry_lock = asyncio.Lock()  # one expiry pass at a time (reaper or a test's call)
        self._reaper: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        map_size: int = 1 << 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> LmdbMetaStore:
        """Open (or create) the store at ``path`` and start lease expiry. Must run inside a loop.

        ``clock`` (default :func:`time.monotonic`) gives lease deadlines; a test passes a manual
        clock, advances it and calls :meth:`expire_leases`.
        """
        store = cls(path, history_limit=history_limit, map_size=map_size, clock=clock)
        now = clock()
        with store._env.begin() as txn:
            for raw_id, raw_ttl in txn.cursor(db=store._leases):
                (lease_id,), (ttl,) = _U64.unpack(raw_id), _F64.unpack(raw_ttl)
                store._lease_ttl[lease_id] = ttl
                store._lease_deadline[lease_id] = now + ttl
        store._reaper = asyncio.create_task(store._expire_leases(), name=f"metastore-leases:{store.path}")
        return store

    # -- plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise MetaStoreClosed("the metadata store is closed")

    def _notify(self) -> None:
        wake, self._changed = self._changed, asyncio.Event()
        wake.set()

    async def _write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in a write transaction on the writer thread, then wake the watches.

        The commit and the wake-up run as one shielded task: a caller cancelled mid-write cannot
        leave a committed revision unannounced.
        """
        self._check_open()

        async def run() -> T:
            async with self._write_lock:
                self._check_open()  # closed while this write waited for the lock
                loop = asyncio.get_running_loop()
                try:
                    return await loop.run_in_executor(self._executor, self._in_txn, fn)
                finally:
                    self._notify()

        return await asyncio.shield(asyncio.ensure_future(run()))

    def _in_txn(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        with self._env.begin(write=True) as txn:
            result = fn(txn)
            revision = _get_u64(txn, self._meta, _REVISION, 1)
        self._revision = revision  # committed: the with block did not raise
        return result

    def _scan(
        self, txn: lmdb.Transaction, key: bytes, end: bytes | None, limit: int
    ) -> tuple[list[KeyValue], int]:
        """``(first `limit` kvs, total count)`` of ``[key, end)``."""
        if end is None:
            rec = txn.get(key, db=self._kv)
            return ([] if rec is None else [_dec_kv(key, rec)]), (0 if rec is None else 1)
        kvs: list[KeyValue] = []
        count = 0
        cur = txn.cursor(db=self._kv)
        if not cur.set_range(key):
            return kvs, 0
        for raw_key, rec in cur:
            k = bytes(raw_key)
            if end != FROM_KEY and k >= end:
                break
            count += 1
            if not limit or count <= limit:
                kvs.append(_dec_kv(k, rec))
        return kvs, count

    def _compact_in(self, txn: lmdb.Transaction, revision: int) -> None:
        cur = txn.cursor(db=self._hist)
        if cur.first():
            # Deleting the last entry leaves the cursor unpositioned (an empty key): all gone.
            while (key := cur.key()) and _HIST_KEY.unpack(key)[0] <= revision:
                if not cur.delete():
                    break
        txn.put(_COMPACT, _U64.pack(revision), db=self._meta)

    # -- KV

    async def current_revision(self) -> int:
        self._check_open()
        return self._revision

    async def range(self, key: bytes, end: bytes | None = None, *, limit: int = 0) -> RangeResponse:
        self._check_open()
        check_range(key, end)
        if limit < 0:
            raise InvalidRequest("limit must be >= 0")
        with self._env.begin() as txn:
            kvs, count = self._scan(txn, key, end, limit)
            return RangeResponse(
                kvs, count, limit > 0 and count > len(kvs), _get_u64(txn, self._meta, _REVISION, 1)
            )

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        resp = await self.txn([], [PutOp(key, value, lease=lease)])
        return resp.revision

    async def delete(self, key: bytes, end: bytes | None = None, *, prev_kv: bool = False) -> DeleteResponse:
        resp = await self.txn([], [DeleteOp(key, end, prev_kv=prev_kv)])
        out = resp.responses[0]
        assert isinstance(out, DeleteResponse)
        return out

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op] = (), failure: Sequence[Op] = ()
    ) -> TxnResponse:
        check_txn(compares, success, failure)

        def apply(txn: lmdb.Transaction) -> TxnResponse:
            w = _Write(self, txn)
            ok = all(c.evaluate(w.get(c.key)) for c in compares)
            responses = [w.apply(op) for op in (success if ok else failure)]
            w.finish()
            return TxnResponse(ok, responses, w.revision)

        return await self._write(apply)

    async def compact(self, revision: int) -> None:
        # As etcd: history *below* ``revision`` goes; ``revision`` itself stays watchable, and
        # compacting at or below the last compaction revision (oldest watchable) is an error.
        check_compact_revision(revision)

        def apply(txn: lmdb.Transaction) -> None:
            current = _get_u64(txn, self._meta, _REVISION, 1)
            compacted = _get_u64(txn, self._meta, _COMPACT, 0)
            if revision > current:
                raise InvalidRequest(f"cannot compact at {revision}: it is a future revision (now {current})")
            if compacted and revision <= compacted + 1:
                raise CompactedError(revision, compacted + 1)
            self._compact_in(txn, revision - 1)

        await self._write(apply)

    # -- leases

    async def grant(self, ttl: float) -> int:
        check_ttl(ttl)

        def apply(txn: lmdb.Transaction) -> int:
            lease_id = _get_u64(txn, self._meta, _NEXT_LEASE, 1)
            txn.put(_NEXT_LEASE, _U64.pack(lease_id + 1), db=self._meta)
            txn.put(_U64.pack(lease_id), _F64.pack(float(ttl)), db=self._leases)
            return lease_id

        lease_id = await self._write(apply)
        self._lease_ttl[lease_id] = float(ttl)
        self._lease_deadline[lease_id] = self._clock() + ttl
        self._lease_wakeup.set()
        return lease_id

    def _live_ttl(self, lease_id: int) -> float:
        deadline = self._lease_deadline.get(lease_id)
        if deadline is None:
            raise LeaseNotFound(lease_id)
        if deadline <= self._clock():
            self._lease_wakeup.set()  # overdue: let the reaper delete it now
            raise LeaseNotFound(lease_id)
        return self._lease_ttl[lease_id]

    async def keepalive(self, lease_id: int) -> float:
        self._check_open()
        ttl = self._live_ttl(lease_id)
        self._lease_deadline[lease_id] = self._clock() + ttl
        return ttl

    async def revoke(self, lease_id: int) -> None:
        self._check_open()
        self._live_ttl(lease_id)
        self._lease_deadline.pop(lease_id, None)
        self._lease_ttl.pop(lease_id, None)
        await self._revoke(lease_id)

    async def _revoke(self, lease_id: int) -> None:
        def apply(txn: lmdb.Transaction) -> None:
            w = _Write(self, txn)
            w.delete_keys(self._keys_of_lease(txn, lease_id))  # also drops their lease_keys entries
            txn.delete(_U64.pack(lease_id), db=self._leases)
            w.finish()

        await self._write(apply)

    async def lease_info(self, lease_id: int) -> LeaseInfo:
        self._check_open()
        ttl = self._live_ttl(lease_id)
        with self._env.begin() as txn:
            keys = self._keys_of_lease(txn, lease_id)
        remaining = max(0.0, self._lease_deadline[lease_id] - self._clock())
        return LeaseInfo(lease_id, ttl, remaining, keys)

    def _keys_of_lease(self, txn: lmdb.Transaction, lease_id: int) -> list[bytes]:
        prefix = _U64.pack(lease_id)
        keys: list[bytes] = []
        cur = txn.cursor(db=self._lease_keys)
        if cur.set_range(prefix):
            for raw in cur.iternext(values=False):
                k = bytes(raw)
                if not k.startswith(prefix):
                    break
                keys.append(k[len(prefix) :])
        return keys

    async def expire_leases(self) -> int:
        """Revoke every lease whose deadline has passed on the store's clock; returns how many.

        The background task calls this when the earliest deadline comes; a test with a manual
        clock calls it after advancing the clock. Each expired lease deletes its keys in one
        revision. Waits for an expiry pass already under way, so on return every lease that was
        due has been revoked.
        """
        self._check_open()
        async with self._expiry_lock:
            now = self._clock()
            expired = [lid for lid, deadline in self._lease_deadline.items() if deadline <= now]
            for lease_id in expired:
                self._lease_deadline.pop(lease_id, None)
                ttl = self._lease_ttl.pop(lease_id, 0.0)
                try:
                    await self._revoke(lease_id)
                except MetaStoreClosed:
                    raise
                except Exception:  # the lease is still in the table: retry in a second
                    log.exception("metastore: revoking expired lease %#x failed; retrying", lease_id)
                    self._lease_ttl[lease_id] = ttl
                    self._lease_deadline[lease_id] = self._clock() + 1.0
            return len(expired)

    async def _expire_leases(self) -> None:
        """Background task: expire leases as their deadlines come."""
        while not self._closed:
            self._lease_wakeup.clear()
            try:
                if await self.expire_leases():
                    continue
            except MetaStoreClosed:
                return
            now = self._clock()
            timeout = min(self._lease_deadline.values(), default=now + 3600.0) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lease_wakeup.wait(), timeout=max(timeout, 0.0))

    # -- watches

    async def watch(
        self,
        key: bytes,
        end: bytes | None = None,
        *,
        start_revision: int | None = None,
        prev_kv: bool = False,
    ) -> Watch:
        self._check_open()
        check_range(key, end)
        check_start_revision(start_revision)
        if not start_revision:  # None or 0: from now on, as etcd
            start_revision = await self.current_revision() + 1
        return _LmdbWatch(self, key, end, start_revision, prev_kv)

    # -- lifecycle

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            await cancel_and_wait(self._reaper)
        async with self._write_lock:  # let an in-flight write finish
            pass
        self._notify()
        self._executor.shutdown(wait=True)
        self._env.close()
        os.close(self._owner_fd)  # releases the flock
