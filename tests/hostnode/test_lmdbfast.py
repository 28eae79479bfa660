"""The datastore's GIL-keeping LMDB point calls (``hostnode/_lmdbfast.c``, built by ``make native``):
they accept the installed py-lmdb only after checking its objects' layout, then read and write
exactly what py-lmdb's own ``get`` and ``put`` do, and leave every unusual case — an invalid
transaction, a database of another environment, an LMDB error — to py-lmdb, which raises as it
always has."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostnode import datastore

fast: Any = pytest.importorskip("hostnode._lmdbfast", reason="hostnode._lmdbfast is not built here (make native)")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Any]:
    e = lmdb.open(str(tmp_path / "env"), map_size=1 << 24, max_dbs=4)
    yield e
    e.close()


def test_a_datastore_turns_the_fast_path_on_after_checking_py_lmdb(tmp_path: Path) -> None:
    ds = datastore.Datastore(tmp_path / "ds", map_size=1 << 24)
    ds.begin_mut()
    assert datastore.fast_lmdb_status() == "on"


def test_check_accepts_a_top_level_write_transaction_and_names_what_it_refuses(env: Any) -> None:
    db = env.open_db(b"t")
    with env.begin(write=True) as txn:
        assert fast.check(env, txn, db) == ""
        with env.begin(write=True, parent=txn) as child:
            assert "not where expected" in fast.check(env, child, db)
    other = lmdb.open(str(Path(env.path()).parent / "other"), map_size=1 << 20, max_dbs=2)
    try:
        with other.begin(write=True) as txn:
            assert "does not point at its environment" in fast.check(env, txn, db)
    finally:
        other.close()
    with env.begin(write=True) as txn:
        assert "smaller than expected" in fast.check(object(), txn, db)
        assert "the Transaction object has 16 bytes" in fast.check(env, object(), db)
        assert "the _Database object has 16 bytes" in fast.check(env, txn, object())


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.binary(min_size=1, max_size=40), st.binary(max_size=300), st.booleans()),
        max_size=60,
    )
)
def test_gets_and_puts_match_py_lmdbs_own(tmp_path_factory: pytest.TempPathFactory, ops: list[Any]) -> None:
    path = tmp_path_factory.mktemp("lmdbfast")
    envs = [lmdb.open(str(path / name), map_size=1 << 24, max_dbs=4) for name in ("fast", "lmdb")]
    try:
        dbs = [(e.open_db(b"a"), e.open_db(b"b")) for e in envs]
        with envs[0].begin(write=True) as t0, envs[1].begin(write=True) as t1:
            assert fast.check(envs[0], t0, dbs[0][0]) == ""
            for is_put, key, value, second in ops:
                d0, d1 = dbs[0][second], dbs[1][second]
                if is_put:
                    assert fast.put(t0, key, value, d0) is True
                    t1.put(key, value, True, True, False, d1)
                assert fast.get(t0, key, d0) == t1.get(key, None, d1)
                assert fast.get(t0, key + b"\x00", d0) == t1.get(key + b"\x00", None, d1)
            for db0, db1 in zip(dbs[0], dbs[1], strict=True):
                assert list(t0.cursor(db0).iternext()) == list(t1.cursor(db1).iternext())
    finally:
        for e in envs:
            e.close()


def test_what_the_fast_path_does_not_serve_py_lmdb_answers_or_raises_as_ever(env: Any, tmp_path: Path) -> None:
    db = env.open_db(b"t")
    with env.begin(write=True) as txn:
        assert fast.check(env, txn, db) == ""
        # A key LMDB refuses: py-lmdb's error, as from py-lmdb.
        with pytest.raises(lmdb.BadValsizeError):
            fast.put(txn, b"k" * 600, b"v", db)
        assert fast.get(txn, b"k" * 600, db) is None is txn.get(b"k" * 600, None, db)  # py-lmdb's answer too
        # An empty key and a value that is not bytes go to py-lmdb.
        with pytest.raises(lmdb.BadValsizeError):
            fast.get(txn, b"", db)
        assert fast.put(txn, b"m", bytearray(b"view"), db) is True
        assert fast.get(txn, b"m", db) == b"view"
        # A database of another environment: py-lmdb's refusal.
        other = lmdb.open(str(tmp_path / "other"), map_size=1 << 20, max_dbs=2)
        try:
            with pytest.raises(lmdb.Error):
                fast.get(txn, b"m", other.open_db(b"x"))
        finally:
            other.close()
    # The transaction is over: py-lmdb says so.
    with pytest.raises(lmdb.Error):
        fast.get(txn, b"m", db)
    with pytest.raises(lmdb.Error):
        fast.put(txn, b"m", b"again", db)
    with env.begin() as txn:
        assert txn.get(b"m", None, db) == b"view"


def test_a_full_map_fails_the_put_with_py_lmdbs_error_and_keeps_what_was_committed(tmp_path: Path) -> None:
    e = lmdb.open(str(tmp_path / "small"), map_size=1 << 16, max_dbs=2)
    try:
        db = e.open_db(b"t")
        with e.begin(write=True) as txn:
            fast.check(e, txn, db)
            fast.put(txn, b"kept", b"1", db)
        with pytest.raises(lmdb.Error), e.begin(write=True) as txn:
            for i in range(1000):
                fast.put(txn, b"%06d" % i, b"x" * 400, db)
        with e.begin() as txn:
            assert txn.get(b"kept", None, db) == b"1" and txn.get(b"000000", None, db) is None
    finally:
        e.close()


def test_orrery_lmdb_fast_0_keeps_py_lmdbs_calls(tmp_path: Path) -> None:
    script = (
        "import sys; from hostnode import datastore; "
        "ds = datastore.Datastore(sys.argv[1], map_size=1 << 24); ds.begin_mut(); "
        "print(datastore.fast_lmdb_status())"
    )
    env = {**os.environ, "ORRERY_LMDB_FAST": "0"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "ds")], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "off: ORRERY_LMDB_FAST=0"
