"""Republishing a database (update, no clear) while WebSocket clients are connected, end to end
on both transports.

As 1.12 does: when the module's row-level-security rules change, every client is disconnected
(``client_disconnected`` runs, then close 1001 ``module exited``) — its subscriptions were
filtered by the old rules — once the publisher consented with the pre-publish token
(``test_publish_policy.py`` covers the refusals). Other updates keep the clients connected; their queries are
recompiled against the new schema, so no update is computed with a plan for indexes that no
longer exist, and a query that no longer compiles is reported as a ``SubscriptionError``.
"""

from __future__ import annotations

import json
import struct

import aiohttp

from hostnode.moduledef import IndexAlgorithm, RawIndexDefV9
from sats import ws_v1 as ws
from sats.types import U32, product
from tests.gateway.test_ws import WsClient, connect, db_name, publish
from tests.servers import Client, StandaloneServer
from tests.wat_modules import table, tables_module

DOC = product(("id", U32), ("v", U32))
TAG = product(("doc_id", U32), ("n", U32))
BY_DOC_ID = RawIndexDefV9(None, "doc_id", IndexAlgorithm.BTREE, (0,))


def doc_module(*rls: str) -> bytes:
    """``doc(id pk, v)`` with these row-level-security rules."""
    return tables_module([DOC], table("doc", 0, pk=(0,)), rls=rls)


def join_module(*, tag_index: bool) -> bytes:
    """``doc(id pk, v)`` and ``tag(doc_id, n)``, with or without an index on ``tag.doc_id``."""
    tag = table("tag", 1, indexes=(BY_DOC_ID,) if tag_index else ())
    return tables_module([DOC, TAG], table("doc", 0, pk=(0,)), tag)


def pairs(rows: ws.RowList) -> list[tuple[int, int]]:
    """Rows of two u32 columns."""
    return sorted(struct.unpack("<II", bytes(r)) for r in rows)  # type: ignore[union-attr]


def initial_rows(applied: ws.SubscribeMultiApplied) -> list[tuple[int, int]]:
    return sorted(p for t in applied.update.tables for u in t.updates for p in pairs(u.inserts))


async def inserted(client: WsClient) -> dict[str, list[tuple[int, int]]]:
    """The rows the next TransactionUpdate inserts, per table."""
    up = await client.recv()
    assert isinstance(up, ws.TransactionUpdate) and isinstance(up.status, ws.Committed), up
    return {t.table_name: [p for u in t.updates for p in pairs(u.inserts)] for t in up.status.database_update.tables}


async def sql(c: Client, name: str, query: str, token: str) -> None:
    reply = await c.sql(name, query, token=token)
    assert reply.status == 200, reply


async def module_exited(*clients: WsClient) -> None:
    """Each client is closed with 1001 ``module exited`` (what a client-breaking update does)."""
    for client in clients:
        m = await client.recv_raw()
        assert m.type is aiohttp.WSMsgType.CLOSE, m
        assert (m.data, m.extra) == (1001, "module exited")


async def clients_connected(c: Client, name: str, owner: str) -> int:
    """Rows of ``st_client``: connected clients whose ``client_disconnected`` has not run."""
    return len(await c.rows(name, "SELECT * FROM st_client", token=owner))


def test_republish_changing_rls_rules_disconnects_every_client(server: StandaloneServer) -> None:
    old, new = "SELECT * FROM doc WHERE doc.v = 1", "SELECT * FROM doc WHERE doc.v = 2"

    async def body(c: Client) -> None:
        name = db_name("rls")
        owner = await publish(c, name, doc_module(old))
        await sql(c, name, "INSERT INTO doc (id, v) VALUES (1, 1)", owner)
        await sql(c, name, "INSERT INTO doc (id, v) VALUES (2, 2)", owner)
        async with connect(server.url, name) as anon, connect(server.url, name, token=owner) as own:
            for client in (anon, own):
                assert isinstance(await client.recv(), ws.IdentityToken)
            assert initial_rows(await anon.subscribe("SELECT * FROM doc")) == [(1, 1)]
            assert initial_rows(await own.subscribe("SELECT * FROM doc")) == [(1, 1), (2, 2)]
            assert await clients_connected(c, name, owner) == 2

            pre = await c.post(f"/v1/database/{name}/pre_publish", data=doc_module(new), token=owner)
            assert pre.status == 200, pre
            plan = json.loads(pre.body)["AutoMigrate"]
            assert plan["break_clients"] is True
            assert f"remove row-level security rule `{old}`" in plan["migrate_plan"]
            assert f"add row-level security rule `{new}`" in plan["migrate_plan"]

            consent = {"policy": "BreakClients", "token": plan["token"], "host_type": "Wasm"}
            reply = await c.put(f"/v1/database/{name}", data=doc_module(new), token=owner, params=consent)
            assert reply.status == 200, reply
            await module_exited(anon, own)  # the owner too: 1.12 disconnects everyone
            # client_disconnected ran for both (as the server disconnected them, not after)
            assert await clients_connected(c, name, owner) == 0

        # New connections get the new rules, in subscriptions and one-off queries alike.
        async with connect(server.url, name) as anon:
            assert isinstance(await anon.recv(), ws.IdentityToken)
            assert initial_rows(await anon.subscribe("SELECT * FROM doc")) == [(2, 2)]
            await anon.send(ws.OneOffQuery(b"\x01", "SELECT * FROM doc"))
            res = await anon.recv()
            assert isinstance(res, ws.OneOffQueryResponse) and res.error is None
            assert [pairs(t.rows) for t in res.tables] == [[(2, 2)]]
            await sql(c, name, "INSERT INTO doc (id, v) VALUES (3, 1)", owner)
            await sql(c, name, "INSERT INTO doc (id, v) VALUES (4, 2)", owner)
            assert await inserted(anon) == {"doc": [(4, 2)]}

    server.run(body)


def test_republish_keeping_rls_rules_keeps_clients_and_recompiles_queries(server: StandaloneServer) -> None:
    """Dropping the index a join's plan looked ``tag`` up by: the client stays connected and
    its updates are computed with a plan for the new schema."""

    async def body(c: Client) -> None:
        name = db_name("reindex")
        owner = await publish(c, name, join_module(tag_index=True))
        await sql(c, name, "INSERT INTO tag (doc_id, n) VALUES (1, 100)", owner)
        # doc.id (the primary key) is the indexed join column, with or without tag's index.
        indexed = "SELECT tag.* FROM tag JOIN doc ON tag.doc_id = doc.id WHERE doc.v = 7"
        # tag.doc_id is the only indexed join column: without its index the query is refused.
        needs_index = "SELECT tag.* FROM tag JOIN doc ON tag.doc_id = doc.v"
        async with connect(server.url, name) as a, connect(server.url, name) as b:
            for client in (a, b):
                assert isinstance(await client.recv(), ws.IdentityToken)
            assert initial_rows(await a.subscribe(indexed)) == []
            assert initial_rows(await b.subscribe(needs_index)) == []

            # An update that keeps the clients needs no migration policy.
            reply = await c.publish(name, join_module(tag_index=False), token=owner)
            assert reply.status == 200, reply
            # b's query cannot be planned any more: it loses its subscriptions, keeps its socket.
            err = await b.recv()
            assert isinstance(err, ws.SubscriptionError), err
            assert (err.request_id, err.query_id) == (None, None)
            assert err.error == f"Subscriptions require indexes on join columns, executing: `{needs_index}`"
            await a.nothing()

            # A new doc row joins the existing tag row: found without tag's old index.
            await sql(c, name, "INSERT INTO doc (id, v) VALUES (1, 7)", owner)
            assert await inserted(a) == {"tag": [(1, 100)]}
            await sql(c, name, "INSERT INTO tag (doc_id, n) VALUES (1, 101)", owner)
            assert await inserted(a) == {"tag": [(1, 101)]}
            await b.nothing()
            # b is still connected and may subscribe again.
            assert initial_rows(await b.subscribe("SELECT * FROM tag", query_id=2)) == [(1, 100), (1, 101)]

    server.run(body)
