"""What ``orrery sql`` prints: SQL results as the psql-style tables of ``spacetime sql`` 1.12.

Pure functions, no I/O (``sql-and-subscriptions.md`` A.8). The server answers ``POST …/sql`` with
``[{"schema": <ProductType JSON>, "rows": [[…], …], …}]`` (A.7); each row is read back as SATS
values with its schema and every value is printed the way 1.12's ``satn::PsqlWrapper`` does for
the SpacetimeDB client flavour:

* strings ``"…"`` (no escaping), bools ``true``, integers in decimal, floats in Rust's shortest
  round-trip form without exponent (``594806.56``, ``1``, ``-0``, ``NaN``, ``inf``);
* byte arrays ``0x0102…``; Identity ``0x`` + 64 hex digits; ConnectionId ``0x`` + 32;
  Timestamp RFC 3339 (``1970-01-01T00:00:00+00:00``); TimeDuration ``+0.000000``; UUID quoted;
* products ``(a = 1, b = "x")`` (unnamed fields ``col_<i>``), sums ``(some = true)``,
  ``(Active = ())``;
* other arrays: their elements written one after another with no brackets or separators —
  1.12's typed writer has no array punctuation, and tables printed by ``spacetime sql`` show
  exactly that.

The special forms are chosen by looking at both the enclosing product and the field's own type,
as 1.12 does, which is why an ``Option<Identity>`` prints as ``(some = (__identity__ = 0x…))``.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
import struct
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sats.errors import DecodeError
from sats.json import from_json
from sats.json import product_type_from_json as _product_type_from_json
from sats.json import type_from_json as _type_from_json
from sats.types import (
    BYTES,
    CONNECTION_ID,
    IDENTITY,
    TIME_DURATION,
    TIMESTAMP,
    UUID,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    ProductTypeElement,
    SumType,
    SumValue,
    TypeTag,
)

__all__ = [
    "TableFormatError",
    "type_from_json",
    "product_type_from_json",
    "format_value",
    "render_table",
    "parse_sql_response",
    "render_sql_response",
    "serde_json_f64",
    "format_f64",
    "format_f32",
    "format_rfc3339",
]


class TableFormatError(ValueError):
    """The server's SQL answer does not have the shape of A.7 (bad schema JSON or a row that
    does not fit its schema)."""


# --------------------------------------------------------------------------- schema JSON → types


def type_from_json(obj: Any) -> AlgebraicType:
    """An AlgebraicType from its derived SATS-JSON (:func:`sats.json.type_from_json`);
    a malformed type is a :class:`TableFormatError`."""
    try:
        return _type_from_json(obj)
    except DecodeError as e:
        raise TableFormatError(str(e)) from None


def product_type_from_json(obj: Any) -> ProductType:
    """A ProductType from ``{"elements":[…]}`` (:func:`sats.json.product_type_from_json`);
    a malformed type is a :class:`TableFormatError`."""
    try:
        return _product_type_from_json(obj)
    except DecodeError as e:
        raise TableFormatError(str(e)) from None


# --------------------------------------------------------------------------- scalar forms


def _positional(text: str) -> str:
    """A Python float repr (possibly with an exponent) in Rust's plain ``Display`` form."""
    s = format(Decimal(text), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def _non_finite(v: float) -> str | None:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return None


def format_f64(v: float) -> str:
    """Rust's ``{}`` for an f64: shortest round-trip digits, never an exponent."""
    return _non_finite(v) or _positional(repr(v))


_F32 = struct.Struct("<f")
_U64_MAX = (1 << 64) - 1
_I32_MAX = (1 << 31) - 1
_POW10 = [float(f"1e{i}") for i in range(309)]


def _u64_overflows(significand: int, digit: int) -> bool:
    return significand * 10 + digit > _U64_MAX


def serde_json_f64(text: str) -> float:
    """Read a JSON number the way the 1.12 CLI's ``serde_json`` does (no ``float_roundtrip``).

    serde_json gathers at most a u64 of decimal digits and then scales by one power of ten in
    floating point, which can land one unit in the last place away from the correctly rounded
    value; ``spacetime sql`` prints what it read, so the table shows e.g.
    ``-3454353.345389043`` for the JSON ``-3454353.3453890434``. Use as ``json.loads``'s
    ``parse_float``.
    """
    positive = not text.startswith("-")
    body = text[1:] if not positive else text
    mantissa, _, exp_text = body.replace("E", "e").partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    significand = exponent = 0
    long_integer = False
    for ch in int_part:
        digit = ord(ch) - 48
        if long_integer or _u64_overflows(significand, digit):
            # Past u64: the remaining integer digits only scale the value.
            long_integer = True
            exponent += 1
            continue
        significand = significand * 10 + digit
    for ch in frac_part:
        digit = ord(ch) - 48
        if _u64_overflows(significand, digit):
            break  # every further fraction digit is ignored
        significand = significand * 10 + digit
        exponent -= 1
    if exp_text:
        exp_positive = not exp_text.startswith("-")
        exp_value = int(exp_text.lstrip("+-"))
        if exp_value > _I32_MAX:
            if significand != 0 and exp_positive:
                raise ValueError(f"number out of range: {text}")
            return 0.0 if positive else -0.0
        exponent = exponent + exp_value if exp_positive else exponent - exp_value
        exponent = max(-(1 << 31), min(_I32_MAX, exponent))
    f = float(significand)
    while True:
        if abs(exponent) < len(_POW10):
            pow10 = _POW10[abs(exponent)]
            if exponent >= 0:
                f *= pow10
                if math.isinf(f):
                    raise ValueError(f"number out of range: {text}")
            else:
                f /= pow10
            break
        if f == 0.0:
            break
        if exponent >= 0:
            raise ValueError(f"number out of range: {text}")
        f /= 1e308
        exponent += 308
    return f if positive else -f


def format_f32(v: float) -> str:
    """Rust's ``{}`` for an f32: the shortest digits that read back as the same f32."""
    special = _non_finite(v)
    if special:
        return special
    for digits in range(1, 10):
        text = f"{v:.{digits - 1}e}"
        try:
            if _F32.unpack(_F32.pack(float(text)))[0] == v:
                return _positional(text)
        except OverflowError:  # rounded past the largest f32
            continue
    return _positional(repr(v))


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def subsecond_digits(micros: int) -> str:
    """chrono's automatic sub-second digits: none, milliseconds or microseconds."""
    if micros == 0:
        return ""
    if micros % 1000 == 0:
        return f".{micros // 1000:03d}"
    return f".{micros:06d}"


def utc_datetime(micros: int) -> _dt.datetime | None:
    """Microseconds since the Unix epoch as an aware UTC datetime (None outside years 1..9999)."""
    try:
        return _EPOCH + _dt.timedelta(microseconds=micros)
    except OverflowError:
        return None


def format_rfc3339(micros: int) -> str:
    """A Timestamp as chrono's ``to_rfc3339``: ``2024-05-01T12:00:00.123456+00:00``."""
    t = utc_datetime(micros)
    if t is None:  # outside the years 1..9999 — 1.12 cannot print these either
        return str(micros)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + subsecond_digits(t.microsecond) + "+00:00"


def format_duration(micros: int) -> str:
    """A TimeDuration as 1.12 displays it: signed seconds with six decimals (``+1.500000``)."""
    sign = "-" if micros < 0 else "+"
    secs, rest = divmod(abs(micros), 1_000_000)
    return f"{sign}{secs}.{rest:06d}"


# --------------------------------------------------------------------------- value formatting


class _Fmt(enum.Enum):
    HEX = 1
    TIMESTAMP = 2
    DURATION = 3
    UUID = 4
    PLAIN = 5


@dataclass(frozen=True, slots=True)
class _Ctx:
    """Where a value sits: the product that encloses it and the declared type of its field."""

    tuple: ProductType
    field: AlgebraicType

    def fmt(self) -> _Fmt:
        """The special form, if the enclosing product or the field's type calls for one."""
        both = (self.tuple, self.field)
        if IDENTITY in both or CONNECTION_ID in both:
            return _Fmt.HEX
        if TIMESTAMP in both:
            return _Fmt.TIMESTAMP
        if TIME_DURATION in both:
            return _Fmt.DURATION
        if UUID in both:
            return _Fmt.UUID
        return _Fmt.PLAIN


def _scalar(ctx: _Ctx, ty: PrimitiveType, v: Any) -> str:
    kind = ty.kind
    if kind == TypeTag.BOOL:
        return "true" if v else "false"
    if kind == TypeTag.STRING:
        return f'"{v}"'
    if kind == TypeTag.F32:
        return format_f32(v)
    if kind == TypeTag.F64:
        return format_f64(v)
    fmt = ctx.fmt()
    if kind == TypeTag.U128:
        if fmt is _Fmt.HEX:
            return "0x" + v.to_bytes(16, "big").hex()
        if fmt is _Fmt.UUID:
            return f'"{uuid.UUID(int=v)}"'
    elif kind == TypeTag.U256 and fmt is _Fmt.HEX:
        return "0x" + v.to_bytes(32, "big").hex()
    elif kind == TypeTag.I64:
        if fmt is _Fmt.DURATION:
            return format_duration(v)
        if fmt is _Fmt.TIMESTAMP:
            return format_rfc3339(v)
    return str(v)


def _product(ctx: _Ctx, ty: ProductType, v: tuple[Any, ...]) -> str:
    if ctx.fmt() is not _Fmt.PLAIN:
        # A special value (Identity, Timestamp, …): its single field printed bare, judged
        # against the special product itself.
        inner = (
            _Ctx(ctx.field, ctx.field.elements[0].algebraic_type)
            if isinstance(ctx.field, ProductType) and ctx.field.elements
            else ctx
        )
        return "".join(_value(inner, e.algebraic_type, x) for e, x in zip(ty.elements, v, strict=True))
    parts = []
    for i, (e, x) in enumerate(zip(ty.elements, v, strict=True)):
        name = e.name if e.name is not None else f"col_{i}"
        parts.append(f"{name} = {_value(_Ctx(ty, e.algebraic_type), e.algebraic_type, x)}")
    return "(" + ", ".join(parts) + ")"


def _sum(ty: SumType, v: SumValue) -> str:
    variant = ty.variants[v.tag]
    name = variant.name if variant.name is not None else f"col_{v.tag}"
    holder = ProductType((ProductTypeElement(None, ty),))
    return f"({name} = {_value(_Ctx(holder, ty), variant.algebraic_type, v.value)})"


def _value(ctx: _Ctx, ty: AlgebraicType, v: Any) -> str:
    if isinstance(ty, PrimitiveType):
        return _scalar(ctx, ty, v)
    if isinstance(ty, ProductType):
        return _product(ctx, ty, v)
    if isinstance(ty, SumType):
        return _sum(ty, v)
    if isinstance(ty, ArrayType):
        if ty == BYTES:
            return "0x" + bytes(v).hex()
        return "".join(_value(ctx, ty.elem_ty, x) for x in v)
    raise TableFormatError(f"cannot print a value of type {ty!r}")


def format_value(schema: ProductType, column: int, value: Any) -> str:
    """Column ``column`` of a row of ``schema``, already read as a SATS value, as a table cell."""
    field = schema.elements[column].algebraic_type
    return _value(_Ctx(schema, field), field, value)


# --------------------------------------------------------------------------- tables


def _width(text: str) -> int:
    """Terminal columns taken by ``text`` (wide East Asian characters count twice)."""
    w = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        w += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return w


def _pad(text: str, width: int, right: bool = False) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def _grid_lines(
    cells: Sequence[str], widths: Sequence[int], sep: str, right_first: bool = False
) -> list[str]:
    """One table row (cells may span several lines), each cell padded by one space each side."""
    split = [c.split("\n") for c in cells]
    height = max((len(s) for s in split), default=1)
    lines = []
    for li in range(height):
        parts = [
            " " + _pad(s[li] if li < len(s) else "", w, right_first and i == 0) + " "
            for i, (s, w) in enumerate(zip(split, widths, strict=True))
        ]
        lines.append(sep.join(parts))
    return lines


def _widths(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [
        max(_width(line) for cell in [h, *(r[i] for r in rows)] for line in cell.split("\n"))
        for i, h in enumerate(header)
    ]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A psql-style table (tabled's ``Style::psql``): header, ``---+---`` rule, one line per row.

    No trailing newline; lines keep their trailing padding as 1.12 prints them. A table without
    columns renders as the empty string.
    """
    if not header:
        return ""
    widths = _widths(header, rows)
    lines = _grid_lines(header, widths, "|")
    lines.append("+".join("-" * (w + 2) for w in widths))
    for row in rows:
        lines.extend(_grid_lines(row, widths, "|"))
    return "\n".join(lines)


def render_plain_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right_first: bool = False
) -> str:
    """A borderless table (tabled's ``Style::empty``), as ``server list`` prints its servers."""
    widths = _widths(header, rows)
    lines = _grid_lines(header, widths, "", right_first)
    for row in rows:
        lines.extend(_grid_lines(row, widths, "", right_first))
    return "\n".join(lines)


def _statement_table(stmt: Any) -> str:
    if not isinstance(stmt, dict) or "schema" not in stmt or not isinstance(stmt.get("rows"), list):
        raise TableFormatError("malformed sql response: expected objects with `schema` and `rows`")
    schema = product_type_from_json(stmt["schema"])
    header = [e.name if e.name is not None else f"column {i}" for i, e in enumerate(schema.elements)]
    rows = []
    for n, raw in enumerate(stmt["rows"]):
        try:
            value = from_json(schema, raw, root=f"rows[{n}]")
        except DecodeError as e:
            raise TableFormatError(f"malformed sql response: {e}") from None
        rows.append([format_value(schema, i, x) for i, x in enumerate(value)])
    return render_table(header, rows)


def parse_sql_response(text: str | bytes) -> Any:
    """The ``/sql`` response body parsed as the 1.12 CLI reads it (floats via :func:`serde_json_f64`)."""
    try:
        return json.loads(text, parse_float=serde_json_f64)
    except ValueError as e:
        raise TableFormatError(f"malformed sql response: {e}") from None


def render_sql_response(body: Any) -> str:
    """The whole output of ``orrery sql`` for a parsed ``/sql`` response body (no final newline).

    Each statement's table, separated by a blank line; a statement without columns (DML, SET)
    prints nothing.
    """
    if not isinstance(body, list):
        raise TableFormatError("malformed sql response: expected a JSON array")
    return "\n\n".join(_statement_table(stmt) for stmt in body)
