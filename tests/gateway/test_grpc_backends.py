"""The gateway's gRPC backends against the in-process adapters: the same requests over one control
plane state and one host node give equal values and equal ApiErrors (status, body, content type,
headers); and reducer calls travel in batches."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from clustermeta.metastore_lmdb import LmdbMetaStore
from controlplane import grpc_service as controlplane_grpc
from controlplane.core import ControlPlane, Placement
from controlplane.hostnode_client import GrpcHostNodeClient
from gateway.backends import CallOutcome, CallResult, ControlPlaneBackend, HostNodeBackend, SqlAnswer
from gateway.errors import ApiError
from gateway.failures import Unreachable
from gateway.grpc_backends import GrpcControlPlane, GrpcHostNode
from hostnode import grpc_service as hostnode_grpc
from hostnode.service import HostNode, HostNodeConfig
from orrery.standalone import LocalControlPlane, LocalHostNode
from proto import auth
from proto import hostnode_pb2 as hpb
from proto import hostnode_pb2_grpc as hpb_grpc
from sats.identity import Identity
from tests.cluster_secret import SECRET
from tests.gateway.conftest import CHAT, MODULE_TEST, TRANSFER
from tests.gateway.test_ws_republish import doc_module
from tests.waits import PATIENCE, until, writer_held

ALICE = Identity.from_claims("localhost", "alice")
BOB = Identity.from_claims("localhost", "bob")
NOWHERE = Identity.from_claims("localhost", "nowhere")


@dataclass
class Pair:
    """Both transports over the same MetaStore and HostNode."""

    node: HostNode
    local: tuple[ControlPlaneBackend, HostNodeBackend]
    remote: tuple[GrpcControlPlane, GrpcHostNode]

    async def same(self, op: Callable[[ControlPlaneBackend, HostNodeBackend], Awaitable[Any]]) -> Any:
        """Run ``op`` over both; assert equal answers; return the in-process one."""
        here = await _answer(op(*self.local))
        there = await _answer(op(*self.remote))
        assert here == there
        return here


async def _answer(aw: Awaitable[Any]) -> Any:
    """The value or ApiError, with execution times (which differ run to run) zeroed."""
    try:
        value = await aw
    except ApiError as e:
        headers = {k: v for k, v in e.headers.items() if k != "spacetime-execution-duration-micros"}
        return ("ApiError", e.status, e.body, e.content_type, headers)
    if isinstance(value, CallResult | SqlAnswer):
        return replace(value, duration_micros=0)
    return value


@contextlib.asynccontextmanager
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    store = await LmdbMetaStore.open(tmp_path / "meta.lmdb")
    node = HostNode(HostNodeConfig(tmp_path / "node"))
    await node.start()
    async with contextlib.AsyncExitStack() as stack:
        host_server, host_addr = await hostnode_grpc.start_server(node, secret=SECRET)
        stack.push_async_callback(host_server.stop, None)
        host_channel = auth.channel(host_addr, SECRET)
        stack.push_async_callback(host_channel.close)
        client = GrpcHostNodeClient(host_channel)
        ops = controlplane_grpc.ControlPlaneOps(ControlPlane(store, client, Placement("node-0", host_addr)), client.reset)
        control_server, control_addr = await controlplane_grpc.start_server(ops, secret=SECRET)
        stack.push_async_callback(control_server.stop, None)
        control_channel = auth.channel(control_addr, SECRET)
        stack.push_async_callback(control_channel.close)
        local_control = LocalControlPlane(ControlPlane(store, node, Placement("node-0", host_addr)), node)
        try:
            yield Pair(
                node,
                (local_control, LocalHostNode(node)),
                (GrpcControlPlane(control_channel), GrpcHostNode(host_channel)),
            )
        finally:
            await stack.aclose()
            await node.stop()
            await store.close()


def run(tmp_path: Path, body: Callable[[Pair], Awaitable[None]]) -> None:
    async def main() -> None:
        async with pair(tmp_path) as p:
            await body(p)

    asyncio.run(main())


def test_control_plane_answers_match(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        # Each transport publishes its own database; the answers differ only by identity.
        created = [await c.publish(ALICE, name, CHAT, clear=False) for c, name in ((p.local[0], "a"), (p.remote[0], "b"))]
        assert [(o.op, o.domain) for o in created] == [("created", "a"), ("created", "b")]
        db = created[0].identity
        await p.local[0].add_name(ALICE, "a", "a-alias")
        await p.same(lambda c, h: c.resolve("a"))
        await p.same(lambda c, h: c.database("a"))
        await p.same(lambda c, h: c.names(db))
        await p.same(lambda c, h: c.databases_of(ALICE))
        await p.same(lambda c, h: c.node_ids())
        for noi in ("Bad_Name", "a--b", "", "unknown", NOWHERE.to_hex(), "0x" + NOWHERE.to_hex()):
            await p.same(lambda c, h, noi=noi: c.resolve(noi))  # type: ignore[misc]
            await p.same(lambda c, h, noi=noi: c.database(noi))  # type: ignore[misc]
        # Failures change nothing, so both transports see the same state each time.
        await p.same(lambda c, h: c.publish(ALICE, None, CHAT, clear=True))
        await p.same(lambda c, h: c.publish(BOB, "a", CHAT, clear=False))
        await p.same(lambda c, h: c.publish(ALICE, "a", TRANSFER, clear=False))
        await p.same(lambda c, h: c.publish(ALICE, "a", b"\0asm\x01\x00\x00\x00\x05", clear=False))
        await p.same(lambda c, h: c.publish(ALICE, "Bad_Name", CHAT, clear=False))
        await p.same(lambda c, h: c.reset(BOB, "a", None))
        await p.same(lambda c, h: c.reset(ALICE, "unknown", None))
        await p.same(lambda c, h: c.delete(BOB, "a"))
        await p.same(lambda c, h: c.delete(ALICE, NOWHERE.to_hex()))  # idempotent: None
        await p.same(lambda c, h: c.add_name(ALICE, "a", "Bad_Name"))
        await p.same(lambda c, h: c.add_name(ALICE, "a", "a-alias"))
        await p.same(lambda c, h: c.add_name(ALICE, "nope", "x"))
        await p.same(lambda c, h: c.add_name(BOB, "b", "a"))
        await p.same(lambda c, h: c.set_names(ALICE, "a", ["ok", "Not-OK"]))
        await p.same(lambda c, h: c.set_names(BOB, "a", ["mine"]))
        await p.same(lambda c, h: c.set_names(ALICE, "a", ["b"]))
        await p.same(lambda c, h: c.set_names(ALICE, NOWHERE.to_hex(), ["x"]))
        # The name Bob cannot take once Alice's database let it go (its domain stays Alice's).
        await p.local[0].set_names(ALICE, "a", ["a2"])
        await p.same(lambda c, h: c.add_name(BOB, "b", "a"))
        # Successes, once on each side.
        assert await p.local[0].reset(ALICE, "a2", None) == await p.remote[0].reset(ALICE, "a2", CHAT)
        await p.remote[0].delete(ALICE, "a2")
        await p.same(lambda c, h: c.database("a2"))
        assert not p.node.has(db)

    run(tmp_path, body)


def test_migration_policy_answers_match(tmp_path: Path) -> None:
    """A republish that disconnects the clients: the same refusals over both transports, then
    the consent of either goes through (``token`` is the pre-publish answer's, as bytes)."""
    old, new = "SELECT * FROM doc WHERE doc.v = 1", "SELECT * FROM doc WHERE doc.v = 2"

    async def body(p: Pair) -> None:
        await p.local[0].publish(ALICE, "rls", doc_module(old), clear=False)
        breaking = doc_module(new)
        db = await p.local[0].resolve("rls")
        pre = await p.same(lambda c, h: h.pre_publish(db, breaking))
        assert pre.break_clients
        token = int(pre.token, 16).to_bytes(32, "little")
        for consent in ({}, {"break_clients": True}, {"break_clients": True, "token": bytes(32)}, {"token": token}):
            refused = await p.same(lambda c, h, kw=consent: c.publish(ALICE, "rls", breaking, clear=False, **kw))  # type: ignore[misc]
            assert refused[:2] == ("ApiError", 400)
        await p.same(lambda c, h: c.publish(BOB, "rls", breaking, clear=False, break_clients=True))
        assert await p.remote[0].publish(ALICE, "rls", breaking, clear=False, break_clients=True, token=token)
        assert (await p.local[1].schema(db))["row_level_security"] == [{"sql": new}]

    run(tmp_path, body)


def test_host_node_answers_match(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        db = (await p.local[0].publish(ALICE, "mt", MODULE_TEST, clear=False)).identity

        def call(reducer: str, args: str, database: Identity = db) -> Callable[..., Awaitable[Any]]:
            return lambda c, h: h.call(database, reducer, args, caller=ALICE, connection_id=5)

        for reducer, args in [
            ("no_such", "[]"), ("client_connected", "[]"), ("set_kv", "[1]"), ("set_kv", "["), ("fail_with", '["no"]'),
        ]:
            await p.same(call(reducer, args))
        await p.same(call("set_kv", '["a","1"]', NOWHERE))
        committed = [await h.call(db, "set_kv", '["k","v"]', caller=ALICE, connection_id=6) for _, h in (p.local, p.remote)]
        assert {r.outcome for r in committed} == {CallOutcome.COMMITTED} and committed[0].message == committed[1].message
        await p.local[1].call(db, "set_kv", '["reject_connections","1"]', caller=ALICE, connection_id=7)
        await p.same(call("set_kv", '["b","2"]'))

        await p.same(lambda c, h: h.sql(db, "SELEC x", ALICE))
        await p.same(lambda c, h: h.sql(db, "DELETE FROM kv", BOB))
        await p.same(lambda c, h: h.sql(NOWHERE, "SELECT * FROM kv", ALICE))
        bodies = [(await h.sql(db, "SELECT * FROM kv WHERE key = 'k'", ALICE)).body for _, h in (p.local, p.remote)]
        for b in bodies:
            assert b'"total_duration_micros":' in b
        assert [re.sub(rb'"total_duration_micros":\d+', b"", b) for b in bodies][0] == re.sub(
            rb'"total_duration_micros":\d+', b"", bodies[1]
        )
        await p.same(lambda c, h: h.schema(db))
        await p.same(lambda c, h: h.schema(NOWHERE))

        await p.same(lambda c, h: h.pre_publish(db, MODULE_TEST))
        await p.same(lambda c, h: h.pre_publish(db, TRANSFER))
        await p.same(lambda c, h: h.pre_publish(db, b"junk"))
        await p.same(lambda c, h: h.pre_publish(NOWHERE, MODULE_TEST))

        async def tail(c: ControlPlaneBackend, h: HostNodeBackend, n: int | None) -> list[str]:
            return [line async for line in h.logs(db, n, False)]

        await p.same(lambda c, h: tail(c, h, None))
        await p.same(lambda c, h: tail(c, h, 2))

        async def missing_logs(c: ControlPlaneBackend, h: HostNodeBackend) -> list[str]:
            return [line async for line in h.logs(NOWHERE, None, True)]

        await p.same(missing_logs)

        # Following: both see the same new lines, and closing the generator ends the stream.
        follows = [h.logs(db, 0, True) for _, h in (p.local, p.remote)]
        # Both say "" first: registered, nothing to tail (HostNodeBackend.logs).
        assert [await asyncio.wait_for(anext(f), PATIENCE) for f in follows] == ["", ""]
        assert p.node.database(db).logs.follower_count == 2
        nexts = [asyncio.ensure_future(anext(f)) for f in follows]
        await asyncio.sleep(0.05)
        assert not any(n.done() for n in nexts)
        await p.node.run(db, lambda d: d.module_log_write("Info", "to both followers"))
        lines = [await asyncio.wait_for(n, 5) for n in nexts]
        assert lines[0] == lines[1] and "to both followers" in lines[0]
        for f in follows:
            await f.aclose()

    run(tmp_path, body)


class CountingStub:
    """Wraps a HostNode stub, recording the size of every CallBatch sent."""

    def __init__(self, stub: Any) -> None:
        self.stub = stub
        self.batches: list[int] = []

    async def CallReducers(self, batch: hpb.CallBatch, **kw: Any) -> hpb.CallBatchResult:  # noqa: N802
        self.batches.append(len(batch.calls))
        result: hpb.CallBatchResult = await self.stub.CallReducers(batch, **kw)
        return result


def test_concurrent_calls_share_batches(tmp_path: Path) -> None:
    async def body(p: Pair) -> None:
        db = (await p.local[0].publish(ALICE, "chat", CHAT, clear=False)).identity
        host = p.remote[1]
        counting = CountingStub(host.batcher.stub)
        host.batcher.stub = counting  # type: ignore[assignment]

        async def send(i: int) -> CallOutcome:
            return (await host.call(db, "send_message", f'["m{i}"]', caller=ALICE, connection_id=i + 1)).outcome

        # 100 calls started together go out in one message.
        assert await asyncio.gather(*(send(i) for i in range(100))) == [CallOutcome.COMMITTED] * 100
        assert counting.batches == [100]
        # Beyond the batch size: several messages, at most max_in_flight at once, answers in order.
        counting.batches.clear()
        host.batcher.max_batch = 16
        failing = [host.call(db, "no_such", "[]", caller=ALICE, connection_id=1)]
        results = await asyncio.gather(*(send(i) for i in range(100, 150)), *failing, return_exceptions=True)
        assert results[:50] == [CallOutcome.COMMITTED] * 50
        assert isinstance(results[50], ApiError) and results[50].status == 404
        assert sum(counting.batches) == 51 and max(counting.batches) == 16
        rows = await p.local[1].sql(db, "SELECT * FROM message", ALICE)
        assert rows.body.count(b'"m') == 150

    run(tmp_path, body)


def test_calls_beyond_the_per_database_queue_are_refused_with_503(tmp_path: Path) -> None:
    """Issue 12: the gateway's calls waiting for a batch are bounded per database; one more is
    refused at once (503, the reason) and never sent, the waiting ones still run."""

    async def body(p: Pair) -> None:
        db = (await p.local[0].publish(ALICE, "chat", CHAT, clear=False)).identity
        host = p.remote[1]
        host.batcher.max_batch, host.batcher.max_in_flight, host.batcher.max_pending = 1, 1, 2
        async with writer_held(p.node, db):

            async def send(text: str, i: int) -> CallOutcome:
                return (await host.call(db, "send_message", f'["{text}"]', caller=ALICE, connection_id=i)).outcome

            calls = [asyncio.ensure_future(send("m0", 1))]
            await until(lambda: p.node._worker(db).queued == 1, "the first batch to reach the writer")
            calls += [asyncio.ensure_future(send(f"m{i}", i + 1)) for i in (1, 2)]
            await until(lambda: host.batcher.waiting(db.to_bsatn()) == 2, "two calls waiting for a batch")
            try:
                await send("refused", 9)
            except ApiError as e:
                assert e.status == 503 and e.message.startswith("the database is overloaded: 2 calls are already waiting")
            else:
                raise AssertionError("a call beyond the queue was accepted")
        assert await asyncio.gather(*calls) == [CallOutcome.COMMITTED] * 3
        rows = (await p.local[1].sql(db, "SELECT * FROM message", ALICE)).body
        assert rows.count(b'"m') == 3 and b"refused" not in rows

    run(tmp_path, body)


def test_a_full_writer_queue_answers_alike_over_both_transports(tmp_path: Path) -> None:
    """The host node's refusal (``OVERLOADED``) reaches a gRPC gateway as the same 503."""

    async def body(p: Pair) -> None:
        db = (await p.local[0].publish(ALICE, "chat", CHAT, clear=False)).identity
        p.node._worker(db).max_queued = 0
        async with writer_held(p.node, db):
            refused = await p.same(lambda _c, h: h.call(db, "send_message", '["x"]', caller=ALICE, connection_id=1))
            assert refused[:2] == ("ApiError", 503) and b"overloaded" in refused[2]

    run(tmp_path, body)


def test_slow_websocket_clients_over_the_gateways_budget_are_cut_off(tmp_path: Path) -> None:
    """Issue 12: the bytes the gateway queues for all its WebSocket clients are bounded too: the
    client that does not read is closed with the reason once the total is over, its frames are
    released, and a client that keeps up receives every update."""
    from gateway.backends import WsParams
    from gateway.grpc_backends import WS_CLOSE_SERVER_FULL
    from sats import ws_v1 as ws
    from sats.bsatn import encode
    from sats.types import STRING

    async def body(p: Pair) -> None:
        db = (await p.local[0].publish(ALICE, "chat", CHAT, clear=False)).identity
        host = p.remote[1]
        host.ws_budget.limit = 3000

        async def connect(n: int) -> Any:
            params = WsParams(Identity.from_claims("localhost", f"u{n}"), "t", n, False, "None", False, False)
            session = await host.connect(db, params)
            assert session is not None
            assert isinstance(ws.decode_server_frame(await session.recv()), ws.IdentityToken)
            session.handle(ws.encode_client_message_bsatn(ws.SubscribeMulti(("SELECT * FROM message",), 1, ws.QueryId(1))))
            assert isinstance(ws.decode_server_frame(await session.recv()), ws.SubscribeMultiApplied)
            return session

        slow, fast = await connect(1), await connect(2)
        for i in range(40):
            call = ws.CallReducer("send_message", encode(STRING, f"message {i:02d} " + "x" * 100), i)
            fast.handle(ws.encode_client_message_bsatn(call))
            update = ws.decode_server_frame(await asyncio.wait_for(fast.recv(), PATIENCE))
            assert isinstance(update, ws.TransactionUpdate) and update.reducer_call.request_id == i
        await asyncio.wait_for(slow.wait_closed(), PATIENCE)
        assert (slow.close_code, slow.close_reason) == WS_CLOSE_SERVER_FULL
        assert host.ws_budget.queued == 0
        await slow.close()
        await fast.close()

    run(tmp_path, body)


def test_a_call_on_a_channel_already_closed_was_never_sent() -> None:
    """The cluster gateway closes a node's channel when the node leaves; a request that picked the
    node just before fails to start its call: a 503 that may be retried, never a 500."""

    async def main() -> Unreachable:
        channel = grpc.aio.insecure_channel("127.0.0.1:1")
        node = GrpcHostNode(channel, target="host node n1")
        await channel.close()
        try:
            await node.call(NOWHERE, "send", "[]", caller=ALICE, connection_id=0)
        except Unreachable as e:
            return e
        raise AssertionError("the call on a closed channel did not fail")

    error = asyncio.run(main())
    assert error.status == 503 and not error.may_have_run


class _NotReading(hpb_grpc.HostNodeServicer):
    """A stand-in host node whose ``Connect`` accepts one client and then stops reading."""

    async def Connect(self, request_iterator: Any, context: Any) -> AsyncIterator[hpb.HostFrames]:  # noqa: N802
        first = await anext(request_iterator.__aiter__())
        ref = first.events[0].connected.connection_ref
        yield hpb.HostFrames(events=[hpb.HostEvent(frame=hpb.ServerFrame(connection_refs=[ref], frame=b"hello"))])
        await asyncio.Event().wait()


def test_frames_for_a_host_node_that_stopped_reading_are_bounded(monkeypatch: Any) -> None:
    """Issue 12: the gateway holds a bounded amount of client frames for a ``Connect`` stream
    its host node does not read; past it the client is closed 1013 with the reason."""
    from gateway import grpc_backends
    from gateway.backends import WsParams

    monkeypatch.setattr(grpc_backends, "WS_MAX_PENDING_TO_NODE_BYTES", 1 << 20)

    async def main() -> None:
        server = grpc.aio.server()
        hpb_grpc.add_HostNodeServicer_to_server(_NotReading(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            host = GrpcHostNode(channel)
            params = WsParams(ALICE, "t", 1, False, "None", False, False)
            session = await asyncio.wait_for(host.connect(NOWHERE, params), PATIENCE)
            assert session is not None and await session.recv() == b"hello"
            for _ in range(5000):  # 50 MB: far beyond any HTTP/2 flow-control window
                session.handle(b"x" * 10_000)
                if session.close_code != 1000:
                    break
                await asyncio.sleep(0)
            assert (session.close_code, session.close_reason) == grpc_backends.WS_CLOSE_NODE_BEHIND
            await session.close()
            host.end_ws(None, 1001, "test over")
        finally:
            await channel.close()
            await server.stop(None)

    asyncio.run(main())
