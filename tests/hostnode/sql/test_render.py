"""Rendering of ``SqlStmtResult`` (A.7): schema as SATS-JSON ProductType, untyped rows, stats."""

from __future__ import annotations

import json

from hostnode.sql import SqlResult, SqlStats, render_response, render_response_bytes
from sats.identity import Identity
from sats.types import (
    BOOL,
    BYTES,
    I256,
    IDENTITY,
    STRING,
    TIMESTAMP,
    U64,
    U128,
    UNIT,
    ArrayType,
    SumValue,
    option,
    product,
)

ID = Identity.from_claims("https://orrery.test", "bob")
ID_JSON = f"0x{ID.value:x}"


def test_the_a7_example() -> None:
    schema = product(("id", U64), ("owner", IDENTITY), ("nick", option(STRING)))
    rows = [(1, ID.to_sats(), SumValue(0, "bob")), (2, ID.to_sats(), SumValue(1, ()))]
    body = render_response(SqlResult(schema, rows, total_duration_micros=42))
    assert body == [
        {
            "schema": {
                "elements": [
                    {"name": {"some": "id"}, "algebraic_type": {"U64": []}},
                    {
                        "name": {"some": "owner"},
                        "algebraic_type": {
                            "Product": {"elements": [{"name": {"some": "__identity__"}, "algebraic_type": {"U256": []}}]}
                        },
                    },
                    {
                        "name": {"some": "nick"},
                        "algebraic_type": {
                            "Sum": {
                                "variants": [
                                    {"name": {"some": "some"}, "algebraic_type": {"String": []}},
                                    {"name": {"some": "none"}, "algebraic_type": {"Product": {"elements": []}}},
                                ]
                            }
                        },
                    },
                ]
            },
            "rows": [[1, [ID_JSON], [0, "bob"]], [2, [ID_JSON], [1, []]]],
            "total_duration_micros": 42,
            "stats": {"rows_inserted": 0, "rows_deleted": 0, "rows_updated": 0},
        }
    ]
    assert ID_JSON.startswith("0xc200")


def test_value_shapes() -> None:
    schema = product(
        ("big", U128), ("neg", I256), ("ok", BOOL), ("raw", BYTES), ("ints", ArrayType(U64)), ("at", TIMESTAMP)
    )
    row = (2**100, -255, True, b"\x01\xab", [1, 2], (1_700_000_000_000_000,))
    text = render_response_bytes(SqlResult(schema, [row]))
    doc = json.loads(text)
    assert doc[0]["rows"] == [[2**100, "-0xff", True, "01ab", [1, 2], [1_700_000_000_000_000]]]
    assert b"1267650600228229401496703205376" in text  # u128 written as exact digits


def test_dml_result() -> None:
    body = render_response(SqlResult(UNIT, [], stats=SqlStats(rows_inserted=1, rows_deleted=2, rows_updated=3)))
    assert body[0]["schema"] == {"elements": []}
    assert body[0]["rows"] == []
    assert body[0]["stats"] == {"rows_inserted": 1, "rows_deleted": 2, "rows_updated": 3}
