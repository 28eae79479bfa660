"""Data directories written before program hashes were Keccak-256 (1.12) keep working.

Their database records hold the SHA3-256 of the initial program and no ``program_hash`` field.
On start-up the standalone server recomputes the hash from the program in the first record of
each database's commit log and rewrites the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from clustermeta.metastore_lmdb import LmdbMetaStore
from clustermeta.records import KECCAK_256, LEGACY_SHA3_256, DatabaseRecord
from controlplane.core import migrate_program_hashes, program_hash
from sats.identity import Identity
from tests.gateway.conftest import CHAT, TRANSFER
from tests.gateway.test_http_database import initial_program, keccak_json
from tests.servers import TRANSPORTS, Client, StandaloneServer


def _db_key(identity: str) -> bytes:
    return f"/db/{identity}".encode()


async def _rewrite_the_old_way(meta: Path, identity: str, program: bytes) -> None:
    """Store the record exactly as the code before Keccak-256 wrote it."""
    store = await LmdbMetaStore.open(meta)
    try:
        kv = await store.get(_db_key(identity))
        assert kv is not None
        doc = json.loads(kv.value)
        old = {
            "identity": doc["identity"],
            "owner": doc["owner"],
            "host_type": doc["host_type"],
            "initial_program_hash": hashlib.sha3_256(program).hexdigest(),
            "replicas": doc["replicas"],
        }
        await store.put(_db_key(identity), json.dumps(old).encode())
    finally:
        await store.close()


async def _stored_record(meta: Path, identity: str) -> DatabaseRecord:
    store = await LmdbMetaStore.open(meta)
    try:
        kv = await store.get(_db_key(identity))
        assert kv is not None
        return DatabaseRecord.from_json(kv.value)
    finally:
        await store.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_old_data_directory_answers_the_keccak_hash(tmp_path: Path, transport: str) -> None:
    data = tmp_path / "data"
    meta = data / "control" / "meta.lmdb"
    with StandaloneServer(data, transport=transport) as server:

        async def publish(c: Client) -> tuple[str, str]:
            _, token = await c.new_identity()
            reply = await c.publish("chat", CHAT, token=token)
            assert reply.status == 200, reply
            # The initial program stays the first one across updates (a compatible republish).
            assert (await c.publish("chat", CHAT, token=token)).status == 200
            return str(reply.json()["Success"]["database_identity"]), token

        identity, token = server.run(publish)
        server.stop()
        asyncio.run(_rewrite_the_old_way(meta, identity, CHAT))
        legacy = asyncio.run(_stored_record(meta, identity))
        assert legacy.program_hash_kind == LEGACY_SHA3_256
        assert legacy.initial_program_hash == hashlib.sha3_256(CHAT).hexdigest()

        server.start()

        async def check(c: Client) -> None:
            assert await initial_program(c, "chat") == keccak_json(CHAT)
            assert (await c.call("chat", "send_message", "still here", token=token)).status == 200

        server.run(check)
    migrated = asyncio.run(_stored_record(meta, identity))
    assert (migrated.program_hash_kind, migrated.initial_program_hash) == (KECCAK_256, program_hash(CHAT))


def test_migration_skips_what_it_cannot_recompute(tmp_path: Path) -> None:
    """Records already Keccak-256 are left alone; one whose program is unknown keeps its hash."""

    async def main() -> None:
        store = await LmdbMetaStore.open(tmp_path / "meta.lmdb")
        try:
            known, unknown, current = (Identity.from_claims("localhost", n) for n in ("known", "unknown", "current"))
            for identity, program in ((known, CHAT), (unknown, TRANSFER)):
                legacy = DatabaseRecord(identity, identity, initial_program_hash=hashlib.sha3_256(program).hexdigest(),
                                        program_hash_kind=LEGACY_SHA3_256)
                await store.put(_db_key(identity.to_hex()), legacy.to_json())
            await store.put(_db_key(current.to_hex()), DatabaseRecord(current, current, initial_program_hash="ab").to_json())
            asked: list[Identity] = []

            async def initial(identity: Identity) -> bytes | None:
                asked.append(identity)
                return CHAT if identity == known else None

            assert await migrate_program_hashes(store, initial) == 1
            assert sorted(asked, key=Identity.to_hex) == sorted([known, unknown], key=Identity.to_hex)
            records = {
                r.identity: r
                for r in (DatabaseRecord.from_json(kv.value) for kv in (await store.get_prefix(b"/db/")).kvs)
            }
            assert (records[known].program_hash_kind, records[known].initial_program_hash) == (
                KECCAK_256, program_hash(CHAT),
            )
            assert records[unknown].program_hash_kind == LEGACY_SHA3_256
            assert records[current].initial_program_hash == "ab"
            assert await migrate_program_hashes(store, initial) == 0  # idempotent
        finally:
            await store.close()

    asyncio.run(main())
