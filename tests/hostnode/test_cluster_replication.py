"""Replication between real host nodes (in one process; each with its own files and gRPC server):
quorum commits, followers applying, failover with fencing, truncation at the divergence point,
snapshots for new or lagging replicas, and writes refused without a quorum."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest

from hostnode.database import Status
from hostnode.durability import NoQuorum, NotLeader, OutcomeUnknown
from hostnode.replication import ChannelPool
from proto import auth
from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc
from tests.hostnode.cluster_harness import ALICE, DB, FAST, Cluster, eventually


def run(coro_fn, tmp_path: Path, n: int = 3, **kw):  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with Cluster(tmp_path, n, **kw) as c:
            await asyncio.wait_for(coro_fn(c), 120)

    asyncio.run(main())


async def status(c: Cluster, node: str) -> pb.ReplicaState:
    r = await c.stub(node).Status(pb.ReplicaStatusRequest(database_identity=DB.to_bsatn()))
    assert r.replicas, f"{node} holds no replica"
    return r.replicas[0]


def test_writes_commit_on_a_majority_and_followers_apply_them(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        await c.create()
        assert (await c.seed("n1", 10, 100)).status is Status.COMMITTED
        for i in range(30):
            out = await c.transfer("n1", i % 10, (i + 1) % 10)
            assert out.status is Status.COMMITTED
        leader = await status(c, "n1")
        assert leader.role == "leader" and leader.epoch == 1 and leader.has_quorum
        # Every follower has every committed record durable and applied (as the leader's
        # commit point reaches them), and the three replicas hold the same rows.
        for n in ("n2", "n3"):
            await eventually(
                lambda n=n: _applied_all(c, n, leader.commit_offset), what=f"{n} applies everything"
            )
        digests = await c.digests()
        assert len(set(digests.values())) == 1, digests
        # Followers do not serve: the gateway is told to go to the leader.
        with pytest.raises(NotLeader):
            await c.transfer("n2", 0, 1)

    run(body, tmp_path)


def test_replication_refuses_peers_without_the_cluster_secret(tmp_path: Path) -> None:
    """A process without the cluster secret (or with another cluster's) can neither feed a follower
    records, nor read a snapshot, nor reassign a replica: UNAUTHENTICATED, and nothing changes."""

    async def body(c: Cluster) -> None:
        await c.create()
        assert (await c.seed("n1", 10, 100)).status is Status.COMMITTED
        before = await status(c, "n2")
        address = c.nodes["n2"].address
        hello = pb.LeaderMessage(hello=pb.ReplicateHello(database_identity=DB.to_bsatn(), epoch=before.epoch + 5))
        for channel in (grpc.aio.insecure_channel(address), auth.channel(address, auth.ClusterSecret.generate())):
            async with channel:
                stub = pb_grpc.ReplicationStub(channel)
                snapshot_request = pb.SnapshotRequest(database_identity=DB.to_bsatn(), epoch=before.epoch)
                for open_stream in (partial(stub.Replicate, [hello]), partial(stub.GetSnapshot, snapshot_request)):
                    assert await _refusal(open_stream) == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Assign(pb.AssignRequest(deleted=True, database_identity=DB.to_bsatn()))
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        after = await status(c, "n2")
        assert (after.role, after.epoch, after.promised_epoch) == (before.role, before.epoch, before.promised_epoch)
        assert (await c.transfer("n1", 0, 1)).status is Status.COMMITTED  # the cluster itself carries on

    run(body, tmp_path)


async def _refusal(open_stream: Callable[[], Any]) -> grpc.StatusCode:
    """The status a stream the server refuses ends with. gRPC's client reports a request message
    whose sending lost the race with the server's refusal as INTERNAL ("Failed execute_batch")
    instead of the server's status: such an attempt is made again."""
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in open_stream():
                pass
        code = refused.value.code()
        if code != grpc.StatusCode.INTERNAL or "execute_batch" not in (refused.value.debug_error_string() or ""):
            return code  # type: ignore[no-any-return]
    return code  # type: ignore[no-any-return]


async def _applied_all(c: Cluster, node: str, commit: int) -> bool:
    s = await status(c, node)
    return s.durable_offset >= commit and s.applied_offset + 1 >= commit - 1


def test_failover_keeps_every_acknowledged_write_and_fences_the_old_leader(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        await c.create()
        await c.seed("n1", 10, 1000)
        for i in range(20):
            assert (await c.transfer("n1", i % 10, (i + 3) % 10)).status is Status.COMMITTED
        # The leader is cut off (its server stops answering; the process lives on).
        n1 = c.nodes["n1"]
        assert n1.server is not None
        await n1.server.stop(None)
        n1.server = None
        record = await c.elect()
        assert record.leader in ("n2", "n3") and record.epoch == 2
        for i in range(10):
            assert (await c.transfer(record.leader, i % 10, (i + 1) % 10)).status is Status.COMMITTED
        # The old leader cannot commit anything in epoch 1: its followers promised epoch 2.
        with pytest.raises((OutcomeUnknown, NoQuorum, NotLeader)):
            await c.transfer("n1", 1, 2)
        s = await status(c, record.leader)
        assert s.role == "leader" and s.epoch == 2
        digests = await c.digests(nodes=["n2", "n3"])
        assert len(set(digests.values())) == 1

    run(body, tmp_path)


def test_a_deposed_leader_truncates_its_uncommitted_tail_and_rejoins(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        await c.create()
        await c.seed("n1", 10, 1000)
        committed = await status(c, "n1")
        # Followers go away: the leader appends records no majority will ever have.
        for n in ("n2", "n3"):
            await c.nodes[n].stop()
        tentative = [asyncio.create_task(c.transfer("n1", 0, 1)) for _ in range(5)]
        await eventually(lambda: _next_offset_at_least(c, "n1", committed.next_offset + 5), what="tentative tail")
        # n1 dies too; n2 and n3 come back and elect a new leader without n1's tail.
        await c.nodes["n1"].stop()
        for t in tentative:
            with pytest.raises((OutcomeUnknown, NotLeader, Exception)):
                await t
        for n in ("n2", "n3"):
            await c.nodes[n].start()
        record = await c.elect()
        assert record.leader in ("n2", "n3")
        for _ in range(5):
            assert (await c.transfer(record.leader, 2, 3)).status is Status.COMMITTED
        # n1 returns: it must cut its tail at the divergence point and copy the new epoch.
        await c.nodes["n1"].start()
        await c.assign(record)
        leader = await status(c, record.leader)
        await eventually(lambda: _durable_at_least(c, "n1", leader.commit_offset), what="n1 catches up")
        digests = await c.digests()
        assert len(set(digests.values())) == 1, digests

    run(body, tmp_path)


async def _next_offset_at_least(c: Cluster, node: str, offset: int) -> bool:
    return (await status(c, node)).next_offset >= offset


async def _durable_at_least(c: Cluster, node: str, offset: int) -> bool:
    return (await status(c, node)).durable_offset >= offset


def test_writes_are_refused_without_a_quorum_and_resume_when_it_returns(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        await c.create()
        await c.seed("n1", 10, 1000)
        for n in ("n2", "n3"):
            await c.nodes[n].stop()
        await eventually(lambda: not c.node("n1").leading[DB].has_quorum(), what="quorum loss noticed")
        with pytest.raises(NoQuorum, match="no quorum"):
            await c.transfer("n1", 0, 1)
        await c.nodes["n2"].start()
        await c.assign(c.records[DB])
        await eventually(lambda: c.node("n1").leading[DB].has_quorum(), what="quorum back")
        assert (await c.transfer("n1", 0, 1)).status is Status.COMMITTED

    run(body, tmp_path)


def test_followers_drop_whole_log_segments_below_the_retain_point(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        await c.create(replicas=["n1", "n2", "n3"])
        await c.seed("n1", 50, 1000)
        for i in range(300):
            assert (await c.transfer("n1", i % 50, (i + 7) % 50)).status is Status.COMMITTED
        worker = c.host("n1")._workers[DB]
        await asyncio.wrap_future(worker.submit(lambda d: d.checkpoint()))
        i = 0

        async def collected() -> bool:
            # More batches carry the leader's retain point; followers checkpoint (every second)
            # and then drop the segments wholly below both.
            nonlocal i
            i += 1
            assert (await c.transfer("n1", i % 50, (i + 3) % 50)).status is Status.COMMITTED
            firsts = [(await status(c, n)).first_offset for n in ("n2", "n3")]
            return all(first > 0 for first in firsts)

        await eventually(collected, 60, what="followers drop their oldest segments")
        # What they kept still reads back: every replica holds the same rows.
        digests = await c.digests()
        assert len(set(digests.values())) == 1, digests

    run(body, tmp_path, 3, segment_bytes=4096)


def test_a_new_replica_starts_from_a_snapshot_when_the_log_was_collected(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        await c.create(replicas=["n1", "n2", "n3"])
        await c.seed("n1", 50, 1000)
        for i in range(400):
            assert (await c.transfer("n1", i % 50, (i + 7) % 50)).status is Status.COMMITTED
        leader = c.node("n1").leading[DB]
        db = leader.db
        assert db is not None
        # Checkpoint and collect segments so the log no longer starts at 0.
        worker = c.host("n1")._workers[DB]
        await asyncio.wrap_future(worker.submit(lambda d: d.checkpoint()))
        await eventually(lambda: leader.retain_offset() > 100, what="followers catch up")
        await asyncio.wrap_future(worker.submit(lambda d: leader.collect_segments()))
        assert db.clog.first_offset > 0
        # n4 joins as a learner: it gets a snapshot, then the log from there on.
        record = dataclasses.replace(c.records[DB], learners=["n4"])  # a learner needs no new epoch
        await c.assign(record)
        for i in range(10):
            assert (await c.transfer(record.leader or "", i, i + 1)).status is Status.COMMITTED
        lead = await status(c, record.leader or "")
        await eventually(lambda: _durable_at_least(c, "n4", lead.commit_offset), what="n4 catches up")
        s4 = await status(c, "n4")
        assert s4.first_offset > 0  # it started from a snapshot, not from offset 0
        digests = await c.digests()
        assert len(set(digests.values())) == 1, digests

    run(body, tmp_path, 4, segment_bytes=4096)


def test_the_leaderless_record_of_an_epoch_arriving_after_its_leader_is_ignored(tmp_path: Path) -> None:
    """An election writes (epoch e, no leader), then (epoch e, leader X) and nudges X with the
    latter; X's watch may deliver the former afterwards. X must keep leading, not step down from
    an epoch its log has reached (it could never lead it again, and nobody would notice)."""

    async def body(c: Cluster) -> None:
        await c.create()
        await c.seed("n1", 10, 100)
        record = await c.elect(prefer="n2")
        leader = record.leader
        assert leader is not None
        leaderless = dataclasses.replace(record, leader=None)
        await c.node(leader).apply_record(DB, leaderless, c.peers())
        assert (await c.transfer(leader, 1, 2)).status is Status.COMMITTED
        s = await status(c, leader)
        assert s.role == "leader" and s.epoch == record.epoch

    run(body, tmp_path)


def test_reads_without_a_quorum_never_see_an_older_state_than_was_acknowledged(tmp_path: Path) -> None:
    """A leader that lost its quorum may hold transactions no majority has (a write that timed
    out); they keep its checkpoint back. A read then gets the committed state or a NoQuorum
    refusal, never an older state than a client was already answered."""

    async def balances(c: Cluster) -> dict[int, int]:
        result = await c.host("n1").sql(DB, "SELECT * FROM accounts", ALICE)
        return {int(r[0]): int(r[1]) for r in result.rows}

    async def body(c: Cluster) -> None:
        await c.create()
        await c.seed("n1", 4, 100)
        assert (await c.transfer("n1", 0, 1)).status is Status.COMMITTED
        # A read checkpoints what is committed; then one more acknowledged transfer that only
        # the log holds (the writer never idles long enough to checkpoint on its own here).
        assert (await balances(c))[1] == 101
        assert (await c.transfer("n1", 0, 2)).status is Status.COMMITTED
        for n in ("n2", "n3"):
            await c.nodes[n].stop()
        tentative = asyncio.create_task(c.transfer("n1", 0, 3))
        committed = await status(c, "n1")
        await eventually(lambda: _next_offset_at_least(c, "n1", committed.commit_offset + 1), what="tentative tail")
        with pytest.raises(NoQuorum, match="majority"):
            await balances(c)
        # A majority back: the tentative transfer commits and every read sees all three.
        await c.nodes["n2"].start()
        await c.assign(c.records[DB])
        assert (await tentative).status is Status.COMMITTED
        assert await balances(c) == {0: 97, 1: 101, 2: 101, 3: 101}

    slow_commits = dataclasses.replace(FAST, commit_timeout_s=60.0)
    run(body, tmp_path, replication=slow_commits, idle_checkpoint_s=3600.0, checkpoint_every_s=3600.0, checkpoint_wait_s=0.5)


class _LateWrites:
    """A Replication stub whose streams' writes return only after the peer has had time to
    answer: gRPC may complete a write after the reply to it has been read."""

    def __init__(self, stub: pb_grpc.ReplicationStub) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def Replicate(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - the gRPC method's name
        return _LateWriteCall(self._stub.Replicate(*args, **kwargs))


class _LateWriteCall:
    def __init__(self, call: Any) -> None:
        self._call = call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)

    async def write(self, message: Any) -> None:
        await self._call.write(message)
        await asyncio.sleep(0.05)  # the follower's ack arrives (and is read) meanwhile


def test_an_ack_read_before_its_batchs_write_returns_still_releases_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch counts as awaiting its ack from before its write: were it counted after, an ack
    read while the write was completing would find nothing to release, and the link would wait
    for an ack that never comes until it timed out and reconnected."""
    replication = ChannelPool.replication
    monkeypatch.setattr(ChannelPool, "replication", lambda self, address: _LateWrites(replication(self, address)))

    async def body(c: Cluster) -> None:
        await c.create()
        assert (await c.seed("n1", 10, 100)).status is Status.COMMITTED
        links = c.node("n1").leading[DB].links
        await eventually(lambda: all(link.state.connected for link in links.values()), what="both links up")
        sessions = {n: link.state.since for n, link in links.items()}
        for i in range(10):
            assert (await c.transfer("n1", i, (i + 1) % 10)).status is Status.COMMITTED
        for n, link in links.items():
            assert link.state.connected and link.state.since == sessions[n], f"{n}: {link.state.error}"

    run(body, tmp_path)


def test_records_committed_while_a_batch_is_unacknowledged_leave_together(tmp_path: Path) -> None:
    """At most ``max_batches_in_flight`` (1) batches wait for a follower's ack: what the writer
    commits meanwhile goes in the next batch, so 300 concurrent calls reach each follower in
    far fewer gRPC messages than records (each message costs both ends tens of µs)."""

    async def body(c: Cluster) -> None:
        await c.create()
        assert (await c.seed("n1", 50, 100)).status is Status.COMMITTED
        links = c.node("n1").leading[DB].links
        before = {n: (link.state.batches_sent, link.state.records_sent) for n, link in links.items()}
        outs = await asyncio.gather(*(c.transfer("n1", i % 50, (i + 7) % 50) for i in range(300)))
        assert all(o.status is Status.COMMITTED for o in outs)
        for n, link in links.items():
            # a quorum needs one follower: the other may still be receiving its records
            await eventually(lambda link=link, n=n: link.state.records_sent - before[n][1] >= 300, what=f"{n} gets all")
            batches = link.state.batches_sent - before[n][0]
            records = link.state.records_sent - before[n][1]
            assert batches * 4 <= records, f"{n}: {records} records in {batches} batches"
            assert link.state.most_in_flight == 1

    run(body, tmp_path)
