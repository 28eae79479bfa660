"""The :class:`~clustermeta.metastore.MetaStore` on a real etcd (v3 API, etcd 3.4), for cluster mode.

Built on the ``aetcd`` package's generated etcd v3 stubs (``aetcd.rpc``: protobuf-7 compatible,
PLATFORM.md §1) over one ``grpc.aio`` channel of our own. aetcd's high-level ``Client`` is not used:
its range has no ``limit``, its lease refresh opens a new stream per call, and its watcher
multiplexes every watch on one stream that ends for good on the first connection error. The
mapping of each method to its etcd call is the table in :mod:`clustermeta.metastore`.

Behaviour specific to this implementation:

* **Endpoints**: ``"host:port"`` or several, comma-separated (``"10.0.0.1:2379,10.0.0.2:2379"``,
  an ``http://`` scheme is accepted and dropped). Several endpoints must be IP addresses; gRPC's
  ``pick_first`` then fails over between them. One DNS name that resolves to every member works too.
* **Key prefix** (``prefix=b"/cluster-a/"``): every key is stored as ``prefix + key`` and comes back
  without it — in ranges, txn responses, watch events, ``prev_kv`` and lease key lists — so several
  clusters (or tests) share one etcd. ``FROM_KEY`` ranges stop at the end of the prefix. Revisions
  and lease ids are etcd's own and are shared by everything in that etcd.
* **Deadlines**: every unary call carries ``timeout`` (:class:`EtcdConfig`) as its gRPC deadline,
  and so do creating a watch and each keepalive round trip. A dead or hung etcd gives
  :class:`~clustermeta.metastore.MetaStoreUnavailable`, never a hang.
* **Leases**: TTLs are rounded up to whole seconds and etcd raises them to its minimum
  (``3/2 × election timeout``, at least 1 s); :meth:`EtcdMetaStore.keepalive` and ``lease_info``
  report the TTL etcd granted. Keepalives share one persistent ``LeaseKeepAlive`` stream,
  reopened after an error.
* **Watches resume**: each watch has its own gRPC ``Watch`` stream. When it breaks (etcd restarted,
  connection reset, keepalive ping timeout) the watch re-subscribes by itself from its last
  *received* revision + 1, backing off from ``watch_backoff_min`` to ``watch_backoff_max`` between
  attempts, for as long as it takes (the consumer may cancel). etcd never splits a revision
  across watch responses, so every event reaches the consumer exactly once and in order. If the
  resume point was compacted meanwhile, the consumer gets every event received before, then
  :class:`~clustermeta.metastore.CompactedError` carrying etcd's compaction revision (the oldest
  one that can still be watched); re-read the range and watch from its revision + 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from clustermeta.aio import cancel_and_wait
from clustermeta.metastore import (
    FROM_KEY,
    CompactedError,
    Compare,
    CompareOp,
    CompareTarget,
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
    MetaStoreUnavailable,
    Op,
    OpResponse,
    PutOp,
    PutResponse,
    RangeResponse,
    TxnResponse,
    Watch,
    WatchEvent,
    check_compact_revision,
    check_ops,
    check_range,
    check_start_revision,
    check_ttl,
    check_txn,
    prefix_end,
)
from clustermeta.metrics import EtcdStats

__all__ = ["DEFAULT_TIMEOUT", "EtcdConfig", "EtcdMetaStore", "parse_endpoints"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Default deadline of every etcd call, in seconds.
DEFAULT_TIMEOUT = 5.0
#: Events a watch holds for a slow consumer before it stops reading its stream (etcd buffers the
#: rest, and eventually treats the watcher as slow; nothing is lost).
_WATCH_BUFFER = 4096

_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Values are up to 1 MiB each, so a range can be far bigger than gRPC's 4 MiB default.
    ("grpc.max_receive_message_length", -1),
    # Reconnect quickly once etcd is back: gRPC's default backoff grows to 2 minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Detect a hung or partitioned etcd under an idle watch stream (etcd accepts pings >= 5 s apart).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]

_TARGETS = {
    CompareTarget.VALUE: (rpc.Compare.VALUE, "value"),
    CompareTarget.VERSION: (rpc.Compare.VERSION, "version"),
    CompareTarget.CREATE: (rpc.Compare.CREATE, "create_revision"),
    CompareTarget.MOD: (rpc.Compare.MOD, "mod_revision"),
    CompareTarget.LEASE: (rpc.Compare.LEASE, "lease"),
}
_RESULTS = {
    CompareOp.EQUAL: rpc.Compare.EQUAL,
    CompareOp.NOT_EQUAL: rpc.Compare.NOT_EQUAL,
    CompareOp.LESS: rpc.Compare.LESS,
    CompareOp.GREATER: rpc.Compare.GREATER,
}


# ----------------------------------------------------------------------------- configuration


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[str, ...]:
    """``"a:2379, http://b:2379"`` or ``["a:2379", ...]`` → ``("a:2379", "b:2379")``."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out: list[str] = []
    for item in items:
        ep = item.strip()
        if ep.startswith("http://"):
            ep = ep[len("http://") :]
        ep = ep.rstrip("/")
        if not ep:
            continue
        if "://" in ep:
            raise ValueError(f"etcd endpoint {item.strip()!r}: only plain http endpoints are supported")
        host, sep, port = ep.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"etcd endpoint {item.strip()!r} is not host:port")
        out.append(ep)
    if not out:
        raise ValueError("no etcd endpoint given")
    return tuple(out)


def _grpc_target(endpoints: tuple[str, ...]) -> str:
    """One gRPC target for the endpoints: the endpoint itself, or an ``ipv4:``/``ipv6:`` list."""
    if len(endpoints) == 1:
        return endpoints[0]
    families = set()
    for ep in endpoints:
        host = ep.rpartition(":")[0].strip("[]")
        try:
            families.add(ipaddress.ip_address(host).version)
        except ValueError:
            raise ValueError(
                f"several etcd endpoints must be IP addresses ({ep!r} is not); "
                "or give one DNS name that resolves to every member"
            ) from None
    if len(families) != 1:
        raise ValueError("several etcd endpoints must all be IPv4 or all IPv6")
    return f"ipv{families.pop()}:" + ",".join(endpoints)


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """How to reach etcd (see the module docstring)."""

    #: ``host:port`` of each etcd member to try.
    endpoints: tuple[str, ...]
    #: Namespace: prepended to every key, stripped from every key returned.
    prefix: bytes = b""
    #: Deadline of every etcd call, in seconds.
    timeout: float = DEFAULT_TIMEOUT
    #: First and largest pause between a broken watch's attempts to re-subscribe, in seconds.
    watch_backoff_min: float = 0.05
    watch_backoff_max: float = 2.0

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("no etcd endpoint given")
        if not isinstance(self.prefix, bytes):
            raise ValueError(f"the key prefix is bytes, got {type(self.prefix).__name__}")
        if not (self.timeout > 0 and 0 < self.watch_backoff_min <= self.watch_backoff_max):
            raise ValueError("timeout and watch backoffs must be positive, with min <= max")


# ----------------------------------------------------------------------------- conversions


class _Namespace:
    """Adds the key prefix on the way in and strips it on the way out (pure functions)."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix

    def key(self, key: bytes) -> bytes:
        return self.prefix + key

    def span(self, key: bytes, end: bytes | None) -> tuple[bytes, bytes]:
        """``(key, range_end)`` of an etcd request; ``range_end == b""`` means the single key."""
        k = self.prefix + key
        if end is None:
            return k, b""
        if end == FROM_KEY:
            return k, prefix_end(self.prefix) if self.prefix else FROM_KEY
        if not end:
            return k, k  # an empty end is an empty range (as in the embedded store), not one key
        return k, self.prefix + end

    def strip(self, key: bytes) -> bytes:
        return key[len(self.prefix) :]

    def kv(self, m: Any) -> KeyValue:
        return KeyValue(self.strip(m.key), m.value, m.create_revision, m.mod_revision, m.version, m.lease)

    def event(self, e: Any, prev_kv: bool) -> WatchEvent:
        prev = self.kv(e.prev_kv) if prev_kv and e.HasField("prev_kv") else None
        if e.type == rpc.Event.DELETE:
            kv = KeyValue(self.strip(e.kv.key), b"", 0, e.kv.mod_revision, 0, 0)
            return WatchEvent(EventType.DELETE, kv, prev)
        return WatchEvent(EventType.PUT, self.kv(e.kv), prev)

    def compare(self, c: Compare) -> Any:
        target, field = _TARGETS[c.target]
        m = rpc.Compare(key=self.key(c.key), target=target, result=_RESULTS[c.op])
        setattr(m, field, c.operand)
        return m

    def request_op(self, op: Op) -> Any:
        if isinstance(op, PutOp):
            return rpc.RequestOp(
                request_put=rpc.PutRequest(key=self.key(op.key), value=op.value, lease=op.lease, prev_kv=op.prev_kv)
            )
        key, end = self.span(op.key, op.end)
        if isinstance(op, DeleteOp):
            return rpc.RequestOp(
                request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end, prev_kv=op.prev_kv)
            )
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, range_end=end, limit=op.limit))

    def range_response(self, r: Any) -> RangeResponse:
        return RangeResponse([self.kv(kv) for kv in r.kvs], r.count, r.more, r.header.revision)

    def delete_response(self, r: Any) -> DeleteResponse:
        return DeleteResponse(r.deleted, r.header.revision, [self.kv(kv) for kv in r.prev_kvs])

    def op_response(self, op: Op, r: Any) -> OpResponse:
        if isinstance(op, PutOp):
            p = r.response_put
            return PutResponse(p.header.revision, self.kv(p.prev_kv) if op.prev_kv and p.HasField("prev_kv") else None)
        if isinstance(op, DeleteOp):
            return self.delete_response(r.response_delete_range)
        return self.range_response(r.response_range)


# ----------------------------------------------------------------------------- keepalive stream


class _KeepAliveStream:
    """One persistent ``Lease.LeaseKeepAlive`` stream shared by every keepalive.

    Replies are matched to requests by lease id, strictly in order. Any error closes the
    stream and fails every pending keepalive with :class:`MetaStoreUnavailable`; the next
    keepalive opens a new stream.
    """

    def __init__(self, store: EtcdMetaStore) -> None:
        self._store = store
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._waiting: dict[int, deque[asyncio.Future[int]]] = {}

    async def keepalive(self, lease_id: int) -> int:
        """One keepalive round trip; returns the TTL in the reply (0: the lease is gone)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._store.config.timeout):
                call = self._open()
                self._waiting.setdefault(lease_id, deque()).append(fut)
                async with self._write_lock:
                    await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                return await fut
        except TimeoutError:
            self._reset(MetaStoreUnavailable("keepalive stream stalled"))
            raise MetaStoreUnavailable(
                f"etcd at {self._store.target} did not answer a keepalive within {self._store.config.timeout} s"
            ) from None
        except grpc.aio.AioRpcError as e:
            self._reset(MetaStoreUnavailable("keepalive stream broke"))
            raise self._store._translate(e, "keepalive") from None
        except (grpc.aio.UsageError, asyncio.InvalidStateError) as e:
            self._reset(MetaStoreUnavailable("keepalive stream broke"))
            self._store._check_open()
            raise MetaStoreUnavailable(f"etcd keepalive stream failed: {e}") from None
        finally:
            fut.cancel()  # no-op when answered; otherwise its reply is dropped

    def _open(self) -> Any:
        if self._call is None:
            self._store._check_open()
            self._call = self._store._lease.LeaseKeepAlive()
            self._reader = asyncio.create_task(self._read(self._call), name="etcd-keepalive-reader")
        return self._call

    async def _read(self, call: Any) -> None:
        error: MetaStoreError = MetaStoreUnavailable("etcd closed the keepalive stream")
        try:
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    break
                # etcd answers each request once, in order: this reply is for the oldest request
                # of that lease. If its caller gave up, the reply is dropped, never handed to a
                # later caller (who would take an earlier refresh for its own: rule 6).
                queue = self._waiting.get(reply.ID)
                if queue:
                    fut = queue.popleft()
                    if not fut.done():
                        fut.set_result(int(reply.TTL))
                    if not queue:
                        del self._waiting[reply.ID]
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            error = self._store._translate(e, "keepalive")
        except Exception as e:  # noqa: BLE001 - any failure ends this stream; the next call reopens
            error = MetaStoreUnavailable(f"etcd keepalive stream failed: {e!r}")
        if self._call is call:
            self._reset(error)

    def _reset(self, error: MetaStoreError) -> None:
        call, reader = self._call, self._reader
        self._call = self._reader = None
        waiting, self._waiting = self._waiting, {}
        for queue in waiting.values():
            for fut in queue:
                if not fut.done():
                    fut.set_exception(error)
        if call is not None:
            call.cancel()
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()

    async def close(self) -> None:
        reader = self._reader
        self._reset(MetaStoreClosed("the metadata store was closed"))
        await cancel_and_wait(reader)


# ----------------------------------------------------------------------------- watches


class _StreamBroken(Exception):
    """The watch stream ended or failed; the watch re-subscribes."""


class _EtcdWatch(Watch):
    """A watch on its own gRPC stream that re-subscribes after errors (see the module docstring)."""

    def __init__(self, store: EtcdMetaStore, key: bytes, end: bytes, start_revision: int, prev_kv: bool) -> None:
        self._store = store
        self._key = key  # already prefixed
        self._end = end
        self._prev_kv = prev_kv
        self._received_next = start_revision  # resume point: last received revision + 1
        self._buffer: deque[WatchEvent] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._error: MetaStoreError | None = None  # delivered after the buffer, then the watch ends
        self._done = False
        self._call: Any = None
        self._task: asyncio.Task[None] | None = None
        #: How many times the stream was re-established after an error.
        self.resumes = 0
        self._connected = False

    @property
    def next_revision(self) -> int:
        return self._buffer[0].revision if self._buffer else self._received_next

    @property
    def connected(self) -> bool:
        return self._connected and not self._done

    async def _start(self) -> None:
        self._call = await self._subscribe()
        self._connected = True
        self._task = asyncio.create_task(self._run(), name=f"etcd-watch:{self._key!r}")

    async def _subscribe(self) -> Any:
        """Open a stream and create the watch from the resume point; returns once etcd confirms."""
        s = self._store
        s._check_open()
        request = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=self._key, range_end=self._end, start_revision=self._received_next, prev_kv=self._prev_kv
            )
        )
        call = s._watch_stub.Watch()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(s.config.timeout):
                await call.write(request)
                reply = await call.read()
            s.stats.observe("watch", time.perf_counter() - started)
        except TimeoutError:
            s.stats.observe("watch", time.perf_counter() - started, failed=True)
            call.cancel()
            raise MetaStoreUnavailable(
                f"etcd at {s.target} did not create a watch within {s.config.timeout} s"
            ) from None
        except grpc.aio.AioRpcError as e:
            s.stats.observe("watch", time.perf_counter() - started, failed=True)
            call.cancel()
            raise s._translate(e, "watch") from None
        except (grpc.aio.UsageError, asyncio.InvalidStateError) as e:
            call.cancel()
            s._check_open()
            raise MetaStoreUnavailable(f"etcd watch stream failed: {e}") from None
        if reply is grpc.aio.EOF or not reply.created:
            call.cancel()
            raise MetaStoreUnavailable("etcd ended the watch stream before creating the watch")
        if reply.canceled:
            call.cancel()
            if reply.compact_revision:
                raise CompactedError(self._received_next, reply.compact_revision)
            raise MetaStoreError(f"etcd refused the watch: {reply.cancel_reason or 'no reason given'}")
        return call

    async def _run(self) -> None:
        s = self._store
        backoff = s.config.watch_backoff_min
        try:
            while True:
                try:
                    await self._pump(self._call)
                except _StreamBroken as e:
                    log.info("etcd watch %r: stream broke (%s); resuming from %d", self._key, e, self._received_next)
                self._connected = False
                self._call.cancel()
                while True:  # re-subscribe from the resume point
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, s.config.watch_backoff_max)
                    try:
                        self._call = await self._subscribe()
                    except MetaStoreUnavailable as e:
                        log.debug("etcd watch %r: re-subscribe failed: %s", self._key, e)
                        continue
                    self.resumes += 1
                    self._connected = True
                    backoff = s.config.watch_backoff_min
                    break
        except asyncio.CancelledError:
            raise
        except MetaStoreError as e:  # compacted, refused or closed: hand it to the consumer
            self._finish(e)
        except Exception as e:  # noqa: BLE001 - a bug here must reach the consumer, not vanish
            log.exception("etcd watch %r failed", self._key)
            self._finish(MetaStoreError(f"watch failed: {e!r}"))
        finally:
            if self._call is not None:
                self._call.cancel()

    async def _pump(self, call: Any) -> None:
        """Move events from the stream into the buffer until the stream breaks."""
        while True:
            while len(self._buffer) >= _WATCH_BUFFER:  # slow consumer: stop reading, etcd buffers
                self._drained.clear()
                await self._drained.wait()
            try:
                reply = await call.read()
            except grpc.aio.AioRpcError as e:
                raise _StreamBroken(f"{e.code().name}: {e.details()}") from None
            except (grpc.aio.UsageError, asyncio.InvalidStateError) as e:
                raise _StreamBroken(repr(e)) from None
            if reply is grpc.aio.EOF:
                raise _StreamBroken("etcd ended the stream")
            if reply.compact_revision:
                raise CompactedError(self._received_next, reply.compact_revision)
            if reply.canceled:
                raise MetaStoreError(f"etcd cancelled the watch: {reply.cancel_reason or 'no reason given'}")
            ns = self._store._ns
            for raw in reply.events:
                ev = ns.event(raw, self._prev_kv)
                if ev.revision >= self._received_next:  # never twice, even if etcd repeated one
                    self._buffer.append(ev)
            if reply.events:
                # A response always holds whole revisions, so the next one is the resume point.
                self._received_next = max(self._received_next, reply.events[-1].kv.mod_revision + 1)
                self._wakeup.set()

    def _finish(self, error: MetaStoreError) -> None:
        if self._error is None:
            self._error = error
        self._wakeup.set()

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._call is not None:
            self._call.cancel()
        self._store._watches.discard(self)
        self._wakeup.set()

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._stop()

    def _close(self) -> None:
        """The store closes: deliver what is buffered, then :class:`MetaStoreClosed`."""
        self._finish(MetaStoreClosed("the metadata store was closed"))
        self._stop()

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._buffer:
                ev = self._buffer.popleft()
                if len(self._buffer) < _WATCH_BUFFER // 2:
                    self._drained.set()
                return ev
            if self._done:
                raise StopAsyncIteration
            if self._error is not None:
                self._done = True
                self._stop()
                raise self._error
            self._wakeup.clear()
            await self._wakeup.wait()


# ----------------------------------------------------------------------------- the store


class EtcdMetaStore(MetaStore):
    """The metadata store on etcd. Create with ``await EtcdMetaStore.open("127.0.0.1:2379")``."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        #: The gRPC target the channel dials.
        self.target = _grpc_target(config.endpoints)
        self._ns = _Namespace(config.prefix)
        self._channel = rpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch_stub = rpc.WatchStub(self._channel)
        self._keepalives = _KeepAliveStream(self)
        self._watches: set[_EtcdWatch] = set()
        self._closed = False
        #: Round trips of this client (exported by clustermeta/metrics.py).
        self.stats = EtcdStats()

    @classmethod
    async def open(
        cls,
        endpoints: str | Sequence[str],
        *,
        prefix: bytes | str = b"",
        timeout: float = DEFAULT_TIMEOUT,
        watch_backoff_min: float = 0.05,
        watch_backoff_max: float = 2.0,
        connect: bool = True,
    ) -> EtcdMetaStore:
        """Connect to etcd at ``endpoints`` (``"host:port"``, several comma-separated).

        ``prefix`` namespaces every key (``str`` is UTF-8 encoded); ``timeout`` is the deadline of
        every call. With ``connect`` (the default) one read checks that etcd answers, raising
        :class:`~clustermeta.metastore.MetaStoreUnavailable` if it does not within ``timeout``.
        Must run inside the event loop that will use the store.
        """
        config = EtcdConfig(
            parse_endpoints(endpoints),
            prefix.encode() if isinstance(prefix, str) else prefix,
            timeout,
            watch_backoff_min,
            watch_backoff_max,
        )
        store = cls(config)
        if connect:
            try:
                await store.current_revision()
            except BaseException:
                await store.close()
                raise
        return store

    # -- plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise MetaStoreClosed("the metadata store is closed")

    def _translate(self, e: grpc.aio.AioRpcError, what: str, *, lease: int = 0) -> MetaStoreError:
        """The :class:`MetaStoreError` for a failed etcd call."""
        if self._closed:
            return MetaStoreClosed("the metadata store is closed")
        code, details = e.code(), e.details() or ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return MetaStoreUnavailable(
                f"etcd at {self.target} did not answer {what} within {self.config.timeout} s"
            )
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return MetaStoreUnavailable(f"etcd at {self.target} is unavailable ({what}): {details}")
        if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
            return LeaseNotFound(lease)
        if code == grpc.StatusCode.OUT_OF_RANGE and "future revision" in details:
            return InvalidRequest(f"{what}: it is a future revision ({details})")
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return CompactedError(0, 0)  # the caller knows the revisions (see compact)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidRequest(f"{what}: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            if "larger than max" in details or "too large" in details:
                return InvalidRequest(f"{what}: request too large ({details})")
            return MetaStoreUnavailable(f"etcd at {self.target} is overloaded ({what}): {details}")
        return MetaStoreError(f"etcd {what} failed: {code.name}: {details}")

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any, what: str, *, lease: int = 0) -> T:
        """One unary etcd call with the configured deadline and errors translated (and timed)."""
        self._check_open()
        started = time.perf_counter()
        try:
            result = await method(request, timeout=self.config.timeout)
        except grpc.aio.AioRpcError as e:
            self.stats.observe(what, time.perf_counter() - started, failed=True)
            raise self._translate(e, what, lease=lease) from None
        except grpc.aio.UsageError:  # the channel was closed under the call
            self._check_open()
            raise
        self.stats.observe(what, time.perf_counter() - started)
        return result

    # -- KV

    async def current_revision(self) -> int:
        resp = await self._call(
            self._kv.Range, rpc.RangeRequest(key=self._ns.key(b"\x00"), count_only=True), "range"
        )
        return int(resp.header.revision)

    async def range(self, key: bytes, end: bytes | None = None, *, limit: int = 0) -> RangeResponse:
        self._check_open()
        check_range(key, end)
        if not isinstance(limit, int) or limit < 0:
            raise InvalidRequest("limit must be >= 0")
        k, e = self._ns.span(key, end)
        resp = await self._call(self._kv.Range, rpc.RangeRequest(key=k, range_end=e, limit=limit), "range")
        return self._ns.range_response(resp)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        self._check_open()
        check_ops([PutOp(key, value, lease=lease)])
        request = rpc.PutRequest(key=self._ns.key(key), value=value, lease=lease)
        resp = await self._call(self._kv.Put, request, "put", lease=lease)
        return int(resp.header.revision)

    async def delete(self, key: bytes, end: bytes | None = None, *, prev_kv: bool = False) -> DeleteResponse:
        self._check_open()
        check_range(key, end)
        k, e = self._ns.span(key, end)
        request = rpc.DeleteRangeRequest(key=k, range_end=e, prev_kv=prev_kv)
        return self._ns.delete_response(await self._call(self._kv.DeleteRange, request, "delete"))

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op] = (), failure: Sequence[Op] = ()
    ) -> TxnResponse:
        self._check_open()
        check_txn(compares, success, failure)
        ns = self._ns
        request = rpc.TxnRequest(
            compare=[ns.compare(c) for c in compares],
            success=[ns.request_op(op) for op in success],
            failure=[ns.request_op(op) for op in failure],
        )
        try:
            resp = await self._call(self._kv.Txn, request, "txn")
        except LeaseNotFound:
            raise LeaseNotFound(await self._missing_lease([*success, *failure])) from None
        ops = success if resp.succeeded else failure
        return TxnResponse(
            resp.succeeded, [ns.op_response(op, r) for op, r in zip(ops, resp.responses, strict=True)],
            resp.header.revision,
        )  # fmt: skip

    async def _missing_lease(self, ops: Sequence[Op]) -> int:
        """Which lease of a txn's puts etcd did not find (its error does not say)."""
        leases = list(dict.fromkeys(op.lease for op in ops if isinstance(op, PutOp) and op.lease))
        for lease_id in leases:
            with contextlib.suppress(MetaStoreError):
                resp = await self._call(self._lease.LeaseTimeToLive, rpc.LeaseTimeToLiveRequest(ID=lease_id), "lease")
                if resp.TTL == -1:
                    return lease_id
        return leases[0] if leases else 0

    async def compact(self, revision: int) -> None:
        self._check_open()
        check_compact_revision(revision)
        try:
            await self._call(self._kv.Compact, rpc.CompactionRequest(revision=revision), "compact")
        except CompactedError:
            raise CompactedError(revision, await self._compacted_revision(revision)) from None

    async def _compacted_revision(self, fallback: int) -> int:
        """etcd's current compaction revision (a watch from revision 1 is told it); its errors don't say."""
        w = _EtcdWatch(self, self._ns.key(b"\x00"), b"", 1, False)
        try:
            await w._start()
            async with asyncio.timeout(self.config.timeout):
                await w.__anext__()
        except CompactedError as e:
            return e.oldest_revision
        except (MetaStoreError, TimeoutError, StopAsyncIteration):
            pass
        finally:
            w.cancel()
        return fallback + 1

    # -- leases

    async def grant(self, ttl: float) -> int:
        self._check_open()
        check_ttl(ttl)
        resp = await self._call(self._lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=math.ceil(ttl)), "grant")
        if resp.error:
            raise MetaStoreError(f"etcd refused the lease: {resp.error}")
        return int(resp.ID)

    async def keepalive(self, lease_id: int) -> float:
        self._check_open()
        started = time.perf_counter()
        try:
            ttl = await self._keepalives.keepalive(lease_id)
        except MetaStoreError:
            self.stats.observe("keepalive", time.perf_counter() - started, failed=True)
            raise
        self.stats.observe("keepalive", time.perf_counter() - started)
        if ttl <= 0:
            raise LeaseNotFound(lease_id)
        return float(ttl)

    async def revoke(self, lease_id: int) -> None:
        await self._call(self._lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease_id), "revoke", lease=lease_id)

    async def lease_info(self, lease_id: int) -> LeaseInfo:
        resp = await self._call(
            self._lease.LeaseTimeToLive, rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=True), "lease", lease=lease_id
        )
        if resp.TTL < 0:
            raise LeaseNotFound(lease_id)
        p = self._ns.prefix
        keys = sorted(self._ns.strip(k) for k in resp.keys if k.startswith(p))
        return LeaseInfo(lease_id, float(resp.grantedTTL), float(resp.TTL), keys)

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
        if not start_revision:  # None or 0: from now on. An explicit revision makes resuming exact.
            start_revision = await self.current_revision() + 1
        k, range_end = self._ns.span(key, end)
        w = _EtcdWatch(self, k, range_end, start_revision, prev_kv)
        await w._start()
        self._watches.add(w)
        if self._closed:  # closed while the watch was being created
            w._close()
        return w

    # -- lifecycle

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in list(self._watches):
            w._close()
        await self._keepalives.close()
        await self._channel.close()
