"""Local copies of MetaStore key ranges, kept fresh by watches: how every process follows the cluster.

:func:`follow_prefix` is the watch loop every follower needs: it streams the events under a
prefix from a revision on, and resumes after a broken connection from the last revision seen + 1,
so no event is lost or repeated. A revision that is no longer retained raises
:class:`~clustermeta.metastore.CompactedError` to the caller, who must re-read.

:class:`PrefixMirror` builds on it: a dict of every key under the prefix, read once, then kept in
step by :func:`follow_prefix`; after a compaction it re-reads the range and reports the difference
as changes, so its subscribers see every key's latest state even across gaps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from clustermeta.aio import cancel_and_wait
from clustermeta.metastore import (
    CompactedError,
    EventType,
    KeyValue,
    MetaStore,
    MetaStoreClosed,
    MetaStoreError,
    WatchEvent,
)

__all__ = ["Change", "PrefixMirror", "follow_prefix"]

log = logging.getLogger(__name__)

#: Seconds between attempts when the store is unreachable.
RETRY_DELAY = 0.5


async def follow_prefix(
    store: MetaStore, prefix: bytes, start_revision: int, *, retry_delay: float = RETRY_DELAY
) -> AsyncIterator[WatchEvent]:
    """Every event under ``prefix`` from ``start_revision`` on, in revision order, forever.

    A broken watch (``MetaStoreUnavailable`` or any other store error but the two below) is
    re-opened at the revision of the last event delivered, skipping the keys of that revision
    already delivered (one revision may change several keys), so nothing is lost or repeated.
    Raises ``CompactedError`` when the history needed is gone and ``MetaStoreClosed`` when the
    store closes.
    """
    resume_at = start_revision
    last_revision = 0
    delivered: set[bytes] = set()  # keys delivered at last_revision
    while True:
        try:
            watch = await store.watch_prefix(prefix, start_revision=resume_at)
            async with watch:
                async for event in watch:
                    revision = event.kv.mod_revision
                    if revision == last_revision and event.kv.key in delivered:
                        continue
                    if revision != last_revision:
                        last_revision, delivered = revision, set()
                    delivered.add(event.kv.key)
                    resume_at = revision
                    yield event
            return  # cancelled
        except (CompactedError, MetaStoreClosed):
            raise
        except MetaStoreError as e:
            log.warning("watch on %s broke (%s); resuming from revision %d", prefix.decode(), e, resume_at)
            await asyncio.sleep(retry_delay)


@dataclass(frozen=True, slots=True)
class Change:
    """One key's move: ``old`` → ``new`` (``None``: absent before / deleted now), at ``revision``
    (the event's, or the re-read's for a difference found after a compaction)."""

    key: bytes
    old: KeyValue | None
    new: KeyValue | None
    revision: int


class PrefixMirror:
    """Every key under ``prefix``, as of :attr:`revision`; ``on_change`` hears every change.

    ``await start()`` returns once the first read is in; the watch then runs in a background task
    until :meth:`stop`. Changes are delivered in revision order, one call per event (or one call
    with the whole difference after a re-read). ``on_change`` runs on the loop and must not block.
    """

    def __init__(
        self,
        store: MetaStore,
        prefix: bytes,
        *,
        on_change: Callable[[list[Change]], None] | None = None,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.on_change = on_change
        self.retry_delay = retry_delay
        self.items: dict[bytes, KeyValue] = {}
        #: The store revision the mirror reflects.
        self.revision = 0
        self._task: asyncio.Task[None] | None = None
        self._moved = asyncio.Condition()

    async def start(self) -> None:
        """Read the range, then follow it in the background."""
        await self._reread(initial=True)
        self._task = asyncio.create_task(self._run(), name=f"mirror:{self.prefix.decode()}")

    async def stop(self) -> None:
        """Stop following."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def wait_for_revision(self, revision: int) -> None:
        """Return once the mirror has seen an event at or past ``revision`` (or re-read after it)."""
        async with self._moved:
            await self._moved.wait_for(lambda: self.revision >= revision)

    async def _reread(self, *, initial: bool = False) -> None:
        while True:
            try:
                resp = await self.store.get_prefix(self.prefix)
                break
            except MetaStoreClosed:
                raise
            except MetaStoreError as e:
                log.warning("reading %s failed (%s); retrying", self.prefix.decode(), e)
                await asyncio.sleep(self.retry_delay)
        fresh = {kv.key: kv for kv in resp.kvs}
        changes = [] if initial else _diff(self.items, fresh, resp.revision)
        self.items = fresh
        await self._advance(resp.revision, changes)

    async def _advance(self, revision: int, changes: list[Change]) -> None:
        self.revision = max(self.revision, revision)
        if changes and self.on_change is not None:
            try:
                self.on_change(changes)
            except Exception:
                log.exception("mirror subscriber of %s failed", self.prefix.decode())
        async with self._moved:
            self._moved.notify_all()

    async def _run(self) -> None:
        while True:
            try:
                async for event in follow_prefix(
                    self.store, self.prefix, self.revision + 1, retry_delay=self.retry_delay
                ):
                    key = event.kv.key
                    old = self.items.get(key)
                    if event.type is EventType.PUT:
                        self.items[key] = event.kv
                        change = Change(key, old, event.kv, event.kv.mod_revision)
                    else:
                        self.items.pop(key, None)
                        change = Change(key, old, None, event.kv.mod_revision)
                    await self._advance(event.kv.mod_revision, [change])
                return
            except CompactedError:
                log.info("watch history of %s compacted; re-reading", self.prefix.decode())
                await self._reread()
            except MetaStoreClosed:
                return


def _diff(old: dict[bytes, KeyValue], new: dict[bytes, KeyValue], revision: int) -> list[Change]:
    changes = [Change(k, kv, None, revision) for k, kv in old.items() if k not in new]
    changes += [Change(k, old.get(k), kv, revision) for k, kv in new.items() if old.get(k) != kv]
    return sorted(changes, key=lambda c: c.key)
