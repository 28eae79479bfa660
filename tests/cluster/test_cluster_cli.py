"""``orrery cluster up`` as a user runs it: ``python -m orrery cluster up --nodes 3 --data-dir D
--listen-addr 127.0.0.1:0`` in the foreground. It prints where each process is, writes
``D/cluster.json`` (whose ``argv`` restarts a process with its data), ``orrery cluster status``
shows the nodes and replicas as a table and as JSON, and Ctrl-C (SIGINT) stops every process.

Under bank load (tests/cluster/bank_load.py) the leader's host node is killed (SIGKILL) and
restarted from its ``argv``: it rejoins as a follower and catches up, and afterwards every
acknowledged transfer is there and every replica agrees.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.bank_load import BankLoad, Ledger, check_bank, cli, verify
from tests.cluster.harness import MODULES, eventually, run_async
from tests.servers import Client

pytestmark = pytest.mark.slow

ACCOUNTS = 10
BALANCE = 1_000
#: Generous bounds for broken code, not speed expectations.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class ClusterUp:
    """``orrery cluster up`` as a child process, its stdout read line by line."""

    def __init__(self, data_dir: Path, nodes: int) -> None:
        self.data_dir = data_dir
        self.argv = [
            sys.executable, "-m", "orrery", "cluster", "up", "--nodes", str(nodes), "--data-dir", str(data_dir),
            "--listen-addr", "127.0.0.1:0",
        ]  # fmt: skip
        self.stderr = data_dir.parent / "cluster-up.stderr"
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.printed: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start it (stdout piped, as when a user pipes it; nothing forces line buffering)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        env["ORRERY_CONFIG"] = str(self.data_dir.parent / "cli.toml")
        with open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True, env=env
            )
        stdout = self.proc.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True, name="cluster-up-stdout").start()

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> list[str]:
        """Every line printed so far, once one contains ``text``."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.printed):
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"`cluster up` did not print {text!r}; it printed {self.printed}\n{self.err()}") from None
            if line is None:
                raise AssertionError(f"`cluster up` exited before printing {text!r}: {self.printed}\n{self.err()}")
            self.printed.append(line)
        return self.printed

    def err(self) -> str:
        """What it wrote on stderr."""
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT, then its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL (cleanup after a failure)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited: only its parent has not reaped it yet.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _check_shape(doc: dict[str, Any], nodes: int) -> None:
    """``cluster.json`` holds at least the documented keys, with values of the right kinds."""

    def entry(e: dict[str, Any], **kinds: type) -> None:
        for key, kind in {**kinds, "pid": int, "argv": list}.items():
            assert isinstance(e.get(key), kind), f"{key} of {e}"
        assert e["pid"] > 0 and all(isinstance(a, str) for a in e["argv"]) and e["argv"]

    entry(doc["gateway"], url=str)
    entry(doc["etcd"], endpoints=str)
    entry(doc["controlplane"], address=str)
    assert isinstance(doc["nodes"], list) and len(doc["nodes"]) == nodes
    for n in doc["nodes"]:
        entry(n, id=str, address=str)
    assert doc["gateway"]["url"].startswith("http://127.0.0.1:") and not doc["gateway"]["url"].endswith(":0")
    assert len({n["id"] for n in doc["nodes"]}) == nodes


def _check_secret(data_dir: Path, doc: dict[str, Any]) -> None:
    """``up`` wrote the cluster secret (owner-only) and gave it to every Orrery process; the
    control plane answers ``cluster status`` only with it."""
    secret = data_dir / "cluster-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}\n", secret.read_text())
    for entry in [doc["gateway"], doc["controlplane"], *doc["nodes"]]:
        assert entry["argv"][entry["argv"].index("--cluster-secret-file") + 1] == str(secret), entry["argv"]
    env = {k: v for k, v in os.environ.items() if k != "ORRERY_CLUSTER_SECRET_FILE"}
    status = [sys.executable, "-m", "orrery", "cluster", "status", "--controlplane", doc["controlplane"]["address"]]
    missing = subprocess.run(status, capture_output=True, text=True, env=env, timeout=STOP_TIMEOUT)
    assert missing.returncode != 0 and "no cluster secret: pass --cluster-secret-file" in missing.stderr, missing
    other = data_dir.parent / "other-secret"
    other.write_text("ab" * 32)
    wrong = subprocess.run([*status, "--cluster-secret-file", str(other)], capture_output=True, text=True, env=env, timeout=STOP_TIMEOUT)
    assert wrong.returncode != 0 and "UNAUTHENTICATED" in wrong.stderr, wrong
    right = subprocess.run([*status, "--cluster-secret-file", str(secret)], capture_output=True, text=True, env=env, timeout=STOP_TIMEOUT)
    assert right.returncode == 0, right


def test_cluster_processes_refuse_to_start_without_the_secret(tmp_path: Path) -> None:
    """A gateway, control plane or host node without ``--cluster-secret-file`` (or
    ``ORRERY_CLUSTER_SECRET_FILE``) exits at once with a usage error naming both."""
    env = {k: v for k, v in os.environ.items() if k != "ORRERY_CLUSTER_SECRET_FILE"}
    etcd = ["--etcd", f"lmdb:{tmp_path / 'meta.lmdb'}"]
    for command in (
        ["gateway", *etcd, "--keys-dir", str(tmp_path / "keys")],
        ["controlplane", *etcd],
        ["hostnode", *etcd, "--node-id", "node-1", "--data-dir", str(tmp_path / "node")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "orrery", *command], capture_output=True, text=True, env=env, timeout=STOP_TIMEOUT
        )
        assert done.returncode == 2, (command, done)
        assert "no cluster secret: pass --cluster-secret-file PATH or set ORRERY_CLUSTER_SECRET_FILE" in done.stderr, done
    assert not (tmp_path / "node").exists() and not (tmp_path / "keys").exists()


def _all_pids(doc: dict[str, Any]) -> list[int]:
    return [doc["gateway"]["pid"], doc["etcd"]["pid"], doc["controlplane"]["pid"], *(n["pid"] for n in doc["nodes"])]


async def _wait_status(data_dir: Path, check: Any, what: str, timeout: float = 90.0) -> dict[str, Any]:
    """``cluster status --json`` once ``check(doc)`` holds."""
    last: list[dict[str, Any]] = []

    async def ok() -> bool:
        result = await cli(data_dir, "status", "--json")
        if result.returncode != 0:
            return False
        doc = json.loads(result.stdout)
        last[:] = [doc]
        return bool(check(doc))

    try:
        await eventually(ok, timeout, what)
    except AssertionError:
        raise AssertionError(f"timed out waiting for {what}; status: {last}") from None
    return last[0]


def _bank_status(doc: dict[str, Any]) -> dict[str, Any] | None:
    return next((d for d in doc["databases"] if "bank" in d["names"]), None)


def _settled(doc: dict[str, Any], nodes: int) -> bool:
    """Every node alive, the bank database with a leader and every replica caught up."""
    db = _bank_status(doc)
    return (
        all(n["alive"] for n in doc["nodes"]) and len(doc["nodes"]) == nodes and db is not None
        and sorted(r["role"] for r in db["replicas"]) == ["follower", "follower", "leader"]
        and all(r["lag"] == 0 for r in db["replicas"])
    )  # fmt: skip


async def _exercise(up: ClusterUp, doc: dict[str, Any], restarted: list[subprocess.Popen[bytes]]) -> None:
    """Load, a killed and restarted leader node, status and verify. The processes it restarts go
    into ``restarted`` at once, so the caller stops them whether or not this succeeds."""
    data_dir = up.data_dir
    url = doc["gateway"]["url"]
    ledger = Ledger()
    async with Client(url) as c:
        _identity, token = await c.new_identity()
        reply = await c.post(
            "/v1/database/bank", data=(MODULES / "bank" / "bank.wasm").read_bytes(), token=token,
            params={"num_replicas": "3"},
        )  # fmt: skip
        assert reply.status == 200, reply
        assert (await c.call("bank", "seed", ACCOUNTS, BALANCE, token=token)).status == 200
        status = await _wait_status(data_dir, lambda d: _settled(d, 3), "three caught-up replicas")
        bank = _bank_status(status)
        assert bank is not None and set(bank) >= {"identity", "names", "epoch", "replicas"}
        for r in bank["replicas"]:
            assert set(r) >= {"node", "role", "durable_offset", "lag"}, r
        leader = next(r["node"] for r in bank["replicas"] if r["role"] == "leader")
        node = next(n for n in doc["nodes"] if n["id"] == leader)
        async with BankLoad(url, "bank", token, ledger, accounts=ACCOUNTS) as load:
            await load.acked_more(20)
            os.kill(node["pid"], signal.SIGKILL)
            await _wait_status(
                data_dir,
                lambda d: any(r["role"] == "leader" and r["node"] != leader for r in (_bank_status(d) or {}).get("replicas", [])),
                "another leader",
            )  # fmt: skip
            await load.acked_more(len(ledger.acked), what="transfers after the leader died")
            # The exact command in cluster.json brings the node back with its data.
            with open(data_dir / "logs" / f"{leader}.log", "ab") as log:
                restarted.append(
                    subprocess.Popen(node["argv"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
                )  # fmt: skip
            await _wait_status(
                data_dir,
                lambda d: _settled(d, 3) and any(r["node"] == leader and r["role"] == "follower" for r in _bank_status(d)["replicas"]),  # type: ignore[index]
                f"{leader} back as a caught-up follower",
            )  # fmt: skip
            await load.acked_more(len(ledger.acked), what="transfers after the node came back")
        await _wait_status(data_dir, lambda d: _settled(d, 3), "three caught-up replicas after the load")
        await verify(data_dir, "bank")
        committed = await check_bank(c, "bank", token, ledger, accounts=ACCOUNTS, balance=BALANCE)
        # The table: every node alive, the database with its names, epoch and replicas.
        table = (await cli(data_dir, "status")).ok().stdout
        for n in doc["nodes"]:
            assert re.search(rf"^{re.escape(n['id'])}\s+{re.escape(n['address'])}\s+yes$", table, re.M), table
        assert re.search(rf"^database {bank['identity']}\s+names: bank\s+epoch: \d+$", table, re.M), table
        assert len(re.findall(r"^  node-\d+\s+(leader|follower)\s+\d+\s+0$", table, re.M)) == 3, table
    print(f"\ncluster up: {committed} transfers committed, {len(ledger.acked)} acknowledged; refusals {dict(ledger.refusals)}")


def test_cluster_up_as_a_user_runs_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    up = ClusterUp(data_dir, nodes=3)
    restarted: list[subprocess.Popen[bytes]] = []
    doc: dict[str, Any] = {}
    try:
        up.start()
        printed = up.wait_for("Ctrl-C stops the cluster.")
        doc = json.loads((data_dir / "cluster.json").read_text())
        _check_shape(doc, nodes=3)
        _check_secret(data_dir, doc)
        # It says where each process is.
        text = "\n".join(printed)
        assert f"{doc['etcd']['endpoints']}  (pid {doc['etcd']['pid']}; metrics {doc['etcd']['metrics']})" in text, text
        assert f"{doc['controlplane']['address']}  (pid {doc['controlplane']['pid']}; metrics {doc['controlplane']['metrics']})" in text, text
        assert f"{doc['gateway']['url']}  (pid {doc['gateway']['pid']}; metrics {doc['gateway']['metrics']})" in text, text
        for n in doc["nodes"]:
            assert f"{n['id']} at {n['address']}  (pid {n['pid']}; metrics {n['metrics']})" in text, text
        assert all(_pid_alive(p) for p in _all_pids(doc))
        run_async(_exercise(up, doc, restarted), timeout=600)
        # Ctrl-C stops everything it started; the node restarted by hand is the user's to stop.
        assert up.interrupt() == 0, up.err()
        for pid in _all_pids(doc):
            assert not _pid_alive(pid), f"pid {pid} outlived `cluster up`"
        for p in restarted:
            p.send_signal(signal.SIGTERM)
            assert p.wait(STOP_TIMEOUT) == 0
    finally:
        up.kill()
        for p in restarted:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()
        for pid in _all_pids(doc) if doc else []:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
