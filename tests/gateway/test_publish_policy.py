"""The publish migration policy end to end, on both transports (client-api.md §6.2).

As in 1.12, a republish whose plan disconnects the clients (today: a change of the row-level
security rules) is refused unless the publish says ``policy=BreakClients`` and carries the
``token`` the pre-publish of that very update answered. The refusal changes nothing: the old
module keeps serving and its clients stay connected. The token names (database, running
program, new program), so one planned before the database changed is stale. An update that
keeps the clients needs no policy.
"""

from __future__ import annotations

import json
from typing import Any

from sats import ws_v1 as ws
from tests.gateway.test_ws import WsClient, connect, db_name, publish
from tests.gateway.test_ws_republish import (
    DOC,
    TAG,
    clients_connected,
    initial_rows,
    inserted,
    module_exited,
    sql,
)
from tests.servers import Client, Reply, StandaloneServer
from tests.wat_modules import table, tables_module

OLD, NEW = "SELECT * FROM doc WHERE doc.v = 1", "SELECT * FROM doc WHERE doc.v = 2"
FAILED = "Failed to create or update the database: "
BREAKS_CLIENTS = FAILED + "Migration plan contains a client-breaking change which is disallowed under current policy"
INVALID_TOKEN = FAILED + "Token provided is invalid or does not match expected hash"
MISSING_TOKEN = "Migration policy is set to `BreakClients`, but no migration token was provided."
#: A well-formed token that no update has.
WRONG_TOKEN = "0x" + "5a" * 32


def doc_module(rls: str) -> bytes:
    """``doc(id pk, v)`` under one row-level-security rule."""
    return tables_module([DOC], table("doc", 0, pk=(0,)), rls=(rls,))


def doc_and_tag(rls: str) -> bytes:
    """:func:`doc_module` plus a table ``tag``: from ``doc_module(rls)``, a compatible update."""
    return tables_module([DOC, TAG], table("doc", 0, pk=(0,)), table("tag", 1), rls=(rls,))


async def pre_publish(c: Client, name: str, program: bytes, owner: str) -> dict[str, Any]:
    """The ``AutoMigrate`` answer of ``POST …/pre_publish``."""
    reply = await c.post(f"/v1/database/{name}/pre_publish", data=program, token=owner)
    assert reply.status == 200, reply
    return dict(json.loads(reply.body)["AutoMigrate"])


async def republish(c: Client, name: str, program: bytes, owner: str, **params: str) -> Reply:
    """``PUT /v1/database/<name>`` with these query parameters (``host_type=Wasm`` as the CLI)."""
    return await c.put(f"/v1/database/{name}", data=program, token=owner, params={"host_type": "Wasm", **params})


async def rls_rules(c: Client, name: str) -> list[str]:
    """The row-level-security rules of the running module."""
    schema = (await c.get(f"/v1/database/{name}/schema", params={"version": "9"})).json()
    return [r["sql"] for r in schema["row_level_security"]]


async def still_serving_old_rules(c: Client, name: str, owner: str, anon: WsClient, own: WsClient, row: int) -> None:
    """Both clients are connected and subscribed under the ``OLD`` rule: a new visible row
    reaches both, and the module still has that rule."""
    await anon.nothing(0.1)
    await own.nothing(0.1)
    assert await clients_connected(c, name, owner) == 2
    await sql(c, name, f"INSERT INTO doc (id, v) VALUES ({row}, 1)", owner)
    assert await inserted(anon) == {"doc": [(row, 1)]}
    assert await inserted(own) == {"doc": [(row, 1)]}
    assert await rls_rules(c, name) == [OLD]


def test_update_breaking_clients_needs_the_pre_publish_token(server: StandaloneServer) -> None:
    async def body(c: Client) -> None:
        name = db_name("policy")
        owner = await publish(c, name, doc_module(OLD))
        await sql(c, name, "INSERT INTO doc (id, v) VALUES (1, 1)", owner)
        await sql(c, name, "INSERT INTO doc (id, v) VALUES (2, 2)", owner)
        breaking = doc_and_tag(NEW)
        async with connect(server.url, name) as anon, connect(server.url, name, token=owner) as own:
            for client in (anon, own):
                assert isinstance(await client.recv(), ws.IdentityToken)
            assert initial_rows(await anon.subscribe("SELECT * FROM doc")) == [(1, 1)]
            assert initial_rows(await own.subscribe("SELECT * FROM doc")) == [(1, 1), (2, 2)]
            plan = await pre_publish(c, name, breaking, owner)
            assert plan["break_clients"] is True and plan["token"].startswith("0x")

            # Refused: no policy (Compatible, the default, also spelled out), BreakClients without
            # a token, with someone else's token, with something that is no token at all.
            for params, status, text in (
                ({}, 400, BREAKS_CLIENTS),
                ({"policy": "Compatible"}, 400, BREAKS_CLIENTS),
                ({"policy": "Compatible", "token": plan["token"]}, 400, BREAKS_CLIENTS),
                ({"policy": "BreakClients"}, 400, MISSING_TOKEN),
                ({"policy": "BreakClients", "token": WRONG_TOKEN}, 400, INVALID_TOKEN),
                ({"policy": "BreakClients", "token": plan["token"][2:]}, 400, None),
                ({"policy": "breakclients", "token": plan["token"]}, 400, None),
            ):
                reply = await republish(c, name, breaking, owner, **params)
                assert reply.status == status and reply.content_type == "text/plain; charset=utf-8", (params, reply)
                if text is None:
                    assert reply.text.startswith("Failed to deserialize query string: "), reply
                else:
                    assert reply.text == text, (params, reply)
            await still_serving_old_rules(c, name, owner, anon, own, row=3)

            # A compatible update needs no policy and keeps the clients, but makes the token
            # stale: it named the update from the program that was running when it was planned.
            compatible = await republish(c, name, doc_and_tag(OLD), owner)
            assert compatible.status == 200 and compatible.json()["Success"]["op"] == "updated", compatible
            stale = await republish(c, name, breaking, owner, policy="BreakClients", token=plan["token"])
            assert (stale.status, stale.text) == (400, INVALID_TOKEN)
            await still_serving_old_rules(c, name, owner, anon, own, row=4)

            # Planned again, the publisher's consent goes through and disconnects everyone.
            fresh = await pre_publish(c, name, breaking, owner)
            assert fresh["break_clients"] is True and fresh["token"] != plan["token"]
            accepted = await republish(c, name, breaking, owner, policy="BreakClients", token=fresh["token"])
            assert accepted.status == 200 and accepted.json()["Success"]["op"] == "updated", accepted
            await module_exited(anon, own)
            assert await clients_connected(c, name, owner) == 0
        assert await rls_rules(c, name) == [NEW]

    server.run(body)


def test_break_clients_token_must_be_the_updates_own(server: StandaloneServer) -> None:
    """What the 1.12 CLI sends after every pre-publish — ``policy=BreakClients`` and the token —
    works for updates that keep the clients too; a token that is not the update's never does."""

    async def body(c: Client) -> None:
        name = db_name("policy")
        owner = await publish(c, name, doc_module(OLD))
        plan = await pre_publish(c, name, doc_and_tag(OLD), owner)
        assert plan["break_clients"] is False
        wrong = await republish(c, name, doc_and_tag(OLD), owner, policy="BreakClients", token=WRONG_TOKEN)
        assert (wrong.status, wrong.text) == (400, INVALID_TOKEN)
        assert (await c.sql(name, "SELECT * FROM tag")).status == 400  # not updated
        ok = await republish(c, name, doc_and_tag(OLD), owner, policy="BreakClients", token=plan["token"])
        assert ok.status == 200, ok
        assert (await c.sql(name, "SELECT * FROM tag")).status == 200
        # The running program again: nothing to migrate, so no token to check (as 1.12).
        same = await republish(c, name, doc_and_tag(OLD), owner, policy="BreakClients", token=WRONG_TOKEN)
        assert same.status == 200, same

    server.run(body)


def test_policy_applies_once_the_caller_may_publish(server: StandaloneServer) -> None:
    """As in 1.12 the missing token is reported after the owner check; creating a database and
    clearing one have no migration to consent to (a create still rejects a missing token)."""

    async def body(c: Client) -> None:
        name = db_name("policy")
        owner = await publish(c, name, doc_module(OLD))
        _, other = await c.new_identity()
        not_owner = await republish(c, name, doc_module(NEW), other, policy="BreakClients")
        assert not_owner.status == 403 and not_owner.text.endswith(": update database"), not_owner
        cleared = await republish(c, name, doc_module(NEW), owner, policy="BreakClients", clear="true")
        assert cleared.status == 200, cleared
        assert await rls_rules(c, name) == [NEW]
        created = await republish(c, db_name("policy"), doc_module(NEW), owner, policy="BreakClients", token=WRONG_TOKEN)
        assert created.status == 200 and created.json()["Success"]["op"] == "created", created
        missing = await republish(c, db_name("policy"), doc_module(NEW), owner, policy="BreakClients")
        assert (missing.status, missing.text) == (400, MISSING_TOKEN)

    server.run(body)
