"""Log lines as ``spacetime logs`` 1.12 prints them, signatures, and the ``describe`` summary."""

from __future__ import annotations

from typing import Any

import pytest

from orrery.cli_render import LogFormatError, describe_summary, format_log_ts, render_log_record, type_name
from sats.json import product_type_to_json, type_to_json
from sats.types import (
    BYTES,
    I64,
    IDENTITY,
    SCHEDULE_AT,
    STRING,
    TIMESTAMP,
    U32,
    U64,
    ArrayType,
    Ref,
    Typespace,
    option,
    product,
    simple_enum,
)

TS = 1_714_564_800_123_456  # 2024-05-01T12:00:00.123456Z


def test_reducer_log_line() -> None:
    record = {
        "level": "Info",
        "ts": TS,
        "target": "quickstart_chat",
        "filename": "src/lib.rs",
        "line_number": 42,
        "function": "set_name",
        "message": "User set name",
    }
    assert (
        render_log_record(record)
        == "2024-05-01T12:00:00.123456Z  INFO: set_name src/lib.rs:42: User set name"
    )


@pytest.mark.parametrize(
    ("level", "shown"),
    [("Error", "ERROR"), ("Warn", " WARN"), ("Debug", "DEBUG"), ("Trace", "TRACE"), ("Panic", "PANIC")],
)
def test_levels_are_right_aligned(level: str, shown: str) -> None:
    assert render_log_record({"level": level, "ts": 0, "message": "m"}) == f"1970-01-01T00:00:00Z {shown}: m"


def test_system_lines_hide_the_sentinel() -> None:
    record = {
        "level": "Info",
        "ts": 1_000,
        "target": "__spacetimedb__",
        "filename": "__spacetimedb__",
        "function": "__spacetimedb__",
        "message": "Creating table `user`",
    }
    assert render_log_record(record) == "1970-01-01T00:00:00.001Z  INFO: Creating table `user`"


def test_partial_locations() -> None:
    assert render_log_record({"level": "Warn", "message": "m", "function": "f"}) == " WARN: f: m"
    assert render_log_record({"level": "Warn", "message": "m", "filename": "a.c"}) == " WARN: a.c: m"
    assert (
        render_log_record({"level": "Warn", "message": "m", "filename": "a.c", "line_number": 3})
        == " WARN: a.c:3: m"
    )


def test_panic_backtrace() -> None:
    record = {
        "level": "Panic",
        "ts": 0,
        "function": "boom",
        "message": "oh no",
        "trace": [{"module_name": "chat", "func_name": "boom"}, {"func_name": "main"}],
    }
    assert render_log_record(record).splitlines() == [
        "1970-01-01T00:00:00Z PANIC: boom: oh no",
        "    in chat :: boom",
        "    in main",
    ]


@pytest.mark.parametrize("record", [{"level": "Loud", "message": "m"}, {"level": "Info"}, ["x"]])
def test_malformed_records(record: Any) -> None:
    with pytest.raises(LogFormatError):
        render_log_record(record)


@pytest.mark.parametrize(
    ("micros", "text"),
    [(0, "1970-01-01T00:00:00Z"), (5_000, "1970-01-01T00:00:00.005Z"), (5, "1970-01-01T00:00:00.000005Z")],
)
def test_log_timestamps_use_chrono_debug_form(micros: int, text: str) -> None:
    assert format_log_ts(micros) == text


def test_type_names() -> None:
    ts = Typespace([product(("a", U32))])
    assert type_name(option(STRING)) == "Option<String>"
    assert type_name(IDENTITY) == "Identity"
    assert type_name(SCHEDULE_AT) == "ScheduleAt"
    assert type_name(BYTES) == "Vec<u8>"
    assert type_name(ArrayType(Ref(0)), ts) == "Vec<{ a: u32 }>"
    assert type_name(simple_enum("A", "B")) == "enum { A: {}, B: {} }"


def _schema() -> dict[str, Any]:
    user = product(("identity", IDENTITY), ("name", option(STRING)), ("online", option(I64)))
    message = product(("id", U64), ("sender", IDENTITY), ("sent", TIMESTAMP), ("text", STRING))
    return {
        "typespace": {"types": [type_to_json(user), type_to_json(message)]},
        "tables": [
            {
                "name": "user",
                "product_type_ref": 0,
                "primary_key": [0],
                "indexes": [],
                "constraints": [],
                "sequences": [],
                "schedule": {"none": []},
                "table_type": {"User": []},
                "table_access": {"Public": []},
            },
            {
                "name": "message",
                "product_type_ref": 1,
                "primary_key": [],
                "indexes": [],
                "constraints": [{"name": {"some": "c"}, "data": {"Unique": {"columns": [0]}}}],
                "sequences": [
                    {
                        "name": {"some": "s"},
                        "column": 0,
                        "start": {"none": []},
                        "min_value": {"none": []},
                        "max_value": {"none": []},
                        "increment": 1,
                    }
                ],
                "schedule": {"none": []},
                "table_type": {"User": []},
                "table_access": {"Private": []},
            },
        ],
        "reducers": [
            {
                "name": "set_name",
                "params": product_type_to_json(product(("name", STRING))),
                "lifecycle": {"none": []},
            },
            {"name": "init", "params": {"elements": []}, "lifecycle": {"some": {"Init": []}}},
        ],
        "types": [],
        "misc_exports": [
            {"Procedure": {"name": "hello", "params": {"elements": []}, "return_type": {"String": []}}}
        ],
        "row_level_security": [],
    }


def test_describe_summary() -> None:
    assert describe_summary(_schema(), "chat", "c200ab").splitlines() == [
        "Database chat (identity c200ab)",
        "",
        "Tables (2):",
        "  user (public)",
        "    identity: Identity  [primary key]",
        "    name: Option<String>",
        "    online: Option<i64>",
        "  message (private)",
        "    id: u64  [unique, auto_inc]",
        "    sender: Identity",
        "    sent: Timestamp",
        "    text: String",
        "",
        "Reducers and procedures (3):",
        "  set_name(name: String)",
        "  init()  [init]",
        "  hello()  [procedure]",
    ]


def test_describe_summary_of_an_empty_module() -> None:
    assert describe_summary(
        {"typespace": {"types": []}, "tables": [], "reducers": []}, "x", "c2"
    ).splitlines()[2:] == ["Tables: none", "", "Reducers and procedures: none"]
