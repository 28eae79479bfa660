"""BSATN: the spec's byte vectors (§7), type meta-encoding (§2), round trips and fuzzing."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sats.bsatn import BsatnReader, BsatnWriter, codec_for, decode, decode_type, encode, encode_type
from sats.errors import DecodeError, EncodeError, SatsError
from sats.types import (
    BOOL,
    BYTES,
    CONNECTION_ID,
    EMPTY_TYPESPACE,
    F32,
    F64,
    I16,
    I64,
    I128,
    I256,
    IDENTITY,
    NEVER,
    SCHEDULE_AT,
    STRING,
    TIME_DURATION,
    TIMESTAMP,
    U8,
    U16,
    U32,
    U64,
    U128,
    U256,
    UNIT,
    AlgebraicType,
    ArrayType,
    Ref,
    SumValue,
    Typespace,
    option,
    product,
    result,
    simple_enum,
    sum_type,
)
from tests.sats.strategies import algebraic_types, types_and_values, values_equal


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


ROW_71 = product(("a", U32), ("b", STRING), ("c", option(U8)))
TYPE_71_HEX = (
    "02 03000000"
    " 00 01000000 61 0b"
    " 00 01000000 62 04"
    " 00 01000000 63"
    " 01 02000000"
    " 00 04000000 736f6d65 07"
    " 00 04000000 6e6f6e65 02 00000000"
)
COLOR = simple_enum("Red", "Green", "Blue")
RANGE_BOUND_U32 = sum_type(("Included", U32), ("Excluded", U32), ("Unbounded", UNIT))

# (type, value, hex) — every value vector of §7.
VECTORS: list[tuple[AlgebraicType, Any, str]] = [
    (ROW_71, (42, "hi", SumValue(0, 7)), "2a000000 02000000 6869 00 07"),
    (ROW_71, (42, "hi", SumValue(1, ())), "2a000000 02000000 6869 01"),
    (IDENTITY, (0xC20011110000000000000000000000000000000000000000000000000000ABAB,), "abab" + "00" * 26 + "1111 00c2"),
    (CONNECTION_ID, (0x0123456789ABCDEF0011223344556677,), "77 66 55 44 33 22 11 00 ef cd ab 89 67 45 23 01"),
    (TIMESTAMP, (1_700_000_000_000_000,), "00 40 1e 18 24 0a 06 00"),
    (SCHEDULE_AT, SumValue(0, (1_000_000,)), "00 40 42 0f 00 00 00 00 00"),
    (SCHEDULE_AT, SumValue(1, (1_700_000_000_000_000,)), "01 00 40 1e 18 24 0a 06 00"),
    (ArrayType(U16), [1, 2], "02000000 0100 0200"),
    (BYTES, b"\xde\xad", "02000000 dead"),
    (STRING, "", "00000000"),
    (STRING, "€", "03000000 e282ac"),
    (BOOL, True, "01"),
    (BOOL, False, "00"),
    (I16, -2, "feff"),
    (F32, 1.5, "0000c03f"),
    (F64, -0.0, "0000000000000080"),
    (I128, -1, "ff" * 16),
    (U128, 1, "01" + "00" * 15),
    (result(U32, STRING), SumValue(0, 5), "00 05000000"),
    (result(U32, STRING), SumValue(1, "x"), "01 01000000 78"),
    (RANGE_BOUND_U32, SumValue(0, 5), "00 05000000"),
    (RANGE_BOUND_U32, SumValue(1, 10), "01 0a000000"),
    (RANGE_BOUND_U32, SumValue(2, ()), "02"),
    (product(("name", STRING), ("age", U8)), ("Al", 30), "02000000 416c 1e"),
    (ArrayType(ROW_71), [(42, "hi", SumValue(0, 7))], "01000000 2a000000 02000000 6869 00 07"),
    (COLOR, SumValue(1, ()), "01"),
    (TIME_DURATION, (-1,), "ff" * 8),
    (UNIT, (), ""),
    (I256, -2, "fe" + "ff" * 31),
    (U256, 1 << 255, "00" * 31 + "80"),
    (I64, -(1 << 63), "00" * 7 + "80"),
    (U64, (1 << 64) - 1, "ff" * 8),
]


@pytest.mark.parametrize(("ty", "value", "hexstr"), VECTORS)
def test_vectors_encode_and_decode(ty: AlgebraicType, value: Any, hexstr: str) -> None:
    expected = h(hexstr)
    assert encode(ty, value) == expected
    got = decode(ty, expected)
    assert values_equal(got, value)
    codec = codec_for(ty)
    assert codec.skip(expected, 0) == len(expected)
    from_view, end = codec.decode(memoryview(expected))
    assert values_equal(from_view, value) and end == len(expected)
    if codec.fixed_size is not None:
        assert codec.fixed_size == len(expected)


def test_type_meta_encoding_of_71_is_54_bytes() -> None:
    enc = encode_type(ROW_71)
    assert len(enc) == 54
    assert enc == h(TYPE_71_HEX)
    assert decode_type(enc) == ROW_71


def test_type_meta_encoding_of_plain_enum() -> None:
    expected = h(
        "01 03 00 00 00 00 03 00 00 00 52 65 64 02 00 00 00 00 00 05 00 00 00 47 72 65 65 6e 02 00 00 00 00"
        " 00 04 00 00 00 42 6c 75 65 02 00 00 00 00"
    )
    assert encode_type(COLOR) == expected
    assert decode_type(expected) == COLOR


def test_type_meta_encoding_misc() -> None:
    assert encode_type(Ref(3)) == h("00 03000000")
    assert encode_type(ArrayType(STRING)) == h("03 04")
    assert encode_type(product((None, U8))) == h("02 01000000 01 07")
    assert [encode_type(t)[0] for t in (STRING, BOOL, U8, I16, U128, I256, F32, F64)] == [4, 5, 7, 8, 15, 16, 18, 19]


def test_delete_by_equality_relation() -> None:
    # §7.11: a relation is a u32 row count followed by the rows.
    w = BsatnWriter().u32(1).value(codec_for(ROW_71), (42, "hi", SumValue(0, 7)))
    assert w.getvalue() == h("01000000 2a000000 02000000 6869 00 07")


def test_reader_writer_primitives_round_trip() -> None:
    w = BsatnWriter()
    w.u8(255).i8(-128).u16(65535).i16(-2).u32(7).i32(-7).u64(1 << 63).i64(-(1 << 63))
    w.u128(1 << 127).i128(-(1 << 127)).u256((1 << 256) - 1).i256(-1).f32(1.5).f64(-0.25)
    w.bool(True).string("héllo").bytes(b"\x00\x01").option(None, w.u8).option(9, w.u8)
    w.vec([1, 2, 3], w.u16).typespace(Typespace([ROW_71, Ref(0)]))
    r = BsatnReader(w.getvalue())
    assert [r.u8(), r.i8(), r.u16(), r.i16(), r.u32(), r.i32(), r.u64(), r.i64()] == [
        255, -128, 65535, -2, 7, -7, 1 << 63, -(1 << 63)
    ]
    assert [r.u128(), r.i128(), r.u256(), r.i256(), r.f32(), r.f64()] == [
        1 << 127, -(1 << 127), (1 << 256) - 1, -1, 1.5, -0.25
    ]
    assert r.bool() is True
    assert r.string() == "héllo"
    assert r.bytes() == b"\x00\x01"
    assert r.option(r.u8) is None
    assert r.option(r.u8) == 9
    assert r.vec(r.u16) == [1, 2, 3]
    assert r.typespace().types == [ROW_71, Ref(0)]
    assert r.at_end() and r.remaining == 0
    r.expect_end()


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("u32", "010203"),
        ("u128", "00" * 15),
        ("bool", "02"),
        ("bool", ""),
        ("string", "05000000 6869"),
        ("string", "02000000 c328"),
        ("bytes", "ffffffff"),
        ("algebraic_type", "14"),
        ("algebraic_type", "02 01000000 02"),
        ("typespace", "ffffff7f 04"),
    ],
)
def test_reader_errors_are_decode_errors(method: str, data: str) -> None:
    with pytest.raises(DecodeError):
        getattr(BsatnReader(h(data)), method)()


def test_reader_option_bad_tag_and_trailing_bytes() -> None:
    r = BsatnReader(b"\x02")
    with pytest.raises(DecodeError, match="option tag"):
        r.option(r.u8)
    with pytest.raises(DecodeError, match="trailing"):
        decode_type(h("04 00"))
    with pytest.raises(DecodeError, match="trailing"):
        decode(U8, b"\x01\x02")


def test_decode_type_depth_limit() -> None:
    with pytest.raises(DecodeError, match="nested"):
        decode_type(b"\x03" * 10_000 + b"\x04")
    assert decode_type(b"\x03" * 50 + b"\x04") is not None


@pytest.mark.parametrize(
    ("ty", "data", "match"),
    [
        (BOOL, "02", "invalid bool"),
        (STRING, "02000000 c328", "UTF-8"),
        (STRING, "03000000 6869", "too short"),
        (option(U8), "02", "invalid sum tag"),
        (option(U8), "", "too short"),
        (NEVER, "00", "invalid sum tag"),
        (U32, "010203", "too short"),
        (U256, "00" * 31, "too short"),
        (ArrayType(U64), "02000000" + "00" * 15, "too short"),
        (ArrayType(STRING), "ffffffff", "exceeds"),
        (ArrayType(UNIT), "ffffffff", "zero-sized"),
        (product(("a", U32), ("b", I64)), "00" * 11, "too short"),
    ],
)
def test_decode_errors(ty: AlgebraicType, data: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(ty, h(data))


@pytest.mark.parametrize(
    ("ty", "value", "path"),
    [
        (U8, 256, ""),
        (U8, -1, ""),
        (I128, 1 << 127, ""),
        (U256, -1, ""),
        (U32, 1.0, ""),
        (F32, 1e300, ""),
        (BOOL, 1, ""),
        (STRING, b"x", ""),
        (STRING, "\ud800", ""),
        (BYTES, "ab", ""),
        (BYTES, 5, ""),
        (ArrayType(U16), [1, -1], ""),
        (ArrayType(STRING), ["a", 1], "[1]"),
        (ArrayType(STRING), "ab", ""),
        (ROW_71, (1, "x"), ""),
        (ROW_71, (1, "x", SumValue(0, 256)), "c.some"),
        (ROW_71, (1, 2, SumValue(1, ())), "b"),
        (ROW_71, 5, ""),
        (product(("a", U32), ("b", I64)), (1, 1 << 63), "b"),
        (option(U8), SumValue(2, ()), ""),
        (option(U8), 5, ""),
        (option(U8), SumValue(1, 5), "none"),
        (UNIT, (1,), ""),
    ],
)
def test_encode_errors(ty: AlgebraicType, value: Any, path: str) -> None:
    with pytest.raises(EncodeError) as info:
        encode(ty, value)
    assert info.value.path == path


def test_encode_accepts_byte_likes_and_lists() -> None:
    assert encode(BYTES, bytearray(b"ab")) == encode(BYTES, b"ab") == encode(BYTES, [0x61, 0x62])
    assert encode(BYTES, memoryview(b"ab")) == h("02000000 6162")
    assert encode(ROW_71, [1, "", (1, ())]) == h("01000000 00000000 01")


def test_refs_and_recursive_types() -> None:
    # A cons list: List = Sum{nil: (), cons: {head: U32, tail: List}}
    ts = Typespace([sum_type(("nil", UNIT), ("cons", product(("head", U32), ("tail", Ref(0)))))])
    nil = SumValue(0, ())
    value = SumValue(1, (1, SumValue(1, (2, nil))))
    data = encode(Ref(0), value, ts)
    assert data == h("01 01000000 01 02000000 00")
    assert decode(Ref(0), data, ts) == value
    assert codec_for(Ref(0), ts).skip(data, 0) == len(data)
    # Hostile nesting depth fails cleanly.
    with pytest.raises(DecodeError):
        decode(Ref(0), b"\x01\x00\x00\x00\x00" * 100_000 + b"\x00", ts)
    # Mutual recursion through two typespace entries.
    ts2 = Typespace([option(Ref(1)), product(("x", U8), ("next", Ref(0)))])
    v2 = SumValue(0, (7, SumValue(0, (8, SumValue(1, ())))))
    assert decode(Ref(0), encode(Ref(0), v2, ts2), ts2) == v2


def test_bad_refs_raise_sats_error() -> None:
    with pytest.raises(SatsError, match="out of range"):
        codec_for(Ref(0), EMPTY_TYPESPACE)
    with pytest.raises(SatsError, match="cycle"):
        codec_for(Ref(0), Typespace([Ref(0)]))


def test_codecs_are_cached() -> None:
    ts = Typespace([ROW_71])
    assert codec_for(Ref(0), ts) is codec_for(Ref(0), ts)
    assert codec_for(ROW_71) is codec_for(product(("a", U32), ("b", STRING), ("c", option(U8))))


def test_fixed_sizes() -> None:
    assert codec_for(product(("a", U32), ("b", I64))).fixed_size == 12
    assert codec_for(IDENTITY).fixed_size == 32
    assert codec_for(SCHEDULE_AT).fixed_size == 9
    assert codec_for(option(U32)).fixed_size is None
    assert codec_for(COLOR).fixed_size == 1
    assert codec_for(STRING).fixed_size is None
    assert codec_for(UNIT).fixed_size == 0


def test_skip_checks_sum_tags_and_lengths() -> None:
    with pytest.raises(DecodeError):
        codec_for(COLOR).skip(b"\x03", 0)
    with pytest.raises(DecodeError):
        codec_for(ArrayType(STRING)).skip(h("01000000 05000000 61"), 0)
    with pytest.raises(DecodeError):
        codec_for(product(("a", U32), ("b", STRING))).skip(h("01000000"), 0)


def test_decode_at_offset_and_trailing() -> None:
    c = codec_for(U16)
    assert c.decode(b"\xff\x01\x00\xff", 1) == (1, 3)
    with pytest.raises(DecodeError, match="trailing"):
        c.decode_all(b"\x01\x00\x00")


def test_float_bit_patterns_preserved() -> None:
    for bits in (0x7FF0000000000000, 0xFFF0000000000000, 0x8000000000000000, 0x7FF8000000000001):
        data = struct.pack("<Q", bits)
        assert encode(F64, decode(F64, data)) == data


# -- property tests -----------------------------------------------------------------------------

_FAST = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(algebraic_types(max_leaves=10, refs=3))
def test_type_meta_encoding_round_trips(ty: AlgebraicType) -> None:
    data = encode_type(ty)
    assert decode_type(data) == ty
    r = BsatnReader(data + b"\x99")
    assert r.algebraic_type() == ty and r.remaining == 1


@_FAST
@given(types_and_values())
def test_value_round_trip(tv: tuple[Typespace, AlgebraicType, Any]) -> None:
    ts, ty, value = tv
    codec = codec_for(ty, ts)
    data = codec.encode(value)
    out = bytearray(b"pre")
    codec.encode_into(value, out)
    assert bytes(out) == b"pre" + data
    back = codec.decode_all(data)
    assert values_equal(back, value), (back, value)
    assert codec.encode(back) == data
    # Decoding from an offset inside a larger buffer, and from a memoryview.
    assert values_equal(codec.decode(memoryview(b"xx" + data + b"yy"), 2)[0], value)
    assert codec.decode(b"xx" + data + b"yy", 2)[1] == 2 + len(data)
    assert codec.skip(b"x" + data, 1) == 1 + len(data)
    if codec.fixed_size is not None:
        assert len(data) == codec.fixed_size
    assert len(data) >= codec.min_size


@_FAST
@given(types_and_values(), st.data())
def test_truncated_input_is_a_decode_error(tv: tuple[Typespace, AlgebraicType, Any], data: st.DataObject) -> None:
    ts, ty, value = tv
    codec = codec_for(ty, ts)
    enc = codec.encode(value)
    if not enc:
        return
    cut = data.draw(st.integers(0, len(enc) - 1))
    # BSATN is prefix-free for a fixed type, so no strict prefix can decode.
    with pytest.raises(DecodeError):
        codec.decode(enc[:cut])
    with pytest.raises(DecodeError):
        codec.skip(enc[:cut], 0)


@_FAST
@given(types_and_values(), st.binary(max_size=40), st.data())
def test_random_bytes_decode_or_raise_decode_error(
    tv: tuple[Typespace, AlgebraicType, Any], junk: bytes, data: st.DataObject
) -> None:
    ts, ty, value = tv
    codec = codec_for(ty, ts)
    enc = codec.encode(value)
    # Random bytes, and a valid encoding with some bytes overwritten.
    mutated = bytearray(enc)
    for _ in range(data.draw(st.integers(1, 3))):
        if mutated:
            mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    for buf in (junk, bytes(mutated), enc + junk):
        try:
            v, pos = codec.decode(buf)
        except DecodeError:
            continue
        assert pos <= len(buf)
        assert codec.encode(v) == bytes(buf[:pos]) or _has_float(ty, ts)


def _has_float(ty: AlgebraicType, ts: Typespace) -> bool:
    # f32 NaN payloads may be canonicalised by the Python float conversion.
    return "F32" in repr(ts.types) or "F32" in repr(ty)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_decode_type_fuzz(buf: bytes) -> None:
    try:
        ty = decode_type(buf)
    except DecodeError:
        return
    assert encode_type(ty) == buf
