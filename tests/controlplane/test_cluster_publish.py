"""Cluster publish, update, reset and delete over real gRPC: the record first, then the nodes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clustermeta.records import DbState, db_key
from controlplane.core import meta_key
from gateway.failures import ControlErrorKind, control_status
from proto import controlplane_pb2 as pb
from proto import hostnode_pb2 as hpb
from sats.identity import Identity
from tests.controlplane.cluster_harness import ALICE, BOB, Harness, cluster_harness, eventually, run


def test_create_places_three_replicas_installs_on_the_leader_with_the_epoch(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path, nodes=4) as h:
            identities = [await h.created(f"db{i}") for i in range(4)]
            leaders = []
            for identity in identities:
                record = await h.record(identity)
                assert record is not None and record.state is DbState.ACTIVE
                assert len(set(record.replicas)) == 3 and record.num_replicas == 3
                assert (record.epoch, record.generation, record.learners) == (1, 1, [])
                assert record.leader == record.replicas[0] and "claim" not in record.extra
                assert record.leader_incarnation == h.node(record.leader).incarnation
                leaders.append(record.leader)
                install = h.node(record.leader).called("Install")[-1]
                assert (install.epoch, install.generation, install.clear) == (1, 1, False)
                assert [p.node_id for p in install.replicas] == record.replicas
                assert all(p.address == h.node(p.node_id).address for p in install.replicas)
            assert sorted(leaders) == ["n1", "n2", "n3", "n4"]  # leaderships spread
            info = (await h.stub.GetDatabase(pb.GetDatabaseRequest(name_or_identity="db0"))).database
            assert info.state == "active" and info.epoch == 1 and info.leader == info.replicas[0].node_id
            assert info.replicas[0].address == h.node(info.leader).address

    run(body)


def test_replica_counts_defaults_and_errors(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path, nodes=2) as h:
            one = await h.record(await h.created("small"))
            assert one is not None and len(one.replicas) == 1  # default with fewer than 3 nodes
            two = await h.record(await h.created("pair", num_replicas=2))
            assert two is not None and sorted(two.replicas) == ["n1", "n2"]
            refused = await h.publish("big", num_replicas=3)
            assert refused.failure.kind == pb.ERROR_KIND_BAD_REQUEST
            assert refused.failure.message == "num_replicas=3 needs 3 live host nodes, but only 2 are live"
            assert control_status(ControlErrorKind(refused.failure.kind)) == 400
            with_nothing = await h.store.get(meta_key("dns", "big"))
            assert with_nothing is None  # a refused publish claims no name
            too_long = await h.publish("n" * 600)
            assert (too_long.failure.kind, too_long.failure.message) == (
                pb.ERROR_KIND_INVALID_NAME, "database names are at most 64 characters long, this one has 600",
            )

    run(body)


def test_two_racing_publishes_of_one_name_one_wins_the_other_gets_409(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            gate = asyncio.Event()  # installs wait, so the two publishes overlap whatever the timing
            for node in h.fakes.nodes.values():
                node.install_gate = gate
            for round_ in range(5):
                name = f"race{round_}"
                gate.clear()
                tasks = [asyncio.ensure_future(h.publish(name)) for _ in range(2)]
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                gate.set()
                first, second = [await t for t in tasks]
                assert sorted([first.failure.kind, second.failure.kind]) == [pb.ERROR_KIND_NONE, pb.ERROR_KIND_CONFLICT], (round_, first, second)
                loser = first if first.failure.kind else second
                assert loser.failure.message.endswith("is being published by another request; try again")
                assert control_status(ControlErrorKind(loser.failure.kind)) == 409
                winner = second if first.failure.kind else first
                assert winner.op == pb.PUBLISH_OP_CREATED
            assert len((await h.store.get_prefix(b"/db/")).kvs) == 5
            assert len((await h.store.get_prefix(meta_key("owner") + b"/")).kvs) == 5

    run(body)


def test_a_stranger_racing_for_a_new_name_gets_409_or_403_never_both_created(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            for round_ in range(5):
                name = f"race{round_}"
                first, second = await asyncio.gather(h.publish(name), h.publish(name, caller=BOB))
                kinds = sorted([first.failure.kind, second.failure.kind])
                assert kinds[0] == pb.ERROR_KIND_NONE
                assert kinds[1] in (pb.ERROR_KIND_CONFLICT, pb.ERROR_KIND_NOT_AUTHORIZED), (first, second)
            assert len((await h.store.get_prefix(b"/db/")).kvs) == 5

    run(body)


def test_a_failed_install_removes_the_record_owner_index_and_the_claimed_name(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            for node in h.fakes.nodes.values():
                node.install_failure = "invalid module: no __describe_module__"
            failed = await h.publish("broken")
            # An invalid program is the publisher's to fix: 400 with the node's reason.
            assert failed.failure.kind == pb.ERROR_KIND_BAD_REQUEST
            assert failed.failure.message == "Failed to create the database: invalid module: no __describe_module__"
            assert control_status(ControlErrorKind(failed.failure.kind)) == 400
            for prefix in (b"/db/", b"/owner/", b"/dns/", b"/rdns/", b"/tld/"):
                assert (await h.store.get_prefix(prefix)).kvs == [], prefix
            # Every chosen node was told to drop what it might have built.
            assert sum(len(n.called("Delete")) for n in h.fakes.nodes.values()) == 3
            for node in h.fakes.nodes.values():
                node.install_failure = None
            # The name is free for anyone now.
            assert (await h.publish("broken", caller=BOB)).failure.kind == pb.ERROR_KIND_NONE

    run(body)


def test_a_crash_between_record_and_install_leaves_a_creating_record_only_its_owner_can_retry(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            gate = asyncio.Event()
            for node in h.fakes.nodes.values():
                node.install_gate = gate
            stuck = asyncio.ensure_future(h.publish("pending"))
            identity = await eventually(lambda: _identity_of(h, "pending"), what="record written")
            record = await h.record(identity)
            assert record is not None and record.state is DbState.CREATING
            # The owner's second publish while the first runs: 409; a stranger: 403.
            assert (await h.publish("pending")).failure.kind == pb.ERROR_KIND_CONFLICT
            assert (await h.publish("pending", caller=BOB)).failure.kind == pb.ERROR_KIND_NOT_AUTHORIZED
            # The control plane dies mid-install (a new one takes over with nothing in flight).
            stuck.cancel()
            await h.primary.stop()
            successor = await h.second_control_plane()
            await successor.cluster.wait_active(30)
            gate.set()
            assert (await h.publish("pending", caller=BOB, stub=successor.stub)).failure.kind == (
                pb.ERROR_KIND_NOT_AUTHORIZED
            )
            retried = await h.publish("pending", stub=successor.stub)
            assert retried.failure.kind == pb.ERROR_KIND_NONE and retried.op == pb.PUBLISH_OP_CREATED
            assert Identity.from_bsatn(retried.database_identity) == identity
            record = await h.record(identity)
            assert record is not None and record.state is DbState.ACTIVE
            assert (record.epoch, record.generation) == (2, 2)
            assert record.leader is not None
            install = h.node(record.leader).called("Install")[-1]
            assert install.clear and (install.epoch, install.generation) == (2, 2)  # wipe any partial replica

    run(body)


def test_an_abandoned_create_is_cleaned_up_by_the_reconcile_loop(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path, abandoned_create_timeout=0.3) as h:
            gate = asyncio.Event()
            for node in h.fakes.nodes.values():
                node.install_gate = gate
            stuck = asyncio.ensure_future(h.publish("orphan"))
            identity = await eventually(lambda: _identity_of(h, "orphan"))
            stuck.cancel()
            await h.primary.stop()
            successor = await h.second_control_plane()
            await successor.cluster.wait_active(30)
            gate.set()
            await eventually(lambda: _gone(h, identity), what="abandoned create removed")
            assert await h.store.get(meta_key("dns", "orphan")) is None

    run(body)


def test_update_goes_to_the_leader_with_the_epoch_and_reset_raises_generation_and_epoch(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            identity = await h.created("app")
            record = await h.record(identity)
            assert record is not None and record.leader is not None
            updated = await h.publish("app")
            assert updated.failure.kind == pb.ERROR_KIND_NONE and updated.op == pb.PUBLISH_OP_UPDATED
            update = h.node(record.leader).called("Install")[-1]
            assert (update.epoch, update.clear) == (1, False)
            assert (await h.publish("app", caller=BOB)).failure.kind == pb.ERROR_KIND_NOT_AUTHORIZED

            reset = await h.publish("app", clear=True)
            assert reset.failure.kind == pb.ERROR_KIND_NONE
            after = await h.record(identity)
            assert after is not None and (after.epoch, after.generation) == (2, 2)
            assert after.leader is not None
            wipe = h.node(after.leader).called("Install")[-1]
            assert wipe.clear and (wipe.epoch, wipe.generation) == (2, 2)

            again = await h.stub.Reset(pb.ResetRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="app"))
            assert again.failure.kind == pb.ERROR_KIND_NONE
            latest = await h.record(identity)
            assert latest is not None and (latest.epoch, latest.generation) == (3, 3)
            assert latest.leader is not None and h.node(latest.leader).called("Install")[-1].keep_program

    run(body)


def test_an_update_refused_by_the_module_keeps_its_kind(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            await h.created("app")
            for node in h.fakes.nodes.values():
                node.install_failure, node.install_failure_kind = "init failed", hpb.ERROR_KIND_DATABASE
            refused = await h.publish("app")
            assert refused.failure.kind == pb.ERROR_KIND_PUBLISH_FAILED
            assert refused.failure.message == "Failed to update the database: init failed"

    run(body)


def test_delete_drops_every_replica_then_the_record_names_stay(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            identity = await h.created("gone")
            record = await h.record(identity)
            assert record is not None
            denied = await h.stub.DeleteDatabase(
                pb.DeleteDatabaseRequest(caller_identity=BOB.to_bsatn(), name_or_identity="gone")
            )
            assert denied.failure.kind == pb.ERROR_KIND_NOT_AUTHORIZED
            deleted = await h.stub.DeleteDatabase(
                pb.DeleteDatabaseRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="gone")
            )
            assert deleted.failure.kind == pb.ERROR_KIND_NONE
            assert await h.record(identity) is None
            assert (await h.store.get_prefix(meta_key("owner") + b"/")).kvs == []
            for node in record.replicas:
                assert identity not in h.node(node).replicas and h.node(node).called("Delete")
            assert await h.store.get(meta_key("dns", "gone")) is not None  # names stay, as in 1.12
            # Unlike 1.12, nobody else may take the name (or the identity it points at) over.
            for target in ("gone", identity.to_hex()):
                stranger = await h.publish(target, caller=BOB)
                assert stranger.failure.kind == pb.ERROR_KIND_NOT_AUTHORIZED, target
                assert "its name `gone` belongs to the identity that published it" in stranger.failure.message
                assert control_status(ControlErrorKind(stranger.failure.kind)) == 403
            assert await h.record(identity) is None
            again = await h.publish("gone")  # ... and the owner can publish there again
            assert again.failure.kind == pb.ERROR_KIND_NONE and again.database_identity == identity.to_bsatn()

    run(body)


def test_an_update_waits_for_a_leader_and_says_503_when_none_comes(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path, leader_wait=0.3) as h:
            identity = await h.created("lonely")
            record = await h.record(identity)
            assert record is not None and record.leader is not None
            others = [n for n in record.replicas if n != record.leader]
            for node in [record.leader, others[0]]:
                await h.node(node).stop()
            await eventually(lambda: _leaderless(h, identity))
            refused = await h.publish("lonely")
            assert refused.failure.kind == pb.ERROR_KIND_UNAVAILABLE
            assert "has no leader right now" in refused.failure.message

    run(body)


async def _identity_of(h: Harness, name: str) -> Identity | None:
    kv = await h.store.get(meta_key("dns", name))
    return None if kv is None else Identity.from_hex(kv.value.decode())


async def _gone(h: Harness, identity: Identity) -> bool:
    return await h.store.get(db_key(identity)) is None


async def _leaderless(h: Harness, identity: Identity) -> bool:
    record = await h.record(identity)
    return record is not None and record.leader is None
