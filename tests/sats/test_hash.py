"""sats.hash: Keccak-256 (not SHA3-256) and 1.12's forms of a ``Hash``."""

from __future__ import annotations

import hashlib

import pytest

from sats.hash import HASH_SIZE, hash_bytes, to_sats_json


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        # The Keccak team's / Ethereum's well-known Keccak-256 values.
        (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
        (
            b"The quick brown fox jumps over the lazy dog",
            "4d741b6f1eb29cb2a9b9911c82f56fa8d73b04959d3d9d222895df6c0b28aa15",
        ),
    ],
)
def test_keccak_256_vectors(data: bytes, digest: str) -> None:
    assert hash_bytes(data).hex() == digest
    assert hash_bytes(data) != hashlib.sha3_256(data).digest()  # the padding differs from FIPS 202


def test_sats_json_is_the_little_endian_u256() -> None:
    assert to_sats_json(b"\x01" + bytes(31)) == "0x1"
    assert to_sats_json(bytes(31) + b"\xab") == "0xab" + "00" * 31
    digest = hash_bytes(b"")
    assert to_sats_json(digest) == "0x" + digest[::-1].hex().lstrip("0")
    with pytest.raises(ValueError):
        to_sats_json(bytes(HASH_SIZE - 1))
