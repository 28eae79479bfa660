"""The leader's side of replication: records out to every follower, acks back, the commit point.

One :class:`LeaderReplication` per database this node leads, for one epoch. It gives the engine
its :class:`~hostnode.database.ReplicationHooks` (the quorum durability seam, the append feed,
the write gate) and runs one :class:`FollowerLink` per replica on the event loop. A link opens a
``Replication.Replicate`` stream to its follower, fences it with the epoch (REPLICATION.md rule
1), finds where the follower's log diverges from ours (rule 5, KIP-101), has it truncate there
or start over from a snapshot, and then streams batches of records (from memory when recent,
from the log files otherwise), each with the commit point, and heartbeats when idle. Acks
(durable offsets, fsynced on the follower) feed :class:`~hostnode.durability.QuorumDurability`.

A follower that refuses our epoch (it promised a higher one) means a newer leader exists: the
link reports it and the owner steps down at once. Writes are refused (``NO_QUORUM``) while
fewer than a majority of the voting replicas (this one included) have answered within
``quorum_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from clustermeta.aio import cancel_and_wait
from hostnode.commitlog import CommitLog, GroupCommitter
from hostnode.database import Database, ReplicationHooks
from hostnode.durability import Durability, NotLeader, QuorumDurability
from hostnode.stats import ReplicaCounters
from proto import auth
from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc
from sats.identity import Identity

log = logging.getLogger(__name__)

__all__ = [
    "ChannelPool",
    "FollowerLink",
    "LeaderReplication",
    "RecordFeed",
    "ReplicationConfig",
    "peer_channel_options",
]

Record = tuple[int, int, bytes]  # (epoch, offset, payload)


@dataclass
class ReplicationConfig:
    """Timing and sizes of replication (docs/cluster.md)."""

    #: An idle link sends a batch (with the commit point) at least this often.
    heartbeat_s: float = 0.5
    #: A follower not heard from for this long no longer counts toward the quorum.
    quorum_timeout_s: float = 1.5
    #: How long a transaction may wait for a majority before its caller hears "outcome unknown".
    commit_timeout_s: float = 10.0
    #: Most payload bytes in one RecordBatch.
    max_batch_bytes: int = 1 << 20
    #: Most records sent but not yet acked per follower (flow control).
    window_records: int = 50_000
    #: Most batches of records sent to a follower and not yet acked durable: while that many
    #: are out, new records wait and leave together. Each gRPC message costs both ends far more
    #: than its records (tens of µs of event-loop time), so under load the batches grow to what
    #: the follower makes durable per fsync instead of what the writer commits per loop turn.
    #: Full batches (``max_batch_bytes``: a follower catching up) do not wait, up to ``window_records``.
    max_batches_in_flight: int = 1
    #: Recent records kept in memory for the links (older ones are read from the log files).
    feed_bytes: int = 64 << 20
    #: Deadline of a snapshot transfer, and of each unary replication RPC.
    snapshot_timeout_s: float = 600.0
    rpc_timeout_s: float = 5.0
    #: Reconnect backoff bounds of a link.
    backoff_min_s: float = 0.05
    backoff_max_s: float = 1.0


def peer_channel_options() -> list[tuple[str, Any]]:
    """gRPC options of channels between nodes: big messages, keepalives that notice a dead peer."""
    from proto import GRPC_OPTIONS

    return [
        *GRPC_OPTIONS,
        ("grpc.keepalive_time_ms", 2000),
        ("grpc.keepalive_timeout_ms", 2000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.min_reconnect_backoff_ms", 50),
    ]


class ChannelPool:
    """One gRPC channel per peer address, shared by every link and client of this node; every
    call on them carries the cluster secret."""

    def __init__(self, secret: auth.ClusterSecret) -> None:
        self.secret = secret
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        """The channel to ``address`` (created on first use)."""
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = auth.channel(address, self.secret, peer_channel_options())
        return ch

    def replication(self, address: str) -> pb_grpc.ReplicationStub:
        """A Replication stub for ``address``."""
        return pb_grpc.ReplicationStub(self.get(address))

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()


class RecordFeed:
    """The newest records of the leader's log, in memory, for the links to send.

    ``append`` runs on the database's writer thread for every record; the links read on the
    event loop. A link waiting for more is woken with one ``call_soon_threadsafe`` per wait, not
    per record. Records older than ``max_bytes`` worth are dropped (links then read the log).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, next_offset: int, max_bytes: int) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._records: deque[Record] = deque()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._first = next_offset  # offset of _records[0] (or next_offset when empty)
        self.next_offset = next_offset
        self.changed = asyncio.Event()
        self.waiting = 0
        self._wake_pending = False

    def append(self, epoch: int, offset: int, payload: bytes) -> None:
        """(writer thread) One appended record."""
        with self._lock:
            if offset != self.next_offset:  # a gap (never expected): restart the window here
                self._records.clear()
                self._bytes = 0
                self._first = offset
            self._records.append((epoch, offset, payload))
            self._bytes += len(payload)
            self.next_offset = offset + 1
            while self._bytes > self._max_bytes and len(self._records) > 1:
                self._bytes -= len(self._records.popleft()[2])
                self._first += 1
            wake = self.waiting and not self._wake_pending
            if wake:
                self._wake_pending = True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self.changed.set()

    def read(self, start: int, max_bytes: int) -> list[Record] | None:
        """Records from ``start`` on (up to ``max_bytes``, at least one if any); None when
        ``start`` is older than what the feed keeps."""
        with self._lock:
            if start < self._first:
                return None
            i = start - self._first
            out: list[Record] = []
            size = 0
            records = self._records
            n = len(records)
            while i < n:
                rec = records[i]
                out.append(rec)
                size += len(rec[2])
                i += 1
                if size >= max_bytes:
                    break
            return out


def read_log(clog: CommitLog, start: int, max_bytes: int) -> list[Record]:
    """(any thread) Records from ``start`` on, out of the log files (catching up)."""
    out: list[Record] = []
    size = 0
    for rec in clog.read_from(start):
        out.append((rec.epoch, rec.offset, rec.payload))
        size += len(rec.payload)
        if size >= max_bytes:
            break
    return out


@dataclass
class PeerSpec:
    """A replica this leader streams to."""

    node_id: str
    address: str
    learner: bool = False


@dataclass
class LinkState:
    """What a link knows about its follower (for status, quorum, log retention and metrics)."""

    connected: bool = False
    durable_offset: int = 0
    applied_offset: int = -1
    last_heard: float = 0.0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Monotonic time the link last connected or lost its connection.
    since: float = field(default_factory=time.monotonic)
    #: Batches holding records sent on this link, and their records (since the leader began).
    batches_sent: int = 0
    records_sent: int = 0
    #: The most batches ever awaiting this follower's ack at once (ReplicationConfig.max_batches_in_flight).
    most_in_flight: int = 0


class LeaderReplication:
    """Replication of one database this node leads, in one epoch."""

    def __init__(
        self,
        identity: Identity,
        *,
        node_id: str,
        epoch: int,
        generation: int,
        peers: list[PeerSpec],
        channels: ChannelPool,
        config: ReplicationConfig,
        loop: asyncio.AbstractEventLoop,
        on_fenced: Callable[[str], None],
        lease_valid: Callable[[], bool] = lambda: True,
        known_commit: int = 0,
        resolve: Callable[[str], str] | None = None,
        counters: ReplicaCounters | None = None,
    ) -> None:
        self.identity = identity
        #: Counters of this database on this node (they outlive this epoch's leadership).
        self.counters = counters or ReplicaCounters()
        self._quorum_ok = True
        self.node_id = node_id
        self.epoch = epoch
        self.generation = generation
        self.config = config
        self.channels = channels
        self.loop = loop
        self.on_fenced = on_fenced
        self.lease_valid = lease_valid
        self.known_commit = known_commit
        #: node id → its current address (nodes may come back elsewhere); falls back to the peer's.
        self.resolve = resolve
        self.links = {p.node_id: FollowerLink(self, p) for p in peers if p.node_id != node_id}
        self.voters = [p.node_id for p in peers if not p.learner and p.node_id != node_id]
        self.majority = (len(self.voters) + 1) // 2 + 1
        self.quorum: QuorumDurability | None = None
        self.feed: RecordFeed | None = None
        self.db: Database | None = None
        #: Set while a leader transfer holds new writes back (reason for refusals).
        self.transfer: str | None = None
        self._transfer_until = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._link_tasks: dict[str, asyncio.Task[None]] = {}
        #: Offsets snapshots being sent still need from our log: retain nothing past them.
        self.pins: list[int] = []
        self._stopped = False
        self.started_at = time.monotonic()

    # --- the engine's hooks ---------------------------------------------------------------------

    def hooks(self) -> ReplicationHooks:
        """What the Database needs: the quorum seam, the append feed, the write gate."""
        return ReplicationHooks(durability=self._make_durability, on_append=self._on_append, write_gate=self.write_gate)

    def _make_durability(self, committer: GroupCommitter, clog: CommitLog) -> Durability:
        self.feed = RecordFeed(self.loop, clog.next_offset, self.config.feed_bytes)
        # Where this epoch's records start: here, unless the log already has records of it (a
        # database this leader just created in this epoch).
        history = clog.epoch_history()
        epoch_start = history[-1][1] if history and history[-1][0] == self.epoch else clog.next_offset
        self.quorum = QuorumDurability(
            committer,
            voters=self.voters,
            epoch_start=epoch_start,
            committed=min(self.known_commit, clog.next_offset),
            commit_timeout=self.config.commit_timeout_s,
        )
        return self.quorum

    def _on_append(self, epoch: int, offset: int, payload: bytes) -> None:
        feed = self.feed
        if feed is not None:
            feed.append(epoch, offset, payload)

    def write_gate(self) -> str | None:
        """Why writes are refused now, or None (checked before every client reducer call).

        While the leadership moves away (a transfer, a host node handing over on SIGTERM) the
        refusal is :class:`NotLeader`, raised: nothing ran, and the gateway retries the call at
        the next leader once its mirror shows it, so the move is invisible to HTTP clients.
        """
        if self._stopped:
            return "this node no longer leads the database"
        if self.transfer is not None:
            if time.monotonic() < self._transfer_until:
                raise NotLeader(self.transfer)
            self.transfer = None
        if not self.lease_valid():
            return "this node lost its cluster lease and is stepping down"
        if not self.has_quorum():
            alive = 1 + sum(1 for v in self.voters if self.links[v].alive())
            return (
                f"no quorum: {alive} of {len(self.voters) + 1} replicas reachable, "
                f"{self.majority} needed; writes are refused until a majority is back"
            )
        return None

    def has_quorum(self) -> bool:
        """Whether a majority of the voting replicas (this one included) answered recently.

        Each change from having a quorum to not having one counts as a quorum loss (seen when
        someone asks: every write does, and so does every metrics scrape)."""
        ok = self._quorum_now()
        if ok != self._quorum_ok:
            self._quorum_ok = ok
            if not ok:
                self.counters.quorum_losses += 1
        return ok

    def _quorum_now(self) -> bool:
        if len(self.voters) + 1 < 2:
            return True
        alive = 1 + sum(1 for v in self.voters if self.links[v].alive())
        if alive >= self.majority:
            return True
        # A fresh leader gets one quorum timeout for its links to connect.
        return time.monotonic() - self.started_at < self.config.quorum_timeout_s

    @property
    def commit_offset(self) -> int:
        """One past the last committed record."""
        return self.quorum.durable_offset if self.quorum is not None else 0

    def retain_offset(self) -> int:
        """Log segments wholly below this may be deleted: every connected replica has those
        records durable, and our own checkpoint covers them. Disconnected replicas do not hold
        the log back (they get a snapshot if they come back too late)."""
        db = self.db
        if db is None:
            return 0
        point = db.datastore.applied_offset() + 1
        for link in self.links.values():
            if link.state.connected:
                point = min(point, link.state.durable_offset)
        for pin in self.pins:
            point = min(point, pin)
        return max(point, 0)

    # --- running --------------------------------------------------------------------------------

    def start(self, db: Database) -> None:
        """Begin streaming (event loop): one task per follower."""
        self.db = db
        self.started_at = time.monotonic()
        for link in self.links.values():
            self._spawn_link(link)

    async def set_learners(self, learners: list[PeerSpec]) -> None:
        """Start streaming to new learners and stop streaming to removed ones (a learner does
        not vote, so this needs no new epoch; voters change only with a new epoch)."""
        wanted = {p.node_id: p for p in learners if p.node_id != self.node_id}
        for node_id, link in list(self.links.items()):
            if link.peer.learner and node_id not in wanted:
                del self.links[node_id]
                task = self._link_tasks.pop(node_id, None)
                if task is not None:
                    await cancel_and_wait(task)
        for node_id, peer in wanted.items():
            if node_id not in self.links:
                link = self.links[node_id] = FollowerLink(self, peer)
                if self.db is not None:
                    self._spawn_link(link)

    def _spawn_link(self, link: FollowerLink) -> None:
        task = self.loop.create_task(link.run(), name=f"replicate-{link.peer.node_id}")
        self._tasks.append(task)
        self._link_tasks[link.peer.node_id] = task

    async def stop(self, error: BaseException) -> None:
        """Stop streaming and settle every waiter with ``error``. Idempotent."""
        self._stopped = True
        if self.quorum is not None:
            self.quorum.close(error)
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)

    def collect_segments(self) -> None:
        """(writer thread) Delete log segments every replica is done with."""
        db = self.db
        if db is None:
            return
        point = self.retain_offset()
        if point > db.clog.first_offset:
            db.clog.delete_segments_before(point)

    def begin_transfer(self, target: str, timeout_s: float) -> None:
        """Refuse new writes for up to ``timeout_s`` while leadership moves to ``target``."""
        self.transfer = f"leadership of this database is moving to node {target}; retry shortly"
        self._transfer_until = time.monotonic() + timeout_s

    def fenced(self, reason: str) -> None:
        """A follower knows a newer epoch: stop at once (the owner steps this leader down)."""
        if not self._stopped:
            log.warning("leader of %s (epoch %d) is fenced: %s", self.identity.to_hex()[:16], self.epoch, reason)
            self._stopped = True
            self.on_fenced(reason)

    def status(self) -> list[pb.FollowerProgress]:
        """Per-follower progress for ``Replication.Status``."""
        return [
            pb.FollowerProgress(
                node_id=n,
                connected=link.state.connected,
                learner=link.peer.learner,
                durable_offset=link.state.durable_offset,
                applied_offset=link.state.applied_offset,
            )
            for n, link in self.links.items()
        ]


class _Fenced(Exception):
    """The follower promised a newer epoch than ours."""


class FollowerLink:
    """The stream to one follower (event loop), reconnected with backoff until stopped."""

    def __init__(self, leader: LeaderReplication, peer: PeerSpec) -> None:
        self.leader = leader
        self.peer = peer
        self.state = LinkState()
        self._acked = asyncio.Event()
        #: Batches sent and not yet acknowledged: (offset after the batch, monotonic time sent).
        self._in_flight: deque[tuple[int, float]] = deque()

    def lag(self, leader_next: int, now: float) -> tuple[int, float]:
        """How far behind the follower is: records the leader's log (next offset
        ``leader_next``) has and the follower has not made durable, and seconds since the oldest
        of them was sent (while disconnected: since the link went down)."""
        s = self.state
        records = max(0, leader_next - s.durable_offset)
        if not records:
            return 0, 0.0
        if self._in_flight:
            return records, max(0.0, now - self._in_flight[0][1])
        if not s.connected:
            return records, max(0.0, now - s.since)
        return records, 0.0

    def alive(self) -> bool:
        """Connected and heard from within the quorum timeout."""
        s = self.state
        return s.connected and time.monotonic() - s.last_heard < self.leader.config.quorum_timeout_s

    async def run(self) -> None:
        """Keep a session with the follower going until cancelled."""
        cfg = self.leader.config
        backoff = cfg.backoff_min_s
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except _Fenced:
                return
            except grpc.aio.AioRpcError as e:
                self._failed(f"{e.code().name}: {e.details()}")
            except (ConnectionError, TimeoutError, asyncio.InvalidStateError) as e:
                # Expected while a follower is away (InvalidStateError: it ended the call mid-write).
                self._failed(f"{type(e).__name__}: {e}")
            except Exception as e:  # noqa: BLE001 - keep trying; the reason goes to status and log
                log.exception("replication to %s failed", self.peer.node_id)
                self._failed(f"{type(e).__name__}: {e}")
            if self.leader._stopped:
                return
            if time.monotonic() - started > 5.0:
                backoff = cfg.backoff_min_s
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, cfg.backoff_max_s)

    def _failed(self, reason: str) -> None:
        if self.state.connected or self.state.error != reason:
            log.info("replication of %s to %s: %s", self.leader.identity.to_hex()[:16], self.peer.node_id, reason)
        self.state.connected = False
        self.state.error = reason

    async def _session(self) -> None:
        leader = self.leader
        db = leader.db
        assert db is not None and leader.feed is not None
        address = (leader.resolve(self.peer.node_id) if leader.resolve else "") or self.peer.address
        if not address:
            raise ConnectionError(f"no address known for node {self.peer.node_id}")
        stub = leader.channels.replication(address)
        call = stub.Replicate()
        try:
            await call.write(
                pb.LeaderMessage(
                    hello=pb.ReplicateHello(
                        database_identity=leader.identity.to_bsatn(),
                        epoch=leader.epoch,
                        generation=leader.generation,
                        leader_node=leader.node_id,
                        learner=self.peer.learner,
                    )
                )
            )
            state = await self._read_state(call)
            pos = await self._start_position(call, state, db)
            self.state.connected = True
            self.state.since = time.monotonic()
            self.state.error = ""
            self.state.durable_offset = state.durable_offset
            self.state.applied_offset = state.applied_offset
            self.state.last_heard = time.monotonic()
            reader = asyncio.create_task(self._read_acks(call))
            try:
                await self._stream(call, pos, reader)
            finally:
                await cancel_and_wait(reader)
        finally:
            if self.state.connected:
                self.state.since = time.monotonic()
            self.state.connected = False
            self._in_flight.clear()
            call.cancel()

    async def _read_state(self, call: Any) -> pb.FollowerState:
        msg = await asyncio.wait_for(call.read(), self.leader.config.snapshot_timeout_s)
        if msg is grpc.aio.EOF:
            raise ConnectionError("the follower closed the stream")
        kind = msg.WhichOneof("msg")
        if kind == "refused":
            if msg.refused.kind == pb.ERROR_KIND_STALE_EPOCH:
                self.leader.fenced(f"node {self.peer.node_id}: {msg.refused.message}")
                raise _Fenced(msg.refused.message)
            raise ConnectionError(f"the follower refused: {msg.refused.message}")
        if kind != "state":
            raise ConnectionError(f"expected the follower's state, got {kind}")
        return msg.state

    async def _start_position(self, call: Any, state: pb.FollowerState, db: Database) -> int:
        """Where streaming starts: after truncating the follower at the divergence point, or
        after it installed a snapshot (new replica, other generation, or records we no
        longer have)."""
        clog = db.clog
        for _ in range(3):
            if not state.has_replica or state.generation != self.leader.generation:
                state = await self._snapshot(call)
                continue
            if state.next_offset > state.first_offset:  # it holds records: check divergence
                end = clog.epoch_end_offset(state.last_epoch)
                point = min(state.next_offset, end, clog.next_offset)
                if point < state.next_offset:
                    if point <= state.applied_offset or point < state.first_offset:
                        state = await self._snapshot(call)
                        continue
                    await call.write(pb.LeaderMessage(truncate_to=point))
                    state = await self._read_state(call)
                    continue
            if state.next_offset < clog.first_offset or state.next_offset > clog.next_offset:
                state = await self._snapshot(call)
                continue
            return state.next_offset
        raise ConnectionError(f"follower {self.peer.node_id} did not converge (state {state})")

    async def _snapshot(self, call: Any) -> pb.FollowerState:
        log.info("replica %s of %s starts over from a snapshot", self.peer.node_id, self.leader.identity.to_hex()[:16])
        await call.write(pb.LeaderMessage(snapshot_needed=True))
        return await self._read_state(call)

    async def _read_acks(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                raise ConnectionError("the follower closed the stream")
            kind = msg.WhichOneof("msg")
            if kind == "ack":
                s = self.state
                s.last_heard = time.monotonic()
                s.applied_offset = msg.ack.applied_offset
                if msg.ack.durable_offset > s.durable_offset:
                    s.durable_offset = msg.ack.durable_offset
                    in_flight = self._in_flight
                    while in_flight and in_flight[0][0] <= s.durable_offset:
                        in_flight.popleft()
                    if not self.peer.learner and self.leader.quorum is not None:
                        self.leader.quorum.ack(self.peer.node_id, s.durable_offset)
                    self._acked.set()
            elif kind == "refused":
                if msg.refused.kind == pb.ERROR_KIND_STALE_EPOCH:
                    self.leader.fenced(f"node {self.peer.node_id}: {msg.refused.message}")
                    raise _Fenced(msg.refused.message)
                raise ConnectionError(f"the follower refused: {msg.refused.message}")

    async def _stream(self, call: Any, pos: int, reader: asyncio.Task[None]) -> None:
        leader = self.leader
        cfg = leader.config
        feed = leader.feed
        db = leader.db
        assert feed is not None and db is not None
        last_sent = time.monotonic()
        sent_commit = -1
        full = False  # the last batch was cut at max_batch_bytes: catching up, keep the pipe full
        while True:
            if reader.done():
                reader.result()
                raise ConnectionError("the follower's acks stopped")
            while not full and len(self._in_flight) >= cfg.max_batches_in_flight:
                self._acked.clear()
                await asyncio.wait_for(self._acked.wait(), cfg.quorum_timeout_s * 4)
            records = feed.read(pos, cfg.max_batch_bytes) if pos < feed.next_offset else []
            if records is None:
                records = await asyncio.to_thread(read_log, db.clog, pos, cfg.max_batch_bytes)
            commit = leader.commit_offset
            now = time.monotonic()
            if records or commit != sent_commit or now - last_sent >= cfg.heartbeat_s:
                batch = pb.LeaderMessage(
                    records=pb.RecordBatch(
                        epoch=leader.epoch,
                        records=[pb.LogRecord(epoch=e, offset=o, payload=p) for e, o, p in records],
                        commit_offset=commit,
                        retain_offset=leader.retain_offset(),
                    )
                )
                pos += len(records)
                full = sum(len(r[2]) for r in records) >= cfg.max_batch_bytes
                if records:
                    # In flight before the write: the write may complete only after the
                    # follower's ack for it has been read (by _read_acks, which pops it then).
                    self._in_flight.append((pos, now))
                    self.state.batches_sent += 1
                    self.state.records_sent += len(records)
                    self.state.most_in_flight = max(self.state.most_in_flight, len(self._in_flight))
                await call.write(batch)
                sent_commit = commit
                last_sent = now
            while pos - self.state.durable_offset > cfg.window_records:
                self._acked.clear()
                await asyncio.wait_for(self._acked.wait(), cfg.quorum_timeout_s * 4)
            if records and pos < feed.next_offset:
                continue
            feed.waiting += 1
            try:
                feed.changed.clear()
                if pos >= feed.next_offset and leader.commit_offset == sent_commit:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(feed.changed.wait(), cfg.heartbeat_s)
                elif pos >= feed.next_offset:
                    await asyncio.sleep(0.002)  # let the commit point settle, then send it on
            finally:
                feed.waiting -= 1
