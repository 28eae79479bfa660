"""One commit fanned out to many subscribers with nothing else running: what each process spends.

``python -m loadtest.probe_fanout [--rounds 30] [--conns 1000] [--transport split]`` starts a
standalone server, subscribes ``--conns`` connections to quickstart-chat's ``message`` table
(bench_ws's fan-out), sends ``--rounds`` messages one at a time, and prints the delivery
latencies (p50 / p99 / max over every subscriber of every round; then first / median / 99th /
last arrival per round, in ms) and the CPU each process used per round: the load generator
(this process), the server (the gateway) and each process it started (the host node). It is the
fan-out shape of ``bench_shapes`` without its 64 × 40 load, to see the cost per subscriber
rather than the queueing under load. Bounded: ``--rounds`` rounds, each waiting at most 30 s
for its caller's answer and 10 s for its deliveries.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from loadtest import bench_ws
from loadtest.bench_shapes import server_processes
from tests.servers import TRANSPORTS, StandaloneServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--transport", choices=TRANSPORTS, default="split")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.conns < 1:
        ap.error("--rounds and --conns must be at least 1")
    bench_ws._raise_fd_limit(a.conns * 2 + 256)
    with tempfile.TemporaryDirectory(prefix="orrery-probe-fanout-", dir="/var/tmp") as d:
        server = StandaloneServer(
            Path(d) / "data", args=["--log-level", "warning"], log_dir=Path(d) / "logs", transport=a.transport
        )
        server.start()
        assert server.proc is not None
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        pids = server_processes(server.proc.pid)
        cfg = bench_ws.BenchConfig(fanout_conns=a.conns, fanout_rounds=a.rounds)
        start: dict[str, float] = {}

        async def before_rounds() -> None:
            start.update(bench_ws._cpu_of(pids))
            start["generator"] = time.process_time()

        try:
            fan = server.run(lambda c: bench_ws.fanout(host, int(port), c, cfg, print, before_rounds=before_rounds))
            used = {name: cpu - start[name] for name, cpu in bench_ws._cpu_of(pids).items() if name in start}
            used["generator"] = time.process_time() - start["generator"]
        finally:
            server.stop()
    print(f"{a.conns} subscribers × {a.rounds} rounds ({a.transport}): p50 {fan.p50_ms:.1f} ms, "
          f"p99 {fan.p99_ms:.1f} ms, max {fan.max_ms:.1f} ms, {fan.missing} missing, {fan.bad_answers} bad")  # fmt: skip
    print("rounds (first / p50 / p99 / last ms):", " ".join(f"{x:.0f}/{y:.0f}/{z:.0f}/{w:.0f}" for x, y, z, w in fan.round_ms))
    for name, seconds in used.items():
        print(f"  {name}: {seconds * 1e3 / a.rounds:.1f} ms CPU per round")
    return 0 if fan.missing == 0 and fan.bad_answers == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
