"""Cluster routing (gateway/cluster_backends.py): every request goes to its database's leader, over
real gRPC to real host nodes on 127.0.0.1 and through the real gateway app.

Host nodes do not replicate yet, so each test installs the database on every node itself; each
node then holds its own copy, and a row shows which node a write reached. The cluster answers
(NOT_LEADER, NO_QUORUM, OUTCOME_UNKNOWN, a hang) come from :class:`ScriptedServicer`. No test
depends on speed: bounds are generous and only ever bound a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cluster_backends import ClusterConfig
from gateway.failures import HostErrorKind
from gateway.grpc_backends import Deadlines, is_read_only_sql
from sats.identity import Identity
from tests.gateway.cluster_harness import (
    FAST,
    FlakyStore,
    Gateway,
    Node,
    cluster,
    register_node,
    set_leader,
    spawn,
)
from tests.gateway.conftest import CHAT
from tests.servers import Client

OWNER = Identity.from_claims("localhost", "owner")
DB = Identity.from_claims("localhost", "routed")


@dataclass
class Cluster:
    store: FlakyStore
    nodes: dict[str, Node]
    gw: Gateway
    client: Client

    async def call(self, text: str) -> tuple[int, str]:
        reply = await self.client.call("chat", "send_message", text)
        return reply.status, reply.text

    async def messages(self, node: str) -> list[str]:
        return sorted(row[2] for row in await self.nodes[node].rows(DB, "SELECT * FROM message"))

    async def move(self, leader: str | None) -> None:
        """An election: the record names ``leader``; wait until the gateway's view has it."""
        assert await self.gw.view.wait_for(await set_leader(self.store, DB, leader), 10)


def run(
    tmp_path: Path,
    body: Callable[[Cluster], Awaitable[None]],
    *,
    leader: str | None = "n1",
    config: ClusterConfig = FAST,
) -> None:
    async def main() -> None:
        async with cluster(tmp_path, DB, OWNER, CHAT, leader=leader, config=config) as (store, started, gw):
            async with Client(gw.url) as client:
                await asyncio.wait_for(body(Cluster(store, started, gw, client)), 120)

    asyncio.run(main())


def test_requests_go_to_the_leader_and_follow_a_leader_change(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        assert await c.call("one") == (200, "")
        assert await c.messages("n1") == ["one"] and await c.messages("n2") == []
        await c.move("n2")
        assert await c.call("two") == (200, "")
        assert await c.messages("n1") == ["one"] and await c.messages("n2") == ["two"]
        rows = await c.client.rows("chat", "SELECT * FROM message")
        assert [r[2] for r in rows] == ["two"]  # SQL went to n2 too
        schema = await c.client.get("/v1/database/chat/schema", params={"version": "9"})
        assert schema.status == 200 and "tables" in schema.json()
        assert c.nodes["n2"].servicer.requests == {"CallReducers": 1, "Sql": 1, "GetSchema": 1}

    run(tmp_path, body)


def test_not_leader_is_retried_at_the_new_leader(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        n1 = c.nodes["n1"].servicer
        n1.refuse, n1.reason = HostErrorKind.NOT_LEADER, "n1 promised epoch 2"

        async def elect(method: str) -> None:  # the election the refusal hints at
            await set_leader(c.store, DB, "n2")

        n1.on_request = elect
        assert await c.call("hello") == (200, "")
        assert n1.requests == {"CallReducers": 1}
        assert await c.messages("n2") == ["hello"] and await c.messages("n1") == []

    run(tmp_path, body)


def test_not_leader_without_a_new_leader_is_a_503_after_the_bounded_wait(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        n1 = c.nodes["n1"].servicer
        n1.refuse, n1.reason = HostErrorKind.NOT_LEADER, "n1 promised epoch 2"
        status, text = await c.call("hello")
        assert status == 503
        assert text.startswith("no leader:") and DB.to_hex() in text and "n1 promised epoch 2" in text
        assert n1.requests["CallReducers"] >= 2  # retried (the node may have lagged), then gave up
        assert await c.messages("n1") == [] and await c.messages("n2") == []

    run(tmp_path, body)


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [(HostErrorKind.NO_QUORUM, "no quorum: "), (HostErrorKind.OUTCOME_UNKNOWN, "the outcome is unknown: ")],
)
def test_no_quorum_and_outcome_unknown_are_503s_never_retried(tmp_path: Path, kind: HostErrorKind, prefix: str) -> None:
    async def body(c: Cluster) -> None:
        n1 = c.nodes["n1"].servicer
        n1.refuse, n1.reason = kind, "2 of 3 replicas unreachable for 5s"
        assert await c.call("hello") == (503, prefix + "2 of 3 replicas unreachable for 5s")
        dml = await c.client.sql("chat", "DELETE FROM message", token=None)
        assert dml.status == 503 and dml.text.startswith(prefix)
        assert n1.requests == {"CallReducers": 1, "Sql": 1}
        assert c.nodes["n2"].servicer.requests == {}

    run(tmp_path, body)


def test_a_database_without_a_leader_is_a_503_naming_it(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        status, text = await c.call("hello")
        assert status == 503 and text.startswith("no leader:") and DB.to_hex() in text
        schema = await c.client.get("/v1/database/chat/schema", params={"version": "9"})
        assert schema.status == 503 and DB.to_hex() in schema.text
        assert all(not n.servicer.requests for n in c.nodes.values())

    run(tmp_path, body, leader=None)


def test_a_request_waits_for_an_election_in_progress(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        async def elect() -> None:
            await asyncio.sleep(0.3)
            await set_leader(c.store, DB, "n2")

        election = asyncio.ensure_future(elect())
        assert await c.call("patient") == (200, "")
        await election
        assert await c.messages("n2") == ["patient"]

    run(tmp_path, body, leader=None, config=dataclasses.replace(FAST, failover_wait=60.0))


def test_a_leader_whose_node_is_not_live_is_a_503(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        status, text = await c.call("hello")
        assert status == 503 and "host node n3" in text and "not live" in text

    run(tmp_path, body, leader="n3")


def test_a_hung_leader_that_is_replaced_costs_a_reducer_call_no_retry(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        n1 = c.nodes["n1"].servicer
        n1.hang = True

        async def elect(method: str) -> None:  # a new leader exists: a retry would reach it
            await set_leader(c.store, DB, "n2")

        n1.on_request = elect
        status, text = await c.call("maybe")
        # Given up when the mirror shows another leader (not held until the deadline).
        assert status == 503 and text.startswith("the outcome is unknown:") and "stopped leading" in text
        assert n1.requests == {"CallReducers": 1}
        assert await c.messages("n2") == []  # never retried
        # DML is a write too; a single SELECT is retried at the new leader.
        c.nodes["n1"].servicer.requests.clear()
        await c.move("n1")
        dml = await c.client.sql("chat", "DELETE FROM message")
        assert dml.status == 503 and dml.text.startswith("the outcome is unknown:")
        await c.move("n1")
        rows = await c.client.sql("chat", "SELECT * FROM message")
        assert rows.status == 200
        assert n1.requests == {"Sql": 2}
        await c.move("n1")
        schema = await c.client.get("/v1/database/chat/schema", params={"version": "9"})
        assert schema.status == 200 and c.nodes["n2"].servicer.requests["GetSchema"] == 1

    deadlines = Deadlines(call=1.0, sql=1.0, read=1.0)
    run(tmp_path, body, config=dataclasses.replace(FAST, deadlines=deadlines, failover_wait=30.0))


def test_a_leader_killed_mid_call_is_outcome_unknown_and_not_retried(tmp_path: Path) -> None:
    """A real kill -9 of the process serving the leader while a reducer call is in flight."""

    async def body(c: Cluster) -> None:
        child = await spawn("-m", "tests.gateway.hanging_node")
        try:
            assert child.stdout is not None
            address = (await asyncio.wait_for(child.stdout.readline(), 60)).decode().split()[-1]
            await register_node(c.store, "n3", address)
            await c.move("n3")
            pending = asyncio.ensure_future(c.call("lost?"))
            assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"CallReducers"
            await set_leader(c.store, DB, "n2")  # a new leader is elected while the call hangs...
            child.send_signal(signal.SIGKILL)  # ...and the old one dies
            status, text = await asyncio.wait_for(pending, 60)
            assert status == 503 and text.startswith("the outcome is unknown:") and address in text
            assert await c.messages("n2") == [] and await c.messages("n1") == []
        finally:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()

    run(tmp_path, body, config=dataclasses.replace(FAST, deadlines=Deadlines(call=60.0)))


def test_an_unreachable_leader_is_retried_as_nothing_was_sent(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        await c.nodes["n1"].stop_serving()  # n1's port refuses connections: a call cannot leave
        status, text = await c.call("first")
        assert status == 503 and "unreachable" in text and c.nodes["n1"].address in text

        async def elect() -> None:
            await asyncio.sleep(0.2)
            await set_leader(c.store, DB, "n2")

        election = asyncio.ensure_future(elect())
        assert await c.call("second") == (200, "")
        await election
        assert await c.messages("n2") == ["second"]

    run(tmp_path, body, config=dataclasses.replace(FAST, failover_wait=3.0))


@pytest.mark.parametrize(
    ("query", "read_only"),
    [
        ("SELECT * FROM t", True),
        ("  select a from t where b = 'x'", True),
        ("SELECT * FROM t; DELETE FROM t", False),
        ("SELECT * FROM t;", False),
        ("selectx FROM t", False),
        ("DELETE FROM t", False),
        ("INSERT INTO t VALUES (1)", False),
        ("UPDATE t SET a = 1", False),
        ("SET x = 1", False),
        ("-- comment\nSELECT 1", False),
        ("WITH x AS (SELECT 1) DELETE FROM t", False),
        ("", False),
    ],
)
def test_only_a_single_select_counts_as_read_only(query: str, read_only: bool) -> None:
    assert is_read_only_sql(query) is read_only
