"""A follower replica: the leader's commit log copied record by record, and the LMDB state of
every record the leader says is committed (docs/cluster.md, "Replication stream").

No module runs here: a follower only appends, fsyncs, acknowledges and applies. What it holds
keeps the invariants the replication rules rely on:

* its log only ever grows by the leader's records at the leader's offsets, and is cut back only
  at an epoch divergence point the leader names (REPLICATION.md rule 5);
* it acknowledges an offset only once its own log has it fsynced (rule 2);
* its LMDB checkpoint never holds a record that is not both committed (by the leader's word)
  and durable here — so a truncation never has to undo LMDB, and promoting the replica to
  leader is ``Database.open`` on the same directory, replaying the log tail;
* the highest epoch it promised is fsynced before it says so (rule 1, via the commit log's
  ``epochs`` file).

Threading: every method that touches the log or LMDB runs on the replica's own thread (LMDB
write transactions belong to the thread that began them); the async methods hand work to it.
The commit log's group committer fsyncs on its own thread and reports through a listener.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hostnode.commitlog import CommitLog, GroupCommitter
from hostnode.database import DatabaseConfig, replay_payload
from hostnode.datastore import Datastore
from hostnode.durability import StaleEpoch
from sats.identity import Identity

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = [
    "FollowerReplica",
    "FollowerStatus",
    "ReplicaDivergedError",
    "read_generation",
    "write_generation",
]

#: The per-replica file recording which generation (docs/cluster.md) the data belongs to.
GENERATION_FILE = "replica.json"
#: Follower checkpoints: at most this many records, or this many seconds, apart.
CHECKPOINT_EVERY_RECORDS = 20_000
CHECKPOINT_EVERY_S = 1.0


class ReplicaDivergedError(Exception):
    """The follower cannot continue from its own state (it must start over from a snapshot)."""


def read_generation(path: Path) -> int:
    """The generation a replica directory holds (1 when never recorded)."""
    try:
        return int(json.loads((path / GENERATION_FILE).read_text())["generation"])
    except FileNotFoundError:
        return 1


def write_generation(path: Path, generation: int) -> None:
    """Record the replica's generation durably (temp file, fsync, rename, directory fsync)."""
    tmp = path / (GENERATION_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps({"generation": generation}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / GENERATION_FILE)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FollowerStatus:
    """What a follower tells a leader (and ``Status``) about itself."""

    promised_epoch: int
    last_epoch: int
    next_offset: int
    durable_offset: int
    #: The last record in the LMDB checkpoint (-1: none).
    applied_offset: int
    first_offset: int
    generation: int


class FollowerReplica:
    """One database replica following a leader. Create with :meth:`open` or :meth:`create`
    (both blocking: call them off the event loop)."""

    def __init__(self, identity: Identity, path: Path, config: DatabaseConfig, *, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("use FollowerReplica.open/create")
        self.identity = identity
        self.path = path
        self.config = config
        self.generation = read_generation(path)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"follow-{identity.to_hex()[:12]}")
        self._closed = False
        self.clog: CommitLog
        self.committer: GroupCommitter
        self.datastore: Datastore
        # Records appended but not yet applied to LMDB (offset, payload), oldest first.
        self._unapplied: deque[tuple[int, bytes]] = deque()
        self._applied = -1  # last record applied to the LMDB overlay
        self._commit = 0  # one past the last record the leader said is committed
        self._checkpointed_at = time.monotonic()
        #: Called on the sync thread with the new durable offset (acks hang here).
        self.on_durable: Callable[[int], None] | None = None

    # --- opening and closing (blocking) -----------------------------------------------------

    @classmethod
    def open(cls, identity: Identity, path: Path, config: DatabaseConfig) -> FollowerReplica:
        """Open the replica in ``path`` (a database directory written by a leader or follower)."""
        r = cls(identity, path, config, _token=_TOKEN)
        r._pool.submit(r._open_files).result()
        return r

    @classmethod
    def create(
        cls, identity: Identity, path: Path, config: DatabaseConfig, *, generation: int, promised_epoch: int
    ) -> FollowerReplica:
        """A new, empty replica in ``path`` (which must not exist): the leader streams it
        everything from offset 0, or sends a snapshot."""
        path.mkdir(parents=True)
        write_generation(path, generation)
        log_ = CommitLog.open(path / "clog", segment_size=config.segment_bytes)
        try:
            if promised_epoch:
                log_.promise_epoch(promised_epoch)
        finally:
            log_.close()
        return cls.open(identity, path, config)

    def _open_files(self) -> None:
        self.datastore = Datastore(self.path / "lmdb", map_size=self.config.lmdb_map_size)
        try:
            self.clog = CommitLog.open(self.path / "clog", segment_size=self.config.segment_bytes)
        except BaseException:
            self.datastore.close()
            raise
        self.committer = GroupCommitter(
            self.clog, name=f"sync-{self.identity.to_hex()[:12]}", min_interval=self.config.group_commit_interval_s
        )
        self.committer.listeners.append(self._durable)
        self._applied = self.datastore.applied_offset()
        self._unapplied.clear()
        if self.clog.first_offset > self._applied + 1:
            self._close_files()
            raise ReplicaDivergedError(
                f"{self.path}: the log starts at {self.clog.first_offset} but LMDB holds only up to "
                f"{self._applied}"
            )

    def _durable(self, offset: int) -> None:
        cb = self.on_durable
        if cb is not None:
            cb(offset)

    def _close_files(self) -> None:
        for closer in (self.committer.close, self.clog.close, self.datastore.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 - release everything we can
                log.exception("closing follower files of %s", self.path)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a stream still using the replica must end)."""
        return self._closed

    def close(self) -> None:
        """Checkpoint what may be checkpointed, then release every file (blocking)."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            try:
                self._checkpoint()
            except Exception:  # noqa: BLE001 - the log replays what LMDB lacks
                log.exception("final checkpoint of follower %s failed", self.path)
            self._close_files()

        try:
            self._pool.submit(shut).result()
        finally:
            self._pool.shutdown(wait=True)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the replica's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    # --- state (replica thread) -------------------------------------------------------------

    def status(self) -> FollowerStatus:
        """The replica's epochs and offsets."""
        c = self.clog
        return FollowerStatus(
            promised_epoch=c.promised_epoch,
            last_epoch=self._last_record_epoch(),
            next_offset=c.next_offset,
            durable_offset=self.committer.durable_offset,
            applied_offset=self.datastore.applied_offset(),
            first_offset=c.first_offset,
            generation=self.generation,
        )

    def _last_record_epoch(self) -> int:
        """The epoch of the last record (0 when the log holds none): what divergence needs."""
        c = self.clog
        if c.next_offset == c.first_offset:
            return 0
        last = c.next_offset - 1
        for epoch, start in reversed(c.epoch_history()):
            if start <= last:
                return epoch
        return 0

    def promise(self, epoch: int) -> FollowerStatus:
        """Fsync the log, durably promise ``epoch``, and report the durable log's end."""
        if epoch < self.clog.promised_epoch:
            raise StaleEpoch(f"epoch {epoch} is below the promised epoch {self.clog.promised_epoch}")
        self.clog.sync()
        self.clog.promise_epoch(epoch)
        return self.status()

    def check_epoch(self, epoch: int) -> None:
        """Refuse (``StaleEpoch``) an epoch below the promise; promise a higher one durably."""
        promised = self.clog.promised_epoch
        if epoch < promised:
            raise StaleEpoch(f"epoch {epoch} is below the promised epoch {promised}")
        if epoch > promised:
            self.clog.promise_epoch(epoch)

    def truncate(self, offset: int) -> None:
        """Cut the log back to ``offset`` (records ``>= offset`` go). Records already applied
        to LMDB were committed and can never be cut: asking for that means this replica
        diverged beyond repair (``ReplicaDivergedError``: start over from a snapshot)."""
        if offset <= self._applied or offset < self.clog.first_offset:
            raise ReplicaDivergedError(
                f"cannot truncate to {offset}: records up to {self._applied} are applied and the log "
                f"starts at {self.clog.first_offset}"
            )
        if offset >= self.clog.next_offset:
            return
        log.info("follower %s: truncating the log from %d back to %d", self.path.name[:12], self.clog.next_offset, offset)
        self.clog.truncate(offset)
        while self._unapplied and self._unapplied[-1][0] >= offset:
            self._unapplied.pop()

    def append(self, records: Iterable[tuple[int, int, bytes]], commit_offset: int, retain_offset: int) -> None:
        """Append the leader's records (each at exactly this log's next offset), then apply
        what is committed, checkpoint now and then, and drop log segments nobody needs."""
        clog = self.clog
        appended = False
        for epoch, offset, payload in records:
            if offset != clog.next_offset:
                raise ReplicaDivergedError(f"record {offset} arrived where {clog.next_offset} was expected")
            clog.append(epoch, payload)
            self._unapplied.append((offset, payload))
            appended = True
        if appended:
            self.committer.notify()
        if commit_offset > self._commit:
            self._commit = commit_offset
        self._apply_committed()
        if retain_offset:
            self._collect(retain_offset)

    def idle_heartbeat(self, epoch: int, commit_offset: int) -> bool:
        """Whether an empty batch of ``epoch`` with ``commit_offset`` would change nothing here
        (no newer promise to refuse it, nothing new to apply, nothing left to checkpoint): the
        stream then answers it without a trip to the replica's thread. Any thread."""
        return (
            self.clog.promised_epoch <= epoch
            and commit_offset <= self._commit
            and self._applied == self.datastore.applied_offset()
        )

    def _apply_committed(self) -> None:
        target = min(self._commit, self.clog.next_offset)  # one past the last record to apply
        if self._applied + 1 < target:
            self._apply_until(target)
        n = self._applied - self.datastore.applied_offset()
        if n and (n >= CHECKPOINT_EVERY_RECORDS or time.monotonic() - self._checkpointed_at >= CHECKPOINT_EVERY_S):
            self._checkpoint()

    def _apply_until(self, target: int) -> None:
        q = self._unapplied
        while q and q[0][0] <= self._applied:
            q.popleft()
        if not q or q[0][0] != self._applied + 1:
            # After a reopen the records are in the log only.
            q.clear()
            for rec in self.clog.read_from(self._applied + 1, target):
                replay_payload(self.datastore, rec.payload)
                self._applied = rec.offset
        else:
            while q and q[0][0] < target:
                offset, payload = q.popleft()
                replay_payload(self.datastore, payload)
                self._applied = offset

    def _checkpoint(self) -> None:
        """Commit the applied records to LMDB once the local log has them durable."""
        applied = self._applied
        if applied <= self.datastore.applied_offset():
            return
        if not self.committer.wait_durable(applied, timeout=5.0):
            return
        self.datastore.checkpoint(applied)
        self._checkpointed_at = time.monotonic()

    def checkpoint(self) -> int:
        """Checkpoint now (as far as committed and durable); the applied offset it holds."""
        self._checkpoint()
        return self.datastore.applied_offset()

    def _collect(self, retain_offset: int) -> None:
        """Delete log segments below both the leader's retain point and our own checkpoint."""
        keep_from = min(retain_offset, self.datastore.applied_offset() + 1)
        # Only when a whole segment lies below: this runs after every batch, and
        # delete_segments_before waits for the sync lock, which the fsync thread holds while it
        # syncs — asking every time held each append back until the last fsync was done.
        bases = self.clog.segment_bases()
        if len(bases) > 1 and bases[1] <= keep_from:
            self.clog.delete_segments_before(keep_from)

    # --- starting over from a snapshot (replica thread) --------------------------------------

    def install_snapshot(self, lmdb_dir: Path, applied_offset: int, generation: int) -> None:
        """Replace everything with a leader's LMDB snapshot taken at ``applied_offset``; the log
        starts over right after it, keeping the promised epoch."""
        promised = self.clog.promised_epoch
        self._close_files()
        old = self.path.with_name(f".replaced-{self.path.name}")
        shutil.rmtree(old, ignore_errors=True)
        fresh = self.path.with_name(f".snapshot-{self.path.name}")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        shutil.move(str(lmdb_dir), str(fresh / "lmdb"))
        clog = CommitLog.open(fresh / "clog", segment_size=self.config.segment_bytes, initial_offset=applied_offset + 1)
        try:
            if promised:
                clog.promise_epoch(promised)
        finally:
            clog.close()
        write_generation(fresh, generation)
        # Two renames in one directory; the host node ignores dot-directories after a crash.
        self.path.rename(old)
        fresh.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)
        self.generation = generation
        self._commit = applied_offset + 1
        self._open_files()
        log.info("follower %s: installed a snapshot at offset %d", self.path.name[:12], applied_offset)


_TOKEN = object()
