"""The Python client SDK end to end against a real standalone server (quickstart-chat, module-test)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from orrery_client import (
    ConnectionLost,
    DbConnection,
    Event,
    QueryFailed,
    ReducerEvent,
    SchemaError,
    SubscriptionFailed,
    SubscriptionHandle,
    load_token,
)
from sats.identity import Identity
from tests.client.conftest import CHAT, MODULE_TEST, publish, sql, wait_until
from tests.servers import Client, StandaloneServer

#: A join both of whose columns are indexed (kv.key is the pk, user_email.email unique).
KV_JOIN = "SELECT kv.* FROM kv JOIN user_email ON kv.key = user_email.email"


def run(server: StandaloneServer, body: Callable[[str], Awaitable[None]], timeout: float = 60.0) -> None:
    """Run ``body(url)`` in a fresh loop, bounded by ``timeout``."""

    async def main() -> None:
        await asyncio.wait_for(body(server.url), timeout)

    asyncio.run(main())


def test_two_clients_chat_and_see_each_other_in_order(server: StandaloneServer, tmp_path: Path) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "chat", CHAT)
        a = await DbConnection.connect(url, db, token_store=tmp_path / "a")
        b = await DbConnection.connect(url, db, token_store=tmp_path / "b")
        seen: dict[str, list[str]] = {"a": [], "b": []}
        for who, conn in (("a", a), ("b", b)):

            def record(ev: Event, row: Any, who: str = who) -> None:
                seen[who].append(row.text)

            conn.db.table("message").on_insert(record)
            await (await conn.subscribe(["SELECT * FROM message", "SELECT * FROM user"])).applied()
        assert a.identity != b.identity
        assert (await a.call_reducer("set_name", "alice")).committed
        assert (await b.call_reducer("set_name", "bob")).committed
        for i, (conn, text) in enumerate([(a, "a1"), (b, "b1"), (a, "a2"), (b, "b2"), (b, "b3")]):
            result = await conn.call_reducer("send_message", text)
            assert result.status == "committed", (i, result)
        expected = ["a1", "b1", "a2", "b2", "b3"]
        await wait_until(lambda: seen["a"] == expected and seen["b"] == expected, what=f"messages {seen}")
        # Both caches agree, and know who sent what.
        for conn in (a, b):
            names = {u.identity: u.name for u in conn.db.table("user").iter()}
            assert names == {a.identity: "alice", b.identity: "bob"}
            senders = sorted((m.text, names[m.sender]) for m in conn.db.table("message").iter())
            assert senders == [("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("b2", "bob"), ("b3", "bob")]
        await a.close()
        await b.close()

    run(server, body)


def test_row_callbacks_insert_update_delete(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "callbacks", CHAT)
        watcher = await DbConnection.connect(url, db)
        events: list[tuple[Any, ...]] = []
        users = watcher.db.table("user")
        users.on_insert(lambda ev, row: events.append(("insert", ev.kind, row.name, row.online)))
        users.on_update(lambda ev, old, new: events.append(("update", ev.kind, old.name, new.name, new.online)))
        users.on_delete(lambda ev, row: events.append(("delete", ev.kind, row.name, row.online)))
        handle = await watcher.subscribe("SELECT * FROM user")
        await handle.applied()
        assert events == [("insert", "subscribe_applied", None, True)]  # the watcher itself
        events.clear()

        other = await DbConnection.connect(url, db)
        await wait_until(lambda: len(events) == 1, what="the other user's row")
        assert events.pop() == ("insert", "reducer", None, True)
        me = users.find(other.identity)
        assert me is not None and me.identity == other.identity and me.online

        assert (await other.call_reducer("set_name", "first")).committed
        assert (await other.call_reducer("set_name", "second")).committed
        await wait_until(lambda: len(events) == 2, what="two updates")
        assert events == [("update", "reducer", None, "first", True), ("update", "reducer", "first", "second", True)]
        assert users.find(other.identity).name == "second"
        assert users.count() == 2
        events.clear()

        await other.close()  # client_disconnected sets online = false: an update again
        await wait_until(lambda: len(events) == 1, what="the disconnect update")
        assert events == [("update", "reducer", "second", "second", False)]
        events.clear()

        await handle.unsubscribe()
        assert users.count() == 0
        assert len(events) == 2 and {e[:2] for e in events} == {("delete", "unsubscribe_applied")}
        assert {e[2] for e in events} == {None, "second"}
        await watcher.close()

    run(server, body)


def test_table_without_primary_key_reports_delete_and_insert(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, owner = await publish(url, "nopk", MODULE_TEST)
        conn = await DbConnection.connect(url, db)
        events: list[tuple[str, int, int]] = []
        t = conn.db.table("direct_t")
        t.on_insert(lambda ev, row: events.append(("insert", row.k, row.v)))
        t.on_delete(lambda ev, row: events.append(("delete", row.k, row.v)))
        t.on_update(lambda ev, old, new: events.append(("update", old.k, new.k)))
        await (await conn.subscribe("SELECT * FROM direct_t")).applied()
        await sql(url, db, "INSERT INTO direct_t (k, v) VALUES (1, 10)", owner)
        await wait_until(lambda: len(events) == 1)
        await sql(url, db, "UPDATE direct_t SET v = 11 WHERE k = 1", owner)
        await wait_until(lambda: len(events) == 3)
        assert events == [("insert", 1, 10), ("delete", 1, 10), ("insert", 1, 11)]
        with pytest.raises(TypeError):
            t.find(1)
        await conn.close()

    run(server, body)


def test_join_subscription_follows_both_sides(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, owner = await publish(url, "join", MODULE_TEST)
        conn = await DbConnection.connect(url, db)
        peer = await DbConnection.connect(url, db)
        kv = conn.db.table("kv")
        events: list[tuple[str, str, str]] = []
        kv.on_insert(lambda ev, row: events.append(("insert", row.key, row.value)))
        kv.on_delete(lambda ev, row: events.append(("delete", row.key, row.value)))
        kv.on_update(lambda ev, old, new: events.append(("update", old.value, new.value)))
        await (await conn.subscribe(KV_JOIN)).applied()
        assert kv.count() == 0

        assert (await peer.call_reducer("set_kv", "a@x", "1")).committed  # no partner yet: invisible
        await sql(url, db, "INSERT INTO user_email (id, email) VALUES (1, 'a@x')", owner)  # the other side
        await wait_until(lambda: kv.count() == 1, what="the joined row")
        assert events == [("insert", "a@x", "1")]
        assert (await peer.call_reducer("set_kv", "a@x", "2")).committed  # the projected side changes
        await wait_until(lambda: len(events) == 2, what="the update")
        assert events[1] == ("update", "1", "2")
        await sql(url, db, "DELETE FROM user_email WHERE id = 1", owner)  # partner gone
        await wait_until(lambda: kv.count() == 0, what="the row to leave")
        assert events[2] == ("delete", "a@x", "2")
        await conn.close()
        await peer.close()

    run(server, body)


def test_overlapping_subscriptions_are_ref_counted(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "overlap", MODULE_TEST)
        conn = await DbConnection.connect(url, db)
        assert (await conn.call_reducer("set_kv", "a", "1")).committed
        assert (await conn.call_reducer("set_kv", "b", "1")).committed
        kv = conn.db.table("kv")
        deleted: list[str] = []
        kv.on_delete(lambda ev, row: deleted.append(row.key))
        every = await (await conn.subscribe("SELECT * FROM kv")).applied()
        only_a = await (await conn.subscribe("SELECT * FROM kv WHERE key = 'a'")).applied()
        same = await (await conn.subscribe("SELECT * FROM kv")).applied()  # the same query again
        assert sorted(r.key for r in kv.iter()) == ["a", "b"]
        await every.unsubscribe()
        assert kv.count() == 2 and deleted == []
        await same.unsubscribe()
        assert [r.key for r in kv.iter()] == ["a"] and deleted == ["b"]
        assert (await conn.call_reducer("set_kv", "a", "2")).committed
        assert kv.find("a").value == "2"
        await only_a.unsubscribe()
        assert kv.count() == 0 and sorted(deleted) == ["a", "b"]
        await conn.close()

    run(server, body)


def test_unsubscribe_stops_updates(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "unsub", CHAT)
        conn = await DbConnection.connect(url, db)
        sender = await DbConnection.connect(url, db)
        texts: list[str] = []
        conn.db.table("message").on_insert(lambda ev, row: texts.append(row.text))
        ended: list[SubscriptionHandle] = []
        handle = await conn.subscribe("SELECT * FROM message", on_end=ended.append)
        await handle.applied()
        assert (await sender.call_reducer("send_message", "before")).committed
        await wait_until(lambda: texts == ["before"])
        await handle.unsubscribe()
        assert ended == [handle] and handle.state == "ended"
        assert conn.db.table("message").count() == 0
        assert (await sender.call_reducer("send_message", "after")).committed
        # A round trip on the same connection: anything sent before its answer has arrived.
        assert len(await conn.one_off_query("SELECT * FROM message")) == 2
        assert texts == ["before"]
        await conn.close()
        await sender.close()

    run(server, body)


def test_token_persistence_keeps_the_identity(server: StandaloneServer, tmp_path: Path) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "token", CHAT)
        store = tmp_path / "creds" / "token"
        first = await DbConnection.connect(url, db, token_store=store)
        identity = first.identity
        assert load_token(store) == first.token
        assert (await first.call_reducer("set_name", "keeper")).committed
        await first.close()
        second = await DbConnection.connect(url, db, token_store=store)
        assert second.identity == identity and second.connection_id != first.connection_id
        await (await second.subscribe("SELECT * FROM user")).applied()
        assert second.db.table("user").find(identity).name == "keeper"
        await second.close()
        fresh = await DbConnection.connect(url, db)
        assert fresh.identity != identity
        explicit = await DbConnection.connect(url, db, token=second.token)
        assert explicit.identity == identity
        await fresh.close()
        await explicit.close()

    run(server, body)


def test_reconnect_resubscribes_with_the_same_identity(server: StandaloneServer, tmp_path: Path) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "reconnect", CHAT)
        drops: list[BaseException | None] = []
        backs: list[DbConnection] = []
        conn = await DbConnection.connect(
            url, db, token_store=tmp_path / "t", reconnect=True,
            on_disconnect=lambda c, err: drops.append(err), on_reconnect=backs.append,
        )  # fmt: skip
        identity, first_conn_id = conn.identity, conn.connection_id
        texts: list[tuple[str, str]] = []
        conn.db.table("message").on_insert(lambda ev, row: texts.append((ev.kind, row.text)))
        handle = await conn.subscribe("SELECT * FROM message")
        await handle.applied()
        assert (await conn.call_reducer("send_message", "one")).committed

        assert conn._sock is not None
        await conn._sock.close()  # the socket goes away under the connection
        await wait_until(lambda: len(backs) == 1 and conn.is_connected, what="the reconnect")
        assert len(drops) == 1
        assert conn.identity == identity and conn.connection_id != first_conn_id
        await wait_until(lambda: not conn._resync_due, what="the resubscription")
        assert handle.active
        assert [m.text for m in conn.db.table("message").iter()] == ["one"]  # no duplicate, no loss
        assert (await conn.call_reducer("send_message", "two")).committed
        assert texts == [("reducer", "one"), ("reducer", "two")]
        await conn.close()
        assert len(drops) == 1  # close() is not a drop

    run(server, body)


def test_reducer_results(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "results", CHAT)
        conn = await DbConnection.connect(url, db)
        seen: list[ReducerEvent] = []
        ok = await conn.call_reducer("set_name", "x", on_result=seen.append)
        assert ok.status == "committed" and ok.message is None and ok.args == ("x",)
        assert ok.caller_identity == conn.identity and ok.caller_connection_id == conn.connection_id
        assert seen == [ok]
        failed = await conn.call_reducer("send_message", "")
        assert failed.status == "failed" and failed.message == "Messages must not be empty"
        assert not failed.committed
        # A lifecycle reducer cannot be called: the server answers with request id 0.
        refused = await conn.call_reducer("init")
        assert refused.status == "failed" and "lifecycle" in (refused.message or "")
        with pytest.raises(SchemaError):
            await conn.call_reducer("no_such_reducer")
        with pytest.raises(TypeError):
            await conn.call_reducer("set_name")
        # NoSuccessNotify: no answer on success, so the result is "sent"; the row still arrives.
        await (await conn.subscribe("SELECT * FROM message")).applied()
        quiet = await conn.call_reducer("send_message", "quiet", notify=False)
        assert quiet.status == "sent"
        await wait_until(lambda: conn.db.table("message").count() == 1, what="the quiet message")
        await conn.close()

    run(server, body)


def test_on_reducer_sees_other_clients_calls(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "onreducer", CHAT)
        watcher = await DbConnection.connect(url, db)
        caller = await DbConnection.connect(url, db)
        heard: list[ReducerEvent] = []
        watcher.on_reducer("send_message", heard.append)
        await (await watcher.subscribe("SELECT * FROM message")).applied()
        assert (await caller.call_reducer("send_message", "hey")).committed
        await wait_until(lambda: len(heard) == 1)
        ev = heard[0]
        assert ev.reducer == "send_message" and ev.status == "committed" and ev.args == ("hey",)
        assert ev.caller_identity == caller.identity and ev.caller_connection_id == caller.connection_id
        await watcher.close()
        await caller.close()

    run(server, body)


def test_one_off_query(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "oneoff", MODULE_TEST)
        conn = await DbConnection.connect(url, db)
        for k in "abc":
            assert (await conn.call_reducer("set_kv", k, k.upper())).committed
        rows = await conn.one_off_query("SELECT * FROM kv WHERE key <> 'b'")
        assert sorted((r.key, r.value) for r in rows) == [("a", "A"), ("c", "C")]
        assert conn.db.table("kv").count() == 0  # one-off queries do not fill the cache
        with pytest.raises(QueryFailed, match="no_such_table"):
            await conn.one_off_query("SELECT * FROM no_such_table")
        await conn.close()

    run(server, body)


def test_subscription_errors(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "suberr", CHAT)
        conn = await DbConnection.connect(url, db)
        errors: list[str] = []
        bad = await conn.subscribe("SELECT * FROM nope", on_error=lambda h, msg: errors.append(msg))
        with pytest.raises(SubscriptionFailed, match="nope"):
            await bad.applied()
        assert bad.state == "error" and errors and "nope" in errors[0]
        everything = await conn.subscribe_all_tables()
        await everything.applied()
        assert conn.db.table("user").find(conn.identity) is not None
        await conn.close()

    run(server, body)


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("bsatn", "None"), ("bsatn", "Gzip"), ("bsatn", "Brotli"), ("json", "None")],
)
def test_protocols_and_compression(server: StandaloneServer, protocol: str, compression: str) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, f"proto-{protocol}-{compression.lower()}", MODULE_TEST)
        conn = await DbConnection.connect(url, db, protocol=protocol, compression=compression)
        kv = conn.db.table("kv")
        await (await conn.subscribe("SELECT * FROM kv")).applied()
        # Over 1024 bytes: the server compresses the update (binary protocol).
        assert (await conn.call_reducer("big_row", "big", 5000)).committed
        assert kv.find("big").value == "x" * 5000
        assert (await conn.call_reducer("set_kv", "k", "ü ✓")).committed
        assert kv.find("k").value == "ü ✓"
        rows = await conn.one_off_query("SELECT * FROM kv")
        assert sorted(r.key for r in rows) == ["big", "k"]
        # Special types decode to their classes in every protocol.
        await (await conn.subscribe("SELECT * FROM lifecycle_event")).applied()
        mine = [e for e in conn.db.table("lifecycle_event").iter() if e.kind == "connect"]
        assert any(isinstance(e.sender, Identity) and e.sender == conn.identity for e in mine)
        await conn.close()

    run(server, body)


def test_light_mode_gets_updates_without_reducer_details(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, _ = await publish(url, "light", CHAT)
        light = await DbConnection.connect(url, db, light=True)
        other = await DbConnection.connect(url, db)
        kinds: list[Event] = []
        light.db.table("message").on_insert(lambda ev, row: kinds.append(ev))
        await (await light.subscribe("SELECT * FROM message")).applied()
        assert (await other.call_reducer("send_message", "m")).committed
        await wait_until(lambda: len(kinds) == 1)
        assert kinds[0].kind == "transaction" and kinds[0].reducer is None
        # Its own calls still resolve (the caller always gets the full update).
        assert (await light.call_reducer("send_message", "n")).committed
        assert kinds[1].kind == "reducer"
        await light.close()
        await other.close()

    run(server, body)


def test_dropped_by_the_server_without_reconnect_and_close_during_retries(server: StandaloneServer) -> None:
    async def body(url: str) -> None:
        db, owner = await publish(url, "dropped", CHAT)
        drops: list[BaseException | None] = []
        plain = await DbConnection.connect(url, db, on_disconnect=lambda c, err: drops.append(err))
        retrying = await DbConnection.connect(url, db, reconnect=True)
        handle = await plain.subscribe("SELECT * FROM message")
        await handle.applied()
        async with Client(url) as c:
            assert (await c.delete(f"/v1/database/{db}", token=owner)).status == 200
        await wait_until(lambda: len(drops) == 1 and not plain.is_connected, what="the drop")
        assert handle.state == "error"
        with pytest.raises(ConnectionLost):
            await plain.call_reducer("send_message", "too late")
        await plain.close()
        await wait_until(lambda: not retrying.is_connected, what="the retrying drop")
        await asyncio.wait_for(retrying.close(), 10)  # stops the reconnect attempts

    run(server, body)
