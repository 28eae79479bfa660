"""Deterministic cost of a follower applying one `transfer`: replay under callgrind.

A leader database runs N transfers; a second database with the same program and seed (what a
follower holds) then applies their commit-log payloads with ``replay_payload``, the function a
follower (and recovery) runs for every record. The replays run under ``itertools.starmap``, so
callgrind can count them and nothing else:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --toggle-collect=starmap_next \\
        .venv/bin/python -m loadtest.callgrind_replay 2000

("Collected" / 2000 = instructions per replayed transfer.) Without valgrind it prints the
wall-clock cost per record. Either way it ends by comparing every table of the two databases
after a checkpoint and exits 1 if they differ.
"""

from __future__ import annotations

import itertools
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

from hostnode.database import Database, DatabaseConfig, replay_payload
from sats.identity import Identity

WASM = Path(__file__).resolve().parent.parent / "modules" / "transfer" / "transfer.wasm"


def main(argv: list[str] | None = None) -> int:
    """Run N transfers on a leader (N from argv, default 2000), replay them on a replica, compare."""
    args = sys.argv[1:] if argv is None else argv
    calls = int(args[0]) if args else 2000
    owner = Identity.from_claims("callgrind", "owner")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        dbs = []
        for name in ("leader", "replica"):
            db, _ = Database.create(
                Path(d) / name, WASM.read_bytes(), owner=owner, identity=Identity.from_claims("cg", "db"),
                config=DatabaseConfig(checkpoint_every_s=1e9),
            )  # fmt: skip
            db.call_reducer("seed", struct.pack("<Iq", 20_000, 1000), caller=owner)
            db.checkpoint()
            dbs.append(db)
        leader, replica = dbs
        start = leader.clog.next_offset
        rng = random.Random(5)
        for _ in range(calls):
            args8 = struct.pack("<IIq", rng.randrange(20_000), rng.randrange(20_000), 1)
            leader.call_reducer("transfer", args8, caller=owner)
        payloads = [rec.payload for rec in leader.clog.read_from(start, leader.clog.next_offset)]
        ds = replica.datastore
        t0 = time.perf_counter()
        for _ in itertools.starmap(replay_payload, zip(itertools.repeat(ds), payloads)):
            pass
        seconds = time.perf_counter() - t0
        print(f"replayed {len(payloads)} records: {1e6 * seconds / max(1, len(payloads)):.1f} µs each")
        leader.checkpoint()
        ds.checkpoint(leader.clog.next_offset - 1)
        a, b = leader.datastore.begin_read(), ds.begin_read()
        different = [s.name for tid, s in a.tables().items() if sorted(a.scan(tid)) != sorted(b.scan(tid))]
        leader._close_quietly()
        replica._close_quietly()
    if different:
        print(f"the replica differs from the leader in {', '.join(different)}")
        return 1
    print("the replica holds the leader's rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
