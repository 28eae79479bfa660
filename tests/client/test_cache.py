"""The client cache, value conversion and schema reading, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orrery_client import ClientCache, ModuleSchema, RowChange, load_token, save_token
from orrery_client.values import from_python, to_python
from sats.errors import DecodeError
from sats.identity import ConnectionId, Identity
from sats.json import product_type_from_json, type_from_json, type_to_json
from sats.types import (
    BYTES,
    CONNECTION_ID,
    EMPTY_TYPESPACE,
    I32,
    IDENTITY,
    STRING,
    TIMESTAMP,
    U32,
    ArrayType,
    SumValue,
    option,
    product,
    simple_enum,
)
from sats.ws_v1 import Timestamp


def _schema() -> ModuleSchema:
    pk_row = product(("id", U32), ("name", STRING))
    bag_row = product(("v", I32),)
    return ModuleSchema.from_json(
        {
            "typespace": {"types": [type_to_json(pk_row), type_to_json(bag_row)]},
            "tables": [
                {"name": "person", "product_type_ref": 0, "primary_key": [0]},
                {"name": "bag", "product_type_ref": 1, "primary_key": []},
            ],
            "reducers": [{"name": "add", "params": {"elements": []}, "lifecycle": {"none": []}}],
        }
    )


def _rows(schema: ModuleSchema, table: str, *rows: Any) -> list[tuple[bytes, Any]]:
    t = schema.table(table)
    return [t.decode_bsatn(t.encode_row(r)) for r in rows]


def _kinds(changes: list[RowChange]) -> list[tuple[Any, ...]]:
    return [(c.kind, tuple(c.old) if c.old is not None else None, tuple(c.row)) for c in changes]


def test_rows_are_named_tuples() -> None:
    s = _schema()
    ((key, row),) = _rows(s, "person", (1, "a"))
    assert row.id == 1 and row.name == "a" and row == (1, "a")
    assert s.table("person").decode_json('{"id":1,"name":"a"}') == (key, row)
    assert s.table("person").decode_json('[1,"a"]') == (key, row)


def test_same_primary_key_in_one_update_is_an_update() -> None:
    s = _schema()
    cache = ClientCache(s)
    assert _kinds(cache.apply([("person", [], _rows(s, "person", (1, "a"), (2, "b")))])) == [
        ("insert", None, (1, "a")),
        ("insert", None, (2, "b")),
    ]
    changes = cache.apply([("person", _rows(s, "person", (1, "a"), (2, "b")), _rows(s, "person", (1, "z")))])
    assert sorted(_kinds(changes)) == [("delete", None, (2, "b")), ("update", (1, "a"), (1, "z"))]
    assert cache.table("person").find(1) == (1, "z") and cache.table("person").find(2) is None
    assert cache.table("person").count() == 1


def test_bag_semantics_and_tables_without_a_key() -> None:
    s = _schema()
    cache = ClientCache(s)
    row = _rows(s, "bag", (7,))
    assert _kinds(cache.apply([("bag", [], row * 2)])) == [("insert", None, (7,))]
    assert cache.apply([("bag", row, [])]) == []  # still held once
    assert _kinds(cache.apply([("bag", row, _rows(s, "bag", (8,)))])) == [
        ("delete", None, (7,)),
        ("insert", None, (8,)),
    ]
    assert cache.apply([("bag", row, row)]) == []  # delete + re-insert of an absent row nets out
    assert [tuple(r) for r in cache.table("bag").iter()] == [(8,)]


def test_replace_reports_only_the_difference() -> None:
    s = _schema()
    cache = ClientCache(s)
    cache.apply([("person", [], _rows(s, "person", (1, "a"), (2, "b"), (3, "c")))])
    fresh = ClientCache(s)
    fresh.apply([("person", [], _rows(s, "person", (1, "a"), (2, "B"), (4, "d")))])
    assert sorted(_kinds(cache.replace(fresh))) == [
        ("delete", None, (3, "c")),
        ("insert", None, (4, "d")),
        ("update", (2, "b"), (2, "B")),
    ]
    assert sorted(tuple(r) for r in cache.table("person").iter()) == [(1, "a"), (2, "B"), (4, "d")]


def test_clear_deletes_everything() -> None:
    s = _schema()
    cache = ClientCache(s)
    cache.apply([("person", [], _rows(s, "person", (1, "a")))])
    assert _kinds(cache.clear()) == [("delete", None, (1, "a"))]
    assert cache.table("person").count() == 0


@pytest.mark.parametrize(
    ("ty", "raw", "py"),
    [
        (IDENTITY, (5,), Identity(5)),
        (CONNECTION_ID, (6,), ConnectionId(6)),
        (TIMESTAMP, (-1,), Timestamp(-1)),
        (option(STRING), SumValue(1, ()), None),
        (option(STRING), SumValue(0, "x"), "x"),
        (simple_enum("Red", "Green"), SumValue(1, ()), SumValue(1, ())),
        (ArrayType(option(I32)), [SumValue(0, 1), SumValue(1, ())], [1, None]),
        (BYTES, b"\x01", b"\x01"),
        (product(("a", U32), ("b", IDENTITY)), (1, (2,)), (1, Identity(2))),
    ],
)
def test_values_round_trip(ty: Any, raw: Any, py: Any) -> None:
    assert to_python(ty, raw, EMPTY_TYPESPACE) == py
    assert from_python(ty, py, EMPTY_TYPESPACE) == raw


def test_from_python_accepts_friendly_forms() -> None:
    assert from_python(product(("a", U32), ("b", STRING)), {"a": 1, "b": "x"}, EMPTY_TYPESPACE) == (1, "x")
    assert from_python(simple_enum("Red", "Green"), "Green", EMPTY_TYPESPACE) == SumValue(1, ())
    assert from_python(IDENTITY, "c2" + "00" * 31, EMPTY_TYPESPACE) == (int("c2" + "00" * 31, 16),)
    assert from_python(BYTES, [1, 2], EMPTY_TYPESPACE) == b"\x01\x02"


def test_reducer_args() -> None:
    s = ModuleSchema.from_json(
        {
            "typespace": {"types": []},
            "tables": [],
            "reducers": [
                {"name": "f", "params": {"elements": [{"name": {"some": "n"}, "algebraic_type": {"U32": []}}]}}
            ],
        }
    )
    f = s.reducer("f")
    assert f.encode_args_bsatn((7,)) == b"\x07\x00\x00\x00"
    assert f.encode_args_json((7,)) == "[7]"
    assert f.decode_args(b"\x07\x00\x00\x00") == (7,) and f.decode_args('{"n":7}') == (7,)
    assert f.decode_args(b"\x07") is None
    with pytest.raises(TypeError):
        f.encode_args_bsatn(())


def test_type_from_json_reads_types_and_rejects_garbage() -> None:
    for ty in (IDENTITY, option(ArrayType(STRING)), simple_enum("A", "B"), product()):
        assert type_from_json(type_to_json(ty)) == ty
    bads: list[Any] = [{"U99": []}, [], {"Ref": "x"}, {"Sum": {"variants": [1]}}, {"Product": {}}]
    for bad in bads:
        with pytest.raises(DecodeError):
            type_from_json(bad)
    with pytest.raises(DecodeError):
        product_type_from_json({"elements": [{"name": 5, "algebraic_type": {"U8": []}}]})


def test_token_store(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "token"
    assert load_token(path) is None
    save_token(path, "a.b.c")
    assert load_token(path) == "a.b.c"
    assert path.stat().st_mode & 0o777 == 0o600
