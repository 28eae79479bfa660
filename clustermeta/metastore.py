"""The metadata store interface: every piece of cluster metadata goes through :class:`MetaStore`.

Databases, names, owners, placement, leader epochs and node membership are keys in one ordered
byte-keyed store with etcd v3 semantics, so the control plane reads and writes them the same
way whether it runs on the embedded store (standalone, :mod:`clustermeta.metastore_lmdb`) or on
etcd (cluster mode). This module holds the abstract interface, its value types and the small
typed helpers built on :meth:`MetaStore.txn` (compare-and-swap, create-if-absent, fenced puts).

Model (identical to etcd's MVCC key space):

* Keys and values are ``bytes``. Keys are ordered bytewise; a *range* is ``[start, end)``;
  ``end=None`` means the single key ``start``; ``end=FROM_KEY`` (``b"\\0"``) means every key
  ``>= start``; :func:`prefix_end` turns a prefix into its range end.
* The store has one global **revision**, starting at 1 for an empty store. Every write request
  that changes something (a put, a delete that deletes at least one key, a txn whose chosen branch
  writes, a lease revoke/expiry that deletes keys) bumps it by exactly one; all changes of that
  request carry the same revision. Reads, failed compares and no-op deletes do not bump it.
* Each live key has ``create_revision`` (revision of the put that created it), ``mod_revision``
  (revision of its last put), ``version`` (number of puts since creation: 1 on create) and
  ``lease`` (0 = none). A deleted key is gone: comparing a missing key sees version,
  create_revision, mod_revision and lease all 0, and a VALUE compare against it is false.
* **Leases** have a TTL; keys put with ``lease=id`` are deleted (one revision, DELETE events) when
  the lease expires or is revoked. A put without a lease detaches the key from its old lease.
* **Watches** stream PUT/DELETE events over a key range in revision order, from a start revision
  that may lie in the past (replayed from retained history) — this is how caches are kept fresh
  and how a restarted watcher resumes without missing anything. A watch survives connection
  errors by itself (the etcd implementation re-subscribes from its resume point), so its consumer
  sees each event exactly once; the only gap it reports is compaction (:class:`CompactedError`).
* **Compaction** at revision ``C`` drops the history *below* ``C``: ``C`` is then the oldest
  revision a watch can start from (etcd's ``Compact``).

Mapping to etcd v3 (for the etcd implementation; callers do not change):

==========================  ===================================================================
this interface              etcd v3 API
==========================  ===================================================================
``get``/``range``           ``KV.Range`` (``key``, ``range_end``, ``limit``); ``count``/``more``/
                            ``header.revision`` are the response fields of the same names
``put``                     ``KV.Put`` (``lease``); returns ``header.revision``
``delete``                  ``KV.DeleteRange`` (``prev_kv``); ``deleted`` = response ``deleted``
``txn``                     ``KV.Txn``: :class:`Compare` → ``Compare`` (target VALUE/VERSION/
                            CREATE/MOD/LEASE, result EQUAL/NOT_EQUAL/LESS/GREATER); ops →
                            ``RequestOp`` (``request_put``/``request_range``/
                            ``request_delete_range``); responses in the same order
``compact``                 ``KV.Compact`` (``ErrCompacted`` → :class:`CompactedError`, a future
                            revision → :class:`InvalidRequest`)
``grant``                   ``Lease.LeaseGrant`` (etcd TTLs are whole seconds: round up, and etcd
                            enforces a minimum TTL; ``keepalive``/``lease_info`` report the TTL
                            actually granted)
``keepalive``               one message on a persistent ``Lease.LeaseKeepAlive`` stream; TTL 0 in
                            the reply means the lease is gone → :class:`LeaseNotFound`
``revoke``                  ``Lease.LeaseRevoke``
``lease_info``              ``Lease.LeaseTimeToLive`` (``keys=true``)
``watch``                   ``Watch.Watch`` create request (``start_revision``, ``prev_kv``);
                            a response with ``compact_revision`` → :class:`CompactedError`;
                            a broken stream is re-created by the implementation from the last
                            received revision + 1 (bounded backoff), invisible to the consumer
==========================  ===================================================================

Errors: :class:`MetaStoreError` and subclasses. The etcd implementation maps gRPC
``UNAVAILABLE``/deadline errors to :class:`MetaStoreUnavailable`, ``ErrCompacted`` to
:class:`CompactedError`, ``ErrLeaseNotFound`` to :class:`LeaseNotFound`, and
``InvalidArgument`` (empty key, too many ops, duplicate key in txn, request too large) to
:class:`InvalidRequest`. Limits below are etcd's defaults so that code written against the
embedded store also runs on etcd.
"""

from __future__ import annotations

import abc
import enum
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

__all__ = [
    "FROM_KEY",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_TXN_OPS",
    "MAX_LEASE_TTL",
    "MetaStoreError",
    "InvalidRequest",
    "CompactedError",
    "LeaseNotFound",
    "MetaStoreClosed",
    "MetaStoreUnavailable",
    "KeyValue",
    "EventType",
    "WatchEvent",
    "CompareTarget",
    "CompareOp",
    "Compare",
    "PutOp",
    "RangeOp",
    "DeleteOp",
    "Op",
    "PutResponse",
    "RangeResponse",
    "DeleteResponse",
    "OpResponse",
    "TxnResponse",
    "LeaseInfo",
    "CasResult",
    "Watch",
    "MetaStore",
    "prefix_end",
    "value_equals",
    "version_equals",
    "mod_revision_equals",
    "create_revision_equals",
    "key_absent",
    "key_exists",
    "check_key",
    "check_range",
    "check_ops",
    "check_txn",
    "check_ttl",
    "check_start_revision",
    "check_compact_revision",
    "key_in_range",
]

#: Range end meaning "every key >= start" (etcd's ``range_end = "\\0"``).
FROM_KEY = b"\x00"
#: Longest key accepted. LMDB's key limit (511 bytes) minus room for the lease index; etcd allows
#: more, so this is the binding limit for code meant to run on both.
MAX_KEY_BYTES = 480
#: Largest value accepted (etcd's default request limit is 1.5 MiB for the whole request).
MAX_VALUE_BYTES = 1024 * 1024
#: Most operations in one txn branch, and most compares (etcd's ``--max-txn-ops`` default).
MAX_TXN_OPS = 128
#: Longest lease TTL in seconds (etcd's ``MaxLeaseTTL``).
MAX_LEASE_TTL = 9_000_000_000


# ----------------------------------------------------------------------------- errors


class MetaStoreError(Exception):
    """Base of every metadata store error."""


class InvalidRequest(MetaStoreError):
    """The request can never succeed as written (empty/oversized key, duplicate key in a txn, …)."""


class CompactedError(MetaStoreError):
    """A watch asked for history that is no longer retained (or ``compact`` was asked to go back).

    ``oldest_revision`` is the earliest start revision still possible (the compaction revision).
    Recover by reading the current state with :meth:`MetaStore.range` and watching from its
    ``revision + 1``.
    """

    def __init__(self, requested: int, oldest_revision: int) -> None:
        super().__init__(
            f"revision {requested} has been compacted; the oldest revision that can be watched is "
            f"{oldest_revision} (re-read the range and watch from its revision + 1)"
        )
        self.requested = requested
        self.oldest_revision = oldest_revision


class LeaseNotFound(MetaStoreError):
    """The lease does not exist (never granted, revoked, or expired)."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:#x} not found (expired or revoked)")
        self.lease_id = lease_id


class MetaStoreClosed(MetaStoreError):
    """The store was closed (also ends open watches)."""


class MetaStoreUnavailable(MetaStoreError):
    """The store cannot be reached now (etcd down or partitioned); the request may be retried.

    A write that raised this may or may not have been applied: retry with a txn whose compares
    make it idempotent.
    """


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key's current state (etcd ``mvccpb.KeyValue``)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class EventType(enum.Enum):
    """Kind of a :class:`WatchEvent` (etcd ``mvccpb.Event.EventType``)."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change seen by a watch.

    For PUT, ``kv`` is the key's new state. For DELETE, ``kv`` has the key, an empty value,
    ``mod_revision`` = the revision of the delete and all other fields 0 (as etcd reports it).
    ``prev_kv`` is the state before the change when the watch asked for it (``None`` for a
    creation, or when not requested).
    """

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        """The revision at which the change happened."""
        return self.kv.mod_revision


class CompareTarget(enum.Enum):
    """What a :class:`Compare` looks at (etcd ``Compare.CompareTarget``)."""

    VALUE = "value"
    VERSION = "version"
    CREATE = "create_revision"
    MOD = "mod_revision"
    LEASE = "lease"


class CompareOp(enum.Enum):
    """How a :class:`Compare` compares (etcd ``Compare.CompareResult``)."""

    EQUAL = "=="
    NOT_EQUAL = "!="
    LESS = "<"
    GREATER = ">"


@dataclass(frozen=True, slots=True)
class Compare:
    """A txn guard: ``<target of key> <op> <operand>``.

    ``operand`` is ``bytes`` for VALUE (compared bytewise) and ``int`` otherwise. A missing key has
    version/create/mod/lease 0; a VALUE compare on a missing key is always false.
    """

    key: bytes
    target: CompareTarget
    op: CompareOp
    operand: bytes | int

    def __post_init__(self) -> None:
        check_key(self.key)
        want_bytes = self.target is CompareTarget.VALUE
        if want_bytes != isinstance(self.operand, bytes) or isinstance(self.operand, bool):
            raise InvalidRequest(
                f"compare on {self.target.value} needs {'bytes' if want_bytes else 'an int'}, "
                f"got {type(self.operand).__name__}"
            )

    def evaluate(self, kv: KeyValue | None) -> bool:
        """The compare's result against a key's current state (``None`` = missing key)."""
        if self.target is CompareTarget.VALUE:
            if kv is None:
                return False
            actual: bytes | int = kv.value
        elif kv is None:
            actual = 0
        elif self.target is CompareTarget.VERSION:
            actual = kv.version
        elif self.target is CompareTarget.CREATE:
            actual = kv.create_revision
        elif self.target is CompareTarget.MOD:
            actual = kv.mod_revision
        else:
            actual = kv.lease
        operand = self.operand
        if self.op is CompareOp.EQUAL:
            return actual == operand
        if self.op is CompareOp.NOT_EQUAL:
            return actual != operand
        if self.op is CompareOp.LESS:
            return actual < operand  # type: ignore[operator]
        return actual > operand  # type: ignore[operator]


def value_equals(key: bytes, value: bytes) -> Compare:
    """Key exists and holds ``value``."""
    return Compare(key, CompareTarget.VALUE, CompareOp.EQUAL, value)


def version_equals(key: bytes, version: int) -> Compare:
    """Key's version is ``version`` (0 = the key does not exist)."""
    return Compare(key, CompareTarget.VERSION, CompareOp.EQUAL, version)


def mod_revision_equals(key: bytes, revision: int) -> Compare:
    """Key was last written at ``revision`` (0 = the key does not exist): the fencing compare."""
    return Compare(key, CompareTarget.MOD, CompareOp.EQUAL, revision)


def create_revision_equals(key: bytes, revision: int) -> Compare:
    """Key was created at ``revision`` (0 = the key does not exist)."""
    return Compare(key, CompareTarget.CREATE, CompareOp.EQUAL, revision)


def key_absent(key: bytes) -> Compare:
    """The key does not exist (create-if-absent)."""
    return Compare(key, CompareTarget.CREATE, CompareOp.EQUAL, 0)


def key_exists(key: bytes) -> Compare:
    """The key exists."""
    return Compare(key, CompareTarget.CREATE, CompareOp.GREATER, 0)


@dataclass(frozen=True, slots=True)
class PutOp:
    """Set ``key`` to ``value`` (etcd ``RequestPut``); ``lease=0`` detaches it from any lease."""

    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class RangeOp:
    """Read ``[key, end)`` (etcd ``RequestRange``); ``end=None`` reads the single key."""

    key: bytes
    end: bytes | None = None
    limit: int = 0


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Delete ``[key, end)`` (etcd ``RequestDeleteRange``); ``end=None`` deletes the single key."""

    key: bytes
    end: bytes | None = None
    prev_kv: bool = False


Op = PutOp | RangeOp | DeleteOp


@dataclass(frozen=True, slots=True)
class PutResponse:
    """Result of a put: the revision it was written at, and the previous state if asked for."""

    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class RangeResponse:
    """Result of a range read.

    ``kvs`` are in key order, at most ``limit`` of them; ``count`` is the number of keys in the
    whole range and ``more`` tells whether ``limit`` cut it short; ``revision`` is the store
    revision the read saw (watch from ``revision + 1`` to follow on without a gap).
    """

    kvs: list[KeyValue]
    count: int
    more: bool
    revision: int


@dataclass(frozen=True, slots=True)
class DeleteResponse:
    """Result of a delete: how many keys went, at which revision, and their states if asked for."""

    deleted: int
    revision: int
    prev_kvs: list[KeyValue] = field(default_factory=list)


OpResponse = PutResponse | RangeResponse | DeleteResponse


@dataclass(frozen=True, slots=True)
class TxnResponse:
    """Result of :meth:`MetaStore.txn`: which branch ran, one response per op, the revision after."""

    succeeded: bool
    responses: list[OpResponse]
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A live lease: its granted TTL, the seconds left, and the keys attached to it."""

    id: int
    granted_ttl: float
    remaining: float
    keys: list[bytes]


@dataclass(frozen=True, slots=True)
class CasResult:
    """Result of a compare-and-swap helper.

    ``succeeded``: the write happened at ``revision``. Otherwise ``current`` is the key's state
    that made the compare fail (``None`` if missing) and ``revision`` the store revision.
    """

    succeeded: bool
    revision: int
    current: KeyValue | None


# ----------------------------------------------------------------------------- validation


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (etcd ``GetPrefixRangeEnd``)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return FROM_KEY
    p[-1] += 1
    return bytes(p)


def check_key(key: bytes) -> None:
    """Reject keys the store cannot hold."""
    if not isinstance(key, bytes):
        raise InvalidRequest(f"keys are bytes, got {type(key).__name__}")
    if not key:
        raise InvalidRequest("key is empty")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidRequest(f"key is {len(key)} bytes; at most {MAX_KEY_BYTES} are allowed")


def check_range(key: bytes, end: bytes | None) -> None:
    """Reject malformed ranges (``end`` must be ``None``, :data:`FROM_KEY` or a key)."""
    check_key(key)
    if end is not None and not isinstance(end, bytes):
        raise InvalidRequest(f"range end is bytes, got {type(end).__name__}")
    if end is not None and len(end) > MAX_KEY_BYTES + 1:
        raise InvalidRequest(f"range end is {len(end)} bytes; at most {MAX_KEY_BYTES + 1} are allowed")


def _check_value(value: bytes, lease: int) -> None:
    if not isinstance(value, bytes):
        raise InvalidRequest(f"values are bytes, got {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidRequest(f"value is {len(value)} bytes; at most {MAX_VALUE_BYTES} are allowed")
    if not isinstance(lease, int) or lease < 0:
        raise InvalidRequest(f"lease must be a non-negative int, got {lease!r}")


def key_in_range(key: bytes, start: bytes, end: bytes | None) -> bool:
    """Whether ``key`` lies in the range ``[start, end)`` (``end`` as in :meth:`MetaStore.range`)."""
    if end is None:
        return key == start
    if end == FROM_KEY:
        return key >= start
    return start <= key < end


def check_ops(ops: Sequence[Op]) -> None:
    """Validate one txn branch: size limit, well-formed ops, no key written twice (etcd's rule)."""
    if len(ops) > MAX_TXN_OPS:
        raise InvalidRequest(f"too many operations in txn ({len(ops)} > {MAX_TXN_OPS})")
    written: list[tuple[bytes, bytes | None]] = []
    for op in ops:
        if isinstance(op, PutOp):
            check_key(op.key)
            _check_value(op.value, op.lease)
            span: tuple[bytes, bytes | None] = (op.key, None)
        elif isinstance(op, DeleteOp):
            check_range(op.key, op.end)
            span = (op.key, op.end)
        elif isinstance(op, RangeOp):
            check_range(op.key, op.end)
            if op.limit < 0:
                raise InvalidRequest("limit must be >= 0")
            continue
        else:
            raise InvalidRequest(f"not a txn operation: {op!r}")
        for other in written:
            if _ranges_overlap(span, other) and (span[1] is None or other[1] is None):
                raise InvalidRequest(f"duplicate key given in txn request: {op.key!r}")
        written.append(span)


def check_txn(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> None:
    """Validate a whole txn: its compares and both branches (:func:`check_ops`)."""
    for c in compares:
        if not isinstance(c, Compare):
            raise InvalidRequest(f"not a Compare: {c!r}")
    if len(compares) > MAX_TXN_OPS:
        raise InvalidRequest(f"too many compares in txn ({len(compares)} > {MAX_TXN_OPS})")
    check_ops(success)
    check_ops(failure)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_ttl(ttl: float) -> None:
    """Reject lease TTLs that are not a positive, finite number of seconds up to etcd's maximum."""
    if not (isinstance(ttl, int | float) and not isinstance(ttl, bool) and math.isfinite(ttl) and ttl > 0):
        raise InvalidRequest(f"lease TTL must be a positive number of seconds, got {ttl!r}")
    if ttl > MAX_LEASE_TTL:
        raise InvalidRequest(f"lease TTL {ttl} s is above the maximum of {MAX_LEASE_TTL} s")


def check_start_revision(start_revision: int | None) -> None:
    """Reject watch start revisions other than ``None`` or a non-negative int."""
    if start_revision is not None and not (_is_int(start_revision) and start_revision >= 0):
        raise InvalidRequest(f"start_revision must be a non-negative int, got {start_revision!r}")


def check_compact_revision(revision: int) -> None:
    """Reject compaction revisions other than a positive int."""
    if not (_is_int(revision) and revision >= 1):
        raise InvalidRequest(f"compaction revision must be a positive int, got {revision!r}")


def _ranges_overlap(a: tuple[bytes, bytes | None], b: tuple[bytes, bytes | None]) -> bool:
    # etcd forbids a key put twice, or put and deleted, in one txn; two overlapping deletes are fine.
    if a[1] is None:
        return key_in_range(a[0], b[0], b[1])
    if b[1] is None:
        return key_in_range(b[0], a[0], a[1])
    return False


# ----------------------------------------------------------------------------- interface


class Watch(AsyncIterator[WatchEvent]):
    """An open watch: ``async for event in watch`` yields events in revision order.

    Iteration raises :class:`CompactedError` if the start revision (or, for a watcher that fell
    too far behind or was cut off from etcd meanwhile, its next revision) is no longer retained,
    and :class:`MetaStoreClosed` when the store closes — each after every event received before;
    it ends normally after :meth:`cancel`. After an error the watch is over: re-read and re-watch.
    A broken connection is *not* an error: the etcd implementation re-subscribes from
    :attr:`next_revision` with bounded backoff until etcd answers again (no event is lost or
    repeated), so a consumer that must notice an outage uses its own timeouts or the store's
    calls, which raise :class:`MetaStoreUnavailable`. Use as an async context manager to cancel
    on exit.
    """

    @property
    @abc.abstractmethod
    def next_revision(self) -> int:
        """The revision the next event will have at least (resume point after an error)."""

    @property
    def connected(self) -> bool:
        """Whether the watch hears the store now: False while an implementation that
        re-subscribes by itself is cut off (health checks read this; no event depends on it)."""
        return True

    @abc.abstractmethod
    async def __anext__(self) -> WatchEvent: ...

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop the watch; iteration ends after any events already delivered."""

    def __aiter__(self) -> Watch:
        return self

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cancel()


class MetaStore(abc.ABC):
    """The metadata store (etcd v3 KV + Lease + Watch semantics; see the module docstring).

    All methods are coroutines. Writes are durable (fsynced / quorum-committed) when they return,
    and linearizable: a read started after a write returned sees it. Concrete helpers at the end
    (:meth:`cas`, :meth:`create`, :meth:`put_if_mod_revision`, …) are built on :meth:`txn` and
    work on every implementation.
    """

    # -- KV

    @abc.abstractmethod
    async def range(self, key: bytes, end: bytes | None = None, *, limit: int = 0) -> RangeResponse:
        """Keys in ``[key, end)`` in key order (``end=None``: just ``key``; ``limit=0``: no limit)."""

    @abc.abstractmethod
    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Set ``key``; returns the revision written. Unknown ``lease`` → :class:`LeaseNotFound`."""

    @abc.abstractmethod
    async def delete(self, key: bytes, end: bytes | None = None, *, prev_kv: bool = False) -> DeleteResponse:
        """Delete ``[key, end)`` (``end=None``: just ``key``)."""

    @abc.abstractmethod
    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op] = (), failure: Sequence[Op] = ()
    ) -> TxnResponse:
        """Atomically: if every compare holds run ``success``, else ``failure``.

        Ops run in order, later ops seeing earlier ones' writes; all writes share one revision.
        A branch may not write the same key twice (:class:`InvalidRequest`, as etcd). A put with
        an unknown lease fails the whole txn with :class:`LeaseNotFound`.
        """

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Drop watch history below ``revision``; watching from ``revision`` stays possible.

        The current state is never affected. Raises :class:`CompactedError` if ``revision`` is at
        or below the last compaction revision, :class:`InvalidRequest` if it lies in the future.
        """

    @abc.abstractmethod
    async def current_revision(self) -> int:
        """The store's revision now."""

    # -- leases

    @abc.abstractmethod
    async def grant(self, ttl: float) -> int:
        """Create a lease living ``ttl`` seconds unless kept alive; returns its id (> 0).

        The TTL granted may be longer (etcd rounds up to whole seconds and has a minimum);
        :meth:`keepalive` returns it.
        """

    @abc.abstractmethod
    async def keepalive(self, lease_id: int) -> float:
        """Restart the lease's TTL; returns the TTL granted (>= the one asked for).

        A holder that acts on the lease (e.g. a leader) must stop before its *own* deadline:
        ``monotonic time when this call was sent + returned TTL − drift margin``
        (REPLICATION.md rule 6). Raises :class:`LeaseNotFound` if the lease is gone.
        """

    @abc.abstractmethod
    async def revoke(self, lease_id: int) -> None:
        """End the lease now, deleting its keys. Raises :class:`LeaseNotFound` if it is gone."""

    @abc.abstractmethod
    async def lease_info(self, lease_id: int) -> LeaseInfo:
        """TTL and keys of a live lease. Raises :class:`LeaseNotFound` if it is gone."""

    # -- watches

    @abc.abstractmethod
    async def watch(
        self,
        key: bytes,
        end: bytes | None = None,
        *,
        start_revision: int | None = None,
        prev_kv: bool = False,
    ) -> Watch:
        """Watch ``[key, end)`` from ``start_revision`` (``None``: changes after now).

        Returns once the watch is established: with ``start_revision=None``, every change with a
        revision above :meth:`current_revision` at that moment is delivered. Events from the past
        are replayed first, then live events follow with no gap and no duplicate.
        """

    # -- lifecycle

    @abc.abstractmethod
    async def close(self) -> None:
        """Release resources; open watches end with :class:`MetaStoreClosed`."""

    async def __aenter__(self) -> MetaStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- helpers (implementation-independent)

    async def get(self, key: bytes) -> KeyValue | None:
        """The key's state, or ``None``."""
        resp = await self.range(key)
        return resp.kvs[0] if resp.kvs else None

    async def get_prefix(self, prefix: bytes, *, limit: int = 0) -> RangeResponse:
        """Every key starting with ``prefix``, in key order."""
        return await self.range(prefix, prefix_end(prefix), limit=limit)

    async def delete_prefix(self, prefix: bytes, *, prev_kv: bool = False) -> DeleteResponse:
        """Delete every key starting with ``prefix``."""
        return await self.delete(prefix, prefix_end(prefix), prev_kv=prev_kv)

    async def watch_prefix(
        self, prefix: bytes, *, start_revision: int | None = None, prev_kv: bool = False
    ) -> Watch:
        """Watch every key starting with ``prefix``."""
        return await self.watch(prefix, prefix_end(prefix), start_revision=start_revision, prev_kv=prev_kv)

    async def _guarded_put(self, guard: Compare, key: bytes, value: bytes, lease: int) -> CasResult:
        resp = await self.txn([guard], [PutOp(key, value, lease=lease)], [RangeOp(key)])
        if resp.succeeded:
            return CasResult(True, resp.revision, None)
        current = resp.responses[0]
        assert isinstance(current, RangeResponse)
        return CasResult(False, resp.revision, current.kvs[0] if current.kvs else None)

    async def cas(self, key: bytes, expected: bytes | None, new: bytes, *, lease: int = 0) -> CasResult:
        """Put ``new`` if the key holds ``expected`` (``None``: if the key does not exist)."""
        guard = key_absent(key) if expected is None else value_equals(key, expected)
        return await self._guarded_put(guard, key, new, lease)

    async def create(self, key: bytes, value: bytes, *, lease: int = 0) -> CasResult:
        """Put only if the key does not exist (exactly one of concurrent creators wins)."""
        return await self._guarded_put(key_absent(key), key, value, lease)

    async def put_if_mod_revision(
        self, key: bytes, mod_revision: int, value: bytes, *, lease: int = 0
    ) -> CasResult:
        """Put only if the key was last written at ``mod_revision`` (0: does not exist).

        This is the fencing write: read a key, decide, write back only if nobody wrote in between.
        """
        return await self._guarded_put(mod_revision_equals(key, mod_revision), key, value, lease)

    async def delete_if(self, key: bytes, expected: bytes) -> CasResult:
        """Delete the key only if it holds ``expected``."""
        resp = await self.txn([value_equals(key, expected)], [DeleteOp(key)], [RangeOp(key)])
        if resp.succeeded:
            return CasResult(True, resp.revision, None)
        current = resp.responses[0]
        assert isinstance(current, RangeResponse)
        return CasResult(False, resp.revision, current.kvs[0] if current.kvs else None)
