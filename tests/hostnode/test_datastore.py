"""The LMDB datastore against module-abi.md §3.3–§3.8, on a real LMDB environment."""

from __future__ import annotations

import random
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostnode.datastore import (
    KEY_TRUNC,
    BsatnDecodeError,
    Datastore,
    DatastoreError,
    IndexNotUnique,
    MutTx,
    NoSuchIndex,
    NoSuchRow,
    NoSuchTable,
    SchemaConflict,
    TransactionStateError,
    UniqueAlreadyExists,
    WrongIndexAlgo,
)
from hostnode.schema import IndexSchema, SequenceSchema, TableSchema
from hostnode.txdata import TxData
from sats.bsatn import encode
from sats.types import (
    BOOL,
    BYTES,
    I16,
    I32,
    I64,
    IDENTITY,
    STRING,
    U8,
    U32,
    U64,
    U256,
    ArrayType,
    SumValue,
    Typespace,
    option,
    product,
)

I128_MAX = (1 << 127) - 1

# -- schemas -----------------------------------------------------------------------------------

PERSON_T = product(("id", U64), ("name", STRING), ("age", U8))
PERSON = 1
P_ID, P_NAME, P_AGE = 1, 2, 3
P_SEQ = 1

POINT_T = product(("x", I32), ("y", I32), ("tag", STRING))
POINT = 2
PT_XY, PT_TAG = 10, 11

LONG_T = product(("k", STRING), ("v", U32))
LONG = 3
L_K = 20

LOG_T = product(("s", STRING), ("n", U32))
LOG = 4
LG_S = 30


def person_schema() -> TableSchema:
    return TableSchema(
        table_id=PERSON,
        name="person",
        row_type=PERSON_T,
        typespace=Typespace([PERSON_T]),
        primary_key=0,
        indexes=[
            IndexSchema(P_ID, "person_id_idx_btree", PERSON, (0,), "btree", True),
            IndexSchema(P_NAME, "person_name_idx_btree", PERSON, (1,), "btree", True),
            IndexSchema(P_AGE, "person_age_idx_btree", PERSON, (2,), "btree", False),
        ],
        sequences=[SequenceSchema(P_SEQ, "person_id_seq", PERSON, 0, 1, 1, I128_MAX, 1)],
    )


def point_schema() -> TableSchema:
    return TableSchema(
        table_id=POINT,
        name="point",
        row_type=POINT_T,
        typespace=Typespace([]),
        indexes=[
            IndexSchema(PT_XY, "point_x_y_idx_btree", POINT, (0, 1), "btree", False),
            IndexSchema(PT_TAG, "point_tag_idx_hash", POINT, (2,), "hash", False),
        ],
    )


def long_schema() -> TableSchema:
    return TableSchema(
        LONG, "longk", LONG_T, Typespace([]), primary_key=0, indexes=[IndexSchema(L_K, "longk_k", LONG, (0,), "btree", True)]
    )


def log_schema() -> TableSchema:
    return TableSchema(LOG, "log", LOG_T, Typespace([]), indexes=[IndexSchema(LG_S, "log_s", LOG, (0,), "btree", False)])


def person(i: int, name: str, age: int) -> bytes:
    return encode(PERSON_T, (i, name, age))


def point(x: int, y: int, tag: str = "") -> bytes:
    return encode(POINT_T, (x, y, tag))


def inc(ty: Any, v: Any) -> bytes:
    return b"\x00" + encode(ty, v)


def exc(ty: Any, v: Any) -> bytes:
    return b"\x01" + encode(ty, v)


UNB = b"\x02"


@pytest.fixture
def ds(tmp_path: Path) -> Any:
    d = Datastore(tmp_path / "db")
    for s in (person_schema(), point_schema(), long_schema(), log_schema()):
        d.create_table(s)
    yield d
    d.close()


def commit_one(ds: Datastore, fn: Any) -> tuple[Any, TxData]:
    tx = ds.begin_mut()
    try:
        out = fn(tx)
    except BaseException:
        tx.rollback()
        raise
    return out, tx.commit()


def decoded(rows: list[bytes], ty: Any) -> list[Any]:
    from sats.bsatn import decode

    return [decode(ty, r) for r in rows]


# -- basics ------------------------------------------------------------------------------------


def test_insert_scan_row_count_and_errors(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        stored, gen = tx.insert(POINT, point(1, 2, "a"))
        assert stored == point(1, 2, "a") and gen == b""
        tx.insert(POINT, point(3, 4, "b"))
        assert tx.row_count(POINT) == 2
        assert sorted(tx.scan(POINT)) == sorted([point(1, 2, "a"), point(3, 4, "b")])
        with pytest.raises(NoSuchTable) as e:
            tx.scan(99)
        assert e.value.errno == 4
        with pytest.raises(NoSuchTable):
            tx.row_count(99)
        with pytest.raises(NoSuchTable):
            tx.insert(99, b"")
        with pytest.raises(NoSuchIndex) as e2:
            tx.index_scan_point(999, b"")
        assert e2.value.errno == 5
        assert tx.table_id("point") == POINT and tx.index_id("point_tag_idx_hash") == PT_TAG
        with pytest.raises(NoSuchTable):
            tx.table_id("nope")
        with pytest.raises(NoSuchIndex):
            tx.index_id("nope")


@pytest.mark.parametrize(
    "row",
    [
        b"",
        b"\x01\x00\x00\x00",  # truncated
        encode(POINT_T, (1, 2, "x")) + b"\x00",  # trailing byte
        encode(POINT_T, (1, 2, "")) [:-4] + b"\x01\x00\x00\x00\xff",  # invalid UTF-8
    ],
)
def test_malformed_row_is_decode_error(ds: Datastore, row: bytes) -> None:
    with ds.begin_mut() as tx:
        with pytest.raises(BsatnDecodeError) as e:
            tx.insert(POINT, row)
        assert e.value.errno == 3
        assert tx.row_count(POINT) == 0
        with pytest.raises(BsatnDecodeError):
            tx.insert(PERSON, row[:5])


def test_fixed_size_row_validation(tmp_path: Path) -> None:
    rt = product(("a", U32), ("b", I64))
    with Datastore(tmp_path / "db") as d:
        d.create_table(TableSchema(1, "t", rt, Typespace([])))
        with d.begin_mut() as tx:
            for bad in (b"", bytes(11), bytes(13)):
                with pytest.raises(BsatnDecodeError):
                    tx.insert(1, bad)
            tx.insert(1, bytes(12))
            with pytest.raises(BsatnDecodeError):
                tx.delete_by_rel(1, b"\x01\x00\x00\x00" + bytes(11))


def test_row_validation_of_mixed_columns(tmp_path: Path) -> None:
    rt = product(("b", BOOL), ("o", option(STRING)), ("bs", BYTES), ("n", U32), ("s", STRING))
    good = encode(rt, (True, SumValue(0, "é"), b"\x00\x01", 7, "x"))
    with Datastore(tmp_path / "db") as d:
        d.create_table(TableSchema(1, "t", rt, Typespace([])))
        with d.begin_mut() as tx:
            assert tx.insert(1, good)[0] == good
            bad_rows = [
                b"\x02" + good[1:],  # bool byte 2
                good[:1] + b"\x05" + good[2:],  # sum tag out of range
                good[:-1],  # truncated string
                good + b"\x00",  # trailing
                good[:-1] + b"\xff",  # invalid UTF-8 in the last string
                encode(rt, (False, SumValue(1, ()), b"", 0, ""))[:8],  # cut inside bytes length
            ]
            for bad in bad_rows:
                with pytest.raises(BsatnDecodeError):
                    tx.insert(1, bad)
            assert tx.row_count(1) == 1
            rel = b"\x02\x00\x00\x00" + good + good[:-1]
            with pytest.raises(BsatnDecodeError):
                tx.delete_by_rel(1, rel)
            assert tx.delete_by_rel(1, b"\x01\x00\x00\x00" + good) == 1


def test_set_semantics(ds: Datastore) -> None:
    def body(tx: MutTx) -> None:
        a = tx.insert(POINT, point(1, 1, "t"))
        assert tx.insert(POINT, point(1, 1, "t")) == a  # identical: no-op
        tx.insert(PERSON, person(5, "ann", 30))
        tx.insert(PERSON, person(5, "ann", 30))  # identical, even with unique constraints
        assert tx.row_count(POINT) == 1 and tx.row_count(PERSON) == 1

    _, td = commit_one(ds, body)
    assert td.tables[POINT].inserts == [point(1, 1, "t")]
    assert td.tables[PERSON].inserts == [person(5, "ann", 30)]


def test_unique_violation_leaves_state_unchanged(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        tx.insert(PERSON, person(0, "ann", 30))  # id 1
        before = sorted(tx.scan(PERSON))
        with pytest.raises(UniqueAlreadyExists) as e:
            tx.insert(PERSON, person(1, "bob", 40))  # primary key collides
        assert e.value.errno == 12 and "person_id_idx_btree" in str(e.value) and "person" in str(e.value)
        with pytest.raises(UniqueAlreadyExists) as e:
            tx.insert(PERSON, person(0, "ann", 50))  # name collides; id 2 must not be consumed
        assert "person_name_idx_btree" in str(e.value) and "'ann'" in str(e.value)
        assert sorted(tx.scan(PERSON)) == before
        assert tx.index_scan_point(P_AGE, encode(U8, 50)) == []
        assert tx.index_scan_point(P_NAME, encode(STRING, "bob")) == []
        _, gen = tx.insert(PERSON, person(0, "cid", 1))
        assert gen == encode(U64, 2)


# -- sequences ---------------------------------------------------------------------------------


def test_sequence_write_back_and_non_zero(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        stored, gen = tx.insert(PERSON, person(0, "a", 1))
        assert gen == encode(U64, 1) and stored == person(1, "a", 1)
        stored, gen = tx.insert(PERSON, person(100, "b", 1))  # explicit: no generation, no advance
        assert gen == b"" and stored == person(100, "b", 1)
        assert tx.insert(PERSON, person(0, "c", 1)) == (person(2, "c", 1), encode(U64, 2))
        td = tx.commit()
    assert td.sequences == {P_SEQ: 3}


def _seq_table(tmp_path: Path, col: Any, start: int, lo: int, hi: int, step: int) -> Datastore:
    rt = product(("n", col), ("m", col), ("s", STRING))
    d = Datastore(tmp_path / "seq")
    d.create_table(
        TableSchema(
            1,
            "t",
            rt,
            Typespace([]),
            sequences=[
                SequenceSchema(1, "t_n_seq", 1, 0, start, lo, hi, step),
                SequenceSchema(2, "t_m_seq", 1, 1, 10, 1, 1000, 5),
            ],
        )
    )
    return d


def test_sequence_wraps_and_truncates(tmp_path: Path) -> None:
    d = _seq_table(tmp_path, U8, 254, 1, 255, 1)
    with d.begin_mut() as tx:
        gens = [tx.insert(1, encode(product(("n", U8), ("m", U8), ("s", STRING)), (0, 7, str(i))))[1] for i in range(3)]
    assert gens == [b"\xfe", b"\xff", b"\x01"]  # 254, 255, wrap to min 1
    d.close()


def test_sequence_truncated_to_column_width(tmp_path: Path) -> None:
    d = _seq_table(tmp_path / "a", U8, 255, 1, I128_MAX, 1)
    rt = product(("n", U8), ("m", U8), ("s", STRING))
    with d.begin_mut() as tx:
        assert tx.insert(1, encode(rt, (0, 1, "a")))[1] == b"\xff"
        assert tx.insert(1, encode(rt, (0, 1, "b")))[1] == b"\x00"  # 256 cast to u8
    d.close()


def test_two_sequences_generated_in_column_order_and_negative_step(tmp_path: Path) -> None:
    rt = product(("n", I16), ("m", I16), ("s", STRING))
    d = _seq_table(tmp_path, I16, -1, -2, 5, -1)
    with d.begin_mut() as tx:
        row, gen = tx.insert(1, encode(rt, (0, 0, "a")))
        assert gen == encode(I16, -1) + encode(I16, 10)
        assert row == encode(rt, (-1, 10, "a"))
        assert tx.insert(1, encode(rt, (0, 3, "b")))[1] == encode(I16, -2)  # only n generated
        assert tx.insert(1, encode(rt, (0, 3, "c")))[1] == encode(I16, 5)  # below min: wraps to max
    d.close()


def test_sequence_not_consumed_on_rollback(ds: Datastore) -> None:
    tx = ds.begin_mut()
    tx.insert(PERSON, person(0, "a", 1))
    tx.rollback()
    with ds.begin_mut() as tx:
        assert tx.insert(PERSON, person(0, "a", 1))[1] == encode(U64, 1)


# -- point and range scans -----------------------------------------------------------------------


def fill_points(tx: MutTx) -> list[tuple[int, int, str]]:
    vals = [(x, y, f"t{(x + y) % 3}") for x in (-2, 0, 5, 7) for y in (-1, 0, 3)]
    for v in vals:
        tx.insert(POINT, encode(POINT_T, v))
    return vals


def test_point_scans(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        vals = fill_points(tx)
        got = decoded(tx.index_scan_point(PT_XY, encode(I32, 5) + encode(I32, 3)), POINT_T)
        assert got == [(5, 3, "t2")]
        got = decoded(tx.index_scan_point(PT_TAG, encode(STRING, "t1")), POINT_T)  # hash index
        assert sorted(got) == sorted(v for v in vals if v[2] == "t1")
        assert tx.index_scan_point(PT_XY, encode(I32, 6) + encode(I32, 3)) == []
        with pytest.raises(BsatnDecodeError) as e:
            tx.index_scan_point(PT_XY, encode(I32, 5))  # second column missing
        assert e.value.errno == 3
        tx.insert(PERSON, person(0, "ann", 3))
        assert decoded(tx.index_scan_point(P_ID, encode(U64, 1)), PERSON_T) == [(1, "ann", 3)]
        assert decoded(tx.index_scan_point(P_NAME, encode(STRING, "ann")), PERSON_T) == [(1, "ann", 3)]
        assert tx.index_scan_point(P_NAME, encode(STRING, "bob")) == []


def xy_range(tx: MutTx, prefix: bytes, elems: int, lo: bytes, hi: bytes) -> list[tuple[int, int, str]]:
    return [(r[0], r[1], r[2]) for r in decoded(tx.index_scan_range(PT_XY, prefix, elems, lo, hi), POINT_T)]


def test_range_scans(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        vals = sorted(fill_points(tx))
        xs = lambda rows: [(x, y) for x, y, _ in rows]  # noqa: E731
        assert xs(xy_range(tx, b"", 0, UNB, UNB)) == xs(vals)  # ordered full scan
        assert xs(xy_range(tx, b"", 0, inc(I32, 0), inc(I32, 5))) == [(x, y) for x, y, _ in vals if 0 <= x <= 5]
        # Exact exclusive semantics on a non-last column: x > 0 excludes every x == 0.
        assert xs(xy_range(tx, b"", 0, exc(I32, 0), exc(I32, 7))) == [(x, y) for x, y, _ in vals if 0 < x < 7]
        assert xs(xy_range(tx, b"", 0, UNB, exc(I32, 5))) == [(x, y) for x, y, _ in vals if x < 5]
        assert xs(xy_range(tx, b"", 0, inc(I32, 5), UNB)) == [(x, y) for x, y, _ in vals if x >= 5]
        # Prefix x == 5, then a bound on y.
        p5 = encode(I32, 5)
        assert xs(xy_range(tx, p5, 1, UNB, UNB)) == [(5, -1), (5, 0), (5, 3)]
        assert xs(xy_range(tx, p5, 1, exc(I32, -1), inc(I32, 3))) == [(5, 0), (5, 3)]
        assert xs(xy_range(tx, p5, 1, inc(I32, 0), inc(I32, 0))) == [(5, 0)]
        # start > end: nothing, no error.
        assert xy_range(tx, b"", 0, inc(I32, 7), inc(I32, 0)) == []
        assert xy_range(tx, p5, 1, exc(I32, 0), exc(I32, 0)) == []
        # prefix_elems must be below the number of key columns.
        with pytest.raises(BsatnDecodeError) as e:
            tx.index_scan_range(PT_XY, p5 + p5, 2, UNB, UNB)
        assert e.value.errno == 3
        for bad in (b"", b"\x03", b"\x00\x01"):
            with pytest.raises(BsatnDecodeError):
                tx.index_scan_range(PT_XY, b"", 0, bad, UNB)
        with pytest.raises(BsatnDecodeError):
            tx.index_scan_range(PT_XY, b"\x01", 1, UNB, UNB)  # truncated prefix
        with pytest.raises(WrongIndexAlgo) as e2:
            tx.index_scan_range(PT_TAG, b"", 0, UNB, UNB)
        assert e2.value.errno == 10
        with pytest.raises(WrongIndexAlgo):
            tx.delete_by_index_scan_range(PT_TAG, b"", 0, UNB, UNB)


def test_range_on_single_column(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        for i, age in enumerate([30, 10, 20, 10, 40]):
            tx.insert(PERSON, person(0, f"n{i}", age))
        ages = lambda rows: [r[2] for r in decoded(rows, PERSON_T)]  # noqa: E731
        assert ages(tx.index_scan_range(P_AGE, b"", 0, inc(U8, 10), exc(U8, 30))) == [10, 10, 20]
        # Equal keys come in insertion (row id) order.
        assert [r[1] for r in decoded(tx.index_scan_range(P_AGE, b"", 0, inc(U8, 10), inc(U8, 10)), PERSON_T)] == ["n1", "n3"]
        # Non-product key: prefix_elems != 0 with a non-empty prefix is a decode error...
        with pytest.raises(BsatnDecodeError):
            tx.index_scan_range(P_AGE, b"\x01", 1, UNB, UNB)
        # ...with an empty prefix it is accepted (the prefix is not read).
        assert ages(tx.index_scan_range(P_AGE, b"", 1, exc(U8, 30), UNB)) == [40]
        assert ages(tx.index_scan_range(P_AGE, b"", 0, inc(U8, 255), UNB)) == []
        assert ages(tx.index_scan_range(P_AGE, b"", 0, exc(U8, 255), UNB)) == []


def test_range_on_single_product_column(tmp_path: Path) -> None:
    rt = product(("who", IDENTITY), ("n", U32))
    with Datastore(tmp_path / "db") as d:
        d.create_table(
            TableSchema(1, "t", rt, Typespace([]), primary_key=0, indexes=[IndexSchema(1, "t_who", 1, (0,), "btree", True)])
        )
        with d.begin_mut() as tx:
            for w in (5, 1 << 200, 7):
                tx.insert(1, encode(rt, ((w,), 0)))
            got = decoded(tx.index_scan_range(1, b"", 0, inc(U256, 6), UNB), rt)
            assert [g[0][0] for g in got] == [7, 1 << 200]
            with pytest.raises(BsatnDecodeError):
                tx.index_scan_range(1, encode(U256, 5), 1, UNB, UNB)  # the product has one element
            assert decoded(tx.index_scan_point(1, encode(U256, 5)), rt) == [((5,), 0)]


# -- deletes -----------------------------------------------------------------------------------


def test_delete_by_point_range_rel(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        vals = fill_points(tx)
        n = len(vals)
        assert tx.delete_by_index_scan_point(PT_XY, encode(I32, 5) + encode(I32, 0)) == 1
        assert tx.delete_by_index_scan_point(PT_XY, encode(I32, 5) + encode(I32, 0)) == 0
        assert tx.delete_by_index_scan_range(PT_XY, encode(I32, 7), 1, UNB, exc(I32, 3)) == 2
        assert tx.delete_by_index_scan_point(PT_TAG, encode(STRING, "nope")) == 0
        assert tx.row_count(POINT) == n - 3
        rel = encode(ArrayType(POINT_T), [(-2, -1, "t0"), (-2, -1, "t0"), (99, 99, "no")])
        assert tx.delete_by_rel(POINT, rel) == 1  # duplicates and absent rows counted once / ignored
        assert tx.row_count(POINT) == n - 4
        with pytest.raises(BsatnDecodeError):
            tx.delete_by_rel(POINT, rel[:-2])
        with pytest.raises(BsatnDecodeError):
            tx.delete_by_rel(POINT, b"\x01")
        assert tx.row_count(POINT) == n - 4
        assert tx.delete_by_rel(POINT, b"\x00\x00\x00\x00") == 0
        left = tx.scan(POINT)
        assert tx.delete_row(POINT, left[0]) and not tx.delete_row(POINT, left[0])
        # delete via index scan keeps all index entries consistent
        assert xy_range(tx, b"", 0, UNB, UNB) == sorted(tuple(r) for r in decoded(tx.scan(POINT), POINT_T))


def test_scan_is_a_snapshot(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        fill_points(tx)
        rows = tx.scan(POINT)
        by_index = tx.index_scan_range(PT_XY, b"", 0, UNB, UNB)
        for r in rows:  # deleting while "iterating" a scan
            assert tx.delete_row(POINT, r)
        tx.insert(POINT, point(100, 100))
        assert len(rows) == 12 and len(by_index) == 12
        assert tx.scan(POINT) == [point(100, 100)]


# -- update ------------------------------------------------------------------------------------


def test_update_paths(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        tx.insert(PERSON, person(0, "ann", 30))
        tx.insert(PERSON, person(0, "bob", 40))
        # through the primary key
        assert tx.update(PERSON, P_ID, person(1, "anne", 31)) == (person(1, "anne", 31), b"")
        assert decoded(tx.index_scan_point(P_NAME, encode(STRING, "anne")), PERSON_T) == [(1, "anne", 31)]
        assert tx.index_scan_point(P_NAME, encode(STRING, "ann")) == []
        assert decoded(tx.index_scan_point(P_AGE, encode(U8, 31)), PERSON_T) == [(1, "anne", 31)]
        assert tx.index_scan_point(P_AGE, encode(U8, 30)) == []
        # through another unique index: the primary key changes
        tx.update(PERSON, P_NAME, person(7, "bob", 41))
        assert decoded(tx.index_scan_point(P_ID, encode(U64, 7)), PERSON_T) == [(7, "bob", 41)]
        assert tx.index_scan_point(P_ID, encode(U64, 2)) == []
        assert tx.row_count(PERSON) == 2
        with pytest.raises(IndexNotUnique) as e:
            tx.update(PERSON, P_AGE, person(7, "bob", 41))
        assert e.value.errno == 14
        with pytest.raises(NoSuchRow) as e2:
            tx.update(PERSON, P_ID, person(9, "zed", 1))
        assert e2.value.errno == 15
        with pytest.raises(NoSuchIndex) as e3:
            tx.update(PERSON, PT_XY, person(7, "bob", 41))  # index of another table
        assert e3.value.errno == 5
        with pytest.raises(NoSuchIndex):
            tx.update(PERSON, 12345, person(7, "bob", 41))
        with pytest.raises(NoSuchTable):
            tx.update(999, P_ID, person(7, "bob", 41))
        before = sorted(tx.scan(PERSON))
        with pytest.raises(UniqueAlreadyExists) as e4:
            tx.update(PERSON, P_ID, person(7, "anne", 41))  # name taken by row 1
        assert e4.value.errno == 12
        with pytest.raises(UniqueAlreadyExists):
            tx.update(PERSON, P_NAME, person(1, "bob", 41))  # id 1 taken by anne
        with pytest.raises(BsatnDecodeError):
            tx.update(PERSON, P_ID, b"\x07")
        assert sorted(tx.scan(PERSON)) == before
        # a row may keep its own unique values
        tx.update(PERSON, P_ID, person(7, "bob", 42))
        td = tx.commit()
    assert sorted(decoded(td.tables[PERSON].inserts, PERSON_T)) == [(1, "anne", 31), (7, "bob", 42)]
    assert td.tables[PERSON].deletes == []


def test_update_identical_is_no_change_and_nets_out(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        tx.insert(PERSON, person(0, "ann", 30))
        tx.commit()
    with ds.begin_mut() as tx:
        tx.update(PERSON, P_ID, person(1, "ann", 30))
        td = tx.commit()
    assert td.is_empty()
    with ds.begin_mut() as tx:
        tx.update(PERSON, P_ID, person(1, "ann", 31))
        tx.update(PERSON, P_ID, person(1, "ann", 30))  # back to the original
        td = tx.commit()
    assert td.is_empty()
    with ds.begin_mut() as tx:
        tx.update(PERSON, P_ID, person(1, "ann", 31))
        tx.update(PERSON, P_ID, person(1, "ann", 32))
        td = tx.commit()
    assert td.tables[PERSON].deletes == [person(1, "ann", 30)]
    assert td.tables[PERSON].inserts == [person(1, "ann", 32)]


def test_update_hot_path_table(tmp_path: Path) -> None:
    rt = product(("id", U32), ("bal", I64))
    with Datastore(tmp_path / "db") as d:
        d.create_table(TableSchema(1, "acct", rt, Typespace([]), 0, [IndexSchema(1, "acct_id", 1, (0,), "btree", True)]))
        with d.begin_mut() as tx:
            for i in range(10):
                tx.insert(1, encode(rt, (i, 100)))
            tx.commit()
        with d.begin_mut() as tx:
            tx.update(1, 1, encode(rt, (3, 99)))
            with pytest.raises(NoSuchRow):
                tx.update(1, 1, encode(rt, (30, 99)))
            with pytest.raises(BsatnDecodeError):
                tx.update(1, 1, encode(rt, (3, 99))[:-1])
            # The hot path's index belongs to table 1: any other table id is refused, changing nothing.
            with pytest.raises(NoSuchTable):
                tx.update(2, 1, encode(rt, (3, 98)))
            with pytest.raises(NoSuchIndex):
                tx.update(1, 2, encode(rt, (3, 98)))
            assert decoded(tx.index_scan_point(1, encode(U32, 3)), rt) == [(3, 99)]
            td = tx.commit()
        assert td.tables[1].deletes == [encode(rt, (3, 100))] and td.tables[1].inserts == [encode(rt, (3, 99))]


# -- long keys -----------------------------------------------------------------------------------

def test_update_hot_path_with_the_key_after_fixed_columns(tmp_path: Path) -> None:
    # The primary key is the middle column: the hot path takes it from a fixed offset in the row.
    rt = product(("tag", U8), ("id", U64), ("bal", I32))
    with Datastore(tmp_path / "db") as d:
        d.create_table(TableSchema(1, "acct", rt, Typespace([]), 1, [IndexSchema(1, "acct_id", 1, (1,), "btree", True)]))
        with d.begin_mut() as tx:
            for i in range(5):
                tx.insert(1, encode(rt, (i, i << 40 | 7, 100)))
            tx.commit()
        with d.begin_mut() as tx:
            tx.update(1, 1, encode(rt, (9, 3 << 40 | 7, 99)))
            assert decoded(tx.index_scan_point(1, encode(U64, 3 << 40 | 7)), rt) == [(9, 3 << 40 | 7, 99)]
            with pytest.raises(NoSuchRow):
                tx.update(1, 1, encode(rt, (9, 3 << 40, 99)))
            td = tx.commit()
        assert td.tables[1].deletes == [encode(rt, (3, 3 << 40 | 7, 100))]
        assert td.tables[1].inserts == [encode(rt, (9, 3 << 40 | 7, 99))]
        d.checkpoint(0)
        with d.begin_read() as r:
            assert sorted(decoded(r.scan(1), rt), key=lambda v: v[1])[3] == (9, 3 << 40 | 7, 99)



def test_long_unique_keys(ds: Datastore) -> None:
    base = "x" * 2000
    keys = [base + "b", base + "a", base + "c", base, "short", base[:KEY_TRUNC - 10], base + "a\x00"]
    with ds.begin_mut() as tx:
        for i, k in enumerate(keys):
            tx.insert(LONG, encode(LONG_T, (k, i)))
        with pytest.raises(UniqueAlreadyExists):
            tx.insert(LONG, encode(LONG_T, (base + "a", 99)))
        assert tx.insert(LONG, encode(LONG_T, (base + "a", 1)))[0] == encode(LONG_T, (base + "a", 1))  # set semantics
        assert tx.row_count(LONG) == len(keys)
        for i, k in enumerate(keys):
            assert decoded(tx.index_scan_point(L_K, encode(STRING, k)), LONG_T) == [(k, i)]
        assert tx.index_scan_point(L_K, encode(STRING, base + "d")) == []
        got = [r[0] for r in decoded(tx.index_scan_range(L_K, b"", 0, UNB, UNB), LONG_T)]
        assert got == sorted(keys, key=lambda s: s.encode())
        got = [r[0] for r in decoded(tx.index_scan_range(L_K, b"", 0, exc(STRING, base + "a"), inc(STRING, base + "b")), LONG_T)]
        assert got == [base + "a\x00", base + "b"]
        tx.update(LONG, L_K, encode(LONG_T, (base + "c", 42)))
        assert decoded(tx.index_scan_point(L_K, encode(STRING, base + "c")), LONG_T) == [(base + "c", 42)]
        assert tx.delete_by_index_scan_point(L_K, encode(STRING, base + "b")) == 1
        assert tx.row_count(LONG) == len(keys) - 1


def test_long_non_unique_keys(ds: Datastore) -> None:
    base = "y" * 2000
    vals = [(base + "b", 1), (base + "a", 2), (base + "b", 3), ("z", 4), (base, 5), (base + "a", 6)]
    with ds.begin_mut() as tx:
        for v in vals:
            tx.insert(LOG, encode(LOG_T, v))
        got = decoded(tx.index_scan_range(LG_S, b"", 0, UNB, UNB), LOG_T)
        assert got == sorted(vals, key=lambda v: (v[0].encode(), v[1]))
        assert decoded(tx.index_scan_point(LG_S, encode(STRING, base + "a")), LOG_T) == [(base + "a", 2), (base + "a", 6)]
        assert tx.delete_by_index_scan_point(LG_S, encode(STRING, base + "b")) == 2
        assert tx.row_count(LOG) == 4


# -- transactions, checkpoints, reopen -------------------------------------------------------------


def test_rollback_discards_everything(ds: Datastore) -> None:
    tx = ds.begin_mut()
    tx.insert(POINT, point(1, 1))
    tx.create_table(TableSchema(50, "tmp", LOG_T, Typespace([]), indexes=[IndexSchema(500, "tmp_s", 50, (0,), "btree", False)]))
    tx.insert(50, encode(LOG_T, ("a", 1)))
    tx.rollback()
    with ds.begin_mut() as tx:
        assert tx.row_count(POINT) == 0
        with pytest.raises(NoSuchTable):
            tx.row_count(50)
    assert ds.table_by_name("tmp") is None
    # The same ids can be created afterwards (the aborted DB handles are gone).
    ds.create_table(TableSchema(50, "tmp", LOG_T, Typespace([]), indexes=[IndexSchema(500, "tmp_s", 50, (0,), "btree", False)]))
    with ds.begin_mut() as tx:
        tx.insert(50, encode(LOG_T, ("a", 1)))
        assert tx.index_scan_point(500, encode(STRING, "a")) == [encode(LOG_T, ("a", 1))]


def test_one_mut_tx_at_a_time(ds: Datastore) -> None:
    tx = ds.begin_mut()
    with pytest.raises(TransactionStateError):
        ds.begin_mut()
    with pytest.raises(TransactionStateError):
        ds.checkpoint(1)
    tx.commit()
    with pytest.raises(TransactionStateError):
        tx.commit()
    ds.begin_mut().rollback()


def test_checkpoints_are_synced_to_disk(ds: Datastore) -> None:
    """LMDB commits only at checkpoints, and each must fsync its data pages before the meta page
    that points at them is written: with no-sync, a machine crash could leave a meta page
    pointing at pages that were never written, and the replica would not open."""
    assert ds._env.flags()["sync"], ds._env.flags()


def test_checkpoint_visibility_to_reader_thread(ds: Datastore) -> None:
    ds.checkpoint(0)
    with ds.begin_mut() as tx:
        tx.insert(POINT, point(1, 2))
        tx.commit()
    seen: list[int] = []

    def reader() -> None:
        with ds.begin_read() as r:
            seen.append(r.row_count(POINT))

    t = threading.Thread(target=reader)
    t.start()
    t.join()
    old = ds.begin_read()
    ds.checkpoint(7)
    t = threading.Thread(target=reader)
    t.start()
    t.join()
    assert seen == [0, 1]
    assert old.row_count(POINT) == 0  # an older snapshot stays as it was
    old.close()
    with ds.begin_read() as r:
        assert r.scan(POINT) == [point(1, 2)]
        assert r.index_scan_point(PT_XY, encode(I32, 1) + encode(I32, 2)) == [point(1, 2)]
    assert ds.applied_offset() == 7


def test_new_table_invisible_to_readers_until_checkpoint(ds: Datastore) -> None:
    ds.checkpoint(0)
    ds.create_table(TableSchema(60, "late", LOG_T, Typespace([])))
    with ds.begin_read() as r:
        with pytest.raises(NoSuchTable):
            r.row_count(60)
    ds.checkpoint(1)
    with ds.begin_read() as r:
        assert r.row_count(60) == 0 and r.table_id("late") == 60


def test_reopen_restores_everything(tmp_path: Path) -> None:
    path = tmp_path / "db"
    d = Datastore(path)
    assert d.applied_offset() == -1
    d.create_table(person_schema())
    d.create_table(long_schema())
    with d.begin_mut() as tx:
        tx.insert(PERSON, person(0, "ann", 1))
        tx.insert(PERSON, person(0, "bob", 2))
        tx.insert(LONG, encode(LONG_T, ("k" * 1000, 1)))
        tx.put_meta(b"program", b"\x00asm")
        tx.commit()
    d.checkpoint(41)
    with d.begin_mut() as tx:
        tx.insert(PERSON, person(0, "lost", 3))  # not checkpointed: gone after reopen
        tx.commit()
    d.close()
    d = Datastore(path)
    assert d.applied_offset() == 41
    assert d.tables()[PERSON] == person_schema()
    assert d.table_by_name("longk") == long_schema()
    assert d.index_by_name("person_age_idx_btree") == person_schema().indexes[2]
    assert d.get_meta(b"program") == b"\x00asm"
    with d.begin_mut() as tx:
        assert sorted(decoded(tx.scan(PERSON), PERSON_T)) == [(1, "ann", 1), (2, "bob", 2)]
        assert tx.insert(PERSON, person(0, "cid", 3))[1] == encode(U64, 3)  # sequence restored
        assert decoded(tx.index_scan_point(L_K, encode(STRING, "k" * 1000)), LONG_T) == [("k" * 1000, 1)]
        tx.commit()
    d.checkpoint(42)
    d.close()


def test_schema_changes(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        for i in range(5):
            tx.insert(LOG, encode(LOG_T, (f"s{i % 3}", i)))
        tx.commit()
    dup = IndexSchema(31, "log_s_unique", LOG, (0,), "btree", True)
    with pytest.raises(UniqueAlreadyExists):
        ds.create_index(dup)
    assert ds.index_by_name("log_s_unique") is None
    ds.create_index(IndexSchema(32, "log_n", LOG, (1,), "btree", True))
    with ds.begin_mut() as tx:
        assert decoded(tx.index_scan_point(32, encode(U32, 4)), LOG_T) == [("s1", 4)]
        with pytest.raises(UniqueAlreadyExists):
            tx.insert(LOG, encode(LOG_T, ("zz", 4)))
    with pytest.raises(SchemaConflict):
        ds.create_index(IndexSchema(33, "log_n", LOG, (1,), "btree", False))  # name taken
    with pytest.raises(SchemaConflict):
        ds.create_table(log_schema())
    ds.drop_index(LG_S)
    with ds.begin_mut() as tx:
        with pytest.raises(NoSuchIndex):
            tx.index_scan_point(LG_S, encode(STRING, "s1"))
        tx.insert(LOG, encode(LOG_T, ("new", 10)))
        assert tx.row_count(LOG) == 6
        tx.commit()
    ds.drop_table(LOG)
    assert ds.table_by_name("log") is None and ds.index_by_name("log_n") is None
    ds.create_table(log_schema())
    with ds.begin_mut() as tx:
        assert tx.row_count(LOG) == 0 and tx.scan(LOG) == []
    ds.checkpoint(3)
    path = ds._env.path()
    ds.close()
    # Reopening deletes the emptied LMDB databases of dropped indexes (i32 went with its table).
    with Datastore(path) as again:
        with again._env.begin() as txn:
            names = set(txn.cursor().iternext(keys=True, values=False))
        assert b"i32" not in names and b"i30" in names and b"t4" in names
        assert again.index_by_name("log_n") is None and again.index_by_name("log_s") is not None


def test_drop_clustering_index_reclusters(ds: Datastore) -> None:
    with ds.begin_mut() as tx:
        for i in range(4):
            tx.insert(PERSON, person(0, f"n{i}", i))
        tx.commit()
    ds.drop_index(P_ID)
    with ds.begin_mut() as tx:
        assert sorted(decoded(tx.scan(PERSON), PERSON_T)) == [(i + 1, f"n{i}", i) for i in range(4)]
        assert decoded(tx.index_scan_point(P_NAME, encode(STRING, "n2")), PERSON_T) == [(3, "n2", 2)]
        tx.insert(PERSON, person(3, "other", 9))  # id is no longer unique
        tx.insert(PERSON, person(3, "other", 9))  # set semantics through the row hash
        assert tx.row_count(PERSON) == 5
        tx.update(PERSON, P_NAME, person(3, "other", 10))
        assert decoded(tx.index_scan_point(P_AGE, encode(U8, 10)), PERSON_T) == [(3, "other", 10)]
        tx.commit()
    ds.checkpoint(1)


def test_meta(ds: Datastore) -> None:
    assert ds.get_meta(b"k") is None
    with ds.begin_mut() as tx:
        tx.put_meta(b"k", b"v")
        assert tx.get_meta(b"k") == b"v"
        assert ds.get_meta(b"k") == b"v"
        tx.commit()
    ds.put_meta(b"k2", b"w")
    ds.checkpoint(0)
    with ds.begin_read() as r:
        assert r.get_meta(b"k") == b"v" and r.get_meta(b"k2") == b"w"


# -- replay --------------------------------------------------------------------------------------


def dump(d: Datastore) -> dict[str, Any]:
    """Everything observable: rows in storage order, index orders, sequence positions."""
    out: dict[str, Any] = {"tables": d.tables(), "seq": dict(d._seq)}
    with d.begin_mut() as tx:
        for tid, schema in d.tables().items():
            out[f"rows{tid}"] = tx.scan(tid)
            for ix in schema.indexes:
                if ix.algorithm != "hash":
                    out[f"ix{ix.index_id}"] = tx.index_scan_range(ix.index_id, b"", 0, UNB, UNB)
        tx.rollback()
    return out


def random_ops(tx: MutTx, rng: random.Random, n: int) -> None:
    for _ in range(n):
        op = rng.random()
        try:
            if op < 0.35:
                tx.insert(PERSON, person(0 if rng.random() < 0.7 else rng.randrange(30), f"p{rng.randrange(40)}", rng.randrange(5)))
            elif op < 0.55:
                tx.insert(POINT, point(rng.randrange(4), rng.randrange(4), f"t{rng.randrange(3)}"))
            elif op < 0.65:
                tx.update(PERSON, P_ID, person(rng.randrange(1, 30), f"p{rng.randrange(40)}", rng.randrange(5)))
            elif op < 0.72:
                tx.update(PERSON, P_NAME, person(rng.randrange(1, 30), f"p{rng.randrange(40)}", rng.randrange(5)))
            elif op < 0.8:
                tx.delete_by_index_scan_point(PT_XY, encode(I32, rng.randrange(4)) + encode(I32, rng.randrange(4)))
            elif op < 0.86:
                tx.delete_by_index_scan_range(P_AGE, b"", 0, inc(U8, rng.randrange(5)), UNB)
            elif op < 0.93:
                rows = tx.scan(POINT)
                if rows:
                    tx.delete_row(POINT, rng.choice(rows))
            else:
                tx.insert(LONG, encode(LONG_T, ("L" * rng.choice([10, 600]) + str(rng.randrange(5)), rng.randrange(3))))
        except (UniqueAlreadyExists, NoSuchRow):
            pass


def test_apply_reproduces_state(tmp_path: Path) -> None:
    rng = random.Random(7)
    src = Datastore(tmp_path / "src")
    log: list[bytes] = []
    for s in (person_schema(), point_schema(), long_schema()):
        log.append(src.create_table(s).encode())
    for _ in range(30):
        tx = src.begin_mut()
        random_ops(tx, rng, 15)
        if rng.random() < 0.15:
            tx.rollback()
            continue
        log.append(tx.commit().encode())
    with src.begin_mut() as tx:
        tx.create_index(IndexSchema(99, "point_y", POINT, (1,), "btree", False))
        tx.insert(POINT, point(9, 9, "late"))
        tx.drop_index(PT_TAG)
        log.append(tx.commit().encode())
    dst = Datastore(tmp_path / "dst")
    for rec in log:
        dst.apply(TxData.decode(rec))
    assert dump(dst) == dump(src)
    # and after a checkpoint + reopen
    dst.checkpoint(len(log) - 1)
    dst.close()
    dst = Datastore(tmp_path / "dst")
    assert dump(dst) == dump(src)
    assert dst.applied_offset() == len(log) - 1
    dst.close()
    src.close()


# Tables whose only index is the clustering primary key: a follower replays in-place updates of
# these on the overlay (MutTx._apply_updates), everything else on the general path.
OWNED_T = product(("id", U32), ("owner", STRING), ("balance", I64))
OWNED, O_ID = 10, 10
KV_T = product(("k", STRING), ("v", U64))
KV, KV_K = 11, 11


def owned_schema() -> TableSchema:
    return TableSchema(
        table_id=OWNED, name="owned", row_type=OWNED_T, typespace=Typespace([]), primary_key=0,
        indexes=[IndexSchema(O_ID, "owned_id_idx_btree", OWNED, (0,), "btree", True)],
    )  # fmt: skip


def kv_schema() -> TableSchema:
    return TableSchema(
        table_id=KV, name="kv", row_type=KV_T, typespace=Typespace([]), primary_key=0,
        indexes=[IndexSchema(KV_K, "kv_k_idx_btree", KV, (0,), "btree", True)],
    )  # fmt: skip


def kv_key(i: int) -> str:
    return ("K" * 600 if i % 4 == 0 else "k") + str(i)  # every fourth key is past KEY_TRUNC


def test_apply_of_in_place_updates_reproduces_state(tmp_path: Path) -> None:
    """Transactions that only replace rows through the primary key (transfers) and mixed ones
    (inserts, deletes, updates together) replay to the source's state, rows and row ids, before
    and after a checkpoint; the update-only ones are replayed without touching LMDB."""
    rng = random.Random(11)
    src = Datastore(tmp_path / "src")
    log = [src.create_table(owned_schema()).encode(), src.create_table(kv_schema()).encode()]
    with src.begin_mut() as tx:
        for i in range(40):
            tx.insert(OWNED, encode(OWNED_T, (i, f"o{i}", 100)))
            tx.insert(KV, encode(KV_T, (kv_key(i), i)))
        log.append(tx.commit().encode())
    update_only = []
    for n in range(120):
        tx = src.begin_mut()
        mixed = n % 5 == 0
        for _ in range(rng.randrange(1, 4)):
            a = rng.randrange(40)
            if tx.index_scan_point(O_ID, encode(U32, a)):
                tx.update(OWNED, O_ID, encode(OWNED_T, (a, f"o{a}", rng.randrange(-50, 500))))
            k = kv_key(rng.randrange(40))
            if tx.index_scan_point(KV_K, encode(STRING, k)):
                tx.update(KV, KV_K, encode(KV_T, (k, rng.randrange(1000))))
        if mixed:
            victim = tx.index_scan_point(O_ID, encode(U32, rng.randrange(40)))
            if victim:
                tx.delete_row(OWNED, victim[0])
            try:
                tx.insert(OWNED, encode(OWNED_T, (rng.randrange(40), "new", 1)))
            except UniqueAlreadyExists:
                pass
        data = tx.commit()
        log.append(data.encode())
        update_only.append(not mixed and not data.schema_ops)
    dst = Datastore(tmp_path / "dst")
    on_overlay = 0
    for i, rec in enumerate(log):
        dst.apply(TxData.decode(rec))
        # White box: an update replayed on the fast path stays in the committed overlay (a long
        # key, or any other change, takes the general path, which writes the overlay out).
        on_overlay += i >= 3 and update_only[i - 3] and bool(dst._pending)
    assert on_overlay >= sum(update_only) // 4
    assert dump(dst) == dump(src)
    dst.checkpoint(len(log) - 1)
    dst.close()
    dst = Datastore(tmp_path / "dst")
    assert dump(dst) == dump(src)
    dst.close()
    src.close()


def test_apply_of_an_update_to_a_row_the_replica_does_not_hold_fails_and_changes_nothing(tmp_path: Path) -> None:
    """A diverged replica: the update's old row is not what it stores (or not there at all)."""
    src = Datastore(tmp_path / "src")
    dst = Datastore(tmp_path / "dst")
    for d in (src, dst):
        d.create_table(owned_schema())
        with d.begin_mut() as tx:
            tx.insert(OWNED, encode(OWNED_T, (1, "a", 100 if d is src else 99)))
            tx.commit()
    with src.begin_mut() as tx:
        tx.update(OWNED, O_ID, encode(OWNED_T, (1, "a", 50)))
        data = tx.commit()
    before = dump(dst)
    with pytest.raises(DatastoreError, match="row to delete is not in table 'owned'"):
        dst.apply(TxData.decode(data.encode()))
    assert dump(dst) == before
    src.close()
    dst.close()


# -- randomised index scans vs a brute-force model -------------------------------------------------

MODEL_T = product(("a", U8), ("b", I16), ("s", STRING))


def model_key(v: tuple[int, int, str], cols: tuple[int, ...]) -> tuple[Any, ...]:
    return tuple(v[c].encode() if isinstance(v[c], str) else v[c] for c in cols)


col_ty = {0: U8, 1: I16, 2: STRING}
col_val = {0: st.integers(0, 4), 1: st.integers(-3, 3), 2: st.sampled_from(["", "a", "a\x00", "ab", "b", "x" * 700, "x" * 700 + "a"])}


@st.composite
def bound(draw: Any, col: int) -> tuple[int, Any]:
    tag = draw(st.sampled_from([0, 1, 2]))
    return tag, (draw(col_val[col]) if tag < 2 else None)


def enc_bound(b: tuple[int, Any], col: int) -> bytes:
    return bytes([b[0]]) + (encode(col_ty[col], b[1]) if b[0] < 2 else b"")


def in_bounds(x: Any, lo: tuple[int, Any], hi: tuple[int, Any]) -> bool:
    conv = lambda v: v.encode() if isinstance(v, str) else v  # noqa: E731
    if lo[0] == 0 and not x >= conv(lo[1]):
        return False
    if lo[0] == 1 and not x > conv(lo[1]):
        return False
    if hi[0] == 0 and not x <= conv(hi[1]):
        return False
    if hi[0] == 1 and not x < conv(hi[1]):
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(col_val[0], col_val[1], col_val[2]), max_size=40),
    deletes=st.lists(st.integers(0, 39), max_size=10),
    data=st.data(),
)
def test_index_scans_match_model(rows: list[tuple[int, int, str]], deletes: list[int], data: Any) -> None:
    indexes = {1: (0, 1, 2), 2: (2,), 3: (1, 0)}
    with tempfile.TemporaryDirectory() as d, Datastore(d) as ds:
        ds.create_table(
            TableSchema(
                1, "m", MODEL_T, Typespace([]), indexes=[IndexSchema(i, f"m{i}", 1, c, "btree", False) for i, c in indexes.items()]
            )
        )
        with ds.begin_mut() as tx:
            live: list[tuple[int, int, str]] = []  # insertion (= rid) order
            for r in rows:
                tx.insert(1, encode(MODEL_T, r))
                if r not in live:
                    live.append(r)
            for i in deletes:
                if i < len(rows) and rows[i] in live:
                    assert tx.delete_row(1, encode(MODEL_T, rows[i]))
                    live.remove(rows[i])
            for _ in range(12):
                iid = data.draw(st.sampled_from(sorted(indexes)))
                cols = indexes[iid]
                p = data.draw(st.integers(0, len(cols) - 1))
                prefix = tuple(data.draw(col_val[c]) for c in cols[:p])
                lo, hi = data.draw(bound(cols[p])), data.draw(bound(cols[p]))
                pre = b"".join(encode(col_ty[c], v) for c, v in zip(cols[:p], prefix, strict=True))
                got = decoded(tx.index_scan_range(iid, pre, p, enc_bound(lo, cols[p]), enc_bound(hi, cols[p])), MODEL_T)
                want = [
                    r
                    for r in live
                    if model_key(r, cols[:p]) == model_key(prefix, tuple(range(p))) and in_bounds(model_key(r, (cols[p],))[0], lo, hi)
                ]
                want.sort(key=lambda r: model_key(r, cols))  # stable: equal keys stay in rid order
                assert got == want, (iid, p, prefix, lo, hi)
                point_vals = data.draw(st.tuples(*[col_val[c] for c in cols]))
                pk = b"".join(encode(col_ty[c], v) for c, v in zip(cols, point_vals, strict=True))
                got = decoded(tx.index_scan_point(iid, pk), MODEL_T)
                assert got == [r for r in live if model_key(r, cols) == model_key(point_vals, tuple(range(len(cols))))]


def test_errors_are_datastore_errors() -> None:
    for cls, errno in [
        (BsatnDecodeError, 3),
        (NoSuchTable, 4),
        (NoSuchIndex, 5),
        (WrongIndexAlgo, 10),
        (UniqueAlreadyExists, 12),
        (IndexNotUnique, 14),
        (NoSuchRow, 15),
    ]:
        assert issubclass(cls, DatastoreError) and cls.errno == errno
    assert SchemaConflict.errno == 0 and TransactionStateError.errno == 0


def test_too_many_tables_is_a_clear_error(tmp_path: Path) -> None:
    with Datastore(tmp_path / "db", max_dbs=4) as d:
        d.create_table(TableSchema(1, "a", LOG_T, Typespace([])))
        d.create_table(TableSchema(2, "b", LOG_T, Typespace([])))
        d.create_table(TableSchema(3, "c", LOG_T, Typespace([])))
        with pytest.raises(SchemaConflict, match="max_dbs"):
            d.create_table(TableSchema(4, "d", LOG_T, Typespace([])))
        assert d.table_by_name("d") is None
        with d.begin_mut() as tx:
            tx.insert(3, encode(LOG_T, ("x", 1)))
            tx.commit()


def test_sequence_after_variable_length_column(tmp_path: Path) -> None:
    rt = product(("name", STRING), ("id", U32), ("n", I64))
    with Datastore(tmp_path / "db") as d:
        d.create_table(
            TableSchema(
                1,
                "t",
                rt,
                Typespace([]),
                primary_key=1,
                indexes=[IndexSchema(1, "t_id", 1, (1,), "btree", True)],
                sequences=[SequenceSchema(1, "t_id_seq", 1, 1, 7, 1, 100, 3)],
            )
        )
        with d.begin_mut() as tx:
            assert tx.insert(1, encode(rt, ("héllo", 0, -1))) == (encode(rt, ("héllo", 7, -1)), encode(U32, 7))
            assert tx.insert(1, encode(rt, ("", 0, 5))) == (encode(rt, ("", 10, 5)), encode(U32, 10))
            # update regenerates a zero sequence column before taking the key (then finds no row)
            with pytest.raises(NoSuchRow):
                tx.update(1, 1, encode(rt, ("x", 0, 0)))
            # A failed operation has no effect: the value 13 it generated is handed out again.
            assert tx.insert(1, encode(rt, ("z", 0, 0)))[1] == encode(U32, 13)


# -- the overlay (lazy child transaction) of MutTx -----------------------------------------------

ACCT_T = product(("id", U32), ("balance", I64))
ACCT = 7
ACCT_PK = 70


def acct_store(tmp_path: Path) -> Datastore:
    ds = Datastore(tmp_path / "acct")
    ds.create_table(
        TableSchema(
            table_id=ACCT, name="acct", row_type=ACCT_T, typespace=Typespace([ACCT_T]), primary_key=0,
            indexes=[IndexSchema(ACCT_PK, "acct_id_idx_btree", ACCT, (0,), "btree", True)],
            sequences=[], is_public=True, schedule=None,
        )
    )
    commit_one(ds, lambda tx: [tx.insert(ACCT, encode(ACCT_T, (i, 100))) for i in range(3)])
    return ds


def balance(tx: Any, i: int) -> int | None:
    rows = tx.index_scan_point(ACCT_PK, encode(U32, i))
    return None if not rows else decoded(rows, ACCT_T)[0][1]


def test_overlay_reads_its_own_writes_and_rolls_back(tmp_path: Path) -> None:
    ds = acct_store(tmp_path)
    tx = ds.begin_mut()
    tx.update(ACCT, ACCT_PK, encode(ACCT_T, (1, 50)))
    tx.update(ACCT, ACCT_PK, encode(ACCT_T, (1, 40)))
    assert balance(tx, 1) == 40
    assert tx._child is None, "primary-key updates should not need an LMDB child transaction"
    tx.rollback()
    tx = ds.begin_mut()
    assert balance(tx, 1) == 100
    tx.rollback()


def test_overlay_commit_is_visible_and_logged(tmp_path: Path) -> None:
    ds = acct_store(tmp_path)
    tx = ds.begin_mut()
    assert balance(tx, 2) == 100  # read first (cached), then write the same key
    tx.update(ACCT, ACCT_PK, encode(ACCT_T, (2, 7)))
    data = tx.commit()
    assert data.tables[ACCT].inserts == [encode(ACCT_T, (2, 7))]
    assert data.tables[ACCT].deletes == [encode(ACCT_T, (2, 100))]
    ds.checkpoint(0)
    with ds.begin_read() as r:
        assert balance(r, 2) == 7


def test_overlay_materialises_for_general_operations(tmp_path: Path) -> None:
    ds = acct_store(tmp_path)
    tx = ds.begin_mut()
    tx.update(ACCT, ACCT_PK, encode(ACCT_T, (0, 1)))
    # A table scan needs the real child transaction: the overlay's write must be in it.
    assert sorted(decoded(tx.scan(ACCT), ACCT_T)) == [(0, 1), (1, 100), (2, 100)]
    tx.update(ACCT, ACCT_PK, encode(ACCT_T, (0, 2)))
    assert balance(tx, 0) == 2
    tx.rollback()
    tx = ds.begin_mut()
    assert sorted(decoded(tx.scan(ACCT), ACCT_T)) == [(0, 100), (1, 100), (2, 100)]
    tx.update(ACCT, ACCT_PK, encode(ACCT_T, (0, 3)))
    assert tx.row_count(ACCT) == 3
    tx.commit()
    tx = ds.begin_mut()
    assert balance(tx, 0) == 3
    tx.rollback()


def test_overlay_update_of_missing_row(tmp_path: Path) -> None:
    ds = acct_store(tmp_path)
    tx = ds.begin_mut()
    assert balance(tx, 9) is None
    with pytest.raises(NoSuchRow):
        tx.update(ACCT, ACCT_PK, encode(ACCT_T, (9, 1)))
    tx.rollback()


def test_committed_rows_not_yet_in_lmdb_are_seen_by_every_later_reader(tmp_path: Path) -> None:
    """Committed hot-path updates wait in the datastore's committed overlay before LMDB is written
    (hostnode/datastore.py, MutTx): every later transaction sees them — on the hot path, in a
    scan (which writes them into LMDB first), at a checkpoint — and a rollback keeps them."""
    ds = acct_store(tmp_path)
    ds.checkpoint(0)
    commit_one(ds, lambda tx: tx.update(ACCT, ACCT_PK, encode(ACCT_T, (0, 10))))
    commit_one(ds, lambda tx: tx.update(ACCT, ACCT_PK, encode(ACCT_T, (1, 11))))
    assert ds._pending, "a hot-path commit should leave its rows in the committed overlay"
    tx = ds.begin_mut()
    assert (balance(tx, 0), balance(tx, 1), balance(tx, 2)) == (10, 11, 100)
    tx.update(ACCT, ACCT_PK, encode(ACCT_T, (0, 99)))
    tx.rollback()  # drops its own write, not the committed ones
    tx = ds.begin_mut()
    assert balance(tx, 0) == 10
    assert sorted(decoded(tx.scan(ACCT), ACCT_T)) == [(0, 10), (1, 11), (2, 100)]
    assert not ds._pending  # the scan needed LMDB, so the rows were written into it first
    tx.update(ACCT, ACCT_PK, encode(ACCT_T, (2, 12)))
    tx.commit()
    commit_one(ds, lambda tx: tx.update(ACCT, ACCT_PK, encode(ACCT_T, (1, 13))))
    with ds.begin_read() as r:  # readers see checkpoints only
        assert balance(r, 1) == 100
    ds.checkpoint(5)
    with ds.begin_read() as r:
        assert [balance(r, i) for i in range(3)] == [10, 13, 12]


def test_the_committed_overlay_is_bounded_and_dropped_with_an_unsaved_outer_transaction(tmp_path: Path) -> None:
    from hostnode.datastore import PENDING_ROWS

    ds = acct_store(tmp_path)
    ds.checkpoint(0)
    for i in range(3 * PENDING_ROWS):
        commit_one(ds, lambda tx, i=i: tx.update(ACCT, ACCT_PK, encode(ACCT_T, (i % 3, i))))
        assert len(ds._pending) < PENDING_ROWS
    ds.close()  # no checkpoint: what was committed since is for the commit log to replay
    ds = Datastore(tmp_path / "acct")
    tx = ds.begin_mut()
    assert [balance(tx, i) for i in range(3)] == [100, 100, 100]
    tx.rollback()


def test_closed_read_transactions_free_their_reader_slots_without_gc(tmp_path: Path) -> None:
    import gc

    from hostnode.datastore import DatastoreConfig

    ds = Datastore(tmp_path / "readers", DatastoreConfig(max_readers=4))
    kept: list[Any] = []
    gc.disable()
    try:
        for _ in range(50):
            tx = ds.begin_read()
            tx.close()
            cycle: list[Any] = [tx]
            cycle.append(cycle)  # only a garbage collection would free this ReadTx
            kept.append(cycle)
    finally:
        gc.enable()
        ds.close()


def test_point_scan_rows_gives_a_single_row_as_bytes(tmp_path: Path) -> None:
    # What the module host reads: one row as the row itself, none as an empty list; every
    # other path (here: after the child transaction exists) as index_scan_point's list.
    ds = acct_store(tmp_path)
    tx = ds.begin_mut()
    assert tx.index_scan_point_rows(ACCT_PK, encode(U32, 1)) == encode(ACCT_T, (1, 100))
    assert tx.index_scan_point_rows(ACCT_PK, encode(U32, 9)) == []
    tx.update(ACCT, ACCT_PK, encode(ACCT_T, (1, 5)))
    assert tx.index_scan_point_rows(ACCT_PK, encode(U32, 1)) == encode(ACCT_T, (1, 5))
    tx.scan(ACCT)  # materialises the child transaction
    assert tx.index_scan_point_rows(ACCT_PK, encode(U32, 1)) == [encode(ACCT_T, (1, 5))]
    with pytest.raises(NoSuchIndex):
        tx.index_scan_point_rows(999, encode(U32, 1))
    tx.rollback()
