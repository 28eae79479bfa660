"""WebSockets through a cluster gateway when the leader goes away: each client is closed with 1012
and a reason (never left hanging, never closed silently), and the Python SDK reconnects to the new
leader and resubscribes, seeing every committed change exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from clustermeta.records import node_key
from orrery_client import DbConnection, Event
from sats.identity import Identity
from tests.gateway.cluster_harness import FlakyStore, Gateway, Node, cluster, set_leader, wait_until
from tests.gateway.conftest import CHAT

OWNER = Identity.from_claims("localhost", "owner")
WRITER = Identity.from_claims("localhost", "writer")
DB = Identity.from_claims("localhost", "ws-routed")


@dataclass
class Cluster:
    store: FlakyStore
    nodes: dict[str, Node]
    gw: Gateway
    session: aiohttp.ClientSession

    async def subscriber(self) -> aiohttp.ClientWebSocketResponse:
        """A raw WebSocket client past its IdentityToken."""
        ws = await self.session.ws_connect(
            f"{self.gw.url}/v1/database/chat/subscribe", protocols=("v1.json.spacetimedb",)
        )
        first = await ws.receive(timeout=30)
        assert first.type is aiohttp.WSMsgType.TEXT and "IdentityToken" in json.loads(first.data)
        return ws

    async def write_everywhere(self, text: str, timestamp: int, *node_ids: str) -> None:
        """The same transaction on each node (what replication would do): identical rows."""
        for node_id in node_ids or tuple(self.nodes):
            host = self.nodes[node_id].host
            args = host.encode_json_args(DB, "send_message", json.dumps([text]))
            outcome = await host.call_reducer(
                DB, "send_message", args, caller=WRITER, connection_id=7, timestamp_micros=timestamp
            )
            assert outcome.status.name == "COMMITTED", outcome


def run(tmp_path: Path, body: Callable[[Cluster], Awaitable[None]]) -> None:
    async def main() -> None:
        async with cluster(tmp_path, DB, OWNER, CHAT) as (store, started, gw), aiohttp.ClientSession() as session:
            await asyncio.wait_for(body(Cluster(store, started, gw, session)), 120)

    asyncio.run(main())


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str]:
    """The close frame the server sends next (anything else first fails the test)."""
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type is aiohttp.WSMsgType.TEXT:
            continue  # a transaction update that was on its way
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        return msg.data, msg.extra


def test_a_leader_change_closes_the_websockets_with_1012(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        a, b = await c.subscriber(), await c.subscriber()
        await set_leader(c.store, DB, "n2")
        assert await closed_with(a) == (1012, "database leader changed; reconnect")
        assert await closed_with(b) == (1012, "database leader changed; reconnect")
        fresh = await c.subscriber()  # a reconnect reaches the new leader
        await fresh.send_str(json.dumps({"CallReducer": {"reducer": "send_message", "args": '["hi"]',
                                                          "request_id": 1, "flags": 0}}))  # fmt: skip
        await wait_until_rows(c, "n2", 1)
        await fresh.close()

    run(tmp_path, body)


async def wait_until_rows(c: Cluster, node_id: str, n: int) -> None:
    for _ in range(1500):
        if len(await c.nodes[node_id].rows(DB, "SELECT * FROM message")) == n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{node_id} never had {n} messages")


def test_a_broken_connect_stream_closes_the_websockets_with_1012(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        ws = await c.subscriber()
        await c.nodes["n1"].stop_serving()  # the leader's process stops answering: the stream breaks
        assert await closed_with(ws) == (1012, "lost the connection to the database's host node; reconnect")

    run(tmp_path, body)


def test_a_leader_leaving_the_cluster_closes_the_websockets_with_1012(tmp_path: Path) -> None:
    """The node's registration is gone (its lease expired): a partitioned node may still hold the
    stream open, but it no longer serves the database — the gateway closes the clients itself."""

    async def body(c: Cluster) -> None:
        ws = await c.subscriber()
        await c.store.delete(node_key("n1"))
        assert await closed_with(ws) == (1012, "the database's host node left the cluster; reconnect")

    run(tmp_path, body)


def test_a_websocket_without_a_leader_is_closed_try_again_later(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        await set_leader(c.store, DB, None)
        ws = await c.session.ws_connect(
            f"{c.gw.url}/v1/database/chat/subscribe", protocols=("v1.json.spacetimedb",)
        )
        code, reason = await closed_with(ws)
        assert code == 1013 and reason.startswith("no leader:")

    run(tmp_path, body)


def test_the_sdk_reconnects_after_a_failover_and_sees_each_change_once(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        await c.write_everywhere("one", 1_000_000)
        seen: list[tuple[str, str]] = []
        reconnects: list[DbConnection] = []
        conn = await DbConnection.connect(c.gw.url, "chat", reconnect=True, on_reconnect=reconnects.append)
        try:
            table = conn.db.table("message")

            def inserted(event: Event, row: object) -> None:
                seen.append((event.kind, row.text))  # type: ignore[attr-defined]

            table.on_insert(inserted)
            await (await conn.subscribe("SELECT * FROM message")).applied(30)
            await c.write_everywhere("two", 2_000_000)
            await wait_until(lambda: table.count() == 2, what="the second message")

            await set_leader(c.store, DB, "n2")  # failover; the new leader already has every row
            await c.write_everywhere("three", 3_000_000, "n2")  # committed during the switch
            await wait_until(lambda: len(reconnects) == 1 and conn.is_connected, what="the reconnect")
            await wait_until(lambda: not conn._resync_due and table.count() == 3, what="the resubscription")
            assert conn.close_code == 1012 and conn.close_reason == "database leader changed; reconnect"
            result = await conn.call_reducer("send_message", "four")  # through the new leader
            assert result.committed
            await wait_until(lambda: table.count() == 4, what="the fourth message")

            texts = sorted(text for _, text in seen)
            assert texts == ["four", "one", "three", "two"]  # every change once: no repeats, none lost
            kinds = dict((text, kind) for kind, text in seen)
            assert kinds["one"] == "subscribe_applied" and kinds["two"] == "reducer" and kinds["four"] == "reducer"
            assert kinds["three"] in ("reconnect", "reducer")
            assert sorted(r[2] for r in await c.nodes["n2"].rows(DB, "SELECT * FROM message")) == texts
        finally:
            await conn.close()

    run(tmp_path, body)
