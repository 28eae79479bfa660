"""SATS-JSON: §7 vectors, every accepted input form of §5.2, rejections, flavours, round trips."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sats.errors import DecodeError, EncodeError
from sats.json import (
    args_reader,
    dumps,
    from_json,
    loads,
    product_type_to_json,
    to_json_row,
    to_json_typed,
    to_json_untyped,
    type_to_json,
)
from sats.types import (
    BOOL,
    BYTES,
    CONNECTION_ID,
    F32,
    F64,
    I8,
    I32,
    I128,
    I256,
    IDENTITY,
    PRIMITIVES,
    SCHEDULE_AT,
    STRING,
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
    ProductType,
    ProductTypeElement,
    Ref,
    SumValue,
    Typespace,
    TypeTag,
    option,
    product,
    result,
    simple_enum,
    sum_type,
)
from tests.sats.strategies import types_and_values, values_equal

ROW_71 = product(("a", U32), ("b", STRING), ("c", option(U8)))
SOME7 = (42, "hi", SumValue(0, 7))
NONE = (42, "hi", SumValue(1, ()))
COLOR = simple_enum("Red", "Green", "Blue")
ADD_ARGS = product(("name", STRING), ("age", U8))
IDENT_HEX = "c20011110000000000000000000000000000000000000000000000000000abab"


def j(text: str) -> Any:
    return loads(text)


# -- §7 vectors: writing ------------------------------------------------------------------------


def test_vector_7_1_writers() -> None:
    assert dumps(to_json_typed(ROW_71, SOME7)) == '{"a":42,"b":"hi","c":{"some":7}}'
    assert dumps(to_json_typed(ROW_71, NONE)) == '{"a":42,"b":"hi","c":{"none":{}}}'
    assert dumps(to_json_untyped(ROW_71, SOME7)) == '[42,"hi",[0,7]]'
    assert dumps(to_json_untyped(ROW_71, NONE)) == '[42,"hi",[1,[]]]'
    assert dumps(to_json_row(ROW_71, SOME7)) == '{"a":42,"b":"hi","c":[0,7]}'
    assert dumps(to_json_row(ROW_71, NONE)) == '{"a":42,"b":"hi","c":[1,{}]}'


@pytest.mark.parametrize(
    "text",
    [
        '{"a":42,"b":"hi","c":{"some":7}}',
        '[42,"hi",[0,7]]',
        '[42,"hi",{"some":7}]',
        '{"c":{"0":7},"b":"hi","a":42}',
        '{"a":42,"b":"hi","c":[0,7]}',
        '[42,"hi",["some",7]]',
        '[42,"hi",{"+0":7}]',
    ],
)
def test_vector_7_1_reader_some(text: str) -> None:
    assert from_json(ROW_71, j(text)) == SOME7


@pytest.mark.parametrize(
    "text",
    [
        '{"a":42,"b":"hi","c":{"none":{}}}',
        '{"a":42,"b":"hi","c":{"none":[]}}',
        '[42,"hi",[1,[]]]',
        '[42,"hi",[1,{}]]',
        '[42,"hi",null]',
        '{"a":42,"b":"hi","c":null}',
        '[42,"hi",{"1":[]}]',
    ],
)
def test_vector_7_1_reader_none(text: str) -> None:
    assert from_json(ROW_71, j(text)) == NONE


def test_vector_7_3_and_7_4() -> None:
    ident = (int(IDENT_HEX, 16),)
    assert dumps(to_json_typed(IDENTITY, ident)) == '{"__identity__":"0x' + IDENT_HEX + '"}'
    assert to_json_untyped(IDENTITY, ident) == ["0x" + IDENT_HEX]
    assert from_json(IDENTITY, j('{"__identity__":"0x' + IDENT_HEX + '"}')) == ident
    assert from_json(IDENTITY, ["0x" + IDENT_HEX.upper()]) == ident
    with pytest.raises(DecodeError):
        from_json(IDENTITY, IDENT_HEX)  # a bare hex string is not an identity
    cid = (1512366075204170928972419503379277431,)
    assert dumps(to_json_typed(CONNECTION_ID, cid)) == '{"__connection_id__":1512366075204170928972419503379277431}'
    assert from_json(CONNECTION_ID, j('{"__connection_id__":1512366075204170928972419503379277431}')) == cid


def test_vector_7_5_schedule_at_and_timestamp() -> None:
    assert to_json_typed(TIMESTAMP, (1_700_000_000_000_000,)) == {
        "__timestamp_micros_since_unix_epoch__": 1_700_000_000_000_000
    }
    time0 = SumValue(1, (0,))
    for text in (
        '{"Time":{"__timestamp_micros_since_unix_epoch__":0}}',
        '{"1":[0]}',
        "[1,[0]]",
        '["Time",{"__timestamp_micros_since_unix_epoch__":0}]',
    ):
        assert from_json(SCHEDULE_AT, j(text)) == time0
    assert dumps(to_json_typed(SCHEDULE_AT, SumValue(0, (1_000_000,)))) == '{"Interval":{"__time_duration_micros__":1000000}}'
    assert from_json(TIMESTAMP, [1_700_000_000_000_000]) == (1_700_000_000_000_000,)


def test_vector_7_6_arrays_and_bytes() -> None:
    assert to_json_untyped(ArrayType(U16), [1, 2]) == [1, 2]
    assert to_json_untyped(BYTES, b"\xde\xad") == "dead"
    assert from_json(BYTES, "dead") == b"\xde\xad"
    assert from_json(BYTES, "DEAD") == b"\xde\xad"
    assert from_json(BYTES, [222, 173]) == b"\xde\xad"
    assert from_json(BYTES, "") == b""
    assert to_json_typed(STRING, "€") == "€"


def test_vector_7_8_result() -> None:
    ty = result(U32, STRING)
    assert to_json_typed(ty, SumValue(0, 5)) == {"ok": 5}
    assert to_json_typed(ty, SumValue(1, "x")) == {"err": "x"}
    assert from_json(ty, {"err": "x"}) == SumValue(1, "x")
    assert to_json_untyped(ty, SumValue(1, "x")) == [1, "x"]


def test_vector_7_10_reducer_args() -> None:
    assert from_json(ADD_ARGS, j('["Al",30]')) == ("Al", 30)
    assert from_json(ADD_ARGS, j('{"name":"Al","age":30}')) == ("Al", 30)
    assert from_json(ADD_ARGS, j('{"age":30,"name":"Al"}')) == ("Al", 30)
    assert from_json(UNIT, []) == ()
    assert from_json(UNIT, {}) == ()


def test_vector_7_12_plain_enum() -> None:
    green = SumValue(1, ())
    assert dumps(to_json_typed(COLOR, green)) == '{"Green":{}}'
    assert dumps(to_json_untyped(COLOR, green)) == "[1,[]]"
    assert dumps(to_json_row(COLOR, green)) == "[1,{}]"
    for text in ('{"Green":{}}', '{"Green":[]}', "[1,[]]", '["Green",{}]', '{"1":[]}'):
        assert from_json(COLOR, j(text)) == green


# -- scalars ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ty", "value", "out"),
    [
        (U256, 0, "0x0"),
        (U256, 255, "0xff"),
        (U256, (1 << 256) - 1, "0x" + "f" * 64),
        (I256, -5, "-0x5"),
        (I256, 0, "0x0"),
        (I128, -(1 << 127), -(1 << 127)),
        (U128, (1 << 128) - 1, (1 << 128) - 1),
        (U64, (1 << 64) - 1, (1 << 64) - 1),
        (F64, math.nan, None),
        (F64, math.inf, None),
        (F32, -math.inf, None),
        (F64, 1.5, 1.5),
        (F64, -0.0, -0.0),
        (BOOL, True, True),
        (BYTES, b"", ""),
        (BYTES, b"\x00\xff", "00ff"),
    ],
)
def test_scalar_writing(ty: AlgebraicType, value: Any, out: Any) -> None:
    for write in (to_json_untyped, to_json_typed, to_json_row):
        assert write(ty, value) == out or (out is None and write(ty, value) is None)


def test_f32_written_in_shortest_form() -> None:
    f32_tenth = 0.10000000149011612  # the f32 nearest 0.1
    assert dumps(to_json_untyped(F32, f32_tenth)) == "0.1"
    assert from_json(F32, 0.1) == f32_tenth
    assert from_json(F32, 1e39) == math.inf
    assert from_json(F32, 3) == 3.0


@pytest.mark.parametrize(
    ("ty", "text", "value"),
    [
        (U256, '"0xff"', 255),
        (U256, '"0XFF"', 255),
        (U256, '"+0x10"', 16),
        (I256, '"-0x10"', -16),
        (I256, '"0x0"', 0),
        (F64, "1", 1.0),
        (F64, "-2.5e3", -2500.0),
        (I128, "-170141183460469231731687303715884105728", -(1 << 127)),
        (U128, "340282366920938463463374607431768211455", (1 << 128) - 1),
        (I8, "-128", -128),
        (BOOL, "false", False),
        (ArrayType(STRING), '["a","b"]', ["a", "b"]),
        (option(STRING), "null", SumValue(1, ())),
    ],
)
def test_scalar_reading(ty: AlgebraicType, text: str, value: Any) -> None:
    assert from_json(ty, j(text)) == value


# -- rejections ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ty", "text", "match"),
    [
        (U32, "1.0", "integer"),
        (U32, '"1"', "integer"),
        (U32, "true", "integer"),
        (U8, "256", "out of range"),
        (U8, "-1", "out of range"),
        (I8, "128", "out of range"),
        (I128, "170141183460469231731687303715884105728", "out of range"),
        (U128, "-1", "out of range"),
        (U256, "255", "hex string"),
        (U256, '"ff"', "hex string"),
        (U256, '"0x"', "hex string"),
        (U256, '"0xfg"', "hex string"),
        (U256, '"-0x1"', "out of range"),
        (U256, '"0x1' + "0" * 64 + '"', "out of range"),
        (I256, '"0x8' + "0" * 63 + '"', "out of range"),
        (F64, '"1.0"', "number"),
        (F64, "null", "number"),
        (F64, "true", "number"),
        (BOOL, "1", "true or false"),
        (STRING, "1", "string"),
        (BYTES, '"abc"', "hex"),
        (BYTES, '"0xab"', "hex"),
        (BYTES, "[256]", "out of range"),
        (BYTES, "5", "hex string or an array"),
        (ArrayType(U32), '{"0":1}', "array"),
        (ADD_ARGS, '["Al"]', "2 element"),
        (ADD_ARGS, '["Al",30,1]', "2 element"),
        (ADD_ARGS, '{"name":"Al"}', "missing"),
        (ADD_ARGS, '{"name":"Al","age":30,"x":1}', "unknown field"),
        (ADD_ARGS, '"Al"', "array or an object"),
        (product((None, U8)), '{"0":1}', "unknown field"),
        (option(U8), '{"some":1,"none":[]}', "exactly one key"),
        (option(U8), "{}", "exactly one key"),
        (option(U8), '{"2":[]}', "invalid sum tag"),
        (option(U8), '{"maybe":1}', "unknown variant"),
        (option(U8), "[2,[]]", "invalid sum tag"),
        (option(U8), "[0]", "tag_or_name, payload"),
        (option(U8), "[true,1]", "variant name or tag"),
        (option(U8), "5", "sum"),
        (COLOR, "null", "sum"),
        (option(U8), '{"none":1}', "array or an object"),
        (UNIT, "[1]", "0 element"),
    ],
)
def test_rejections(ty: AlgebraicType, text: str, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        from_json(ty, j(text))


def test_duplicate_keys_rejected_by_loads() -> None:
    with pytest.raises(DecodeError, match="duplicate"):
        loads('{"name":"Al","name":"Bo","age":1}')
    with pytest.raises(DecodeError, match="invalid JSON"):
        loads("[1,")
    with pytest.raises(DecodeError):
        loads(b"\xff")


def test_error_paths() -> None:
    with pytest.raises(DecodeError, match=r"at args\.age: "):
        from_json(ADD_ARGS, ["Al", "x"], root="args")
    ty = product(("xs", ArrayType(product(("name", STRING),))),)
    with pytest.raises(DecodeError, match=r"at \$\.xs\[1\]\.name: expected a string"):
        from_json(ty, {"xs": [{"name": "a"}, {"name": 5}]})
    with pytest.raises(DecodeError, match=r"at \$\.c\.some: "):
        from_json(ROW_71, [1, "x", {"some": 300}])
    with pytest.raises(DecodeError, match=r"at \$\[1\]: "):
        from_json(product((None, U8), (None, U8)), [1, -1])


def test_bad_ref_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        from_json(Ref(2), 1, Typespace([]))


def test_writer_errors() -> None:
    with pytest.raises(EncodeError, match="no name"):
        to_json_typed(product((None, U8)), (1,))
    assert to_json_row(product((None, U8)), (1,)) == {"0": 1}
    assert to_json_untyped(product((None, U8)), (1,)) == [1]
    assert to_json_typed(sum_type((None, U8)), SumValue(0, 1)) == [0, 1]
    with pytest.raises(EncodeError) as info:
        to_json_untyped(ROW_71, (1, "x", SumValue(0, "no")))
    assert info.value.path == "c.some"
    for bad_ty, bad in ((U8, "x"), (STRING, 1), (BOOL, 1), (F64, "x"), (BYTES, 3), (ArrayType(U32), 3), (option(U8), 3)):
        with pytest.raises(EncodeError):
            to_json_untyped(bad_ty, bad)


def test_flavour_d_inside_arrays_is_flavour_c() -> None:
    ty = product(("id", U64), ("tags", ArrayType(product(("k", STRING), ("v", option(I32))))), ("o", option(UNIT)))
    value = (1, [("a", SumValue(1, ()))], SumValue(0, ()))
    assert dumps(to_json_row(ty, value)) == '{"id":1,"tags":[["a",[1,[]]]],"o":[0,{}]}'
    assert dumps(to_json_typed(ty, value)) == '{"id":1,"tags":[{"k":"a","v":{"none":{}}}],"o":{"some":{}}}'
    assert dumps(to_json_untyped(ty, value)) == '[1,[["a",[1,[]]]],[0,[]]]'
    for w in (to_json_row, to_json_typed, to_json_untyped):
        assert from_json(ty, loads(dumps(w(ty, value)))) == value


# -- types as JSON (§5.3) -----------------------------------------------------------------------


def test_type_to_json_examples() -> None:
    assert dumps(type_to_json(option(U8))) == (
        '{"Sum":{"variants":[{"name":{"some":"some"},"algebraic_type":{"U8":[]}},'
        '{"name":{"some":"none"},"algebraic_type":{"Product":{"elements":[]}}}]}}'
    )
    assert dumps(type_to_json(IDENTITY)) == (
        '{"Product":{"elements":[{"name":{"some":"__identity__"},"algebraic_type":{"U256":[]}}]}}'
    )
    assert dumps(type_to_json(ArrayType(STRING))) == '{"Array":{"String":[]}}'
    assert dumps(type_to_json(Ref(3))) == '{"Ref":3}'
    assert type_to_json(BOOL) == {"Bool": []}
    assert type_to_json(product((None, F64))) == {
        "Product": {"elements": [{"name": {"none": []}, "algebraic_type": {"F64": []}}]}
    }


def test_sql_schema_example() -> None:
    person = product(("id", U64), ("name", STRING))
    assert dumps(product_type_to_json(person)) == (
        '{"elements":[{"name":{"some":"id"},"algebraic_type":{"U64":[]}},'
        '{"name":{"some":"name"},"algebraic_type":{"String":[]}}]}'
    )
    assert to_json_untyped(person, (1, "Al")) == [1, "Al"]


# -- round trips --------------------------------------------------------------------------------

_FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(types_and_values(allow_nan=False))
def test_untyped_round_trip(tv: tuple[Typespace, AlgebraicType, Any]) -> None:
    ts, ty, value = tv
    text = dumps(to_json_untyped(ty, value, ts))
    assert values_equal(from_json(ty, loads(text), ts), value)
    assert values_equal(from_json(ty, json.loads(text), ts), value)


@_FAST
@given(types_and_values(named=True, allow_nan=False))
def test_typed_and_row_round_trip(tv: tuple[Typespace, AlgebraicType, Any]) -> None:
    ts, ty, value = tv
    for write in (to_json_typed, to_json_row):
        text = dumps(write(ty, value, ts))
        assert values_equal(from_json(ty, loads(text), ts), value), text


@_FAST
@given(types_and_values(named=True, allow_nan=False), st.data())
def test_reader_never_leaks_other_errors(tv: tuple[Typespace, AlgebraicType, Any], data: st.DataObject) -> None:
    ts, ty, _ = tv
    junk = data.draw(
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4)),
            lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
            max_leaves=6,
        )
    )
    try:
        from_json(ty, junk, ts)
    except DecodeError:
        pass


# --- args_reader: the quick path for the usual reducer arguments ---------------------------------

_QUICK = [t for t in PRIMITIVES.values() if t not in (F32, F64, I256, U256)]
_SLOW = [F32, F64, I256, U256, option(U8), ArrayType(U32)]
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 130), 1 << 130) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=6,
)


_ELEMENT_VALUES = st.booleans() | st.integers(-(1 << 129), 1 << 129) | st.text(max_size=3) | st.none()


@given(
    elems=st.lists(st.sampled_from(_QUICK + _SLOW), max_size=4),
    by_ref=st.booleans(),
    data=st.data(),
)
def test_the_args_reader_agrees_with_from_json_or_leaves_the_value_to_it(
    elems: list[Any], by_ref: bool, data: st.DataObject
) -> None:
    # Arrays of the right length most of the time (the reader's case), anything else sometimes.
    value = data.draw(st.one_of(
        st.lists(_ELEMENT_VALUES, min_size=len(elems), max_size=len(elems)), _JSON_VALUES,
        st.lists(_ELEMENT_VALUES, max_size=5),
    ))  # fmt: skip
    ts = Typespace(tuple(elems)) if by_ref else Typespace(())
    ty = ProductType(tuple(ProductTypeElement(f"a{i}", Ref(i) if by_ref else t) for i, t in enumerate(elems)))
    reader = args_reader(ty, ts)
    if any(t in _SLOW for t in elems):
        assert reader is None
        return
    assert reader is not None and args_reader(ty, ts) is reader  # memoised
    quick = reader(value)
    try:
        expected = from_json(ty, value, ts, root="args")
    except DecodeError:
        assert quick is None
        return
    assert quick is None or (quick == expected and [type(x) for x in quick] == [type(x) for x in expected])


def test_the_args_reader_takes_the_usual_transfer_arguments() -> None:
    reader = args_reader(product(("from", U32), ("to", U32), ("amount", PRIMITIVES[TypeTag.I64])))
    assert reader is not None
    assert reader([1, 2, 3]) == (1, 2, 3)
    assert reader([1, 2, -3]) == (1, 2, -3)
    assert reader([-1, 2, 3]) is None and reader([1, 2, True]) is None and reader([1, 2]) is None
    assert reader({"from": 1, "to": 2, "amount": 3}) is None  # the object form is from_json's
