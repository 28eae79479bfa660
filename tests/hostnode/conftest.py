"""Fixtures and helpers for end-to-end engine tests (real LMDB files, real wasmtime).

``make_db`` creates a database from one of the committed C modules (or any wasm bytes) in a
fresh directory under ``tmp_path`` and closes it when the test ends; ``call`` encodes Python
values as a reducer's BSATN arguments and runs the reducer; ``rows`` and ``log_records`` read
what a test asserts on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hostnode.database import Database, DatabaseConfig, ReducerOutcome
from sats.bsatn import codec_for
from sats.identity import Identity
from tests.modules_harness import MODULES_DIR
from tests.waits import PATIENCE

#: The database owner: `init` runs as this identity.
OWNER = Identity.from_claims("https://orrery.test", "owner")
#: The database's own identity: scheduled and immediate reducers run as this identity.
DB_IDENTITY = Identity.from_claims("https://orrery.test", "database")
ALICE = Identity.from_claims("https://orrery.test", "alice")
BOB = Identity.from_claims("https://orrery.test", "bob")
CAROL = Identity.from_claims("https://orrery.test", "carol")


def module_wasm(name: str) -> bytes:
    """The committed build of ``modules/<name>/<name>.wasm``."""
    return (MODULES_DIR / name / f"{name}.wasm").read_bytes()


def create_db(path: Path, program: bytes, **config: Any) -> tuple[Database, ReducerOutcome | None]:
    """``Database.create`` at ``path`` with the test owner/identity and ``DatabaseConfig(**config)``."""
    return Database.create(path, program, owner=OWNER, identity=DB_IDENTITY, config=DatabaseConfig(**config))


class DbFactory:
    """Creates databases under one directory and closes every database it knows at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.opened: list[Database] = []

    def __call__(self, module: str | bytes, *, name: str = "db", **config: Any) -> Database:
        """Create ``<root>/<name>`` from a committed module (by name) or wasm bytes."""
        program = module_wasm(module) if isinstance(module, str) else module
        db, _ = create_db(self.root / name, program, **config)
        return self.track(db)

    def track(self, db: Database) -> Database:
        """Close ``db`` (e.g. a reopened database) at teardown too."""
        self.opened.append(db)
        return db

    def close_all(self) -> None:
        """Close every tracked database (closing twice is harmless)."""
        for db in self.opened:
            db.close()


@pytest.fixture
def make_db(tmp_path: Path) -> Iterator[DbFactory]:
    """``make_db(module_name_or_wasm, *, name="db", **config) -> Database`` under ``tmp_path``."""
    factory = DbFactory(tmp_path)
    yield factory
    factory.close_all()


def encode_args(db: Database, reducer: str, *args: Any) -> bytes:
    """BSATN of ``args`` against the reducer's parameter product."""
    assert db.moduledef is not None
    return codec_for(db.reducer_params(reducer), db.moduledef.typespace).encode(tuple(args))


def call(
    db: Database,
    reducer: str,
    *args: Any,
    caller: Identity = ALICE,
    connection_id: int = 0,
    timestamp_micros: int | None = None,
) -> ReducerOutcome:
    """Encode ``args`` and call ``reducer``."""
    return db.call_reducer(
        reducer,
        encode_args(db, reducer, *args),
        caller=caller,
        connection_id=connection_id,
        timestamp_micros=timestamp_micros,
    )


def rows(db: Database, table: str) -> list[Any]:
    """Decoded rows of ``table`` after a checkpoint (so the latest commits are visible)."""
    db.checkpoint()
    return db.table_rows(table)


def kv(db: Database) -> dict[str, str]:
    """module-test's `kv` table as a dict."""
    return dict(rows(db, "kv"))


def log_records(db: Database, function: str | None = None) -> list[dict[str, Any]]:
    """The module log as parsed JSON objects, optionally only those of one reducer."""
    records = [json.loads(line) for line in db.logs.tail()]
    return [r for r in records if function is None or r.get("function") == function]


def poll_schedules(db: Database, until: Callable[[], bool], timeout: float = PATIENCE) -> None:
    """Run due schedules every few ms until ``until()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s of running due schedules")
        db.run_due_schedules()
        time.sleep(0.005)
