"""Identity and ConnectionId: byte orders, hex forms, call words, derivation from claims."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sats.bsatn import decode, encode
from sats.errors import DecodeError, EncodeError
from sats.identity import ConnectionId, Identity
from sats.types import CONNECTION_ID, IDENTITY

HEX_73 = "c20011110000000000000000000000000000000000000000000000000000abab"
BSATN_73 = bytes.fromhex("abab" + "00" * 26 + "111100c2")


def test_vector_7_3() -> None:
    ident = Identity.from_hex(HEX_73)
    assert ident.to_bsatn() == BSATN_73
    assert Identity.from_bsatn(BSATN_73) == ident
    assert ident.sender_words() == (0xABAB, 0, 0, 0xC200111100000000)
    assert Identity.from_words(*ident.sender_words()) == ident
    assert ident.to_hex() == HEX_73
    assert str(ident) == HEX_73
    assert ident.as_u256 == int(HEX_73, 16)
    assert encode(IDENTITY, ident.to_sats()) == BSATN_73
    assert Identity.from_sats(decode(IDENTITY, BSATN_73)) == ident
    assert ident.to_be_bytes() == bytes.fromhex(HEX_73)


def test_hex_parsing() -> None:
    assert Identity.from_hex("0x" + HEX_73.upper()) == Identity.from_hex(HEX_73)
    assert Identity.from_hex("0" * 64) == Identity.ZERO
    for bad in (HEX_73[:-1], HEX_73 + "0", "g" * 64, " " + HEX_73[1:], "_" + HEX_73[1:], "0x" + HEX_73[2:]):
        with pytest.raises(DecodeError):
            Identity.from_hex(bad)
    with pytest.raises(DecodeError):
        Identity.from_hex(5)  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        Identity.from_bsatn(b"\x00" * 31)
    with pytest.raises(EncodeError):
        Identity(1 << 256)
    with pytest.raises(EncodeError):
        Identity(-1)


def test_vector_7_4() -> None:
    cid = ConnectionId.from_hex("0x0123456789abcdef0011223344556677")
    assert cid.to_bsatn() == bytes.fromhex("77665544332211 00 efcdab8967452301".replace(" ", ""))
    assert cid.words() == (0x0011223344556677, 0x0123456789ABCDEF)
    assert ConnectionId.from_words(*cid.words()) == cid
    assert cid.as_u128 == 1512366075204170928972419503379277431
    assert cid.to_hex() == "0123456789abcdef0011223344556677"
    assert ConnectionId.from_bsatn(cid.to_bsatn()) == cid
    assert encode(CONNECTION_ID, cid.to_sats()) == cid.to_bsatn()
    assert ConnectionId.from_sats((cid.as_u128,)) == cid


def test_client_api_connection_id_vector() -> None:
    cid = ConnectionId.from_hex("0123456789abcdef0123456789abcdef")
    assert cid.as_u128 == 1512366075204170929049582354406559215
    assert cid.to_bsatn().hex() == "efcdab8967452301efcdab8967452301"


def test_connection_id_zero_and_random() -> None:
    assert ConnectionId.ZERO.is_zero()
    assert ConnectionId.ZERO.to_bsatn() == bytes(16)
    ids = {ConnectionId.random() for _ in range(20)}
    assert len(ids) == 20 and not any(c.is_zero() for c in ids)
    with pytest.raises(DecodeError):
        ConnectionId.from_hex("00" * 15)
    with pytest.raises(DecodeError):
        ConnectionId.from_sats(5)


@pytest.mark.parametrize(
    ("issuer", "subject", "hexid"),
    [
        ("localhost", "alice", "c20035600353a2e93544d898c6ed0eac323e200c0468300f22958f8b472a265d"),
        ("localhost", "bob", "c200e63a6bd07da2304dd6f5b4691d3338562ceaa43cad4624d0d181a7a6c0d4"),
        ("https://auth.example.com", "user-123", "c2000e9c6bea96ed193403b2bc12b1fa4e8ec2970024252762dbf8a7ddda7157"),
        (
            "localhost",
            "00000000-0000-4000-8000-000000000000",
            "c200085d8c451325cc207f963918b762072fff5388fca7006b89f4a2a7d3ee5e",
        ),
    ],
)
def test_from_claims_vectors(issuer: str, subject: str, hexid: str) -> None:
    ident = Identity.from_claims(issuer, subject)
    assert ident.to_hex() == hexid


def test_from_claims_bsatn_vector() -> None:
    ident = Identity.from_claims("localhost", "00000000-0000-4000-8000-000000000000")
    assert ident.to_bsatn().hex() == "5eeed3a7a2f4896b00a7fc8853ff2f0762b71839967f20cc2513458c5d0800c2"


@settings(max_examples=100, deadline=None)
@given(st.integers(0, (1 << 256) - 1), st.integers(0, (1 << 128) - 1))
def test_round_trips(i: int, c: int) -> None:
    ident = Identity(i)
    assert Identity.from_hex(ident.to_hex()) == ident
    assert Identity.from_bsatn(ident.to_bsatn()) == ident
    assert Identity.from_words(*ident.sender_words()) == ident
    assert ident.to_bsatn() == ident.to_be_bytes()[::-1]
    cid = ConnectionId(c)
    assert ConnectionId.from_hex(cid.to_hex()) == cid
    assert ConnectionId.from_bsatn(cid.to_bsatn()) == cid
    assert ConnectionId.from_words(*cid.words()) == cid
