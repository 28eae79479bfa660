"""Deterministic cost of a `transfer` call: run it under callgrind and count instructions.

Wall-clock figures on a shared VM move ±15 %; instruction counts do not. Run twice and subtract:

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg0 .venv/bin/python -m loadtest.callgrind_transfer 0
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg1 .venv/bin/python -m loadtest.callgrind_transfer 2000

(instructions of the second − the first) / 2000 = instructions per transfer. The commit log's
sync thread is stopped before the calls so only the caller's work is counted, and time-based
checkpoints are off: under valgrind 32 calls take longer than the checkpoint interval, and a checkpoint
would wait for a sync that never comes.

The difference also counts this script's own work around the calls (~9.6k instructions per
call more than the calls themselves, measured on two trees) and moves by ±1.5k between runs
(wasmtime compiles on several threads at startup; set PYTHONHASHSEED=0, hash randomisation moves
it too). The calls run under ``itertools.starmap``, so one run can count them and nothing else:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --toggle-collect=starmap_next .venv/bin/python -m loadtest.callgrind_transfer 2000

("Collected" / 2000 = instructions per ``Database.call_reducer("transfer", ...)``; two runs of
one tree agree within ±50, so cuts of a few hundred instructions can be told apart.)
"""

from __future__ import annotations

import itertools
import random
import struct
import sys
import tempfile
from pathlib import Path

from hostnode.database import Database, DatabaseConfig
from sats.identity import Identity

WASM = Path(__file__).resolve().parent.parent / "modules" / "transfer" / "transfer.wasm"


def main() -> None:
    """Create a database, seed 20,000 accounts and run N transfers (N from argv)."""
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    owner = Identity.from_claims("callgrind", "owner")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        db, _ = Database.create(
            Path(d) / "db", WASM.read_bytes(), owner=owner, identity=Identity.from_claims("cg", "db"),
            config=DatabaseConfig(checkpoint_every_s=1e9),
        )  # fmt: skip
        db.call_reducer("seed", struct.pack("<Iq", 20_000, 1000), caller=owner)
        db.checkpoint()
        rng = random.Random(5)
        args = [struct.pack("<IIq", rng.randrange(20_000), rng.randrange(20_000), 1) for _ in range(calls)]
        # The sync thread stops here (after a last sync), so each call's notify finds no thread
        # to wake; closing the database syncs the log. (Stopped, not patched: a compiled
        # GroupCommitter's methods cannot be replaced.) Closing the database then skips its checkpoint.
        db.committer.close()
        call = db.call_reducer
        # Under starmap so that valgrind --toggle-collect=starmap_next counts just these calls.
        for _ in itertools.starmap(lambda a: call("transfer", a, caller=owner), zip(args)):
            pass
        # Without the checkpoint Database.close starts (it would wait on the stopped sync
        # thread); closing the log syncs what the calls appended.
        db._close_quietly()


if __name__ == "__main__":
    main()
