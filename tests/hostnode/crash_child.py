"""Child process for the crash-recovery test: runs transfers until it is killed.

Usage: python crash_child.py DIR ACCOUNTS SEED. Creates the database on first run (printing
READY), then loops: a batch of random transfers, wait until durable, print one ``ACK`` line per
durable transaction (``ACK offset from to amount``). The parent SIGKILLs it at a random moment.
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

from hostnode.database import Database, DatabaseConfig
from sats.identity import Identity

WASM = Path(__file__).resolve().parents[2] / "modules" / "transfer" / "transfer.wasm"
INITIAL = 1000


def main() -> None:
    path, accounts, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    owner = Identity.from_claims("crash", "owner")
    # Small checkpoint intervals so kills land around checkpoints too.
    config = DatabaseConfig(checkpoint_every_txs=37, checkpoint_every_s=0.01)
    if (path / "clog").exists():
        db = Database.open(path, config)
    else:
        db, _ = Database.create(path, WASM.read_bytes(), owner=owner, identity=Identity.from_claims("crash", "db"),
                                config=config)
        out = db.call_reducer("seed", struct.pack("<Iq", accounts, INITIAL), caller=owner)
        assert out.committed, out.message
        db.wait_durable()
    print("READY", flush=True)
    rng = random.Random(seed)
    out_lines = sys.stdout
    while True:
        batch = []
        for _ in range(rng.randint(1, 40)):
            a, b = rng.randrange(accounts), rng.randrange(accounts)
            amount = rng.randint(-5, 400)  # some fail: same_account, non_positive_amount, insufficient_funds
            o = db.call_reducer("transfer", struct.pack("<IIq", a, b, amount), caller=owner)
            if o.committed:
                batch.append((o.offset, a, b, amount))
        db.wait_durable()
        out_lines.write("".join(f"ACK {off} {a} {b} {amt}\n" for off, a, b, amt in batch))
        out_lines.flush()


if __name__ == "__main__":
    main()
