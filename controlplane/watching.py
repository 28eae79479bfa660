"""Database records as they change: the local view the control plane reasons over, and the stream
``WatchDatabases`` serves to gateways.

:class:`RecordsView` mirrors ``/db/`` (:class:`~clustermeta.mirror.PrefixMirror`), decoding each
record once per revision, and derives the load per node that placement and elections break ties
with. :func:`database_events` is the per-client stream: the current records (a snapshot), or the
changes from a revision on, resumed across store reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from clustermeta.metastore import EventType, MetaStore
from clustermeta.mirror import Change, PrefixMirror, follow_prefix
from clustermeta.records import DB_PREFIX, DatabaseRecord, identity_of_db_key
from controlplane.placement import Load, load_of
from sats.identity import Identity

__all__ = ["DatabaseEvent", "RecordsView", "database_events"]

log = logging.getLogger(__name__)


class RecordsView:
    """Every database record, as of the mirror's revision; ``on_change`` hears each change.

    Writes this process made (:meth:`note`) count at once, before the watch brings them back, so
    decisions taken right after a write (the next placement, an election's tie-break) see it.
    """

    def __init__(self, store: MetaStore, *, on_change: Callable[[list[Change]], None] | None = None) -> None:
        self._mirror = PrefixMirror(store, DB_PREFIX, on_change=self._changed)
        self._decoded: dict[bytes, tuple[int, DatabaseRecord]] = {}
        self._noted: dict[Identity, tuple[int, DatabaseRecord | None]] = {}
        self._load: tuple[int, Load] | None = None
        self._on_change = on_change

    async def start(self) -> None:
        """Read the records, then follow them."""
        await self._mirror.start()

    async def stop(self) -> None:
        """Stop following."""
        await self._mirror.stop()

    @property
    def revision(self) -> int:
        """The store revision the view reflects."""
        return self._mirror.revision

    def note(self, identity: Identity, record: DatabaseRecord | None, revision: int) -> None:
        """This process wrote ``record`` (None: deleted it) at ``revision``."""
        if revision > self._mirror.revision:
            self._noted[identity] = (revision, record)
            self._load = None

    def records(self) -> list[DatabaseRecord]:
        """Every record (decoded once per revision; callers must not change them)."""
        by_identity: dict[Identity, DatabaseRecord] = {}
        for key, kv in self._mirror.items.items():
            hit = self._decoded.get(key)
            if hit is None or hit[0] != kv.mod_revision:
                try:
                    hit = (kv.mod_revision, DatabaseRecord.from_json(kv.value))
                except (ValueError, KeyError, TypeError) as e:
                    log.warning("ignoring malformed database record %s: %s", key.decode(errors="replace"), e)
                    continue
                self._decoded[key] = hit
            by_identity[hit[1].identity] = hit[1]
        for identity, (revision, record) in list(self._noted.items()):
            if revision <= self._mirror.revision:
                del self._noted[identity]  # the watch brought it (or something newer) back
            elif record is None:
                by_identity.pop(identity, None)
            else:
                by_identity[identity] = record
        return list(by_identity.values())

    def get(self, identity: Identity) -> DatabaseRecord | None:
        """One record, or None."""
        return next((r for r in self.records() if r.identity == identity), None)

    def load(self) -> Load:
        """Replicas and leaderships per node."""
        if self._load is None or self._load[0] != self.revision or self._noted:
            self._load = (self.revision, load_of(self.records()))
        return self._load[1]

    def _changed(self, changes: list[Change]) -> None:
        for change in changes:
            if change.new is None:
                self._decoded.pop(change.key, None)
        if self._on_change is not None:
            self._on_change(changes)


@dataclass(frozen=True)
class DatabaseEvent:
    """One record's state at ``revision``: ``record`` None means deleted; ``snapshot`` marks the
    initial state of a watch from 0, ``end_of_snapshot`` the event after it (no identity)."""

    revision: int
    identity: Identity | None
    record: DatabaseRecord | None
    snapshot: bool = False
    end_of_snapshot: bool = False


async def database_events(store: MetaStore, start_revision: int) -> AsyncIterator[DatabaseEvent]:
    """Record changes from ``start_revision`` (0: the current records first, then the changes).

    Raises ``CompactedError`` when ``start_revision`` is no longer retained.
    """
    if start_revision <= 0:
        resp = await store.get_prefix(DB_PREFIX)
        for kv in resp.kvs:
            yield DatabaseEvent(resp.revision, identity_of_db_key(kv.key), DatabaseRecord.from_json(kv.value), True)
        yield DatabaseEvent(resp.revision, None, None, end_of_snapshot=True)
        start_revision = resp.revision + 1
    async for event in follow_prefix(store, DB_PREFIX, start_revision):
        identity = identity_of_db_key(event.kv.key)
        if event.type is EventType.DELETE:
            yield DatabaseEvent(event.kv.mod_revision, identity, None)
        else:
            try:
                record = DatabaseRecord.from_json(event.kv.value)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("skipping malformed database record %s: %s", identity.to_hex(), e)
                continue
            yield DatabaseEvent(event.kv.mod_revision, identity, record)
