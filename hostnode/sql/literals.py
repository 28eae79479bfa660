"""Literal typing (``sql-and-subscriptions.md`` A.4): parse a literal's text at a column type.

A SQL literal has no type of its own; it takes the type of what it is compared with (or stored
into) and its *text* is parsed at that type: ``'35'`` is a valid ``u8``, ``5`` a valid
``String`` (``"5"``), ``0xc200…`` or ``'c200…'`` an ``Identity``. The value produced is the
Python SATS value of :mod:`sats.types` (so it compares directly with decoded row values).
Also here: which types support comparison operators, and the type names used in error texts.
"""

from __future__ import annotations

import math
import re
import struct
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sats.types import (
    CONNECTION_ID,
    IDENTITY,
    INT_LAYOUT,
    TIMESTAMP,
    UUID,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    Ref,
    SumType,
    Typespace,
    TypeTag,
)

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]*)")
_F32 = struct.Struct("<f")
_F32_MAX = 3.4028234663852886e38
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LiteralError(ValueError):
    """The literal's text does not denote a value of the target type."""


def resolve(ty: AlgebraicType, ts: Typespace) -> AlgebraicType:
    """``ty`` with a top-level Ref followed."""
    while isinstance(ty, Ref):
        ty = ts.resolve(ty)
    return ty


def fmt_type(ty: AlgebraicType, ts: Typespace) -> str:
    """The 1.12 text form of a type: ``U8``, ``String``, ``(__identity__: U256)``, ``Array<U8>``."""
    ty = resolve(ty, ts)
    if isinstance(ty, PrimitiveType):
        return {TypeTag.STRING: "String", TypeTag.BOOL: "Bool"}.get(ty.kind, ty.kind.name)
    if isinstance(ty, ArrayType):
        return f"Array<{fmt_type(ty.elem_ty, ts)}>"
    if isinstance(ty, ProductType):
        return "(" + ", ".join(f"{_name(e.name, i)}: {fmt_type(e.algebraic_type, ts)}" for i, e in enumerate(ty.elements)) + ")"
    if isinstance(ty, SumType):
        return "(" + " | ".join(f"{_name(v.name, i)}: {fmt_type(v.algebraic_type, ts)}" for i, v in enumerate(ty.variants)) + ")"
    return repr(ty)


def _name(name: str | None, i: int) -> str:
    return name if name is not None else str(i)


def is_bytes(ty: AlgebraicType, ts: Typespace) -> bool:
    """``Array<U8>``."""
    ty = resolve(ty, ts)
    return isinstance(ty, ArrayType) and resolve(ty.elem_ty, ts) == PrimitiveType(TypeTag.U8)


def supports_ops(ty: AlgebraicType, ts: Typespace) -> bool:
    """Comparison operators apply to Bool, ints, floats, String, bytes, Identity, ConnectionId,
    Timestamp and UUID only (A.4)."""
    ty = resolve(ty, ts)
    if isinstance(ty, PrimitiveType):
        return True
    return is_bytes(ty, ts) or ty in (IDENTITY, CONNECTION_ID, TIMESTAMP, UUID)


def round_f32(v: float) -> float:
    """``v`` as the nearest f32 (±inf beyond its range), so it compares with stored f32 values."""
    if math.isnan(v) or math.isinf(v):
        return v
    if abs(v) > _F32_MAX:
        # Beyond f32 range the reference's parse gives infinity; struct.pack would raise.
        return math.copysign(math.inf, v)
    return float(_F32.unpack(_F32.pack(v))[0])


def parse_literal(text: str, ty: AlgebraicType, ts: Typespace) -> Any:
    """The SATS value ``text`` denotes at type ``ty``; LiteralError when it denotes none."""
    ty = resolve(ty, ts)
    if isinstance(ty, PrimitiveType):
        kind = ty.kind
        if kind in INT_LAYOUT:
            return _parse_int(text, kind)
        if kind in (TypeTag.F32, TypeTag.F64):
            if not _DECIMAL.fullmatch(text):
                raise LiteralError(text)
            v = float(text)
            return round_f32(v) if kind == TypeTag.F32 else v
        if kind == TypeTag.STRING:
            return text
        raise LiteralError(text)  # Bool: only the true/false tokens
    if is_bytes(ty, ts):
        digits = _hex_digits(text)
        if len(digits) % 2:
            raise LiteralError(text)
        return bytes.fromhex(digits)
    if ty == IDENTITY:
        return (_fixed_hex(text, 64),)
    if ty == CONNECTION_ID:
        return (_fixed_hex(text, 32),)
    if ty == TIMESTAMP:
        return (_parse_timestamp(text),)
    if ty == UUID:
        try:
            return (uuid.UUID(text).int,)
        except ValueError:
            raise LiteralError(text) from None
    raise LiteralError(text)


def _parse_int(text: str, kind: TypeTag) -> int:
    if not _DECIMAL.fullmatch(text):
        raise LiteralError(text)
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise LiteralError(text) from None
    # The exponent check keeps `1e999999` from building a million-digit integer.
    if d.adjusted() > 80 or d != d.to_integral_value():
        raise LiteralError(text)
    v = int(d)
    bits, signed = INT_LAYOUT[kind]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= v <= hi:
        raise LiteralError(text)
    return v


def _hex_digits(text: str) -> str:
    m = _HEX.fullmatch(text)
    if m is None:
        raise LiteralError(text)
    return m.group(1)


def _fixed_hex(text: str, digits: int) -> int:
    body = _hex_digits(text)
    if len(body) != digits:
        raise LiteralError(text)
    return int(body, 16)


def _parse_timestamp(text: str) -> int:
    """RFC 3339 (``T`` or space separator, ``Z`` or an offset) → µs since the Unix epoch."""
    s = text.strip()
    if len(s) < 11 or s[10] not in "Tt ":
        raise LiteralError(text)
    if s[-1] in "zZ":
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s[:10] + "T" + s[11:])
    except ValueError:
        raise LiteralError(text) from None
    if dt.tzinfo is None:
        raise LiteralError(text)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
