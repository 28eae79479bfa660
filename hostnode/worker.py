"""A database's writer thread: runs every mutating call in order and fires scheduled reducers.

The engine (:class:`hostnode.database.Database`) must be driven from one thread. The worker owns
that thread: other threads (or an asyncio loop) ``submit`` callables and get a
``concurrent.futures.Future`` back; between jobs the worker fires due schedules and checkpoints
the datastore when it goes idle, so readers see fresh state promptly.

The queue is bounded for work clients bring (``submit(…, limited=True)``): past
``max_queued`` waiting jobs such work is refused at once with :class:`Overloaded`, before
anything runs, so a flood of calls cannot make the server hold unbounded work. The server's own
jobs (disconnects, closing) are never refused: they free resources.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from hostnode.database import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

_STOP = object()

#: Client jobs that may wait for one database's writer (README, "Limits"). An HTTP call is one
#: job, a WebSocket client's messages that arrived together are one: the benchmark's 64
#: connections × 40 calls in flight (2,560 jobs at most) fit with room to spare.
DEFAULT_MAX_QUEUED = 10_000


class Overloaded(Exception):
    """Too much work waits for the database already: the request was refused, nothing ran."""


class DatabaseWorker:
    """Owns one Database and the only thread allowed to mutate it."""

    def __init__(
        self, open_fn: Callable[[], Database], name: str = "db-writer", *, max_queued: int = DEFAULT_MAX_QUEUED
    ) -> None:
        self.max_queued = max_queued
        #: Client requests that wait inside a queued job beyond the job itself, by source: a job
        #: of several HTTP calls counts as its calls (hostnode/http_calls.py), a job of several
        #: WebSocket clients' messages as its clients' batches (hostnode/realtime.py).
        self.waiting: dict[str, int] = {}
        #: (fn, future or None, when queued); a SimpleQueue: put and get are C, no Python-level lock.
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready: Future[Database] = Future()
        self._thread = threading.Thread(target=self._run, args=(open_fn,), name=name, daemon=True)
        self._thread.start()
        self.db: Database = self._ready.result()

    def submit(self, fn: Callable[[Database], T], *, limited: bool = False) -> Future[T]:
        """Run ``fn(db)`` on the writer thread. ``limited``: work a client asked for, refused
        with :class:`Overloaded` when ``max_queued`` jobs are waiting already."""
        if limited:
            self.admit()
        fut: Future[T] = Future()
        self._jobs.put((fn, fut, time.perf_counter()))
        return fut

    def post(self, fn: Callable[[Database], object]) -> None:
        """Run ``fn(db)`` on the writer thread with nobody waiting for its result: no future
        (what it raises is logged). Not admitted: the caller counts its requests with
        :meth:`admit` (hostnode/realtime.py queues every WebSocket client's messages this way)."""
        self._jobs.put((fn, None, time.perf_counter()))

    def admit(self) -> None:
        """Raise :class:`Overloaded` when ``max_queued`` client requests wait already."""
        if self.queued >= self.max_queued:
            raise Overloaded(
                f"the database is overloaded: {self.max_queued} requests are already waiting for it; "
                "nothing was run, try again later"
            )

    @property
    def queued(self) -> int:
        """How many client requests wait for the writer now."""
        return self._jobs.qsize() + sum(self.waiting.values())

    def call(self, fn: Callable[[Database], T], timeout: float | None = 60.0) -> T:
        """Run ``fn(db)`` on the writer thread and wait for its result."""
        return self.submit(fn).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Finish queued jobs, close the database and stop the thread."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join(timeout)

    def _run(self, open_fn: Callable[[], Database]) -> None:
        try:
            db = open_fn()
        except BaseException as e:  # noqa: BLE001 - reported to the constructor's caller
            self._ready.set_exception(e)
            return
        self._ready.set_result(db)
        try:
            while True:
                timeout = self._idle_timeout(db)
                try:
                    job = self._jobs.get(timeout=timeout)
                except queue.Empty:
                    job = None
                if job is _STOP:
                    break
                if job is not None:
                    fn, fut, db.queued_at = job
                    if fut is None:
                        try:
                            fn(db)
                        except Exception:
                            log.exception("a job on the writer thread failed")
                    elif fut.set_running_or_notify_cancel():
                        try:
                            fut.set_result(fn(db))
                        except BaseException as e:  # noqa: BLE001 - delivered to the submitter
                            fut.set_exception(e)
                    db.queued_at = 0.0  # scheduled reducers waited for their time, not the queue
                try:
                    db.run_due_schedules()
                    # Checkpoint only after a quiet spell: a checkpoint waits for the commit
                    # log's fsync, and doing that whenever the queue is momentarily empty would
                    # stall the writer between every burst of requests. Readers that need fresh
                    # state checkpoint on demand (see HostNode.sql).
                    if job is None and db.uncheckpointed:
                        db.checkpoint()
                except Exception:
                    log.exception("scheduler/checkpoint failed for %s", db.path)
        finally:
            db.close()

    @staticmethod
    def _idle_timeout(db: Database) -> float:
        # With uncheckpointed transactions, wake after a short quiet spell to checkpoint.
        limit = db.config.idle_checkpoint_s if db.uncheckpointed else 0.5
        nxt = db.next_schedule_micros()
        if nxt is None:
            return limit
        return min(limit, max(0.0, (nxt - time.time_ns() // 1000) / 1e6))
