"""The control plane's gRPC service and its gRPC host-node client, over real servers on 127.0.0.1:
a ControlPlane on an LMDB MetaStore driving a HostNode through its gRPC service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from clustermeta.metastore_lmdb import LmdbMetaStore
from controlplane import core
from controlplane.core import ControlPlane, Placement
from controlplane.grpc_service import ControlPlaneOps, failure_of, start_server
from controlplane.hostnode_client import DatabaseNotFound, GrpcHostNodeClient, HostNodeFailure, MigrationError
from gateway.failures import ControlErrorKind, control_status
from hostnode import grpc_service as hostnode_grpc
from hostnode.service import HostNode, HostNodeConfig
from proto import auth
from proto import controlplane_pb2 as pb
from proto import controlplane_pb2_grpc as pb_grpc
from sats.identity import Identity
from tests.cluster_secret import SECRET
from tests.hostnode.conftest import module_wasm

ALICE = Identity.from_claims("localhost", "alice")
BOB = Identity.from_claims("localhost", "bob")
CHAT = module_wasm("quickstart-chat")
TRANSFER = module_wasm("transfer")

Body = Callable[[pb_grpc.ControlPlaneStub, GrpcHostNodeClient, HostNode], Awaitable[None]]


def with_services(tmp_path: Path, body: Body) -> None:
    """A host node and a control plane, each behind its gRPC server; the control plane reaches the
    node through :class:`GrpcHostNodeClient`."""

    async def main() -> None:
        store = await LmdbMetaStore.open(tmp_path / "meta.lmdb")
        node = HostNode(HostNodeConfig(tmp_path / "node"))
        await node.start()
        host_server, host_addr = await hostnode_grpc.start_server(node, secret=SECRET)
        host_channel = auth.channel(host_addr, SECRET)
        client = GrpcHostNodeClient(host_channel)
        control = ControlPlane(store, client, Placement("node-0", host_addr))
        server, address = await start_server(ControlPlaneOps(control, client.reset, [0, 7]), secret=SECRET)
        try:
            async with auth.channel(address, SECRET) as channel:
                await body(pb_grpc.ControlPlaneStub(channel), client, node)
        finally:
            await server.stop(None)
            await host_channel.close()
            await host_server.stop(None)
            await node.stop()
            await store.close()

    asyncio.run(main())


def publish(name: str, program: bytes, caller: Identity = ALICE, clear: bool = False) -> pb.PublishRequest:
    return pb.PublishRequest(caller_identity=caller.to_bsatn(), name_or_identity=name, program=program, clear=clear)


def test_publish_resolve_reset_delete(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.ControlPlaneStub, client: GrpcHostNodeClient, node: HostNode) -> None:
        created = await stub.Publish(publish("chat", CHAT))
        assert created.failure.kind == pb.ERROR_KIND_NONE and created.op == pb.PUBLISH_OP_CREATED
        assert created.domain == "chat"
        db = Identity.from_bsatn(created.database_identity)
        assert node.has(db)
        updated = await stub.Publish(publish(db.to_hex(), CHAT))
        assert updated.op == pb.PUBLISH_OP_UPDATED and not updated.HasField("domain")

        resolved = await stub.Resolve(pb.ResolveRequest(name_or_identity="chat"))
        assert resolved.database_identity == db.to_bsatn()
        info = (await stub.GetDatabase(pb.GetDatabaseRequest(name_or_identity="chat"))).database
        assert (info.owner_identity, info.host_type) == (ALICE.to_bsatn(), "Wasm")
        assert len(info.initial_program_hash) == 64 and info.replicas[0].node_id == "node-0"

        # Reset with no program reinstalls the current one, through the host node's gRPC service.
        reset = await stub.Reset(pb.ResetRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="chat"))
        assert reset.op == pb.PUBLISH_OP_UPDATED and reset.domain == "chat"
        swapped = await stub.Reset(pb.ResetRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="chat",
                                                   program=TRANSFER))
        assert swapped.failure.kind == pb.ERROR_KIND_NONE
        assert {t["name"] for t in node.schema_json(db)["tables"]} == {"accounts"}

        owned = await stub.ListDatabases(pb.ListDatabasesRequest(owner_identity=ALICE.to_bsatn()))
        assert list(owned.identities) == [db.to_bsatn()]
        assert list((await stub.ListNodes(pb.ListNodesRequest())).node_ids) == [0, 7]

        denied = await stub.DeleteDatabase(pb.DeleteDatabaseRequest(caller_identity=BOB.to_bsatn(), name_or_identity="chat"))
        assert denied.failure.kind == pb.ERROR_KIND_NOT_AUTHORIZED
        assert denied.failure.message.endswith(": delete database")
        deleted = await stub.DeleteDatabase(pb.DeleteDatabaseRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="chat"))
        assert deleted.failure.kind == pb.ERROR_KIND_NONE and not node.has(db)
        # The name survives its database.
        assert (await stub.GetNames(pb.GetNamesRequest(database_identity=db.to_bsatn()))).names == ["chat"]
        missing = await stub.GetDatabase(pb.GetDatabaseRequest(name_or_identity="chat"))
        assert (missing.failure.kind, missing.failure.message) == (pb.ERROR_KIND_DATABASE_NOT_FOUND, "No such database.")

    with_services(tmp_path, body)


def test_failures_carry_kind_message_and_body(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.ControlPlaneStub, client: GrpcHostNodeClient, node: HostNode) -> None:
        bad = await stub.Resolve(pb.ResolveRequest(name_or_identity="Bad_Name"))
        assert (bad.failure.kind, bad.failure.message) == (pb.ERROR_KIND_INVALID_NAME, "invalid characters in database name")
        unknown = await stub.Resolve(pb.ResolveRequest(name_or_identity="nobody"))
        assert unknown.failure.kind == pb.ERROR_KIND_NAME_NOT_FOUND

        junk = await stub.Publish(publish("junk", b"junk"))
        assert junk.failure.kind == pb.ERROR_KIND_BAD_REQUEST  # ModuleLoadError crossed the wire
        assert junk.failure.message == "Failed to create the database: not a WebAssembly module (missing \\0asm header)"
        clear = await stub.Publish(publish("", CHAT, clear=True))
        assert (clear.failure.kind, clear.failure.message) == (
            pb.ERROR_KIND_BAD_REQUEST, "Clear database requires database name or identity",
        )
        assert (await stub.Publish(publish("chat", CHAT))).failure.kind == pb.ERROR_KIND_NONE
        refused = await stub.Publish(publish("chat", TRANSFER))
        assert refused.failure.kind == pb.ERROR_KIND_UPDATE_REJECTED  # MigrationError crossed the wire
        assert refused.failure.message.startswith("Database update rejected: ")
        not_owner = await stub.Publish(publish("chat", CHAT, caller=BOB))
        assert not_owner.failure.kind == pb.ERROR_KIND_NOT_AUTHORIZED

        # JSON bodies travel as JSON text.
        taken = await stub.AddName(pb.AddNameRequest(caller_identity=BOB.to_bsatn(), name_or_identity="nobody-db",
                                                     name="x"))
        assert taken.failure.kind == pb.ERROR_KIND_NAME_NOT_FOUND
        exists = await stub.AddName(pb.AddNameRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="chat",
                                                      name="junk"))
        assert (exists.failure.kind, exists.failure.message) == (
            pb.ERROR_KIND_OTHER, "Record for name 'junk' already exists.",
        )
        alias = await stub.AddName(pb.AddNameRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="chat",
                                                     name="chat-alias"))
        assert alias.domain == "chat-alias" and alias.failure.kind == pb.ERROR_KIND_NONE
        invalid = await stub.SetNames(pb.SetNamesRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="chat",
                                                         names=["ok", "Not-OK"]))
        assert (invalid.failure.kind, invalid.failure.message) == (
            pb.ERROR_KIND_BAD_REQUEST, "Error parsing `Not-OK`: invalid characters in database name",
        )
        not_yours = await stub.SetNames(pb.SetNamesRequest(caller_identity=BOB.to_bsatn(), name_or_identity="chat",
                                                           names=["mine"]))
        assert json.loads(not_yours.failure.json_body) == {"NotYourDatabase": {"database": (
            await stub.Resolve(pb.ResolveRequest(name_or_identity="chat"))
        ).database_identity[::-1].hex()}}
        renamed = await stub.SetNames(pb.SetNamesRequest(caller_identity=ALICE.to_bsatn(), name_or_identity="chat",
                                                         names=["talk"]))
        assert renamed.failure.kind == pb.ERROR_KIND_NONE
        # "chat" no longer names anything, but its top-level domain stays Alice's.
        assert (await stub.Publish(publish("bob-db", CHAT, caller=BOB))).failure.kind == pb.ERROR_KIND_NONE
        denied = await stub.AddName(pb.AddNameRequest(caller_identity=BOB.to_bsatn(), name_or_identity="bob-db",
                                                      name="chat"))
        assert denied.failure.kind == pb.ERROR_KIND_NAME_PERMISSION_DENIED
        assert json.loads(denied.failure.json_body) == {"PermissionDenied": {"domain": "chat"}}

        watch = stub.WatchDatabases(pb.WatchDatabasesRequest())
        first = await watch.read()
        assert first.snapshot and first.database.leader == "node-0" and first.database.replicas[0].address
        while not (await watch.read()).snapshot_end:
            pass
        watch.cancel()
        cluster_only = await stub.AddReplica(pb.ReplicaChangeRequest(name_or_identity="chat", to_node="n2"))
        assert cluster_only.failure.kind == pb.ERROR_KIND_BAD_REQUEST and "standalone" in cluster_only.failure.message

    with_services(tmp_path, body)


def test_hostnode_client_errors_keep_the_names_the_control_plane_knows(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.ControlPlaneStub, client: GrpcHostNodeClient, node: HostNode) -> None:
        db = Identity.from_claims("localhost", "db")
        assert (await client.install(db, ALICE, CHAT)).created
        assert "code only" in (await client.install(db, ALICE, CHAT)).migration
        with pytest.raises(MigrationError, match="table `message` would be removed") as migration:
            await client.install(db, ALICE, TRANSFER)
        assert type(migration.value).__name__ == "MigrationError"
        with pytest.raises(HostNodeFailure) as load:
            await client.install(db, ALICE, b"junk")
        assert not isinstance(load.value, MigrationError | DatabaseNotFound)
        await client.delete(db)
        with pytest.raises(DatabaseNotFound):
            await client.delete(db)
        with pytest.raises(DatabaseNotFound):
            await client.reset(db, ALICE, None)

    with_services(tmp_path, body)


@pytest.mark.parametrize(
    "error",
    [
        core.InvalidName("x"),
        core.NameNotFound("x"),
        core.DatabaseNotFound("x"),
        core.NotAuthorized("x"),
        core.NamePermissionDenied("x"),
        core.BadRequest("x"),
        core.PublishFailed("x"),
        core.UpdateRejected("x"),
        core.ControlPlaneError("x"),
    ],
)
def test_every_error_class_has_a_kind_with_its_status(error: core.ControlPlaneError) -> None:
    kind, message, body = failure_of(error)
    assert control_status(ControlErrorKind(kind)) == error.status
    assert (message, body) == ("x", None)
