"""HTTP ``/call`` on a host node: connect → reducer → disconnect, many calls per writer job.

An HTTP call is a client that connects for one reducer call (module-abi.md §7, client-api.md
§6.8). Two things make it cheap without changing what anyone observes:

* **One transaction when nothing can tell the difference.** A module without
  ``client_connected`` / ``client_disconnected`` reducers would see the connect and the
  disconnect only as the ``st_client`` row they insert and delete, so the row lives inside the
  reducer's own transaction (``Database.call_reducer(transient_client=True)``), and only once
  the module has looked ``st_client`` up, the one way it can read it: the reducer sees it as
  before, the pair nets to nothing and the call appends one commit-log record instead of
  three. A failed reducer then leaves no record at all (before: a connect and a disconnect
  that cancelled out). Modules with either lifecycle reducer get the three transactions of
  1.12, and those reducers can still refuse the call.
* **One writer job and one durability wait for many calls.** Calls that wait for the same
  database's writer join one job (:class:`HttpCallQueue`): a call submits a job only when
  none is waiting to start, and the job takes every call queued by the time it runs. The
  answers wait for the durability of the job's last record, once, then go back to the event
  loop together (the log is ordered, so that covers every call of the job).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hostnode.commitlog import LOOP_CALLBACKS
from hostnode.database import Database, DatabaseError, ReducerOutcome
from hostnode.durability import QuorumDurability
from hostnode.worker import DatabaseWorker
from proto.link import encode_call_outcome
from sats.identity import Identity

__all__ = ["CallDone", "HttpCall", "HttpCallQueue", "LinkAnswer", "run_http_call"]

log = logging.getLogger(__name__)

#: This queue's key in ``DatabaseWorker.waiting``.
_WAITING = "http"


@dataclass(init=False)
class HttpCall:
    """What an HTTP `/call` did: the connect outcome, then the reducer's (or why it never ran).

    ``connected`` is None when the module has neither lifecycle reducer: nothing could refuse
    the call, and the connect was folded into the reducer's transaction.
    """

    # (``__init__`` written out here and below: ``dataclass``'s own is interpreted Python even
    # when this module is compiled, and these are made for every call.)
    connected: ReducerOutcome | None
    reducer: ReducerOutcome | None
    error: DatabaseError | None

    def __init__(
        self, connected: ReducerOutcome | None, reducer: ReducerOutcome | None = None, error: DatabaseError | None = None
    ) -> None:
        self.connected = connected
        self.reducer = reducer
        self.error = error


def run_http_call(
    db: Database,
    reducer: str,
    args: bytes | Callable[[], bytes],
    caller: Identity,
    connection_id: int,
    lifecycle: bool,
) -> HttpCall:
    """(writer thread) One HTTP call: connect, the reducer, disconnect.

    ``args`` may be a thunk so that argument decoding errors surface after the connect, as in
    1.12. ``lifecycle``: :attr:`Database.has_client_lifecycle`, else the connect and disconnect
    are folded into the reducer's transaction. A refused connect ends the sequence
    (``reducer`` stays None); a reducer that cannot be called (no such reducer, bad arguments,
    lifecycle) is reported in ``error``.
    """
    if not lifecycle:
        result = HttpCall(None)
        try:
            data = args() if callable(args) else args
            result.reducer = db.call_reducer(
                reducer, data, caller=caller, connection_id=connection_id, transient_client=True
            )
        except DatabaseError as e:
            result.error = e
        return result
    connected = db.client_connected(caller, connection_id)
    result = HttpCall(connected)
    if not connected.committed:
        return result
    try:
        data = args() if callable(args) else args
        result.reducer = db.call_reducer(reducer, data, caller=caller, connection_id=connection_id)
    except DatabaseError as e:
        result.error = e
    finally:
        db.client_disconnected(caller, connection_id)
    return result


#: What gets a call's answer (on the event loop, once durable): the :class:`HttpCall`, or the
#: exception the call (or its durability) failed with.
CallDone = Callable[[HttpCall | BaseException], None]


class _Pending:
    def __init__(
        self, reducer: str, args: bytes | Callable[[], bytes], caller: Identity, connection_id: int,
        done: CallDone, queued_at: float,
    ) -> None:  # fmt: skip
        self.reducer = reducer
        self.args = args
        self.caller = caller
        self.connection_id = connection_id
        self.done = done
        self.queued_at = queued_at
        self.result: HttpCall | BaseException | None = None


class _Job:
    def __init__(self, calls: list[_Pending]) -> None:
        self.calls = calls
        #: The log's last offset after the job (what every answer waits for).
        self.last_offset = -1


class HttpCallQueue:
    """HTTP calls waiting for one database's writer; they run as few writer jobs as possible.

    Calls are added from the event loop; the job runs on the writer thread. Answers are
    delivered on the loop of the call that submitted the job (a host node runs one loop). The
    waiting calls count one by one against the writer's bound (``worker.waiting``): past
    ``worker.max_queued`` a call is refused with :class:`~hostnode.worker.Overloaded` before anything runs,
    as a job of its own would be.
    """

    def __init__(self, worker: DatabaseWorker) -> None:
        self.worker = worker
        self._lock = threading.Lock()
        self._calls: list[_Pending] = []
        #: A job is queued on the writer and has not taken the calls yet.
        self._job_waiting = False
        self._settling: set[asyncio.Task[None]] = set()
        #: The event loop calls are submitted on (a host node runs one).
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(
        self, reducer: str, args: bytes | Callable[[], bytes], caller: Identity, connection_id: int
    ) -> asyncio.Future[HttpCall]:
        """(event loop) Queue one HTTP call (see :func:`run_http_call`): the future of its
        outcome, resolved once durable (raises :class:`~hostnode.worker.Overloaded` at once,
        nothing queued, when the writer is full)."""
        future: asyncio.Future[HttpCall] = asyncio.get_running_loop().create_future()

        def done(result: HttpCall | BaseException) -> None:
            if future.done():
                return  # the caller went away; its call ran all the same
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.submit_with(reducer, args, caller, connection_id, done)
        return future

    def submit_with(
        self, reducer: str, args: bytes | Callable[[], bytes], caller: Identity, connection_id: int, done: CallDone
    ) -> None:
        """:meth:`submit` without a future: ``done`` gets the answer on this loop once it is durable
        (the split server's link answers the gateway from it)."""
        worker = self.worker
        worker.admit()
        loop = self._loop
        if loop is None or not loop.is_running():
            # (once per loop: asyncio.get_running_loop() asks the kernel for the process id)
            loop = self._loop = asyncio.get_running_loop()
        pending = _Pending(reducer, args, caller, connection_id, done, time.perf_counter())
        with self._lock:
            self._calls.append(pending)
            submit = not self._job_waiting
            self._job_waiting = True
            worker.waiting[_WAITING] = len(self._calls) - 1
        if submit:
            # Admitted above, call by call: the job itself is never refused; nobody waits for it.
            worker.post(lambda db: self._run(db, loop))

    def _run(self, db: Database, loop: asyncio.AbstractEventLoop) -> None:
        """(writer thread) Every call queued so far, in order; then one hand-over to ``loop``
        once the job's last record is durable."""
        with self._lock:
            job = _Job(self._calls)
            self._calls = []
            self._job_waiting = False
            self.worker.waiting[_WAITING] = 0
        lifecycle = db.has_client_lifecycle
        for pending in job.calls:
            db.queued_at = pending.queued_at
            try:
                pending.result = run_http_call(
                    db, pending.reducer, pending.args, pending.caller, pending.connection_id, lifecycle
                )
            except BaseException as e:  # noqa: BLE001 - delivered to that call's caller
                pending.result = e
        job.last_offset = db.last_offset
        durability = db.durability
        if job.last_offset >= 0 and not isinstance(durability, QuorumDurability):
            # The durability callback itself answers, on the loop: no task, no future.
            def settle(error: BaseException | None) -> None:
                self._settle(job, error)

            durability.add_callback(job.last_offset, LOOP_CALLBACKS.call_later(loop, settle))
        else:
            # A quorum's wait has a deadline (commit_timeout), which wait_durable_async keeps.
            loop.call_soon_threadsafe(self._settle_when_durable, job)

    def _settle_when_durable(self, job: _Job) -> None:
        if job.last_offset < 0:
            self._settle(job, None)
            return
        task = asyncio.get_running_loop().create_task(self._wait_and_settle(job))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _wait_and_settle(self, job: _Job) -> None:
        error: BaseException | None = None
        try:
            await self.worker.db.durability.wait_durable_async(job.last_offset)
        except Exception as e:  # noqa: BLE001 - every call of the job gets it
            error = e
        self._settle(job, error)

    @staticmethod
    def _settle(job: _Job, error: BaseException | None) -> None:
        """(event loop) Answer every call of ``job`` (``error``: its records never became durable)."""
        for pending in job.calls:
            result = pending.result
            assert result is not None
            try:
                pending.done(result if error is None or isinstance(result, BaseException) else error)
            except Exception:  # noqa: BLE001 - one caller's failure is not the others'
                log.exception("answering an HTTP call failed")


class LinkAnswer:
    """The :data:`CallDone` of a CALL on the split server's link (hostnode/link.py): ``reply`` gets
    the REPLY body. A reducer that ran is answered here, from ``outcomes`` (each status's name of
    the gateway's call outcome), as :func:`proto.link.encode_call_outcome` encodes it; anything
    else — a refused connect, a reducer that could not be called, an exception — by ``other``
    (orrery/standalone_node.py), which maps it as the in-process gateway's backend does."""

    def __init__(
        self, reply: Callable[[bytes], None], outcomes: dict[object, str],
        other: Callable[[HttpCall | BaseException], bytes],
    ) -> None:  # fmt: skip
        self.reply = reply
        self.outcomes = outcomes
        self.other = other

    def __call__(self, result: HttpCall | BaseException) -> None:
        if isinstance(result, HttpCall) and result.error is None:
            outcome = result.reducer
            if outcome is not None:
                body = encode_call_outcome(
                    self.outcomes[outcome.status], outcome.message, outcome.energy_used, outcome.duration_micros
                )
                if body is not None:
                    self.reply(body)
                    return
        self.reply(self.other(result))
