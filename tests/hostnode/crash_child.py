"""Child process for the crash-recovery test: runs transfers until it is killed.

Usage: python crash_child.py DIR ACCOUNTS SEED [http]. Creates the database on first run
(printing READY), then loops: a batch of random transfers, wait until durable, print one ``ACK``
line per durable transaction (``ACK offset from to amount``). The parent SIGKILLs it at a random
moment. With ``http`` the transfers are HTTP ``/call``s through a host node
(``HostNode.call_via_http``), a batch of them in flight at once, each acknowledged when its
answer comes; the database then lives in ``DIR/databases/<identity>``.
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys
from pathlib import Path

from hostnode.database import Database, DatabaseConfig
from hostnode.service import HostNode, HostNodeConfig
from sats.identity import Identity

WASM = Path(__file__).resolve().parents[2] / "modules" / "transfer" / "transfer.wasm"
INITIAL = 1000


OWNER = Identity.from_claims("crash", "owner")
DATABASE = Identity.from_claims("crash", "db")
# Small checkpoint intervals so kills land around checkpoints too.
CONFIG = DatabaseConfig(checkpoint_every_txs=37, checkpoint_every_s=0.01)


def main() -> None:
    path, accounts, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4:] == ["http"]:
        asyncio.run(http_calls(path, accounts, seed))
        return
    owner, config = OWNER, CONFIG
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


async def http_calls(path: Path, accounts: int, seed: int) -> None:
    """The ``http`` mode of :func:`main`."""
    node = HostNode(HostNodeConfig(path, database=CONFIG))
    await node.start()
    if not node.has(DATABASE):
        await node.install(DATABASE, OWNER, WASM.read_bytes())
        out = await node.call_reducer(DATABASE, "seed", struct.pack("<Iq", accounts, INITIAL), caller=OWNER)
        assert out.committed, out.message
    print("READY", flush=True)
    rng = random.Random(seed)
    connection_id = 0

    async def transfer(a: int, b: int, amount: int) -> str:
        nonlocal connection_id
        connection_id += 1
        done = await node.call_via_http(
            DATABASE, "transfer", struct.pack("<IIq", a, b, amount), caller=OWNER, connection_id=connection_id
        )
        out = done.reducer
        return f"ACK {out.offset} {a} {b} {amount}\n" if out is not None and out.committed else ""

    while True:
        calls = [
            # Some fail: same_account, non_positive_amount, insufficient_funds.
            transfer(rng.randrange(accounts), rng.randrange(accounts), rng.randint(-5, 400))
            for _ in range(rng.randint(1, 40))
        ]
        for ack in asyncio.as_completed(calls):
            line = await ack
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()


if __name__ == "__main__":
    main()
