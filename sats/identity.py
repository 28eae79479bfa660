"""Identity and ConnectionId (spec ``sats-bsatn.md`` §4, ``client-api.md`` §7.2).

Both are integers (u256, u128) with three external forms that use different byte orders:

* BSATN and the ``__call_reducer__`` argument words: **little-endian**;
* text (URLs, headers, logs, plain-serde JSON): hex of the **big-endian** bytes, lowercase,
  fixed width, no ``0x``;
* SATS values: the one-element products ``(u256,)`` / ``(u128,)`` of :data:`sats.types.IDENTITY`
  and :data:`sats.types.CONNECTION_ID` (see ``to_sats`` / ``from_sats``).
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import blake3

from sats.errors import DecodeError, EncodeError

__all__ = ["Identity", "ConnectionId"]

_FOUR_U64 = struct.Struct("<4Q")
_TWO_U64 = struct.Struct("<2Q")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _parse_hex(text: str, digits: int, what: str) -> int:
    """Parse exactly ``digits`` hex digits, with an optional ``0x`` prefix."""
    if not isinstance(text, str):
        raise DecodeError(f"{what} must be a hex string, got {type(text).__name__}")
    body = text[2:] if text[:2] in ("0x", "0X") else text
    if len(body) != digits:
        raise DecodeError(f"{what} must be {digits} hex digits, got {len(body)}: {text!r}")
    # int(..., 16) would also accept "_" and whitespace; insist on plain hex digits.
    if not _HEX_DIGITS.issuperset(body):
        raise DecodeError(f"{what} is not valid hex: {text!r}")
    return int(body, 16)


#: Past the largest u256 / u128 (CPython folds no constant wider than 128 bits: ``1 << 256`` in a
#: method is worked out on every call).
_U256_END = 1 << 256
_U128_END = 1 << 128


def _from_le(data: bytes | bytearray | memoryview, size: int, what: str) -> int:
    if len(data) != size:
        raise DecodeError(f"{what} must be {size} bytes of BSATN, got {len(data)}")
    return int.from_bytes(data, "little")


@dataclass(frozen=True, slots=True, order=True)
class Identity:
    """A 256-bit identity; ``value`` is the u256 as a Python int."""

    value: int

    ZERO: ClassVar[Identity]
    SIZE: ClassVar[int] = 32

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or not 0 <= self.value < _U256_END:
            raise EncodeError(f"{self.value!r} is not a u256")

    @classmethod
    def from_hex(cls, text: str) -> Identity:
        """Parse 64 hex digits (big-endian, either case, optional ``0x``)."""
        return cls(_parse_hex(text, 64, "identity"))

    def to_hex(self) -> str:
        """64 lowercase hex digits of the big-endian bytes, no ``0x`` (the ``c200…`` form)."""
        return f"{self.value:064x}"

    @classmethod
    def from_bsatn(cls, data: bytes | bytearray | memoryview) -> Identity:
        """From its 32-byte little-endian BSATN."""
        return cls(_from_le(data, 32, "identity"))

    def to_bsatn(self) -> bytes:
        """The 32-byte little-endian BSATN."""
        return self.value.to_bytes(32, "little")

    def to_be_bytes(self) -> bytes:
        """The 32 big-endian bytes (what the hex form spells)."""
        return self.value.to_bytes(32, "big")

    @property
    def as_u256(self) -> int:
        """The identity as an unsigned 256-bit integer."""
        return self.value

    @classmethod
    def from_u256(cls, value: int) -> Identity:
        """From the u256 integer."""
        return cls(value)

    def to_sats(self) -> tuple[int]:
        """The SATS value of :data:`sats.types.IDENTITY`: ``(u256,)``."""
        return (self.value,)

    @classmethod
    def from_sats(cls, value: Any) -> Identity:
        """From a decoded :data:`sats.types.IDENTITY` value ``(u256,)``."""
        try:
            (v,) = value
        except (TypeError, ValueError):
            raise DecodeError(f"{value!r} is not an identity value (u256,)") from None
        return cls(v)

    @classmethod
    def from_claims(cls, issuer: str, subject: str) -> Identity:
        """The identity SpacetimeDB derives from a JWT's ``iss`` and ``sub`` claims.

        ``h1 = blake3(iss "|" sub)``; ``id = h1[:26]``; checksum ``blake3(c2 00 id)[:4]``;
        big-endian bytes ``c2 00 checksum id`` — so every derived identity's hex starts ``c200``.
        """
        h1 = blake3.blake3(f"{issuer}|{subject}".encode()).digest()
        ident = h1[:26]
        checksum = blake3.blake3(b"\xc2\x00" + ident).digest()[:4]
        return cls(int.from_bytes(b"\xc2\x00" + checksum + ident, "big"))

    def sender_words(self) -> tuple[int, int, int, int]:
        """``(sender_0, …, sender_3)`` for ``__call_reducer__``: the LE bytes as four u64s, low first."""
        return _FOUR_U64.unpack(self.to_bsatn())  # type: ignore[return-value]

    @classmethod
    def from_words(cls, w0: int, w1: int, w2: int, w3: int) -> Identity:
        """Inverse of :meth:`sender_words`."""
        return cls(w0 | (w1 << 64) | (w2 << 128) | (w3 << 192))

    def __str__(self) -> str:
        return self.to_hex()

    def __repr__(self) -> str:
        return f"Identity({self.to_hex()})"


Identity.ZERO = Identity(0)


@dataclass(frozen=True, slots=True, order=True)
class ConnectionId:
    """A 128-bit connection id; ``value`` is the u128. Zero means "no connection"."""

    value: int

    ZERO: ClassVar[ConnectionId]
    SIZE: ClassVar[int] = 16

    def __post_init__(self) -> None:
        if not isinstance(self.value, int) or not 0 <= self.value < _U128_END:
            raise EncodeError(f"{self.value!r} is not a u128")

    @classmethod
    def random(cls) -> ConnectionId:
        """A fresh non-zero random connection id."""
        while True:
            v = secrets.randbits(128)
            if v:
                return cls(v)

    def is_zero(self) -> bool:
        """True for the all-zero "no connection" id."""
        return self.value == 0

    @classmethod
    def from_hex(cls, text: str) -> ConnectionId:
        """Parse 32 hex digits (big-endian, either case, optional ``0x``)."""
        return cls(_parse_hex(text, 32, "connection id"))

    def to_hex(self) -> str:
        """32 lowercase hex digits of the big-endian bytes, no ``0x``."""
        return f"{self.value:032x}"

    @classmethod
    def from_bsatn(cls, data: bytes | bytearray | memoryview) -> ConnectionId:
        """From its 16-byte little-endian BSATN."""
        return cls(_from_le(data, 16, "connection id"))

    def to_bsatn(self) -> bytes:
        """The 16-byte little-endian BSATN."""
        return self.value.to_bytes(16, "little")

    @property
    def as_u128(self) -> int:
        """The connection id as an unsigned 128-bit integer."""
        return self.value

    def to_sats(self) -> tuple[int]:
        """The SATS value of :data:`sats.types.CONNECTION_ID`: ``(u128,)``."""
        return (self.value,)

    @classmethod
    def from_sats(cls, value: Any) -> ConnectionId:
        """From a decoded :data:`sats.types.CONNECTION_ID` value ``(u128,)``."""
        try:
            (v,) = value
        except (TypeError, ValueError):
            raise DecodeError(f"{value!r} is not a connection id value (u128,)") from None
        return cls(v)

    def words(self) -> tuple[int, int]:
        """``(conn_id_0, conn_id_1)`` for ``__call_reducer__``: the low then the high u64."""
        return _TWO_U64.unpack(self.to_bsatn())  # type: ignore[return-value]

    @classmethod
    def from_words(cls, low: int, high: int) -> ConnectionId:
        """Inverse of :meth:`words`."""
        return cls(low | (high << 64))

    def __str__(self) -> str:
        return self.to_hex()

    def __repr__(self) -> str:
        return f"ConnectionId({self.to_hex()})"


ConnectionId.ZERO = ConnectionId(0)
