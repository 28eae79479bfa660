"""The host node service: many databases, each on its own writer thread, driven from asyncio."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from hostnode.database import NoSuchReducer, Status
from hostnode.service import DatabaseNotFound, HostNode, HostNodeConfig
from hostnode.wasm_host import ModuleLoadError
from sats.bsatn import encode
from sats.identity import Identity
from sats.types import STRING
from tests.hostnode.conftest import ALICE, OWNER, module_wasm

CHAT = Identity.from_claims("orrery-test", "chat-db")
BANK = Identity.from_claims("orrery-test", "bank-db")


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_two_databases_calls_and_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        chat = await node.install(CHAT, OWNER, module_wasm("quickstart-chat"))
        assert chat.created and chat.init is not None and chat.init.committed
        bank = await node.install(BANK, OWNER, module_wasm("transfer"))
        assert bank.created
        out = await node.call_reducer(BANK, "seed", struct.pack("<Iq", 10, 100), caller=OWNER)
        assert out.committed
        # HTTP-style call: the module sees connect → reducer → disconnect.
        done = await node.call_via_http(CHAT, "set_name", encode(STRING, "Alice"), caller=ALICE, connection_id=7)
        assert done.connected is not None and done.connected.committed
        assert done.reducer is not None and done.reducer.committed
        # One fsync covers the three transactions: the answer comes once the last is durable.
        assert node.database(CHAT).committer.durable_offset > node.database(CHAT).last_offset
        done = await node.call_via_http(CHAT, "set_name", encode(STRING, ""), caller=ALICE, connection_id=8)
        assert done.reducer is not None and done.reducer.status is Status.FAILED
        assert done.reducer.message == "Names must not be empty"
        done = await node.call_via_http(CHAT, "nope", b"", caller=ALICE, connection_id=9)
        assert isinstance(done.error, NoSuchReducer) and done.reducer is None
        users = await node.run(CHAT, lambda db: (db.checkpoint(), db.table_rows("user"))[1])
        assert [(u[1], u[2]) for u in users] == [((0, "Alice"), False)]
        await node.stop()

        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        assert node.has(CHAT) and node.has(BANK)
        rows = await node.run(BANK, lambda db: db.table_rows("accounts"))
        assert sorted(rows) == [(i, 100) for i in range(10)]
        await node.stop()

    run(scenario())


def test_update_clear_and_delete(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        await node.install(BANK, OWNER, module_wasm("transfer"))
        await node.call_reducer(BANK, "seed", struct.pack("<Iq", 3, 5), caller=OWNER)
        again = await node.install(BANK, OWNER, module_wasm("transfer"))
        assert not again.created and again.migration is not None and again.migration.is_empty
        assert len(await node.run(BANK, lambda db: (db.checkpoint(), db.table_rows("accounts"))[1])) == 3
        cleared = await node.install(BANK, OWNER, module_wasm("transfer"), clear=True)
        assert cleared.created
        assert await node.run(BANK, lambda db: db.table_rows("accounts")) == []
        await node.delete(BANK)
        assert not node.has(BANK)
        assert not (tmp_path / "databases" / BANK.to_hex()).exists()
        with pytest.raises(DatabaseNotFound):
            await node.call_reducer(BANK, "seed", b"", caller=OWNER)
        await node.stop()

    run(scenario())


def test_failed_installs_leave_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        with pytest.raises(ModuleLoadError):
            await node.install(BANK, OWNER, b"not wasm")
        assert not node.has(BANK)
        assert not (tmp_path / "databases" / BANK.to_hex()).exists()
        await node.stop()

    run(scenario())



def test_sql_reads_own_writes_and_dml_is_durable(tmp_path: Path) -> None:
    async def scenario() -> None:
        from hostnode.sql import SqlError

        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        await node.install(BANK, OWNER, module_wasm("transfer"))
        await node.call_reducer(BANK, "seed", struct.pack("<Iq", 3, 5), caller=OWNER)
        # No idle checkpoint has to happen first: the query sees the acknowledged seed.
        res = await node.sql(BANK, "SELECT * FROM accounts WHERE id = 2", OWNER)
        assert res.rows == [(2, 5)]
        res = await node.sql(BANK, "UPDATE accounts SET balance = 9 WHERE id = 2", OWNER)
        assert res.offset is not None and node.database(BANK).committer.durable_offset > res.offset
        assert (await node.sql(BANK, "SELECT balance FROM accounts WHERE id = 2", OWNER)).rows == [(9,)]
        with pytest.raises(SqlError, match="not authorized to run SQL DML"):
            await node.sql(BANK, "DELETE FROM accounts", ALICE)
        assert node.schema_json(BANK)["tables"][0]["name"] == "accounts"
        assert node.log_lines(BANK, 5) == node.log_lines(BANK)[-5:]
        await node.stop()

    run(scenario())


def test_point_queries_skip_the_writers_queue_only_when_they_cannot_miss_a_write(tmp_path: Path) -> None:
    """A unique-index point query reads the checkpoint without waiting behind the writer's jobs,
    but only when every commit is in it; any other query, or one with commits still to
    checkpoint, goes through the writer (and so sees every acknowledged write)."""

    async def scenario() -> None:
        import threading

        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        await node.install(BANK, OWNER, module_wasm("transfer"))
        await node.call_reducer(BANK, "seed", struct.pack("<Iq", 3, 5), caller=OWNER)
        db = node.database(BANK)
        await node.run(BANK, lambda db: db.checkpoint())
        assert db.uncheckpointed == 0
        release = threading.Event()
        busy = asyncio.ensure_future(node.run(BANK, lambda db: release.wait(30)))  # the writer is busy
        try:
            res = await asyncio.wait_for(node.sql(BANK, "SELECT * FROM accounts WHERE id = 1", ALICE), 10)
            assert res.rows == [(1, 5)]
            # A scan is not a point query: it waits for the writer.
            scan = asyncio.ensure_future(node.sql(BANK, "SELECT * FROM accounts WHERE balance = 5", ALICE))
            await asyncio.sleep(0.2)
            assert not scan.done()
        finally:
            release.set()
        await busy
        assert sorted((await scan).rows) == [(0, 5), (1, 5), (2, 5)]
        # A commit not yet checkpointed (the writer holds it back, busy): the point query waits
        # for the writer, and sees the commit.
        committed, release = threading.Event(), threading.Event()

        def commit_then_wait(db: object) -> None:
            out = db.call_reducer("transfer", struct.pack("<IIq", 0, 1, 2), caller=OWNER)  # type: ignore[attr-defined]
            assert out.committed and db.uncheckpointed > 0  # type: ignore[attr-defined]
            committed.set()
            release.wait(30)

        busy = asyncio.ensure_future(node.run(BANK, commit_then_wait))
        try:
            assert await asyncio.to_thread(committed.wait, 10)
            point = asyncio.ensure_future(node.sql(BANK, "SELECT balance FROM accounts WHERE id = 1", OWNER))
            await asyncio.sleep(0.2)
            assert not point.done()
        finally:
            release.set()
        await busy
        assert (await point).rows == [(7,)]
        await node.stop()

    run(scenario())


def test_clear_with_a_failing_program_keeps_the_old_database(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        await node.install(BANK, OWNER, module_wasm("transfer"))
        await node.call_reducer(BANK, "seed", struct.pack("<Iq", 3, 5), caller=OWNER)
        with pytest.raises(ModuleLoadError):
            await node.install(BANK, OWNER, b"not wasm", clear=True)
        assert node.has(BANK)
        assert len(await node.run(BANK, lambda db: (db.checkpoint(), db.table_rows("accounts"))[1])) == 3
        assert sorted(p.name for p in (tmp_path / "databases").iterdir()) == [BANK.to_hex()]
        await node.stop()

    run(scenario())
