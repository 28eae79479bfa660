"""Literal typing (A.4): the pure literal parser, then typing errors against module-test's
``every_type`` (every SATS type as a column) in a real database."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from hostnode.database import Database
from hostnode.sql import SqlError, execute_sql
from hostnode.sql.literals import LiteralError, fmt_type, parse_literal, round_f32, supports_ops
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
    STRING,
    TIME_DURATION,
    TIMESTAMP,
    U8,
    U16,
    U32,
    U64,
    U256,
    UNIT,
    UUID,
    ArrayType,
    Typespace,
    option,
    product,
    sum_type,
)
from tests.hostnode.conftest import ALICE, OWNER, create_db, module_wasm

TS = Typespace([])
POINT = product(("x", I32), ("y", I32))


def lit(text: str, ty: Any) -> Any:
    return parse_literal(text, ty, TS)


@pytest.mark.parametrize(
    ("text", "ty", "value"),
    [
        ("0", U8, 0),
        ("255", U8, 255),
        ("+5", I8, 5),
        ("-128", I8, -128),
        ("1e3", U16, 1000),
        ("1E3", U16, 1000),
        ("35.0", U8, 35),
        ("2.5e1", U8, 25),
        (str(2**64 - 1), U64, 2**64 - 1),
        (str(-(2**127)), I128, -(2**127)),
        (str(2**256 - 1), U256, 2**256 - 1),
        ("-5", I256, -5),
        ("1.5e-3", F64, 0.0015),
        (".5", F64, 0.5),
        ("5", STRING, "5"),
        ("it's", STRING, "it's"),
        ("0102ab", BYTES, b"\x01\x02\xab"),
        ("0x0102", BYTES, b"\x01\x02"),
        ("", BYTES, b""),
        ("c2" + "00" * 31, IDENTITY, (0xC2 << 248,)),
        ("0x" + "00" * 31 + "01", IDENTITY, (1,)),
        ("ff" * 16, CONNECTION_ID, (2**128 - 1,)),
        ("1970-01-01T00:00:01Z", TIMESTAMP, (1_000_000,)),
        ("2025-02-10T15:45:30Z", TIMESTAMP, (1_739_202_330_000_000,)),
        ("2025-02-10 15:45:30.123+02:00", TIMESTAMP, (1_739_202_330_000_000 - 7_200_000_000 + 123_000,)),
        ("00000000-0000-0000-0000-000000000001", UUID, (1,)),
    ],
)
def test_accepted(text: str, ty: Any, value: Any) -> None:
    assert lit(text, ty) == value


@pytest.mark.parametrize(
    ("text", "ty"),
    [
        ("256", U8),
        ("-1", U8),
        ("1e3", U8),
        ("0.1", U32),
        ("-129", I8),
        (str(2**64), U64),
        ("1e100", U64),
        ("abc", U8),
        ("0x10", U8),
        ("1_000", U32),
        ("inf", F64),
        ("nan", F32),
        ("true", BOOL),
        ("012", BYTES),
        ("zz", BYTES),
        ("ABCD", IDENTITY),
        ("c2" + "00" * 30, IDENTITY),
        ("ff" * 15, CONNECTION_ID),
        ("2025-02-10", TIMESTAMP),
        ("2025-02-10T15:45:30", TIMESTAMP),
        ("yesterday", TIMESTAMP),
        ("not-a-uuid", UUID),
        ("1", TIME_DURATION),
        ("al", option(STRING)),
        ("1", POINT),
        ("1", ArrayType(I32)),
    ],
)
def test_rejected(text: str, ty: Any) -> None:
    with pytest.raises(LiteralError):
        lit(text, ty)


def test_f32_rounding_and_overflow() -> None:
    assert lit("1e40", F32) == math.inf
    assert lit("-1e40", F32) == -math.inf
    assert lit("0.1", F32) == round_f32(0.1) != 0.1


def test_type_names() -> None:
    assert fmt_type(U8, TS) == "U8"
    assert fmt_type(STRING, TS) == "String"
    assert fmt_type(IDENTITY, TS) == "(__identity__: U256)"
    assert fmt_type(option(STRING), TS) == "(some: String | none: ())"
    assert fmt_type(BYTES, TS) == "Array<U8>"
    shape = sum_type(("Circle", U32), ("Rect", POINT), (None, UNIT))
    assert fmt_type(shape, TS) == "(Circle: U32 | Rect: (x: I32, y: I32) | 2: ())"


def test_operator_types() -> None:
    good: list[Any] = [BOOL, U8, I256, F32, STRING, BYTES, IDENTITY, CONNECTION_ID, TIMESTAMP, UUID]
    bad: list[Any] = [option(STRING), POINT, ArrayType(I32), TIME_DURATION, UNIT]
    assert all(supports_ops(ty, TS) for ty in good)
    assert not any(supports_ops(ty, TS) for ty in bad)


# --- typing in queries, against a real module ----------------------------------------------------


@pytest.fixture(scope="module")
def mt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One module-test database shared by the (read-only) typing tests of this file."""
    db, _ = create_db(tmp_path_factory.mktemp("sql-literals") / "db", module_wasm("module-test"))
    yield db
    db.close()


def qerr(db: Database, sql: str) -> str:
    with pytest.raises(SqlError) as info:
        execute_sql(db, sql, OWNER)
    return str(info.value)


@pytest.mark.parametrize(
    "where",
    [
        "u8 = 255",
        "u8 = '7'",
        "i8 = -128",
        "u16 = 1e3",
        "u32 = 7.0",
        "i256 = -5",
        "u256 = 0",
        "f32 = 1e40",
        "f64 = -0.5",
        "s = 5",
        "s = 'x'",
        "b = true",
        "b",
        "bytes = 0x0102",
        "bytes = X'0102'",
        "identity = :sender",
        "identity = 0x" + "ab" * 32,
        "identity = '" + "ab" * 32 + "'",
        "connection_id = 0x" + "ab" * 16,
        "timestamp > '2025-02-10T15:45:30Z'",
        "timestamp <= '2025-02-10 15:45:30.123+02:00'",
        "u8 = u8 AND u8 <> 3 OR (i16 < 0 AND true)",
        "1 = u8",
        ":sender = identity",
    ],
)
def test_accepted_predicates(mt: Database, where: str) -> None:
    assert execute_sql(mt, f"SELECT * FROM every_type WHERE {where}", OWNER).rows == []


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("u8 = 256", "The literal expression `256` cannot be parsed as type `U8`"),
        ("u8 = -1", "The literal expression `-1` cannot be parsed as type `U8`"),
        ("u8 = 1e3", "The literal expression `1e3` cannot be parsed as type `U8`"),
        ("u32 = 0.1", "The literal expression `0.1` cannot be parsed as type `U32`"),
        ("i8 = -129", "The literal expression `-129` cannot be parsed as type `I8`"),
        ("b = 'true'", "The literal expression `true` cannot be parsed as type `Bool`"),
        ("b = 1", "The literal expression `1` cannot be parsed as type `Bool`"),
        ("u8 = true", "Unexpected type: (expected) Bool != U8 (inferred)"),
        ("identity = 0xABCD", "The literal expression `ABCD` cannot be parsed as type `(__identity__: U256)`"),
        ("connection_id = 0xAB", "The literal expression `AB` cannot be parsed as type `(__connection_id__: U128)`"),
        ("bytes = 0x012", "The literal expression `012` cannot be parsed as type `Array<U8>`"),
        (
            "timestamp = 'noon'",
            "The literal expression `noon` cannot be parsed as type `(__timestamp_micros_since_unix_epoch__: I64)`",
        ),
        ("opt = 1", "The literal expression `1` cannot be parsed as type `(some: I32 | none: ())`"),
        ("point = point", "Invalid binary operator `=` for type `(x: I32, y: I32)`"),
        ("ints = ints", "Invalid binary operator `=` for type `Array<I32>`"),
        ("opt <> opt", "Invalid binary operator `<>` for type `(some: I32 | none: ())`"),
        ("u8 = u16", "Unexpected type: (expected) U16 != U8 (inferred)"),
        ("u8", "Unexpected type: (expected) U8 != Bool (inferred)"),
        ("b AND s", "Unexpected type: (expected) String != Bool (inferred)"),
        ("1 = 1", "Cannot resolve type for literal expression"),
        (":sender = :sender", "Cannot resolve type for literal expression"),
        ("'a' = 'b'", "Cannot resolve type for literal expression"),
        ("nope = 1", "`nope` is not in scope"),
        ("every_type.nope = 1", "`nope` is not in scope"),
        ("other.u8 = 1", "`other` is not in scope"),
    ],
)
def test_rejected_predicates(mt: Database, where: str, message: str) -> None:
    assert qerr(mt, f"SELECT * FROM every_type WHERE {where}") == message


def test_sender_is_the_callers_identity(mt: Database) -> None:
    # `:sender` is typed like a hex literal: at a String column it is the hex text.
    res = execute_sql(mt, "SELECT * FROM every_type WHERE s = :sender", ALICE)
    assert res.rows == []
    assert qerr(mt, "SELECT * FROM every_type WHERE u8 = :sender") == (
        f"The literal expression `{OWNER.to_hex()}` cannot be parsed as type `U8`"
    )


def test_limit_must_be_u64(mt: Database) -> None:
    assert qerr(mt, "SELECT * FROM kv LIMIT 1.5") == "The literal expression `1.5` cannot be parsed as type `U64`"
    assert execute_sql(mt, "SELECT * FROM kv LIMIT 1e3", OWNER).rows == []
