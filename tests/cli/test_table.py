"""``orrery sql`` table output (sql-and-subscriptions.md A.8), checked against 1.12's own tests."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orrery.cli_table import (
    TableFormatError,
    format_f32,
    format_f64,
    format_rfc3339,
    parse_sql_response,
    render_sql_response,
    render_table,
    serde_json_f64,
    type_from_json,
)
from sats.json import product_type_to_json, type_to_json
from sats.types import (
    BOOL,
    BYTES,
    CONNECTION_ID,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    I128,
    I256,
    IDENTITY,
    STRING,
    TIME_DURATION,
    TIMESTAMP,
    U8,
    U16,
    U32,
    U64,
    U128,
    U256,
    UUID,
    ArrayType,
    ProductType,
    option,
    product,
    result,
    simple_enum,
    sum_type,
)


def table(schema: ProductType, rows: list[list[Any]]) -> str:
    """Render one statement result as the server would send it, through the JSON text."""
    text = json.dumps(
        [
            {
                "schema": product_type_to_json(schema),
                "rows": rows,
                "total_duration_micros": 1,
                "stats": {"rows_inserted": 0, "rows_deleted": 0, "rows_updated": 0},
            }
        ]
    )
    return render_sql_response(parse_sql_response(text))


def trimmed(text: str) -> str:
    """Lines without their trailing padding (1.12's tests compare this way)."""
    return "\n".join(line.rstrip() for line in text.splitlines())


OTHERS = product(
    ("bool", BOOL),
    ("f32", F32),
    ("f64", F64),
    ("str", STRING),
    ("bytes", BYTES),
    ("identity", IDENTITY),
    ("connection_id", CONNECTION_ID),
    ("timestamp", TIMESTAMP),
    ("duration", TIME_DURATION),
    ("uuid", UUID),
)
# As the 1.12 server writes the smoketest row (f64 via ryu, f32 shortest).
OTHERS_ROW = [
    True,
    594806.56,
    -3454353.3453890434,
    "This is spacetimedb",
    "01020304050607",
    ["0x1"],
    [0],
    [0],
    [0],
    [0],
]
ENUMS = product(
    ("bool_opt", option(BOOL)),
    ("bool_result", result(BOOL, STRING)),
    ("action", simple_enum("Inactive", "Active")),
)
ENUMS_ROW = [[0, True], [0, False], [1, []]]


def test_ints_smoketest() -> None:
    schema = product(("i8", I8), ("i16", I16), ("i32", I32), ("i64", I64), ("i128", I128), ("i256", I256))
    row = [-25, -3224, -23443, -2344353, -234434897853, f"-0x{234434897853:x}"]
    assert table(schema, [row]) == (
        " i8  | i16   | i32    | i64      | i128          | i256          \n"
        "-----+-------+--------+----------+---------------+---------------\n"
        " -25 | -3224 | -23443 | -2344353 | -234434897853 | -234434897853 "
    )
    nested = product(("tuple", schema))
    assert trimmed(table(nested, [[row]])) == (
        " tuple\n" + "-" * 99 + "\n"
        " (i8 = -25, i16 = -3224, i32 = -23443, i64 = -2344353, i128 = -234434897853, i256 = -234434897853)"
    )


def test_uints_smoketest() -> None:
    schema = product(("u8", U8), ("u16", U16), ("u32", U32), ("u64", U64), ("u128", U128), ("u256", U256))
    row = [105, 1050, 83892, 48937498, 4378528978889, f"0x{4378528978889:x}"]
    assert trimmed(table(schema, [row])) == (
        " u8  | u16  | u32   | u64      | u128          | u256\n"
        "-----+------+-------+----------+---------------+---------------\n"
        " 105 | 1050 | 83892 | 48937498 | 4378528978889 | 4378528978889"
    )


def test_others_smoketest() -> None:
    expected = (
        " bool | f32       | f64                | str                   | bytes            | identity"
        "                                                           | connection_id                      | timestamp"
        "                 | duration  | uuid\n"
        "------+-----------+--------------------+-----------------------+------------------+"
        "--------------------------------------------------------------------+------------------------------------+"
        "---------------------------+-----------+----------------------------------------\n"
        ' true | 594806.56 | -3454353.345389043 | "This is spacetimedb" | 0x01020304050607 | '
        "0x0000000000000000000000000000000000000000000000000000000000000001 | 0x00000000000000000000000000000000 | "
        '1970-01-01T00:00:00+00:00 | +0.000000 | "00000000-0000-0000-0000-000000000000"'
    )
    assert trimmed(table(OTHERS, [OTHERS_ROW])) == expected


def test_others_nested_smoketest() -> None:
    out = trimmed(table(product(("tuple", OTHERS)), [[OTHERS_ROW]]))
    assert out.splitlines()[2] == (
        ' (bool = true, f32 = 594806.56, f64 = -3454353.345389043, str = "This is spacetimedb", '
        "bytes = 0x01020304050607, identity = 0x0000000000000000000000000000000000000000000000000000000000000001, "
        "connection_id = 0x00000000000000000000000000000000, timestamp = 1970-01-01T00:00:00+00:00, "
        'duration = +0.000000, uuid = "00000000-0000-0000-0000-000000000000")'
    )


def test_enums_smoketest() -> None:
    assert trimmed(table(ENUMS, [ENUMS_ROW])) == (
        " bool_opt      | bool_result  | action\n"
        "---------------+--------------+---------------\n"
        " (some = true) | (ok = false) | (Active = ())"
    )
    assert trimmed(table(product(("tuple", ENUMS)), [[ENUMS_ROW]])) == (
        " tuple\n" + "-" * 80 + "\n"
        " (bool_opt = (some = true), bool_result = (ok = false), action = (Active = ()))"
    )


def test_unnamed_columns_and_nested_unnamed_fields() -> None:
    # 1.12 sql.rs `output_special_types`: unnamed columns are `column <i>`, unnamed fields `col_<i>`.
    schema = ProductType(product((None, STRING), (None, U256), (None, IDENTITY)).elements)
    assert trimmed(table(schema, [["a", "0x0", ["0x0"]]])) == (
        " column 0 | column 1 | column 2\n"
        "----------+----------+--------------------------------------------------------------------\n"
        ' "a"      | 0        | 0x0000000000000000000000000000000000000000000000000000000000000000'
    )
    inner = product((None, BOOL), ("s", STRING))
    assert table(product(("t", inner)), [[[True, "x"]]]).splitlines()[2] == ' (col_0 = true, s = "x") '


def test_empty_result_is_header_and_rule() -> None:
    assert table(product(("a", I32), ("b", I64)), []) == " a | b \n---+---"


def test_dml_result_prints_nothing() -> None:
    assert (
        render_sql_response(
            [
                {
                    "schema": {"elements": []},
                    "rows": [],
                    "total_duration_micros": 3,
                    "stats": {"rows_inserted": 1, "rows_deleted": 0, "rows_updated": 0},
                }
            ]
        )
        == ""
    )


def test_one_row_matches_1_12_unit_test() -> None:
    assert trimmed(table(product(("a", I32), ("b", I64)), [[1, 2]])) == " a | b\n---+---\n 1 | 2"


def test_special_values_inside_sums_keep_their_field_names() -> None:
    # 1.12 judges a sum payload against the sum, not the column, so the special form is
    # chosen one level down: `(some = (__identity__ = 0x…))`.
    schema = product(("who", option(IDENTITY)), ("when", option(TIMESTAMP)), ("n", option(I32)))
    row = [[0, ["0xc200"]], [0, [1_700_000_000_123_000]], [1, []]]
    cells = [c.strip() for c in table(schema, [row]).splitlines()[2].split("|")]
    assert cells == [
        "(some = (__identity__ = 0x" + "0" * 60 + "c200))",
        "(some = (__timestamp_micros_since_unix_epoch__ = 2023-11-14T22:13:20.123+00:00))",
        "(none = ())",
    ]


def test_unnamed_variant_and_arrays() -> None:
    schema = product(
        ("s", sum_type((None, U8), ("b", STRING))),
        ("xs", ArrayType(U32)),
        ("names", ArrayType(STRING)),
        ("empty", ArrayType(I32)),
    )
    cells = [
        c.strip() for c in table(schema, [[[0, 7], [1, 2, 3], ["a", "b"], []]]).splitlines()[2].split("|")
    ]
    # 1.12's typed writer has no array punctuation: elements are written back to back.
    assert cells == ["(col_0 = 7)", "123", '"a""b"', ""]


def test_strings_are_quoted_without_escaping_and_wide_chars_align() -> None:
    out = table(product(("s", STRING), ("n", U8)), [['say "hi"', 1], ["日本", 2]])
    assert out.splitlines() == [
        " s          | n ",
        "------------+---",
        ' "say "hi"" | 1 ',
        ' "日本"     | 2 ',
    ]


def test_multiline_cells_span_lines() -> None:
    assert table(product(("s", STRING), ("n", U8)), [["a\nbb", 1]]).splitlines() == [
        " s   | n ",
        "-----+---",
        ' "a  | 1 ',
        ' bb" |   ',
    ]


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "1970-01-01T00:00:00+00:00"),
        (1_500_000, "1970-01-01T00:00:01.500+00:00"),
        (1_000_001, "1970-01-01T00:00:01.000001+00:00"),
        (-1, "1969-12-31T23:59:59.999999+00:00"),
        (1_700_000_000_000_000, "2023-11-14T22:13:20+00:00"),
    ],
)
def test_timestamps_rfc3339(micros: int, text: str) -> None:
    assert format_rfc3339(micros) == text


@pytest.mark.parametrize(
    ("micros", "text"), [(0, "+0.000000"), (1_500_000, "+1.500000"), (-2_000_001, "-2.000001")]
)
def test_durations(micros: int, text: str) -> None:
    schema = product(("d", TIME_DURATION))
    assert table(schema, [[[micros]]]).splitlines()[2].strip() == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.1, "0.1"),
        (1e20, "100000000000000000000"),
        (1e-7, "0.0000001"),
        (-0.0, "-0"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (math.nan, "NaN"),
        (594806.56, "594806.56"),
    ],
)
def test_f64_display(value: float, text: str) -> None:
    assert format_f64(value) == text


def _f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (594806.58906, "594806.56"),
        (16777217.0, "16777216"),
        (3.4e38, "340000000000000000000000000000000000000"),
    ],
)
def test_f32_display(value: float, text: str) -> None:
    assert format_f32(_f32(value)) == text


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_f32_display_round_trips(v: float) -> None:
    assert _f32(float(format_f32(v))) == v


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_f64_display_round_trips(v: float) -> None:
    assert float(format_f64(v)) == v


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("-3454353.3453890434", -3454353.345389043),  # one ulp off, as 1.12 reads it
        ("0.1", 0.1),
        ("1e308", 1e308),
        ("5e-324", 5e-324),
        ("1.5E+3", 1500.0),
        ("123456789012345678901234.5", float(12345678901234567890) * 1e4),
    ],
)
def test_serde_json_float_reading(text: str, value: float) -> None:
    assert serde_json_f64(text) == value


def test_type_from_json_round_trips() -> None:
    for ty in (OTHERS, ENUMS, ArrayType(option(IDENTITY)), product()):
        assert type_from_json(type_to_json(ty)) == ty


@pytest.mark.parametrize(
    "body",
    [
        {"rows": []},
        [{"schema": {"elements": [{"name": {"some": "a"}, "algebraic_type": {"U99": []}}]}, "rows": []}],
        [{"schema": {"elements": [{"name": {"some": "a"}, "algebraic_type": {"U8": []}}]}, "rows": [["x"]]}],
    ],
)
def test_malformed_responses_are_errors(body: Any) -> None:
    with pytest.raises(TableFormatError):
        render_sql_response(body)


def test_render_table_without_columns_is_empty() -> None:
    assert render_table([], []) == ""
