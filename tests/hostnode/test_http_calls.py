"""HTTP ``/call`` on the host node (hostnode/http_calls.py): what a caller and the module see,
however many calls share a writer job."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import wasmtime

from hostnode.database import InvalidArguments, NoSuchReducer, Status
from hostnode.http_calls import HttpCall
from hostnode.moduledef import RawModuleDefV9, RawReducerDefV9, encode_raw_module_def
from hostnode.service import HostNode, HostNodeConfig
from sats.bsatn import encode
from sats.identity import Identity
from sats.types import STRING, ProductType, Typespace, product
from tests.hostnode.conftest import ALICE, BOB, OWNER, module_wasm
from tests.waits import writer_held

DB = Identity.from_claims("orrery-test", "http-calls")
KV = product(("key", STRING), ("value", STRING))


def st_client_probe() -> bytes:
    """A module without lifecycle reducers: reducer 0 ``probe`` succeeds only when ``st_client``
    holds exactly one row while it runs (its caller's); reducer 1 ``refuse`` always fails. Like
    the modules of the official libraries, it looks the table id up once and keeps it."""
    unit = ProductType(())
    raw = encode_raw_module_def(
        RawModuleDefV9(
            Typespace([]), (), (RawReducerDefV9("probe", unit, None), RawReducerDefV9("refuse", unit, None)), (), (), ()
        )
    )
    data = "".join(f"\\{b:02x}" for b in raw)
    wat = f"""
      (module
        (import "spacetime_10.0" "bytes_sink_write" (func $w (param i32 i32 i32) (result i32)))
        (import "spacetime_10.0" "table_id_from_name" (func $tid (param i32 i32 i32) (result i32)))
        (import "spacetime_10.0" "datastore_table_row_count" (func $count (param i32 i32) (result i32)))
        (memory (export "memory") 1)
        (global $client_table (mut i32) (i32.const -1))
        (data (i32.const 512) "st_client")
        (data (i32.const 600) "not one client")
        (data (i32.const 1024) "{data}")
        (func $fail (param $err i32) (result i32)
          (i32.store (i32.const 8) (i32.const 14))
          (drop (call $w (local.get $err) (i32.const 600) (i32.const 8)))
          (i32.const 1))
        (func (export "__describe_module__") (param $sink i32)
          (i32.store (i32.const 8) (i32.const {len(raw)}))
          (drop (call $w (local.get $sink) (i32.const 1024) (i32.const 8))))
        (func (export "__call_reducer__")
              (param $id i32) (param i64 i64 i64 i64 i64 i64 i64) (param $args i32) (param $err i32) (result i32)
          (if (i32.ne (local.get $id) (i32.const 0)) (then (return (call $fail (local.get $err)))))
          (if (i32.eq (global.get $client_table) (i32.const -1))
            (then
              (if (call $tid (i32.const 512) (i32.const 9) (i32.const 16)) (then (return (call $fail (local.get $err)))))
              (global.set $client_table (i32.load (i32.const 16)))))
          (if (call $count (global.get $client_table) (i32.const 24)) (then (return (call $fail (local.get $err)))))
          (if (i64.ne (i64.load (i32.const 24)) (i64.const 1)) (then (return (call $fail (local.get $err)))))
          (i32.const 0)))
    """
    return bytes(wasmtime.wat2wasm(wat))


def with_node(tmp_path: Path, program: bytes, body: Callable[[HostNode], Awaitable[None]]) -> None:
    async def main() -> None:
        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        try:
            await node.install(DB, OWNER, program)
            await body(node)
        finally:
            await node.stop()

    asyncio.run(main())


async def clients(node: HostNode) -> list[object]:
    return await node.run(DB, lambda db: (db.checkpoint(), db.table_rows("st_client"))[1])


def test_without_lifecycle_reducers_the_reducer_sees_its_client_and_the_call_logs_one_record(tmp_path: Path) -> None:
    """The st_client row of an HTTP call lives inside the reducer's transaction: the reducer
    sees it — on the call that first looks the table up and on the later ones that use the id it
    kept — nothing outlives the call, and a call appends one commit-log record (was three)."""

    async def body(node: HostNode) -> None:
        db = node.database(DB)
        for connection_id in (7, 8):
            before = db.last_offset
            done = await node.call_via_http(DB, "probe", b"", caller=ALICE, connection_id=connection_id)
            assert done.error is None and done.reducer is not None
            assert done.reducer.status is Status.COMMITTED, done.reducer.message
            assert done.connected is None  # no client_connected to refuse it
            assert db.last_offset == before + 1 == done.reducer.offset
            assert db.durability.durable_offset > done.reducer.offset  # answered once durable
            assert await clients(node) == []

        # A failing reducer, an unknown one and bad arguments leave no record and no client.
        before = db.last_offset
        refused = await node.call_via_http(DB, "refuse", b"", caller=ALICE, connection_id=8)
        assert refused.reducer is not None and refused.reducer.status is Status.FAILED
        assert refused.reducer.message == "not one client"
        missing = await node.call_via_http(DB, "nope", b"", caller=ALICE, connection_id=9)
        assert isinstance(missing.error, NoSuchReducer)
        extra = await node.call_via_http(DB, "probe", b"\x01", caller=ALICE, connection_id=10)
        assert isinstance(extra.error, InvalidArguments)
        assert db.last_offset == before
        assert await clients(node) == []

    with_node(tmp_path, st_client_probe(), body)


def test_calls_waiting_together_run_in_order_and_each_gets_its_own_answer(tmp_path: Path) -> None:
    """Calls queued behind a busy writer run as one job: in arrival order, each with its own
    outcome (one failing does not fail the others), every answer only once it is durable, and
    each call counting against the writer's queue bound."""

    async def body(node: HostNode) -> None:
        seeded = await node.call_reducer(DB, "seed", struct.pack("<Iq", 4, 100), caller=OWNER)
        assert seeded.committed
        calls: list[asyncio.Future[HttpCall]] = []
        async with writer_held(node, DB):
            for reducer, args in [
                ("transfer", struct.pack("<IIq", 0, 1, 10)),
                ("transfer", struct.pack("<IIq", 2, 2, 10)),  # same_account
                ("nope", b""),
                ("transfer", b"\x00"),
                ("transfer", struct.pack("<IIq", 1, 3, 110)),  # needs the first transfer's 10
            ]:
                calls.append(asyncio.ensure_future(
                    node.call_via_http(DB, reducer, args, caller=ALICE, connection_id=len(calls) + 1)
                ))  # fmt: skip
            await asyncio.sleep(0)  # each call is queued before its first await
            worker = node._worker(DB)
            # One job waits behind the holding one, with every call in it; each call counts.
            assert (worker.queued, worker.waiting["http"]) == (len(calls), len(calls) - 1)
        first, same, missing, bad, second = await asyncio.gather(*calls)
        db = node.database(DB)
        assert first.reducer is not None and first.reducer.committed
        assert same.reducer is not None and same.reducer.message == "same_account"
        assert isinstance(missing.error, NoSuchReducer) and isinstance(bad.error, InvalidArguments)
        assert second.reducer is not None
        assert second.reducer.committed, second.reducer.message
        assert first.reducer.offset is not None and second.reducer.offset == first.reducer.offset + 1
        assert db.durability.durable_offset > second.reducer.offset
        accounts = await node.run(DB, lambda d: (d.checkpoint(), d.table_rows("accounts"))[1])
        assert sorted(accounts) == [(0, 90), (1, 0), (2, 100), (3, 210)]

    with_node(tmp_path, module_wasm("transfer"), body)


def test_lifecycle_reducers_run_around_every_call_of_a_job_and_can_refuse(tmp_path: Path) -> None:
    """With client_connected / client_disconnected, each HTTP call of a shared job still runs
    both around its reducer (as 1.12 does), and a refusing client_connected stops only the
    calls it refuses."""

    async def body(node: HostNode) -> None:
        async def events() -> list[tuple[str, Identity, int]]:
            rows = await node.run(DB, lambda d: (d.checkpoint(), d.table_rows("lifecycle_event"))[1])
            return [(kind, Identity.from_sats(sender), conn[0]) for _id, kind, sender, conn, _at in rows if kind != "init"]

        async with writer_held(node, DB):
            calls = [
                asyncio.ensure_future(
                    node.call_via_http(DB, "set_kv", encode(KV, (k, "v")), caller=who, connection_id=conn)
                )
                for who, k, conn in [(ALICE, "a", 11), (BOB, "b", 12)]
            ]  # fmt: skip
        for done in await asyncio.gather(*calls):
            assert done.connected is not None and done.connected.committed
            assert done.reducer is not None and done.reducer.committed
        assert await events() == [
            ("connect", ALICE, 11), ("disconnect", ALICE, 11), ("connect", BOB, 12), ("disconnect", BOB, 12)
        ]  # fmt: skip

        reject = encode(KV, ("reject_connections", "yes"))
        assert (await node.call_via_http(DB, "set_kv", reject, caller=ALICE, connection_id=13)).reducer is not None
        refused = await node.call_via_http(
            DB, "set_kv", encode(KV, ("x", "y")), caller=BOB,
            connection_id=14,
        )
        assert refused.reducer is None and refused.connected is not None
        assert refused.connected.status is Status.FAILED
        assert refused.connected.message == "connection rejected by module"
        kv = await node.run(DB, lambda d: (d.checkpoint(), d.table_rows("kv"))[1])
        assert "x" not in [row[0] for row in kv]
        assert await clients(node) == []

    with_node(tmp_path, module_wasm("module-test"), body)
