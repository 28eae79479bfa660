"""Order-preserving index keys (spec ``sats-bsatn.md`` §6, §6.1).

A key is a byte string whose ``memcmp`` order equals the SATS order of the values it was made
from, so an LMDB cursor over keys walks an index in SATS order. Every piece is
self-delimiting, which makes the key of a product the plain concatenation of its elements'
keys and turns "all keys whose first columns equal x" into a byte-prefix scan.

| type             | key bytes                                                          |
| ---------------- | ------------------------------------------------------------------ |
| Bool             | ``00`` / ``01``                                                    |
| unsigned ints    | big-endian                                                         |
| signed ints      | big-endian with the sign bit flipped                               |
| F32 / F64        | NaN → all ``ff``; else (−0.0 → +0.0) bits big-endian, negatives    |
|                  | inverted, non-negatives with the sign bit set                      |
| String, bytes    | each ``00`` → ``00 ff``, other bytes as is, then ``00 00``         |
| other arrays     | ``01`` + key(element) per element, then ``00``                    |
| Product          | concatenation of the elements' keys                                |
| Sum              | tag byte + key(payload)                                            |

Key encoders are compiled and memoised per (type, typespace) like BSATN codecs (see
:mod:`sats.bsatn`): don't mutate a typespace once keys have been compiled against it, and
keep the function returned by :func:`key_converter` / :func:`row_key_extractor` on hot paths.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from sats._compile import Cell, CompileCache, TypeCompiler, sum_writer
from sats.bsatn import STRUCT_FORMATS, _as_bytes, _read_len, _short, codec_for
from sats.errors import DecodeError, EncodeError, SatsError
from sats.types import (
    EMPTY_TYPESPACE,
    INT_LAYOUT,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    Ref,
    SumType,
    Typespace,
    TypeTag,
)

__all__ = ["encode_key", "key_converter", "row_key_extractor", "prefix_end", "KeyCodec", "key_codec_for"]

#: ``(value, out) -> None``: append the key of a Python value.
ValueKeyFn = Callable[[Any, bytearray], None]
#: ``(buf, pos, out) -> new_pos``: append the key of the BSATN value at ``pos``.
BsatnKeyFn = Callable[[Any, int, bytearray], int]
#: ``(buf, pos) -> (key, new_pos)``.
KeyConverter = Callable[[Any, int], tuple[bytes, int]]


class KeyCodec:
    """Compiled key encoders of one type: from a Python value and straight from BSATN."""

    __slots__ = ("ty", "from_value", "from_bsatn")

    def __init__(self, ty: AlgebraicType, from_value: ValueKeyFn, from_bsatn: BsatnKeyFn) -> None:
        self.ty = ty
        self.from_value = from_value
        self.from_bsatn = from_bsatn


# ---------------------------------------------------------------------------------------------
# Scalars
# ---------------------------------------------------------------------------------------------


def _int_key(ty: PrimitiveType) -> KeyCodec:
    bits, signed = INT_LAYOUT[ty.kind]
    size = bits // 8
    flip = 1 << (bits - 1) if signed else 0
    offset = flip if signed else 0
    lo, hi = (-flip, flip - 1) if signed else (0, (1 << bits) - 1)
    fmt = STRUCT_FORMATS.get(ty.kind)
    if fmt is not None:
        # Read the LE bytes as unsigned, flip the sign bit for signed types, write BE.
        unpack_from = struct.Struct("<" + fmt.upper()).unpack_from
        pack_be = struct.Struct(">" + fmt.upper()).pack

        def from_bsatn(buf: Any, pos: int, out: bytearray) -> int:
            try:
                out += pack_be(unpack_from(buf, pos)[0] ^ flip)
            except struct.error:
                raise _short(buf, pos, size) from None
            return pos + size

    else:
        from_bytes = int.from_bytes

        def from_bsatn(buf: Any, pos: int, out: bytearray) -> int:
            end = pos + size
            if end > len(buf):
                raise _short(buf, pos, size)
            out += (from_bytes(buf[pos:end], "little") ^ flip).to_bytes(size, "big")
            return end

    def from_value(v: Any, out: bytearray) -> None:
        if not isinstance(v, int) or not lo <= v <= hi:
            raise EncodeError(f"{v!r} does not fit {ty!r}")
        out += (v + offset).to_bytes(size, "big")

    return KeyCodec(ty, from_value, from_bsatn)


def _float_bits_key(bits: int, width: int) -> int:
    """The key integer of an IEEE bit pattern (§6.1): NaN max, −0 = +0, sign-magnitude → biased."""
    sign = 1 << (width - 1)
    full = (1 << width) - 1
    exp_mask = 0x7F800000 if width == 32 else 0x7FF0000000000000
    if bits & exp_mask == exp_mask and bits & (full >> (1 + (8 if width == 32 else 11))):
        return full
    if bits == sign:
        bits = 0
    return bits ^ full if bits & sign else bits | sign


def _float_key(ty: PrimitiveType) -> KeyCodec:
    width = 32 if ty.kind == TypeTag.F32 else 64
    size = width // 8
    c = "I" if width == 32 else "Q"
    unpack_bits = struct.Struct("<" + c).unpack_from
    pack_float = struct.Struct("<" + ("f" if width == 32 else "d")).pack
    pack_be = struct.Struct(">" + c).pack

    def from_bsatn(buf: Any, pos: int, out: bytearray) -> int:
        try:
            bits = unpack_bits(buf, pos)[0]
        except struct.error:
            raise _short(buf, pos, size) from None
        out += pack_be(_float_bits_key(bits, width))
        return pos + size

    def from_value(v: Any, out: bytearray) -> None:
        try:
            bits = unpack_bits(pack_float(v))[0]
        except (struct.error, OverflowError, TypeError):
            raise EncodeError(f"{v!r} does not fit {ty!r}") from None
        out += pack_be(_float_bits_key(bits, width))

    return KeyCodec(ty, from_value, from_bsatn)


def _bool_key(ty: AlgebraicType) -> KeyCodec:
    def from_bsatn(buf: Any, pos: int, out: bytearray) -> int:
        try:
            b = buf[pos]
        except IndexError:
            raise _short(buf, pos, 1) from None
        if b > 1:
            raise DecodeError(f"invalid bool byte 0x{b:02x} at byte {pos}")
        out.append(b)
        return pos + 1

    def from_value(v: Any, out: bytearray) -> None:
        if v is True:
            out.append(1)
        elif v is False:
            out.append(0)
        else:
            raise EncodeError(f"{v!r} is not a bool")

    return KeyCodec(ty, from_value, from_bsatn)


def _escape(data: bytes | bytearray | memoryview, out: bytearray) -> None:
    """Byte-string key piece: escape NUL as ``00 ff`` and terminate with ``00 00``.

    The terminator sorts below every escaped byte (``00 ff`` or ``01``–``ff``), so a proper
    prefix sorts first and the piece is self-delimiting.
    """
    out += bytes(data).replace(b"\x00", b"\x00\xff")
    out += b"\x00\x00"


def _bytes_key(ty: AlgebraicType, is_string: bool) -> KeyCodec:
    def from_bsatn(buf: Any, pos: int, out: bytearray) -> int:
        n = _read_len(buf, pos)
        start = pos + 4
        end = start + n
        if end > len(buf):
            raise _short(buf, start, n)
        data = buf[start:end]
        if is_string:
            try:
                str(data, "utf-8")
            except UnicodeDecodeError as e:
                raise DecodeError(f"invalid UTF-8 in string at byte {start + e.start}") from None
        _escape(data, out)
        return end

    if is_string:

        def from_value(v: Any, out: bytearray) -> None:
            try:
                data = v.encode("utf-8")
            except (UnicodeEncodeError, AttributeError):
                raise EncodeError(f"{v!r} is not a valid string") from None
            _escape(data, out)

    else:

        def from_value(v: Any, out: bytearray) -> None:
            _escape(_as_bytes(v), out)

    return KeyCodec(ty, from_value, from_bsatn)


# ---------------------------------------------------------------------------------------------
# Composites
# ---------------------------------------------------------------------------------------------


def _array_key(ty: AlgebraicType, ek: KeyCodec, elem_min_size: int) -> KeyCodec:
    efv = ek.from_value
    efb = ek.from_bsatn

    def from_bsatn(buf: Any, pos: int, out: bytearray) -> int:
        n = _read_len(buf, pos)
        if elem_min_size and n * elem_min_size > len(buf) - pos - 4:
            raise DecodeError(f"array count {n} at byte {pos} exceeds what the remaining input can hold")
        pos += 4
        for _ in range(n):
            out.append(1)
            pos = efb(buf, pos, out)
        out.append(0)
        return pos

    def from_value(v: Any, out: bytearray) -> None:
        if not isinstance(v, (list, tuple)):
            raise EncodeError(f"{type(v).__name__} is not an array (list)")
        for i, x in enumerate(v):
            out.append(1)
            try:
                efv(x, out)
            except EncodeError as e:
                raise e.under(f"[{i}]") from None
        out.append(0)

    return KeyCodec(ty, from_value, from_bsatn)


def _product_key(ty: ProductType, eks: list[KeyCodec]) -> KeyCodec:
    n = len(eks)
    fbs = [k.from_bsatn for k in eks]
    fvs = [(e.name if e.name is not None else str(i), k.from_value) for i, (e, k) in enumerate(zip(ty.elements, eks, strict=True))]

    def from_bsatn(buf: Any, pos: int, out: bytearray) -> int:
        for f in fbs:
            pos = f(buf, pos, out)
        return pos

    def from_value(v: Any, out: bytearray) -> None:
        if not isinstance(v, (tuple, list)) or len(v) != n:
            raise EncodeError(f"{v!r} is not a product value of {n} element(s)")
        for (name, f), x in zip(fvs, v, strict=True):
            try:
                f(x, out)
            except EncodeError as e:
                raise e.under(name) from None

    return KeyCodec(ty, from_value, from_bsatn)


def _sum_key(ty: SumType, vks: list[KeyCodec]) -> KeyCodec:
    n = len(vks)
    fbs = tuple(k.from_bsatn for k in vks)
    fvs = tuple(k.from_value for k in vks)
    names = [v.name if v.name is not None else str(i) for i, v in enumerate(ty.variants)]

    def from_bsatn(buf: Any, pos: int, out: bytearray) -> int:
        try:
            tag = buf[pos]
            f = fbs[tag]
        except IndexError:
            if pos >= len(buf):
                raise _short(buf, pos, 1) from None
            raise DecodeError(f"invalid sum tag {buf[pos]} at byte {pos} (the type has {n} variant(s))") from None
        out.append(tag)
        return f(buf, pos + 1, out)

    from_value = sum_writer(n, names, fvs)

    return KeyCodec(ty, from_value, from_bsatn)


def _lazy_key(ty: AlgebraicType, cell: Cell[KeyCodec]) -> KeyCodec:
    """Indirection for a recursive type, patched once its compilation finishes."""

    def from_bsatn(buf: Any, pos: int, out: bytearray) -> int:
        try:
            return cell.target.from_bsatn(buf, pos, out)  # type: ignore[union-attr]
        except RecursionError:
            raise DecodeError(f"value nested too deeply at byte {pos}") from None

    def from_value(v: Any, out: bytearray) -> None:
        try:
            cell.target.from_value(v, out)  # type: ignore[union-attr]
        except RecursionError:
            raise EncodeError("value nested too deeply") from None

    return KeyCodec(ty, from_value, from_bsatn)


def _build(compiler: TypeCompiler[KeyCodec], ty: AlgebraicType) -> KeyCodec:
    """Compile the key encoders of a non-ref type (parts come from ``compiler.compile``)."""
    if isinstance(ty, PrimitiveType):
        if ty.kind in INT_LAYOUT:
            return _int_key(ty)
        if ty.kind in (TypeTag.F32, TypeTag.F64):
            return _float_key(ty)
        if ty.kind == TypeTag.BOOL:
            return _bool_key(ty)
        return _bytes_key(ty, is_string=True)
    if isinstance(ty, ProductType):
        return _product_key(ty, [compiler.compile(e.algebraic_type) for e in ty.elements])
    if isinstance(ty, SumType):
        return _sum_key(ty, [compiler.compile(v.algebraic_type) for v in ty.variants])
    if isinstance(ty, ArrayType):
        elem = compiler.resolve(ty.elem_ty)
        if isinstance(elem, PrimitiveType) and elem.kind == TypeTag.U8:
            return _bytes_key(ty, is_string=False)
        elem_min = codec_for(ty.elem_ty, compiler.ts).min_size
        return _array_key(ty, compiler.compile(ty.elem_ty), elem_min)
    raise SatsError(f"{ty!r} is not an AlgebraicType")


_CACHE: CompileCache[KeyCodec] = CompileCache(_build, _lazy_key)


def key_codec_for(ty: AlgebraicType, typespace: Typespace = EMPTY_TYPESPACE) -> KeyCodec:
    """The compiled :class:`KeyCodec` of ``ty`` (memoised per typespace object and type)."""
    return _CACHE.get(ty, typespace)


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def encode_key(ty: AlgebraicType, value: Any, typespace: Typespace = EMPTY_TYPESPACE) -> bytes:
    """The order-preserving key of a Python ``value`` of type ``ty``; EncodeError if it doesn't fit."""
    out = bytearray()
    key_codec_for(ty, typespace).from_value(value, out)
    return bytes(out)


def _fixed_int_converter(kind: TypeTag) -> KeyConverter:
    """The hot path for integer keys: one unpack, one xor, one pack, no bytearray."""
    fmt = STRUCT_FORMATS[kind].upper()
    bits, signed = INT_LAYOUT[kind]
    flip = 1 << (bits - 1) if signed else 0
    size = bits // 8
    unpack_from = struct.Struct("<" + fmt).unpack_from
    pack_be = struct.Struct(">" + fmt).pack

    def convert(buf: Any, pos: int) -> tuple[bytes, int]:
        try:
            return pack_be(unpack_from(buf, pos)[0] ^ flip), pos + size
        except struct.error:
            raise _short(buf, pos, size) from None

    return convert


def reversed_bsatn_width(ty: AlgebraicType, typespace: Typespace = EMPTY_TYPESPACE) -> int:
    """The width of ``ty`` when its key is its BSATN with the bytes reversed, else 0.

    True of the fixed-size unsigned integers: little-endian in BSATN, big-endian as a key. A
    caller holding such a value's BSATN can then build the key with a slice, no converter call.
    """
    resolved = typespace.resolve(ty) if isinstance(ty, Ref) else ty
    if isinstance(resolved, PrimitiveType) and resolved.kind in STRUCT_FORMATS and resolved.kind in INT_LAYOUT:
        bits, signed = INT_LAYOUT[resolved.kind]
        return 0 if signed else bits // 8
    return 0


def key_converter(ty: AlgebraicType, typespace: Typespace = EMPTY_TYPESPACE) -> KeyConverter:
    """A function ``(buf, pos) -> (key, new_pos)`` reading one BSATN ``ty`` at ``pos``.

    The key comes straight from the bytes, without building the Python value; malformed
    input raises DecodeError. Build it once and keep it: this is the index lookup hot path.
    """
    resolved = typespace.resolve(ty) if isinstance(ty, Ref) else ty
    if isinstance(resolved, PrimitiveType) and resolved.kind in STRUCT_FORMATS and resolved.kind in INT_LAYOUT:
        return _fixed_int_converter(resolved.kind)
    from_bsatn = key_codec_for(ty, typespace).from_bsatn

    def convert(buf: Any, pos: int) -> tuple[bytes, int]:
        out = bytearray()
        pos = from_bsatn(buf, pos, out)
        return bytes(out), pos

    return convert


def row_key_extractor(
    row_type: AlgebraicType, typespace: Typespace, cols: Sequence[int]
) -> Callable[[Any], bytes]:
    """A function ``row_bsatn -> key``: the concatenated keys of columns ``cols``, in that order.

    When every column up to the last one needed has a fixed size, column offsets are
    precomputed and the needed columns are read in place; otherwise the row is walked with
    the columns' BSATN ``skip``.
    """
    prod = typespace.resolve(row_type)
    if not isinstance(prod, ProductType):
        raise SatsError(f"row type {row_type!r} is not a product type")
    cols = list(cols)
    if not cols:
        return lambda row: b""
    for col in cols:
        if not 0 <= col < len(prod.elements):
            raise SatsError(f"column {col} is out of range (the row has {len(prod.elements)} columns)")
    last = max(cols)
    elem_types = [e.algebraic_type for e in prod.elements[: last + 1]]
    codecs = [codec_for(t, typespace) for t in elem_types]

    offsets: list[int] = []
    off = 0
    for c in codecs[:last]:
        offsets.append(off)
        if c.fixed_size is None:
            break
        off += c.fixed_size
    else:
        offsets.append(off)

    if len(offsets) == last + 1:
        convs = [(key_converter(elem_types[c], typespace), offsets[c]) for c in cols]
        if len(convs) == 1:
            conv, at = convs[0]
            return lambda row: conv(row, at)[0]

        def extract_fixed(row: Any) -> bytes:
            return b"".join([conv(row, at)[0] for conv, at in convs])

        return extract_fixed

    # Walk the row: convert the wanted columns, skip the others.
    wanted = set(cols)
    steps: list[tuple[bool, Callable[..., int]]] = []
    for i, (t, c) in enumerate(zip(elem_types, codecs, strict=True)):
        if i in wanted:
            steps.append((True, key_codec_for(t, typespace).from_bsatn))
        else:
            steps.append((False, c.skip))
    order = sorted(set(cols))
    if order == cols:

        def extract_in_order(row: Any) -> bytes:
            out = bytearray()
            pos = 0
            for is_key, f in steps:
                pos = f(row, pos, out) if is_key else f(row, pos)
            return bytes(out)

        return extract_in_order

    def extract_any_order(row: Any) -> bytes:
        pieces: dict[int, bytes] = {}
        pos = 0
        for i, (is_key, f) in enumerate(steps):
            if is_key:
                out = bytearray()
                pos = f(row, pos, out)
                pieces[i] = bytes(out)
            else:
                pos = f(row, pos)
        return b"".join([pieces[c] for c in cols])

    return extract_any_order


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string that starts with ``prefix``.

    This is the exclusive upper bound of a prefix scan (the "Max" sentinel after the bound
    columns). None when no such string exists: ``prefix`` is empty or all ``ff``.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))
