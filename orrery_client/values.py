"""Between SATS values (what the codecs produce) and the Python values the SDK hands out.

Pure functions. The codecs in :mod:`sats` give products as tuples, sums as
:class:`~sats.types.SumValue` and the special types as one-element tuples; the SDK turns
those into friendlier values and back:

* ``Identity`` / ``ConnectionId`` → :class:`sats.identity.Identity` / ``ConnectionId``;
* ``Timestamp`` / ``TimeDuration`` → :class:`sats.ws_v1.Timestamp` / ``TimeDuration``;
* ``Option<T>`` → ``None`` or the value itself;
* other sums stay :class:`~sats.types.SumValue` (``tag``, ``value``), products are tuples,
  arrays lists (``Vec<u8>`` stays ``bytes``), scalars are ints, floats, bools and strs.

:func:`from_python` accepts those forms (and the raw SATS forms, dicts keyed by field name
for products, any sequence for arrays), so a row read from the cache can be passed back as a
reducer argument unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sats.errors import EncodeError
from sats.identity import ConnectionId, Identity
from sats.types import (
    CONNECTION_ID,
    IDENTITY,
    TIME_DURATION,
    TIMESTAMP,
    U8,
    UNIT,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    Ref,
    SumType,
    SumValue,
    Typespace,
    TypeTag,
    is_option,
)
from sats.ws_v1 import TimeDuration, Timestamp

__all__ = ["to_python", "from_python"]


def to_python(ty: AlgebraicType, value: Any, ts: Typespace) -> Any:
    """The SDK's Python form of a SATS value of type ``ty``."""
    if isinstance(ty, Ref):
        ty = ts.resolve(ty)
    if isinstance(ty, PrimitiveType):
        return value
    if isinstance(ty, ProductType):
        if ty == IDENTITY:
            return Identity(value[0])
        if ty == CONNECTION_ID:
            return ConnectionId(value[0])
        if ty == TIMESTAMP:
            return Timestamp(value[0])
        if ty == TIME_DURATION:
            return TimeDuration(value[0])
        return tuple(to_python(e.algebraic_type, v, ts) for e, v in zip(ty.elements, value, strict=True))
    if isinstance(ty, SumType):
        tag, payload = value
        if is_option(ty):
            return None if tag == 1 else to_python(ty.variants[0].algebraic_type, payload, ts)
        return SumValue(tag, to_python(ty.variants[tag].algebraic_type, payload, ts))
    if isinstance(ty, ArrayType):
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        return [to_python(ty.elem_ty, v, ts) for v in value]
    raise TypeError(f"{ty!r} is not an AlgebraicType")


_SPECIAL = {IDENTITY: Identity, CONNECTION_ID: ConnectionId, TIMESTAMP: Timestamp, TIME_DURATION: TimeDuration}


def _special_int(ty: ProductType, value: Any) -> int | None:
    cls = _SPECIAL.get(ty)
    if cls is None:
        return None
    if isinstance(value, Identity | ConnectionId):
        return value.value
    if isinstance(value, Timestamp):
        return value.micros_since_unix_epoch
    if isinstance(value, TimeDuration):
        return value.micros
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and ty == IDENTITY:
        return Identity.from_hex(value).value
    return None


def from_python(ty: AlgebraicType, value: Any, ts: Typespace) -> Any:
    """The SATS value (for the codecs) of a Python value in the forms :func:`to_python` gives."""
    if isinstance(ty, Ref):
        ty = ts.resolve(ty)
    if isinstance(ty, PrimitiveType):
        if ty.kind is TypeTag.STRING and not isinstance(value, str):
            raise EncodeError(f"expected a str, got {type(value).__name__}")
        return value
    if isinstance(ty, ProductType):
        special = _special_int(ty, value)
        if special is not None:
            return (special,)
        if isinstance(value, Mapping):
            try:
                items = [value[e.name] for e in ty.elements]
            except KeyError as e:
                raise EncodeError(f"missing field {e}") from None
        elif isinstance(value, tuple | list):
            items = list(value)
        else:
            raise EncodeError(f"expected a tuple or dict for a product, got {type(value).__name__}")
        if len(items) != len(ty.elements):
            raise EncodeError(f"expected {len(ty.elements)} fields, got {len(items)}")
        out = []
        for el, v in zip(ty.elements, items, strict=True):
            try:
                out.append(from_python(el.algebraic_type, v, ts))
            except EncodeError as err:
                raise err.under(el.name or "?") from None
        return tuple(out)
    if isinstance(ty, SumType):
        if is_option(ty):
            if value is None:
                return SumValue(1, ())
            if isinstance(value, SumValue) and value.tag in (0, 1):
                return SumValue(value.tag, from_python(ty.variants[value.tag].algebraic_type, value.value, ts))
            return SumValue(0, from_python(ty.variants[0].algebraic_type, value, ts))
        if isinstance(value, SumValue) or (isinstance(value, tuple) and len(value) == 2):
            tag, payload = value
        elif isinstance(value, str):  # a plain enum's variant by name
            tag = next((i for i, v in enumerate(ty.variants) if v.name == value), -1)
            payload = ()
        else:
            raise EncodeError(f"expected a SumValue(tag, value), got {type(value).__name__}")
        if not 0 <= tag < len(ty.variants):
            raise EncodeError(f"no variant {value!r}")
        vty = ty.variants[tag].algebraic_type
        return SumValue(tag, () if vty == UNIT and payload in ((), None) else from_python(vty, payload, ts))
    if isinstance(ty, ArrayType):
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if ty.elem_ty == U8:
            return bytes(value)
        return [from_python(ty.elem_ty, v, ts) for v in value]
    raise TypeError(f"{ty!r} is not an AlgebraicType")
