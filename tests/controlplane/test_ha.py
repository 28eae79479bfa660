"""Two control planes on one store: one active, the standby refuses changes and takes over, and a
deposed control plane's writes fail on the fence whether or not it noticed."""

from __future__ import annotations

from pathlib import Path

import pytest

from clustermeta.metastore import Compare, MetaStore
from clustermeta.records import CONTROLPLANE_LEADER_KEY, CONTROLPLANES_PREFIX, ControlPlaneInfo
from controlplane.core import NotActive
from controlplane.dbrecords import DbRecords
from controlplane.elections import evolve
from gateway.failures import ControlErrorKind, control_status
from proto import controlplane_pb2 as pb
from proto import controlplane_pb2_grpc as pb_grpc
from sats.identity import Identity
from tests.controlplane.cluster_harness import ALICE, Harness, cluster_harness, eventually, run


async def seat_holder(store: MetaStore) -> str:
    kv = await store.get(CONTROLPLANE_LEADER_KEY)
    return "" if kv is None else ControlPlaneInfo.from_json(kv.value).id


def test_one_control_plane_is_active_and_the_standby_refuses_every_change(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            a = h.primary
            b = await h.second_control_plane()
            await eventually(lambda: b.cluster.seat.active() is not None, what="standby sees the active one")
            assert a.cluster.is_active() and not b.cluster.is_active()
            assert await seat_holder(h.store) == "cp-a"
            registered = await h.store.get_prefix(CONTROLPLANES_PREFIX)
            assert sorted(kv.key.decode() for kv in registered.kvs) == ["/controlplanes/cp-a", "/controlplanes/cp-b"]

            refused = await h.publish("db", stub=b.stub)
            assert refused.failure.kind == pb.ERROR_KIND_NOT_ACTIVE
            assert refused.failure.active_address == a.address
            assert refused.failure.message == f"control plane cp-b is a standby; the active control plane is cp-a at {a.address}"
            assert control_status(ControlErrorKind(refused.failure.kind)) == 503
            for call in (
                b.stub.DeleteDatabase(pb.DeleteDatabaseRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="db")),
                b.stub.AddName(pb.AddNameRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="db", name="x")),
                b.stub.TransferLeader(pb.TransferLeaderRequest(name_or_identity="db", to_node="n2")),
                b.stub.Drain(pb.DrainRequest(node_id="n1")),
            ):
                assert (await call).failure.kind == pb.ERROR_KIND_NOT_ACTIVE
            # Reads are served by either.
            identity = await h.created("db")
            resolved = await b.stub.Resolve(pb.ResolveRequest(name_or_identity="db"))
            assert resolved.database_identity == identity.to_bsatn()
            assert (await b.stub.ClusterStatus(pb.ClusterStatusRequest())).failure.kind == pb.ERROR_KIND_NONE

    run(body)


def test_the_standby_takes_over_when_the_active_lease_is_revoked(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            a = h.primary
            b = await h.second_control_plane()
            identity = await h.created("db")
            lease = a.cluster.seat._lease
            assert lease is not None
            await h.store.revoke(lease.lease_id)
            await b.cluster.wait_active(30)
            await eventually(lambda: not a.cluster.is_active(), what="the old one stands down")
            assert await seat_holder(h.store) == "cp-b"
            # The new active control plane runs elections and publishes.
            await h.node("n1").stop()
            await eventually(lambda: _leader_not(h, identity, "n1"))
            assert (await h.publish("other", stub=b.stub)).failure.kind == pb.ERROR_KIND_NONE
            # ... and the old one, standing by now, points at it.
            refused = await h.publish("third", stub=a.stub)
            assert refused.failure.kind == pb.ERROR_KIND_NOT_ACTIVE
            await eventually(lambda: _active_address_is(h, a.stub, b.address))
            # It campaigns again with a fresh lease: it takes over when cp-b goes.
            await b.stop()
            await a.cluster.wait_active(30)

    run(body)


def test_the_standby_takes_over_when_the_active_one_stops_renewing(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            a = h.primary
            b = await h.second_control_plane()
            lease = a.cluster.seat._lease
            assert lease is not None and lease._task is not None
            lease._task.cancel()  # a paused process: no keepalive goes out any more
            # It stops acting at its own deadline, before the store lets the lease go.
            await eventually(lambda: not a.cluster.is_active(), what="the paused one stops acting")
            await b.cluster.wait_active(30)
            assert await seat_holder(h.store) == "cp-b"

    run(body)


def test_a_deposed_control_planes_record_writes_fail_even_if_it_has_not_noticed(tmp_path: Path) -> None:
    async def body() -> None:
        async with cluster_harness(tmp_path) as h:
            a = h.primary
            b = await h.second_control_plane()
            identity = await h.created("db")
            unaware = DbRecords(h.store, FrozenFence(a.cluster.seat.compares()))
            current = await unaware.get(identity)
            assert current is not None
            lease = a.cluster.seat._lease
            assert lease is not None
            await h.store.revoke(lease.lease_id)
            await b.cluster.wait_active(30)
            changed = evolve(current.record)
            changed.leader = None
            with pytest.raises(NotActive):
                await unaware.cas(current, changed)
            with pytest.raises(NotActive):
                await unaware.remove(current)
            after = await h.record(identity)
            assert after is not None and after.leader == current.record.leader
            # The same write under the new active control plane's fence succeeds.
            assert await b.cluster.records.cas(current, changed) is not None

    run(body)


class FrozenFence:
    """The fence of a control plane that does not know it was deposed: the old token, no check."""

    def __init__(self, compares: list[Compare]) -> None:
        self._compares = compares

    def compares(self) -> list[Compare]:
        return list(self._compares)

    async def check(self) -> None:
        raise NotActive("deposed")

    def require_active(self) -> None:
        pass


async def _leader_not(h: Harness, identity: Identity, node: str) -> bool:
    record = await h.record(identity)
    return record is not None and record.leader not in (None, node)


async def _active_address_is(h: Harness, stub: pb_grpc.ControlPlaneStub, address: str) -> bool:
    refused = await stub.Publish(
        pb.PublishRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="probe", program=b"x")
    )
    return bool(refused.failure.kind == pb.ERROR_KIND_NOT_ACTIVE and refused.failure.active_address == address)
