"""Bank-style load and its checks, shared by the cluster fault and operation tests.

Clients call ``transfer(id, from, to, 1)`` (modules/bank) through the gateway with ids nobody
used before, and a :class:`Ledger` remembers what each one was told: 200 (must be in the ledger
table afterwards), 530 (the reducer failed: must not be), anything else — 503 "no leader" /
"outcome unknown" / "leadership moving", a timeout — may go either way; that is the honest
answer during a failover or an operation, and never a 200 for a lost write.

:class:`BankLoad` runs a few such clients in the background, each bounded in transfers and in
time; :func:`check_bank` reads the outcome back and checks every invariant; :func:`cli` runs
``python -m orrery cluster …`` as a user would (the event loop, and so the load, keeps running).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from hostnode.commitlog import CommitLog
from sats.identity import Identity
from tests.cluster.harness import eventually
from tests.servers import Client

__all__ = ["BankLoad", "CliResult", "Ledger", "assert_one_writer_per_epoch", "check_bank", "cli", "cluster_status", "transfer", "verify"]


class Ledger:
    """What the clients were told about each transfer id."""

    def __init__(self) -> None:
        self.acked: set[int] = set()
        self.failed: set[int] = set()
        self.unknown: set[int] = set()
        #: Why transfers were refused or unknown, by HTTP status and the first words of the body.
        self.refusals: Counter[str] = Counter()
        self.ids = itertools.count(1)


async def transfer(
    c: Client,
    db: str,
    token: str,
    ledger: Ledger,
    rnd: random.Random,
    *,
    accounts: int,
    timeout: float,
) -> bool:
    """One transfer of 1 between two random accounts; True when acknowledged (200)."""
    tid = next(ledger.ids)
    a, b = rnd.sample(range(accounts), 2)
    try:
        reply = await asyncio.wait_for(c.call(db, "transfer", tid, a, b, 1, token=token), timeout)
    except (aiohttp.ClientError, TimeoutError) as e:
        ledger.unknown.add(tid)
        ledger.refusals[type(e).__name__] += 1
        return False
    if reply.status == 200:
        ledger.acked.add(tid)
        return True
    if reply.status == 530:
        ledger.failed.add(tid)
        return False
    assert reply.status in (502, 503, 504), reply  # never a client error for a valid call
    ledger.unknown.add(tid)
    ledger.refusals[f"{reply.status} {reply.text[:60]}"] += 1
    return False


class BankLoad:
    """``workers`` clients of the gateway at ``url`` doing transfers on ``db`` until stopped, each at most ``max_transfers``
    of them and for at most ``max_seconds`` (``async with``: started on enter, stopped on exit)."""

    def __init__(
        self,
        url: str,
        db: str,
        token: str,
        ledger: Ledger,
        *,
        accounts: int,
        workers: int = 3,
        max_transfers: int = 50_000,
        max_seconds: float = 300.0,
        call_timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.db = db
        self.token = token
        self.ledger = ledger
        self.accounts = accounts
        self.workers = workers
        self.max_transfers = max_transfers
        self.max_seconds = max_seconds
        self.call_timeout = call_timeout
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _worker(self, n: int) -> None:
        rnd = random.Random(n)
        until = time.monotonic() + self.max_seconds
        async with Client(self.url) as c:
            for _ in range(self.max_transfers):
                if self._stop.is_set() or time.monotonic() > until:
                    return
                ok = await transfer(
                    c, self.db, self.token, self.ledger, rnd, accounts=self.accounts, timeout=self.call_timeout
                )
                if not ok:
                    await asyncio.sleep(0.05)

    async def __aenter__(self) -> BankLoad:
        self._tasks = [asyncio.create_task(self._worker(n)) for n in range(self.workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        if exc[0] is None:
            for r in results:
                if isinstance(r, BaseException):
                    raise r

    async def acked_more(self, than: int, timeout: float = 60.0, what: str = "") -> None:
        """Wait until more than ``than`` transfers were acknowledged (the load makes progress)."""

        async def more() -> bool:
            return len(self.ledger.acked) > than

        await eventually(more, timeout, what or f"more than {than} acknowledged transfers")


async def check_bank(
    c: Client, db: str, token: str, ledger: Ledger, *, accounts: int, balance: int
) -> int:
    """Every acknowledged transfer is in the ledger, no failed one is, nothing else is, the money
    adds up and every balance matches the ledger; the number of transfers in the ledger."""
    rows = await c.rows(db, "SELECT * FROM ledger", token=token)
    balances = {int(r[0]): int(r[1]) for r in await c.rows(db, "SELECT * FROM accounts", token=token)}
    ids = {int(r[0]) for r in rows}
    missing = ledger.acked - ids
    assert not missing, f"{len(missing)} acknowledged transfers are missing, e.g. {sorted(missing)[:10]}"
    assert not (ledger.failed & ids), "a transfer answered as failed was applied"
    assert ids <= ledger.acked | ledger.unknown, "the ledger holds transfers nobody sent"
    assert sum(balances.values()) == accounts * balance, "money was created or destroyed"
    expected = Counter({a: balance for a in range(accounts)})
    for _id, frm, to, amount in rows:
        expected[int(frm)] -= int(amount)
        expected[int(to)] += int(amount)
    assert balances == dict(expected), "balances do not match the ledger"
    return len(ids)


@dataclass
class CliResult:
    """What one ``orrery`` command did."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> CliResult:
        """Self, after asserting the command succeeded."""
        assert self.returncode == 0, f"{' '.join(self.argv[2:])} exited {self.returncode}:\n{self.stdout}{self.stderr}"
        return self


async def cli(data_dir: Path, *args: str, timeout: float = 300.0) -> CliResult:
    """``python -m orrery cluster <args> --data-dir <data_dir>`` (without blocking the loop)."""
    argv = [sys.executable, "-m", "orrery", "cluster", *args, "--data-dir", str(data_dir)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return CliResult(argv, proc.returncode, out.decode(), err.decode())


def assert_one_writer_per_epoch(root: Path, ident: Identity, replicas: int = 3) -> None:
    """Replicas that hold a record of the same epoch at the same offset hold the same record:
    two leaders never wrote in one epoch (their records would differ). Reads the commit logs
    under the local cluster's directory ``root``: run it once the cluster is down."""
    logs: dict[str, dict[int, tuple[int, bytes]]] = {}
    for clog_dir in sorted(root.glob(f"nodes/*/databases/{ident.to_hex()}/clog")):
        node = clog_dir.parts[-4]
        with CommitLog.open(clog_dir) as log:
            logs[node] = {r.offset: (r.epoch, r.payload) for r in log.read_from(log.first_offset)}
    assert len(logs) >= replicas, f"replicas found: {sorted(logs)}"
    nodes = sorted(logs)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            for offset in logs[a].keys() & logs[b].keys():
                ea, pa = logs[a][offset]
                eb, pb = logs[b][offset]
                if ea == eb:
                    assert pa == pb, f"epoch {ea} has two different records at offset {offset} ({a} vs {b})"


async def cluster_status(data_dir: Path) -> dict[str, Any]:
    """``orrery cluster status --json``, parsed."""
    doc: dict[str, Any] = json.loads((await cli(data_dir, "status", "--json")).ok().stdout)
    return doc


async def verify(data_dir: Path, db: str) -> str:
    """``orrery cluster verify`` must say every replica agrees; its output."""
    out = (await cli(data_dir, "verify", db)).ok().stdout
    assert "all replicas agree" in out, out
    return out
