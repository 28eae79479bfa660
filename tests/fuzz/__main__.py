"""``python -m tests.fuzz [--seconds N] [TARGET ...]``: the long fuzz run behind ``make fuzz``.

Runs each target (all by default) for ``--seconds`` (per target), one after another, and prints
how many inputs each ran. Exits 1 at the first failing input, after hypothesis has shrunk it and
printed it (with the failure, e.g. the 5xx response and the server log's tail).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

from orrery.process import configure_logging
from tests.fuzz.runner import run_for
from tests.fuzz.targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    """Run the targets; 0 when every input was handled cleanly."""
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="time per target (default 60)")
    # [] among the choices: argparse checks the empty default of nargs="*" against them.
    parser.add_argument("targets", nargs="*", choices=[[], *TARGETS], metavar="TARGET",
                        help=f"targets to run (default all): {', '.join(TARGETS)}")  # fmt: skip
    args = parser.parse_args(argv)
    configure_logging("warning")  # as a server logs: sqlglot's per-statement warnings muted
    names = args.targets or list(TARGETS)
    total = 0
    for name in names:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"orrery-fuzz-{name}-") as workdir:
            try:
                count = run_for(TARGETS[name], args.seconds, Path(workdir))
            except Exception as e:
                # The whole chain: a flaky failure's cause is in its sub-exceptions.
                print(f"fuzz {name}: FAILED after {time.monotonic() - started:.0f} s:", flush=True)
                traceback.print_exception(e, file=sys.stdout)
                return 1
        total += count
        print(f"fuzz {name}: {count} inputs in {time.monotonic() - started:.0f} s, 0 failures", flush=True)
    print(f"fuzz: {total} inputs over {len(names)} targets, 0 failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
