"""BSATN: the binary encoding of SATS values and types (spec ``sats-bsatn.md`` §2, §3).

Three layers:

* :class:`BsatnReader` / :class:`BsatnWriter` — a cursor over bytes with one method per
  primitive, plus the meta-encoding of types. Used to hand-decode structures such as
  ``RawModuleDef`` and to build test data.
* :func:`encode_type` / :func:`decode_type` — a type as the BSATN of the meta-type (§2).
* :func:`codec_for` — a :class:`Codec` compiled once per (type, typespace): closures with
  precompiled ``struct.Struct`` objects, used on hot paths (rows, reducer arguments).

Codec caching: :func:`codec_for` memoises codecs per typespace object (keyed by the
typespace's identity, holding a strong reference so the id cannot be reused) and per type
(by structural equality). A typespace must therefore not be mutated once codecs have been
compiled against it. Looking a codec up hashes the type, which for a large nested type costs
microseconds; hot paths should call :func:`codec_for` once and keep the codec.

Values follow the value model documented in :mod:`sats.types`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from sats._compile import Cell, CompileCache, TypeCompiler, sum_writer
from sats.errors import DecodeError, EncodeError, SatsError
from sats.types import (
    EMPTY_TYPESPACE,
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
)

__all__ = [
    "BsatnReader",
    "BsatnWriter",
    "Codec",
    "codec_for",
    "decode",
    "decode_type",
    "encode",
    "encode_type",
    "STRUCT_FORMATS",
]

DecodeFn = Callable[..., tuple[Any, int]]
EncodeIntoFn = Callable[[Any, bytearray], None]
SkipFn = Callable[[Any, int], int]

#: ``struct`` format characters of the primitives that ``struct`` handles natively.
#: Bool is deliberately absent: ``struct``'s ``?`` accepts any non-zero byte, BSATN does not.
STRUCT_FORMATS: dict[TypeTag, str] = {
    TypeTag.I8: "b",
    TypeTag.U8: "B",
    TypeTag.I16: "h",
    TypeTag.U16: "H",
    TypeTag.I32: "i",
    TypeTag.U32: "I",
    TypeTag.I64: "q",
    TypeTag.U64: "Q",
    TypeTag.F32: "f",
    TypeTag.F64: "d",
}

#: Byte width of every fixed-size primitive.
PRIMITIVE_SIZES: dict[TypeTag, int] = {
    TypeTag.BOOL: 1,
    TypeTag.I8: 1,
    TypeTag.U8: 1,
    TypeTag.I16: 2,
    TypeTag.U16: 2,
    TypeTag.I32: 4,
    TypeTag.U32: 4,
    TypeTag.I64: 8,
    TypeTag.U64: 8,
    TypeTag.I128: 16,
    TypeTag.U128: 16,
    TypeTag.I256: 32,
    TypeTag.U256: 32,
    TypeTag.F32: 4,
    TypeTag.F64: 8,
}

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_u32_unpack_from = _U32.unpack_from
_u32_pack = _U32.pack

#: Arrays whose elements take zero bytes (e.g. ``Vec<()>``) cannot be bounded by the input
#: length; cap them so a 4-byte input cannot make us build a list of 4 billion units.
MAX_ZERO_SIZE_ARRAY = 1 << 20

#: Nesting limit when decoding a type (meta-encoding), so hostile input cannot recurse
#: until Python's stack gives out.
MAX_TYPE_DEPTH = 128


def _short(buf: Any, pos: int, need: int) -> DecodeError:
    """The error for input that ends before a value does."""
    have = max(0, len(buf) - pos)
    return DecodeError(f"buffer too short at byte {pos}: need {need} more byte(s), have {have}")


def _read_len(buf: Any, pos: int) -> int:
    """Read a u32 length prefix, raising DecodeError on truncation."""
    try:
        return _u32_unpack_from(buf, pos)[0]  # type: ignore[no-any-return]
    except struct.error:
        raise _short(buf, pos, 4) from None


# ---------------------------------------------------------------------------------------------
# Reader / writer cursors
# ---------------------------------------------------------------------------------------------


def _reader_method(fmt: str, doc: str) -> Callable[[BsatnReader], Any]:
    s = struct.Struct("<" + fmt)
    unpack_from = s.unpack_from
    size = s.size

    def read(self: BsatnReader) -> Any:
        pos = self.pos
        try:
            v = unpack_from(self.buf, pos)[0]
        except struct.error:
            raise _short(self.buf, pos, size) from None
        self.pos = pos + size
        return v

    read.__doc__ = doc
    return read


def _reader_bigint(size: int, signed: bool, doc: str) -> Callable[[BsatnReader], int]:
    def read(self: BsatnReader) -> int:
        pos = self.pos
        end = pos + size
        if end > len(self.buf):
            raise _short(self.buf, pos, size)
        self.pos = end
        return int.from_bytes(self.buf[pos:end], "little", signed=signed)

    read.__doc__ = doc
    return read


class BsatnReader:
    """A cursor reading BSATN from ``buf`` starting at ``pos``; every error is a DecodeError."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    i8 = _reader_method("b", "Read an i8.")
    u8 = _reader_method("B", "Read a u8.")
    i16 = _reader_method("h", "Read an i16.")
    u16 = _reader_method("H", "Read a u16.")
    i32 = _reader_method("i", "Read an i32.")
    u32 = _reader_method("I", "Read a u32.")
    i64 = _reader_method("q", "Read an i64.")
    u64 = _reader_method("Q", "Read a u64.")
    f32 = _reader_method("f", "Read an f32 (as a Python float).")
    f64 = _reader_method("d", "Read an f64.")
    i128 = _reader_bigint(16, True, "Read an i128.")
    u128 = _reader_bigint(16, False, "Read a u128.")
    i256 = _reader_bigint(32, True, "Read an i256.")
    u256 = _reader_bigint(32, False, "Read a u256.")

    @property
    def remaining(self) -> int:
        """Bytes left after the cursor."""
        return max(0, len(self.buf) - self.pos)

    def at_end(self) -> bool:
        """True when every byte has been consumed."""
        return self.pos >= len(self.buf)

    def expect_end(self, what: str = "value") -> None:
        """Raise DecodeError if bytes are left over after a complete ``what``."""
        if self.pos != len(self.buf):
            raise DecodeError(f"{len(self.buf) - self.pos} trailing byte(s) after {what} at byte {self.pos}")

    def bool(self) -> bool:
        """Read a bool; bytes other than 0 and 1 are an error."""
        pos = self.pos
        try:
            b = self.buf[pos]
        except IndexError:
            raise _short(self.buf, pos, 1) from None
        if b > 1:
            raise DecodeError(f"invalid bool byte 0x{b:02x} at byte {pos}")
        self.pos = pos + 1
        return b == 1

    def raw(self, n: int) -> bytes:
        """Read exactly ``n`` raw bytes (no length prefix)."""
        pos = self.pos
        end = pos + n
        if end > len(self.buf):
            raise _short(self.buf, pos, n)
        self.pos = end
        return bytes(self.buf[pos:end])

    def bytes(self) -> bytes:
        """Read ``Array(U8)``: a u32 length then that many raw bytes."""
        n = self.u32()
        return self.raw(n)

    def string(self) -> str:
        """Read a String: u32 length then UTF-8."""
        n = self.u32()
        start = self.pos
        data = self.raw(n)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DecodeError(f"invalid UTF-8 in string at byte {start + e.start}") from None

    def option(self, read_fn: Callable[[], Any]) -> Any:
        """Read ``Option<T>`` with ``read_fn`` reading T; returns None for ``none``."""
        pos = self.pos
        tag = self.u8()
        if tag == 0:
            return read_fn()
        if tag == 1:
            return None
        raise DecodeError(f"invalid option tag {tag} at byte {pos}")

    def vec(self, read_fn: Callable[[], Any], min_elem_size: int = 1) -> list[Any]:
        """Read ``Vec<T>``: a u32 count then ``count`` items, each read by ``read_fn``.

        ``min_elem_size`` lets the count be checked against the remaining input before
        looping, so a corrupt count fails fast instead of looping billions of times.
        """
        pos = self.pos
        n = self.u32()
        limit = self.remaining // min_elem_size if min_elem_size > 0 else MAX_ZERO_SIZE_ARRAY
        if n > limit:
            raise DecodeError(f"array count {n} at byte {pos} exceeds what the remaining input can hold")
        return [read_fn() for _ in range(n)]

    def value(self, codec: Codec) -> Any:
        """Read one value with a compiled :class:`Codec`."""
        v, self.pos = codec.decode(self.buf, self.pos)
        return v

    # -- meta-encoding of types (§2) -----------------------------------------------------------

    def algebraic_type(self) -> AlgebraicType:
        """Read an AlgebraicType in its meta-encoding."""
        return self._algebraic_type(0)

    def product_type(self) -> ProductType:
        """Read a ProductType (u32 count + elements)."""
        return self._product_type(0)

    def sum_type(self) -> SumType:
        """Read a SumType (u32 count + variants)."""
        return self._sum_type(0)

    def typespace(self) -> Typespace:
        """Read a Typespace (u32 count + types)."""
        return Typespace(self.vec(self.algebraic_type))

    def _name(self) -> str | None:
        return self.option(self.string)  # type: ignore[no-any-return]

    def _algebraic_type(self, depth: int) -> AlgebraicType:
        if depth > MAX_TYPE_DEPTH:
            raise DecodeError(f"type nested more than {MAX_TYPE_DEPTH} levels deep at byte {self.pos}")
        pos = self.pos
        tag = self.u8()
        if tag == TypeTag.REF:
            return Ref(self.u32())
        if tag == TypeTag.SUM:
            return self._sum_type(depth + 1)
        if tag == TypeTag.PRODUCT:
            return self._product_type(depth + 1)
        if tag == TypeTag.ARRAY:
            return ArrayType(self._algebraic_type(depth + 1))
        if tag <= TypeTag.F64:
            return PRIMITIVES[TypeTag(tag)]
        raise DecodeError(f"invalid AlgebraicType tag {tag} at byte {pos}")

    def _product_type(self, depth: int) -> ProductType:
        def element() -> ProductTypeElement:
            name = self._name()
            return ProductTypeElement(name, self._algebraic_type(depth))

        return ProductType(tuple(self.vec(element, 2)))

    def _sum_type(self, depth: int) -> SumType:
        def variant() -> SumTypeVariant:
            name = self._name()
            return SumTypeVariant(name, self._algebraic_type(depth))

        return SumType(tuple(self.vec(variant, 2)))


def _writer_method(fmt: str, doc: str) -> Callable[[BsatnWriter, Any], BsatnWriter]:
    pack = struct.Struct("<" + fmt).pack

    def write(self: BsatnWriter, v: Any) -> BsatnWriter:
        try:
            self.out += pack(v)
        except (struct.error, OverflowError, TypeError) as e:
            raise EncodeError(f"{v!r} does not fit {fmt!r}: {e}") from None
        return self

    write.__doc__ = doc
    return write


def _writer_bigint(size: int, signed: bool, doc: str) -> Callable[[BsatnWriter, int], BsatnWriter]:
    def write(self: BsatnWriter, v: int) -> BsatnWriter:
        try:
            self.out += v.to_bytes(size, "little", signed=signed)
        except (OverflowError, AttributeError, TypeError):
            raise EncodeError(f"{v!r} does not fit a {'signed' if signed else 'unsigned'} {size * 8}-bit integer") from None
        return self

    write.__doc__ = doc
    return write


class BsatnWriter:
    """Builds BSATN into a bytearray; method names mirror :class:`BsatnReader` and chain."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out = bytearray()

    i8 = _writer_method("b", "Write an i8.")
    u8 = _writer_method("B", "Write a u8.")
    i16 = _writer_method("h", "Write an i16.")
    u16 = _writer_method("H", "Write a u16.")
    i32 = _writer_method("i", "Write an i32.")
    u32 = _writer_method("I", "Write a u32.")
    i64 = _writer_method("q", "Write an i64.")
    u64 = _writer_method("Q", "Write a u64.")
    f32 = _writer_method("f", "Write an f32.")
    f64 = _writer_method("d", "Write an f64.")
    i128 = _writer_bigint(16, True, "Write an i128.")
    u128 = _writer_bigint(16, False, "Write a u128.")
    i256 = _writer_bigint(32, True, "Write an i256.")
    u256 = _writer_bigint(32, False, "Write a u256.")

    def getvalue(self) -> bytes:
        """Everything written so far."""
        return bytes(self.out)

    def bool(self, v: bool) -> BsatnWriter:
        """Write a bool as 00/01."""
        self.out.append(1 if v else 0)
        return self

    def raw(self, data: bytes | bytearray | memoryview) -> BsatnWriter:
        """Append raw bytes (no length prefix)."""
        self.out += data
        return self

    def bytes(self, data: bytes | bytearray | memoryview) -> BsatnWriter:
        """Write ``Array(U8)``: u32 length + raw bytes."""
        self.u32(len(data))
        self.out += data
        return self

    def string(self, s: str) -> BsatnWriter:
        """Write a String: u32 length + UTF-8."""
        try:
            data = s.encode("utf-8")
        except (UnicodeEncodeError, AttributeError):
            raise EncodeError(f"{s!r} is not a valid string") from None
        return self.bytes(data)

    def option(self, v: Any, write_fn: Callable[[Any], Any]) -> BsatnWriter:
        """Write ``Option<T>``: ``01`` for None, else ``00`` + ``write_fn(v)``."""
        if v is None:
            self.out.append(1)
        else:
            self.out.append(0)
            write_fn(v)
        return self

    def vec(self, items: Any, write_fn: Callable[[Any], Any]) -> BsatnWriter:
        """Write ``Vec<T>``: u32 count + ``write_fn(item)`` for each item."""
        items = list(items)
        self.u32(len(items))
        for item in items:
            write_fn(item)
        return self

    def value(self, codec: Codec, v: Any) -> BsatnWriter:
        """Write one value with a compiled :class:`Codec`."""
        codec.encode_into(v, self.out)
        return self

    # -- meta-encoding of types (§2) -----------------------------------------------------------

    def algebraic_type(self, ty: AlgebraicType) -> BsatnWriter:
        """Write an AlgebraicType in its meta-encoding."""
        if isinstance(ty, Ref):
            self.out.append(TypeTag.REF)
            self.u32(ty.idx)
        elif isinstance(ty, SumType):
            self.out.append(TypeTag.SUM)
            self.sum_type(ty)
        elif isinstance(ty, ProductType):
            self.out.append(TypeTag.PRODUCT)
            self.product_type(ty)
        elif isinstance(ty, ArrayType):
            self.out.append(TypeTag.ARRAY)
            self.algebraic_type(ty.elem_ty)
        elif isinstance(ty, PrimitiveType):
            self.out.append(ty.kind)
        else:
            raise EncodeError(f"{ty!r} is not an AlgebraicType")
        return self

    def product_type(self, ty: ProductType) -> BsatnWriter:
        """Write a ProductType."""
        self.u32(len(ty.elements))
        for e in ty.elements:
            self.option(e.name, self.string)
            self.algebraic_type(e.algebraic_type)
        return self

    def sum_type(self, ty: SumType) -> BsatnWriter:
        """Write a SumType."""
        self.u32(len(ty.variants))
        for v in ty.variants:
            self.option(v.name, self.string)
            self.algebraic_type(v.algebraic_type)
        return self

    def typespace(self, ts: Typespace) -> BsatnWriter:
        """Write a Typespace."""
        return self.vec(ts.types, self.algebraic_type)


def encode_type(ty: AlgebraicType) -> bytes:
    """The BSATN meta-encoding of ``ty`` (spec §2)."""
    return BsatnWriter().algebraic_type(ty).getvalue()


def decode_type(buf: bytes | bytearray | memoryview) -> AlgebraicType:
    """Decode a whole buffer holding one meta-encoded AlgebraicType; trailing bytes are an error."""
    r = BsatnReader(buf)
    ty = r.algebraic_type()
    r.expect_end("type")
    return ty


# ---------------------------------------------------------------------------------------------
# Compiled value codecs
# ---------------------------------------------------------------------------------------------


class Codec:
    """A compiled BSATN codec for one type.

    The attributes are plain functions (closures), so ``codec.decode(buf, pos)`` costs one
    attribute load and one call:

    * ``decode(buf, pos=0) -> (value, new_pos)`` — read one value; trailing bytes are ignored.
    * ``encode(value) -> bytes`` and ``encode_into(value, out: bytearray) -> None``.
    * ``skip(buf, pos) -> new_pos`` — step over one value without building it. It checks
      lengths and the sum tags it needs to find the end, but not bool bytes or UTF-8.
    * ``fixed_size`` — the encoded size if every value has the same size, else None.
    * ``min_size`` — a lower bound on the encoded size.
    """

    __slots__ = ("ty", "decode", "encode", "encode_into", "skip", "fixed_size", "min_size")

    ty: AlgebraicType
    decode: DecodeFn
    encode: Callable[[Any], bytes]
    encode_into: EncodeIntoFn
    skip: SkipFn
    fixed_size: int | None
    min_size: int

    def decode_all(self, buf: bytes | bytearray | memoryview) -> Any:
        """Decode a buffer holding exactly one value; trailing bytes are a DecodeError."""
        v, pos = self.decode(buf, 0)
        if pos != len(buf):
            raise DecodeError(f"{len(buf) - pos} trailing byte(s) after value at byte {pos}")
        return v

    def __repr__(self) -> str:
        return f"Codec({self.ty!r})"


def _make(
    ty: AlgebraicType,
    decode: DecodeFn,
    encode_into: EncodeIntoFn,
    skip: SkipFn,
    fixed_size: int | None,
    min_size: int,
    encode: Callable[[Any], bytes] | None = None,
) -> Codec:
    c = Codec()
    c.ty = ty
    c.decode = decode
    c.encode_into = encode_into
    c.skip = skip
    c.fixed_size = fixed_size
    c.min_size = min_size
    if encode is None:

        def encode(v: Any) -> bytes:
            out = bytearray()
            encode_into(v, out)
            return bytes(out)

    c.encode = encode
    return c


def _fixed_skip(size: int) -> SkipFn:
    def skip(buf: Any, pos: int) -> int:
        end = pos + size
        if end > len(buf):
            raise _short(buf, pos, size)
        return end

    return skip


def _struct_codec(ty: AlgebraicType, fmt: str) -> Codec:
    s = struct.Struct("<" + fmt)
    unpack_from = s.unpack_from
    pack = s.pack
    size = s.size

    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        try:
            return unpack_from(buf, pos)[0], pos + size
        except struct.error:
            raise _short(buf, pos, size) from None

    def encode(v: Any) -> bytes:
        try:
            return pack(v)
        except (struct.error, OverflowError, TypeError):
            raise EncodeError(f"{v!r} does not fit {ty!r}") from None

    def encode_into(v: Any, out: bytearray) -> None:
        try:
            out += pack(v)
        except (struct.error, OverflowError, TypeError):
            raise EncodeError(f"{v!r} does not fit {ty!r}") from None

    return _make(ty, decode, encode_into, _fixed_skip(size), size, size, encode)


def _bigint_codec(ty: AlgebraicType, size: int, signed: bool) -> Codec:
    from_bytes = int.from_bytes

    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        end = pos + size
        if end > len(buf):
            raise _short(buf, pos, size)
        return from_bytes(buf[pos:end], "little", signed=signed), end

    def encode(v: Any) -> bytes:
        # ``type(v) is bool`` is allowed like everywhere else ints are; floats are not.
        try:
            return v.to_bytes(size, "little", signed=signed)  # type: ignore[no-any-return]
        except (OverflowError, AttributeError, TypeError):
            raise EncodeError(f"{v!r} does not fit {ty!r}") from None

    def encode_into(v: Any, out: bytearray) -> None:
        try:
            out += v.to_bytes(size, "little", signed=signed)
        except (OverflowError, AttributeError, TypeError):
            raise EncodeError(f"{v!r} does not fit {ty!r}") from None

    return _make(ty, decode, encode_into, _fixed_skip(size), size, size, encode)


def _bool_codec(ty: AlgebraicType) -> Codec:
    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        try:
            b = buf[pos]
        except IndexError:
            raise _short(buf, pos, 1) from None
        if b > 1:
            raise DecodeError(f"invalid bool byte 0x{b:02x} at byte {pos}")
        return b == 1, pos + 1

    def encode_into(v: Any, out: bytearray) -> None:
        if v is True:
            out.append(1)
        elif v is False:
            out.append(0)
        else:
            raise EncodeError(f"{v!r} is not a bool")

    def encode(v: Any) -> bytes:
        if v is True:
            return b"\x01"
        if v is False:
            return b"\x00"
        raise EncodeError(f"{v!r} is not a bool")

    return _make(ty, decode, encode_into, _fixed_skip(1), 1, 1, encode)


def _var_skip(buf: Any, pos: int) -> int:
    """Skip a u32-length-prefixed byte run (String, Array(U8))."""
    n = _read_len(buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise _short(buf, pos + 4, n)
    return end


def _string_codec(ty: AlgebraicType) -> Codec:
    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        n = _read_len(buf, pos)
        start = pos + 4
        end = start + n
        if end > len(buf):
            raise _short(buf, start, n)
        try:
            return str(buf[start:end], "utf-8"), end
        except UnicodeDecodeError as e:
            raise DecodeError(f"invalid UTF-8 in string at byte {start + e.start}") from None

    def encode_into(v: Any, out: bytearray) -> None:
        try:
            data = v.encode("utf-8")
        except (UnicodeEncodeError, AttributeError):
            raise EncodeError(f"{v!r} is not a valid string") from None
        out += _u32_pack(len(data))
        out += data

    return _make(ty, decode, encode_into, _var_skip, None, 4)


def _as_bytes(v: Any) -> bytes | bytearray | memoryview:
    """Accept bytes-like values, or a list/tuple of ints 0..255, for ``Array(U8)``."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return v
    if isinstance(v, (list, tuple)):
        try:
            return bytes(v)
        except (ValueError, TypeError):
            pass
    raise EncodeError(f"{v!r} is not bytes")


def _bytes_codec(ty: AlgebraicType) -> Codec:
    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        n = _read_len(buf, pos)
        start = pos + 4
        end = start + n
        if end > len(buf):
            raise _short(buf, start, n)
        return bytes(buf[start:end]), end

    def encode_into(v: Any, out: bytearray) -> None:
        data = _as_bytes(v)
        out += _u32_pack(len(data))
        out += data

    return _make(ty, decode, encode_into, _var_skip, None, 4)


def _struct_array_codec(ty: AlgebraicType, fmt: str) -> Codec:
    """Arrays of a struct-native primitive: one ``struct`` call for the whole array."""
    size = struct.calcsize("<" + fmt)

    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        n = _read_len(buf, pos)
        start = pos + 4
        if start + n * size > len(buf):
            raise _short(buf, start, n * size)
        return list(struct.unpack_from(f"<{n}{fmt}", buf, start)), start + n * size

    def encode_into(v: Any, out: bytearray) -> None:
        try:
            n = len(v)
            out += _u32_pack(n)
            out += struct.pack(f"<{n}{fmt}", *v)
        except (struct.error, OverflowError, TypeError):
            raise EncodeError(f"{v!r} does not fit {ty!r}") from None

    def skip(buf: Any, pos: int) -> int:
        n = _read_len(buf, pos)
        end = pos + 4 + n * size
        if end > len(buf):
            raise _short(buf, pos + 4, n * size)
        return end

    return _make(ty, decode, encode_into, skip, None, 4)


def _array_codec(ty: AlgebraicType, ec: Codec) -> Codec:
    edec = ec.decode
    eenc = ec.encode_into
    eskip = ec.skip
    emin = ec.min_size
    efixed = ec.fixed_size

    def count(buf: Any, pos: int) -> int:
        n = _read_len(buf, pos)
        if emin:
            if n * emin > len(buf) - pos - 4:
                raise DecodeError(f"array count {n} at byte {pos} exceeds what the remaining input can hold")
        elif n > MAX_ZERO_SIZE_ARRAY:
            raise DecodeError(f"array of zero-sized elements at byte {pos} is too long ({n})")
        return n  # type: ignore[no-any-return]

    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        n = count(buf, pos)
        pos += 4
        out: list[Any] = []
        append = out.append
        for _ in range(n):
            v, pos = edec(buf, pos)
            append(v)
        return out, pos

    def encode_into(v: Any, out: bytearray) -> None:
        if not isinstance(v, (list, tuple)):
            raise EncodeError(f"{type(v).__name__} is not an array (list)")
        out += _u32_pack(len(v))
        i = 0
        try:
            for i, x in enumerate(v):  # noqa: B007 - i is read in the handler
                eenc(x, out)
        except EncodeError as e:
            raise e.under(f"[{i}]") from None

    if efixed is not None:

        def skip(buf: Any, pos: int) -> int:
            n = _read_len(buf, pos)
            end = pos + 4 + n * efixed
            if end > len(buf):
                raise _short(buf, pos + 4, n * efixed)
            return end

    else:

        def skip(buf: Any, pos: int) -> int:
            n = count(buf, pos)
            pos += 4
            for _ in range(n):
                pos = eskip(buf, pos)
            return pos

    return _make(ty, decode, encode_into, skip, None, 4)


def _unit_codec(ty: AlgebraicType) -> Codec:
    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        return (), pos

    def encode_into(v: Any, out: bytearray) -> None:
        if v != () and v != []:
            raise EncodeError(f"{v!r} is not the unit value ()")

    def encode(v: Any) -> bytes:
        encode_into(v, bytearray())
        return b""

    def skip(buf: Any, pos: int) -> int:
        return pos

    return _make(ty, decode, encode_into, skip, 0, 0, encode)


def _product_codec(ty: ProductType, ecs: list[Codec]) -> Codec:
    n = len(ecs)
    names = [e.name if e.name is not None else str(i) for i, e in enumerate(ty.elements)]
    sizes = [c.fixed_size for c in ecs]
    fixed_size = sum(s for s in sizes if s is not None) if None not in sizes else None
    min_size = sum(c.min_size for c in ecs)
    fmts = [STRUCT_FORMATS.get(e.algebraic_type.tag) for e in ty.elements]

    if all(f is not None and isinstance(e.algebraic_type, PrimitiveType) for f, e in zip(fmts, ty.elements, strict=True)):
        # Every element is a struct-native primitive: the whole row is one struct call.
        return _struct_product_codec(ty, ecs, names, "".join(f for f in fmts if f))

    decs = [c.decode for c in ecs]
    encs = list(zip(names, [c.encode_into for c in ecs], strict=True))
    skips = [c.skip for c in ecs]

    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        out: list[Any] = []
        append = out.append
        for d in decs:
            v, pos = d(buf, pos)
            append(v)
        return tuple(out), pos

    def encode_into(v: Any, out: bytearray) -> None:
        if not isinstance(v, (tuple, list)) or len(v) != n:
            raise _arity(v, n)
        name = ""
        try:
            for (name, enc), x in zip(encs, v, strict=True):  # noqa: B007 - name is read in the handler
                enc(x, out)
        except EncodeError as e:
            raise e.under(name) from None

    if fixed_size is not None:
        skip = _fixed_skip(fixed_size)
    else:

        def skip(buf: Any, pos: int) -> int:
            for s in skips:
                pos = s(buf, pos)
            return pos

    return _make(ty, decode, encode_into, skip, fixed_size, min_size)


def _struct_product_codec(ty: ProductType, ecs: list[Codec], names: list[str], fmt: str) -> Codec:
    """A product of struct-native primitives: decoding a row is a single ``unpack_from``."""
    n = len(ecs)
    s = struct.Struct("<" + fmt)
    unpack_from = s.unpack_from
    pack = s.pack
    size = s.size

    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        try:
            return unpack_from(buf, pos), pos + size
        except struct.error:
            raise _short(buf, pos, size) from None

    def encode(v: Any) -> bytes:
        if not isinstance(v, (tuple, list)) or len(v) != n:
            raise _arity(v, n)
        try:
            return pack(*v)
        except (struct.error, OverflowError, TypeError):
            raise _locate(v, ecs, names) from None

    def encode_into(v: Any, out: bytearray) -> None:
        out += encode(v)

    return _make(ty, decode, encode_into, _fixed_skip(size), size, size, encode)


def _arity(v: Any, n: int) -> EncodeError:
    if not isinstance(v, (tuple, list)):
        return EncodeError(f"{type(v).__name__} is not a product value (tuple of {n})")
    return EncodeError(f"product value has {len(v)} element(s), the type has {n}")


def _locate(v: Any, ecs: list[Codec], names: list[str]) -> EncodeError:
    """Find which element of a struct-packed product failed, for a precise error."""
    for c, name, x in zip(ecs, names, v, strict=False):
        try:
            c.encode(x)
        except EncodeError as e:
            return e.under(name)
    return EncodeError(f"{v!r} does not fit the product type")


def _sum_codec(ty: SumType, vcs: list[Codec]) -> Codec:
    n = len(vcs)
    decs = tuple(c.decode for c in vcs)
    encs = tuple(c.encode_into for c in vcs)
    skips = tuple(c.skip for c in vcs)
    names = [v.name if v.name is not None else str(i) for i, v in enumerate(ty.variants)]
    sizes = {c.fixed_size for c in vcs}
    fixed_size = 1 + sizes.pop() if len(sizes) == 1 and None not in sizes else None  # type: ignore[operator]
    min_size = 1 + min((c.min_size for c in vcs), default=0)

    def bad_tag(buf: Any, pos: int) -> DecodeError:
        if pos >= len(buf):
            return _short(buf, pos, 1)
        return DecodeError(f"invalid sum tag {buf[pos]} at byte {pos} (the type has {n} variant(s))")

    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        try:
            tag = buf[pos]
            d = decs[tag]
        except IndexError:
            raise bad_tag(buf, pos) from None
        v, pos = d(buf, pos + 1)
        return SumValue(tag, v), pos

    encode_into = sum_writer(n, names, encs)

    if fixed_size is not None:
        size = fixed_size

        def skip(buf: Any, pos: int) -> int:
            end = pos + size
            if end > len(buf):
                raise _short(buf, pos, size)
            if buf[pos] >= n:
                raise bad_tag(buf, pos)
            return end

    else:

        def skip(buf: Any, pos: int) -> int:
            try:
                s = skips[buf[pos]]
            except IndexError:
                raise bad_tag(buf, pos) from None
            return s(buf, pos + 1)

    return _make(ty, decode, encode_into, skip, fixed_size, min_size)


def _lazy_codec(ty: AlgebraicType, cell: Cell[Codec]) -> Codec:
    """Indirection for a recursive reference: resolved at call time, once compilation ends."""

    def decode(buf: Any, pos: int = 0) -> tuple[Any, int]:
        try:
            return cell.target.decode(buf, pos)  # type: ignore[union-attr]
        except RecursionError:
            raise DecodeError(f"value nested too deeply at byte {pos}") from None

    def encode_into(v: Any, out: bytearray) -> None:
        try:
            cell.target.encode_into(v, out)  # type: ignore[union-attr]
        except RecursionError:
            raise EncodeError("value nested too deeply") from None

    def skip(buf: Any, pos: int) -> int:
        try:
            return cell.target.skip(buf, pos)  # type: ignore[union-attr]
        except RecursionError:
            raise DecodeError(f"value nested too deeply at byte {pos}") from None

    return _make(ty, decode, encode_into, skip, None, 0)


def _build(compiler: TypeCompiler[Codec], ty: AlgebraicType) -> Codec:
    """Compile the codec of a non-ref type (parts come from ``compiler.compile``)."""
    if isinstance(ty, PrimitiveType):
        kind = ty.kind
        fmt = STRUCT_FORMATS.get(kind)
        if fmt is not None:
            return _struct_codec(ty, fmt)
        if kind == TypeTag.BOOL:
            return _bool_codec(ty)
        if kind == TypeTag.STRING:
            return _string_codec(ty)
        size = PRIMITIVE_SIZES[kind]
        return _bigint_codec(ty, size, kind in (TypeTag.I128, TypeTag.I256))
    if isinstance(ty, ProductType):
        if not ty.elements:
            return _unit_codec(ty)
        return _product_codec(ty, [compiler.compile(e.algebraic_type) for e in ty.elements])
    if isinstance(ty, SumType):
        return _sum_codec(ty, [compiler.compile(v.algebraic_type) for v in ty.variants])
    if isinstance(ty, ArrayType):
        elem = compiler.resolve(ty.elem_ty)
        if isinstance(elem, PrimitiveType):
            if elem.kind == TypeTag.U8:
                return _bytes_codec(ty)
            fmt = STRUCT_FORMATS.get(elem.kind)
            if fmt is not None:
                return _struct_array_codec(ty, fmt)
        return _array_codec(ty, compiler.compile(ty.elem_ty))
    raise SatsError(f"{ty!r} is not an AlgebraicType")


_CACHE: CompileCache[Codec] = CompileCache(_build, _lazy_codec)


def codec_for(ty: AlgebraicType, typespace: Typespace = EMPTY_TYPESPACE) -> Codec:
    """The compiled :class:`Codec` of ``ty``, whose refs point into ``typespace`` (memoised).

    Raises SatsError if ``ty`` (or a type it needs) has an out-of-range or ref-only-cycle ref.
    """
    return _CACHE.get(ty, typespace)


def encode(ty: AlgebraicType, value: Any, typespace: Typespace = EMPTY_TYPESPACE) -> bytes:
    """The BSATN of ``value`` as a ``ty``."""
    return codec_for(ty, typespace).encode(value)


def decode(ty: AlgebraicType, buf: bytes | bytearray | memoryview, typespace: Typespace = EMPTY_TYPESPACE) -> Any:
    """Decode a buffer holding exactly one ``ty``; trailing bytes are a DecodeError."""
    return codec_for(ty, typespace).decode_all(buf)
