"""Control plane logic against the embedded MetaStore and a real in-process host node."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from clustermeta.metastore_lmdb import LmdbMetaStore
from controlplane.core import (
    BadRequest,
    Conflict,
    ControlPlane,
    DatabaseNotFound,
    InvalidName,
    InvalidProgram,
    NameNotFound,
    NamePermissionDenied,
    NotAuthorized,
    Placement,
    UpdateRejected,
    parse_name_or_identity,
)
from hostnode.service import HostNode, HostNodeConfig
from sats.identity import Identity
from tests.hostnode.conftest import module_wasm

ALICE = Identity.from_claims("localhost", "alice")
BOB = Identity.from_claims("localhost", "bob")


def with_plane(tmp_path: Path, body: Callable[[ControlPlane, HostNode], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await LmdbMetaStore.open(tmp_path / "meta.lmdb")
        node = HostNode(HostNodeConfig(tmp_path / "node"))
        await node.start()
        try:
            await body(ControlPlane(store, node, Placement("node-0", "127.0.0.1:0")), node)
        finally:
            await node.stop()
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "database names cannot be empty"),
        ("Chat", "invalid characters in database name"),
        ("my_db", "invalid characters in database name"),
        ("a--b", "invalid hyphen in database name"),
        ("-ab", "invalid hyphen in database name"),
        ("ab-", "invalid hyphen in database name"),
        ("a" * 65, "database names are at most 64 characters long, this one has 65"),
        ("a-" * 300 + "a", "database names are at most 64 characters long, this one has 601"),
    ],
)
def test_name_rules(text: str, message: str) -> None:
    with pytest.raises(InvalidName, match=f"^{message}$"):
        parse_name_or_identity(text)


def test_identities_and_names_parse() -> None:
    assert parse_name_or_identity(ALICE.to_hex()) == ALICE
    assert parse_name_or_identity("0x" + ALICE.to_hex().upper()) == ALICE
    assert parse_name_or_identity("quickstart-chat") == "quickstart-chat"


def test_publish_resolve_update_and_ownership(tmp_path: Path) -> None:
    async def body(cp: ControlPlane, node: HostNode) -> None:
        created = await cp.publish(ALICE, "chat", module_wasm("quickstart-chat"))
        assert created.op == "created" and created.domain == "chat"
        assert created.to_json()["Success"]["database_identity"] == created.identity.to_hex()
        assert await cp.resolve("chat") == created.identity
        assert node.has(created.identity)
        record = await cp.require_database("chat")
        assert record.owner == ALICE and record.replicas == ["node-0"]
        updated = await cp.publish(ALICE, "chat", module_wasm("quickstart-chat"))
        assert (updated.op, updated.identity) == ("updated", created.identity)
        with pytest.raises(NotAuthorized, match="update database"):
            await cp.publish(BOB, "chat", module_wasm("quickstart-chat"))
        with pytest.raises(UpdateRejected, match="^Database update rejected: "):
            await cp.publish(ALICE, "chat", module_wasm("transfer"))
        anonymous = await cp.publish(BOB, None, module_wasm("transfer"))
        assert anonymous.domain is None and anonymous.identity.to_hex().startswith("c200")
        assert sorted(await cp.databases_of(ALICE), key=str) == [created.identity]
        assert await cp.databases_of(BOB) == [anonymous.identity]

    with_plane(tmp_path, body)


def test_a_name_of_the_longest_length_works_everywhere(tmp_path: Path) -> None:
    async def body(cp: ControlPlane, node: HostNode) -> None:
        longest = "z" * 64  # (64 hex digits would be an identity)
        created = await cp.publish(ALICE, longest, module_wasm("transfer"))
        assert await cp.resolve(longest) == created.identity
        await cp.add_name(ALICE, longest, "x" * 64)
        assert sorted(await cp.names(created.identity)) == ["x" * 64, longest]
        with pytest.raises(InvalidName, match="at most 64 characters"):
            await cp.publish(ALICE, longest + "c", module_wasm("transfer"))
        with pytest.raises(InvalidName, match="at most 64 characters"):
            await cp.resolve("d" * 600)

    with_plane(tmp_path, body)


def test_failed_first_publish_keeps_the_name_but_no_database(tmp_path: Path) -> None:
    async def body(cp: ControlPlane, node: HostNode) -> None:
        with pytest.raises(InvalidProgram, match=r"^Failed to create the database: not a WebAssembly module"):
            await cp.publish(ALICE, "broken", b"not wasm")
        with pytest.raises(InvalidProgram, match="^Failed to create the database: invalid WebAssembly: "):
            await cp.publish(ALICE, "broken", module_wasm("transfer")[:100])
        identity = await cp.resolve("broken")
        assert await cp.database(identity) is None and not node.has(identity)
        with pytest.raises(DatabaseNotFound, match="^No such database.$"):
            await cp.require_database("broken")
        # The name stays its publisher's: nobody else creates a database under it.
        with pytest.raises(NotAuthorized, match="its name `broken` belongs to the identity that published it"):
            await cp.publish(BOB, "broken", module_wasm("transfer"))
        again = await cp.publish(ALICE, "broken", module_wasm("transfer"))
        assert (again.op, again.identity) == ("created", identity)

    with_plane(tmp_path, body)


def test_racing_publishes_of_one_new_name_create_it_once(tmp_path: Path) -> None:
    async def body(cp: ControlPlane, node: HostNode) -> None:
        program = module_wasm("transfer")
        for round_ in range(3):
            name = f"race{round_}"
            outcomes = await asyncio.gather(
                *(cp.publish(caller, name, program) for caller in (ALICE, ALICE, BOB, BOB)), return_exceptions=True
            )
            created = [o for o in outcomes if not isinstance(o, BaseException) and o.op == "created"]
            assert len(created) == 1, outcomes
            for outcome in outcomes:
                # The loser of the race for the name, a second create of the winner's database,
                # or (having lost) a publish over the winner's database or under its name.
                if isinstance(outcome, BaseException):
                    assert isinstance(outcome, (Conflict, NotAuthorized)), outcome
                    if isinstance(outcome, Conflict):
                        assert str(outcome) == f"the name `{name}` is being published by another request; try again"
                else:
                    assert outcome.identity == created[0].identity
        assert len(await cp.all_databases()) == 3

    with_plane(tmp_path, body)


def test_names_belong_to_their_tld_owner(tmp_path: Path) -> None:
    async def body(cp: ControlPlane, node: HostNode) -> None:
        chat = await cp.publish(ALICE, "chat", module_wasm("quickstart-chat"))
        with pytest.raises(NameNotFound, match="^Could not resolve database `nope`$"):
            await cp.resolve("nope")
        # Bob cannot publish a new database under Alice's name... (it resolves: owner check)
        with pytest.raises(NotAuthorized):
            await cp.publish(BOB, "chat", module_wasm("transfer"))
        res = await cp.add_name(ALICE, "chat", "chat-two")
        assert res == {"Success": {"domain": "chat-two", "database_identity": chat.identity.to_hex()}}
        assert sorted(await cp.names(chat.identity)) == ["chat", "chat-two"]
        bank = await cp.publish(BOB, "bank", module_wasm("transfer"))
        with pytest.raises(BadRequest, match="^Cannot rename to bank because it already is in use.$"):
            await cp.set_names(ALICE, "chat", ["bank"])
        with pytest.raises(NamePermissionDenied) as not_yours:
            await cp.set_names(BOB, "chat", ["mine"])
        assert not_yours.value.body == {"NotYourDatabase": {"database": chat.identity.to_hex()}}
        await cp.set_names(ALICE, "chat", ["renamed"])
        assert await cp.names(chat.identity) == ["renamed"]
        assert await cp.resolve("renamed") == chat.identity
        with pytest.raises(NameNotFound):
            await cp.resolve("chat")
        # "chat" is free again, but its top-level domain still belongs to Alice.
        with pytest.raises(NamePermissionDenied) as denied:
            await cp.set_names(BOB, "bank", ["chat"])
        assert denied.value.status == 401 and denied.value.body == {"PermissionDenied": {"domain": "chat"}}
        with pytest.raises(NamePermissionDenied):
            await cp.publish(BOB, "chat", module_wasm("transfer"))
        await cp.set_names(BOB, "bank", [])
        assert await cp.names(bank.identity) == []

    with_plane(tmp_path, body)


def test_delete_is_owner_only_idempotent_and_names_survive(tmp_path: Path) -> None:
    async def body(cp: ControlPlane, node: HostNode) -> None:
        chat = await cp.publish(ALICE, "chat", module_wasm("quickstart-chat"))
        with pytest.raises(NotAuthorized, match="delete database"):
            await cp.delete(BOB, "chat")
        await cp.delete(ALICE, "chat")
        assert not node.has(chat.identity) and await cp.database(chat.identity) is None
        assert await cp.resolve("chat") == chat.identity
        assert await cp.names(chat.identity) == ["chat"]
        await cp.delete(ALICE, chat.identity.to_hex())  # idempotent for identities
        with pytest.raises(NameNotFound):
            await cp.delete(ALICE, "nope")
        # Unlike 1.12, only the name's owner may create a database under it (or at its identity).
        for target in ("chat", chat.identity.to_hex()):
            with pytest.raises(NotAuthorized, match="^" + BOB.to_hex() + " is not authorized to publish"):
                await cp.publish(BOB, target, module_wasm("quickstart-chat"))
        assert await cp.database(chat.identity) is None and not node.has(chat.identity)
        # Publishing to the surviving name recreates the database at the same identity.
        again = await cp.publish(ALICE, "chat", module_wasm("quickstart-chat"))
        assert (again.op, again.identity) == ("created", chat.identity)

    with_plane(tmp_path, body)


def test_clear_needs_a_target_and_resets(tmp_path: Path) -> None:
    async def body(cp: ControlPlane, node: HostNode) -> None:
        with pytest.raises(BadRequest, match="^Clear database requires database name or identity$"):
            await cp.publish(ALICE, None, module_wasm("transfer"), clear=True)
        bank = await cp.publish(ALICE, "bank", module_wasm("transfer"))
        await node.call_reducer(bank.identity, "seed", b"\x03\x00\x00\x00" + (5).to_bytes(8, "little"), caller=ALICE)
        cleared = await cp.publish(ALICE, "bank", module_wasm("quickstart-chat"), clear=True)
        assert cleared.op == "updated"
        assert await node.run(bank.identity, lambda db: db.table_rows("user")) == []

    with_plane(tmp_path, body)


def test_lookup_cache_follows_every_change(tmp_path: Path) -> None:
    async def body(cp: ControlPlane, node: HostNode) -> None:
        chat = await cp.publish(ALICE, "chat", module_wasm("quickstart-chat"))
        assert (await cp.require_database("chat")).identity == chat.identity
        assert (await cp.require_database("chat")).identity == chat.identity  # cached
        await cp.set_names(ALICE, "chat", ["renamed"])
        with pytest.raises(NameNotFound):
            await cp.require_database("chat")
        assert (await cp.require_database("renamed")).owner == ALICE
        await cp.delete(ALICE, "renamed")
        with pytest.raises(DatabaseNotFound):
            await cp.require_database("renamed")

    with_plane(tmp_path, body)
