"""Extract SpacetimeDB's own Rust-built test modules from a clone of its repository.

Some tests also run official builds when ``ORRERY_OFFICIAL_MODULES`` names a directory holding
them (they are never committed to Orrery). This writes that directory::

    git clone https://github.com/clockworklabs/SpacetimeDB            # any clone with the tags
    .venv/bin/python tools/official_modules.py path/to/SpacetimeDB DIR
    ORRERY_OFFICIAL_MODULES=DIR make pytest

* ``quickstart-chat.wasm``: SpacetimeDB's ``modules/quickstart-chat`` as a 1.2 database
  published it, the ``st_module`` row of
  ``crates/core/testdata/v1.2/replicas/22000001/clog/00000000000000000000.stdb.log`` (tag
  v1.12.0): the program bytes follow the row's 32-byte ``program_hash`` and u32 length. The
  script checks that the hash SpacetimeDB stored is the Keccak-256 of the bytes.
* ``upgrade_old_module_v1.wasm``: ``crates/smoketests/fixtures/upgrade_old_module_v1.wasm``
  (tag v2.0.0; a module built with pre-v10 bindings, one ``noop`` reducer).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from sats.hash import hash_bytes

WASM_MAGIC = b"\x00asm\x01\x00\x00\x00"
CHAT_LOG = ("v1.12.0", "crates/core/testdata/v1.2/replicas/22000001/clog/00000000000000000000.stdb.log")
UPGRADE_OLD = ("v2.0.0", "crates/smoketests/fixtures/upgrade_old_module_v1.wasm")


def program_in_log(log: bytes) -> tuple[bytes, bytes]:
    """The one program a commit log's ``st_module`` insert holds, and the hash stored with it.

    The row's BSATN is ``… program_kind u8 | program_hash [32] | len u32 | program bytes …``.
    """
    start = log.find(WASM_MAGIC)
    if start < 36 or log.find(WASM_MAGIC, start + 1) != -1:
        raise ValueError("expected exactly one wasm program in the commit log")
    length = int.from_bytes(log[start - 4 : start], "little")
    program, stored_hash = log[start : start + length], log[start - 36 : start - 4]
    if len(program) != length:
        raise ValueError("the program runs past the end of the commit log")
    return program, stored_hash


def _git_show(repo: Path, rev: str, path: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{rev}:{path}"], check=True, capture_output=True
    ).stdout


def main(argv: list[str] | None = None) -> int:
    """Write ``quickstart-chat.wasm`` and ``upgrade_old_module_v1.wasm`` into the output directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spacetimedb", type=Path, help="a git clone of SpacetimeDB (with tags)")
    parser.add_argument("out", type=Path, help="the directory to write (ORRERY_OFFICIAL_MODULES)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    program, stored_hash = program_in_log(_git_show(args.spacetimedb, *CHAT_LOG))
    if hash_bytes(program) != stored_hash:
        print("error: the program in the log does not match its stored Keccak-256 hash", file=sys.stderr)
        return 1
    (args.out / "quickstart-chat.wasm").write_bytes(program)
    (args.out / "upgrade_old_module_v1.wasm").write_bytes(_git_show(args.spacetimedb, *UPGRADE_OLD))
    print(f"wrote quickstart-chat.wasm (Keccak-256 {stored_hash.hex()}) and upgrade_old_module_v1.wasm to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
