"""In-process engine benchmark: `transfer` reducer calls per second on one thread.

Seeds the `transfer` module with N accounts, then runs transfers with uniform and Zipf(α)
account choice, with durable group commit (the commit log fsyncs on its own thread; the run
ends only when every transaction is durable). A second, instrumented pass splits the time per
call into wasm, host-call overhead, datastore and commit log (with the plain-Python engine only:
the instrumentation wraps methods, which the compiled one, ``make native``, does not allow).

Usage: ``python -m loadtest.bench_engine [--accounts N] [--calls N] [--alpha A] [--json out.json]``
(``make bench``; ``loadtest.bench_shapes`` runs it with ``--json`` for the engine figure its ratios use).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import platform
import random
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hostnode.database import Database, DatabaseConfig
from hostnode.runtime import tune_gc_for_serving
from sats.identity import Identity

ROOT = Path(__file__).resolve().parent.parent
TRANSFER_WASM = ROOT / "modules" / "transfer" / "transfer.wasm"
_ARGS = struct.Struct("<IIq")


def zipf_sampler(n: int, alpha: float, rng: random.Random) -> list[float]:
    """Cumulative weights for Zipf(alpha) over ranks 1..n (rank 1 = account 0)."""
    cum: list[float] = []
    total = 0.0
    for k in range(1, n + 1):
        total += 1.0 / k**alpha
        cum.append(total)
    return [c / total for c in cum]


def make_pairs(n: int, count: int, alpha: float | None, seed: int = 7) -> list[tuple[int, int]]:
    """Pre-generated (from, to) account pairs, from != to."""
    rng = random.Random(seed)
    cum = zipf_sampler(n, alpha, rng) if alpha else None
    # Zipf ranks are spread over the id space by a fixed permutation so hot accounts are not adjacent.
    perm = list(range(n))
    rng.shuffle(perm)

    def pick() -> int:
        if cum is None:
            return rng.randrange(n)
        return perm[min(n - 1, bisect.bisect_left(cum, rng.random()))]

    pairs: list[tuple[int, int]] = []
    while len(pairs) < count:
        a, b = pick(), pick()
        if a != b:
            pairs.append((a, b))
    return pairs


@dataclass
class Result:
    label: str
    calls: int
    seconds: float
    committed: int
    split: dict[str, float]
    cpu_seconds: float = 0.0
    #: Zipf α of the account choice (None: uniform).
    alpha: float | None = None

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


def run_once(db: Database, pairs: list[tuple[int, int]], caller: Identity) -> tuple[float, int, float]:
    """Run every transfer; the clock stops when the last one is durable.

    Returns (wall seconds, committed count, CPU seconds of this thread). The CPU figure does not
    depend on what else the machine is doing, so it shows the engine's own cost per call.
    """
    committed = 0
    call = db.call_reducer
    pack = _ARGS.pack
    t0 = time.perf_counter()
    c0 = time.thread_time()
    for a, b in pairs:
        out = call("transfer", pack(a, b, 1), caller=caller)
        committed += out.committed
    cpu = time.thread_time() - c0
    db.wait_durable()
    return time.perf_counter() - t0, committed, cpu


def bench(accounts: int, calls: int, alpha: float, workdir: Path) -> list[Result]:
    """Run the uniform and Zipf passes; returns their results."""
    owner = Identity.from_claims("bench", "owner")
    db, _ = Database.create(
        workdir / "db", TRANSFER_WASM.read_bytes(), owner=owner, identity=Identity.from_claims("bench", "db"),
        config=DatabaseConfig(),
    )
    results = []
    try:
        print(f"seeding {accounts} accounts ...", flush=True)
        out = db.call_reducer("seed", struct.pack("<Iq", accounts, 1_000_000), caller=owner)
        assert out.committed, out.message
        db.checkpoint()
        tune_gc_for_serving()  # as the server does once it is up
        order = [("uniform", None), (f"zipf a={alpha}", alpha)]
        if os.environ.get("BENCH_ZIPF_FIRST"):
            order.reverse()
        for label, a in order:
            pairs = make_pairs(accounts, calls, a)
            run_once(db, pairs[: min(2000, calls)], owner)  # warm-up
            secs, committed, cpu = run_once(db, pairs, owner)
            split = profile_split(db, pairs[: min(calls, 20000)], owner)
            results.append(Result(label, calls, secs, committed, split, cpu, a))
            print(f"  {label}: {calls / secs:,.0f} transfers/s", flush=True)
    finally:
        db.close()
    return results


def profile_split(db: Database, pairs: list[tuple[int, int]], caller: Identity) -> dict[str, float]:
    """µs per call spent in wasm, host-call overhead, datastore and commit log (instrumented)."""
    from hostnode import profiling

    try:
        with profiling.enabled(db) as prof:
            t0 = time.perf_counter()
            for a, b in pairs:
                db.call_reducer("transfer", _ARGS.pack(a, b, 1), caller=caller)
            db.wait_durable()
            total = time.perf_counter() - t0
    except profiling.ProfilingUnavailable as e:
        print(f"  no time split: {e}", flush=True)
        return dict.fromkeys(("wasm", "host", "datastore", "commitlog", "other", "total"), math.nan)
    n = len(pairs)
    return prof.split_micros(total, n)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench_engine", description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--dir", type=Path, default=None, help="working directory (default: a temp dir on disk)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.accounts < 2 or args.calls < 1:
        ap.error("--accounts must be at least 2 and --calls positive")
    with tempfile.TemporaryDirectory(dir=args.dir or "/var/tmp") as d:
        results = bench(args.accounts, args.calls, args.alpha, Path(d))
    print()
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{len(__import__('os').sched_getaffinity(0))} cores")
    cols = [
        "workload", "transfers/s", "µs/call", "writer CPU µs/call", "committed",
        "wasm", "host calls", "datastore", "commit log", "other",
    ]
    print(" | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for r in results:
        s = r.split
        print(" | ".join([
            r.label, f"{r.rate:,.0f}", f"{1e6 / r.rate:.1f}", f"{r.cpu_seconds * 1e6 / r.calls:.1f}",
            f"{r.committed}/{r.calls}",
            f"{s['wasm']:.1f}", f"{s['host']:.1f}", f"{s['datastore']:.1f}", f"{s['commitlog']:.1f}", f"{s['other']:.1f}",
        ]))
    if args.json is not None:
        doc = [
            {"label": r.label, "alpha": r.alpha, "calls": r.calls, "seconds": r.seconds, "rate": r.rate,
             "committed": r.committed, "writer_cpu_us_per_call": r.cpu_seconds * 1e6 / r.calls, "split_us": r.split}
            for r in results
        ]  # fmt: skip
        args.json.write_text(json.dumps({"results": doc}, indent=2) + "\n")


if __name__ == "__main__":
    main()
