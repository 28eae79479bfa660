"""Encoder micro-benchmark: ``TxData.encode()`` of the two-row update a transfer commits.

Every commit encodes its TxData on the writer thread before the commit-log append, so this is
on the engine's hot path (a few µs on the 2-core VM). It used to be a test with a time limit;
as a benchmark it reports instead of judging a machine's speed.
Run: ``python -m loadtest.bench_txdata [--encodes N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import time

from hostnode.txdata import TableChanges, TxData


def two_row_update() -> TxData:
    """What a transfer-like reducer commits: two rows of one table replaced."""
    old = b"\x01" + bytes(7) + b"\x05\x00\x00\x00alice"
    new = old[:-1] + b"x"
    return TxData({1: TableChanges([new, old], [old + b"y", new + b"y"], [3, 4])})


def best_micros_per_encode(encodes: int, rounds: int) -> float:
    """The best of ``rounds`` timings of ``encodes`` encodes, in µs per encode."""
    td = two_row_update()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(encodes):
            td.encode()
        best = min(best, (time.perf_counter() - started) / encodes)
    return best * 1e6


def main() -> None:
    """Print µs per encode."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encodes", type=int, default=20_000, help="encodes per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    micros = best_micros_per_encode(args.encodes, args.rounds)
    print(f"TxData.encode, two-row update: {micros:.2f} µs/encode (best of {args.rounds}x{args.encodes})")


if __name__ == "__main__":
    main()
