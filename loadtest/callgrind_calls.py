"""Instructions the split server's processes execute per reducer call (callgrind).

Wall-clock figures of the serving shapes move 2-4x with the machine's state; instruction counts
do not. This starts ``orrery.standalone --transport split`` under ``valgrind --tool=callgrind``
(instrumentation off; with ``--process node`` the host-node child too), publishes and seeds the
``transfer`` module, sends ``--warmup`` calls, then turns instrumentation on in the process
counted for exactly ``--calls`` calls of ``transfer(a, b, 1)`` and reports the instructions
counted divided by the calls: ``gateway`` (default) or ``node`` (every thread of it: the loop,
the writer, the commit log's sync thread; the engine's own part alone is
``loadtest/callgrind_transfer.py``'s). ``--protocol http`` (default): ``POST /call`` from
``--clients`` keep-alive clients (bench_http's hand-written client); ``--protocol ws``:
``CallReducer`` over ``--clients`` WebSocket connections (BSATN, ``confirmed``), each keeping
``--inflight`` calls outstanding (bench_ws's raw client).

Usage: ``.venv/bin/python -m loadtest.callgrind_calls [--protocol http|ws] [--process
gateway|node] [--calls 2000] [--clients 16] [--inflight 8] [--threads] [--keep DIR]`` (``--threads``:
each thread's share too; thread 1 is the event loop's) (valgrind on PATH; a
minute or two). Compare two trees by running it in each; the figure moves by well under 1 %
between runs of one tree.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from loadtest import bench_http, bench_ws
from loadtest.bench_shapes import server_processes
from tests.servers import Client, StandaloneServer


async def _ws_calls(url: str, tokens: list[str], count: int, inflight: int, accounts: int, seed: int) -> int:
    """``count`` transfers over one WebSocket connection per token, ``inflight`` outstanding on
    each; the number answered with a committed update."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    cfg = bench_ws.BenchConfig(conns=len(tokens), inflight=inflight, accounts=accounts, max_calls=count)
    stats = await bench_ws.reducer_load(host, int(port), tokens, cfg, alpha=None, seconds=3600, confirmed=True,
                                        label="counted", server_pids={}, seed=seed, db=bench_ws.TRANSFER_DB)  # fmt: skip
    return stats.calls - stats.bad_answers


async def _calls(url: str, token: str, count: int, clients: int, accounts: int, seed: int) -> int:
    """``count`` transfers over ``clients`` keep-alive connections; the number answered 200."""
    path = f"/v1/database/{bench_http.DB_NAME}/call/transfer"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    rng = random.Random(seed)
    todo = [count]
    ok = [0]

    async def worker() -> None:
        stream = bench_http._StreamHttp(url, headers, [0])
        try:
            while todo[0] > 0:
                todo[0] -= 1
                a = rng.randrange(accounts)
                b = (a + 1 + rng.randrange(accounts - 1)) % accounts
                status, _, _ = await asyncio.wait_for(stream.post(path, b"[%d,%d,1]" % (a, b)), 120)
                ok[0] += status == 200
        finally:
            stream.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return ok[0]


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, stdout=subprocess.DEVNULL)


def _total(out_dir: Path) -> int:
    """The instructions in every dump callgrind wrote (only the measured window was instrumented)."""
    return _instructions(out_dir.glob("counted*.cg"))


def _instructions(files: Iterable[Path]) -> int:
    """The sum of the self costs in callgrind dumps (a cost line right after a ``calls=`` line is a
    call's inclusive cost, counted in its callee already). The dumps' ``summary:`` lines say 0 when
    instrumentation starts switched off, so they are not used."""
    total = 0
    for f in files:
        after_call = False
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("calls="):
                after_call = True
                continue
            parts = line.split()
            if len(parts) >= 2 and (line[:1].isdigit() or line[:1] in "+-*"):
                if not after_call:
                    total += int(parts[-1])
                after_call = False
    return total


def _per_thread(out_dir: Path) -> dict[int, int]:
    """The instructions of each thread (``--separate-threads=yes`` writes a dump per thread, named
    ``…-<thread number>``; 1 is the main thread, the event loop's)."""
    files: dict[int, list[Path]] = {}
    for f in out_dir.glob("counted*.cg"):
        number = f.name.removesuffix(".cg").rpartition("-")[2]
        if number.isdigit():
            files.setdefault(int(number), []).append(f)
    return {thread: _instructions(fs) for thread, fs in files.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=("http", "ws"), default="http", help="how the calls come (default http)")
    ap.add_argument("--process", choices=("gateway", "node"), default="gateway", help="the process counted")
    ap.add_argument("--calls", type=int, default=2000, help="calls counted (default 2000)")
    ap.add_argument("--warmup", type=int, default=500, help="calls before counting (default 500)")
    ap.add_argument("--clients", type=int, default=16, help="keep-alive clients or WebSocket connections (default 16)")
    ap.add_argument("--inflight", type=int, default=8, help="calls outstanding per WebSocket connection (default 8)")
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--dir", default="/var/tmp", help="parent of the temporary data directory")
    ap.add_argument("--keep", type=Path, help="copy the counted process's dumps here (for callgrind_annotate)")
    ap.add_argument("--threads", action="store_true", help="also count each thread of the process apart")
    a = ap.parse_args(argv)
    if min(a.calls, a.clients, a.inflight, a.accounts - 1) < 1 or a.warmup < 0:
        ap.error("--calls, --clients, --inflight and --accounts - 1 must be positive, --warmup not negative")
    missing = [t for t in ("valgrind", "callgrind_control") if shutil.which(t) is None]
    if missing:
        print(f"callgrind_calls: {', '.join(missing)} not found (Debian package valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="orrery-callgrind-calls-", dir=a.dir) as d:
        out = Path(d)
        wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/cg.%p"]
        if a.process == "node":
            wrapper.insert(2, "--trace-children=yes")
        if a.threads:
            wrapper.insert(2, "--separate-threads=yes")
        server = StandaloneServer(out / "data", args=["--log-level", "warning"], log_dir=out / "logs",
                                  transport="split", wrapper=wrapper, start_timeout=900)  # fmt: skip
        print("starting the split server under callgrind ...", flush=True)
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        if a.process == "node":
            (pid,) = [p for name, p in server_processes(pid).items() if name.startswith("orrery.standalone_node ")]
        try:
            if a.protocol == "http":
                cfg = bench_http.BenchConfig(accounts=a.accounts)

                async def prepare(c: Client) -> str:
                    token, _, _ = await bench_http.setup(c, cfg)
                    return token

                token = server.run(prepare)

                def calls(count: int, seed: int) -> int:
                    return asyncio.run(_calls(server.url, token, count, a.clients, a.accounts, seed))
            else:
                ws_cfg = bench_ws.BenchConfig(conns=a.clients, accounts=a.accounts)
                tokens = server.run(lambda c: bench_ws._setup_transfer(c, ws_cfg))

                def calls(count: int, seed: int) -> int:
                    return asyncio.run(_ws_calls(server.url, tokens, count, a.inflight, a.accounts, seed))

            print(f"warming up with {a.warmup} calls ...", flush=True)
            calls(a.warmup, 1)
            _control("-z", str(pid))  # nothing counted so far
            _control("-i", "on", str(pid))
            print(f"counting {a.calls} calls ...", flush=True)
            ok = calls(a.calls, 2)
            _control("-i", "off", str(pid))
            _control("-d", str(pid))
        finally:
            server.stop()
        for f in [out / f"cg.{pid}", *out.glob(f"cg.{pid}.*"), *out.glob(f"cg.{pid}-*")]:
            if f.exists():  # the last dump, at exit, the ones asked for (cg.<pid>.<n>), per thread (-<t>)
                f.rename(out / f"counted{f.name.removeprefix(f'cg.{pid}')}.cg")
        if ok != a.calls:
            print(f"callgrind_calls: only {ok} of {a.calls} calls succeeded", file=sys.stderr)
            return 1
        total = _total(out)
        threads = _per_thread(out) if a.threads else {}
        if a.keep is not None:
            a.keep.mkdir(parents=True, exist_ok=True)
            for f in out.glob("counted*.cg"):
                shutil.copy(f, a.keep / f.name)
    for thread, count in sorted(threads.items()):
        if count:
            print(f"  thread {thread}: {count / a.calls:,.0f} per call")
    shape = f"{a.clients} clients" if a.protocol == "http" else f"{a.clients} connections x {a.inflight} in flight"
    print(f"{a.process}: {total:,} instructions for {a.calls} {a.protocol} calls = {total / a.calls:,.0f} per call "
          f"({shape})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
