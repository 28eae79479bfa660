"""Crash recovery: a child running transfers is SIGKILLed mid-stream, repeatedly.

After every kill the database is reopened and checked against the commit log and against what
the child acknowledged: every acknowledged transaction is present, no transaction is half
applied (the balances equal a model replaying the logged transfers), and the sum of balances
never changes.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostnode.database import Database, DatabaseConfig
from hostnode.txrecord import RecordKind, TxRecord

CHILD = Path(__file__).with_name("crash_child.py")
ACCOUNTS = 50
INITIAL = 1000
KILLS = 20


def run_child_and_kill(
    path: Path, seed: int, rng: random.Random, *, min_acks: int = 0, http: bool = False
) -> list[tuple[int, int, int, int]]:
    """Run the child (``http``: transfers as HTTP calls), kill it at a random moment once it
    acknowledged ``min_acks`` lines, and return what it acknowledged."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), str(ACCOUNTS), str(seed), *(["http"] if http else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise AssertionError(f"child failed to start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    seen: list[str] = []
    while len(seen) < min_acks and (ln := proc.stdout.readline()):
        seen.append(ln)
    time.sleep(rng.uniform(0.05, 0.6))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    out = "".join(seen) + out
    acks = []
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) == 5 and parts[0] == "ACK":  # a torn last line is simply not acknowledged
            acks.append((int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])))
    return acks


def check_database(path: Path, acked: dict[int, tuple[int, int, int]]) -> None:
    db = Database.open(path, DatabaseConfig())
    try:
        # No client is left connected (an HTTP call's st_client row never outlives it).
        assert db.table_rows("st_client") == []
        balances = {row[0]: row[1] for row in db.table_rows("accounts")}
        assert len(balances) == ACCOUNTS
        assert sum(balances.values()) == ACCOUNTS * INITIAL, "sum of balances changed"
        model = dict.fromkeys(range(ACCOUNTS), INITIAL)
        logged: dict[int, tuple[int, int, int]] = {}
        for rec in db.clog.read_from(0):
            txr = TxRecord.decode(rec.payload)
            if txr.kind is RecordKind.REDUCER and txr.reducer == "transfer":
                a, b, amount = struct.unpack("<IIq", txr.args)
                logged[rec.offset] = (a, b, amount)
                model[a] -= amount
                model[b] += amount
        assert balances == model, "datastore state differs from the committed log (half-applied transaction?)"
        for offset, tx in acked.items():
            assert logged.get(offset) == tx, f"acknowledged transaction at offset {offset} is missing or different"
    finally:
        db.close()


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_acknowledged_transaction(tmp_path: Path) -> None:
    path = tmp_path / "db"
    rng = random.Random(1234)
    acked: dict[int, tuple[int, int, int]] = {}
    total_acks = 0
    for i in range(KILLS):
        # The first child runs until it acknowledged something, however slow the machine.
        acks = run_child_and_kill(path, seed=i, rng=rng, min_acks=1 if i == 0 else 0)
        total_acks += len(acks)
        for offset, a, b, amount in acks:
            acked[offset] = (a, b, amount)
        check_database(path, acked)
    assert total_acks > 0, "the child never acknowledged anything: the test exercised nothing"


@pytest.mark.slow
def test_sigkill_among_http_calls_loses_no_acknowledged_call(tmp_path: Path) -> None:
    """HTTP calls run many to a writer job and answer after one durability wait for the job:
    a kill at any moment keeps every answered call, applies none by half and leaves no client."""
    rng = random.Random(4321)
    acked: dict[int, tuple[int, int, int]] = {}
    total_acks = 0
    for i in range(KILLS // 2):
        acks = run_child_and_kill(tmp_path, seed=i, rng=rng, min_acks=1 if i == 0 else 0, http=True)
        total_acks += len(acks)
        for offset, a, b, amount in acks:
            acked[offset] = (a, b, amount)
        (path,) = (tmp_path / "databases").iterdir()
        check_database(path, acked)
    assert total_acks > 0, "the child never acknowledged anything: the test exercised nothing"
