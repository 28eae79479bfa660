"""Database records in the MetaStore: reads, and the fenced compare-and-swap every write is.

Every change to a ``/db/<id>`` record is one txn that compares the record's ``mod_revision`` with
the one the change was computed from (nobody wrote in between) *and* carries the control plane's
fence (it is still the active one). A failed compare leaves the store untouched; the caller
re-reads and decides again. A failure of the fence raises :class:`~controlplane.core.NotActive`
(the fence's ``check`` steps a deposed control plane down), so no caller can mistake "someone else
is in charge now" for an ordinary race.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clustermeta.metastore import (
    Compare,
    DeleteOp,
    MetaStore,
    Op,
    PutOp,
    key_absent,
    mod_revision_equals,
)
from clustermeta.records import DB_PREFIX, DatabaseRecord, db_key
from controlplane.core import Fence, meta_key
from sats.identity import Identity

__all__ = ["DbRecords", "Versioned", "leader_first", "owner_key"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Versioned:
    """A record and the ``mod_revision`` it was read at (what a CAS compares against)."""

    record: DatabaseRecord
    revision: int


def owner_key(record: DatabaseRecord) -> bytes:
    """``/owner/<owner hex>/<identity hex>``."""
    return meta_key("owner", record.owner.to_hex(), record.identity.to_hex())


def leader_first(record: DatabaseRecord) -> list[str]:
    """The voting replicas, the leader (if any) first."""
    if record.leader is None or record.leader not in record.replicas:
        return list(record.replicas)
    return [record.leader, *(n for n in record.replicas if n != record.leader)]


class DbRecords:
    """Read and write database records under ``fence``; ``on_write`` hears every write made
    (the record, None for a removal, and the revision)."""

    def __init__(
        self,
        store: MetaStore,
        fence: Fence,
        *,
        on_write: Callable[[Identity, DatabaseRecord | None, int], None] | None = None,
    ) -> None:
        self.store = store
        self.fence = fence
        self.on_write = on_write

    def _wrote(self, identity: Identity, record: DatabaseRecord | None, revision: int) -> None:
        if self.on_write is not None:
            self.on_write(identity, record, revision)

    async def get(self, identity: Identity) -> Versioned | None:
        """The record and its revision, or None."""
        kv = await self.store.get(db_key(identity))
        return None if kv is None else Versioned(DatabaseRecord.from_json(kv.value), kv.mod_revision)

    async def all(self) -> list[Versioned]:
        """Every record."""
        resp = await self.store.get_prefix(DB_PREFIX)
        return [Versioned(DatabaseRecord.from_json(kv.value), kv.mod_revision) for kv in resp.kvs]

    async def create(
        self, record: DatabaseRecord, *, compares: Sequence[Compare] = (), ops: Sequence[Op] = ()
    ) -> Versioned | None:
        """Write a new record (with its owner index entry, ``ops`` and ``compares`` in the same txn).

        None when the record or another compare was in the way.
        """
        key = db_key(record.identity)
        resp = await self.store.txn(
            [key_absent(key), *compares, *self.fence.compares()],
            [PutOp(key, record.to_json()), PutOp(owner_key(record), b""), *ops],
        )
        if not resp.succeeded:
            await self.fence.check()
            return None
        self._wrote(record.identity, record, resp.revision)
        return Versioned(record, resp.revision)

    async def cas(self, current: Versioned, new: DatabaseRecord, *, ops: Sequence[Op] = ()) -> Versioned | None:
        """Replace ``current`` by ``new`` if nobody wrote it since; None otherwise."""
        key = db_key(new.identity)
        resp = await self.store.txn(
            [mod_revision_equals(key, current.revision), *self.fence.compares()],
            [PutOp(key, new.to_json()), *ops],
        )
        if not resp.succeeded:
            await self.fence.check()
            return None
        self._wrote(new.identity, new, resp.revision)
        return Versioned(new, resp.revision)

    async def remove(
        self, current: Versioned, *, compares: Sequence[Compare] = (), ops: Sequence[Op] = ()
    ) -> bool:
        """Delete the record and its owner index entry (and ``ops``, under ``compares`` too) if
        nobody wrote it since."""
        key = db_key(current.record.identity)
        resp = await self.store.txn(
            [mod_revision_equals(key, current.revision), *compares, *self.fence.compares()],
            [DeleteOp(key), DeleteOp(owner_key(current.record)), *ops],
        )
        if not resp.succeeded:
            await self.fence.check()
            return False
        self._wrote(current.record.identity, None, resp.revision)
        return True

    async def update(
        self,
        identity: Identity,
        change: Callable[[DatabaseRecord], DatabaseRecord | None],
        *,
        attempts: int = 8,
    ) -> Versioned | None:
        """Read, ``change`` (None: leave it), CAS; again on a lost race. None if absent or left."""
        for _ in range(attempts):
            current = await self.get(identity)
            if current is None:
                return None
            new = change(current.record)
            if new is None:
                return None
            written = await self.cas(current, new)
            if written is not None:
                return written
        raise RecordBusy(f"database {identity.to_hex()} changed {attempts} times while being updated; try again")


class RecordBusy(Exception):
    """A record kept changing under a read-modify-write."""
