"""A host node in a cluster: which replicas it leads, which it follows, and the Replication RPCs.

:class:`ClusterNode` owns the role of every replica on this node (docs/cluster.md). It learns
what to be from database records — pushed by the control plane (``Assign``) and read from the
metadata store's watch — and acts on them idempotently, one database at a time:

* **leader of epoch e**: closes the follower, opens the database (``Database.open``: replays the
  log tail, arms schedules, disconnects stale clients), appends the epoch-start record and
  starts :class:`~hostnode.replication.LeaderReplication`. It refuses to lead an epoch its log
  already has records of: that means it led this epoch before a restart and may have lost its
  unsynced tail (REPLICATION.md rule 4) — the control plane elects anew instead;
* **follower**: keeps a :class:`~hostnode.follower.FollowerReplica` open and answers the
  leader's stream; it creates an empty replica for a database it has never held;
* **stepping down** (a newer epoch in a record, a ``Promise``, a follower that refuses our
  epoch, a lost lease): new calls get ``NOT_LEADER`` at once, waiting callers get ``OUTCOME_UNKNOWN``,
  WebSocket clients are closed with 1012, and the replica reopens as a follower (LMDB holds only
  committed data, so nothing needs undoing).

The standalone :class:`~hostnode.service.HostNode` keeps serving calls; this object sits beside it
(``node.cluster``) and tells it, on every call, whether this node may serve the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from clustermeta.aio import cancel_and_wait
from clustermeta.records import DatabaseRecord, DbState
from hostnode.database import Database, DatabaseConfig
from hostnode.digest import table_digest
from hostnode.durability import NotLeader, OutcomeUnknown, StaleEpoch
from hostnode.follower import FollowerReplica, ReplicaDivergedError, read_generation, write_generation
from hostnode.realtime import CLOSE_LEADER_CHANGED
from hostnode.replication import ChannelPool, LeaderReplication, PeerSpec, ReplicationConfig
from hostnode.service import DatabaseNotFound, HostNode, InstallResult
from hostnode.stats import ReplicaCounters
from hostnode.worker import DatabaseWorker
from proto import hostnode_pb2 as pb
from proto.auth import ClusterSecret
from sats.identity import Identity

log = logging.getLogger(__name__)

__all__ = ["ClusterConfig", "ClusterNode"]

#: Seconds between maintenance rounds (log segment collection).
MAINTENANCE_EVERY_S = 5.0
#: Bytes per SnapshotChunk.
SNAPSHOT_CHUNK = 1 << 20
#: Queued in a follower stream's outbox: "send an ack with the current durable offset".
_ACK: Any = object()


@dataclass
class ClusterConfig:
    """One host node's place in the cluster."""

    node_id: str
    #: host:port other nodes and gateways reach this node's gRPC services at.
    address: str
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    #: Drawn at every process start (docs/cluster.md): a restarted node is a new incarnation.
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: A follower counts as caught up (readiness) while it lacks at most this many of the
    #: records its leader says are committed: under load a healthy follower trails by a few
    #: fsyncs' worth.
    ready_lag_records: int = 1000
    #: What every call to and from the other processes of the cluster carries (proto/auth.py).
    secret: ClusterSecret = field(kw_only=True)


class ClusterNode:
    """The replication roles of every replica on one host node (see the module docstring)."""

    def __init__(
        self,
        node: HostNode,
        config: ClusterConfig,
        *,
        lease_valid: Callable[[], bool] = lambda: True,
    ) -> None:
        self.node = node
        self.config = config
        self.node_id = config.node_id
        self.lease_valid = lease_valid
        base = node.config.database or DatabaseConfig()
        self.db_config = dataclasses.replace(base, replicated=True)
        self.followers: dict[Identity, FollowerReplica] = {}
        self.leading: dict[Identity, LeaderReplication] = {}
        self.records: dict[Identity, DatabaseRecord] = {}
        #: node id → address, from records and Assign messages.
        self.peers: dict[str, str] = {config.node_id: config.address}
        #: The last commit point a leader told us, per database (a floor for a new leader).
        self.known_commit: dict[Identity, int] = {}
        self.channels = ChannelPool(config.secret)
        self._locks: dict[Identity, asyncio.Lock] = {}
        #: The epoch of the replication stream a follower currently answers.
        self._streams: dict[Identity, tuple[int, asyncio.Event]] = {}
        #: Followers whose current stream has delivered a batch: the commit point it carried.
        self._stream_commit: dict[Identity, int] = {}
        #: Per database: counters that outlive roles and epochs (exported by hostnode/metrics.py).
        self.counters: dict[Identity, ReplicaCounters] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Set by :meth:`stop`: records, promises and streams arriving afterwards are ignored.
        self._stopping = False
        node.cluster = self

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every replica on disk as a follower (a restarted node leads nothing until the
        control plane elects it again)."""
        root = self.node.root
        root.mkdir(parents=True, exist_ok=True)
        for path in sorted(root.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            try:
                identity = Identity.from_hex(path.name)
            except Exception:  # noqa: BLE001 - a stray directory is reported, not fatal
                log.warning("ignoring %s: not a replica directory", path)
                continue
            try:
                self.followers[identity] = await asyncio.to_thread(
                    FollowerReplica.open, identity, path, self.db_config
                )
            except Exception:  # noqa: BLE001 - one broken replica must not stop the node
                log.exception("could not open replica %s; it will be rebuilt from a leader", path.name)
        self._spawn(self._maintain())

    async def stop(self) -> None:
        """Step down from everything and close every replica."""
        # RPCs are still served until the gRPC server stops: none may reopen a closed replica
        # (each checks ``_stopping`` under the database's lock, which the closing here holds).
        self._stopping = True
        for identity in list({*self.leading, *self.followers, *self._locks}):
            async with self._lock(identity):  # after whatever is being done to it
                with contextlib.suppress(Exception):
                    await self._step_down(identity, "the node is shutting down", reopen=False)
                follower = self.followers.pop(identity, None)
                if follower is not None:
                    await asyncio.to_thread(follower.close)
        for task in list(self._tasks):
            task.cancel()
        await self.channels.close()

    def lease_lost(self) -> None:
        """The node's lease is gone: stop leading everything now (rule 6). The node comes back
        as a new incarnation, so the control plane elects anew wherever it led."""
        self.config.incarnation = uuid.uuid4().hex
        for identity in list(self.leading):
            self._spawn(self._locked_step_down(identity, "this node lost its cluster lease"))

    async def _maintain(self) -> None:
        """Now and then: delete log segments every replica is done with (leaders decide; their
        followers follow the retain point in the stream)."""
        while True:
            await asyncio.sleep(MAINTENANCE_EVERY_S)
            for identity, leader in list(self.leading.items()):
                worker = self.node._workers.get(identity)
                if worker is None:
                    continue
                try:
                    await asyncio.wrap_future(worker.submit(functools.partial(_collect, leader)))
                except Exception:  # noqa: BLE001 - retried next round
                    log.exception("collecting log segments of %s failed", identity.to_hex()[:16])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lock(self, identity: Identity) -> asyncio.Lock:
        return self._locks.setdefault(identity, asyncio.Lock())

    def counters_of(self, identity: Identity) -> ReplicaCounters:
        """The counters of ``identity`` on this node (created on first use)."""
        c = self.counters.get(identity)
        if c is None:
            c = self.counters[identity] = ReplicaCounters()
        return c

    def stream_epoch(self, identity: Identity) -> int | None:
        """The epoch of the leader's stream this node's replica of ``identity`` answers now."""
        stream = self._streams.get(identity)
        return None if stream is None else stream[0]

    def follows_leader(self, identity: Identity) -> bool:
        """Whether this node holds a follower (or learner) replica of ``identity`` whose record
        names another node as leader."""
        record = self.records.get(identity)
        return (
            identity in self.followers
            and record is not None
            and record.state is DbState.ACTIVE
            and record.leader is not None
            and record.leader != self.node_id
            and self.node_id in record.nodes()
        )

    def lagging(self, identity: Identity) -> str | None:
        """Why this node's replica of ``identity`` is not caught up with the leader its record
        names, or None: it streams from that leader and lacks at most ``ready_lag_records`` of
        the records the leader said are committed. None too for a replica that follows nobody
        (the record names no leader: an election runs, or no majority is reachable)."""
        if not self.follows_leader(identity):
            return None
        record = self.records[identity]
        name = identity.to_hex()[:16]
        commit = self._stream_commit.get(identity)
        follower = self.followers.get(identity)
        if commit is None or follower is None:
            return f"replica of {name} is not streaming from its leader {record.leader} yet"
        behind = commit - follower.committer.durable_offset
        if behind > self.config.ready_lag_records:
            return f"replica of {name} is {behind} records behind its leader {record.leader}"
        return None

    def readiness(self) -> str | None:
        """Why this node is not ready to serve, or None (``/readyz``): every replica it follows
        must be connected to its leader and caught up (:meth:`lagging`)."""
        for identity in list(self.followers):
            reason = self.lagging(identity)
            if reason is not None:
                return reason
        return None

    def _path(self, identity: Identity) -> Path:
        return self.node.root / identity.to_hex()

    # --- what HostNode asks on every call -------------------------------------------------------

    def refuse_not_leading(self, identity: Identity) -> None:
        """Raise NotLeader if this node holds (or is assigned) a replica it does not lead."""
        record = self.records.get(identity)
        if identity in self.followers or (record is not None and self.node_id in record.nodes()):
            leader = record.leader if record is not None else None
            where = f"node {leader} leads it" if leader else "it has no leader right now"
            raise NotLeader(f"node {self.node_id} does not lead database {identity.to_hex()}; {where}")

    def check_serving(self, identity: Identity) -> None:
        """Raise NotLeader when a database led here may not be served right now."""
        leader = self.leading.get(identity)
        if leader is None:
            return  # created by a standalone path (tests): nothing to check
        if leader._stopped:
            raise NotLeader(f"node {self.node_id} is stepping down as leader of {identity.to_hex()}")
        if not self.lease_valid():
            raise NotLeader(f"node {self.node_id} lost its cluster lease and no longer leads {identity.to_hex()}")

    # --- records: what to be --------------------------------------------------------------------

    async def apply_record(
        self, identity: Identity, record: DatabaseRecord | None, peers: dict[str, str] | None = None
    ) -> None:
        """Act on a database record (None: the record is gone). Idempotent; stale records
        (older epoch and generation than one already seen, or the leaderless record of an epoch
        whose leader is known) are ignored."""
        if peers:
            # An empty address (a node the sender knows no address of) never erases one we know.
            self.peers.update({n: a for n, a in peers.items() if a})
        async with self._lock(identity):
            if self._stopping:
                return
            if record is None:
                self.records.pop(identity, None)
                await self._drop(identity)
                return
            old = self.records.get(identity)
            if old is not None and (record.generation, record.epoch) < (old.generation, old.epoch):
                return
            if (
                old is not None
                and (record.generation, record.epoch) == (old.generation, old.epoch)
                and record.leader is None
                and old.leader is not None
            ):
                # Within an epoch a record only goes from leaderless (an election's first write)
                # to naming the leader: this one is older than what we know (the watch can deliver
                # it after the control plane's Assign of the elected record). Acting on it would
                # make the new leader step down from an epoch it can never lead again.
                return
            self.records[identity] = record
            if self.node_id not in record.nodes():
                if record.state is not DbState.CREATING and (identity in self.followers or identity in self.leading):
                    log.info("replica of %s is no longer assigned here; removing it", identity.to_hex()[:16])
                    await self._drop(identity)
                return
            leading = self.leading.get(identity)
            if record.leader == self.node_id and record.state is DbState.ACTIVE:
                if leading is not None and leading.epoch == record.epoch:
                    await leading.set_learners([p for p in self._peers_of(record) if p.learner])
                    return
                if leading is not None:
                    await self._step_down(identity, f"epoch {record.epoch} begins")
                await self._become_leader(identity, record)
            elif leading is not None and (record.leader != self.node_id or record.epoch > leading.epoch):
                await self._step_down(identity, f"node {record.leader or '(none)'} leads epoch {record.epoch}")

    async def _become_leader(self, identity: Identity, record: DatabaseRecord) -> None:
        follower = self.followers.get(identity)
        if follower is None:
            if not self._path(identity).is_dir():
                log.error("asked to lead %s but this node holds no replica of it", identity.to_hex())
                return
            follower = await asyncio.to_thread(FollowerReplica.open, identity, self._path(identity), self.db_config)
            self.followers[identity] = follower
        st = await follower.run(follower.status)
        if st.last_epoch >= record.epoch or st.promised_epoch > record.epoch:
            log.warning(
                "not leading %s in epoch %d: this replica's log already reached epoch %d (promised %d); "
                "a new election is needed",
                identity.to_hex()[:16], record.epoch, st.last_epoch, st.promised_epoch,
            )  # fmt: skip
            return
        if st.generation != record.generation:
            log.warning("not leading %s: replica generation %d, record %d", identity.to_hex()[:16], st.generation, record.generation)
            return
        known = max(self.known_commit.get(identity, 0), st.applied_offset + 1)
        self.followers.pop(identity, None)
        self._end_stream(identity)
        await asyncio.to_thread(follower.close)
        await self._open_leader(identity, record, known_commit=known)

    def _peers_of(self, record: DatabaseRecord) -> list[PeerSpec]:
        specs = [PeerSpec(n, self.peers.get(n, ""), learner=False) for n in record.replicas]
        specs += [PeerSpec(n, self.peers.get(n, ""), learner=True) for n in record.learners]
        return [s for s in specs if s.node_id != self.node_id]

    def _leader_for(self, identity: Identity, record: DatabaseRecord, known_commit: int) -> LeaderReplication:
        loop = asyncio.get_running_loop()

        def fenced(reason: str) -> None:
            self._spawn(self._locked_step_down(identity, reason))

        return LeaderReplication(
            identity,
            node_id=self.node_id,
            epoch=record.epoch,
            generation=record.generation,
            peers=self._peers_of(record),
            channels=self.channels,
            config=self.config.replication,
            loop=loop,
            on_fenced=fenced,
            lease_valid=self.lease_valid,
            known_commit=known_commit,
            resolve=lambda n: self.peers.get(n, ""),
            counters=self.counters_of(identity),
        )

    async def _open_leader(self, identity: Identity, record: DatabaseRecord, *, known_commit: int) -> None:
        path = self._path(identity)
        leader = self._leader_for(identity, record, known_commit)
        config = dataclasses.replace(self.db_config, epoch=record.epoch)
        hooks = leader.hooks()
        started = time.monotonic()
        try:
            worker = await asyncio.to_thread(
                self.node.new_worker, lambda: Database.open(path, config, hooks), identity.to_hex()
            )
            await asyncio.wrap_future(worker.submit(lambda db: db.begin_epoch()))
        except Exception:
            log.exception("could not open %s as leader; staying a follower", identity.to_hex()[:16])
            await leader.stop(OutcomeUnknown("the leader failed to start"))
            self.followers[identity] = await asyncio.to_thread(FollowerReplica.open, identity, path, self.db_config)
            return
        self._start_leading(identity, leader, worker)
        log.info(
            "leading %s in epoch %d (opened in %.3fs)", identity.to_hex()[:16], record.epoch, time.monotonic() - started
        )

    def _start_leading(self, identity: Identity, leader: LeaderReplication, worker: DatabaseWorker) -> None:
        leader.start(worker.db)
        self.leading[identity] = leader
        self.node._workers[identity] = worker
        self.counters_of(identity).became_leader += 1

    async def _locked_step_down(self, identity: Identity, reason: str) -> None:
        async with self._lock(identity):
            if identity in self.leading:
                await self._step_down(identity, reason)

    async def _step_down(self, identity: Identity, reason: str, *, reopen: bool = True) -> None:
        leader = self.leading.pop(identity, None)
        if leader is None:
            return
        log.info("stepping down as leader of %s (epoch %d): %s", identity.to_hex()[:16], leader.epoch, reason)
        self.counters_of(identity).stepped_down += 1
        worker = self.node._workers.pop(identity, None)
        self.node._drop_hub(identity, CLOSE_LEADER_CHANGED)
        self.known_commit[identity] = max(self.known_commit.get(identity, 0), leader.commit_offset)
        await leader.stop(OutcomeUnknown(f"the leader stepped down ({reason}); the outcome is unknown"))
        if worker is not None:
            await asyncio.to_thread(worker.close)
        if reopen and self._path(identity).is_dir():
            self.followers[identity] = await asyncio.to_thread(
                FollowerReplica.open, identity, self._path(identity), self.db_config
            )

    def _end_stream(self, identity: Identity) -> None:
        """End the replication stream this node answers for ``identity`` (its replica closes)."""
        stream = self._streams.get(identity)
        if stream is not None:
            stream[1].set()

    async def _drop(self, identity: Identity) -> None:
        """Remove this node's replica of ``identity`` entirely (files included)."""
        await self._step_down(identity, "the replica is removed", reopen=False)
        follower = self.followers.pop(identity, None)
        self._end_stream(identity)
        if follower is not None:
            await asyncio.to_thread(follower.close)
        worker = self.node._workers.pop(identity, None)
        if worker is not None:
            await asyncio.to_thread(worker.close)
        await asyncio.to_thread(shutil.rmtree, self._path(identity), True)

    # --- publishing (HostNode.Install / Delete in cluster mode) ----------------------------------

    async def install(
        self,
        identity: Identity,
        owner: Identity,
        program: bytes,
        *,
        epoch: int,
        replicas: Sequence[tuple[str, str]],
        learners: Sequence[tuple[str, str]] = (),
        generation: int = 1,
        clear: bool = False,
        token: bytes | None = None,
    ) -> InstallResult:
        """Create (this node leads ``epoch``), update or reset a replicated database; answers
        once a majority of ``replicas`` has the install durable."""
        for n, a in [*replicas, *learners]:
            if a:
                self.peers[n] = a
        record = DatabaseRecord(
            identity, owner, state=DbState.ACTIVE, num_replicas=len(replicas), replicas=[n for n, _ in replicas],
            learners=[n for n, _ in learners], leader=self.node_id, epoch=epoch, generation=generation,
        )  # fmt: skip
        async with self._lock(identity):
            self.records[identity] = record
            leader = self.leading.get(identity)
            if leader is not None and not clear:
                if leader.epoch != epoch:
                    raise NotLeader(f"node {self.node_id} leads {identity.to_hex()} in epoch {leader.epoch}, not {epoch}")
                worker = self.node._workers[identity]
                plan = await asyncio.wrap_future(worker.submit(lambda db: db.update_program(program, token=token)))
                db = worker.db
                await db.durability.wait_durable_async(db.last_offset)
                return InstallResult(created=False, migration=plan)
            # A create or a reset: build the database in a staging directory first (a failing
            # program leaves what was there), then swap it in and lead it.
            if leader is not None:
                await self._step_down(identity, "the database is reset", reopen=False)
            follower = self.followers.pop(identity, None)
            if follower is not None:
                await asyncio.to_thread(follower.close)
            path = self._path(identity)
            staging = self.node.root / f".staging-{identity.to_hex()}"
            config = dataclasses.replace(self.db_config, epoch=epoch)

            def create() -> Any:
                shutil.rmtree(staging, True)
                # Locally durable only: until the replicas have it, the record stays `creating`
                # (or, for a reset, the generation is new), so nothing here is acknowledged yet.
                db, init = Database.create(
                    staging, program, owner=owner, identity=identity, config=dataclasses.replace(config, replicated=False)
                )
                db.close()
                write_generation(staging, generation)
                shutil.rmtree(path, True)
                staging.rename(path)
                return init

            try:
                init = await asyncio.to_thread(create)
            except BaseException:
                if path.is_dir():  # a reset that failed: what was there stays
                    self.followers[identity] = await asyncio.to_thread(
                        FollowerReplica.open, identity, path, self.db_config
                    )
                raise
            leader = self._leader_for(identity, record, known_commit=0)
            hooks = leader.hooks()
            worker = await asyncio.to_thread(
                self.node.new_worker, lambda: Database.open(path, config, hooks), identity.to_hex()
            )
            self._start_leading(identity, leader, worker)
            db = worker.db
        await db.durability.wait_durable_async(db.last_offset)
        return InstallResult(created=True, init=init)

    async def delete(self, identity: Identity) -> None:
        """Remove this node's replica of a deleted database."""
        async with self._lock(identity):
            had = identity in self.followers or identity in self.leading or self._path(identity).is_dir()
            self.records.pop(identity, None)
            await self._drop(identity)
        if not had:
            raise DatabaseNotFound(f"no database {identity.to_hex()} on this node")

    # --- Replication RPCs ---------------------------------------------------------------------

    async def promise(self, identity: Identity, epoch: int) -> pb.PromiseResponse:
        """``Promise``: durably promise ``epoch`` (stepping down from anything older)."""
        async with self._lock(identity):
            if self._stopping:
                return pb.PromiseResponse(
                    failure=pb.Failure(kind=pb.ERROR_KIND_NOT_LEADER, message=f"node {self.node_id} is shutting down")
                )
            leader = self.leading.get(identity)
            if leader is not None:
                if epoch <= leader.epoch:
                    return pb.PromiseResponse(
                        failure=pb.Failure(
                            kind=pb.ERROR_KIND_STALE_EPOCH,
                            message=f"epoch {epoch} is not above the epoch {leader.epoch} this node leads",
                        ),
                        promised_epoch=leader.epoch,
                    )
                await self._step_down(identity, f"promised epoch {epoch}")
            follower = self.followers.get(identity)
            if follower is None:
                path = self._path(identity)
                if path.is_dir():
                    follower = await asyncio.to_thread(FollowerReplica.open, identity, path, self.db_config)
                else:
                    # Placed here but nothing received yet: an empty replica whose promise holds
                    # (it must refuse an older leader's stream from now on).
                    record = self.records.get(identity)
                    follower = await asyncio.to_thread(
                        FollowerReplica.create, identity, path, self.db_config,
                        generation=record.generation if record is not None else 1, promised_epoch=epoch,
                    )  # fmt: skip
                self.followers[identity] = follower
            f = follower
            try:
                st = await f.run(functools.partial(f.promise, epoch))
            except StaleEpoch as e:
                return pb.PromiseResponse(
                    failure=pb.Failure(kind=pb.ERROR_KIND_STALE_EPOCH, message=str(e)),
                    promised_epoch=f.clog.promised_epoch,
                )
            stream = self._streams.get(identity)
            if stream is not None and stream[0] < epoch:
                stream[1].set()  # end the older leader's stream: no more acks to it
        return pb.PromiseResponse(
            promised_epoch=st.promised_epoch, last_epoch=st.last_epoch, next_offset=st.durable_offset,
            generation=st.generation,
        )  # fmt: skip

    async def replicate(self, context: Any) -> None:
        """``Replicate`` (follower side): answer one leader's stream until it ends, a newer
        leader's stream replaces it, or this replica promises a newer epoch."""
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("msg") != "hello":
            return
        hello = first.hello
        identity = Identity.from_bsatn(hello.database_identity)
        try:
            follower = await self._follower_for_stream(identity, hello)
        except (StaleEpoch, NotLeader) as e:
            await context.write(pb.FollowerMessage(refused=pb.Failure(kind=pb.ERROR_KIND_STALE_EPOCH, message=str(e))))
            return
        except DatabaseNotFound as e:  # not (or no longer) placed here: the leader retries, unfenced
            await context.write(pb.FollowerMessage(refused=pb.Failure(kind=pb.ERROR_KIND_NO_SUCH_DATABASE, message=str(e))))
            return
        ended = asyncio.Event()
        previous = self._streams.get(identity)
        if previous is not None:
            previous[1].set()
        self._streams[identity] = (hello.epoch, ended)
        out: asyncio.Queue[pb.FollowerMessage | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        ack_due = [False]

        def durable(_offset: int) -> None:  # sync thread: ask the writer for an ack, once
            if not ack_due[0]:
                ack_due[0] = True
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(out.put_nowait, _ACK)

        follower.on_durable = durable
        tasks = [
            asyncio.create_task(self._follower_writer(context, follower, out, ack_due, hello.epoch)),
            asyncio.create_task(self._follower_reader(context, identity, follower, hello, out)),
            asyncio.create_task(ended.wait()),
        ]
        try:
            await out.put(pb.FollowerMessage(state=_state(await follower.run(follower.status))))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if isinstance(exc, StaleEpoch):
                    with contextlib.suppress(Exception):
                        await context.write(
                            pb.FollowerMessage(refused=pb.Failure(kind=pb.ERROR_KIND_STALE_EPOCH, message=str(exc)))
                        )
                elif follower.closed and exc is not None:
                    # The replica was removed, or this node leads it now: the stream is over.
                    log.info("replication stream of %s ended: the replica was closed", identity.to_hex()[:16])
                elif exc is not None and not isinstance(exc, asyncio.CancelledError | grpc.aio.AioRpcError):
                    log.error("replication stream of %s failed: %r", identity.to_hex()[:16], exc)
        finally:
            await cancel_and_wait(*tasks)
            if self._streams.get(identity, (0, None))[1] is ended:
                self._streams.pop(identity, None)
                self._stream_commit.pop(identity, None)
            if follower.on_durable is durable:
                follower.on_durable = None

    async def _follower_for_stream(self, identity: Identity, hello: pb.ReplicateHello) -> FollowerReplica:
        async with self._lock(identity):
            if self._stopping:
                raise DatabaseNotFound(f"node {self.node_id} is shutting down")
            leader = self.leading.get(identity)
            if leader is not None:
                if hello.epoch <= leader.epoch:
                    raise StaleEpoch(f"this node leads epoch {leader.epoch}; epoch {hello.epoch} is older")
                await self._step_down(identity, f"node {hello.leader_node} leads epoch {hello.epoch}")
            follower = self.followers.get(identity)
            path = self._path(identity)
            record = self.records.get(identity)
            if follower is None and record is not None and self.node_id not in record.nodes():
                # Removed from the replicas (or not yet added, as far as we heard): a stream must
                # not bring the replica back. An older epoch's leader is fenced; one of this
                # epoch retries until we hear the record that adds us.
                if hello.epoch < record.epoch:
                    raise StaleEpoch(f"epoch {record.epoch} leaves node {self.node_id} out; epoch {hello.epoch} is older")
                raise DatabaseNotFound(
                    f"the record of epoch {record.epoch} places no replica of {identity.to_hex()} on node {self.node_id}"
                )
            if follower is None:
                if path.is_dir():
                    try:
                        follower = await asyncio.to_thread(FollowerReplica.open, identity, path, self.db_config)
                    except Exception:  # noqa: BLE001 - unreadable: start over from the leader
                        log.exception("replica %s is unreadable; starting over", path.name[:16])
                        await asyncio.to_thread(shutil.rmtree, path, True)
                if follower is None:
                    follower = await asyncio.to_thread(
                        FollowerReplica.create, identity, path, self.db_config,
                        generation=hello.generation, promised_epoch=hello.epoch,
                    )  # fmt: skip
                self.followers[identity] = follower
            f = follower
            await f.run(lambda: f.check_epoch(hello.epoch))
            return f

    async def _follower_writer(
        self,
        context: Any,
        follower: FollowerReplica,
        out: asyncio.Queue[Any],
        ack_due: list[bool],
        epoch: int,
    ) -> None:
        """The stream's only writer: queued messages in order, and an ack after each fsync."""
        sent_durable = -1
        while True:
            msg = await out.get()
            if follower.clog.promised_epoch > epoch:
                raise StaleEpoch(f"this replica promised epoch {follower.clog.promised_epoch}")
            if msg is _ACK:
                ack_due[0] = False
                durable = follower.committer.durable_offset
                if durable == sent_durable:
                    continue
                msg = pb.FollowerMessage(
                    ack=pb.FollowerAck(durable_offset=durable, applied_offset=follower.datastore.applied_offset())
                )
            elif msg.WhichOneof("msg") == "ack":
                if msg.ack.durable_offset < sent_durable:
                    continue
            if msg.WhichOneof("msg") == "ack":
                sent_durable = msg.ack.durable_offset
            await context.write(msg)

    async def _follower_reader(
        self,
        context: Any,
        identity: Identity,
        follower: FollowerReplica,
        hello: pb.ReplicateHello,
        out: asyncio.Queue[Any],
    ) -> None:
        """Apply the leader's messages in order (each on the replica's thread)."""
        epoch = hello.epoch
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF:
                return
            kind = msg.WhichOneof("msg")
            if kind == "records":
                batch = msg.records
                records = [(r.epoch, r.offset, r.payload) for r in batch.records]
                commit, retain = batch.commit_offset, batch.retain_offset
                if records or not follower.idle_heartbeat(epoch, commit):
                    await follower.run(functools.partial(_append_checked, follower, epoch, records, commit, retain))
                if commit > self.known_commit.get(identity, 0):
                    self.known_commit[identity] = commit
                if self.stream_epoch(identity) == epoch:
                    self._stream_commit[identity] = commit
                if not records:  # a heartbeat: answer so the leader knows we are here
                    await out.put(pb.FollowerMessage(ack=pb.FollowerAck(
                        durable_offset=follower.committer.durable_offset,
                        applied_offset=follower.datastore.applied_offset(),
                    )))  # fmt: skip
                    # (the writer sends it even when the durable offset has not moved)
            elif kind == "truncate_to":
                point = msg.truncate_to
                try:
                    await follower.run(functools.partial(follower.truncate, point))
                except ReplicaDivergedError as e:
                    log.warning("replica %s: %s; fetching a snapshot", identity.to_hex()[:16], e)
                    await self._fetch_snapshot(identity, follower, hello)
                await out.put(pb.FollowerMessage(state=_state(await follower.run(follower.status))))
            elif kind == "snapshot_needed":
                await self._fetch_snapshot(identity, follower, hello)
                await out.put(pb.FollowerMessage(state=_state(await follower.run(follower.status))))

    async def _fetch_snapshot(self, identity: Identity, follower: FollowerReplica, hello: pb.ReplicateHello) -> None:
        address = self.peers.get(hello.leader_node)
        if not address:
            raise ConnectionError(f"no address known for leader {hello.leader_node}")
        stub = self.channels.replication(address)
        incoming = Path(tempfile.mkdtemp(prefix=f".incoming-{identity.to_hex()[:16]}-", dir=self.node.root))
        started = time.perf_counter()
        try:
            applied, generation, total, got = -1, hello.generation, 0, 0
            lmdb_dir = incoming / "lmdb"
            lmdb_dir.mkdir()
            with open(lmdb_dir / "data.mdb", "wb") as f:
                call = stub.GetSnapshot(
                    pb.SnapshotRequest(database_identity=identity.to_bsatn(), epoch=hello.epoch),
                    timeout=self.config.replication.snapshot_timeout_s,
                )
                first = True
                async for chunk in call:
                    if chunk.failure.kind:
                        raise ConnectionError(f"snapshot refused: {chunk.failure.message}")
                    if first:
                        applied, generation, total, first = chunk.applied_offset, chunk.generation, chunk.total_bytes, False
                    f.write(chunk.data)
                    got += len(chunk.data)
                f.flush()
                os.fsync(f.fileno())
            if got != total:
                raise ConnectionError(f"snapshot ended after {got} of {total} bytes")
            await follower.run(lambda: follower.install_snapshot(lmdb_dir, applied, generation))
            self.known_commit[identity] = max(self.known_commit.get(identity, 0), applied + 1)
            counters = self.counters_of(identity)
            counters.snapshots["installed"].observe(time.perf_counter() - started)
            counters.snapshot_bytes["installed"] += got
        finally:
            await asyncio.to_thread(shutil.rmtree, incoming, True)

    async def snapshot(self, identity: Identity, epoch: int) -> AsyncIterator[pb.SnapshotChunk]:
        """``GetSnapshot`` (leader side): the LMDB state at our last checkpoint, in chunks."""
        leader = self.leading.get(identity)
        if leader is None or leader.db is None:
            yield pb.SnapshotChunk(failure=pb.Failure(kind=pb.ERROR_KIND_NOT_LEADER, message=f"node {self.node_id} does not lead {identity.to_hex()}"))
            return
        db = leader.db
        tmp = Path(tempfile.mkdtemp(prefix=".snapshot-out-", dir=self.node.root))
        pins = leader.pins
        pin = db.clog.first_offset
        pins.append(pin)
        started = time.perf_counter()
        sent = 0
        try:
            applied = await asyncio.to_thread(db.datastore.copy_to, tmp / "lmdb")
            pins.remove(pin)
            pin = applied + 1
            pins.append(pin)
            data = tmp / "lmdb" / "data.mdb"
            total = data.stat().st_size
            with open(data, "rb") as f:
                first = True
                while True:
                    chunk = await asyncio.to_thread(f.read, SNAPSHOT_CHUNK)
                    if first:
                        yield pb.SnapshotChunk(applied_offset=applied, generation=leader.generation, total_bytes=total, data=chunk)
                        first = False
                    elif chunk:
                        yield pb.SnapshotChunk(data=chunk)
                    sent += len(chunk)
                    if not chunk:
                        break
            counters = self.counters_of(identity)
            counters.snapshots["sent"].observe(time.perf_counter() - started)
            counters.snapshot_bytes["sent"] += sent
        finally:
            with contextlib.suppress(ValueError):
                pins.remove(pin)
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    def status(self, identity: Identity | None = None) -> pb.ReplicaStatusResponse:
        """``Status``: every replica here (or one)."""
        out = pb.ReplicaStatusResponse(node_id=self.node_id, incarnation=self.config.incarnation)
        ids = [identity] if identity is not None else sorted({*self.leading, *self.followers}, key=lambda i: i.to_hex())
        for ident in ids:
            leader = self.leading.get(ident)
            if leader is not None and leader.db is not None:
                db = leader.db
                clog = db.clog
                out.replicas.append(pb.ReplicaState(
                    database_identity=ident.to_bsatn(), role="leader", epoch=leader.epoch,
                    promised_epoch=clog.promised_epoch, last_epoch=clog.last_epoch, first_offset=clog.first_offset,
                    next_offset=clog.next_offset, durable_offset=db.committer.durable_offset,
                    commit_offset=leader.commit_offset, applied_offset=db.datastore.applied_offset(),
                    generation=leader.generation, followers=leader.status(), has_quorum=leader.has_quorum(),
                ))  # fmt: skip
                continue
            follower = self.followers.get(ident)
            if follower is None:
                continue
            record = self.records.get(ident)
            clog = follower.clog
            stream = self._streams.get(ident)
            role = "learner" if record is not None and self.node_id in record.learners else "follower"
            out.replicas.append(pb.ReplicaState(
                database_identity=ident.to_bsatn(), role=role if stream is not None else "none",
                epoch=stream[0] if stream is not None else 0, promised_epoch=clog.promised_epoch,
                last_epoch=clog.last_epoch, first_offset=clog.first_offset, next_offset=clog.next_offset,
                durable_offset=follower.committer.durable_offset, commit_offset=self.known_commit.get(ident, 0),
                applied_offset=follower.datastore.applied_offset(), generation=follower.generation,
            ))  # fmt: skip
        return out

    async def digest(self, identity: Identity, offset: int, timeout_s: float) -> pb.DigestResponse:
        """``Digest`` of this replica's tables at ``offset``."""
        leader = self.leading.get(identity)
        if leader is not None and leader.db is not None:
            datastore, clog, committer = leader.db.datastore, leader.db.clog, leader.db.committer
        else:
            follower = self.followers.get(identity)
            if follower is None:
                raise DatabaseNotFound(f"no replica of {identity.to_hex()} on node {self.node_id}")
            await follower.run(follower.checkpoint)
            datastore, clog, committer = follower.datastore, follower.clog, follower.committer
        if offset > 0 and not await asyncio.to_thread(committer.wait_durable, offset - 1, timeout_s):
            return pb.DigestResponse(failure=pb.Failure(
                kind=pb.ERROR_KIND_DATABASE,
                message=f"replica on node {self.node_id} has only {clog.durable_offset} of {offset} records durable",
            ))  # fmt: skip
        d = await asyncio.to_thread(table_digest, datastore, clog, offset)
        return pb.DigestResponse(digest=d.digest, offset=d.offset, rows=d.rows, retry_at=d.retry_at)

    async def prepare_transfer(self, identity: Identity, epoch: int, target: str, timeout_s: float) -> int:
        """Hold new writes back until ``target`` has every record; our next offset then."""
        leader = self.leading.get(identity)
        if leader is None or leader.epoch != epoch or leader.db is None:
            raise NotLeader(f"node {self.node_id} does not lead {identity.to_hex()} in epoch {epoch}")
        link = leader.links.get(target)
        if link is None:
            raise DatabaseNotFound(f"node {target} holds no replica of {identity.to_hex()}")
        leader.begin_transfer(target, timeout_s * 2)
        deadline = time.monotonic() + timeout_s
        db = leader.db
        while time.monotonic() < deadline:
            # Writes already queued on the writer finish first; then the target must have all.
            end = await asyncio.wrap_future(self.node._workers[identity].submit(lambda d: d.clog.next_offset))
            if link.state.durable_offset >= end:
                return end
            await asyncio.sleep(0.01)
        leader.transfer = None
        raise OutcomeUnknown(
            f"node {target} did not catch up within {timeout_s:g} s (has {link.state.durable_offset} of {db.clog.next_offset})"
        )


def _collect(leader: LeaderReplication, _db: Database) -> None:
    leader.collect_segments()


def _append_checked(
    follower: FollowerReplica, epoch: int, records: list[tuple[int, int, bytes]], commit: int, retain: int
) -> None:
    """(replica thread) Append a batch of the stream of ``epoch`` unless a newer one was promised."""
    if follower.clog.promised_epoch > epoch:
        raise StaleEpoch(f"this replica promised epoch {follower.clog.promised_epoch}")
    follower.append(records, commit, retain)


def _state(st: Any) -> pb.FollowerState:
    return pb.FollowerState(
        promised_epoch=st.promised_epoch, last_epoch=st.last_epoch, next_offset=st.next_offset,
        durable_offset=st.durable_offset, applied_offset=st.applied_offset, first_offset=st.first_offset,
        generation=st.generation, has_replica=True,
    )  # fmt: skip


__all__ += ["read_generation"]
