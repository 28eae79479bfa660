"""Opt-in instrumentation that splits a reducer call's time into wasm, host calls, datastore
and commit log. Used by ``make bench``; it adds a little overhead of its own, so throughput
figures come from uninstrumented runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Profile:
    """Accumulated nanoseconds per category."""

    call_ns: int = 0  # inside ModuleHost.call_reducer (wasm + imports)
    ds_ops_ns: int = 0  # datastore operations made by imports
    ds_txn_ns: int = 0  # begin_mut / commit / rollback
    commit_ns: int = 0  # commit-log record encode + append (+ checkpoint waits)
    host_ns: list[int] = field(default_factory=lambda: [0, 0])

    def split_micros(self, total_s: float, calls: int) -> dict[str, float]:
        """µs per call for each category; ``other`` is the engine's own Python work."""
        us = 1e-3 / calls
        callbacks = self.host_ns[0]
        wasm = (self.call_ns - callbacks) * us
        host = (callbacks - self.ds_ops_ns) * us
        datastore = (self.ds_ops_ns + self.ds_txn_ns) * us
        commitlog = self.commit_ns * us
        total = total_s * 1e6 / calls
        return {
            "wasm": wasm, "host": host, "datastore": datastore, "commitlog": commitlog,
            "other": total - wasm - host - datastore - commitlog, "total": total,
        }


class _TimedTx:
    def __init__(self, tx: Any, prof: Profile) -> None:
        self._tx = tx
        self._prof = prof

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._tx, name)
        if not callable(attr):
            return attr
        prof = self._prof
        is_txn = name in ("commit", "rollback")

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return attr(*a, **kw)
            finally:
                if is_txn:
                    prof.ds_txn_ns += time.perf_counter_ns() - t0
                else:
                    prof.ds_ops_ns += time.perf_counter_ns() - t0

        return timed


def _timed(fn: Callable[..., Any], add: Callable[[int], None]) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return fn(*a, **kw)
        finally:
            add(time.perf_counter_ns() - t0)

    return wrapper


class ProfilingUnavailable(RuntimeError):
    """The engine is compiled (``make native``): its methods cannot be wrapped."""


@contextmanager
def enabled(db: Any) -> Iterator[Profile]:
    """Instrument ``db`` (a hostnode.database.Database) for the duration of the block.

    The instrumentation replaces methods on the instances, which compiled (mypyc) classes do
    not allow; with the compiled engine this raises :class:`ProfilingUnavailable`.
    """
    if not hasattr(db, "__dict__"):
        raise ProfilingUnavailable(
            "the time split wraps the engine's methods, which the compiled engine (make native) does not "
            "allow; run with NATIVE=0 for it"
        )
    prof = Profile()
    host = db.host
    begin = db.datastore.begin_mut

    def begin_mut() -> Any:
        t0 = time.perf_counter_ns()
        tx = begin()
        prof.ds_txn_ns += time.perf_counter_ns() - t0
        return _TimedTx(tx, prof)

    def add_call(ns: int) -> None:
        prof.call_ns += ns

    def add_commit(ns: int) -> None:
        prof.commit_ns += ns

    db.datastore.begin_mut = begin_mut
    host.call_reducer = _timed(host.call_reducer, add_call)
    db._commit = _timed(db._commit, add_commit)
    host.profile_ns = prof.host_ns
    try:
        yield prof
    finally:
        del db.datastore.begin_mut
        del host.call_reducer
        del db._commit
        host.profile_ns = None
