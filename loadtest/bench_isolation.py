"""Isolation benchmark (issue 12 item 1): what spinning databases cost the others.

For each target (``--target``, repeatable: ``standalone``, ``cluster``; both by default) a fresh
server is started — ``python -m orrery.standalone``, or a three-node
:class:`~orrery.cluster_local.LocalCluster` (what ``orrery cluster up`` runs) — with a fuel budget
far too large to matter and ``--time-budget`` seconds per call. A ``modules/module-test`` database
("calm") is published, and ``--spinners`` databases whose reducer ``spin`` logs a line and then
loops (``tests/wat_modules.spinning_module``). Two phases, each ``--rounds`` rounds of three
requests one after the other — ``GET /v1/ping``, ``POST /sql`` of a point query on calm and a
``set_kv`` reducer call on calm:

1. **quiet**: nothing else runs.
2. **spinning**: every spinner's ``spin`` is called and has logged that it started; the rounds
   run while they spin (for at most ``--time-budget`` − 2 s, so they all end inside the loops).

Reports p50/p99/max of each kind of request per phase and the CPU probe (a fixed pure-Python
loop, best and median of 5) at the start and end. Exit status 1 when an answer was not 200, a
spinning call ended before the rounds did, or a spinning call was not stopped by its time budget.
Only 127.0.0.1 is contacted; everything is bounded in count and time.

Usage: ``python -m loadtest.bench_isolation [--target standalone] [--rounds 200] [--json out.json]``
(``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.bench_cluster import CpuProbe, cpu_probe
from loadtest.bench_http import finish, machine_info, percentile
from orrery.cluster_local import LocalCluster
from tests.isolation_probe import FUEL_BUDGET, MODULE_TEST
from tests.servers import Client, Reply, StandaloneServer
from tests.wat_modules import SPINNING, spinning_module

TARGETS = ("standalone", "cluster")
KINDS = ("ping", "sql", "call")


@dataclass
class Latencies:
    """One kind of request in one phase: milliseconds, sorted."""

    kind: str
    ms: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.ms, 99)


@dataclass
class Phase:
    """The rounds of one phase."""

    name: str
    seconds: float
    latencies: list[Latencies]
    non_200: int = 0
    spinners_ended_early: int = 0


@dataclass
class TargetResult:
    """One target's two phases and its CPU probes."""

    target: str
    phases: list[Phase] = field(default_factory=list)
    probe_start: CpuProbe | None = None
    probe_end: CpuProbe | None = None
    spinners_not_stopped_by_budget: int = 0

    @property
    def ok(self) -> bool:
        return self.spinners_not_stopped_by_budget == 0 and all(
            p.non_200 == 0 and p.spinners_ended_early == 0 for p in self.phases
        )


@dataclass
class Report:
    """Everything the benchmark measured."""

    machine: dict[str, Any]
    config: dict[str, Any]
    targets: list[TargetResult]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.targets)


@contextlib.contextmanager
def server_url(target: str, time_budget_s: int, data_parent: str, log: Callable[[str], None]) -> Iterator[str]:
    """The base URL of a fresh server of ``target`` with these budgets, stopped on every exit."""
    budgets = ["--time-budget", str(time_budget_s), "--fuel-budget", str(FUEL_BUDGET)]
    d = tempfile.mkdtemp(prefix=f"orrery-bench-isolation-{target}-", dir=data_parent)
    try:
        if target == "standalone":
            server = StandaloneServer(Path(d) / "data", args=["--log-level", "warning", *budgets], log_dir=Path(d) / "logs")
            with server:
                log(f"  standalone server on {server.url}")
                yield server.url
        else:
            cluster = LocalCluster(Path(d) / "cluster", nodes=3, listen_addr="127.0.0.1:0", hostnode_args=budgets)
            cluster.up()
            try:
                log(f"  cluster up: 3 host nodes, gateway {cluster.gateway_url}")
                yield cluster.gateway_url
            finally:
                cluster.down()
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def rounds(c: Client, token: str, rounds: int, seconds: float, busy: list[asyncio.Task[Reply]], name: str) -> Phase:
    """Up to ``rounds`` rounds of ping / SQL / call on calm, for at most ``seconds``."""
    ms: dict[str, list[float]] = {k: [] for k in KINDS}
    phase = Phase(name, 0.0, [])
    requests: dict[str, Callable[[int], Awaitable[Reply]]] = {
        "ping": lambda _i: c.get("/v1/ping"),
        "sql": lambda _i: c.sql("calm", "SELECT * FROM kv WHERE key = 'k0'", token=token),
        "call": lambda i: c.call("calm", "set_kv", f"k{i % 100}", "v", token=token),
    }
    start = time.perf_counter()
    for i in range(rounds):
        if time.perf_counter() - start > seconds:
            break
        for kind in KINDS:
            t0 = time.perf_counter()
            reply = await requests[kind](i)
            ms[kind].append((time.perf_counter() - t0) * 1e3)
            phase.non_200 += reply.status != 200
        phase.spinners_ended_early = sum(t.done() for t in busy)
        if phase.spinners_ended_early:
            break
    phase.seconds = time.perf_counter() - start
    phase.latencies = [Latencies(k, sorted(v)) for k, v in ms.items()]
    return phase


async def wait_for_log(c: Client, db: str, token: str, timeout: float) -> None:
    """Until ``db``'s module log shows its spinning code started (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = await c.get(f"/v1/database/{db}/logs", token=token, params={"num_lines": "5"})
        if logs.status == 200 and SPINNING in logs.text:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{db} did not start spinning within {timeout:g} s")


async def run_target(url: str, args: argparse.Namespace, result: TargetResult, log: Callable[[str], None]) -> None:
    async with Client(url) as c:
        _, token = await c.new_identity()
        assert (await c.publish("calm", MODULE_TEST, token=token)).status == 200
        spinners = [f"spin-{i}" for i in range(args.spinners)]
        for db in spinners:
            assert (await c.publish(db, spinning_module("reducer"), token=token)).status == 200
        await c.call("calm", "set_kv", "k0", "v", token=token)
        window = args.time_budget - 2
        result.phases.append(await rounds(c, token, args.rounds, window, [], "quiet"))
        busy = [asyncio.create_task(c.call(db, "spin", token=token)) for db in spinners]
        for db in spinners:
            await wait_for_log(c, db, token, window)
        result.phases.append(await rounds(c, token, args.rounds, window, busy, "spinning"))
        for task in busy:
            reply = await task
            result.spinners_not_stopped_by_budget += not (reply.status == 530 and "time budget" in reply.text)


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> Report:
    report = Report(machine_info(), {k: v for k, v in vars(args).items() if k not in ("json", "dir")}, [])
    for target in args.target or TARGETS:
        log(f"{target}: {args.spinners} spinning databases, time budget {args.time_budget} s ...")
        result = TargetResult(target, probe_start=cpu_probe())
        with server_url(target, args.time_budget, args.dir, log) as url:
            asyncio.run(run_target(url, args, result, log))
        result.probe_end = cpu_probe()
        report.targets.append(result)
    return report


def render(report: Report) -> str:
    lines = [f"machine: {report.machine['cpu']}, {report.machine['cores']} cores, {report.machine['python']}"]
    for t in report.targets:
        probes = " → ".join(
            f"{p.best_ms:.1f}/{p.median_ms:.1f} ms (load {p.loadavg})" for p in (t.probe_start, t.probe_end) if p
        )
        lines.append(f"\n{t.target}: CPU probe best/median {probes}")
        lines.append(f"  {'phase':<9} {'request':<5} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for p in t.phases:
            for lat in p.latencies:
                lines.append(
                    f"  {p.name:<9} {lat.kind:<5} {len(lat.ms):>5} {lat.p50:>8.2f} {lat.p99:>8.2f} "
                    f"{(lat.ms[-1] if lat.ms else 0):>8.2f}"
                )
            if p.non_200 or p.spinners_ended_early:
                lines.append(f"  !! {p.name}: {p.non_200} answers not 200, {p.spinners_ended_early} spinners ended early")
        if t.spinners_not_stopped_by_budget:
            lines.append(f"  !! {t.spinners_not_stopped_by_budget} spinning calls were not stopped by the time budget")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_isolation", description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=TARGETS, help="standalone and/or cluster (default both)")
    parser.add_argument("--spinners", type=int, default=3, help="databases that spin (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of ping/SQL/call per phase (default %(default)s)")
    parser.add_argument("--time-budget", type=int, default=20, help="seconds per call (default %(default)s)")
    parser.add_argument("--dir", default="/var/tmp", help="where the servers' data goes (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.spinners < 1 or args.rounds < 1 or args.time_budget < 5:
        parser.error("--spinners and --rounds must be positive and --time-budget at least 5")
    report = run(args)
    return finish(report, render(report), args.json)


if __name__ == "__main__":
    raise SystemExit(main())
