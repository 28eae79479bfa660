"""A local copy of some key prefixes of the MetaStore, kept fresh by one watch.

The first load reads every prefix in one transaction (one revision for all of them), then a
single watch from that revision + 1 over the smallest range covering the prefixes follows every
change in revision order; events outside the prefixes are skipped. After a broken watch the
mirror watches again from its last revision + 1; when that history has been compacted it
re-reads everything and reports the difference (keys that vanished meanwhile as deletions), so a
consumer never misses a change and never sees one twice at the same revision.

Consumers get ``on_change(key, kv_or_None)`` calls (a coroutine or a plain function), in order,
for the initial load and every change after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence

from clustermeta.metastore import (
    CompactedError,
    EventType,
    KeyValue,
    MetaStore,
    MetaStoreClosed,
    MetaStoreError,
    RangeOp,
    RangeResponse,
    prefix_end,
)

log = logging.getLogger(__name__)

__all__ = ["Mirror"]

OnChange = Callable[[bytes, KeyValue | None], Awaitable[None] | None]


class Mirror:
    """Every key under ``prefixes``, as of :attr:`revision` (see the module docstring)."""

    def __init__(self, store: MetaStore, prefixes: Sequence[bytes], on_change: OnChange | None = None) -> None:
        if not prefixes:
            raise ValueError("a mirror needs at least one prefix")
        self.store = store
        self.prefixes = tuple(prefixes)
        self.on_change = on_change
        self.kvs: dict[bytes, KeyValue] = {}
        #: The store revision every change up to which is in :attr:`kvs`.
        self.revision = 0
        self._start = min(self.prefixes)
        self._end = max(prefix_end(p) for p in self.prefixes)
        self._task: asyncio.Task[None] | None = None
        self._advanced = asyncio.Condition()
        self.loaded = asyncio.Event()

    def __contains__(self, key: bytes) -> bool:
        return key in self.kvs

    def get(self, key: bytes) -> KeyValue | None:
        """The key's state as mirrored, or None."""
        return self.kvs.get(key)

    def items(self, prefix: bytes) -> Iterator[KeyValue]:
        """Mirrored keys starting with ``prefix`` (in no particular order)."""
        for k, kv in self.kvs.items():
            if k.startswith(prefix):
                yield kv

    def _wanted(self, key: bytes) -> bool:
        return any(key.startswith(p) for p in self.prefixes)

    async def start(self) -> None:
        """Load everything (errors propagate), then follow changes in the background."""
        await self._load(initial=True)
        self._task = asyncio.create_task(self._follow(), name=f"mirror{self.prefixes}")

    async def close(self) -> None:
        """Stop following."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Wait until the mirror has applied every change up to ``revision``; False on timeout."""
        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(lambda: self.revision >= revision), timeout)
            except TimeoutError:
                return False
        return True

    async def _emit(self, key: bytes, kv: KeyValue | None) -> None:
        cb = self.on_change
        if cb is None:
            return
        try:
            out = cb(key, kv)
            if out is not None:
                await out
        except Exception:  # noqa: BLE001 - one bad consumer call must not stop the mirror
            log.exception("mirror consumer failed on %r", key)

    async def _load(self, *, initial: bool) -> None:
        resp = await self.store.txn([], [RangeOp(p, prefix_end(p)) for p in self.prefixes])
        fresh: dict[bytes, KeyValue] = {}
        for r in resp.responses:
            assert isinstance(r, RangeResponse)
            for kv in r.kvs:
                fresh[kv.key] = kv
        old = self.kvs
        self.kvs = dict(fresh)
        for key, kv in fresh.items():
            prev = old.get(key)
            if initial or prev is None or prev.mod_revision != kv.mod_revision:
                await self._emit(key, kv)
        if not initial:
            for key in old.keys() - fresh.keys():
                await self._emit(key, None)
        await self._advance(resp.revision)
        self.loaded.set()

    async def _advance(self, revision: int) -> None:
        if revision > self.revision:
            async with self._advanced:
                self.revision = revision
                self._advanced.notify_all()

    async def _follow(self) -> None:
        backoff = 0.05
        while True:
            try:
                watch = await self.store.watch(self._start, self._end, start_revision=self.revision + 1)
                async with watch:
                    async for ev in watch:
                        backoff = 0.05
                        key = ev.kv.key
                        if self._wanted(key):
                            if ev.type is EventType.PUT:
                                self.kvs[key] = ev.kv
                                await self._emit(key, ev.kv)
                            elif self.kvs.pop(key, None) is not None:
                                await self._emit(key, None)
                        await self._advance(ev.revision)
            except asyncio.CancelledError:
                raise
            except MetaStoreClosed:
                return
            except CompactedError:
                log.info("mirror fell behind compaction; re-reading %s", self.prefixes)
                with contextlib.suppress(MetaStoreError):
                    await self._load(initial=False)
                    continue
            except MetaStoreError as e:
                log.info("mirror watch broke (%s); resuming from revision %d", e, self.revision + 1)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
