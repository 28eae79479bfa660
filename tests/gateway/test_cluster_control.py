"""The cluster gateway's control-plane side (gateway/cluster_backends.py): lookups answered from its
mirror exactly as the control plane answers them, changes sent to the active control plane (found
through ``/controlplane/leader``), and read-your-writes — a client that publishes through a
gateway and then calls it never gets a 404.

The control plane here is the real one (controlplane.core over its gRPC service) writing to the
same MetaStore the gateway mirrors, driving a real host node over gRPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from clustermeta.metastore_lmdb import LmdbMetaStore
from controlplane.core import ControlPlane, Placement
from controlplane.grpc_service import ControlPlaneOps, ControlPlaneServicer
from controlplane.hostnode_client import GrpcHostNodeClient
from gateway.cluster_backends import ClusterConfig
from gateway.errors import ApiError
from orrery.standalone import LocalControlPlane
from proto import GRPC_OPTIONS, auth
from proto import controlplane_pb2 as cpb
from proto import controlplane_pb2_grpc as cpb_grpc
from sats.identity import Identity
from tests.cluster_secret import SECRET
from tests.gateway.cluster_harness import (
    FAST,
    FlakyStore,
    Gateway,
    Node,
    gateway,
    nodes,
    register_node,
    set_controlplane,
)
from tests.gateway.conftest import CHAT
from tests.servers import Client

ALICE = Identity.from_claims("localhost", "alice")
BOB = Identity.from_claims("localhost", "bob")


class RecordingServicer(ControlPlaneServicer):
    """The real service; remembers every PublishRequest."""

    def __init__(self, ops: ControlPlaneOps) -> None:
        super().__init__(ops)
        self.publishes: list[cpb.PublishRequest] = []

    async def Publish(self, request: cpb.PublishRequest, context: Any) -> cpb.PublishResponse:  # noqa: N802
        self.publishes.append(request)
        return await super().Publish(request, context)


@dataclass
class Cluster:
    store: FlakyStore
    node: Node
    control: ControlPlane
    servicer: RecordingServicer
    gw: Gateway
    client: Client

    async def identity(self) -> tuple[Identity, str]:
        """A fresh identity minted by the gateway, and its token."""
        hex_id, token = await self.client.new_identity()
        return Identity.from_hex(hex_id), token


def run(tmp_path: Path, body: Callable[[Cluster], Awaitable[None]], config: ClusterConfig = FAST) -> None:
    async def main() -> None:
        store = FlakyStore(await LmdbMetaStore.open(tmp_path / "meta.lmdb"))
        try:
            async with nodes(tmp_path, "n1") as started:
                node = started["n1"]
                await register_node(store, "n1", node.address)
                channel = auth.channel(node.address, SECRET)
                host_client = GrpcHostNodeClient(channel)
                control = ControlPlane(store, host_client, Placement("n1", node.address))
                servicer = RecordingServicer(ControlPlaneOps(control, host_client.reset, [0]))
                server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=auth.server_interceptors(SECRET))
                cpb_grpc.add_ControlPlaneServicer_to_server(servicer, server)
                port = server.add_insecure_port("127.0.0.1:0")
                await server.start()
                await set_controlplane(store, f"127.0.0.1:{port}")
                try:
                    async with gateway(store, config) as gw, Client(gw.url) as client:
                        cluster = Cluster(store, node, control, servicer, gw, client)
                        await asyncio.wait_for(body(cluster), 120)
                finally:
                    await server.stop(None)
                    await channel.close()
        finally:
            await store.close()

    asyncio.run(main())


def test_publish_then_call_through_the_gateway_never_404s(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        _, token = await c.identity()
        for i in range(4):
            name = f"fresh-{i}"
            published = await c.client.publish(name, CHAT, token=token)
            assert published.status == 200, published
            assert (await c.client.call(name, "send_message", f"hello {i}", token=token)).status == 200
            assert [r[2] for r in await c.client.rows(name, "SELECT * FROM message")] == [f"hello {i}"]
            assert (await c.client.get(f"/v1/database/{name}")).status == 200
        # Unnamed, by identity.
        unnamed = await c.client.publish(None, CHAT, token=token)
        assert unnamed.status == 200
        identity = unnamed.json()["Success"]["database_identity"]
        assert (await c.client.call(identity, "send_message", "by identity", token=token)).status == 200

    run(tmp_path, body)


def test_publish_then_call_while_the_mirror_lags(tmp_path: Path) -> None:
    """The gateway's mirror sees nothing new: the publish answers once its wait for the mirror is
    spent, and the call still finds the database (a miss reads the store)."""

    async def body(c: Cluster) -> None:
        _, token = await c.identity()
        c.store.hold()
        assert (await c.client.publish("lagging", CHAT, token=token)).status == 200
        assert (await c.client.call("lagging", "send_message", "found", token=token)).status == 200
        assert (await c.client.get("/v1/database/lagging/names")).json() == {"names": ["lagging"]}
        c.store.release()
        assert await c.gw.view.wait_for(await c.store.current_revision(), 10)

    run(tmp_path, body, dataclasses.replace(FAST, catch_up_timeout=0.5))


def test_name_changes_and_deletes_are_seen_at_once(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        owner, token = await c.identity()
        assert (await c.client.publish("first", CHAT, token=token)).status == 200
        added = await c.client.post("/v1/database/first/names", data="second", token=token)
        assert added.status == 200, added
        assert (await c.client.get("/v1/database/first/names")).json() == {"names": ["first", "second"]}
        renamed = await c.client.put(
            "/v1/database/second/names", json_body=["third"], token=token, headers={"Content-Type": "application/json"}
        )
        assert renamed.status == 200, renamed
        assert (await c.client.get("/v1/database/third/names")).json() == {"names": ["third"]}
        gone = await c.client.get("/v1/database/first")
        assert (gone.status, gone.text) == (404, "Could not resolve database `first`")
        listed = await c.client.get(f"/v1/identity/{owner.to_hex()}/databases")
        assert len(listed.json()["identities"]) == 1
        assert (await c.client.delete("/v1/database/third", token=token)).status == 200
        after = await c.client.get("/v1/database/third")
        assert (after.status, after.text) == (404, "No such database.")
        assert (await c.client.get(f"/v1/identity/{owner.to_hex()}/databases")).json() == {"identities": []}

    run(tmp_path, body)


def test_lookups_answer_as_the_control_plane_does(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        local = LocalControlPlane(c.control, c.node.host)
        cluster = c.gw.control
        db = (await local.publish(ALICE, "a", CHAT, clear=False)).identity
        await local.add_name(ALICE, "a", "a-alias")
        assert await c.gw.view.wait_for(await c.store.current_revision(), 10)

        async def same(op: Callable[[Any], Awaitable[Any]]) -> None:
            assert await _answer(op(local)) == await _answer(op(cluster))

        nowhere = Identity.from_claims("localhost", "nowhere")
        long = ("n" * 65, "n" * 600)  # over the length limit (600: over the store's key size)
        for noi in ("a", "a-alias", "Bad_Name", "a--b", "", "unknown", db.to_hex(), nowhere.to_hex(), "0x" + db.to_hex(), *long):
            await same(lambda cp, noi=noi: cp.resolve(noi))
            await same(lambda cp, noi=noi: cp.database(noi))
        for who in (db, nowhere):
            await same(lambda cp, who=who: cp.names(who))
        for owner in (ALICE, BOB):
            await same(lambda cp, owner=owner: cp.databases_of(owner))
        # Changes through the gateway answer as the control plane does, failures included.
        await same(lambda cp: cp.publish(BOB, "a", CHAT, clear=False))
        await same(lambda cp: cp.add_name(ALICE, "a", "Bad_Name"))
        await same(lambda cp: cp.set_names(BOB, "a", ["mine"]))
        await same(lambda cp: cp.delete(BOB, "a"))
        for noi in long:
            assert (await _answer(cluster.resolve(noi)))[1] == 400
            await same(lambda cp, noi=noi: cp.publish(ALICE, noi, CHAT, clear=False))
            await same(lambda cp, noi=noi: cp.add_name(ALICE, "a", noi))
        health = await c.client.get("/v1/health")
        assert health.json()["nodes"] == ["n1"] and health.json()["schedulable"] is True

    run(tmp_path, body)


async def _answer(aw: Awaitable[Any]) -> Any:
    try:
        return await aw
    except ApiError as e:
        return ("ApiError", e.status, e.body, e.content_type)


def test_num_replicas_reaches_the_control_plane(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        _, token = await c.identity()
        reply = await c.client.request(
            "PUT", "/v1/database/replicated", token=token, data=CHAT, params={"num_replicas": "3"}
        )
        assert reply.status == 200, reply
        assert (await c.client.publish("default-replicas", CHAT, token=token)).status == 200
        assert [p.num_replicas for p in c.servicer.publishes] == [3, 0]

    run(tmp_path, body)


def test_changes_without_a_reachable_control_plane_are_503s(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        _, token = await c.identity()
        await set_controlplane(c.store, None)
        reply = await c.client.publish("nowhere", CHAT, token=token)
        assert reply.status == 503 and reply.text.startswith("no control plane is active")
        await set_controlplane(c.store, "127.0.0.1:1")  # nothing listens there: never sent
        reply = await c.client.publish("nowhere", CHAT, token=token)
        assert reply.status == 503 and "127.0.0.1:1 is unreachable" in reply.text
        assert c.servicer.publishes == []
        # Lookups never needed the control plane.
        assert (await c.client.get("/v1/database/nowhere")).status == 404

    run(tmp_path, body)
