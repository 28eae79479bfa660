"""SATS-JSON: reading typed JSON into SATS values, and the writer flavours (spec §5).

Reading (:func:`from_json`) takes already-parsed JSON. Plain :func:`json.loads` keeps
integers exact (Python ints are unbounded), which I128/U128 need; prefer :func:`loads` here,
which additionally rejects duplicate object keys (a SATS-JSON error that a plain dict would
silently hide) and reports syntax errors as DecodeError.

Writing returns plain Python JSON data (dicts, lists, ints, floats, strings, None) for the
caller to serialise (:func:`dumps` gives compact output). Flavours (§5.1):

* ``to_json_untyped`` — (C) products as arrays, sums as ``[tag, payload]``, unit ``[]``;
* ``to_json_row`` — (D) the row and the products nested in it outside arrays as objects by
  name, sums ``[tag, payload]``, unit ``{}``; anything inside an array as (C);
* ``to_json_typed`` — (B) products as objects by name, sums ``{"name": payload}``, unit ``{}``;
* ``type_to_json`` — an AlgebraicType in flavour (A), the Rust-derived form (§5.3).

Scalars are the same in every flavour: 64-bit-and-smaller ints and I128/U128 as JSON
integers, U256/I256 as ``"0x…"`` strings, bytes as lowercase hex without ``0x``, NaN/±inf
as ``null``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from typing import Any

from sats.errors import DecodeError, EncodeError
from sats.types import (
    EMPTY_TYPESPACE,
    INT_LAYOUT,
    PRIMITIVES,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    ProductTypeElement,
    Ref,
    SumType,
    SumTypeVariant,
    SumValue,
    Typespace,
    TypeTag,
    is_option,
)

__all__ = [
    "args_reader",
    "dumps",
    "from_json",
    "loads",
    "product_type_from_json",
    "to_json_row",
    "to_json_typed",
    "to_json_untyped",
    "type_from_json",
    "type_to_json",
]

_F32 = struct.Struct("<f")
_HEX = frozenset("0123456789abcdefABCDEF")


# ---------------------------------------------------------------------------------------------
# Parsing helpers
# ---------------------------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise DecodeError(f"duplicate key {k!r} in JSON object")
        obj[k] = v
    return obj


#: One decoder for every call (``json.loads`` with a hook builds a new one each time); it holds no
#: state between calls, like ``json``'s own default decoder, which every thread shares.
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates)


def loads(text: str | bytes | bytearray) -> Any:
    """Parse JSON text for :func:`from_json`: exact ints, duplicate keys rejected, DecodeError on bad syntax."""
    try:
        if not isinstance(text, str):
            # As json.loads: bytes in UTF-8, -16 or -32, told apart by their first bytes.
            text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")
        if text.startswith("\ufeff"):
            raise DecodeError("invalid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)")
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise DecodeError(f"invalid JSON: {e}") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as e:
        raise DecodeError(f"invalid JSON: {e}") from None


def dumps(obj: Any) -> str:
    """Compact JSON text of data produced by the ``to_json_*`` writers."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Reading (§5.2)
# ---------------------------------------------------------------------------------------------


class _Bad(Exception):
    """Internal: a reading error, collecting its location as it propagates outwards."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.steps: list[str] = []


def _kind(obj: Any) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, int):
        return "an integer"
    if isinstance(obj, float):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, dict):
        return "an object"
    return type(obj).__name__


def _read_int(kind: TypeTag, obj: Any) -> int:
    bits, signed = INT_LAYOUT[kind]
    if bits == 256:
        # ethnum's serde form: a "0x…" string; bare numbers are refused.
        if not isinstance(obj, str):
            raise _Bad(f"expected a \"0x…\" hex string for {kind.name}, got {_kind(obj)}")
        s = obj
        negative = False
        if s[:1] in ("+", "-"):
            negative = s[0] == "-"
            s = s[1:]
        if s[:2] not in ("0x", "0X") or not s[2:] or not _HEX.issuperset(s[2:]):
            raise _Bad(f"expected a \"0x…\" hex string for {kind.name}, got {obj!r}")
        v = int(s[2:], 16)
        if negative:
            v = -v
    else:
        if type(obj) is not int:
            raise _Bad(f"expected an integer for {kind.name}, got {_kind(obj)}")
        v = obj
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= v <= hi:
        raise _Bad(f"{v} is out of range for {kind.name}")
    return v


def _read_float(kind: TypeTag, obj: Any) -> float:
    if type(obj) is not int and type(obj) is not float:
        raise _Bad(f"expected a number for {kind.name}, got {_kind(obj)}")
    try:
        v = float(obj)
    except OverflowError:
        raise _Bad(f"{obj} is out of range for {kind.name}") from None
    if kind == TypeTag.F32:
        try:
            v = _F32.unpack(_F32.pack(v))[0]
        except OverflowError:
            # Like Rust's `as f32`: too large a magnitude becomes an infinity.
            v = math.copysign(math.inf, v)
    return v


def _read_bytes(obj: Any) -> bytes:
    if isinstance(obj, str):
        if len(obj) % 2 or not _HEX.issuperset(obj):
            raise _Bad(f"expected a hex string (even length, no 0x) for bytes, got {obj!r}")
        return bytes.fromhex(obj)
    if isinstance(obj, list):
        out = bytearray()
        for i, x in enumerate(obj):
            try:
                out.append(_read_int(TypeTag.U8, x))
            except _Bad as e:
                e.steps.append(f"[{i}]")
                raise
        return bytes(out)
    raise _Bad(f"expected a hex string or an array of bytes, got {_kind(obj)}")


def _parse_tag(key: str) -> int | None:
    """A sum key that reads as a decimal integer is a tag (``"0"`` … ``"255"``)."""
    body = key[1:] if key[:1] == "+" else key
    if body and body.isascii() and body.isdigit():
        return int(body)
    return None


def _variant(ty: SumType, key: Any) -> int:
    tag: int | None
    if isinstance(key, int) and not isinstance(key, bool):
        tag = key
    elif isinstance(key, str):
        tag = _parse_tag(key)
        if tag is None:
            tag = ty.variant_index(key)
        if tag is None:
            raise _Bad(f"unknown variant {key!r}; expected one of {[v.name for v in ty.variants]}")
    else:
        raise _Bad(f"expected a variant name or tag, got {_kind(key)}")
    if not 0 <= tag < len(ty.variants):
        raise _Bad(f"invalid sum tag {tag} (the type has {len(ty.variants)} variant(s))")
    return tag


def _read(ty: AlgebraicType, obj: Any, ts: Typespace) -> Any:
    if isinstance(ty, Ref):
        ty = ts.resolve(ty)
    if isinstance(ty, PrimitiveType):
        kind = ty.kind
        if kind in INT_LAYOUT:
            return _read_int(kind, obj)
        if kind == TypeTag.STRING:
            if not isinstance(obj, str):
                raise _Bad(f"expected a string, got {_kind(obj)}")
            return obj
        if kind == TypeTag.BOOL:
            if not isinstance(obj, bool):
                raise _Bad(f"expected true or false, got {_kind(obj)}")
            return obj
        return _read_float(kind, obj)
    if isinstance(ty, ProductType):
        return _read_product(ty, obj, ts)
    if isinstance(ty, SumType):
        return _read_sum(ty, obj, ts)
    if isinstance(ty, ArrayType):
        elem = ts.resolve(ty.elem_ty)
        if isinstance(elem, PrimitiveType) and elem.kind == TypeTag.U8:
            return _read_bytes(obj)
        if not isinstance(obj, list):
            raise _Bad(f"expected an array, got {_kind(obj)}")
        out = []
        for i, x in enumerate(obj):
            try:
                out.append(_read(elem, x, ts))
            except _Bad as e:
                e.steps.append(f"[{i}]")
                raise
        return out
    raise _Bad(f"{ty!r} is not an AlgebraicType")


def _read_product(ty: ProductType, obj: Any, ts: Typespace) -> tuple[Any, ...]:
    elems = ty.elements
    if isinstance(obj, list):
        if len(obj) != len(elems):
            raise _Bad(f"expected {len(elems)} element(s), got an array of {len(obj)}")
        items = list(zip(elems, obj, strict=True))
    elif isinstance(obj, dict):
        by_name = {e.name: e for e in elems if e.name is not None}
        unknown = [k for k in obj if k not in by_name]
        if unknown:
            raise _Bad(f"unknown field(s) {unknown}; expected {list(by_name)}")
        missing = [e.name if e.name is not None else f"#{i}" for i, e in enumerate(elems) if e.name not in obj]
        if missing:
            raise _Bad(f"missing field(s) {missing}")
        items = [(e, obj[e.name]) for e in elems]
    else:
        raise _Bad(f"expected an array or an object, got {_kind(obj)}")
    out = []
    for i, (e, x) in enumerate(items):
        try:
            out.append(_read(e.algebraic_type, x, ts))
        except _Bad as err:
            err.steps.append(f".{e.name}" if e.name is not None else f"[{i}]")
            raise
    return tuple(out)


def _read_sum(ty: SumType, obj: Any, ts: Typespace) -> SumValue:
    if obj is None and is_option(ty):
        return SumValue(1, ())
    if isinstance(obj, dict):
        if len(obj) != 1:
            raise _Bad(f"expected an object with exactly one key (the variant), got {len(obj)} keys")
        ((key, payload),) = obj.items()
    elif isinstance(obj, list):
        if len(obj) != 2:
            raise _Bad(f"expected [tag_or_name, payload], got an array of {len(obj)}")
        key, payload = obj
    else:
        raise _Bad(f"expected an object or a [tag, payload] array for a sum, got {_kind(obj)}")
    tag = _variant(ty, key)
    variant = ty.variants[tag]
    try:
        return SumValue(tag, _read(variant.algebraic_type, payload, ts))
    except _Bad as err:
        err.steps.append(f".{variant.name}" if variant.name is not None else f".{tag}")
        raise


def from_json(ty: AlgebraicType, obj: Any, typespace: Typespace = EMPTY_TYPESPACE, root: str = "$") -> Any:
    """Read parsed JSON ``obj`` as a value of ``ty``, accepting every form of spec §5.2.

    Errors are DecodeError naming the location, e.g. ``at args[1].name: expected a string``
    for ``root="args"``.
    """
    try:
        return _read(ty, obj, typespace)
    except _Bad as e:
        raise DecodeError(f"at {root}{''.join(reversed(e.steps))}: {e.message}") from None
    except TypeError as e:
        # A bad ref in the type (Typespace.resolve): report it as what it is.
        raise DecodeError(f"at {root}: {e}") from None
    except RecursionError:
        raise DecodeError(f"at {root}: JSON nested too deeply") from None


#: :func:`args_reader`'s memo, by the id of the type (the entry holds the type and typespace, so
#: the id cannot be another object's while it is there).
_ARGS_READERS: dict[int, tuple[ProductType, Typespace, Callable[[Any], tuple[Any, ...] | None] | None]] = {}
_ARGS_READERS_MAX = 4096
_INT, _STR, _BOOL = 0, 1, 2


def args_reader(ty: ProductType, typespace: Typespace = EMPTY_TYPESPACE) -> Callable[[Any], tuple[Any, ...] | None] | None:
    """A quick reader of the usual form of reducer arguments, for ``ty``: parsed JSON that is an
    array of integers (up to 128 bits), strings and booleans, element for element. It returns what
    :func:`from_json` would, or None wherever from_json has to look (any other form, and every
    value from_json refuses: it names the problem). None when ``ty`` has elements of other types
    (memoised)."""
    entry = _ARGS_READERS.get(id(ty))
    if entry is not None and entry[0] is ty and entry[1] is typespace:
        return entry[2]
    reader = _build_args_reader(ty, typespace)
    if len(_ARGS_READERS) >= _ARGS_READERS_MAX:
        _ARGS_READERS.clear()
    _ARGS_READERS[id(ty)] = (ty, typespace, reader)
    return reader


def _build_args_reader(ty: ProductType, typespace: Typespace) -> Callable[[Any], tuple[Any, ...] | None] | None:
    checks: list[tuple[int, int, int]] = []
    for e in ty.elements:
        try:
            t = typespace.resolve(e.algebraic_type)
        except TypeError:
            return None
        if not isinstance(t, PrimitiveType):
            return None
        if t.kind == TypeTag.STRING:
            checks.append((_STR, 0, 0))
        elif t.kind == TypeTag.BOOL:
            checks.append((_BOOL, 0, 0))
        elif t.kind in INT_LAYOUT and INT_LAYOUT[t.kind][0] <= 128:
            bits, signed = INT_LAYOUT[t.kind]
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
            checks.append((_INT, lo, hi))
        else:
            return None
    n = len(checks)

    def read(obj: Any) -> tuple[Any, ...] | None:
        if type(obj) is not list or len(obj) != n:
            return None
        for x, (kind, lo, hi) in zip(obj, checks, strict=True):
            if kind == _INT:
                if type(x) is not int or not lo <= x <= hi:
                    return None
            elif type(x) is not (str if kind == _STR else bool):
                return None
        return tuple(obj)

    return read


# ---------------------------------------------------------------------------------------------
# Writing (§5.1)
# ---------------------------------------------------------------------------------------------


def _f32_shortest(v: float) -> float:
    """The float with the shortest decimal form that still reads back as the same f32."""
    for digits in range(1, 10):
        candidate = float(f"{v:.{digits}g}")
        try:
            if _F32.unpack(_F32.pack(candidate))[0] == v:
                return candidate
        except OverflowError:
            # Rounding near the f32 maximum can step past it; more digits will not.
            continue
    return v


def _write_scalar(ty: PrimitiveType, v: Any) -> Any:
    kind = ty.kind
    if kind in INT_LAYOUT:
        if not isinstance(v, int) or isinstance(v, bool):
            raise EncodeError(f"{v!r} is not an integer for {kind.name}")
        if kind in (TypeTag.U256, TypeTag.I256):
            return f"-0x{-v:x}" if v < 0 else f"0x{v:x}"
        return v
    if kind == TypeTag.STRING:
        if not isinstance(v, str):
            raise EncodeError(f"{v!r} is not a string")
        return v
    if kind == TypeTag.BOOL:
        if not isinstance(v, bool):
            raise EncodeError(f"{v!r} is not a bool")
        return v
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise EncodeError(f"{v!r} is not a number for {kind.name}")
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        return None
    return _f32_shortest(v) if kind == TypeTag.F32 else v


def _write_bytes(v: Any) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, (list, tuple)):
        try:
            return bytes(v).hex()
        except (ValueError, TypeError):
            pass
    raise EncodeError(f"{v!r} is not bytes")


def _writer(
    product_as_object: bool,
    sum_by_name: bool,
    unit: Callable[[], Any],
    in_array: Callable[..., Any] | None,
    names_required: bool,
) -> Callable[[AlgebraicType, Any, Typespace], Any]:
    """Build one writer flavour from its choices (the columns of §5.1's table).

    ``in_array`` is the writer used for array elements (None: this one);
    ``names_required`` makes an unnamed product element an error instead of keying it by
    position.
    """

    def write(ty: AlgebraicType, v: Any, ts: Typespace) -> Any:
        if isinstance(ty, Ref):
            ty = ts.resolve(ty)
        if isinstance(ty, PrimitiveType):
            return _write_scalar(ty, v)
        if isinstance(ty, ProductType):
            if not isinstance(v, (tuple, list)) or len(v) != len(ty.elements):
                raise EncodeError(f"{v!r} is not a product value of {len(ty.elements)} element(s)")
            if not ty.elements:
                return unit()
            if product_as_object:
                out: dict[str, Any] = {}
                for i, (e, x) in enumerate(zip(ty.elements, v, strict=True)):
                    name = e.name
                    if name is None:
                        if names_required:
                            raise EncodeError(f"element {i} has no name; typed JSON needs names")
                        name = str(i)
                    out[name] = _under(write, e.algebraic_type, x, ts, name)
                return out
            return [
                _under(write, e.algebraic_type, x, ts, e.name or f"[{i}]")
                for i, (e, x) in enumerate(zip(ty.elements, v, strict=True))
            ]
        if isinstance(ty, SumType):
            try:
                tag, payload = v
            except (TypeError, ValueError):
                raise EncodeError(f"{v!r} is not a sum value (tag, payload)") from None
            if type(tag) is not int or not 0 <= tag < len(ty.variants):
                raise EncodeError(f"invalid sum tag {tag!r} (the type has {len(ty.variants)} variant(s))")
            variant = ty.variants[tag]
            body = _under(write, variant.algebraic_type, payload, ts, variant.name or str(tag))
            if sum_by_name and variant.name is not None:
                return {variant.name: body}
            return [tag, body]
        if isinstance(ty, ArrayType):
            elem = ts.resolve(ty.elem_ty)
            if isinstance(elem, PrimitiveType) and elem.kind == TypeTag.U8:
                return _write_bytes(v)
            if not isinstance(v, (list, tuple)):
                raise EncodeError(f"{type(v).__name__} is not an array (list)")
            inner = in_array if in_array is not None else write
            return [_under(inner, elem, x, ts, f"[{i}]") for i, x in enumerate(v)]
        raise EncodeError(f"{ty!r} is not an AlgebraicType")

    return write


def _under(write: Callable[..., Any], ty: AlgebraicType, v: Any, ts: Typespace, step: str) -> Any:
    try:
        return write(ty, v, ts)
    except EncodeError as e:
        raise e.under(step) from None


_write_untyped = _writer(product_as_object=False, sum_by_name=False, unit=list, in_array=None, names_required=False)
_write_row = _writer(product_as_object=True, sum_by_name=False, unit=dict, in_array=_write_untyped, names_required=False)
_write_typed = _writer(product_as_object=True, sum_by_name=True, unit=dict, in_array=None, names_required=True)


def to_json_untyped(ty: AlgebraicType, value: Any, typespace: Typespace = EMPTY_TYPESPACE) -> Any:
    """Flavour (C): products as arrays, sums as ``[tag, payload]``, unit ``[]`` (``/sql`` rows, …)."""
    return _write_untyped(ty, value, typespace)


def to_json_row(ty: AlgebraicType, value: Any, typespace: Typespace = EMPTY_TYPESPACE) -> Any:
    """Flavour (D), stored rows: products outside arrays as objects, sums ``[tag, payload]``, unit ``{}``.

    Values inside arrays are written as in flavour (C). An unnamed element is keyed by its
    position.
    """
    return _write_row(ty, value, typespace)


def to_json_typed(ty: AlgebraicType, value: Any, typespace: Typespace = EMPTY_TYPESPACE) -> Any:
    """Flavour (B): products as objects by name, sums ``{"name": payload}``, unit ``{}``.

    A variant without a name is written ``[tag, payload]``; an element without a name is
    an EncodeError.
    """
    return _write_typed(ty, value, typespace)


_PRIMITIVE_NAMES = {
    TypeTag.STRING: "String",
    TypeTag.BOOL: "Bool",
}


def _name_json(name: str | None) -> dict[str, Any]:
    return {"some": name} if name is not None else {"none": []}


def type_to_json(ty: AlgebraicType) -> Any:
    """An AlgebraicType as flavour (A) JSON (§5.3), e.g. ``{"Array":{"String":[]}}``."""
    if isinstance(ty, Ref):
        return {"Ref": ty.idx}
    if isinstance(ty, SumType):
        return {"Sum": sum_type_to_json(ty)}
    if isinstance(ty, ProductType):
        return {"Product": product_type_to_json(ty)}
    if isinstance(ty, ArrayType):
        return {"Array": type_to_json(ty.elem_ty)}
    if isinstance(ty, PrimitiveType):
        return {_PRIMITIVE_NAMES.get(ty.kind, ty.kind.name): []}
    raise EncodeError(f"{ty!r} is not an AlgebraicType")


def product_type_to_json(ty: ProductType) -> dict[str, Any]:
    """A ProductType as flavour (A): ``{"elements":[{"name":…,"algebraic_type":…}, …]}``."""
    return {
        "elements": [{"name": _name_json(e.name), "algebraic_type": type_to_json(e.algebraic_type)} for e in ty.elements]
    }


def sum_type_to_json(ty: SumType) -> dict[str, Any]:
    """A SumType as flavour (A): ``{"variants":[{"name":…,"algebraic_type":…}, …]}``."""
    return {
        "variants": [{"name": _name_json(v.name), "algebraic_type": type_to_json(v.algebraic_type)} for v in ty.variants]
    }


# ---------------------------------------------------------------------------------------------
# Reading types (flavour A, as ``/schema?version=9`` serves them)
# ---------------------------------------------------------------------------------------------

_PRIMITIVE_BY_JSON = {_PRIMITIVE_NAMES.get(k, k.name): p for k, p in PRIMITIVES.items()}


def _opt_name(obj: Any) -> str | None:
    """``{"some": "x"}`` → ``"x"``, ``{"none": []}`` → None (also accepts a bare string or null)."""
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, dict) and len(obj) == 1:
        if "some" in obj and isinstance(obj["some"], str):
            return obj["some"]
        if "none" in obj:
            return None
    raise DecodeError(f"bad element name in schema: {obj!r}")


def type_from_json(obj: Any) -> AlgebraicType:
    """An AlgebraicType from its flavour (A) JSON, e.g. ``{"Array":{"String":[]}}`` (the inverse
    of :func:`type_to_json`); a malformed type is a DecodeError."""
    if not isinstance(obj, dict) or len(obj) != 1:
        raise DecodeError(f"bad type in schema: {obj!r}")
    ((key, body),) = obj.items()
    if key in _PRIMITIVE_BY_JSON:
        return _PRIMITIVE_BY_JSON[key]
    if key == "Product":
        return product_type_from_json(body)
    if key == "Sum":
        if not isinstance(body, dict) or not isinstance(body.get("variants"), list):
            raise DecodeError(f"bad sum type in schema: {body!r}")
        variants = []
        for v in body["variants"]:
            if not isinstance(v, dict):
                raise DecodeError(f"bad sum variant in schema: {v!r}")
            variants.append(SumTypeVariant(_opt_name(v.get("name")), type_from_json(v.get("algebraic_type"))))
        return SumType(tuple(variants))
    if key == "Array":
        return ArrayType(type_from_json(body))
    if key == "Ref" and isinstance(body, int) and not isinstance(body, bool):
        return Ref(body)
    raise DecodeError(f"bad type in schema: {obj!r}")


def product_type_from_json(obj: Any) -> ProductType:
    """A ProductType from ``{"elements":[{"name":…,"algebraic_type":…}, …]}``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("elements"), list):
        raise DecodeError(f"bad product type in schema: {obj!r}")
    elements = []
    for e in obj["elements"]:
        if not isinstance(e, dict):
            raise DecodeError(f"bad product element in schema: {e!r}")
        elements.append(ProductTypeElement(_opt_name(e.get("name")), type_from_json(e.get("algebraic_type"))))
    return ProductType(tuple(elements))
