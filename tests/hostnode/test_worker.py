"""hostnode.worker: the writer thread's jobs, in order, with and without a future."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hostnode.database import Database
from hostnode.worker import DatabaseWorker, Overloaded
from tests.hostnode.conftest import create_db, module_wasm
from tests.waits import PATIENCE


def _worker(tmp_path: Path, max_queued: int = 100) -> DatabaseWorker:
    def open_db() -> Database:
        db, _ = create_db(tmp_path / "db", module_wasm("module-test"))
        return db

    return DatabaseWorker(open_db, max_queued=max_queued)


def test_posted_jobs_run_in_order_with_submitted_ones_on_the_writer_thread(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    try:
        ran: list[tuple[str, str]] = []
        done = threading.Event()

        def job(name: str, result: object = None) -> Callable[[Database], object]:
            def run(db: Database) -> object:
                ran.append((name, threading.current_thread().name))
                if name == "post 2":
                    done.set()
                return result

            return run

        worker.post(job("post 1"))
        fut = worker.submit(job("submit", 7))
        worker.post(job("post 2"))
        assert fut.result(PATIENCE) == 7
        assert done.wait(PATIENCE)
        assert ran == [("post 1", "db-writer"), ("submit", "db-writer"), ("post 2", "db-writer")]
    finally:
        worker.close()


def test_a_posted_job_that_raises_is_logged_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker = _worker(tmp_path)
    try:

        def broken(db: Database) -> None:
            raise ValueError("nobody waits for this one")

        with caplog.at_level(logging.ERROR, logger="hostnode.worker"):
            worker.post(broken)
            assert worker.submit(lambda db: "after").result(PATIENCE) == "after"
        assert any(
            r.message == "a job on the writer thread failed" and r.exc_info and "nobody waits" in str(r.exc_info[1])
            for r in caplog.records
        )
    finally:
        worker.close()


def test_limited_work_past_max_queued_is_refused(tmp_path: Path) -> None:
    worker = _worker(tmp_path, max_queued=1)
    gate, started = threading.Event(), threading.Event()
    try:
        busy = worker.submit(lambda db: started.set() or gate.wait(PATIENCE))  # type: ignore[func-returns-value]
        assert started.wait(PATIENCE)  # the writer is busy with it: nothing waits yet
        worker.submit(lambda db: None, limited=True)  # one waits
        with pytest.raises(Overloaded, match="1 requests are already waiting"):
            worker.submit(lambda db: None, limited=True)
        with pytest.raises(Overloaded):
            worker.admit()
        gate.set()
        assert busy.result(PATIENCE)
    finally:
        gate.set()
        worker.close()
