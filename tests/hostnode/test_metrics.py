"""hostnode/metrics.py: what a host node's databases count, read back in the Prometheus text format.

A real host node in process (LMDB, wasmtime, the commit log with its fsyncs): reducers that
commit, fail and trap, SQL, a restart that replays the log — and the samples 1.12's dashboards
read, with 1.12's names and labels.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from hostnode.metrics import HostNodeCollector
from hostnode.service import HostNode, HostNodeConfig
from hostnode.stats import ABI_SAMPLE_EVERY
from observability.exposition import encode_text
from observability.registry import new_registry
from sats.bsatn import encode
from sats.identity import Identity
from sats.types import STRING
from tests.hostnode.conftest import ALICE, OWNER, module_wasm
from tests.observability.samples import Samples, parse_samples

DB = Identity.from_claims("orrery-test", "metrics-db")
BANK = Identity.from_claims("orrery-test", "metrics-bank")


def scrape(node: HostNode) -> Samples:
    registry = new_registry("hostnode", "n1")
    registry.register(HostNodeCollector(node))
    return parse_samples(encode_text(registry).decode())


def test_reducers_sql_tables_and_the_commit_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        await node.install(DB, OWNER, module_wasm("module-test"))
        await node.install(BANK, OWNER, module_wasm("transfer"))
        assert (await node.call_reducer(BANK, "seed", struct.pack("<Iq", 50, 100), caller=OWNER)).committed
        transfers = 2 * ABI_SAMPLE_EVERY + 3
        for i in range(transfers):
            assert (await node.call_reducer(BANK, "transfer", struct.pack("<IIq", i % 50, (i + 1) % 50, 1), caller=ALICE)).committed
        poor = await node.call_reducer(BANK, "transfer", struct.pack("<IIq", 1, 2, 10**9), caller=ALICE)
        assert not poor.committed
        args = encode(STRING, "k") + encode(STRING, "v")
        assert (await node.call_reducer(DB, "set_kv", args, caller=ALICE)).committed
        trapped = await node.call_reducer(DB, "panic_trap", b"", caller=ALICE)
        assert not trapped.committed
        await node.sql(BANK, "SELECT * FROM accounts WHERE id = 3", ALICE)
        await node.run(BANK, lambda db: db.checkpoint())

        s = scrape(node)
        bank = BANK.to_hex()
        ok = {"txn_type": "Reducer", "db": bank, "reducer": "transfer"}
        assert s.value("spacetime_num_txns_total", **ok, committed="true") == transfers
        assert s.value("spacetime_num_txns_total", **ok, committed="false") == 1
        assert s.value("spacetime_txn_elapsed_time_sec_count", **ok) == transfers + 1
        assert s.value("spacetime_txn_cpu_time_sec_count", **ok) == transfers + 1
        assert s.value("spacetime_txn_elapsed_time_sec_bucket", **ok, le="+Inf") == transfers + 1
        assert s.value("spacetime_reducer_wait_time_sec_count", db=bank, reducer="transfer") == transfers + 1
        assert s.value("reducer_wasmtime_fuel_used", db=bank, reducer="transfer") > 0
        assert s.value("reducer_wasm_time_usec", db=bank, reducer="transfer") > 0
        assert s.value("reducer_abi_time_usec", db=bank, reducer="transfer") > 0
        # Every committed transfer updates two rows: two deletes and two inserts.
        table = {"txn_type": "Reducer", "db": bank, "reducer_or_query": "transfer", "table_name": "accounts"}
        assert s.value("spacetime_num_rows_inserted_total", **table) == 2 * transfers
        assert s.value("spacetime_num_rows_deleted_total", **table) == 2 * transfers
        seeded = {**table, "reducer_or_query": "seed"}
        assert s.value("spacetime_num_rows_inserted_total", **seeded) == 50
        assert s.value("spacetime_num_table_rows", db=bank, table_name="accounts") == 50
        assert s.value("spacetime_table_size_bytes", db=bank, table_name="accounts") >= 4096
        assert s.value("spacetime_num_rows_scanned_total", txn_type="Sql", db=bank) == 1
        assert s.value("spacetime_worker_wasm_memory_bytes", database_identity=bank) > 0
        assert s.value("spacetime_snapshot_creation_time_total_sec_count", db=bank) >= 1
        assert s.value("spacetime_message_log_size_bytes", db=bank) > 0
        assert s.value("orrery_commitlog_segments", db=bank) == 1
        assert s.value("orrery_fsync_duration_seconds_count", db=bank) >= 1
        assert s.value("orrery_replica_durable_offset", db=bank) > transfers
        assert s.find("spacetime_replay_total_time_seconds") == []  # created here, never replayed
        assert s.value("spacetime_worker_connected_clients", database_identity=bank) == 0
        # The trap is a wasm instance error, labelled with 1.12's module hash (Keccak-256 hex).
        db = DB.to_hex()
        errors = s.find("spacetime_worker_wasm_instance_errors_total", database_identity=db, reducer_symbol="panic_trap")
        assert len(errors) == 1 and errors[0][1] == 1 and len(errors[0][0]["module_hash"]) == 64
        assert s.value("spacetime_num_txns_total", txn_type="Reducer", db=db, reducer="panic_trap", committed="false") == 1
        await node.stop()

        # After a restart the log is replayed: the replay time appears, the counters start over.
        node = HostNode(HostNodeConfig(tmp_path))
        await node.start()
        s = scrape(node)
        assert s.value("spacetime_replay_total_time_seconds", db=bank) > 0
        assert s.find("spacetime_num_txns_total", db=bank, reducer="transfer") == []
        await node.stop()

    asyncio.run(scenario())
