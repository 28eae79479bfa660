"""The gateway's mirror of the cluster's records (docs/cluster.md, "Gateways").

A gateway answers lookups (names, database records, owners, live nodes, the active control
plane) and routes requests from memory: :class:`ClusterView` keeps a copy of the keys below,
read with one consistent range read per prefix (one read-only txn, so all at one revision) and
kept fresh by one watch over the cluster's key space from that revision + 1.

=========================  ===============================================================
key                        mirrored as
=========================  ===============================================================
``/db/<id>``               :class:`~clustermeta.records.DatabaseRecord` by identity
``/dns/<name>``            name → identity
``/rdns/<id>/<name>``      identity → names
``/owner/<owner>/<id>``    owner → identities
``/nodes/<node id>``       :class:`~clustermeta.records.NodeInfo`: the live host nodes
``/controlplane/leader``   :class:`~clustermeta.records.ControlPlaneInfo`: the active one
=========================  ===============================================================

Keeping it fresh follows etcd's rules for caches (the MetaStore interface mirrors them):

* events are applied in revision order; a revision counts as applied (:attr:`revision`) once
  all of its events are, so a reader waiting for a revision sees the whole write;
* a broken watch (:class:`~clustermeta.metastore.MetaStoreUnavailable`, anything unexpected)
  is re-opened from the last applied revision + 1 after a bounded exponential backoff: no event
  is lost or applied out of order (a revision half-applied when the watch broke is replayed;
  puts and deletes carry whole states, so applying one twice changes nothing);
* :class:`~clustermeta.metastore.CompactedError` (the history the watch needs is gone) means
  events were missed: everything is read again and the watch restarts after that read.

The mirror may lag the store by a moment, so every lookup that misses (an unknown name, a
database or node this gateway has not heard of yet) reads the store directly before answering
"not found": a database published a moment ago through another gateway is found. A gateway that
changed something itself waits until its mirror shows the change (:meth:`ClusterView.catch_up`)
before answering, so its client reads its own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from clustermeta.aio import cancel_and_wait
from clustermeta.metastore import (
    CompactedError,
    EventType,
    KeyValue,
    MetaStore,
    MetaStoreClosed,
    RangeOp,
    RangeResponse,
    Watch,
    WatchEvent,
    prefix_end,
)
from clustermeta.names import parse_name_or_identity
from clustermeta.records import (
    CONTROLPLANE_LEADER_KEY,
    DB_PREFIX,
    DNS_PREFIX,
    NODES_PREFIX,
    OWNER_PREFIX,
    RDNS_PREFIX,
    ControlPlaneInfo,
    DatabaseRecord,
    DbState,
    NodeInfo,
    db_key,
    dns_key,
    node_key,
    owner_prefix,
    rdns_prefix,
)
from sats.identity import Identity

__all__ = ["Changes", "ClusterView", "Route", "ViewConfig"]

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

#: The prefixes read at start (one range each) — and, with the control plane's key, all the view keeps.
PREFIXES = (DB_PREFIX, DNS_PREFIX, RDNS_PREFIX, OWNER_PREFIX, NODES_PREFIX)
#: One watch covers every key of the cluster (they all start with "/"); keys the view does not
#: mirror are skipped.
WATCH_KEY = b"/"
WATCH_END = prefix_end(WATCH_KEY)


@dataclass(frozen=True)
class ViewConfig:
    """How the view recovers from a broken watch or an unreachable store."""

    #: First and longest wait (seconds) before re-opening a watch or re-reading after an error.
    backoff_min: float = 0.05
    backoff_max: float = 2.0


@dataclass(frozen=True)
class Changes:
    """What one applied revision (or a re-read) changed: listeners get one per revision."""

    #: Databases whose record was written or deleted.
    databases: frozenset[Identity] = frozenset()
    #: A host node came, went or changed its address.
    nodes: bool = False
    #: The active control plane changed.
    controlplane: bool = False

    def __bool__(self) -> bool:
        return bool(self.databases) or self.nodes or self.controlplane


@dataclass(frozen=True)
class Route:
    """Where a database's requests go, as the view sees it now."""

    identity: Identity
    #: None: no such database (not in the store either).
    record: DatabaseRecord | None
    #: The leader's node, when the record names one and that node is live (in ``/nodes``).
    node: NodeInfo | None
    #: Pass to :meth:`ClusterView.wait_for_change` to wait for anything newer than this route.
    token: tuple[int, int]

    @property
    def leader(self) -> str | None:
        """The node id the record names as leader (None during an election)."""
        return None if self.record is None else self.record.leader


def _split(rest: bytes) -> tuple[str, str]:
    head, sep, tail = rest.decode().partition("/")
    if not sep or not head or not tail:
        raise ValueError(f"malformed key suffix {rest!r}")
    return head, tail


@dataclass
class _Mirror:
    """The mirrored keys and the indexes built from them (one consistent state)."""

    #: Every mirrored key → its ``mod_revision``.
    revisions: dict[bytes, int] = field(default_factory=dict)
    records: dict[Identity, DatabaseRecord] = field(default_factory=dict)
    dns: dict[str, Identity] = field(default_factory=dict)
    rdns: dict[Identity, set[str]] = field(default_factory=dict)
    owned: dict[Identity, set[Identity]] = field(default_factory=dict)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    controlplane: ControlPlaneInfo | None = None

    def apply(self, kv: KeyValue, deleted: bool, changes: _Pending) -> None:
        """Apply one put (``kv`` is the new state) or delete of ``kv.key``; note what changed."""
        key = kv.key
        try:
            if key.startswith(DB_PREFIX):
                identity = Identity.from_hex(key[len(DB_PREFIX) :].decode())
                if deleted:
                    self.records.pop(identity, None)
                else:
                    self.records[identity] = DatabaseRecord.from_json(kv.value)
                changes.databases.add(identity)
            elif key.startswith(DNS_PREFIX):
                name = key[len(DNS_PREFIX) :].decode()
                if deleted:
                    self.dns.pop(name, None)
                else:
                    self.dns[name] = Identity.from_hex(kv.value.decode())
            elif key.startswith(RDNS_PREFIX):
                hex_id, name = _split(key[len(RDNS_PREFIX) :])
                _index(self.rdns, Identity.from_hex(hex_id), name, deleted)
            elif key.startswith(OWNER_PREFIX):
                owner, hex_id = _split(key[len(OWNER_PREFIX) :])
                _index(self.owned, Identity.from_hex(owner), Identity.from_hex(hex_id), deleted)
            elif key.startswith(NODES_PREFIX):
                node_id = key[len(NODES_PREFIX) :].decode()
                if deleted:
                    self.nodes.pop(node_id, None)
                else:
                    self.nodes[node_id] = NodeInfo.from_json(kv.value)
                changes.nodes = True
            elif key == CONTROLPLANE_LEADER_KEY:
                self.controlplane = None if deleted else ControlPlaneInfo.from_json(kv.value)
                changes.controlplane = True
            else:
                return  # not a key the view keeps
        except (ValueError, KeyError, TypeError) as e:  # malformed JSON, hex or key: skip it
            log.warning("cluster view: ignoring malformed %r: %s", key, e)
            self.revisions.pop(key, None)
            return
        if deleted:
            self.revisions.pop(key, None)
        else:
            self.revisions[key] = kv.mod_revision

    def diff(self, newer: _Mirror) -> Changes:
        """What changed from this state to ``newer`` (after a re-read)."""
        keys = self.revisions.keys() | newer.revisions.keys()
        moved = {k for k in keys if self.revisions.get(k) != newer.revisions.get(k)}
        databases: set[Identity] = set()
        for k in moved:
            if k.startswith(DB_PREFIX):
                with contextlib.suppress(ValueError):
                    databases.add(Identity.from_hex(k[len(DB_PREFIX) :].decode()))
        return Changes(
            frozenset(databases),
            any(k.startswith(NODES_PREFIX) for k in moved),
            CONTROLPLANE_LEADER_KEY in moved,
        )


def _index(index: dict[K, set[V]], key: K, value: V, deleted: bool) -> None:
    if deleted:
        values = index.get(key)
        if values is not None:
            values.discard(value)
            if not values:
                del index[key]
    else:
        index.setdefault(key, set()).add(value)


@dataclass
class _Pending:
    """Changes of a revision being applied (mutable until the revision completes)."""

    databases: set[Identity] = field(default_factory=set)
    nodes: bool = False
    controlplane: bool = False

    def take(self) -> Changes:
        out = Changes(frozenset(self.databases), self.nodes, self.controlplane)
        self.databases = set()
        self.nodes = self.controlplane = False
        return out


class ClusterView:
    """The mirror. ``await view.start()`` loads it and starts following; ``await view.close()``.

    Synchronous accessors (:meth:`live_nodes`, :attr:`revision`, …) read the mirror only; the
    coroutines (:meth:`resolve`, :meth:`database`, :meth:`route`, …) fall back to the store on
    a miss and may raise :class:`~clustermeta.metastore.MetaStoreError` when it is unreachable.
    Returned records are shared: callers must not change them.
    """

    def __init__(self, store: MetaStore, config: ViewConfig | None = None) -> None:
        self.store = store
        self.config = config or ViewConfig()
        self._mirror = _Mirror()
        self._revision = 0
        self._pending = _Pending()
        #: Per database: how many changes of its record the view applied (wait_for_change).
        self._db_seq: dict[Identity, int] = {}
        self._nodes_seq = 0
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[Changes], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Full reads so far (1 after start; +1 after each compaction), and watches opened.
        self.reads = 0
        self.watches = 0
        self._watch: Watch | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read everything (retrying with backoff while the store is unreachable), then follow."""
        await self._read_all()
        self._task = asyncio.create_task(self._follow(), name="cluster-view")

    async def close(self) -> None:
        """Stop following (idempotent); the mirror keeps its last state."""
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def add_listener(self, callback: Callable[[Changes], None]) -> None:
        """Call ``callback(changes)`` after each applied revision that changed a record, a node
        or the control plane (on the event loop; it must not block)."""
        self._listeners.append(callback)

    # --- reading and following the store --------------------------------------------------------

    async def _read_all(self) -> None:
        """Replace the mirror with one consistent read of every prefix (retried until it works)."""
        backoff = self.config.backoff_min
        ops = [RangeOp(p, prefix_end(p)) for p in PREFIXES] + [RangeOp(CONTROLPLANE_LEADER_KEY)]
        while True:
            try:
                response = await self.store.txn([], ops)
                break
            except MetaStoreClosed:
                raise
            except Exception as e:  # noqa: BLE001 - unreachable store (or a bug): keep trying, loudly
                log.warning("cluster view: reading the cluster's records failed (%s); retrying in %.2fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.backoff_max)
        mirror = _Mirror()
        scratch = _Pending()
        for r in response.responses:
            assert isinstance(r, RangeResponse)
            for kv in r.kvs:
                mirror.apply(kv, False, scratch)
        changes = self._mirror.diff(mirror)
        self._mirror = mirror
        self._pending = _Pending()
        self.reads += 1
        self._complete(response.revision, changes)

    async def _follow(self) -> None:
        """Apply watch events forever; resume after errors, re-read after compaction."""
        backoff = self.config.backoff_min
        reread = False
        while not self._closed:
            try:
                if reread:
                    await self._read_all()
                    reread = False
                watch = await self.store.watch(WATCH_KEY, WATCH_END, start_revision=self._revision + 1)
                self.watches += 1
                self._watch = watch
                try:
                    async with watch:
                        async for event in watch:
                            self._apply(event)
                            # A revision is complete once the watch moved past it.
                            if watch.next_revision > event.revision:
                                self._complete(event.revision, self._pending.take())
                            backoff = self.config.backoff_min
                finally:
                    self._watch = None
            except asyncio.CancelledError:
                raise
            except MetaStoreClosed:
                return
            except CompactedError as e:
                log.warning("cluster view: watch history is gone (%s); reading everything again", e)
                reread = True
                continue
            except Exception as e:  # noqa: BLE001 - unreachable store, broken stream, or a bug
                log.warning(
                    "cluster view: watch failed (%s); resuming from revision %d in %.2fs",
                    e, self._revision + 1, backoff,
                )  # fmt: skip
            if self._closed:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.backoff_max)

    def _apply(self, event: WatchEvent) -> None:
        self._mirror.apply(event.kv, event.type is EventType.DELETE, self._pending)

    def _complete(self, revision: int, changes: Changes) -> None:
        """``revision`` is wholly applied: wake waiters and tell listeners."""
        self._revision = max(self._revision, revision)
        for identity in changes.databases:
            self._db_seq[identity] = self._db_seq.get(identity, 0) + 1
        if changes.nodes:
            self._nodes_seq += 1
        wake, self._changed = self._changed, asyncio.Event()
        wake.set()
        if changes:
            for callback in list(self._listeners):
                try:
                    callback(changes)
                except Exception:  # noqa: BLE001 - a listener's bug must not stop the mirror
                    log.exception("cluster view: a change listener failed")

    # --- waiting --------------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The store revision the mirror has wholly applied."""
        return self._revision

    @property
    def watching(self) -> bool:
        """Whether the mirror follows the store right now (its watch is open and connected)."""
        return self._watch is not None and self._watch.connected

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, checked after each applied revision; False when
        ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return True

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Wait until the mirror has applied ``revision``; False on timeout.

        Only revisions of keys the view mirrors are ever applied as such, so pass one of those
        (a record's ``mod_revision``); :meth:`catch_up` works for any write.
        """
        return await self.wait_until(lambda: self._revision >= revision, timeout)

    def change_token(self, identity: Identity) -> tuple[int, int]:
        """A marker of the current state of ``identity``'s record and of the node list."""
        return self._db_seq.get(identity, 0), self._nodes_seq

    async def wait_for_change(
        self, identity: Identity, timeout: float, since: tuple[int, int] | None = None
    ) -> bool:
        """Wait until the database's record or the node list changes after ``since`` (a
        :meth:`change_token`; default: now); False on timeout."""
        token = self.change_token(identity) if since is None else since
        return await self.wait_until(lambda: self.change_token(identity) != token, timeout)

    async def catch_up(self, keys: Sequence[bytes], prefixes: Sequence[bytes] = (), timeout: float = 10.0) -> bool:
        """Wait until the mirror shows what the store holds now under ``keys`` and ``prefixes``
        (a write made elsewhere — by the control plane — and already acknowledged); False on timeout.

        Reads those keys from the store (one txn: one revision ``R``), then waits until the
        mirror has applied every present key's ``mod_revision`` and dropped every key the store
        no longer has (or saw it written again after ``R``) — or has applied ``R`` itself.
        """
        ops = [RangeOp(k) for k in keys] + [RangeOp(p, prefix_end(p)) for p in prefixes]
        response = await self.store.txn([], ops)
        at = response.revision
        present: dict[bytes, int] = {}
        for r in response.responses:
            assert isinstance(r, RangeResponse)
            present.update((kv.key, kv.mod_revision) for kv in r.kvs)
        newest = max(present.values(), default=0)

        def caught_up() -> bool:
            if self._revision >= at:
                return True
            if self._revision < newest:
                return False
            mine = self._mirror.revisions
            gone = [k for k in keys if k not in present]
            gone += [k for p in prefixes for k in mine if k.startswith(p) and k not in present]
            return all(mine.get(k, at + 1) > at for k in gone)

        return await self.wait_until(caught_up, timeout)

    # --- lookups --------------------------------------------------------------------------------

    async def resolve(self, name_or_identity: str) -> Identity | None:
        """The identity a path segment names (an identity as is); None for an unknown name.

        Raises :class:`~clustermeta.names.InvalidName` for neither an identity nor a name.
        """
        target = parse_name_or_identity(name_or_identity)
        if isinstance(target, Identity):
            return target
        identity = self._mirror.dns.get(target)
        if identity is not None:
            return identity
        kv = await self.store.get(dns_key(target))
        return None if kv is None else Identity.from_hex(kv.value.decode())

    async def database(self, identity: Identity) -> DatabaseRecord | None:
        """The database's record; None when there is none. One the mirror holds in the middle of
        a change (being created, moved or deleted) is read from the store again: the mirror may
        lag a publish that completed through another gateway a moment ago, and a stale
        "being created" must not answer 404 for a database that is active."""
        record = self._mirror.records.get(identity)
        if record is not None and record.state is DbState.ACTIVE:
            return record
        kv = await self.store.get(db_key(identity))
        return None if kv is None else DatabaseRecord.from_json(kv.value)

    async def names(self, identity: Identity) -> list[str]:
        """Every name of the database, sorted."""
        names = self._mirror.rdns.get(identity)
        if names is None and identity not in self._mirror.records:
            prefix = rdns_prefix(identity)
            response = await self.store.get_prefix(prefix)
            return sorted(kv.key[len(prefix) :].decode() for kv in response.kvs)
        return sorted(names or ())

    async def databases_of(self, owner: Identity) -> list[Identity]:
        """The databases ``owner`` owns, in key (hex) order."""
        owned = self._mirror.owned.get(owner)
        if owned:
            return sorted(owned, key=Identity.to_hex)
        prefix = owner_prefix(owner)
        response = await self.store.get_prefix(prefix)
        return [Identity.from_hex(kv.key[len(prefix) :].decode()) for kv in response.kvs]

    def live_nodes(self) -> list[NodeInfo]:
        """The host nodes registered now (each under its lease), by id."""
        return [self._mirror.nodes[n] for n in sorted(self._mirror.nodes)]

    def node_addresses(self) -> set[str]:
        """The addresses of the live host nodes."""
        return {node.address for node in self._mirror.nodes.values()}

    async def node(self, node_id: str) -> NodeInfo | None:
        """A live node's record; None when it is not registered."""
        node = self._mirror.nodes.get(node_id)
        if node is not None:
            return node
        kv = await self.store.get(node_key(node_id))
        return None if kv is None else NodeInfo.from_json(kv.value)

    def cached_route(self, identity: Identity) -> Route:
        """:meth:`route` from the mirror alone (no store read: a miss is a miss)."""
        record = self._mirror.records.get(identity)
        node = None
        if record is not None and record.leader is not None:
            node = self._mirror.nodes.get(record.leader)
        return Route(identity, record, node, self.change_token(identity))

    async def route(self, identity: Identity) -> Route:
        """The database's record and its leader's node (the change token is taken first)."""
        route = self.cached_route(identity)
        if route.record is not None and (route.leader is None or route.node is not None):
            return route
        record = await self.database(identity)
        node = None
        if record is not None and record.leader is not None:
            node = await self.node(record.leader)
        return Route(identity, record, node, route.token)

    async def leader_address(self, identity: Identity) -> str | None:
        """host:port of the database's leader; None without a record, a leader, or a live leader."""
        node = (await self.route(identity)).node
        return None if node is None else node.address

    def cached_controlplane(self) -> ControlPlaneInfo | None:
        """The active control plane as the mirror has it (no store read)."""
        return self._mirror.controlplane

    async def controlplane(self) -> ControlPlaneInfo | None:
        """The active control plane; None while none is elected."""
        if self._mirror.controlplane is not None:
            return self._mirror.controlplane
        kv = await self.store.get(CONTROLPLANE_LEADER_KEY)
        return None if kv is None else ControlPlaneInfo.from_json(kv.value)

    def known_databases(self) -> Iterable[Identity]:
        """Every database in the mirror."""
        return self._mirror.records.keys()

    def readiness(self) -> str | None:
        """Why a gateway on this view cannot serve yet (``/readyz``), or None: the records are
        loaded, the watch on the store is open, and a control plane is active."""
        if not self.reads:
            return "the cluster's records are not loaded yet"
        if not self.watching:
            return "the watch on the cluster's metadata store is down (reconnecting)"
        if self.cached_controlplane() is None:
            return "no control plane is active"
        return None
