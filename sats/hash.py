"""SpacetimeDB 1.12's ``Hash``: a 32-byte Keccak-256 digest, how it is shown and serialised.

1.12 (``crates/sats/src/hash.rs``) names a program by ``hash_bytes(program)``, the Keccak-256
digest of its bytes: the database's ``initial_program`` and the module hashes a migration token
is made from. Keccak-256 is the original Keccak submission (pad byte 0x01), not FIPS 202's
SHA3-256 (pad byte 0x06): same sponge, different digests. ``hashlib`` has only SHA3, so the
digest comes from pycryptodome (a server dependency, imported on first use: the client SDK,
which shares this package, never hashes).

Forms of a hash, all from the 32 digest bytes:

* ``to_hex`` (``Hash::to_hex``, ``Display``): 64 lowercase hex digits of the digest bytes in
  order, no ``0x`` — what the migration token hashes and what logs print;
* SATS (``impl_serialize!``): the u256 whose little-endian bytes are the digest, so in
  SATS-JSON ``"0x…"`` with the digest byte-reversed and leading zeros stripped (client-api.md
  §1): ``initial_program`` and the pre-publish ``token``.
"""

from __future__ import annotations

HASH_SIZE = 32


def hash_bytes(data: bytes) -> bytes:
    """The Keccak-256 digest of ``data`` (1.12's ``hash_bytes``)."""
    from Crypto.Hash import keccak  # server-only dependency (see the module docstring)

    return keccak.new(data=data, digest_bits=256).digest()


def to_sats_json(digest: bytes) -> str:
    """A hash in SATS-JSON: ``0x`` and the hex of the u256 read little-endian from the digest."""
    if len(digest) != HASH_SIZE:
        raise ValueError(f"a hash has {HASH_SIZE} bytes, not {len(digest)}")
    return f"0x{int.from_bytes(digest, 'little'):x}"
