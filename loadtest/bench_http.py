"""HTTP benchmark: `transfer` calls per second and `/sql` point-query latency through the gateway.

Starts a real standalone Orrery subprocess (``python -m orrery.standalone``) on a free port of
127.0.0.1 over a temporary data directory on disk, publishes ``modules/transfer/transfer.wasm``
under an owner identity, seeds the accounts, then measures:

a. ``POST /v1/database/<name>/call/transfer`` with N concurrent keep-alive clients (one aiohttp
   session, a connector limited to N connections, N worker tasks each looping request → response),
   uniform random accounts, amount 1; bounded by time and by count. Reports requests/s,
   p50/p95/p99 latency and every non-200 answer (none is expected: balances are large). Then
   the same load again with a hand-written keep-alive client per worker (``_StreamHttp``): it
   takes less of the cores the server shares, so it shows more of the server's own rate.
b. ``POST …/sql`` with ``SELECT * FROM accounts WHERE id = <random>``, one query at a time, over
   one keep-alive connection of a minimal blocking HTTP/1.1 client (the server's latency), then
   again with aiohttp's client (what an aiohttp user sees: its client adds ~0.2 ms).
c. (only when uvloop is importable) the load of (a) again with the client on uvloop. The server
   picks uvloop by itself when it can import it, so then both sides run on it.

Traffic goes to 127.0.0.1 only; the server is stopped (SIGTERM, SIGKILL after a timeout) on every
exit path. The client runs on the same machine and competes with the server for the cores: the
report gives the CPU time of both.

Usage: ``python -m loadtest.bench_http [--seconds 10] [--clients 16] [--accounts 100000]``
(``make bench``). Exit status 1 when any answer was not the expected one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.servers import Client, ServerError, StandaloneServer

__all__ = ["BenchConfig", "LoadStats", "Report", "SqlStats", "main", "percentile", "run_benchmark"]

ROOT = Path(__file__).resolve().parent.parent
TRANSFER_WASM = ROOT / "modules" / "transfer" / "transfer.wasm"
DB_NAME = "bench-transfer"
DURATION_HEADER = "spacetime-execution-duration-micros"
#: How many error answers are kept verbatim in the report (all of them are counted).
ERROR_SAMPLES = 5
#: Share of the machine's CPU other processes may use during a phase before the report warns.
OTHER_CPU_WARN = 0.05


@dataclass
class BenchConfig:
    """What to run; the defaults are the ``make bench`` figures."""

    seconds: float = 10.0
    clients: int = 16
    accounts: int = 100_000
    #: Upper bound on the number of /call requests of one load phase (the time bound usually ends it).
    max_calls: int = 1_000_000
    warmup: float = 1.0
    queries: int = 2_000
    sql_seconds: float = 60.0
    balance: int = 1_000_000_000
    #: Call without a token: the gateway then mints an anonymous identity (an ES256 signature) per request.
    anonymous: bool = False
    uvloop: bool = True
    seed: int = 7
    request_timeout: float = 30.0
    seed_timeout: float = 600.0
    stop_timeout: float = 20.0
    data_parent: Path | None = None
    #: py-spy output for the server during the main /call phase (.svg flamegraph, .txt collapsed stacks).
    profile: Path | None = None
    #: Run ``python -m <server_module>`` (same flags as orrery.standalone), e.g. an instrumented variant.
    server_module: str = "orrery.standalone"
    #: Extra command-line arguments of the server (e.g. ``--transport=grpc``).
    server_args: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raise ValueError for settings the benchmark cannot run with."""
        if self.accounts < 2:
            raise ValueError("--accounts must be at least 2 (a transfer needs two distinct accounts)")
        if self.clients < 1 or self.seconds <= 0 or self.max_calls < 1 or self.queries < 1:
            raise ValueError("--clients, --seconds, --max-calls and --queries must be positive")


@dataclass
class LoadStats:
    """One /call load phase."""

    label: str
    loop: str
    clients: int
    seconds: float
    requests: int
    statuses: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    connections_opened: int
    reducer_us_mean: float
    client_cpu_s: float
    server_cpu_s: float | None
    #: CPU seconds used by every other process of the machine during the phase (contention).
    other_cpu_s: float | None
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def non_200(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "200")


@dataclass
class SqlStats:
    """The sequential /sql point-query phase."""

    queries: int
    seconds: float
    statuses: dict[str, int]
    wrong_rows: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    server_us_mean: float
    error_samples: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "200") + self.wrong_rows


@dataclass
class Report:
    """Everything one run measured."""

    machine: dict[str, Any]
    config: dict[str, Any]
    server_pid: int
    seed_seconds: float
    accounts_seeded: int
    loads: list[LoadStats]
    warmup_statuses: dict[str, int]
    sql: SqlStats | None
    #: The same phase with aiohttp's client (the figure a Python aiohttp user sees).
    sql_aiohttp: SqlStats | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every answer was the expected one."""
        bad_warmup = sum(n for status, n in self.warmup_statuses.items() if status != "200")
        return (
            bad_warmup == 0
            and all(load.non_200 == 0 and load.requests > 0 for load in self.loads)
            and self.sql is not None
            and self.sql.failures == 0
            and self.sql.queries > 0
            and (self.sql_aiohttp is None or self.sql_aiohttp.failures == 0)
        )

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for load, raw in zip(self.loads, doc["loads"], strict=True):
            raw["rps"] = load.rps
            raw["non_200"] = load.non_200
        if self.sql is not None:
            doc["sql"]["failures"] = self.sql.failures
        if self.sql_aiohttp is not None:
            doc["sql_aiohttp"]["failures"] = self.sql_aiohttp.failures
        doc["ok"] = self.ok
        return doc


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def finish(report: Any, text: str, json_path: Path | None) -> int:
    """Print a benchmark's rendered ``report``, write it as JSON (with its ``ok``) to ``json_path``
    when given, and return the exit status: 0 when every answer was the expected one."""
    print(text)
    if json_path is not None:
        doc = asdict(report)
        doc["ok"] = report.ok
        json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0 if report.ok else 1


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "aiohttp": aiohttp.__version__,
        # The server runs this interpreter with this environment and uses uvloop when it can import it.
        "server_loop": "uvloop" if _have_uvloop() else "asyncio",
    }


def _have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used so far (every core), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is in user)
    return busy / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- setup ----------------------------------------------------------------------------------------


async def setup(client: Client, cfg: BenchConfig) -> tuple[str, float, int]:
    """Owner identity, publish, seed; returns (owner token, seed seconds, rows counted)."""
    _identity, token = await client.new_identity()
    reply = await client.publish(DB_NAME, TRANSFER_WASM.read_bytes(), token=token)
    if reply.status not in (200, 201):
        raise RuntimeError(f"publish failed: {reply!r}")
    t0 = time.perf_counter()
    reply = await asyncio.wait_for(
        client.call(DB_NAME, "seed", cfg.accounts, cfg.balance, token=token), cfg.seed_timeout
    )
    seed_seconds = time.perf_counter() - t0
    if reply.status != 200:
        raise RuntimeError(f"seed failed: {reply!r}")
    reply = await client.sql(DB_NAME, "SELECT COUNT(*) AS n FROM accounts", token=token)
    if reply.status != 200:
        raise RuntimeError(f"counting the accounts failed: {reply!r}")
    rows = reply.json()[0]["rows"]
    counted = int(rows[0][0])
    if counted != cfg.accounts:
        raise RuntimeError(f"seeded {cfg.accounts} accounts but the table holds {counted}")
    return token, seed_seconds, counted


# --- (a) and (c): /call load ----------------------------------------------------------------------


async def call_load(
    base_url: str,
    token: str | None,
    cfg: BenchConfig,
    *,
    seconds: float,
    label: str,
    server_pid: int,
    seed: int,
    pairs: Sequence[tuple[int, int]] | None = None,
    db: str = DB_NAME,
    client: str = "aiohttp",
) -> LoadStats:
    """``cfg.clients`` workers over one keep-alive session, until ``seconds`` or ``cfg.max_calls``.

    Each call transfers 1 between two distinct accounts chosen uniformly, or, given ``pairs``
    (``(from, to)``, e.g. Zipf-distributed), the next pair of the worker's own cycle through them.
    ``db`` is the name of a ``modules/transfer`` database. ``client``: ``"aiohttp"`` (its client
    session, ~130 µs of CPU per request on these machines, beside the server) or ``"stream"``
    (:class:`_StreamHttp`, one hand-written keep-alive connection per worker: less of the
    shared cores goes to the load generator)."""
    if client not in ("aiohttp", "stream"):
        raise ValueError(f"client must be 'aiohttp' or 'stream', not {client!r}")
    url = f"{base_url}/v1/database/{db}/call/transfer"
    path = urllib.parse.urlsplit(url).path
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    n = cfg.accounts
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    samples: list[str] = []
    reducer_us: list[int] = []
    budget = [cfg.max_calls]
    opened = [0]

    async def on_connection_create_end(*_: object) -> None:
        opened[0] += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connection_create_end)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker(rng: random.Random, session: aiohttp.ClientSession) -> None:
        perf = time.perf_counter
        next_pair = rng.randrange(len(pairs)) if pairs else 0
        stream = _StreamHttp(base_url, headers, opened) if client == "stream" else None
        while budget[0] > 0 and loop.time() < deadline:
            budget[0] -= 1
            if pairs:
                a, b = pairs[next_pair % len(pairs)]
                next_pair += 1
            else:
                a = rng.randrange(n)
                b = rng.randrange(n - 1)
                if b >= a:
                    b += 1
            body = b"[%d,%d,1]" % (a, b)
            t0 = perf()
            try:
                if stream is not None:
                    async with asyncio.timeout(cfg.request_timeout):
                        code, answer, text = await stream.post(path, body)
                    status, duration = str(code), answer.get(DURATION_HEADER)
                else:
                    async with session.post(url, data=body, headers=headers) as resp:
                        text = await resp.read()
                        status = str(resp.status)
                        duration = resp.headers.get(DURATION_HEADER)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as e:
                status, text, duration = type(e).__name__, str(e).encode(), None
                if stream is not None:
                    stream.close()
            latencies.append(perf() - t0)
            statuses[status] += 1
            if status != "200" and len(samples) < ERROR_SAMPLES:
                samples.append(f"{status} {a}->{b}: {text[:200].decode('utf-8', 'replace')}")
            if duration is not None and duration.isdigit():
                reducer_us.append(int(duration))
        if stream is not None:
            stream.close()

    connector = aiohttp.TCPConnector(limit=cfg.clients)
    timeout = aiohttp.ClientTimeout(total=cfg.request_timeout)
    cpu0, server0, busy0 = time.process_time(), process_cpu_seconds(server_pid), machine_busy_seconds()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=[trace]) as session:
        t0 = time.perf_counter()
        workers = [worker(random.Random(seed * 1000 + i), session) for i in range(cfg.clients)]
        # A worker stops at the deadline after its request in flight; that one is bounded by the timeout.
        await asyncio.wait_for(asyncio.gather(*workers), seconds + cfg.request_timeout + 5.0)
        elapsed = time.perf_counter() - t0
    cpu1, server1, busy1 = time.process_time(), process_cpu_seconds(server_pid), machine_busy_seconds()
    server_cpu = None if server0 is None or server1 is None else server1 - server0
    other_cpu = None
    if busy0 is not None and busy1 is not None and server_cpu is not None:
        other_cpu = max(0.0, (busy1 - busy0) - server_cpu - (cpu1 - cpu0))
    latencies.sort()
    ms = 1000.0
    return LoadStats(
        label=label,
        loop=type(loop).__module__.split(".")[0],
        clients=cfg.clients,
        seconds=elapsed,
        requests=len(latencies),
        statuses=dict(statuses),
        p50_ms=percentile(latencies, 50) * ms,
        p95_ms=percentile(latencies, 95) * ms,
        p99_ms=percentile(latencies, 99) * ms,
        max_ms=(latencies[-1] if latencies else 0.0) * ms,
        connections_opened=opened[0],
        reducer_us_mean=sum(reducer_us) / len(reducer_us) if reducer_us else 0.0,
        client_cpu_s=cpu1 - cpu0,
        server_cpu_s=server_cpu,
        other_cpu_s=other_cpu,
        error_samples=samples,
    )


def _answer_head(head: bytes) -> tuple[int, dict[str, str], int]:
    """An HTTP/1.1 answer's status line and headers (``head``: up to the blank line): its status,
    its headers by lowercase name, and its Content-Length (required: both clients read exactly)."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    answer = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" not in answer:
        raise ValueError(f"the answer has no Content-Length (headers: {sorted(answer)})")
    return status, answer, int(answer["content-length"])


class _StreamHttp:
    """One keep-alive HTTP/1.1 connection on the event loop, written by hand (one request at a
    time, answers with a Content-Length), for the /call load: aiohttp's client spends ~130 µs of
    CPU per request, which on a machine shared with the server is the server's loss."""

    def __init__(self, base_url: str, headers: dict[str, str], opened: list[int]) -> None:
        url = urllib.parse.urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = f"Host: {self.host}:{self.port}\r\n{head}".encode()
        self.opened = opened
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.opened[0] += 1
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (path.encode(), self.head, len(body), body))
        status, answer, size = _answer_head((await self.reader.readuntil(b"\r\n\r\n"))[:-4])
        data = await self.reader.readexactly(size)
        if answer.get("connection", "").lower() == "close":
            self.close()
        return status, answer, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --- (b): /sql point queries ----------------------------------------------------------------------


class _KeepAliveHttp:
    """A minimal blocking HTTP/1.1 keep-alive client (one connection, one request at a time, answers
    with a Content-Length): what the /sql phase measures is the server, and a client on an event
    loop costs 0.1–0.2 ms per request on these machines (aiohttp's most) — a large part of the
    target for the whole round trip. The phase runs with aiohttp's client too, for the figure a
    Python user of aiohttp would see."""

    def __init__(self, base_url: str, timeout: float) -> None:
        url = urllib.parse.urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._recv()
        status, answer, size = _answer_head(self.buf[:end])
        self.buf = self.buf[end + 4 :]
        while len(self.buf) < size:
            self._recv()
        data, self.buf = self.buf[:size], self.buf[size:]
        if answer.get("connection", "").lower() == "close":
            self.close()
        return status, answer, data

    def _recv(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        self.buf += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


async def sql_points(base_url: str, token: str, cfg: BenchConfig, *, client: str = "keep-alive") -> SqlStats:
    """``cfg.queries`` sequential point queries over one keep-alive connection (or ``cfg.sql_seconds``),
    with :class:`_KeepAliveHttp` (``client="keep-alive"``, blocking: nothing else runs meanwhile)
    or aiohttp's client (``"aiohttp"``)."""
    path = f"/v1/database/{DB_NAME}/sql"
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(cfg.seed + 1)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    samples: list[str] = []
    server_us: list[int] = []
    wrong = 0
    deadline = time.monotonic() + cfg.sql_seconds
    perf = time.perf_counter
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=cfg.request_timeout)
    raw = _KeepAliveHttp(base_url, cfg.request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t_start = perf()
        try:
            for _ in range(cfg.queries):
                if time.monotonic() > deadline:
                    break
                key = rng.randrange(cfg.accounts)
                query = f"SELECT * FROM accounts WHERE id = {key}".encode()
                t0 = perf()
                try:
                    if client == "aiohttp":
                        async with session.post(
                            base_url + path, data=query, headers=headers, skip_auto_headers=("Content-Type",)
                        ) as resp:
                            body = await resp.read()
                            status, duration = str(resp.status), resp.headers.get(DURATION_HEADER)
                    else:
                        code, answer, body = raw.post(path, query, headers)
                        status, duration = str(code), answer.get(DURATION_HEADER.lower())
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
                    status, body, duration = type(e).__name__, str(e).encode(), None
                    raw.close()
                latencies.append(perf() - t0)
                statuses[status] += 1
                if status != "200":
                    if len(samples) < ERROR_SAMPLES:
                        samples.append(f"{status} id={key}: {body[:200].decode('utf-8', 'replace')}")
                    continue
                if duration is not None and duration.isdigit():
                    server_us.append(int(duration))
                try:
                    rows = json.loads(body)[0]["rows"]
                    good = len(rows) == 1 and rows[0][0] == key
                except (ValueError, KeyError, IndexError, TypeError):
                    good = False
                if not good:
                    wrong += 1
                    if len(samples) < ERROR_SAMPLES:
                        samples.append(f"wrong rows for id={key}: {body[:200].decode('utf-8', 'replace')}")
        finally:
            raw.close()
        elapsed = perf() - t_start
    latencies.sort()
    ms = 1000.0
    return SqlStats(
        queries=len(latencies),
        seconds=elapsed,
        statuses=dict(statuses),
        wrong_rows=wrong,
        p50_ms=percentile(latencies, 50) * ms,
        p95_ms=percentile(latencies, 95) * ms,
        p99_ms=percentile(latencies, 99) * ms,
        max_ms=(latencies[-1] if latencies else 0.0) * ms,
        server_us_mean=sum(server_us) / len(server_us) if server_us else 0.0,
        error_samples=samples,
    )


# --- orchestration --------------------------------------------------------------------------------


def _run_on(factory: Callable[[], asyncio.AbstractEventLoop] | None, coro: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _start_profiler(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print(f"note: py-spy not found, no profile written to {out}", file=sys.stderr)
        return None
    fmt = {".txt": "raw", ".json": "speedscope"}.get(out.suffix, "flamegraph")
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
           "--nonblocking", "--threads", "--format", fmt, "--output", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _stop_profiler(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    if proc is None:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_benchmark(cfg: BenchConfig, *, log: Callable[[str], None] = print) -> Report:
    """Start the server, run every phase, stop the server (also on errors and interrupts)."""
    cfg.validate()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="orrery-bench-http-", dir=cfg.data_parent or "/var/tmp") as d:
        load_before = _loadavg()
        server = StandaloneServer(
            Path(d) / "data",
            args=["--log-level", "warning", *cfg.server_args],
            log_dir=Path(d) / "logs",
            module=cfg.server_module,
        )
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        try:
            log(f"server pid {pid} on {server.url}; seeding {cfg.accounts:,} accounts ...")
            token, seed_seconds, counted = server.run(lambda c: setup(c, cfg))
            log(f"  seeded in {seed_seconds:.2f} s")
            call_token = None if cfg.anonymous else token
            loads: list[LoadStats] = []
            warmup: dict[str, int] = {}
            if cfg.warmup > 0:
                w = _run_on(None, call_load(server.url, call_token, cfg, seconds=cfg.warmup, label="warm-up",
                                            server_pid=pid, seed=cfg.seed + 100))  # fmt: skip
                warmup = w.statuses
            log(f"/call load: {cfg.clients} clients, {cfg.seconds:g} s ...")
            profiler = _start_profiler(pid, cfg.profile, cfg.seconds) if cfg.profile else None
            try:
                main_load = _run_on(None, call_load(server.url, call_token, cfg, seconds=cfg.seconds,
                                                    label="/call transfer", server_pid=pid, seed=cfg.seed))  # fmt: skip
            finally:
                _stop_profiler(profiler, cfg.seconds + 30)
            loads.append(main_load)
            log(f"  {main_load.rps:,.0f} requests/s, {main_load.non_200} non-200")
            log(f"/call load, hand-written client: {cfg.clients} clients, {cfg.seconds:g} s ...")
            loads.append(_run_on(None, call_load(
                server.url, call_token, cfg, seconds=cfg.seconds, label="/call transfer (hand-written client)",
                server_pid=pid, seed=cfg.seed + 300, client="stream")))  # fmt: skip
            log(f"  {loads[-1].rps:,.0f} requests/s, {loads[-1].non_200} non-200")
            log(f"/sql point queries: {cfg.queries} ...")
            sql = _run_on(None, sql_points(server.url, token, cfg))
            log(f"  p50 {sql.p50_ms:.2f} ms, p99 {sql.p99_ms:.2f} ms")
            sql_aiohttp = _run_on(None, sql_points(server.url, token, cfg, client="aiohttp"))
            log(f"  with aiohttp's client: p50 {sql_aiohttp.p50_ms:.2f} ms, p99 {sql_aiohttp.p99_ms:.2f} ms")
            if cfg.uvloop and _have_uvloop():
                import uvloop  # type: ignore[import-not-found, unused-ignore]

                log(f"/call load, client on uvloop: {cfg.clients} clients, {cfg.seconds:g} s ...")
                loads.append(_run_on(uvloop.new_event_loop, call_load(
                    server.url, call_token, cfg, seconds=cfg.seconds, label="/call transfer (uvloop client)",
                    server_pid=pid, seed=cfg.seed + 200)))  # fmt: skip
                log(f"  {loads[-1].rps:,.0f} requests/s, {loads[-1].non_200} non-200")
            elif cfg.uvloop:
                notes.append(
                    "uvloop is not installed: the uvloop phase was skipped (server and client on asyncio)"
                )
            if cfg.anonymous:
                notes.append(
                    "calls sent without a token: the gateway minted an anonymous identity per request"
                )
            if cfg.profile:
                notes.append(
                    f"py-spy sampled the server at 200 Hz during the main /call phase: {cfg.profile}"
                )
            for line in server.log_text().splitlines():
                if "level=error" in line or "level=warning" in line:
                    notes.append(f"server log: {line if os.environ.get('BENCH_FULL_LOG') else line[:300]}")
                    if len(notes) > 20:
                        break
        finally:
            try:
                code = server.stop(cfg.stop_timeout)
            except ServerError as e:
                notes.append(str(e))
                log(f"warning: {e}")
            else:
                if code != 0:
                    notes.append(f"the server exited with status {code} on SIGTERM")
    machine = machine_info()
    machine["loadavg_before"] = load_before
    machine["loadavg_after"] = _loadavg()
    for load in loads:
        capacity = load.seconds * (machine["cores"] or 1)
        if load.other_cpu_s is not None and load.other_cpu_s > OTHER_CPU_WARN * capacity:
            notes.append(
                f"{load.label}: other processes used {load.other_cpu_s:.1f} CPU-s of the machine's "
                f"{capacity:.0f} during the phase: the figures are lower and noisier than on an idle machine"
            )
    return Report(
        machine=machine,
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        server_pid=pid,
        seed_seconds=seed_seconds,
        accounts_seeded=counted,
        loads=loads,
        warmup_statuses=warmup,
        sql=sql,
        sql_aiohttp=sql_aiohttp,
        notes=notes,
    )


def _statuses(statuses: dict[str, int]) -> str:
    bad = {s: n for s, n in sorted(statuses.items()) if s != "200"}
    return ", ".join(f"{n}×{s}" for s, n in bad.items()) if bad else "0"


def _fmt_load(load: list[float] | None) -> str:
    return "n/a" if load is None else f"{load[0]:.2f}"


def render(report: Report) -> str:
    """The markdown the benchmark prints."""
    m = report.machine
    cfg = report.config
    lines = [
        f"machine: {m['cores']} cores ({m['cpu']}), {m['python']}, aiohttp {m['aiohttp']}, "
        f"server loop {m['server_loop']}; client and server share the cores; "
        f"load average before/after {_fmt_load(m.get('loadavg_before'))} / {_fmt_load(m.get('loadavg_after'))}",
        f"accounts: {report.accounts_seeded:,} (seeded over HTTP in {report.seed_seconds:.2f} s), "
        f"warm-up {cfg['warmup']:g} s",
        "",
        "| benchmark | client loop | concurrency | requests | seconds | rate (/s) | p50 ms | p95 ms | p99 ms "
        "| non-200 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for load in report.loads:
        lines.append(
            f"| {load.label} | {load.loop} | {load.clients} | {load.requests:,} | {load.seconds:.1f} "
            f"| {load.rps:,.0f} | {load.p50_ms:.2f} | {load.p95_ms:.2f} | {load.p99_ms:.2f} "
            f"| {_statuses(load.statuses)} |"
        )
    sql = report.sql
    for label, loop, phase in (
        ("/sql point query", "blocking socket", sql),
        ("/sql point query (aiohttp client)", "asyncio", report.sql_aiohttp),
    ):
        if phase is None:
            continue
        rate = phase.queries / phase.seconds if phase.seconds > 0 else 0.0
        failures = _statuses(phase.statuses) + (f", {phase.wrong_rows} wrong rows" if phase.wrong_rows else "")
        lines.append(
            f"| {label} | {loop} | 1 (sequential) | {phase.queries:,} | {phase.seconds:.1f} | {rate:,.0f} "
            f"| {phase.p50_ms:.2f} | {phase.p95_ms:.2f} | {phase.p99_ms:.2f} | {failures} |"
        )
    lines.append("")
    for load in report.loads:
        per_req = ""
        other = "" if load.other_cpu_s is None else f", other processes {load.other_cpu_s:.1f} CPU-s"
        if load.server_cpu_s is not None and load.requests:
            per_req = f", server CPU {load.server_cpu_s:.1f} s ({load.server_cpu_s / load.requests * 1e6:,.0f} µs/request)"
        lines.append(
            f"- {load.label}: max {load.max_ms:.1f} ms, {load.connections_opened} connections opened, "
            f"reducer {load.reducer_us_mean:.0f} µs mean (execution-duration header), "
            f"client CPU {load.client_cpu_s:.1f} s ({load.client_cpu_s / max(1, load.requests) * 1e6:,.0f} µs/request)"
            f"{per_req}{other}"
        )
    if sql is not None:
        lines.append(
            f"- /sql: max {sql.max_ms:.1f} ms, server-reported duration {sql.server_us_mean:.0f} µs mean"
        )
    bad_warmup = {s: n for s, n in report.warmup_statuses.items() if s != "200"}
    if bad_warmup:
        lines.append(f"- warm-up non-200 answers: {_statuses(report.warmup_statuses)}")
    for load in report.loads:
        for sample in load.error_samples:
            lines.append(f"- {load.label} error: {sample}")
    if sql is not None:
        for sample in sql.error_samples:
            lines.append(f"- /sql error: {sample}")
    for note in report.notes:
        lines.append(f"- {note}")
    if not report.ok:
        lines.append("- **FAILED: some answers were not the expected 200 (see above)**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m loadtest.bench_http``."""
    defaults = BenchConfig()
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench_http", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seconds", type=float, default=defaults.seconds, help="/call phase length (default %(default)s)"
    )
    ap.add_argument(
        "--clients",
        type=int,
        default=defaults.clients,
        help="concurrent keep-alive clients (default %(default)s)",
    )
    ap.add_argument(
        "--accounts", type=int, default=defaults.accounts, help="accounts seeded (default %(default)s)"
    )
    ap.add_argument(
        "--max-calls",
        type=int,
        default=defaults.max_calls,
        help="cap on /call requests per phase (default %(default)s)",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=defaults.warmup,
        help="warm-up seconds before the /call phase (default %(default)s)",
    )
    ap.add_argument(
        "--queries", type=int, default=defaults.queries, help="/sql point queries (default %(default)s)"
    )
    ap.add_argument(
        "--sql-seconds",
        type=float,
        default=defaults.sql_seconds,
        help="time cap of the /sql phase (default %(default)s)",
    )
    ap.add_argument(
        "--balance",
        type=int,
        default=defaults.balance,
        help="initial balance of every account (default %(default)s)",
    )
    ap.add_argument(
        "--anonymous", action="store_true", help="call without a token (a new anonymous identity per request)"
    )
    ap.add_argument(
        "--no-uvloop", action="store_true", help="skip the uvloop phase even when uvloop is installed"
    )
    ap.add_argument(
        "--dir", type=Path, default=None, help="parent of the temporary data directory (default /var/tmp)"
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the server during the /call phase into this file (.svg or .txt)",
    )
    ap.add_argument(
        "--server-module",
        default=defaults.server_module,
        help="server entry point run with -m (default %(default)s)",
    )
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra server argument, repeatable; use the = form: --server-arg=--transport=grpc",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON to this file")
    args = ap.parse_args(argv)
    cfg = BenchConfig(
        seconds=args.seconds, clients=args.clients, accounts=args.accounts, max_calls=args.max_calls,
        warmup=args.warmup, queries=args.queries, balance=args.balance, sql_seconds=args.sql_seconds, anonymous=args.anonymous,
        uvloop=not args.no_uvloop, data_parent=args.dir, profile=args.profile,
        server_module=args.server_module,
        server_args=tuple(args.server_arg),
    )  # fmt: skip
    try:
        cfg.validate()
    except ValueError as e:
        ap.error(str(e))
    report = run_benchmark(cfg, log=lambda line: print(line, flush=True))
    print()
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
