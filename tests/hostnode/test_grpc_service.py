"""The host node's gRPC service over a real HostNode, through a real grpc.aio channel on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from hostnode.grpc_service import start_server
from hostnode.service import HostNode, HostNodeConfig
from proto import auth
from proto import hostnode_pb2 as pb
from proto import hostnode_pb2_grpc as pb_grpc
from sats.bsatn import encode
from sats.identity import Identity
from sats.types import STRING
from tests.cluster_secret import SECRET
from tests.hostnode.conftest import module_wasm
from tests.waits import PATIENCE, until, writer_held

OWNER = Identity.from_claims("localhost", "owner")
ALICE = Identity.from_claims("localhost", "alice")
DB = Identity.from_claims("localhost", "db")
CHAT = module_wasm("quickstart-chat")
MODULE_TEST = module_wasm("module-test")
TRANSFER = module_wasm("transfer")

Body = Callable[[pb_grpc.HostNodeStub, HostNode], Awaitable[None]]


def with_service(tmp_path: Path, body: Body) -> None:
    """Run ``body(stub, node)`` against a HostNode served on a free port of 127.0.0.1."""

    async def main() -> None:
        node = HostNode(HostNodeConfig(tmp_path / "node"))
        await node.start()
        server, address = await start_server(node, secret=SECRET)
        try:
            async with auth.channel(address, SECRET) as channel:
                await body(pb_grpc.HostNodeStub(channel), node)
        finally:
            await server.stop(None)
            await node.stop()

    asyncio.run(main())


async def install(stub: pb_grpc.HostNodeStub, program: bytes, **kw: object) -> pb.InstallResponse:
    request = pb.InstallRequest(
        database_identity=DB.to_bsatn(), owner_identity=OWNER.to_bsatn(), program=program, **kw  # type: ignore[arg-type]
    )
    response: pb.InstallResponse = await stub.Install(request)
    return response


def http_call(request_id: int, reducer: str, args: list[object]) -> pb.ReducerCall:
    return pb.ReducerCall(
        request_id=request_id, reducer=reducer, json=json.dumps(args), caller_identity=ALICE.to_bsatn(),
        connection_id=(request_id + 1).to_bytes(16, "little"), kind=pb.CALL_KIND_HTTP,
    )


async def rows(stub: pb_grpc.HostNodeStub, query: str) -> list[object]:
    response = await stub.Sql(pb.SqlRequest(database_identity=DB.to_bsatn(), query=query, caller_identity=OWNER.to_bsatn()))
    assert response.failure.kind == pb.ERROR_KIND_NONE, response.failure
    return list(json.loads(response.body)[0]["rows"])


def test_one_batch_carries_a_hundred_calls(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.HostNodeStub, node: HostNode) -> None:
        assert (await install(stub, CHAT)).created
        calls = [http_call(i, "send_message", [f"m{i}"]) for i in range(100)]
        # Failures of single calls are answered in place, the rest of the batch runs.
        calls[10] = http_call(10, "no_such_reducer", [])
        calls[20] = http_call(20, "send_message", [1, 2])
        batch = pb.CallBatch(database_identity=DB.to_bsatn(), calls=calls)
        result: pb.CallBatchResult = await stub.CallReducers(batch)
        assert [r.request_id for r in result.results] == list(range(100))
        assert result.results[10].failure.kind == pb.ERROR_KIND_NO_SUCH_REDUCER
        assert result.results[20].failure.kind == pb.ERROR_KIND_INVALID_ARGUMENTS
        assert result.results[20].failure.message.startswith("invalid arguments for reducer send_message: ")
        ok = [r for i, r in enumerate(result.results) if i not in (10, 20)]
        assert all(r.status == pb.STATUS_COMMITTED and r.failure.kind == pb.ERROR_KIND_NONE for r in ok)
        assert all(r.energy_used > 0 and r.HasField("offset") and not r.connect for r in ok)
        # Run in request order: commit-log offsets increase along the batch.
        offsets = [r.offset for r in ok]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        texts = [m[2] for m in await rows(stub, "SELECT * FROM message")]
        assert sorted(texts) == sorted(f"m{i}" for i in range(100) if i not in (10, 20))

    with_service(tmp_path, body)


def test_call_outcomes(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.HostNodeStub, node: HostNode) -> None:
        await install(stub, MODULE_TEST)

        async def one(call: pb.ReducerCall, database: Identity = DB) -> pb.ReducerResult:
            response = await stub.CallReducers(pb.CallBatch(database_identity=database.to_bsatn(), calls=[call]))
            assert len(response.results) == 1
            result: pb.ReducerResult = response.results[0]
            return result

        failed = await one(http_call(1, "fail_with", ["nope"]))
        assert (failed.status, failed.message, failed.connect) == (pb.STATUS_FAILED, "nope", False)
        lifecycle = await one(http_call(2, "client_connected", []))
        assert lifecycle.failure.kind == pb.ERROR_KIND_LIFECYCLE_REDUCER
        missing = await one(http_call(3, "set_kv", ["a", "b"]), Identity.from_claims("x", "y"))
        assert missing.failure.kind == pb.ERROR_KIND_NO_SUCH_DATABASE
        # A client call: BSATN arguments, the caller's timestamp, no connect/disconnect.
        args = encode(STRING, "client") + encode(STRING, "1")  # (key, value): fields back to back
        client = pb.ReducerCall(request_id=4, reducer="set_kv", bsatn=args, caller_identity=ALICE.to_bsatn(),
                                kind=pb.CALL_KIND_CLIENT, timestamp_micros=1_700_000_000_000_000)
        done = await one(client)
        assert (done.status, done.timestamp_micros) == (pb.STATUS_COMMITTED, 1_700_000_000_000_000)
        # client_connected refuses: the outcome is the connect's, the reducer never ran.
        await one(http_call(5, "set_kv", ["reject_connections", "1"]))
        refused = await one(http_call(6, "set_kv", ["z", "z"]))
        assert (refused.status, refused.message, refused.connect) == (
            pb.STATUS_FAILED, "connection rejected by module", True,
        )

    with_service(tmp_path, body)


def test_install_update_reset_delete(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.HostNodeStub, node: HostNode) -> None:
        junk = await install(stub, b"junk")
        assert junk.failure.kind == pb.ERROR_KIND_INVALID_PROGRAM and not node.has(DB)
        assert (await install(stub, CHAT)).created
        await stub.CallReducers(pb.CallBatch(database_identity=DB.to_bsatn(), calls=[http_call(1, "send_message", ["x"])]))
        updated = await install(stub, CHAT)
        assert not updated.created and "code only" in updated.migration
        refused = await install(stub, TRANSFER)
        assert refused.failure.kind == pb.ERROR_KIND_MIGRATION_REJECTED
        assert "table `message` would be removed" in refused.failure.message
        assert len(await rows(stub, "SELECT * FROM message")) == 1
        # keep_program + clear: a reset with the current program.
        reset = await install(stub, b"", clear=True, keep_program=True)
        assert reset.created and reset.failure.kind == pb.ERROR_KIND_NONE
        assert await rows(stub, "SELECT * FROM message") == []
        assert (await stub.Delete(pb.DeleteRequest(database_identity=DB.to_bsatn()))).failure.kind == pb.ERROR_KIND_NONE
        again = await stub.Delete(pb.DeleteRequest(database_identity=DB.to_bsatn()))
        assert again.failure.kind == pb.ERROR_KIND_NO_SUCH_DATABASE
        gone = await install(stub, b"", clear=True, keep_program=True)
        assert gone.failure.kind == pb.ERROR_KIND_NO_SUCH_DATABASE

    with_service(tmp_path, body)


def test_sql_schema_and_plan(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.HostNodeStub, node: HostNode) -> None:
        await install(stub, CHAT)
        ok = await stub.Sql(pb.SqlRequest(database_identity=DB.to_bsatn(), query="SELECT * FROM user",
                                          caller_identity=OWNER.to_bsatn()))
        assert ok.body.startswith(b'[{"schema"') and ok.failure.kind == pb.ERROR_KIND_NONE
        bad = await stub.Sql(pb.SqlRequest(database_identity=DB.to_bsatn(), query="SELEC x",
                                           caller_identity=OWNER.to_bsatn()))
        assert bad.failure.kind == pb.ERROR_KIND_SQL and bad.failure.message and not bad.body
        missing = await stub.Sql(pb.SqlRequest(database_identity=ALICE.to_bsatn(), query="SELECT * FROM user",
                                               caller_identity=OWNER.to_bsatn()))
        assert missing.failure.kind == pb.ERROR_KIND_NO_SUCH_DATABASE

        schema = await stub.GetSchema(pb.SchemaRequest(database_identity=DB.to_bsatn(), version=9))
        assert json.loads(schema.json) == node.schema_json(DB)
        no_schema = await stub.GetSchema(pb.SchemaRequest(database_identity=ALICE.to_bsatn(), version=9))
        assert no_schema.failure.kind == pb.ERROR_KIND_NO_SUCH_DATABASE

        auto = await stub.PlanUpdate(pb.PlanUpdateRequest(database_identity=DB.to_bsatn(), program=CHAT))
        assert auto.automatic and auto.token.startswith("0x") and "code only" in auto.plan
        manual = await stub.PlanUpdate(pb.PlanUpdateRequest(database_identity=DB.to_bsatn(), program=TRANSFER))
        assert not manual.automatic and "would be removed" in manual.reason
        junk = await stub.PlanUpdate(pb.PlanUpdateRequest(database_identity=DB.to_bsatn(), program=b"junk"))
        assert junk.failure.kind == pb.ERROR_KIND_INVALID_PROGRAM

    with_service(tmp_path, body)


def test_logs_tail_follow_and_cancel(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.HostNodeStub, node: HostNode) -> None:
        await install(stub, MODULE_TEST)
        await stub.CallReducers(pb.CallBatch(database_identity=DB.to_bsatn(), calls=[http_call(1, "log_levels", [])]))
        tail = [line async for msg in stub.Logs(pb.LogsRequest(database_identity=DB.to_bsatn())) for line in msg.lines]
        assert tail and all(line.startswith('{"level":') for line in tail)
        last = [line async for msg in stub.Logs(pb.LogsRequest(database_identity=DB.to_bsatn(), num_lines=1))
                for line in msg.lines]
        assert last == tail[-1:]
        missing = [msg async for msg in stub.Logs(pb.LogsRequest(database_identity=ALICE.to_bsatn()))]
        assert len(missing) == 1 and missing[0].failure.kind == pb.ERROR_KIND_NO_SUCH_DATABASE

        call = stub.Logs(pb.LogsRequest(database_identity=DB.to_bsatn(), num_lines=0, follow=True))
        stream = call.__aiter__()
        logs = node.database(DB).logs
        # First an empty batch: the follower is registered (so the gateway may answer its client).
        registered = await asyncio.wait_for(anext(stream), PATIENCE)
        assert list(registered.lines) == [] and logs.follower_count == 1
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)
        assert not pending.done()  # num_lines 0: only new lines
        await node.run(DB, lambda d: [d.module_log_write("Info", f"line {i}") for i in range(3)])
        got: list[str] = []
        while len(got) < 3:
            msg = await asyncio.wait_for(pending, 5)
            got += msg.lines
            pending = asyncio.ensure_future(anext(stream))
        assert [json.loads(line)["message"] for line in got] == ["line 0", "line 1", "line 2"]
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        # The follower is removed once the stream ends.
        await until(lambda: logs.follower_count == 0, "the log follower to be removed")

    with_service(tmp_path, body)


def test_connect_stream_multiplexes_clients_and_shares_frames(tmp_path: Path) -> None:
    """The realtime data path (client-api.md §9–§11 over ``Connect``); end to end through the
    gateway in tests/gateway/test_ws.py."""
    from sats import ws_v1 as ws

    async def body(stub: pb_grpc.HostNodeStub, node: HostNode) -> None:
        assert (await install(stub, CHAT)).failure.kind == pb.ERROR_KIND_NONE
        requests, call = open_connect(stub)

        async def frames(n: int) -> list[pb.HostEvent]:
            out: list[pb.HostEvent] = []
            while len(out) < n:
                batch = await asyncio.wait_for(call.read(), 10)
                out += list(batch.events)
            return out

        for ref in (1, 2):
            await requests.put(event(connected=pb.ClientConnected(
                connection_ref=ref, identity=(ALICE if ref == 1 else OWNER).to_bsatn(),
                connection_id=ref.to_bytes(16, "little"), protocol="v1.bsatn.spacetimedb", compression="None",
                token=f"token-{ref}",
            )))  # fmt: skip
        first = await frames(2)
        assert sorted(e.frame.connection_refs[0] for e in first) == [1, 2]
        for e in first:  # the host node writes IdentityToken, with the token the gateway passed on
            token = ws.decode_server_frame(e.frame.frame)
            assert isinstance(token, ws.IdentityToken) and token.token == f"token-{e.frame.connection_refs[0]}"
        subscribe = ws.SubscribeMulti(("SELECT * FROM message",), 1, ws.QueryId(1))
        # Client 1 sends a binary frame, client 2 a text one (JSON; the reply is still BSATN).
        await requests.put(event(message=pb.ClientMessage(
            connection_ref=1, frame=ws.encode_client_message_bsatn(subscribe))))
        await requests.put(event(message=pb.ClientMessage(
            connection_ref=2, frame=ws.encode_client_message_json(subscribe).encode(), text=True)))
        applied: list[pb.HostEvent] = []
        while sorted(r for e in applied for r in e.frame.connection_refs) != [1, 2]:
            applied += await frames(1)
        assert all(isinstance(ws.decode_server_frame(e.frame.frame), ws.SubscribeMultiApplied) for e in applied)
        call_msg = ws.encode_client_message_bsatn(ws.CallReducer("send_message", encode(STRING, "hi"), 5))
        await requests.put(event(message=pb.ClientMessage(connection_ref=1, frame=call_msg)))
        (update,) = await frames(1)
        # One frame for both clients (full updates, same protocol and compression).
        assert sorted(update.frame.connection_refs) == [1, 2]
        msg = ws.decode_server_frame(update.frame.frame)
        assert isinstance(msg, ws.TransactionUpdate) and msg.reducer_call.request_id == 5
        # A malformed message closes that client with 1011; the other stays.
        await requests.put(event(message=pb.ClientMessage(connection_ref=2, frame=b"\x63")))
        (closed,) = await frames(1)
        assert closed.closed.connection_ref == 2 and closed.closed.code == 1011 and closed.closed.reason
        await requests.put(event(disconnected=pb.ClientDisconnected(connection_ref=2)))
        await requests.put(event(disconnected=pb.ClientDisconnected(connection_ref=1)))
        await requests.put(None)
        deadline = time.monotonic() + PATIENCE
        while await node.run(DB, _clients):
            assert time.monotonic() < deadline, "the clients were never disconnected"
            await asyncio.sleep(0.01)

    with_service(tmp_path, body)


def open_connect(stub: pb_grpc.HostNodeStub) -> tuple[asyncio.Queue[pb.GatewayFrames | None], Any]:
    """A ``Connect`` stream as a gateway opens it: put messages in the queue (None ends it)."""
    requests: asyncio.Queue[pb.GatewayFrames | None] = asyncio.Queue()

    async def gen():  # type: ignore[no-untyped-def]
        while (m := await requests.get()) is not None:
            yield m

    return requests, stub.Connect(gen())


def event(**kw: object) -> pb.GatewayFrames:
    """One gateway event for ``DB``."""
    return pb.GatewayFrames(database_identity=DB.to_bsatn(), events=[pb.GatewayEvent(**kw)])  # type: ignore[arg-type]


def _clients(db: object) -> list[object]:
    """Rows of ``st_client`` (connected clients)."""
    from hostnode.subscriptions import writer_view

    with writer_view(db) as tx:  # type: ignore[arg-type]
        return list(tx.scan(db.system.client_table_id))  # type: ignore[attr-defined]


def test_a_connecting_clients_backlog_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: messages a client sends while ``client_connected`` still runs wait for its
    connection; past the limit the client is closed 1013 instead of being held in memory, its
    messages never run, and it is disconnected once ``client_connected`` has run."""
    from hostnode import realtime_stream
    from sats import ws_v1 as ws

    monkeypatch.setattr(realtime_stream, "MAX_CONNECTING_MESSAGES", 3)

    async def body(stub: pb_grpc.HostNodeStub, node: HostNode) -> None:
        await install(stub, CHAT)
        requests, call = open_connect(stub)

        async with writer_held(node, DB):  # client_connected waits behind it
            await requests.put(event(connected=pb.ClientConnected(
                connection_ref=1, identity=ALICE.to_bsatn(), connection_id=(1).to_bytes(16, "little"),
                protocol="v1.bsatn.spacetimedb", compression="None", token="t",
            )))  # fmt: skip
            await until(lambda: node._worker(DB).queued == 1, "client_connected to wait for the writer")
            for i in range(4):
                frame = ws.encode_client_message_bsatn(ws.CallReducer("send_message", encode(STRING, f"m{i}"), i))
                await requests.put(event(message=pb.ClientMessage(connection_ref=1, frame=frame)))
            batch = await asyncio.wait_for(call.read(), PATIENCE)
            (closed,) = batch.events
            assert closed.closed.connection_ref == 1 and closed.closed.code == 1013
            assert closed.closed.reason.startswith("too many messages before the connection was accepted")
        await node.run(DB, lambda db: None)  # client_connected (queued before it) has run
        deadline = time.monotonic() + PATIENCE
        while await node.run(DB, _clients):
            assert time.monotonic() < deadline, "the client was never disconnected"
            await asyncio.sleep(0.01)
        result = await node.sql(DB, "SELECT * FROM message", OWNER)
        assert result.rows == []
        await requests.put(None)
        call.cancel()

    with_service(tmp_path, body)


def test_frames_the_gateway_does_not_take_are_bounded_in_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: when the gateway stops taking a ``Connect`` stream's batches, the node holds at
    most ``MAX_PENDING_BYTES`` of frames for it and stops draining the connections, whose own
    bounded queues then fill: the client is cut off instead of the node buffering every update."""
    from hostnode import grpc_stream, realtime_stream
    from hostnode.realtime import CLOSE_SERVER_FULL
    from sats import ws_v1 as ws

    monkeypatch.setattr(realtime_stream, "MAX_PENDING_BYTES", 4000)

    async def body(stub: pb_grpc.HostNodeStub, node: HostNode) -> None:
        await install(stub, CHAT)
        node.outgoing.limit = 20_000
        stream = grpc_stream.GrpcClientStream(node)
        requests: asyncio.Queue[pb.GatewayFrames | None] = asyncio.Queue()

        async def gen():  # type: ignore[no-untyped-def]
            while (m := await requests.get()) is not None:
                yield m

        def frames(*events: pb.GatewayEvent) -> pb.GatewayFrames:
            return pb.GatewayFrames(database_identity=DB.to_bsatn(), events=list(events))

        def message(msg: ws.ClientMessage) -> pb.GatewayEvent:
            return pb.GatewayEvent(message=pb.ClientMessage(connection_ref=1, frame=ws.encode_client_message_bsatn(msg)))

        reader = asyncio.ensure_future(stream.read(gen()))
        await requests.put(frames(pb.GatewayEvent(connected=pb.ClientConnected(
            connection_ref=1, identity=ALICE.to_bsatn(), connection_id=(1).to_bytes(16, "little"),
            protocol="v1.bsatn.spacetimedb", compression="None", token="t",
        ))))  # fmt: skip
        assert await asyncio.wait_for(stream.next_batch(), PATIENCE)  # IdentityToken
        await requests.put(frames(message(ws.SubscribeMulti(("SELECT * FROM message",), 1, ws.QueryId(1)))))
        assert await asyncio.wait_for(stream.next_batch(), PATIENCE)  # SubscribeMultiApplied
        # The gateway stops taking batches; 40 updates of about 1 kB each are due to the client.
        for i in range(40):
            await requests.put(frames(message(ws.CallReducer("send_message", encode(STRING, f"{i:02d}" + "x" * 1000), i))))
        conn = stream.clients[1].conn
        assert conn is not None
        await until(lambda: conn.is_closed, "the client to be cut off")
        assert (conn.close_code, conn.close_reason) == CLOSE_SERVER_FULL
        held = await stream.next_batch()
        # The limit, give or take one connection's queue drained at once (bounded by its budget).
        assert held is not None and sum(len(e.frame.frame) for e in held) < 4000 + 20_000 + 1200
        while not any(e.WhichOneof("event") == "closed" for e in held):
            more = await asyncio.wait_for(stream.next_batch(), PATIENCE)
            assert more is not None
            held += more
        assert held[-1].closed.code == CLOSE_SERVER_FULL[0]
        await requests.put(None)
        await reader
        await stream.close_all()

    with_service(tmp_path, body)


def test_calls_without_the_cluster_secret_are_refused(tmp_path: Path) -> None:
    """Only holders of the cluster secret may call a host node (and so assert a caller identity):
    without it, or with another, every kind of call is UNAUTHENTICATED and changes nothing."""

    async def main() -> None:
        node = HostNode(HostNodeConfig(tmp_path / "node"))
        await node.start()
        server, address = await start_server(node, secret=SECRET)
        try:
            for channel in (grpc.aio.insecure_channel(address), auth.channel(address, auth.ClusterSecret.generate())):
                async with channel:
                    stub = pb_grpc.HostNodeStub(channel)
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await install(stub, CHAT)
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "lacks the cluster secret" in (refused.value.details() or "")
                    logs = stub.Logs(pb.LogsRequest(database_identity=DB.to_bsatn()))
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        async for _ in logs:
                            pass
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            async with auth.channel(address, SECRET) as channel:
                stub = pb_grpc.HostNodeStub(channel)
                # Nothing was installed by the refused call: this one creates the database.
                assert (await install(stub, CHAT)).created
                await stub.CallReducers(pb.CallBatch(database_identity=DB.to_bsatn(), calls=[http_call(0, "send_message", ["hi"])]))
                assert [m[2] for m in await rows(stub, "SELECT * FROM message")] == ["hi"]  # type: ignore[index]
        finally:
            await server.stop(None)
            await node.stop()

    asyncio.run(main())
