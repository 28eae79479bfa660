"""Serving shapes against the engine (issue 11 item 1): every figure as a ratio to the engine's.

Absolute rates move 2–4× from one machine to the next, so this benchmark measures, in one go on
one machine, the engine alone and then the serving shapes, and prints each shape's rate as a
ratio to the engine figure of the same run (same account distribution):

1. **engine**: ``python -m loadtest.bench_engine --json`` in a child process (in-process
   ``transfer`` calls with durable group commit, uniform and Zipf(α), the time split into wasm,
   host calls, datastore and commit log), before any server runs.
2. **shapes** (``--shape NAME``, repeatable; all by default), against one standalone server
   process (``python -m orrery.standalone``, the server ``orrery start`` runs) on 127.0.0.1 over
   a temporary data directory under ``--dir``, with ``modules/transfer`` seeded with
   ``--accounts`` accounts:

   - ``ws-64x40-{uniform,zipf}[-confirmed]``: 64 BSATN WebSocket connections, each keeping 40
     ``transfer(from, to, 1)`` calls in flight (SpacetimeDB's keynote shape), with and without
     ``confirmed=true``; the load generator is bench_ws's (:func:`loadtest.bench_ws.reducer_load`).
   - ``ws-64x1-{uniform,zipf}[-confirmed]``: 64 connections, one call each (closed loop).
   - ``http-64-{uniform,zipf}``: ``POST /call/transfer`` from 64 keep-alive clients, one request
     each (bench_http's :func:`loadtest.bench_http.call_load`); an HTTP caller is always answered
     once the commit is durable.
   - ``fanout-1000``: ``--fanout-conns`` connections subscribed to a quickstart-chat table get
     ``--fanout-rounds`` commits, one at a time, while ``ws-64x40-uniform-confirmed`` runs on the
     transfer database: how long a commit takes to reach every subscriber (bench_ws's fan-out,
     with its load generator in the same process as the 64×40 one).

For each shape: calls/s, the ratio to the engine, p50/p99 latency, the CPU µs per call of each
server process (the server and every process it started, from ``/proc/<pid>/stat``) and of the
load generator, and the CPU other processes of the machine used meanwhile. A CPU probe (the
fixed pure-Python loop bench_cluster prints) runs at the start and at the end, so the machine's
speed during the run stands beside the figures.

Every load is bounded in time and in count (``--seconds`` after a ``--warmup`` of the same shape;
the fan-out shape's load lasts its ``--fanout-rounds``, each bounded); the server is stopped on
every exit path; only 127.0.0.1 is contacted.

Usage: ``python -m loadtest.bench_shapes [--shape ws-64x40-uniform-confirmed] [--seconds 10]
[--json out.json]`` (``make bench``). Exit status 1 when an answer was not the expected one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest import bench_http, bench_ws
from loadtest.bench_cluster import PROBE_ITERATIONS, PROBE_REPEATS, CpuProbe, cpu_probe, probe_text
from loadtest.bench_engine import make_pairs
from loadtest.bench_http import machine_busy_seconds, machine_info
from loadtest.bench_ws import FanoutStats, reducer_load
from tests.servers import TRANSPORTS, Client, ServerError, StandaloneServer

__all__ = ["SHAPES", "EngineFigure", "Report", "Shape", "ShapeResult", "ShapesConfig", "main", "run_benchmark"]

ROOT = Path(__file__).resolve().parent.parent
#: How long the engine child may run before the benchmark gives up on it.
ENGINE_TIMEOUT = 3600.0
#: Share of the machine's CPU other processes may use during a shape before the report warns.
OTHER_CPU_WARN = 0.05


class BenchError(RuntimeError):
    """The engine bench or the server did not do what the benchmark needs."""


@dataclass(frozen=True)
class Shape:
    """One named load: who calls, how many at once, which accounts, answered when."""

    name: str
    #: "ws" (WebSocket CallReducer), "http" (POST /call) or "fanout" (subscribers under ws 64×40).
    kind: str
    conns: int
    inflight: int
    zipf: bool
    confirmed: bool
    #: The issue's target for the shape, printed beside the figures (informational).
    target: str

    @property
    def distribution(self) -> str:
        return "zipf" if self.zipf else "uniform"

    def describe(self, alpha: float) -> str:
        dist = f"Zipf {alpha:g}" if self.zipf else "uniform"
        if self.kind == "http":
            return f"HTTP /call, {self.conns} keep-alive clients, {dist}"
        what = f"WebSocket {self.conns} × {self.inflight}, {dist}, {'confirmed' if self.confirmed else 'unconfirmed'}"
        return what if self.kind == "ws" else f"commit fan-out to subscribers during {what}"


def _shapes() -> dict[str, Shape]:
    shapes: list[Shape] = []
    for inflight in (40, 1):
        for zipf in (False, True):
            for confirmed in (False, True):
                name = f"ws-64x{inflight}-{'zipf' if zipf else 'uniform'}{'-confirmed' if confirmed else ''}"
                # The issue sets 64 × 40's target for confirmed reads (the keynote's shape) only.
                target = "≥ 0.60, p99 ≤ 25 ms" if inflight == 1 else "≥ 0.90, p99 ≤ 250 ms" if confirmed else "-"
                shapes.append(Shape(name, "ws", 64, inflight, zipf, confirmed, target))
    for zipf in (False, True):
        shapes.append(Shape(f"http-64-{'zipf' if zipf else 'uniform'}", "http", 64, 1, zipf, True, "≥ 0.50"))
    shapes.append(Shape("fanout-1000", "fanout", 64, 40, False, True, "every subscriber within p99 ≤ 50 ms"))
    return {s.name: s for s in shapes}


#: Every shape by name, in the order a full run measures them.
SHAPES = _shapes()


@dataclass
class ShapesConfig:
    """What to run; the defaults are the ``make bench`` figures."""

    shapes: tuple[str, ...] = tuple(SHAPES)
    seconds: float = 10.0
    warmup: float = 2.0
    accounts: int = 100_000
    alpha: float = 1.5
    #: Calls of each engine pass (uniform, Zipf).
    engine_calls: int = 100_000
    #: Subscribers and commits of the ``fanout-1000`` shape.
    fanout_conns: int = 1000
    fanout_rounds: int = 20
    #: Upper bound on the calls of one load (the time bound usually ends it).
    max_calls: int = 2_000_000
    data_parent: str = "/var/tmp"
    seed: int = 7
    #: ``orrery.standalone --transport`` of the server (``split``: gateway and host node in two processes).
    transport: str = "split"

    def validate(self) -> None:
        """Raise ValueError on settings the benchmark cannot run with."""
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes:
            raise ValueError(f"unknown shape {', '.join(unknown) or '(none)'}; the shapes are {', '.join(SHAPES)}")
        if self.accounts < 2:
            raise ValueError("--accounts must be at least 2 (a transfer needs two distinct accounts)")
        if self.warmup < 0 or self.alpha <= 0:
            raise ValueError("--warmup must not be negative and --alpha must be positive")
        positive = {
            "--seconds": self.seconds, "--engine-calls": self.engine_calls, "--fanout-conns": self.fanout_conns,
            "--fanout-rounds": self.fanout_rounds, "--max-calls": self.max_calls,
        }  # fmt: skip
        bad = [k for k, v in positive.items() if v <= 0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive")


@dataclass
class EngineFigure:
    """One pass of the engine bench."""

    distribution: str
    calls: int
    rate: float
    writer_cpu_us: float
    split_us: dict[str, float]


@dataclass
class ShapeResult:
    """One measured shape."""

    shape: str
    description: str
    distribution: str
    target: str
    calls: int
    seconds: float
    rate: float
    #: ``rate`` over the engine's rate for the same distribution in this run (None: no engine figure).
    engine_ratio: float | None
    p50_ms: float
    p99_ms: float
    max_ms: float
    bad_answers: int
    #: CPU µs per call of each server process (the server, then each process it started).
    process_cpu_us: dict[str, float]
    load_generator_cpu_us: float
    #: CPU seconds every other process of the machine used during the shape (contention).
    other_cpu_s: float | None
    error_samples: list[str] = field(default_factory=list)
    fanout: FanoutStats | None = None

    @property
    def ok(self) -> bool:
        """Calls were answered, all as expected (and every subscriber got every commit)."""
        fan_ok = self.fanout is None or (self.fanout.bad_answers == 0 and self.fanout.missing == 0)
        return self.calls > 0 and self.bad_answers == 0 and fan_ok


@dataclass
class Report:
    """Everything one run measured."""

    machine: dict[str, Any]
    config: dict[str, Any]
    probe_start: CpuProbe
    probe_end: CpuProbe | None = None
    engine: list[EngineFigure] = field(default_factory=list)
    shapes: list[ShapeResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The engine ran and every shape asked for was measured with only expected answers."""
        wanted = len(self.config["shapes"])
        return bool(self.engine) and len(self.shapes) == wanted and all(s.ok for s in self.shapes)


# --- the server's processes ----------------------------------------------------------------------


def server_processes(root: int) -> dict[str, int]:
    """The server process (``server``) and every process it started, named for what they run.

    Read from ``/proc`` each time, so a server that runs its gateway and host node as separate
    processes shows each one's CPU."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found = {"server": root}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[f"{_runs(pid)} {pid}"] = pid
        todo.extend(children.get(pid, []))
    return found


def _runs(pid: int) -> str:
    """What a process runs: the module of ``python -m``, else its program's name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "process"
    args = [a.decode(errors="replace") for a in argv if a]
    if "-m" in args[:-1]:
        return args[args.index("-m") + 1]
    return Path(args[0]).name if args else "process"


# --- the engine ----------------------------------------------------------------------------------


def run_engine(cfg: ShapesConfig, workdir: Path, log: Callable[[str], None]) -> list[EngineFigure]:
    """``loadtest.bench_engine`` in a child process (its GC tuning and memory stay there)."""
    out = workdir / "engine.json"
    cmd = [
        sys.executable, "-m", "loadtest.bench_engine", "--accounts", str(cfg.accounts),
        "--calls", str(cfg.engine_calls), "--alpha", str(cfg.alpha), "--dir", str(workdir), "--json", str(out),
    ]  # fmt: skip
    log(f"engine: {cfg.engine_calls:,} transfers per distribution over {cfg.accounts:,} accounts ...")
    proc = subprocess.run(
        cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=ENGINE_TIMEOUT, check=False,
    )  # fmt: skip
    if proc.returncode != 0 or not out.exists():
        raise BenchError(f"the engine bench failed (status {proc.returncode}): {proc.stdout[-2000:]}")
    figures = [
        EngineFigure(
            distribution="uniform" if r["alpha"] is None else "zipf", calls=r["calls"], rate=r["rate"],
            writer_cpu_us=r["writer_cpu_us_per_call"], split_us=r["split_us"],
        )  # fmt: skip
        for r in json.loads(out.read_text())["results"]
    ]
    for f in figures:
        log(f"  {f.distribution}: {f.rate:,.0f} transfers/s, writer CPU {f.writer_cpu_us:.1f} µs/call")
    return figures


# --- the shapes ----------------------------------------------------------------------------------


def _result(
    shape: Shape, cfg: ShapesConfig, engine: list[EngineFigure], *, calls: int, seconds: float,
    latencies_ms: tuple[float, float, float], bad: int, process_cpu_s: Mapping[str, float],
    client_cpu_s: float, other_cpu_s: float | None, samples: list[str], fanout: FanoutStats | None = None,
) -> ShapeResult:  # fmt: skip
    rate = calls / seconds if seconds > 0 else 0.0
    base = next((e.rate for e in engine if e.distribution == shape.distribution), None)
    per_call = 1e6 / max(1, calls)
    return ShapeResult(
        shape=shape.name, description=shape.describe(cfg.alpha), distribution=shape.distribution,
        target=shape.target, calls=calls, seconds=seconds, rate=rate,
        engine_ratio=rate / base if base else None,
        p50_ms=latencies_ms[0], p99_ms=latencies_ms[1], max_ms=latencies_ms[2], bad_answers=bad,
        process_cpu_us={k: v * per_call for k, v in process_cpu_s.items()},
        load_generator_cpu_us=client_cpu_s * per_call, other_cpu_s=other_cpu_s,
        error_samples=samples, fanout=fanout,
    )  # fmt: skip


def _ws_config(cfg: ShapesConfig, shape: Shape) -> bench_ws.BenchConfig:
    return bench_ws.BenchConfig(
        seconds=cfg.seconds, warmup=cfg.warmup, conns=shape.conns, inflight=shape.inflight, accounts=cfg.accounts,
        alpha=cfg.alpha, max_calls=cfg.max_calls, fanout_conns=cfg.fanout_conns, fanout_rounds=cfg.fanout_rounds,
        seed=cfg.seed,
    )  # fmt: skip


def run_ws(host: str, port: int, tokens: list[str], shape: Shape, cfg: ShapesConfig, engine: list[EngineFigure],
           root_pid: int, seed: int) -> ShapeResult:  # fmt: skip
    """A WebSocket shape: warm-up, then the measured load."""
    ws_cfg = _ws_config(cfg, shape)
    alpha = cfg.alpha if shape.zipf else None
    conn_tokens = tokens[: shape.conns]
    pids = server_processes(root_pid)
    if cfg.warmup > 0:
        asyncio.run(reducer_load(host, port, conn_tokens, ws_cfg, alpha=alpha, seconds=cfg.warmup, confirmed=shape.confirmed,
                                 label="warm-up", server_pids=pids, seed=seed + 50))  # fmt: skip
    x = asyncio.run(reducer_load(host, port, conn_tokens, ws_cfg, alpha=alpha, seconds=cfg.seconds, confirmed=shape.confirmed,
                                 label=shape.name, server_pids=pids, seed=seed))  # fmt: skip
    return _result(shape, cfg, engine, calls=x.calls, seconds=x.seconds, latencies_ms=(x.p50_ms, x.p99_ms, x.max_ms),
                   bad=x.bad_answers, process_cpu_s=x.process_cpu_s, client_cpu_s=x.client_cpu_s,
                   other_cpu_s=x.other_cpu_s, samples=x.error_samples)  # fmt: skip


def run_http(url: str, token: str, shape: Shape, cfg: ShapesConfig, engine: list[EngineFigure], root_pid: int,
             seed: int) -> ShapeResult:  # fmt: skip
    """An HTTP /call shape: warm-up, then the measured load; the CPU of every server process is
    read around it (call_load itself watches one process)."""
    http_cfg = bench_http.BenchConfig(seconds=cfg.seconds, clients=shape.conns, accounts=cfg.accounts,
                                      max_calls=cfg.max_calls, warmup=cfg.warmup, seed=cfg.seed)  # fmt: skip
    pairs = make_pairs(cfg.accounts, 200_000, cfg.alpha, seed) if shape.zipf else None
    pids = server_processes(root_pid)

    def load(seconds: float, label: str, run_seed: int) -> bench_http.LoadStats:
        return asyncio.run(bench_http.call_load(url, token, http_cfg, seconds=seconds, label=label, server_pid=root_pid,
                                                seed=run_seed, pairs=pairs, db=bench_ws.TRANSFER_DB,
                                                client="stream"))  # fmt: skip

    if cfg.warmup > 0:
        load(cfg.warmup, "warm-up", seed + 50)
    cpu0, busy0 = bench_ws._cpu_of(pids), machine_busy_seconds()
    x = load(cfg.seconds, shape.name, seed)
    cpu1, busy1 = bench_ws._cpu_of(pids), machine_busy_seconds()
    per_process = {k: cpu1[k] - cpu0[k] for k in pids if k in cpu0 and k in cpu1}
    other = None
    if busy0 is not None and busy1 is not None and len(per_process) == len(pids):
        other = max(0.0, (busy1 - busy0) - sum(per_process.values()) - x.client_cpu_s)
    return _result(shape, cfg, engine, calls=x.requests, seconds=x.seconds, latencies_ms=(x.p50_ms, x.p99_ms, x.max_ms),
                   bad=x.non_200, process_cpu_s=per_process, client_cpu_s=x.client_cpu_s, other_cpu_s=other,
                   samples=x.error_samples)  # fmt: skip


def run_fanout(server: StandaloneServer, host: str, port: int, tokens: list[str], shape: Shape, cfg: ShapesConfig,
               engine: list[EngineFigure], log: Callable[[str], None], seed: int) -> ShapeResult:  # fmt: skip
    """Subscribers of a chat table get commits one at a time while the 64×40 load runs; the
    rate, latency and CPU figures are the load's, the delivery times the subscribers'."""
    assert server.proc is not None
    ws_cfg = _ws_config(cfg, shape)
    pids = server_processes(server.proc.pid)
    # Bounds the load; it is stopped as soon as the last round is delivered (each round waits at
    # most 30 s for the caller's answer and 10 s for the deliveries).
    bound = cfg.fanout_rounds * (ws_cfg.fanout_gap + 40.0) + 30.0

    async def body(client: Client) -> tuple[FanoutStats, bench_ws.LoadStats]:
        started, stop = asyncio.Event(), asyncio.Event()
        task: asyncio.Task[bench_ws.LoadStats] | None = None

        async def start_load() -> None:
            nonlocal task
            log(f"  {shape.conns} × {shape.inflight} load starting under the subscribers ...")
            task = asyncio.create_task(reducer_load(
                host, port, tokens[: shape.conns], ws_cfg, alpha=None, seconds=bound, confirmed=shape.confirmed,
                label=shape.name, server_pids=pids, seed=seed, started=started, stop=stop,
            ))  # fmt: skip
            waiter = asyncio.create_task(started.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if task.done():
                task.result()  # the load failed before it started: raise its error

        try:
            fan = await bench_ws.fanout(host, port, client, ws_cfg, log, before_rounds=start_load)
        finally:
            stop.set()
        if task is None:
            raise BenchError("the fan-out ended before its load started")
        return fan, await task

    fan, x = server.run(body)
    return _result(shape, cfg, engine, calls=x.calls, seconds=x.seconds, latencies_ms=(x.p50_ms, x.p99_ms, x.max_ms),
                   bad=x.bad_answers, process_cpu_s=x.process_cpu_s, client_cpu_s=x.client_cpu_s,
                   other_cpu_s=x.other_cpu_s, samples=x.error_samples, fanout=fan)  # fmt: skip


def run_benchmark(cfg: ShapesConfig, *, log: Callable[[str], None] = print) -> Report:
    """Probe, engine, then one server for every shape asked for (stopped on every exit path), probe."""
    cfg.validate()
    shapes = [SHAPES[name] for name in cfg.shapes]
    if any(s.kind == "fanout" for s in shapes):
        bench_ws._raise_fd_limit(cfg.fanout_conns * 2 + 512)
    report = Report(machine=machine_info(), config=asdict(cfg), probe_start=cpu_probe())
    log(f"CPU probe: {report.probe_start.best_ms:.1f} ms (median {report.probe_start.median_ms:.1f})")
    with tempfile.TemporaryDirectory(prefix="orrery-bench-shapes-", dir=cfg.data_parent) as d:
        report.engine = run_engine(cfg, Path(d), log)
        server = StandaloneServer(
            Path(d) / "data", args=["--log-level", "warning"], log_dir=Path(d) / "logs", transport=cfg.transport
        )
        server.start()
        assert server.proc is not None
        root = server.proc.pid
        host, port_text = server.url.removeprefix("http://").rsplit(":", 1)
        port = int(port_text)
        try:
            log(f"server pid {root} on {server.url}; seeding {cfg.accounts:,} accounts ...")
            setup_cfg = bench_ws.BenchConfig(conns=max(s.conns for s in shapes), accounts=cfg.accounts)
            tokens = server.run(lambda c: bench_ws._setup_transfer(c, setup_cfg))
            for i, shape in enumerate(shapes):
                length = f"{cfg.fanout_rounds} commits" if shape.kind == "fanout" else f"{cfg.seconds:g} s"
                log(f"{shape.name}: {shape.describe(cfg.alpha)}, {length} ...")
                seed = cfg.seed + 100 * i
                if shape.kind == "ws":
                    result = run_ws(host, port, tokens, shape, cfg, report.engine, root, seed)
                elif shape.kind == "http":
                    result = run_http(server.url, tokens[0], shape, cfg, report.engine, root, seed)
                else:
                    result = run_fanout(server, host, port, tokens, shape, cfg, report.engine, log, seed)
                report.shapes.append(result)
                ratio = "-" if result.engine_ratio is None else f"{result.engine_ratio:.2f}"
                log(f"  {result.rate:,.0f} calls/s (× engine {ratio}), p50 {result.p50_ms:.1f} ms, "
                    f"p99 {result.p99_ms:.1f} ms, {result.bad_answers} bad answers")  # fmt: skip
            for line in server.log_text().splitlines():
                if "level=error" in line or "level=warning" in line:
                    report.notes.append(f"server log: {line[:300]}")
                    if len(report.notes) > 20:
                        break
        finally:
            try:
                code = server.stop(30.0)
            except ServerError as e:
                report.notes.append(str(e))
            else:
                if code != 0:
                    report.notes.append(f"the server exited with status {code} on SIGTERM")
    report.probe_end = cpu_probe()
    capacity_cores = report.machine["cores"] or 1
    for r in report.shapes:
        if r.other_cpu_s is not None and r.other_cpu_s > OTHER_CPU_WARN * r.seconds * capacity_cores:
            report.notes.append(f"{r.shape}: other processes used {r.other_cpu_s:.1f} CPU-s of "
                                f"{r.seconds * capacity_cores:.0f}: the figures are lower and noisier than on an idle machine")  # fmt: skip
    return report


# --- the report ----------------------------------------------------------------------------------


def render(report: Report) -> str:
    """The markdown the benchmark prints."""
    m, cfg = report.machine, report.config
    end = "n/a" if report.probe_end is None else probe_text(report.probe_end)
    lines = [
        f"machine: {m['cores']} cores ({m['cpu']}), {m['python']}, server loop {m['server_loop']}; "
        "load generator and server share the cores",
        f"- CPU probe ({PROBE_ITERATIONS:,}-iteration Python loop, best of {PROBE_REPEATS}): "
        f"start {probe_text(report.probe_start)}; end {end}",
        f"- {cfg['accounts']:,} accounts, transfer(from, to, 1), BSATN, no compression; {cfg['seconds']:g} s per "
        f"shape after {cfg['warmup']:g} s of warm-up",
        "",
        "| engine (in-process, durable) | calls | transfers/s | writer CPU µs/call | wasm | host calls | datastore "
        "| commit log | other |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in report.engine:
        s = e.split_us
        dist = "uniform" if e.distribution == "uniform" else f"Zipf {cfg['alpha']:g}"
        lines.append(f"| {dist} | {e.calls:,} | **{e.rate:,.0f}** | {e.writer_cpu_us:.1f} | {s['wasm']:.1f} "
                     f"| {s['host']:.1f} | {s['datastore']:.1f} | {s['commitlog']:.1f} | {s['other']:.1f} |")  # fmt: skip
    lines += [
        "",
        "| shape | what | calls | calls/s | × engine | target | p50 ms | p99 ms | max ms | bad "
        "| server CPU µs/call | load generator µs/call | other CPU-s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.shapes:
        ratio = "-" if r.engine_ratio is None else f"**{r.engine_ratio:.2f}**"
        procs = ", ".join(f"{k} {v:.0f}" for k, v in r.process_cpu_us.items()) or "-"
        other = "-" if r.other_cpu_s is None else f"{r.other_cpu_s:.1f}"
        lines.append(
            f"| {r.shape} | {r.description} | {r.calls:,} | **{r.rate:,.0f}** | {ratio} | {r.target} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.max_ms:.1f} | {r.bad_answers} | {procs} | {r.load_generator_cpu_us:.0f} | {other} |"
        )
    lines.append("")
    for r in report.shapes:
        f = r.fanout
        if f is not None:
            lines.append(
                f"- {r.shape}: {f.conns:,} subscribers × {f.rounds} commits during the load: {f.deliveries:,} deliveries, "
                f"p50 **{f.p50_ms:.1f}** ms, p99 **{f.p99_ms:.1f}** ms, max {f.max_ms:.1f} ms, worst round p99 "
                f"{f.worst_round_p99_ms:.1f} ms, {f.missing} missing, {f.bad_answers} bad (subscribed in {f.connect_seconds:.1f} s)"
            )
            lines += [f"- {r.shape} subscriber error: {s}" for s in f.error_samples]
        lines += [f"- {r.shape} error: {s}" for s in r.error_samples]
    lines += [f"- {n}" for n in report.notes]
    if not report.ok:
        lines.append("- **FAILED: some answers were not the expected ones, or a shape did not run (see above)**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run, print the report (exit 1 when something was wrong, 2 on bad flags)."""
    d = ShapesConfig()
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench_shapes", description=__doc__.splitlines()[0])
    ap.add_argument("--shape", action="append", metavar="NAME",
                    help=f"run only this shape (repeatable; default all): {', '.join(SHAPES)}")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=d.seconds, help="length of each shape (default %(default)s)")
    ap.add_argument("--warmup", type=float, default=d.warmup, help="warm-up of each shape (default %(default)s)")
    ap.add_argument("--accounts", type=int, default=d.accounts)
    ap.add_argument("--alpha", type=float, default=d.alpha, help="Zipf α of the zipf shapes (default %(default)s)")
    ap.add_argument("--engine-calls", type=int, default=d.engine_calls, help="calls of each engine pass")
    ap.add_argument("--fanout-conns", type=int, default=d.fanout_conns)
    ap.add_argument("--fanout-rounds", type=int, default=d.fanout_rounds)
    ap.add_argument("--max-calls", type=int, default=d.max_calls, help="cap on the calls of one load")
    ap.add_argument("--dir", default=d.data_parent, help="parent of the temporary data directory (default %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the report as JSON here")
    ap.add_argument("--transport", default=d.transport, choices=TRANSPORTS,
                    help="the server's --transport (default %(default)s)")  # fmt: skip
    a = ap.parse_args(argv)
    cfg = ShapesConfig(
        shapes=tuple(dict.fromkeys(a.shape)) if a.shape else d.shapes, seconds=a.seconds, warmup=a.warmup, accounts=a.accounts,
        alpha=a.alpha, engine_calls=a.engine_calls, fanout_conns=a.fanout_conns, fanout_rounds=a.fanout_rounds,
        max_calls=a.max_calls, data_parent=a.dir, transport=a.transport,
    )  # fmt: skip
    try:
        cfg.validate()
        if "fanout-1000" in cfg.shapes:
            bench_ws._raise_fd_limit(cfg.fanout_conns * 2 + 512)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    report = run_benchmark(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    status = bench_http.finish(report, render(report), a.json)
    print(f"\n({time.monotonic() - t0:.0f} s in all)", file=sys.stderr)
    return status


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
