"""Cluster operations over gRPC: add/move replica, transfer leader, drain, verify, status, watch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from proto import controlplane_pb2 as pb
from tests.controlplane.cluster_harness import ALICE, Harness, cluster_harness, run


async def add_replica(h: Harness, name: str, node: str, timeout_ms: int = 0) -> pb.OperationResponse:
    response: pb.OperationResponse = await h.stub.AddReplica(
        pb.ReplicaChangeRequest(name_or_identity=name, to_node=node, timeout_ms=timeout_ms)
    )
    return response


def test_transfer_leader_prepares_then_elects_the_target(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            identity = await h.created("db")
            done = await h.stub.TransferLeader(pb.TransferLeaderRequest(name_or_identity="db", to_node="n3"))
            assert done.failure.kind == pb.ERROR_KIND_NONE, done.failure.message
            record = await h.record(identity)
            assert record is not None and record.leader == "n3" and record.epoch == 2
            prepare = h.node("n1").called("PrepareTransfer")[-1]
            assert (prepare.target_node, prepare.epoch) == ("n3", 1)
            assert any("n1 stopped taking writes" in s for s in done.steps) and "n3 leads" in done.steps[-1]
            # Every replica heard the new record at once.
            assert all(h.node(n).called("Assign") for n in ("n1", "n2", "n3"))

            same = await h.stub.TransferLeader(pb.TransferLeaderRequest(name_or_identity="db", to_node="n3"))
            assert same.failure.kind == pb.ERROR_KIND_NONE and same.steps == [f"n3 already leads {identity.to_hex()}"]
            stranger = await h.stub.TransferLeader(pb.TransferLeaderRequest(name_or_identity="db", to_node="n9"))
            assert stranger.failure.kind == pb.ERROR_KIND_BAD_REQUEST

    run(body)


def test_add_replica_goes_learner_caught_up_voter_in_a_new_epoch(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path, nodes=4) as h:
            identity = await h.created("db", num_replicas=3)
            record = await h.record(identity)
            assert record is not None
            newcomer = next(n for n in ("n1", "n2", "n3", "n4") if n not in record.replicas)
            done = await add_replica(h, "db", newcomer)
            assert done.failure.kind == pb.ERROR_KIND_NONE, (done.failure.message, list(done.steps))
            after = await h.record(identity)
            assert after is not None
            assert sorted(after.replicas) == sorted([*record.replicas, newcomer]) and after.learners == []
            assert after.num_replicas == 4 and after.epoch == 2
            assert after.leader == record.leader  # still the best: kept
            assert "as a learner" in done.steps[0] and "caught up" in done.steps[1]
            assert "is a voting replica" in done.steps[2]
            # The promise round covered the old and the new voters.
            assert all(any(p.epoch == 2 for p in h.node(n).called("Promise")) for n in after.replicas)

            again = await add_replica(h, "db", newcomer)
            assert again.failure.kind == pb.ERROR_KIND_BAD_REQUEST

    run(body)


def test_add_replica_that_never_catches_up_times_out_and_is_undone(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path, nodes=4) as h:
            identity = await h.created("db", num_replicas=3)
            record = await h.record(identity)
            assert record is not None
            newcomer = next(n for n in ("n1", "n2", "n3", "n4") if n not in record.replicas)
            h.node(newcomer).hold_back = True
            failed = await add_replica(h, "db", newcomer, timeout_ms=300)
            assert failed.failure.kind == pb.ERROR_KIND_UNAVAILABLE
            assert "timed out waiting for" in failed.failure.message
            assert any("learner" in s and "removed again" in s for s in failed.steps)
            after = await h.record(identity)
            assert after is not None and after.learners == [] and after.replicas == record.replicas
            assert after.epoch == record.epoch  # no voter change, no new epoch
            assert h.node(newcomer).called("Delete")

    run(body)


def test_move_replica_adds_then_removes_and_moves_the_leadership_first(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path, nodes=4) as h:
            identity = await h.created("db", num_replicas=3)
            record = await h.record(identity)
            assert record is not None and record.leader is not None
            spare = next(n for n in ("n1", "n2", "n3", "n4") if n not in record.replicas)
            follower = next(n for n in record.replicas if n != record.leader)
            moved = await h.stub.MoveReplica(
                pb.ReplicaChangeRequest(name_or_identity="db", from_node=follower, to_node=spare)
            )
            assert moved.failure.kind == pb.ERROR_KIND_NONE, (moved.failure.message, list(moved.steps))
            after = await h.record(identity)
            assert after is not None and follower not in after.nodes() and spare in after.replicas
            assert len(after.replicas) == 3 and after.leader == record.leader and after.epoch == 3
            assert identity not in h.node(follower).replicas

            # Moving the leader's replica hands the leadership over first.
            leader = after.leader
            assert leader is not None
            moved = await h.stub.MoveReplica(
                pb.ReplicaChangeRequest(name_or_identity="db", from_node=leader, to_node=follower)
            )
            assert moved.failure.kind == pb.ERROR_KIND_NONE, (moved.failure.message, list(moved.steps))
            final = await h.record(identity)
            assert final is not None and leader not in final.nodes() and final.leader not in (None, leader)
            assert h.node(leader).called("PrepareTransfer")
            epochs = [after.epoch, final.epoch]
            assert epochs == sorted(epochs) and final.epoch > after.epoch

    run(body)


def test_drain_moves_every_leadership_and_replica_off_a_node(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path, nodes=4) as h:
            identities = [await h.created(f"db{i}", num_replicas=3) for i in range(4)]
            drained = await h.stub.Drain(pb.DrainRequest(node_id="n1"))
            assert drained.failure.kind == pb.ERROR_KIND_NONE, (drained.failure.message, list(drained.steps))
            for identity in identities:
                record = await h.record(identity)
                assert record is not None and "n1" not in record.nodes() and len(record.replicas) == 3
                assert record.leader in record.replicas
            assert drained.steps[-1] == "n1 holds no replica any more"
            # A drained node takes no new replica while its process lives.
            fresh = await h.record(await h.created("fresh", num_replicas=3))
            assert fresh is not None and "n1" not in fresh.replicas

    run(body)


def test_verify_agreement_disagreement_and_retry_at(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            identity = await h.created("db")
            agreed = await h.stub.Verify(pb.VerifyRequest(name_or_identity="db"))
            assert agreed.failure.kind == pb.ERROR_KIND_NONE and agreed.agree
            assert [r.node_id for r in agreed.replicas] == ["n1", "n2", "n3"]
            assert len({r.digest for r in agreed.replicas}) == 1 and agreed.offset == 1

            h.node("n2").replicas[identity].digest = b"\xff" * 32
            differ = await h.stub.Verify(pb.VerifyRequest(name_or_identity="db"))
            assert not differ.agree and {r.node_id: r.digest for r in differ.replicas}["n2"] == "ff" * 32
            h.node("n2").replicas[identity].digest = None

            h.node("n3").replicas[identity].checkpoint = 7  # its checkpoint is past the commit offset
            retried = await h.stub.Verify(pb.VerifyRequest(name_or_identity="db"))
            assert retried.agree and retried.offset == 7
            assert all(r.rows == 14 and not r.error for r in retried.replicas)
            asked = [r.offset for r in h.node("n1").called("Digest")]
            assert asked[-2:] == [1, 7]

            await h.node("n3").stop()
            missing = await h.stub.Verify(pb.VerifyRequest(name_or_identity="db"))
            assert not missing.agree and {r.node_id: r.error for r in missing.replicas}["n3"] == "node is not live"

    run(body)


def test_cluster_status_json_shape(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            identity = await h.created("db")
            await h.node("n3").stop()
            response = await h.stub.ClusterStatus(pb.ClusterStatusRequest())
            assert response.failure.kind == pb.ERROR_KIND_NONE
            status = json.loads(response.json)
            assert set(status) == {"nodes", "databases"}
            assert [(n["id"], n["alive"]) for n in status["nodes"]] == [("n1", True), ("n2", True), ("n3", False)]
            assert all(set(n) == {"id", "address", "alive"} for n in status["nodes"])
            (db,) = status["databases"]
            assert {"identity", "names", "epoch", "replicas"} <= set(db)
            assert db["identity"] == identity.to_hex() and db["names"] == ["db"] and db["epoch"] == 1
            assert db["replicas"] == [
                {"node": "n1", "role": "leader", "durable_offset": 1, "lag": 0},
                {"node": "n2", "role": "follower", "durable_offset": 1, "lag": 0},
                {"node": "n3", "role": "follower", "durable_offset": None, "lag": None},
            ]
            one = json.loads((await h.stub.ClusterStatus(pb.ClusterStatusRequest(name_or_identity="db"))).json)
            assert [d["identity"] for d in one["databases"]] == [identity.to_hex()]
            missing = await h.stub.ClusterStatus(pb.ClusterStatusRequest(name_or_identity="nope"))
            assert missing.failure.kind == pb.ERROR_KIND_NAME_NOT_FOUND

    run(body)


def test_watch_databases_snapshot_then_changes_and_compaction(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            first = await h.created("one")
            watch = h.stub.WatchDatabases(pb.WatchDatabasesRequest())
            snap = await watch.read()
            assert snap.snapshot and snap.database.database_identity == first.to_bsatn()
            assert snap.database.leader == "n1" and snap.database.replicas[0].address == h.node("n1").address
            end = await watch.read()
            assert end.snapshot_end and end.revision == snap.revision
            second = await h.created("two")
            states = []
            while "active" not in states:
                event = await watch.read()
                assert event.database.database_identity == second.to_bsatn() and event.revision > end.revision
                states.append(event.database.state)
            assert states == ["creating", "active"]
            deleted = await h.stub.DeleteDatabase(
                pb.DeleteDatabaseRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="two")
            )
            assert deleted.failure.kind == pb.ERROR_KIND_NONE
            while True:
                event = await watch.read()
                if event.deleted:
                    break
                assert event.database.state == "deleting"
            assert event.database.database_identity == second.to_bsatn()
            watch.cancel()

            await h.store.compact(await h.store.current_revision())
            stale = h.stub.WatchDatabases(pb.WatchDatabasesRequest(start_revision=1))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stale.read()
            assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE

    run(body)


def test_operations_run_while_the_database_keeps_its_leader_elsewhere(tmp_path: Path) -> None:
    """Two operations on different databases run at once; on one database they take turns."""

    async def body() -> None:
        async with cluster_harness(tmp_path, nodes=4) as h:
            await h.created("a", num_replicas=3)
            await h.created("b", num_replicas=3)
            a_target = await _spare(h, "a")
            b_target = await _spare(h, "b")
            results = await asyncio.gather(add_replica(h, "a", a_target), add_replica(h, "b", b_target))
            assert [r.failure.kind for r in results] == [pb.ERROR_KIND_NONE, pb.ERROR_KIND_NONE]

    run(body)


async def _spare(h: Harness, name: str) -> str:
    info = (await h.stub.GetDatabase(pb.GetDatabaseRequest(name_or_identity=name))).database
    return next(n for n in ("n1", "n2", "n3", "n4") if n not in [p.node_id for p in info.replicas])
