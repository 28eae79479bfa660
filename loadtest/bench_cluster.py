"""Cluster benchmark (issue 9 item 9): the cluster's figures, measured through the gateway.

Every phase starts its own :class:`~orrery.cluster_local.LocalCluster` (etcd, one control plane,
host nodes and a gateway, each a real process on 127.0.0.1, what ``orrery cluster up`` runs) in
a temporary directory under ``--dir`` (``/var/tmp``: disk, like a real deployment), with the
cluster's default node lease TTL of 2 s unless ``--lease-ttl`` says otherwise (below 2 s, add
``--fast-etcd``: etcd with its default timings grants no lease shorter than 2 s), and stops it on
every exit path. Phases (``--phase``, repeatable; all by default):

1. **throughput** (3 nodes): ``modules/transfer`` published twice, at R=1 and at R=3, each
   seeded with ``--accounts`` accounts; then ``--conns`` BSATN WebSocket connections through the
   gateway, each keeping ``--inflight`` ``transfer(from, to, 1)`` calls (uniform) outstanding
   with ``confirmed=true`` (an answer only once the commit is durable: on a majority at R=3),
   for ``--seconds`` after a ``--warmup``, R=1 then R=3 back to back (the order alternates over
   ``--rounds``). The load generator is bench_ws's (:func:`loadtest.bench_ws.reducer_load`).
   Reports calls/s, p50/p99 latency, R=3/R=1, and CPU µs per call of each server process
   (gateway, leader, followers, etcd, control plane; from ``/proc/<pid>/stat``).
2. **failover** (3 nodes): a ``transfer`` database at R=3 under light HTTP load; ``--kills``
   times: wait until all three replicas are caught up, SIGKILL the leader (after a random pause
   of up to a third of the lease TTL, so kills land anywhere in the keepalive cycle), and time
   kill → first committed write through the gateway: a probe ``/call`` starts every
   ``--probe-interval`` with a ``--probe-timeout`` client timeout, and the first 200 answer
   counts. Polling etcd every 20 ms splits that time into the node's lease gone, the record's
   new epoch (election started) and the new leader in the record. The killed node is
   restarted each time.
3. **catchup** (4 nodes): a ``modules/quickstart-chat`` database at R=3 filled with
   ``--catchup-mb`` of messages (``--message-kb`` each, random text; at most
   ``--catchup-load-seconds``), then ``AddReplica`` onto the empty node: seconds until the new
   replica's durable offset reaches the leader's (``ClusterStatus``, the data of ``orrery cluster
   status --json``, polled every 100 ms), MB/s (bytes the new replica holds) and records/s. A
   new replica starts from an LMDB snapshot; to time the log-streaming path as well, one
   follower is then killed, ``--rejoin-seconds`` of small messages are written, and the time
   from its restart to caught up is measured too.
4. **databases** (3 nodes): ``--databases`` quickstart-chat databases published one after the
   other at R=3 (``--db-replicas``): publish latency p50/p99, leaders per node, and each host
   node's RSS before and after (settled), divided by the replicas it holds, with its idle CPU
   over ``--idle-seconds``.

``--thread-cpu`` adds, for each throughput run, the CPU per call of each kind of thread (event
loop, database thread, follower thread, fsync thread, gRPC) of the gateway and every replica;
``--profile DIR`` records them with py-spy.

Each phase prints a CPU probe at its start and end: a fixed pure-Python loop in this process,
best and median of 5 (on a quiet machine the two agree; a busy machine shows in the median and
in the "other CPU" column: what processes outside the cluster and the load generator used).
Everything is bounded in count and time; only 127.0.0.1 is contacted.

Usage: ``python -m loadtest.bench_cluster [--phase throughput] [--rounds 3] [--seconds 10]
[--kills 20] [--lease-ttl 1 --fast-etcd] [--thread-cpu] [--json out.json]`` (``make bench``). Exit status 1 when an answer
was not the expected one or a failover did not complete.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from clustermeta.connect import open_metastore
from clustermeta.metastore import MetaStore
from clustermeta.records import DatabaseRecord, db_key, node_key
from loadtest.bench_http import (
    _start_profiler,
    _stop_profiler,
    finish,
    machine_info,
    percentile,
    process_cpu_seconds,
)
from loadtest.bench_ws import CHAT_WASM, TRANSFER_WASM, LoadStats, reducer_load
from loadtest.bench_ws import BenchConfig as WsConfig
from orrery.cluster_local import ETCD_PREFIX, LocalCluster
from sats.identity import Identity
from tests.servers import Client

if TYPE_CHECKING:  # gRPC and the generated code load on use
    from proto.auth import ClusterSecret

__all__ = [
    "PHASES",
    "CatchupStats",
    "ClusterBenchConfig",
    "CpuProbe",
    "DatabasesStats",
    "FailoverStats",
    "Report",
    "cpu_probe",
    "probe_text",
    "main",
    "run_benchmark",
]

T = TypeVar("T")

PHASES = ("throughput", "failover", "catchup", "databases")
BALANCE = 1_000_000_000
FAILOVER_ACCOUNTS = 1_000
#: Work of one CPU probe run: a fixed pure-Python loop (about 20 ms on this kind of machine).
PROBE_ITERATIONS = 500_000
PROBE_REPEATS = 5
#: How often the failover watcher reads the record and the node key from etcd.
WATCH_INTERVAL = 0.02
#: How often the catch-up phase asks for the cluster status.
STATUS_INTERVAL = 0.1
#: A replica counts as caught up between kills when it is this few records behind the leader
#: (the light load keeps a few in flight).
HEALTHY_LAG = 64


class BenchError(RuntimeError):
    """The cluster did not do what the benchmark needs (a publish failed, no leader, ...)."""


@dataclass
class ClusterBenchConfig:
    """What to run; the defaults are the ``make bench`` figures (the shapes issue 9 names)."""

    phases: tuple[str, ...] = PHASES
    data_parent: str = "/var/tmp"
    #: Lease TTL of every host node and the control plane (the cluster's default is 2 s).
    lease_ttl: float = 2.0
    #: etcd with a 10 ms heartbeat and 100 ms election timeout (what the cluster tests run)
    #: instead of its defaults (100 ms / 1 s). etcd grants no lease shorter than 1.5 election
    #: timeouts, rounded up to whole seconds: 2 s with its defaults, so a 1 s TTL needs this.
    fast_etcd: bool = False
    seed: int = 7
    # throughput
    seconds: float = 10.0
    warmup: float = 2.0
    conns: int = 64
    inflight: int = 40
    accounts: int = 100_000
    rounds: int = 1
    # failover
    kills: int = 20
    probe_interval: float = 0.05
    probe_timeout: float = 1.0
    #: Background /call transfers per second during the failover phase (two workers).
    light_load_rate: float = 40.0
    #: Longest a single failover may take before the phase gives up.
    failover_timeout: float = 60.0
    # catchup
    catchup_mb: float = 256.0
    catchup_load_seconds: float = 60.0
    message_kb: int = 64
    catchup_timeout: float = 600.0
    rejoin_seconds: float = 10.0
    rejoin_message_bytes: int = 100
    # databases
    databases: int = 300
    #: Replicas of each of those databases (1 gives the cost of a leader replica alone).
    db_replicas: int = 3
    settle_seconds: float = 5.0
    idle_seconds: float = 10.0
    #: CPU per call of each thread of the gateway and the replicas in the throughput runs (thread
    #: names from one ``py-spy dump`` each; needs py-spy on PATH or in the venv).
    thread_cpu: bool = False
    #: Keep each cluster's directory (data and logs) instead of removing it.
    keep: bool = False
    #: py-spy (``record``, 200 Hz) of the gateway and the replicas during each measured throughput run.
    profile: Path | None = None

    def validate(self) -> None:
        """Raise ValueError on settings the phases cannot run with."""
        unknown = set(self.phases) - set(PHASES)
        if unknown or not self.phases:
            raise ValueError(f"--phase must be among {', '.join(PHASES)}")
        if self.accounts < 2:
            raise ValueError("--accounts must be at least 2")
        positive = {
            "--seconds": self.seconds, "--conns": self.conns, "--inflight": self.inflight, "--rounds": self.rounds,
            "--kills": self.kills, "--probe-interval": self.probe_interval, "--probe-timeout": self.probe_timeout,
            "--catchup-mb": self.catchup_mb, "--message-kb": self.message_kb, "--databases": self.databases,
            "--lease-ttl": self.lease_ttl, "--rejoin-seconds": self.rejoin_seconds,
        }  # fmt: skip
        bad = [k for k, v in positive.items() if v <= 0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive")


@dataclass
class CpuProbe:
    """Milliseconds of the fixed loop (best and median of its runs) and the load average then."""

    best_ms: float
    median_ms: float
    loadavg: list[float] | None


@dataclass
class PhaseProbes:
    """The CPU probe at the start and at the end of one phase."""

    start: CpuProbe
    end: CpuProbe | None = None


@dataclass
class ThroughputRun:
    """One measured load at one replication factor."""

    replicas: int
    round: int
    load: LoadStats
    #: With ``thread_cpu``: process → kind of thread → CPU seconds during the run.
    threads_cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Kill:
    """One leader kill: seconds from the SIGKILL to each event (None: not seen)."""

    index: int
    killed: str
    new_leader: str | None
    #: The killed node's ``/nodes`` key gone from etcd (its lease expired).
    lease_gone_s: float | None
    #: The record at a higher epoch (the control plane started the election).
    election_s: float | None
    #: The record naming the new leader.
    elected_s: float | None
    #: The first probe answered 200 (None: none within ``failover_timeout``).
    first_commit_s: float | None
    probes: int


@dataclass
class FailoverStats:
    """Every kill of the failover phase and what the clients were answered."""

    lease_ttl: float
    fast_etcd: bool
    kills: list[Kill]
    probe_statuses: dict[str, int]
    load_statuses: dict[str, int]

    @property
    def ok(self) -> bool:
        """Every kill ended in a committed write."""
        return bool(self.kills) and all(k.first_commit_s is not None for k in self.kills)


@dataclass
class CatchupStats:
    """The new replica's catch-up (snapshot + log tail) and a follower's rejoin (log stream)."""

    new_node: str
    fill: LoadStats
    fill_bytes: int
    #: The leader's durable offset when the replica was added (records it had to cover).
    records: int
    leader_lmdb_bytes: int
    leader_clog_bytes: int
    #: Seconds from AddReplica to: the replica holding data, its lag 0, AddReplica's answer.
    first_progress_s: float | None
    caught_up_s: float | None
    promoted_s: float | None
    #: The offset of the leader's snapshot the replica started from (None: it got the whole log).
    snapshot_offset: int | None
    new_lmdb_bytes: int
    new_clog_bytes: int
    steps: list[str]
    rejoin: RejoinStats | None = None

    @property
    def received_bytes(self) -> int:
        """What the new replica was sent: its log, plus the LMDB snapshot when it got one."""
        return self.new_clog_bytes + (0 if self.snapshot_offset is None else self.new_lmdb_bytes)

    @property
    def ok(self) -> bool:
        """The replica caught up, and every fill call was answered as committed."""
        return self.caught_up_s is not None and self.fill.bad_answers == 0 and (
            self.rejoin is None or self.rejoin.ok
        )


@dataclass
class RejoinStats:
    """A follower that was down while ``records`` were written, restarted: the log-stream path."""

    node: str
    fill: LoadStats
    records: int
    #: Bytes its commit log grew by (what was streamed to it; meaningless after a snapshot).
    clog_bytes: int
    #: Seconds from the restart to the node answering, and from then to caught up.
    restart_s: float
    caught_up_s: float | None
    via_snapshot: bool

    @property
    def ok(self) -> bool:
        """It caught up, and every call was answered as committed."""
        return self.caught_up_s is not None and self.fill.bad_answers == 0


@dataclass
class NodeMemory:
    """One host node before and after the databases were published."""

    node: str
    replicas: int
    leaders: int
    rss_before_mb: float
    rss_after_mb: float
    threads_before: int
    threads_after: int
    #: Share of one core the node used while every database sat idle.
    idle_cpu_pct: float


@dataclass
class DatabasesStats:
    """Publishing many small databases at R=``replicas``."""

    databases: int
    replicas: int
    published: int
    #: Publish latencies in publish order.
    publish_ms: list[float]
    total_s: float
    failures: list[str]
    nodes: list[NodeMemory]
    #: RSS (MB) before → after of the other processes.
    others_rss_mb: dict[str, tuple[float, float]]
    others_idle_cpu_pct: dict[str, float]

    @property
    def ok(self) -> bool:
        """Every publish answered 200."""
        return self.published == self.databases


@dataclass
class Report:
    """Everything one run measured."""

    machine: dict[str, Any]
    config: dict[str, Any]
    probes: dict[str, PhaseProbes] = field(default_factory=dict)
    throughput: list[ThroughputRun] = field(default_factory=list)
    failover: FailoverStats | None = None
    catchup: CatchupStats | None = None
    databases: DatabasesStats | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No wrong answer in any phase that ran."""
        return (
            all(r.load.bad_answers == 0 and r.load.calls > 0 for r in self.throughput)
            and (self.failover is None or self.failover.ok)
            and (self.catchup is None or self.catchup.ok)
            and (self.databases is None or self.databases.ok)
        )


# --- measuring the machine and the processes -----------------------------------------------------


def cpu_probe(iterations: int = PROBE_ITERATIONS, repeats: int = PROBE_REPEATS) -> CpuProbe:
    """Time a fixed pure-Python loop: how fast this machine runs Python right now."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = 0
        for i in range(iterations):
            x += i * i
        times.append(time.perf_counter() - t0)
    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return CpuProbe(min(times) * 1e3, statistics.median(times) * 1e3, load)


def probe_text(p: CpuProbe) -> str:
    """A probe as the reports print it: best, median and the load average then."""
    load = "n/a" if p.loadavg is None else "/".join(f"{v:.2f}" for v in p.loadavg)
    return f"{p.best_ms:.1f} ms (median {p.median_ms:.1f}, load average {load})"


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (0 when it cannot be read)."""
    return _status_field(pid, "VmRSS:") / 1024


def threads(pid: int) -> int:
    """Threads of a process (0 when it cannot be read)."""
    return int(_status_field(pid, "Threads:"))


def _status_field(pid: int, name: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def file_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (their sizes; 0 when it does not exist)."""
    total = 0
    for p in path.rglob("*") if path.is_dir() else []:
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


def segment_sizes(clog: Path) -> dict[str, int]:
    """Size of every commit-log segment file in ``clog`` (by name)."""
    out = {}
    for p in clog.glob("*.log") if clog.is_dir() else []:
        with contextlib.suppress(OSError):
            out[p.name] = p.stat().st_size
    return out


def log_growth(before: dict[str, int], after: dict[str, int]) -> int:
    """Bytes appended to a commit log between two :func:`segment_sizes` readings: segments
    deleted in between held only older records, so only the ones still there count."""
    return sum(after.values()) - sum(size for name, size in before.items() if name in after)


def first_segment_base(clog: Path) -> int | None:
    """The offset of the first record the log holds (its first segment's name), None if empty."""
    bases = [int(p.stem) for p in clog.glob("*.log") if p.stem.isdigit()] if clog.is_dir() else []
    return min(bases) if bases else None


def role_pids(cluster: LocalCluster, database: dict[str, Any]) -> dict[str, int]:
    """Every process of the cluster by its role for ``database`` (a ``ClusterStatus`` entry)."""
    holders = {r["node"] for r in database["replicas"]}
    pids = {"gateway": cluster.procs["gateway"].pid}
    for node in cluster.node_ids():
        role = "leader" if node == database["leader"] else "follower" if node in holders else "idle"
        pids[f"{role} {node}"] = cluster.procs[node].pid
    pids["etcd"] = cluster.procs["etcd"].pid
    pids["control plane"] = cluster.procs["controlplane"].pid
    return pids


def replica_dir(cluster: LocalCluster, node: str, identity: str) -> Path:
    """Where ``node`` keeps its replica of the database ``identity`` (hex)."""
    return cluster.dir / "nodes" / node / "databases" / identity


#: Kinds of threads, by the Python name of the thread (first match wins).
THREAD_KINDS = (
    ("db-", "database thread (reducers, LMDB)"),
    ("follow-", "follower thread (append, apply)"),
    ("commitlog-sync", "fsync thread"),
    ("sync-", "fsync thread"),
    ("MainThread", "event loop (gRPC streams, WebSockets)"),
    ("Thread-", "gRPC poller"),
)
NATIVE_THREADS = "threads without Python frames (gRPC core, ...)"


def py_spy() -> str | None:
    """The py-spy executable (on PATH or beside this interpreter), None when there is none."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


def python_thread_names(pid: int) -> dict[int, str]:
    """OS thread id → Python thread name of a running Python process (one ``py-spy dump``)."""
    exe = py_spy()
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True,
                             timeout=60, check=False).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(m[1]): m[2] for m in re.finditer(r'^Thread (\d+) \([^)]*\): "(.*)"', out, re.M)}


def thread_kind(name: str | None) -> str:
    """The kind of a thread (see :data:`THREAD_KINDS`) from its Python name."""
    if name is None:
        return NATIVE_THREADS
    return next((kind for prefix, kind in THREAD_KINDS if name.startswith(prefix)), "other Python threads")


def threads_cpu(pid: int, names: dict[int, str]) -> dict[str, float]:
    """CPU seconds so far of a process's threads, summed by :func:`thread_kind`."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            kind = thread_kind(names.get(int(task.name)))
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


# --- talking to the cluster ----------------------------------------------------------------------


class ControlPlane:
    """The few control-plane RPCs the benchmark uses (what ``orrery cluster`` calls)."""

    def __init__(self, address: str, secret: ClusterSecret) -> None:
        import grpc

        from proto import auth
        from proto import controlplane_pb2 as cpb
        from proto import controlplane_pb2_grpc as cpb_grpc

        self._pb = cpb
        self._grpc_error = grpc.aio.AioRpcError
        self._channel = auth.channel(address, secret)
        self._stub = cpb_grpc.ControlPlaneStub(self._channel)

    async def status(self, database: str = "") -> dict[str, Any]:
        """The ``orrery cluster status --json`` document (of one database, or all)."""
        resp = await self._stub.ClusterStatus(self._pb.ClusterStatusRequest(name_or_identity=database), timeout=30)
        if resp.failure.kind:
            raise BenchError(f"cluster status: {resp.failure.message}")
        doc: dict[str, Any] = json.loads(resp.json)
        return doc

    async def database(self, name: str) -> dict[str, Any]:
        """One database's status entry (leader, replicas with durable offset and lag)."""
        [db] = (await self.status(name))["databases"]
        return dict(db)

    async def database_or_none(self, name: str) -> dict[str, Any] | None:
        """Like :meth:`database`, None while the control plane cannot answer."""
        try:
            return await self.database(name)
        except (BenchError, self._grpc_error):
            return None

    async def add_replica(self, database: str, node: str, timeout: float) -> list[str]:
        """``AddReplica``: returns the steps once the new replica votes."""
        req = self._pb.ReplicaChangeRequest(name_or_identity=database, to_node=node, timeout_ms=int(timeout * 1000))
        resp = await self._stub.AddReplica(req, timeout=timeout + 10)
        if resp.failure.kind:
            raise BenchError(f"add-replica {database} --to {node}: {resp.failure.message}")
        return list(resp.steps)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


async def publish(c: Client, name: str, program: bytes, token: str, replicas: int) -> Identity:
    """Publish ``program`` as ``name`` at ``replicas`` replicas; its identity."""
    reply = await c.post(f"/v1/database/{name}", data=program, token=token, params={"num_replicas": str(replicas)})
    if reply.status != 200:
        raise BenchError(f"publish {name} (R={replicas}) answered {reply.status}: {reply.body[:300]!r}")
    return Identity.from_hex(reply.json()["Success"]["database_identity"])


async def seed_accounts(c: Client, name: str, accounts: int, token: str) -> None:
    """``seed(accounts, BALANCE)`` on a transfer database."""
    reply = await asyncio.wait_for(c.call(name, "seed", accounts, BALANCE, token=token), 600)
    if reply.status != 200:
        raise BenchError(f"seed {name} answered {reply.status}: {reply.body[:300]!r}")


async def wait_for(check: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something other than None (fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_caught_up(cp: ControlPlane, cluster: LocalCluster, name: str, *, lag: int, voters: int,
                         timeout: float) -> dict[str, Any]:  # fmt: skip
    """Wait until ``name`` has a live leader and ``voters`` replicas on running nodes, each at
    most ``lag`` records behind it (replicas on stopped nodes are left out)."""

    async def check() -> dict[str, Any] | None:
        db = await cp.database_or_none(name)
        if db is None or not db.get("leader") or not cluster.procs[db["leader"]].alive():
            return None
        running = [r for r in db["replicas"] if cluster.procs[r["node"]].alive()]
        if len(running) < voters or any(r["lag"] is None or r["lag"] > lag for r in running):
            return None
        return db

    return await wait_for(check, timeout, f"{name} to have {voters} replicas within {lag} records of its leader")


@contextlib.contextmanager
def local_cluster(cfg: ClusterBenchConfig, nodes: int, tag: str, log: Callable[[str], None]) -> Iterator[LocalCluster]:
    """A fresh cluster in a temporary directory, stopped (and removed unless ``cfg.keep``) on
    every exit path."""
    d = tempfile.mkdtemp(prefix=f"orrery-bench-cluster-{tag}-", dir=cfg.data_parent)
    try:
        cluster = LocalCluster(Path(d) / "cluster", nodes=nodes, listen_addr="127.0.0.1:0", lease_ttl=cfg.lease_ttl,
                               fast_etcd=cfg.fast_etcd)  # fmt: skip
        cluster.up()
        etcd = "fast etcd (10/100 ms)" if cfg.fast_etcd else "etcd defaults"
        log(f"  cluster up: {nodes} host nodes, lease TTL {cfg.lease_ttl:g} s, {etcd}, gateway {cluster.gateway_url}, data {d}")
        try:
            yield cluster
        except BaseException:
            for proc in cluster.procs.values():
                log(f"--- last lines of {proc.name}'s log:\n{proc.log_tail(12)}")
            raise
        finally:
            cluster.down()
    finally:
        if cfg.keep:
            log(f"  kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


def _gateway_host_port(cluster: LocalCluster) -> tuple[str, int]:
    host, port = cluster.gateway_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


# --- 1. throughput -------------------------------------------------------------------------------


def _db_name(replicas: int) -> str:
    return f"bench-cluster-r{replicas}"


async def throughput(cluster: LocalCluster, cfg: ClusterBenchConfig, log: Callable[[str], None]) -> list[ThroughputRun]:
    """R=1 and R=3 transfer databases on one cluster, loaded back to back (module docstring)."""
    host, port = _gateway_host_port(cluster)
    async with Client(cluster.gateway_url) as c:
        _identity, owner = await c.new_identity()
        for r in (1, 3):
            await publish(c, _db_name(r), TRANSFER_WASM.read_bytes(), owner, r)
            await seed_accounts(c, _db_name(r), cfg.accounts, owner)
        tokens = [(await c.new_identity())[1] for _ in range(cfg.conns)]
    log(f"  published and seeded {_db_name(1)} and {_db_name(3)} ({cfg.accounts:,} accounts each)")
    ws_cfg = WsConfig(conns=cfg.conns, inflight=cfg.inflight, accounts=cfg.accounts, seconds=cfg.seconds)
    cp = ControlPlane(cluster.controlplane_address, cluster.secret())
    runs: list[ThroughputRun] = []
    try:
        for rnd in range(cfg.rounds):
            for r in (1, 3) if rnd % 2 == 0 else (3, 1):
                name = _db_name(r)
                db = await wait_caught_up(cp, cluster, name, lag=HEALTHY_LAG, voters=r, timeout=60)
                pids = role_pids(cluster, db)
                common: dict[str, Any] = dict(alpha=None, confirmed=True, server_pids=pids, db=name)
                if cfg.warmup > 0:
                    await reducer_load(host, port, tokens, ws_cfg, seconds=cfg.warmup, label="warm-up",
                                       seed=cfg.seed + 100 + rnd, **common)  # fmt: skip
                log(f"  R={r}: {cfg.conns} conns × {cfg.inflight} in flight, confirmed, {cfg.seconds:g} s ...")
                profilers = []
                if cfg.profile is not None:
                    cfg.profile.mkdir(parents=True, exist_ok=True)
                    for role, pid in pids.items():
                        if role.split()[0] in ("gateway", "leader", "follower"):
                            out = cfg.profile / f"r{r}-round{rnd}-{role.replace(' ', '-')}.txt"
                            profilers.append(_start_profiler(pid, out, cfg.seconds))
                watched = {role: pid for role, pid in pids.items() if role.split()[0] in ("gateway", "leader", "follower")}
                names = {role: python_thread_names(pid) for role, pid in watched.items()} if cfg.thread_cpu else {}
                before = {role: threads_cpu(watched[role], n) for role, n in names.items()}
                try:
                    load = await reducer_load(host, port, tokens, ws_cfg, seconds=cfg.seconds, label=f"R={r}",
                                              seed=cfg.seed + rnd, **common)  # fmt: skip
                finally:
                    for p in profilers:
                        await asyncio.to_thread(_stop_profiler, p, cfg.seconds + 30)
                spent = {}
                for role, n in names.items():
                    after = threads_cpu(watched[role], n)
                    spent[role] = {k: v - before[role].get(k, 0.0) for k, v in after.items()}
                runs.append(ThroughputRun(r, rnd, load, spent))
                log(f"    {load.rate:,.0f} calls/s, p50 {load.p50_ms:.0f} ms, p99 {load.p99_ms:.0f} ms, "
                    f"{load.bad_answers} bad answers")  # fmt: skip
    finally:
        await cp.close()
    return runs


# --- 2. failover ---------------------------------------------------------------------------------

FAILOVER_DB = "bench-cluster-failover"


async def _transfer_call(session: aiohttp.ClientSession, url: str, token: str, rng: random.Random,
                         timeout: float) -> str:  # fmt: skip
    """One ``/call/transfer`` between random accounts; its HTTP status, or the exception's name."""
    a, b = rng.sample(range(FAILOVER_ACCOUNTS), 2)
    try:
        async with session.post(
            f"{url}/v1/database/{FAILOVER_DB}/call/transfer", json=[a, b, 1],
            headers={"Authorization": f"Bearer {token}"}, timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:  # fmt: skip
            await resp.read()
            return str(resp.status)
    except (aiohttp.ClientError, TimeoutError) as e:
        return type(e).__name__


async def _light_load(session: aiohttp.ClientSession, url: str, token: str, stop: asyncio.Event, interval: float,
                      statuses: Counter[str], rng: random.Random) -> None:  # fmt: skip
    while not stop.is_set():
        statuses[await _transfer_call(session, url, token, rng, 10.0)] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def _first_commit(session: aiohttp.ClientSession, url: str, token: str, t0: float, cfg: ClusterBenchConfig,
                        rng: random.Random, statuses: Counter[str]) -> tuple[float | None, int]:  # fmt: skip
    """Start a probe every ``probe_interval`` until one is answered 200: seconds from ``t0``."""
    committed: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        status = await _transfer_call(session, url, token, rng, cfg.probe_timeout)
        statuses[status] += 1
        if status == "200" and not committed:
            committed.append(time.monotonic() - t0)
            done.set()

    tasks: set[asyncio.Task[None]] = set()
    deadline = t0 + cfg.failover_timeout
    try:
        while not done.is_set() and time.monotonic() < deadline:
            task = asyncio.create_task(probe())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), cfg.probe_interval)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return (committed[0] if committed else None), sum(statuses.values())


async def _watch_failover(store: MetaStore, identity: Identity, old_leader: str, old_epoch: int, t0: float,
                          timeout: float) -> tuple[float | None, float | None, float | None, str | None]:  # fmt: skip
    """Poll etcd: seconds from ``t0`` to the node key gone, the new epoch, and a new leader."""
    lease_gone = election = elected = None
    new_leader = None
    deadline = t0 + timeout
    while elected is None and time.monotonic() < deadline:
        if lease_gone is None and await store.get(node_key(old_leader)) is None:
            lease_gone = time.monotonic() - t0
        kv = await store.get(db_key(identity))
        if kv is not None:
            rec = DatabaseRecord.from_json(kv.value)
            now = time.monotonic() - t0
            if rec.epoch > old_epoch and election is None:
                election = now
            if rec.epoch > old_epoch and rec.leader and rec.leader != old_leader:
                elected, new_leader = now, rec.leader
                if lease_gone is None:
                    lease_gone = now
        await asyncio.sleep(WATCH_INTERVAL)
    return lease_gone, election, elected, new_leader


async def failover(cluster: LocalCluster, cfg: ClusterBenchConfig, log: Callable[[str], None]) -> FailoverStats:
    """Kill the leader of an R=3 database ``cfg.kills`` times (module docstring)."""
    url = cluster.gateway_url
    async with Client(url) as c:
        _identity, owner = await c.new_identity()
        identity = await publish(c, FAILOVER_DB, TRANSFER_WASM.read_bytes(), owner, 3)
        await seed_accounts(c, FAILOVER_DB, FAILOVER_ACCOUNTS, owner)
    rng = random.Random(cfg.seed)
    probe_statuses: Counter[str] = Counter()
    load_statuses: Counter[str] = Counter()
    kills: list[Kill] = []
    store = await open_metastore(cluster.etcd_endpoints, ETCD_PREFIX)
    cp = ControlPlane(cluster.controlplane_address, cluster.secret())
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(_light_load(session, url, owner, stop, 2 / cfg.light_load_rate, load_statuses,
                                        random.Random(cfg.seed + n)))  # fmt: skip
        for n in range(2)
    ]
    try:
        for i in range(cfg.kills):
            await wait_caught_up(cp, cluster, FAILOVER_DB, lag=HEALTHY_LAG, voters=3, timeout=120)
            await asyncio.sleep(0.2 + rng.uniform(0, cfg.lease_ttl / 3))
            kv = await store.get(db_key(identity))
            assert kv is not None
            record = DatabaseRecord.from_json(kv.value)
            leader = record.leader
            if leader is None:
                raise BenchError("the database lost its leader before the kill")
            t0 = time.monotonic()
            cluster.procs[leader].kill()
            watcher = asyncio.create_task(
                _watch_failover(store, identity, leader, record.epoch, t0, cfg.failover_timeout)
            )
            statuses: Counter[str] = Counter()
            first, probes = await _first_commit(session, url, owner, t0, cfg, rng, statuses)
            probe_statuses.update(statuses)
            lease_gone, election, elected, new_leader = await watcher
            kill = Kill(i + 1, leader, new_leader, lease_gone, election, elected, first, probes)
            kills.append(kill)
            log(f"  kill {i + 1}/{cfg.kills}: {leader} → {new_leader}: first commit {_s(first)} "
                f"(lease gone {_s(lease_gone)}, election {_s(election)}, elected {_s(elected)}; "
                f"{probes} probes)")  # fmt: skip
            if first is None:
                break
            await asyncio.to_thread(cluster.restart, leader)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await session.close()
        await cp.close()
        await store.close()
    return FailoverStats(cfg.lease_ttl, cfg.fast_etcd, kills, dict(probe_statuses), dict(load_statuses))


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


# --- 3. catch-up ---------------------------------------------------------------------------------

CATCHUP_DB = "bench-cluster-catchup"


def _message_args(size: int, count: int, seed: int) -> list[bytes]:
    """``send_message(text)`` arguments (BSATN): ``count`` distinct random texts of ``size`` bytes
    (random, so no layer can compress them away)."""
    rng = random.Random(seed)
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
    out = []
    for _ in range(count):
        text = bytes(rng.choices(alphabet, k=size))
        out.append(struct.pack("<I", size) + text)
    return out


async def _fill(cluster: LocalCluster, tokens: list[str], *, size: int, budget_bytes: float | None, seconds: float,
                inflight: int, label: str, seed: int) -> tuple[LoadStats, int]:  # fmt: skip
    """Confirmed ``send_message`` calls of ``size`` bytes until ``budget_bytes`` (None: no
    bound) or ``seconds``."""
    host, port = _gateway_host_port(cluster)
    ws_cfg = WsConfig(conns=len(tokens), inflight=inflight, seconds=seconds)
    if budget_bytes is not None:
        ws_cfg.max_calls = max(1, int(budget_bytes // size))
    args = _message_args(size, 64, seed)
    pids = {p.name: p.pid for p in cluster.running()}
    load = await reducer_load(host, port, tokens, ws_cfg, alpha=None, seconds=seconds, confirmed=True,
                              label=label, server_pids=pids, seed=seed, db=CATCHUP_DB,
                              reducer="send_message", call_args=args)  # fmt: skip
    return load, load.calls * size


async def catchup(cluster: LocalCluster, cfg: ClusterBenchConfig, log: Callable[[str], None]) -> CatchupStats:
    """Fill a database, add a replica on the empty node, then time a follower's rejoin."""
    async with Client(cluster.gateway_url) as c:
        _identity, owner = await c.new_identity()
        identity = (await publish(c, CATCHUP_DB, CHAT_WASM.read_bytes(), owner, 3)).to_hex()
        tokens = [owner, *[(await c.new_identity())[1] for _ in range(3)]]
    cp = ControlPlane(cluster.controlplane_address, cluster.secret())
    try:
        db = await cp.database(CATCHUP_DB)
        holders = {r["node"] for r in db["replicas"]}
        new_node = next(n for n in cluster.node_ids() if n not in holders)
        size = cfg.message_kb * 1024
        log(f"  filling {CATCHUP_DB} with up to {cfg.catchup_mb:g} MB of {cfg.message_kb} KB messages "
            f"(at most {cfg.catchup_load_seconds:g} s) ...")  # fmt: skip
        fill, fill_bytes = await _fill(cluster, tokens, size=size, budget_bytes=cfg.catchup_mb * 2**20,
                                       seconds=cfg.catchup_load_seconds, inflight=4, label="fill", seed=cfg.seed)  # fmt: skip
        log(f"    {fill.calls:,} messages ({fill_bytes / 2**20:.0f} MB) in {fill.seconds:.1f} s, "
            f"{fill.bad_answers} bad answers")  # fmt: skip
        db = await wait_caught_up(cp, cluster, CATCHUP_DB, lag=0, voters=3, timeout=120)
        leader = db["leader"]
        records = max(r["durable_offset"] or 0 for r in db["replicas"])
        leader_dir = replica_dir(cluster, leader, identity)
        leader_lmdb, leader_clog = file_bytes(leader_dir / "lmdb"), file_bytes(leader_dir / "clog")
        log(f"  leader {leader}: {records:,} records, LMDB {leader_lmdb / 2**20:.0f} MB, "
            f"log {leader_clog / 2**20:.0f} MB; add-replica --to {new_node} ...")  # fmt: skip

        t0 = time.monotonic()
        op = asyncio.create_task(cp.add_replica(CATCHUP_DB, new_node, cfg.catchup_timeout))
        first_progress = caught_up = promoted = None
        deadline = t0 + cfg.catchup_timeout + 30
        while time.monotonic() < deadline:
            if op.done() and promoted is None:
                promoted = time.monotonic() - t0
            doc = await cp.database_or_none(CATCHUP_DB)
            now = time.monotonic() - t0
            mine = [r for r in (doc or {}).get("replicas", []) if r["node"] == new_node]
            if mine and mine[0]["durable_offset"]:
                if first_progress is None:
                    first_progress = now
                if caught_up is None and mine[0]["lag"] == 0:
                    caught_up = now
            if caught_up is not None and promoted is not None:
                break
            if op.done() and op.exception() is not None:
                break
            await asyncio.sleep(STATUS_INTERVAL)
        steps = await op
        new_dir = replica_dir(cluster, new_node, identity)
        base = first_segment_base(new_dir / "clog")
        stats = CatchupStats(
            new_node=new_node, fill=fill, fill_bytes=fill_bytes, records=records, leader_lmdb_bytes=leader_lmdb,
            leader_clog_bytes=leader_clog, first_progress_s=first_progress, caught_up_s=caught_up,
            promoted_s=promoted, snapshot_offset=base - 1 if base else None,
            new_lmdb_bytes=file_bytes(new_dir / "lmdb"), new_clog_bytes=file_bytes(new_dir / "clog"), steps=steps,
        )  # fmt: skip
        log(f"    caught up after {_s(caught_up)} (data from {_s(first_progress)}, voter after {_s(promoted)})")
        stats.rejoin = await _rejoin(cluster, cp, cfg, identity, tokens, log)
        return stats
    finally:
        await cp.close()


async def _rejoin(cluster: LocalCluster, cp: ControlPlane, cfg: ClusterBenchConfig, identity: str,
                  tokens: list[str], log: Callable[[str], None]) -> RejoinStats:  # fmt: skip
    """Kill a follower, write small records, restart it: time the log-stream catch-up."""
    db = await wait_caught_up(cp, cluster, CATCHUP_DB, lag=0, voters=4, timeout=120)
    leader = db["leader"]
    node = next(r["node"] for r in db["replicas"] if r["node"] != leader)
    before = max(r["durable_offset"] or 0 for r in db["replicas"])
    # Bytes streamed to it: what its own log grows by. A snapshot would replace its directory.
    mine = replica_dir(cluster, node, identity)
    segments_before, inode_before = segment_sizes(mine / "clog"), mine.stat().st_ino
    cluster.procs[node].kill()
    log(f"  rejoin: {node} killed; {cfg.rejoin_seconds:g} s of {cfg.rejoin_message_bytes} B messages ...")
    fill, _ = await _fill(cluster, tokens, size=cfg.rejoin_message_bytes, budget_bytes=None,
                          seconds=cfg.rejoin_seconds, inflight=40, label="rejoin fill", seed=cfg.seed + 1)  # fmt: skip
    after_db = await wait_caught_up(cp, cluster, CATCHUP_DB, lag=0, voters=3, timeout=120)
    after = max(r["durable_offset"] or 0 for r in after_db["replicas"])
    t0 = time.monotonic()
    await asyncio.to_thread(cluster.restart, node)
    restart = time.monotonic() - t0

    async def caught() -> float | None:
        doc = await cp.database_or_none(CATCHUP_DB)
        mine = [r for r in (doc or {}).get("replicas", []) if r["node"] == node]
        ok = mine and mine[0]["durable_offset"] is not None and mine[0]["durable_offset"] >= after
        return time.monotonic() - t0 - restart if ok else None

    caught_up = None
    with contextlib.suppress(BenchError):
        caught_up = await wait_for(caught, cfg.catchup_timeout, f"{node} to catch up", STATUS_INTERVAL)
    via_snapshot = mine.stat().st_ino != inode_before
    clog_bytes = log_growth(segments_before, segment_sizes(mine / "clog"))
    log(f"    {after - before:,} records missed; answering {restart:.2f} s after the restart, caught up "
        f"{_s(caught_up)} later{' (via a snapshot)' if via_snapshot else ''}")  # fmt: skip
    return RejoinStats(node, fill, after - before, clog_bytes, restart, caught_up, via_snapshot)


# --- 4. many databases ---------------------------------------------------------------------------


async def many_databases(cluster: LocalCluster, cfg: ClusterBenchConfig, log: Callable[[str], None]) -> DatabasesStats:
    """Publish ``cfg.databases`` small databases at R=``cfg.db_replicas``; memory and idle CPU per node."""
    nodes = cluster.node_ids()
    others = ["gateway", "etcd", "controlplane"]
    await asyncio.sleep(cfg.settle_seconds)
    before = {n: (rss_mb(cluster.procs[n].pid), threads(cluster.procs[n].pid)) for n in [*nodes, *others]}
    program = CHAT_WASM.read_bytes()
    latencies: list[float] = []
    failures: list[str] = []
    t_start = time.perf_counter()
    async with Client(cluster.gateway_url) as c:
        _identity, owner = await c.new_identity()
        for i in range(cfg.databases):
            t0 = time.perf_counter()
            try:
                await publish(c, f"bench-many-{i:04d}", program, owner, cfg.db_replicas)
            except (BenchError, aiohttp.ClientError, TimeoutError) as e:
                failures.append(str(e)[:300])
                continue
            latencies.append((time.perf_counter() - t0) * 1e3)
            if (i + 1) % 50 == 0:
                log(f"    {i + 1} published ({statistics.median(latencies[-50:]):.0f} ms median of the last 50)")
    total = time.perf_counter() - t_start
    await asyncio.sleep(cfg.settle_seconds)
    after = {n: (rss_mb(cluster.procs[n].pid), threads(cluster.procs[n].pid)) for n in [*nodes, *others]}
    cpu0 = {n: process_cpu_seconds(cluster.procs[n].pid) or 0.0 for n in [*nodes, *others]}
    t0 = time.monotonic()
    await asyncio.sleep(cfg.idle_seconds)
    elapsed = time.monotonic() - t0
    idle = {n: ((process_cpu_seconds(cluster.procs[n].pid) or 0.0) - cpu0[n]) / elapsed * 100 for n in cpu0}
    cp = ControlPlane(cluster.controlplane_address, cluster.secret())
    try:
        doc = await cp.status()
    finally:
        await cp.close()
    replicas: Counter[str] = Counter()
    leaders: Counter[str] = Counter()
    for db in doc["databases"]:
        if not any(name.startswith("bench-many-") for name in db["names"]):
            continue
        for r in db["replicas"]:
            replicas[r["node"]] += 1
        if db["leader"]:
            leaders[db["leader"]] += 1
    node_stats = [
        NodeMemory(n, replicas[n], leaders[n], before[n][0], after[n][0], int(before[n][1]), int(after[n][1]), idle[n])
        for n in nodes
    ]
    return DatabasesStats(
        databases=cfg.databases, replicas=cfg.db_replicas, published=len(latencies), publish_ms=latencies, total_s=total,
        failures=failures[:5], nodes=node_stats, others_rss_mb={n: (before[n][0], after[n][0]) for n in others},
        others_idle_cpu_pct={n: idle[n] for n in others},
    )  # fmt: skip


# --- orchestration -------------------------------------------------------------------------------


def run_benchmark(cfg: ClusterBenchConfig, *, log: Callable[[str], None] = print) -> Report:
    """Run the chosen phases, each on its own cluster."""
    cfg.validate()
    report = Report(machine=machine_info(), config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()})
    report.machine["cpu_probe_iterations"] = PROBE_ITERATIONS

    def phase(name: str, nodes: int, body: Callable[[LocalCluster], Coroutine[Any, Any, None]]) -> None:
        probes = report.probes[name] = PhaseProbes(cpu_probe())
        log(f"{name}: CPU probe {probes.start.best_ms:.1f} ms (median {probes.start.median_ms:.1f}), "
            f"load average {probes.start.loadavg}")  # fmt: skip
        try:
            with local_cluster(cfg, nodes, name, log) as cluster:
                asyncio.run(body(cluster))
        finally:
            probes.end = cpu_probe()

    async def run_throughput(cluster: LocalCluster) -> None:
        report.throughput = await throughput(cluster, cfg, log)

    async def run_failover(cluster: LocalCluster) -> None:
        report.failover = await failover(cluster, cfg, log)

    async def run_catchup(cluster: LocalCluster) -> None:
        report.catchup = await catchup(cluster, cfg, log)

    async def run_databases(cluster: LocalCluster) -> None:
        report.databases = await many_databases(cluster, cfg, log)

    bodies = {"throughput": (3, run_throughput), "failover": (3, run_failover), "catchup": (4, run_catchup),
              "databases": (3, run_databases)}  # fmt: skip
    for name in PHASES:
        if name in cfg.phases:
            nodes, body = bodies[name]
            phase(name, nodes, body)
    cores = report.machine.get("cores") or 1
    for run in report.throughput:
        capacity = run.load.seconds * cores
        if run.load.other_cpu_s is not None and run.load.other_cpu_s > 0.05 * capacity:
            report.notes.append(
                f"R={run.replicas} round {run.round + 1}: other processes used {run.load.other_cpu_s:.1f} CPU-s of "
                f"{capacity:.0f}: the figures are lower and noisier than on an idle machine"
            )
    return report


# --- the report ----------------------------------------------------------------------------------


def _probe_line(name: str, p: PhaseProbes) -> str:
    end = p.end
    load = "n/a" if p.start.loadavg is None else "/".join(f"{v:.2f}" for v in p.start.loadavg)
    tail = "" if end is None else f"; end {end.best_ms:.1f} ms (median {end.median_ms:.1f})"
    return (f"- CPU probe ({name}; {PROBE_ITERATIONS:,}-iteration Python loop, best of {PROBE_REPEATS}): "
            f"start {p.start.best_ms:.1f} ms (median {p.start.median_ms:.1f}){tail}; load average at start {load}")  # fmt: skip


def _us(cpu: float | None, calls: int) -> str:
    return "-" if cpu is None else f"{cpu / max(1, calls) * 1e6:.0f}"


def render_throughput(runs: list[ThroughputRun]) -> list[str]:
    """The throughput table, with CPU per call of each process and the R=3/R=1 ratio."""
    lines = [
        "| R | round | calls | calls/s | p50 ms | p99 ms | max ms | bad | gateway µs/call | leader µs/call "
        "| followers µs/call | etcd + control plane µs/call | load generator µs/call | other CPU-s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        x = run.load
        cpu = x.process_cpu_s

        def role(prefix: str, cpu: dict[str, float] = cpu, calls: int = x.calls) -> str:
            vals = [_us(v, calls) for k, v in sorted(cpu.items()) if k.startswith(prefix)]
            return " / ".join(vals) or "-"

        infra = cpu.get("etcd", 0.0) + cpu.get("control plane", 0.0)
        other = "-" if x.other_cpu_s is None else f"{x.other_cpu_s:.1f}"
        lines.append(
            f"| {run.replicas} | {run.round + 1} | {x.calls:,} | **{x.rate:,.0f}** | {x.p50_ms:.0f} | {x.p99_ms:.0f} "
            f"| {x.max_ms:.0f} | {x.bad_answers} | {role('gateway')} | {role('leader')} | {role('follower')} "
            f"| {_us(infra, x.calls)} | {_us(x.client_cpu_s, x.calls)} | {other} |"
        )
    lines.append("")
    for rnd in sorted({r.round for r in runs}):
        by_r = {r.replicas: r.load for r in runs if r.round == rnd}
        if 1 in by_r and 3 in by_r and by_r[1].rate > 0:
            ratio = by_r[3].rate / by_r[1].rate
            lines.append(f"- round {rnd + 1}: R=3 / R=1 = **{ratio:.2f}** (target ≥ 0.50)")
    lines += render_threads(runs)
    lines.append("")
    for run in runs:
        lines += [f"- R={run.replicas} error: {s}" for s in run.load.error_samples]
        idle = {k: v for k, v in run.load.process_cpu_s.items() if k.startswith("idle")}
        if idle:
            lines.append(f"- R={run.replicas} round {run.round + 1}: idle nodes "
                         + ", ".join(f"{k.split()[1]} {_us(v, run.load.calls)} µs/call" for k, v in sorted(idle.items())))  # fmt: skip
    return lines


def render_threads(runs: list[ThroughputRun]) -> list[str]:
    """CPU µs per call of each kind of thread (rows) in each run (columns); a follower row is
    the mean of the followers."""
    runs = [r for r in runs if r.threads_cpu_s]
    if not runs:
        return []
    cells: dict[tuple[str, str], dict[int, float]] = {}
    for i, run in enumerate(runs):
        for proc, kinds in run.threads_cpu_s.items():
            role = proc.split()[0]
            share = 1 / sum(1 for p in run.threads_cpu_s if p.split()[0] == role)
            for kind, spent in kinds.items():
                cell = cells.setdefault((role, kind), {})
                cell[i] = cell.get(i, 0.0) + spent * share / max(1, run.load.calls) * 1e6
    order = {"gateway": 0, "leader": 1, "follower": 2}
    rows = sorted(cells.items(), key=lambda kv: (order.get(kv[0][0], 9), -max(kv[1].values())))
    lines = [
        "",
        "CPU µs per call by thread (a follower: the mean of the two):",
        "",
        "| process | thread | " + " | ".join(f"R={r.replicas} #{r.round + 1}" for r in runs) + " |",
        "| --- | --- | " + " | ".join("---" for _ in runs) + " |",
    ]
    for (role, kind), by_run in rows:
        if max(by_run.values()) < 1:
            continue
        vals = " | ".join(f"{by_run[i]:.0f}" if i in by_run else "-" for i in range(len(runs)))
        lines.append(f"| {role} | {kind} | {vals} |")
    return lines


def render_failover(f: FailoverStats) -> list[str]:
    """The failover summary table and every kill's time."""

    def stats(vals: list[float | None]) -> tuple[str, str, str]:
        got = sorted(v for v in vals if v is not None)
        if not got:
            return "-", "-", "-"
        return f"{percentile(got, 50):.2f}", f"{percentile(got, 90):.2f}", f"{got[-1]:.2f}"

    lines = [
        "| lease TTL | kills | event after the SIGKILL | p50 s | p90 s | max s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, attr in (("node lease gone (etcd)", "lease_gone_s"), ("election started (new epoch)", "election_s"),
                        ("new leader in the record", "elected_s"), ("**first committed write**", "first_commit_s")):  # fmt: skip
        p50, p90, mx = stats([getattr(k, attr) for k in f.kills])
        ttl = f"{f.lease_ttl:g} s{' (fast etcd)' if f.fast_etcd else ''}"
        lines.append(f"| {ttl} | {len(f.kills)} | {label} | {p50} | {p90} | {mx} |")
    lines.append("")
    lines.append("- first committed write per kill (s): " + ", ".join(_s(k.first_commit_s).removesuffix(" s") for k in f.kills))
    lines.append(f"- probe answers: {dict(sorted(f.probe_statuses.items()))}; light load answers: "
                 f"{dict(sorted(f.load_statuses.items()))}")  # fmt: skip
    failed = [k.index for k in f.kills if k.first_commit_s is None]
    if failed:
        lines.append(f"- **FAILED: no committed write after kill {failed}**")
    return lines


def render_catchup(c: CatchupStats) -> list[str]:
    """The catch-up table: new replica (snapshot + tail) and rejoin (log stream)."""
    mb = 2**20
    lines = [
        "| what | records | MB | seconds | MB/s | records/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    new_bytes = c.received_bytes
    path = "log from offset 0" if c.snapshot_offset is None else "snapshot + log"
    if c.caught_up_s:
        lines.append(
            f"| new replica (add-replica, empty node; {path}) | {c.records:,} | {new_bytes / mb:.0f} | {c.caught_up_s:.1f} "
            f"| **{new_bytes / mb / c.caught_up_s:.1f}** | **{c.records / c.caught_up_s:,.0f}** |"
        )
    r = c.rejoin
    if r is not None and r.caught_up_s:
        lines.append(
            f"| follower rejoining (log stream{', snapshot' if r.via_snapshot else ''}) | {r.records:,} "
            f"| {r.clog_bytes / mb:.1f} | {r.caught_up_s:.1f} | {r.clog_bytes / mb / r.caught_up_s:.1f} "
            f"| {r.records / r.caught_up_s:,.0f} |"
        )
    lines.append("")
    lines.append(
        f"- fill: {c.fill.calls:,} × {c.fill_bytes // max(1, c.fill.calls) // 1024} KB messages through the gateway "
        f"(4 conns × 4 in flight, confirmed) in {c.fill.seconds:.1f} s = {c.fill_bytes / mb / max(c.fill.seconds, 1e-9):.1f} MB/s, "
        f"p50 {c.fill.p50_ms:.0f} ms; leader holds LMDB {c.leader_lmdb_bytes / mb:.0f} MB + log {c.leader_clog_bytes / mb:.0f} MB"
    )
    lines.append(
        f"- new replica on {c.new_node}: LMDB {c.new_lmdb_bytes / mb:.0f} MB + log {c.new_clog_bytes / mb:.1f} MB; "
        f"{'no snapshot (the whole log, LMDB built here)' if c.snapshot_offset is None else f'snapshot at offset {c.snapshot_offset:,}'}; data from {_s(c.first_progress_s)}, caught up {_s(c.caught_up_s)}, "
        f"voter {_s(c.promoted_s)} after AddReplica"
    )
    if r is not None:
        lines.append(
            f"- rejoin of {r.node}: {r.records:,} records ({r.fill.calls:,} messages) written while it was down; "
            f"it answered {r.restart_s:.2f} s after the restart and caught up {_s(r.caught_up_s)} later"
        )
    return lines


def render_databases(d: DatabasesStats) -> list[str]:
    """Publish latency, leaders per node and memory per idle replica."""
    ms = sorted(d.publish_ms)
    lines = [
        "| databases | R | published | publish p50 ms | p99 ms | max ms | total s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {d.databases} | {d.replicas} | {d.published} | **{percentile(ms, 50):.0f}** | **{percentile(ms, 99):.0f}** "
        f"| {(ms[-1] if ms else 0):.0f} | {d.total_s:.0f} |",
        "",
        "| node | replicas | leaders | RSS before MB | RSS after MB | KB per replica | threads before → after | idle CPU % of a core |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in d.nodes:
        per = (n.rss_after_mb - n.rss_before_mb) * 1024 / max(1, n.replicas)
        lines.append(
            f"| {n.node} | {n.replicas} | {n.leaders} | {n.rss_before_mb:.0f} | {n.rss_after_mb:.0f} | **{per:.0f}** "
            f"| {n.threads_before} → {n.threads_after} | {n.idle_cpu_pct:.1f} |"
        )
    lines.append("")
    lines.append("- other processes (RSS before → after MB, idle CPU %): " + ", ".join(
        f"{k} {a:.0f} → {b:.0f}, {d.others_idle_cpu_pct[k]:.1f} %" for k, (a, b) in d.others_rss_mb.items()))  # fmt: skip
    blocks = [d.publish_ms[i : i + 50] for i in range(0, len(d.publish_ms), 50)]
    lines.append("- publish p50 of each 50 in turn (ms): " + ", ".join(f"{statistics.median(b):.0f}" for b in blocks))
    lines += [f"- publish failure: {f}" for f in d.failures]
    return lines


def render(report: Report) -> str:
    """The markdown the benchmark prints."""
    m = report.machine
    lines = [f"machine: {m['cores']} cores ({m['cpu']}), {m['python']}; load generator and cluster share the cores", ""]
    #: (phase whose CPU probe goes with it, title, body)
    sections: list[tuple[str, str, list[str]]] = []
    cfg = report.config
    if report.throughput:
        sections.append(("throughput", f"throughput: transfer, {cfg['conns']} WebSocket conns × {cfg['inflight']} in "
                         f"flight, confirmed, uniform, {cfg['accounts']:,} accounts, {cfg['seconds']:g} s",
                         render_throughput(report.throughput)))  # fmt: skip
    if report.failover is not None:
        sections.append(("failover", "failover: SIGKILL of the leader of an R=3 database", render_failover(report.failover)))
    if report.catchup is not None:
        sections.append(("catchup", "catch-up of a new replica and of a rejoining follower", render_catchup(report.catchup)))
    if report.databases is not None:
        many = report.databases
        sections.append(("databases", f"{many.databases} databases at R={many.replicas} on 3 nodes",
                         render_databases(report.databases)))  # fmt: skip
    for phase, title, body in sections:
        lines += [f"### {title}", "", *body]
        if phase in report.probes:
            lines.append(_probe_line(phase, report.probes[phase]))
        lines.append("")
    lines += [f"- {n}" for n in report.notes]
    if not report.ok:
        lines.append("- **FAILED: some answers were not the expected ones (see above)**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run, print the report (exit 1 when something was wrong)."""
    d = ClusterBenchConfig()
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench_cluster", description=__doc__.splitlines()[0])
    ap.add_argument("--phase", action="append", choices=PHASES, help="run only this phase (repeatable; default all)")
    ap.add_argument("--dir", default=d.data_parent, help="where the temporary cluster directories go (default %(default)s)")
    ap.add_argument("--lease-ttl", type=float, default=d.lease_ttl, help="node lease TTL, s (default %(default)s, the cluster's)")
    ap.add_argument("--fast-etcd", action="store_true",
                    help="etcd heartbeat 10 ms / election 100 ms (needed for a lease TTL below 2 s)")
    ap.add_argument("--seconds", type=float, default=d.seconds)
    ap.add_argument("--warmup", type=float, default=d.warmup)
    ap.add_argument("--conns", type=int, default=d.conns)
    ap.add_argument("--inflight", type=int, default=d.inflight)
    ap.add_argument("--accounts", type=int, default=d.accounts)
    ap.add_argument("--rounds", type=int, default=d.rounds, help="R=1/R=3 pairs (order alternates)")
    ap.add_argument("--kills", type=int, default=d.kills)
    ap.add_argument("--probe-interval", type=float, default=d.probe_interval)
    ap.add_argument("--probe-timeout", type=float, default=d.probe_timeout)
    ap.add_argument("--catchup-mb", type=float, default=d.catchup_mb)
    ap.add_argument("--catchup-load-seconds", type=float, default=d.catchup_load_seconds)
    ap.add_argument("--message-kb", type=int, default=d.message_kb)
    ap.add_argument("--rejoin-seconds", type=float, default=d.rejoin_seconds)
    ap.add_argument("--databases", type=int, default=d.databases)
    ap.add_argument("--db-replicas", type=int, default=d.db_replicas, choices=(1, 2, 3),
                    help="replicas of each of those databases (default %(default)s)")
    ap.add_argument("--settle-seconds", type=float, default=d.settle_seconds)
    ap.add_argument("--idle-seconds", type=float, default=d.idle_seconds)
    ap.add_argument("--profile", type=Path, help="directory for py-spy raw profiles of the throughput runs")
    ap.add_argument("--thread-cpu", action="store_true",
                    help="CPU per call of each kind of thread of the gateway and replicas (needs py-spy)")
    ap.add_argument("--keep", action="store_true", help="keep each cluster's directory (data and logs)")
    ap.add_argument("--json", type=Path, help="also write the report as JSON here")
    a = ap.parse_args(argv)
    cfg = ClusterBenchConfig(
        phases=tuple(a.phase) if a.phase else PHASES, data_parent=a.dir, lease_ttl=a.lease_ttl,
        fast_etcd=a.fast_etcd, seconds=a.seconds,
        warmup=a.warmup, conns=a.conns, inflight=a.inflight, accounts=a.accounts, rounds=a.rounds, kills=a.kills,
        probe_interval=a.probe_interval, probe_timeout=a.probe_timeout, catchup_mb=a.catchup_mb,
        catchup_load_seconds=a.catchup_load_seconds, message_kb=a.message_kb, rejoin_seconds=a.rejoin_seconds,
        databases=a.databases, db_replicas=a.db_replicas, settle_seconds=a.settle_seconds, idle_seconds=a.idle_seconds, profile=a.profile,
        keep=a.keep, thread_cpu=a.thread_cpu,
    )  # fmt: skip
    try:
        cfg.validate()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = run_benchmark(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    return finish(report, render(report), a.json)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
