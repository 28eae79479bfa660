"""Order-preserving keys: memcmp order of keys must equal the SATS order of §6."""

from __future__ import annotations

import functools
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sats.bsatn import codec_for, encode
from sats.errors import DecodeError, EncodeError, SatsError
from sats.keys import encode_key, key_converter, prefix_end, reversed_bsatn_width, row_key_extractor
from sats.types import (
    BOOL,
    BYTES,
    EMPTY_TYPESPACE,
    F32,
    F64,
    I8,
    I32,
    I64,
    I128,
    I256,
    IDENTITY,
    INT_LAYOUT,
    STRING,
    U8,
    U32,
    U64,
    U128,
    U256,
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
    option,
    product,
    sum_type,
)
from tests.sats.strategies import algebraic_types, nearby_values, typespaces_and_types, values


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _cmp_scalar(a: Any, b: Any) -> int:
    return (a > b) - (a < b)  # type: ignore[no-any-return]


def sats_cmp(ty: AlgebraicType, ts: Typespace, a: Any, b: Any) -> int:
    """Reference comparison written directly from spec §6."""
    ty = ts.resolve(ty)
    if isinstance(ty, PrimitiveType):
        if ty.kind in (TypeTag.F32, TypeTag.F64):
            # Total order: NaNs equal each other and sort above everything; −0.0 == +0.0.
            an, bn = math.isnan(a), math.isnan(b)
            if an or bn:
                return int(an) - int(bn)
            return _cmp_scalar(a, b)
        if ty.kind == TypeTag.STRING:
            return _cmp_scalar(a.encode(), b.encode())
        return _cmp_scalar(a, b)
    if isinstance(ty, ArrayType):
        if isinstance(a, bytes):
            return _cmp_scalar(a, b)
        for x, y in zip(a, b, strict=False):
            c = sats_cmp(ty.elem_ty, ts, x, y)
            if c:
                return c
        return _cmp_scalar(len(a), len(b))
    if isinstance(ty, ProductType):
        for e, x, y in zip(ty.elements, a, b, strict=True):
            c = sats_cmp(e.algebraic_type, ts, x, y)
            if c:
                return c
        return 0
    if isinstance(ty, SumType):
        if a.tag != b.tag:
            return _cmp_scalar(a.tag, b.tag)
        return sats_cmp(ty.variants[a.tag].algebraic_type, ts, a.value, b.value)
    raise AssertionError(ty)


def _sorted_by_key(ty: AlgebraicType, vals: list[Any]) -> list[Any]:
    return sorted(vals, key=lambda v: encode_key(ty, v))


def _sorted_by_ref(ty: AlgebraicType, vals: list[Any]) -> list[Any]:
    return sorted(vals, key=functools.cmp_to_key(lambda x, y: sats_cmp(ty, EMPTY_TYPESPACE, x, y)))


# -- §6.1 vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ty", "value", "key"),
    [
        (I32, -1, "7f ff ff ff"),
        (I32, 0, "80 00 00 00"),
        (I32, 1, "80 00 00 01"),
        (F64, 1.0, "bf f0 00 00 00 00 00 00"),
        (F64, -1.0, "40 0f ff ff ff ff ff ff"),
        (F64, 0.0, "80 00 00 00 00 00 00 00"),
        (F64, -0.0, "80 00 00 00 00 00 00 00"),
        (F64, math.nan, "ff ff ff ff ff ff ff ff"),
        (F32, -math.nan, "ff ff ff ff"),
        (F32, math.inf, "ff 80 00 00"),
        (STRING, "a", "61 00 00"),
        (STRING, "a\0", "61 00 ff 00 00"),
        (STRING, "ab", "61 62 00 00"),
        (STRING, "b", "62 00 00"),
        (BYTES, b"\x00\x01", "00 ff 01 00 00"),
        (BOOL, True, "01"),
        (U8, 200, "c8"),
        (I8, -128, "00"),
        (U64, 1, "00 00 00 00 00 00 00 01"),
        (I128, -1, "7f" + "ff" * 15),
        (U256, 1, "00" * 31 + "01"),
        (I256, 0, "80" + "00" * 31),
        (ArrayType(U32), [1, 2], "01 00000001 01 00000002 00"),
        (option(U32), SumValue(0, 5), "00 00000005"),
        (option(U32), SumValue(1, ()), "01"),
        (product(("a", U32), ("b", STRING)), (1, "x"), "00000001 78 00 00"),
        (IDENTITY, (0xC200 << 240,), "c2 00" + "00" * 30),
        (UNIT, (), ""),
    ],
)
def test_spec_key_vectors(ty: AlgebraicType, value: Any, key: str) -> None:
    assert encode_key(ty, value) == h(key)
    assert key_converter(ty)(encode(ty, value), 0) == (h(key), len(encode(ty, value)))


def test_float_order_examples() -> None:
    ordered = [-math.inf, -1e300, -1.0, -5e-324, 0.0, 5e-324, 1.0, 1e300, math.inf, math.nan]
    keys = [encode_key(F64, x) for x in ordered]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert encode_key(F64, -0.0) == encode_key(F64, 0.0)
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000123))[0]
    assert encode_key(F64, nan_payload) == encode_key(F64, math.nan)
    # NaN with a payload straight from BSATN bytes.
    assert key_converter(F64)(struct.pack("<Q", 0x7FF0000000000001), 0)[0] == b"\xff" * 8
    assert key_converter(F32)(struct.pack("<I", 0x80000000), 0)[0] == encode_key(F32, 0.0)


def test_string_and_array_prefix_order() -> None:
    assert encode_key(STRING, "a") < encode_key(STRING, "a\0") < encode_key(STRING, "ab") < encode_key(STRING, "b")
    arr = ArrayType(I32)
    assert encode_key(arr, [1]) < encode_key(arr, [1, 0]) < encode_key(arr, [2])
    assert encode_key(arr, []) < encode_key(arr, [-(1 << 31)])


def test_prefix_end() -> None:
    assert prefix_end(b"ab") == b"ac"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\x00") == b"\x01"
    assert prefix_end(b"\xff\xff") is None
    assert prefix_end(b"") is None


def test_prefix_scan_on_two_columns() -> None:
    ty = product(("a", STRING), ("b", I64))
    rows = [(a, b) for a in ["", "a", "a\0", "ab", "b"] for b in [-5, 0, 7]]
    keys = sorted(encode_key(ty, r) for r in rows)
    lo = encode_key(STRING, "a")
    hi = prefix_end(lo)
    assert hi is not None
    hits = [k for k in keys if lo <= k < hi]
    assert hits == sorted(encode_key(ty, ("a", b)) for b in [-5, 0, 7])


def test_key_converter_errors() -> None:
    with pytest.raises(DecodeError):
        key_converter(U32)(b"\x01\x02\x03", 0)
    with pytest.raises(DecodeError):
        key_converter(I128)(b"\x01" * 15, 0)
    with pytest.raises(DecodeError, match="bool"):
        key_converter(BOOL)(b"\x02", 0)
    with pytest.raises(DecodeError, match="UTF-8"):
        key_converter(STRING)(h("01000000 ff"), 0)
    with pytest.raises(DecodeError, match="sum tag"):
        key_converter(option(U8))(b"\x05", 0)
    with pytest.raises(DecodeError):
        key_converter(option(U8))(b"", 0)
    with pytest.raises(DecodeError, match="exceeds"):
        key_converter(ArrayType(STRING))(h("ffffffff"), 0)
    with pytest.raises(DecodeError):
        key_converter(F64)(b"\x00" * 7, 0)


def test_encode_key_errors() -> None:
    with pytest.raises(EncodeError):
        encode_key(U8, 256)
    with pytest.raises(EncodeError):
        encode_key(I32, 1.5)
    with pytest.raises(EncodeError):
        encode_key(BOOL, 0)
    with pytest.raises(EncodeError) as info:
        encode_key(product(("a", U32), ("b", ArrayType(STRING))), (1, ["x", 3]))
    assert info.value.path == "b[1]"
    with pytest.raises(EncodeError):
        encode_key(option(U8), SumValue(3, ()))


def test_recursive_type_keys() -> None:
    ts = Typespace([sum_type(("nil", UNIT), ("cons", product(("head", U32), ("tail", Ref(0)))))])
    nil = SumValue(0, ())
    v = SumValue(1, (1, SumValue(1, (2, nil))))
    assert encode_key(Ref(0), v, ts) == h("01 00000001 01 00000002 00")
    assert key_converter(Ref(0), ts)(encode(Ref(0), v, ts), 0)[0] == encode_key(Ref(0), v, ts)


def test_row_key_extractor_paths() -> None:
    row = product(("id", U32), ("name", STRING), ("x", I64), ("flag", BOOL))
    value = (5, "hi\0", -7, True)
    data = encode(row, value)
    col_keys = [encode_key(e.algebraic_type, v) for e, v in zip(row.elements, value, strict=True)]
    for cols in ([0], [1], [2], [3], [0, 1], [2, 0], [3, 1, 0], [0, 0], [1, 3]):
        ex = row_key_extractor(row, EMPTY_TYPESPACE, cols)
        assert ex(data) == b"".join(col_keys[c] for c in cols), cols
        assert ex(memoryview(data)) == b"".join(col_keys[c] for c in cols)
    assert row_key_extractor(row, EMPTY_TYPESPACE, [])(data) == b""
    with pytest.raises(SatsError):
        row_key_extractor(row, EMPTY_TYPESPACE, [4])
    with pytest.raises(SatsError):
        row_key_extractor(U32, EMPTY_TYPESPACE, [0])
    with pytest.raises(DecodeError):
        row_key_extractor(row, EMPTY_TYPESPACE, [2])(data[:10])
    ts = Typespace([row])
    assert row_key_extractor(Ref(0), ts, [2])(data) == col_keys[2]


# -- property tests -----------------------------------------------------------------------------

_FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_THOROUGH = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_THOROUGH
@given(st.data())
def test_key_order_matches_sats_order(data: st.DataObject) -> None:
    ts, ty = data.draw(typespaces_and_types())
    a = data.draw(values(ty, ts))
    # Mostly a near neighbour of a: comparisons only get interesting past a shared prefix.
    b = data.draw(st.one_of(values(ty, ts), st.just(a), nearby_values(ty, a, ts), nearby_values(ty, a, ts)))
    ka, kb = encode_key(ty, a, ts), encode_key(ty, b, ts)
    assert _sign(_cmp_scalar(ka, kb)) == sats_cmp(ty, ts, a, b), (ty, a, b, ka.hex(), kb.hex())


@_THOROUGH
@given(algebraic_types(max_leaves=4), st.data())
def test_key_order_on_sorted_lists(ty: AlgebraicType, data: st.DataObject) -> None:
    first = data.draw(values(ty))
    vals = [first] + data.draw(st.lists(nearby_values(ty, first), min_size=1, max_size=5))
    by_key, by_ref = _sorted_by_key(ty, vals), _sorted_by_ref(ty, vals)
    assert [encode_key(ty, v) for v in by_key] == [encode_key(ty, v) for v in by_ref]


@_FAST
@given(st.data())
def test_key_converter_agrees_with_encode_key(data: st.DataObject) -> None:
    ts, ty = data.draw(typespaces_and_types())
    v = data.draw(values(ty, ts))
    enc = encode(ty, v, ts)
    conv = key_converter(ty, ts)
    assert conv(b"..." + enc + b"!", 3) == (encode_key(ty, v, ts), 3 + len(enc))
    assert conv(memoryview(enc), 0)[0] == encode_key(ty, v, ts)


@_FAST
@given(st.data())
def test_key_converter_on_truncated_input(data: st.DataObject) -> None:
    ts, ty = data.draw(typespaces_and_types())
    enc = encode(ty, data.draw(values(ty, ts)), ts)
    if not enc:
        return
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(DecodeError):
        key_converter(ty, ts)(enc[:cut], 0)


@_FAST
@given(st.data())
def test_row_key_extractor_agrees_with_encode_key(data: st.DataObject) -> None:
    ts, _ = data.draw(typespaces_and_types(max_types=2))
    elems = data.draw(st.lists(algebraic_types(max_leaves=3, refs=len(ts.types)), min_size=1, max_size=5))
    row = product(*((f"c{i}", t) for i, t in enumerate(elems)))
    value = data.draw(values(row, ts))
    cols = data.draw(st.lists(st.integers(0, len(elems) - 1), min_size=1, max_size=3))
    expected = b"".join(encode_key(elems[c], value[c], ts) for c in cols)
    assert row_key_extractor(row, ts, cols)(codec_for(row, ts).encode(value)) == expected


@_FAST
@given(st.data())
def test_product_keys_are_prefix_scannable(data: st.DataObject) -> None:
    a_ty = data.draw(algebraic_types(max_leaves=3))
    b_ty = data.draw(algebraic_types(max_leaves=3))
    ty = product(("a", a_ty), ("b", b_ty))
    x = data.draw(values(a_ty))
    other = data.draw(values(a_ty))
    b = data.draw(values(b_ty))
    px = encode_key(a_ty, x)
    k = encode_key(ty, (other, b))
    inside = px <= k and (prefix_end(px) is None or k < prefix_end(px))  # type: ignore[operator]
    assert inside == (sats_cmp(a_ty, EMPTY_TYPESPACE, x, other) == 0)


def test_fixed_int_all_widths() -> None:
    for ty in (I8, U8, I32, U32, I64, U64, I128, U128, I256, U256):
        assert isinstance(ty, PrimitiveType)
        bits, signed = INT_LAYOUT[ty.kind]
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        samples = sorted({lo, lo + 1, -1 if signed else 1, 0, 1, hi - 1, hi})
        keys = [encode_key(ty, s) for s in samples]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        conv = key_converter(ty)
        assert [conv(encode(ty, s), 0)[0] for s in samples] == keys


def test_reversed_bsatn_width_only_where_the_key_is_the_reversed_bsatn() -> None:
    # The datastore builds primary-key lookups with a byte reversal where this says it may.
    for ty in (I8, U8, I32, U32, I64, U64, I128, U128, I256, U256, STRING, BOOL, F64, IDENTITY):
        width = reversed_bsatn_width(ty)
        if isinstance(ty, PrimitiveType) and ty.kind in INT_LAYOUT and not INT_LAYOUT[ty.kind][1]:
            bits = INT_LAYOUT[ty.kind][0]
            if width:
                assert width == bits // 8
                for s in {0, 1, 255, (1 << bits) - 2, (1 << bits) - 1, 0x0102 % (1 << bits)}:
                    assert encode_key(ty, s) == encode(ty, s)[::-1]
        else:
            assert width == 0, ty
    assert reversed_bsatn_width(U32) == 4 and reversed_bsatn_width(U64) == 8
    assert reversed_bsatn_width(Ref(0), Typespace([U32])) == 4


def test_nul_bytes_inside_products() -> None:
    # Without NUL escaping, ("a", 1) would sort after ("a\0", 0).
    for inner in (STRING, BYTES):
        ty = product(("s", inner), ("n", U8))
        mk = (lambda s: s) if inner == STRING else (lambda s: s.encode())
        rows = [(mk(s), n) for s in ["", "\0", "\0\0", "a", "a\0", "a\0b", "ab"] for n in (0, 1, 255)]
        assert _sorted_by_key(ty, rows) == _sorted_by_ref(ty, rows)
    arr = ArrayType(STRING)
    assert encode_key(arr, ["a"]) < encode_key(arr, ["a", ""]) < encode_key(arr, ["a\0"])
