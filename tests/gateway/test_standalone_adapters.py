"""The in-process adapters over a real HostNode/ControlPlane (no HTTP), and the host node
additions they use: JSON reducer arguments and update planning."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from clustermeta.metastore_lmdb import LmdbMetaStore
from controlplane.core import ControlPlane, Placement
from gateway.backends import CallOutcome
from gateway.errors import ApiError
from hostnode.database import InvalidArguments, LifecycleReducerCall, NoSuchReducer
from hostnode.migrate import MigrationError
from hostnode.service import HostNode, HostNodeConfig
from hostnode.wasm_host import ModuleLoadError
from orrery.standalone import LocalControlPlane, LocalHostNode
from sats.bsatn import encode
from sats.identity import Identity
from sats.types import STRING
from tests.gateway.conftest import CHAT, MODULE_TEST, TRANSFER
from tests.waits import PATIENCE, until, writer_held

ALICE = Identity.from_claims("localhost", "alice")
BOB = Identity.from_claims("localhost", "bob")

Body = Callable[[LocalControlPlane, LocalHostNode, HostNode], Awaitable[None]]


def with_adapters(tmp_path: Path, body: Body, **config: Any) -> None:
    async def main() -> None:
        store = await LmdbMetaStore.open(tmp_path / "meta.lmdb")
        node = HostNode(HostNodeConfig(tmp_path / "node", **config))
        await node.start()
        try:
            control = ControlPlane(store, node, Placement("node-0", "127.0.0.1:0"))
            await body(LocalControlPlane(control, node), LocalHostNode(node), node)
        finally:
            await node.stop()
            await store.close()

    asyncio.run(main())


def test_encode_json_args(tmp_path: Path) -> None:
    async def body(cp: LocalControlPlane, host: LocalHostNode, node: HostNode) -> None:
        db = (await cp.publish(ALICE, "chat", CHAT, clear=False)).identity
        assert node.encode_json_args(db, "set_name", '["Alice"]') == encode(STRING, "Alice")
        assert node.encode_json_args(db, "set_name", '{"name":"Alice"}') == encode(STRING, "Alice")
        with pytest.raises(NoSuchReducer):
            node.encode_json_args(db, "nope", "[]")
        with pytest.raises(LifecycleReducerCall, match="^can't directly call special OnConnect lifecycle reducer$"):
            node.encode_json_args(db, "identity_connected", "[]")
        for bad in ("[]", '["a","b"]', "[1]", "[", '{"name":"a","name":"b"}', '{"nom":"a"}', ""):
            with pytest.raises(InvalidArguments, match="^invalid arguments for reducer set_name: "):
                node.encode_json_args(db, "set_name", bad)

    with_adapters(tmp_path, body)


def test_plan_program_update(tmp_path: Path) -> None:
    async def body(cp: LocalControlPlane, host: LocalHostNode, node: HostNode) -> None:
        db = (await cp.publish(ALICE, "chat", CHAT, clear=False)).identity
        planned = await node.plan_program_update(db, CHAT)
        assert planned.plan.is_empty and len(planned.token) == 32
        with pytest.raises(MigrationError, match="table `message` would be removed"):
            await node.plan_program_update(db, TRANSFER)
        with pytest.raises(ModuleLoadError):
            await node.plan_program_update(db, b"junk")
        # Planning changed nothing: the database still runs the chat module.
        assert {t["name"] for t in node.schema_json(db)["tables"]} == {"user", "message"}

        pre = await host.pre_publish(db, CHAT)
        assert pre.automatic and pre.token.startswith("0x") and "code only" in pre.plan
        assert (await host.pre_publish(db, CHAT)).token == pre.token  # deterministic
        manual = await host.pre_publish(db, TRANSFER)
        assert not manual.automatic and "would be removed" in manual.reason
        with pytest.raises(ApiError) as info:
            await host.pre_publish(db, b"junk")
        assert (info.value.status, info.value.message) == (
            400, "Failed to plan the update: not a WebAssembly module (missing \\0asm header)",
        )

    with_adapters(tmp_path, body)


def test_adapters_call_sql_logs(tmp_path: Path) -> None:
    async def body(cp: LocalControlPlane, host: LocalHostNode, node: HostNode) -> None:
        db = (await cp.publish(ALICE, "mt", MODULE_TEST, clear=False)).identity
        result = await host.call(db, "set_kv", '["a","1"]', caller=ALICE, connection_id=5)
        assert result.outcome is CallOutcome.COMMITTED and result.energy_used > 0
        failed = await host.call(db, "fail_with", '["no"]', caller=ALICE, connection_id=6)
        assert (failed.outcome, failed.message) == (CallOutcome.FAILED, "no")
        await host.call(db, "set_kv", '["reject_connections","1"]', caller=ALICE, connection_id=7)
        rejected = await host.call(db, "set_kv", '["b","2"]', caller=ALICE, connection_id=8)
        assert (rejected.outcome, rejected.message) == (CallOutcome.CONNECT_REJECTED, "connection rejected by module")
        with pytest.raises(ApiError) as info:
            await host.call(Identity.from_claims("x", "y"), "set_kv", "[]", caller=ALICE, connection_id=9)
        assert (info.value.status, info.value.message) == (404, "No such database.")

        answer = await host.sql(db, "SELECT * FROM kv WHERE key = 'a'", ALICE)
        assert answer.body.startswith(b'[{"schema"')
        with pytest.raises(ApiError) as info:
            await host.sql(db, "DELETE FROM kv", BOB)
        assert info.value.status == 400

        tail = [line async for line in host.logs(db, None, False)]
        assert tail and all(line.startswith('{"level":') for line in tail)
        assert [line async for line in host.logs(db, 1, False)] == tail[-1:]

        follow = host.logs(db, 0, True)
        # "" first: the follower is registered and there is nothing to tail (HostNodeBackend.logs).
        assert await asyncio.wait_for(anext(follow), PATIENCE) == ""
        assert node.database(db).logs.follower_count == 1
        nxt = asyncio.ensure_future(anext(follow))
        await asyncio.sleep(0.05)
        assert not nxt.done()  # num_lines 0: only new lines
        await node.run(db, lambda d: d.module_log_write("Info", "hello follower"))
        assert "hello follower" in await asyncio.wait_for(nxt, 5)
        await follow.aclose()

        with pytest.raises(ApiError) as info:
            await cp.reset(BOB, "mt", None)
        assert info.value.status == 403 and info.value.message.endswith(": reset database")
        outcome = await cp.reset(ALICE, "mt", None)
        assert (outcome.op, outcome.domain) == ("updated", "mt")
        assert (await cp.reset(ALICE, db.to_hex(), None)).domain is None
        assert b'"rows":[]' in (await host.sql(db, "SELECT * FROM kv", ALICE)).body
        assert await cp.node_ids() == [0]

    with_adapters(tmp_path, body)


def test_a_full_writer_queue_refuses_calls_with_503_and_runs_none_of_them(tmp_path: Path) -> None:
    """Issue 12: the writer's job queue is bounded; past it a call is refused at once (503 with
    the reason) and nothing of it runs, while the calls already queued still run."""

    async def body(cp: LocalControlPlane, host: LocalHostNode, node: HostNode) -> None:
        db = (await cp.publish(ALICE, "chat", CHAT, clear=False)).identity
        async with writer_held(node, db):
            queued = [
                asyncio.ensure_future(host.call(db, "send_message", '["queued"]', caller=ALICE, connection_id=i))
                for i in (1, 2)
            ]
            await until(lambda: node._worker(db).queued == 2, "two calls waiting for the writer")
            with pytest.raises(ApiError) as info:
                await host.call(db, "send_message", '["refused"]', caller=BOB, connection_id=3)
            assert info.value.status == 503
            assert info.value.message.startswith("the database is overloaded: 2 requests are already waiting")
            with pytest.raises(ApiError) as info:
                await host.sql(db, "SELECT * FROM message", BOB)
            assert info.value.status == 503
        assert [r.outcome for r in await asyncio.gather(*queued)] == [CallOutcome.COMMITTED] * 2
        rows = (await host.sql(db, "SELECT text FROM message", ALICE)).body
        assert rows.count(b'"queued"') == 2 and b"refused" not in rows

    with_adapters(tmp_path, body, writer_max_queued=2)
