"""End-to-end tests of the engine (hostnode/database.py) with real LMDB files and real wasmtime.

They drive the committed C modules (modules/*/README.md documents every reducer) and, when
present, the official Rust builds, through ``Database``: reducers, rollback, traps, fuel, module
logs, sequences, schedules, lifecycle reducers, JWTs, errors, restart and recovery.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from hypothesis import given, settings

from hostnode.database import (
    Database,
    DatabaseClosed,
    DatabaseError,
    InitFailed,
    InvalidArguments,
    LifecycleReducerCall,
    NoSuchReducer,
    Status,
)
from hostnode.moduledef import (
    Lifecycle,
    ModuleDefError,
    RawModuleDefV9,
    RawReducerDefV9,
    encode_raw_module_def,
)
from hostnode.txrecord import TxRecord
from hostnode.wasm_host import FATAL_ERROR_MESSAGE, ModuleLoadError
from sats.identity import Identity
from sats.types import Ref, SumValue, Typespace, product
from tests.hostnode.conftest import (
    ALICE,
    BOB,
    CAROL,
    DB_IDENTITY,
    OWNER,
    DbFactory,
    call,
    create_db,
    encode_args,
    kv,
    log_records,
    module_wasm,
    poll_schedules,
    rows,
)
from tests.modules_harness import official_module
from tests.sats.strategies import values, values_equal

NONE = SumValue(1, ())


def some(v: Any) -> SumValue:
    """``Option::Some(v)``."""
    return SumValue(0, v)


def now_micros() -> int:
    return time.time_ns() // 1000


# ----------------------------------------------------------------------------- quickstart-chat


def _chat_flow(db: Database) -> None:
    """module README / the Rust quickstart: connect, name, message, the three errors, disconnect."""
    conn = 0xA11CE
    assert db.client_connected(ALICE, conn).committed
    assert rows(db, "user") == [(ALICE.to_sats(), NONE, True)]

    ok = call(db, "set_name", "Alice", caller=ALICE, connection_id=conn)
    assert ok.status is Status.COMMITTED and ok.message == "" and ok.offset is not None
    assert rows(db, "user") == [(ALICE.to_sats(), some("Alice"), True)]

    sent_at = now_micros()
    sent = call(db, "send_message", "hi", caller=ALICE, connection_id=conn, timestamp_micros=sent_at)
    assert sent.committed and sent.offset == ok.offset + 1
    assert rows(db, "message") == [(ALICE.to_sats(), (sent_at,), "hi")]

    failures = [
        (call(db, "set_name", "", caller=ALICE), "Names must not be empty"),
        (call(db, "send_message", "", caller=ALICE), "Messages must not be empty"),
        (call(db, "set_name", "Bob", caller=BOB), "Cannot set name for unknown user"),
    ]
    for outcome, message in failures:
        assert (outcome.status, outcome.message, outcome.offset) == (Status.FAILED, message, None)
    # Failed calls changed nothing.
    assert rows(db, "user") == [(ALICE.to_sats(), some("Alice"), True)]
    assert len(rows(db, "message")) == 1

    out = db.client_disconnected(ALICE, conn)
    assert out is not None and out.committed
    assert rows(db, "user") == [(ALICE.to_sats(), some("Alice"), False)]

    # The host logs reducer errors at Error level (module-abi.md §3.10).
    errors = [(r["function"], r["message"]) for r in log_records(db) if r["level"] == "Error"]
    assert errors == [
        ("set_name", "Names must not be empty"),
        ("send_message", "Messages must not be empty"),
        ("set_name", "Cannot set name for unknown user"),
    ]


def test_quickstart_chat_flow(make_db: DbFactory) -> None:
    db = make_db("quickstart-chat")
    _chat_flow(db)
    infos = [r for r in log_records(db) if r["level"] == "Info"]
    assert [r["message"] for r in infos] == [
        f"User {ALICE.to_hex()} sets name to Alice",
        f"User {ALICE.to_hex()}: hi",
    ]
    assert [r["function"] for r in infos] == ["set_name", "send_message"]
    assert all(r["target"] == "quickstart_chat_module" and r["filename"].endswith(".c") for r in infos)
    assert all(isinstance(r["line_number"], int) and isinstance(r["ts"], int) for r in infos)


def test_quickstart_chat_reconnect_keeps_name(make_db: DbFactory) -> None:
    db = make_db("quickstart-chat")
    assert db.client_connected(BOB, 7).committed
    assert call(db, "set_name", "Bob", caller=BOB, connection_id=7).committed
    assert db.client_disconnected(BOB, 7) is not None
    assert db.client_disconnected(BOB, 7) is None  # the client is gone: nothing runs
    assert db.client_connected(BOB, 8).committed
    assert rows(db, "user") == [(BOB.to_sats(), some("Bob"), True)]
    assert not [r for r in log_records(db) if r["level"] == "Warn"]


# ----------------------------------------------------------------------------- self-checks

SELF_CHECKS: list[tuple[str, tuple[Any, ...]]] = [
    ("check_errnos", ()),
    ("check_range_scans", ()),
    ("check_autoinc", ()),
    ("check_iter_buffer_too_small", ()),
    ("check_sources", (bytes(i % 251 for i in range(1000)),)),
    ("check_sources", (b"",)),
    ("check_sources", (bytes(i % 251 for i in range(70_000)),)),
    ("check_update", ()),
    ("check_deletes", ()),
    ("check_preinit", ()),
    ("check_schedule_too_long", ()),
]


@pytest.mark.parametrize(
    ("reducer", "args"), SELF_CHECKS, ids=[f"{n}-{len(a[0]) if a else ''}" for n, a in SELF_CHECKS]
)
def test_module_test_self_check(make_db: DbFactory, reducer: str, args: tuple[Any, ...]) -> None:
    db = make_db("module-test")
    outcome = call(db, reducer, *args)
    assert (outcome.status, outcome.message) == (Status.COMMITTED, "")
    assert outcome.energy_used > 0


def test_self_check_side_effects(make_db: DbFactory) -> None:
    db = make_db("module-test")
    assert call(db, "check_range_scans").committed
    ranged = rows(db, "ranged")
    assert len(ranged) == 35
    assert not [r for r in ranged if r[1] == 4 and r[2] <= 4] and not [r for r in ranged if r[1] == 1]
    assert call(db, "check_schedule_too_long").committed
    assert rows(db, "oneshot") == []
    assert db.next_schedule_micros() is None
    # Several self-checks in a row on one instance keep passing (instance state is reused).
    for reducer in ("check_errnos", "check_update", "check_deletes", "check_iter_buffer_too_small"):
        assert call(db, reducer).committed, reducer


# ----------------------------------------------------------------------------- every type

F32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
F32_MIN_SUBNORMAL = struct.unpack("<f", b"\x01\x00\x00\x00")[0]


def _every_type_max(row_id: int) -> tuple[Any, ...]:
    return (
        row_id, True, 127, 255, 32767, 65535, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1,
        2**127 - 1, 2**128 - 1, 2**255 - 1, 2**256 - 1, F32_MAX, sys.float_info.max,
        "a\x00b€\U0001f600" * 2000, b"\x00\xff" * 3000, [-(2**31), 2**31 - 1, 0],
        ["", "\x00", "é", "x" * 300], (2**31 - 1, -(2**31)), [(0, 0), (1, -1), (-(2**31), 2**31 - 1)],
        SumValue(1, (5, -5)), SumValue(2, ()), some(-(2**31)), (2**256 - 1,), (2**128 - 1,),
        (2**63 - 1,), (2**63 - 1,), SumValue(0, (2**63 - 1,)),
    )  # fmt: skip


def _every_type_min(row_id: int) -> tuple[Any, ...]:
    return (
        row_id, False, -128, 0, -32768, 0, -(2**31), 0, -(2**63), 0, -(2**127), 0, -(2**255), 0,
        -0.0, -0.0, "", b"", [], [], (0, 0), [], SumValue(2, ()), SumValue(0, ()), NONE, (0,), (0,),
        (-(2**63),), (-(2**63),), SumValue(1, (-(2**63),)),
    )  # fmt: skip


def _every_type_odd(row_id: int) -> tuple[Any, ...]:
    return (
        row_id, True, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, math.nan, math.inf, "\x00", b"\x00",
        [7], ["\x00\x00"], (-1, 1), [(3, 4)], SumValue(0, 2**32 - 1), SumValue(1, ()), some(0),
        (DB_IDENTITY.value,), (0x0102030405060708090A0B0C0D0E0F10,), (0,), (-1,), SumValue(1, (0,)),
    )  # fmt: skip


def _every_type_tiny(row_id: int) -> tuple[Any, ...]:
    return (
        row_id, False, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, F32_MIN_SUBNORMAL, -math.inf, "€", b"",
        [], [""], (0, 0), [], SumValue(0, 0), SumValue(0, ()), NONE, (1,), (1,), (1,), (1,),
        SumValue(0, (-(2**63),)),
    )  # fmt: skip


def _stored_every_type(db: Database) -> dict[int, bytes]:
    db.checkpoint()
    tid = db.table_id("every_type")
    assert tid is not None
    with db.read() as tx:
        raw = tx.scan(tid)
    return {int.from_bytes(r[:4], "little"): r for r in raw}


def _assert_roundtrip(db: Database, row: tuple[Any, ...]) -> None:
    args = encode_args(db, "every_type_roundtrip", row)
    outcome = db.call_reducer("every_type_roundtrip", args, caller=ALICE)
    assert (outcome.status, outcome.message) == (Status.COMMITTED, ""), row
    assert _stored_every_type(db)[row[0]] == args  # the stored row is the argument, byte for byte
    (decoded,) = [r for r in rows(db, "every_type") if r[0] == row[0]]
    assert values_equal(decoded, row), (decoded, row)


@pytest.mark.parametrize("build", [_every_type_max, _every_type_min, _every_type_odd, _every_type_tiny])
def test_every_type_roundtrip_extremes(make_db: DbFactory, build: Any) -> None:
    db = make_db("module-test")
    _assert_roundtrip(db, build(1))
    _assert_roundtrip(db, build(2**32 - 1))
    # Inserting an identical row again is a no-op; another row with the same id violates the pk.
    same = build(1)
    assert call(db, "insert_every_type", same).committed
    dup = call(db, "insert_every_type", (1, not same[1], *same[2:]))
    assert (dup.status, dup.message) == (Status.FAILED, "insert every_type failed: errno 12")
    assert len(rows(db, "every_type")) == 2
    assert _stored_every_type(db)[1] == encode_args(db, "insert_every_type", same)


def test_every_type_roundtrip_generated(make_db: DbFactory) -> None:
    db = make_db("module-test")
    assert db.moduledef is not None
    typespace = db.moduledef.typespace
    ids = itertools.count(1)

    @settings(max_examples=25, deadline=None, database=None)
    @given(values(Ref(3), typespace))
    def check(row: tuple[Any, ...]) -> None:
        _assert_roundtrip(db, (next(ids), *row[1:]))

    check()
    assert len(rows(db, "every_type")) == next(ids) - 1


# ----------------------------------------------------------------------------- rollback, traps


def test_failed_reducer_rolls_back(make_db: DbFactory) -> None:
    db = make_db("module-test")
    offset = db.last_offset
    out = call(db, "insert_then_fail", "k1")
    assert (out.status, out.message, out.offset) == (Status.FAILED, "insert_then_fail: rolled back", None)
    assert "k1" not in kv(db)
    assert db.last_offset == offset  # nothing was logged


def test_trap_rolls_back_and_discards_instance(make_db: DbFactory) -> None:
    db = make_db("module-test")
    offset = db.last_offset
    out = call(db, "insert_then_trap", "k2")
    assert (out.status, out.message, out.offset) == (Status.FAILED, FATAL_ERROR_MESSAGE, None)
    assert "k2" not in kv(db)
    assert db.last_offset == offset
    # The next call gets a fresh instance: preinit ran again, in order.
    assert call(db, "check_preinit").committed
    assert call(db, "set_kv", "after", "trap").committed
    assert kv(db) == {"after": "trap"}
    errors = [r for r in log_records(db, "insert_then_trap") if r["level"] == "Error"]
    assert len(errors) == 1 and "trapped" in errors[0]["message"]


@pytest.mark.parametrize("code", [2, -1, 255])
def test_unknown_return_code_is_fatal(make_db: DbFactory, code: int) -> None:
    db = make_db("module-test")
    out = call(db, "return_code", code)
    assert (out.status, out.message, out.offset) == (Status.FAILED, FATAL_ERROR_MESSAGE, None)
    assert call(db, "return_code", 0).committed


def test_fail_with_message_is_logged(make_db: DbFactory) -> None:
    db = make_db("module-test")
    message = "custom failure: ünïcode \x00 ok"
    out = call(db, "fail_with", message)
    assert (out.status, out.message) == (Status.FAILED, message)
    errors = [r for r in log_records(db, "fail_with") if r["level"] == "Error"]
    assert [(r["message"], r["target"], r["filename"]) for r in errors] == [
        (message, "__spacetimedb__", "__spacetimedb__")
    ]


def test_big_rows_grow_guest_memory(make_db: DbFactory) -> None:
    db = make_db("module-test")
    for size in (3_000_000, 10, 5_000_000):
        out = call(db, "big_row", "huge", size)
        assert out.committed, out.message
        assert kv(db) == {"huge": "x" * size}
    assert call(db, "check_preinit").committed  # same instance throughout


# ----------------------------------------------------------------------------- fuel


def test_infinite_loop_runs_out_of_energy(make_db: DbFactory) -> None:
    budget = 10**8
    db = make_db("module-test", fuel_budget=budget)
    out = call(db, "infinite_loop")
    # Stopped by the fuel budget (fuel counts instructions, so this holds on any machine).
    assert (out.status, out.energy_used, out.offset) == (Status.OUT_OF_ENERGY, budget, None)
    # The database keeps serving on a fresh instance.
    ok = call(db, "set_kv", "still", "alive")
    assert ok.committed and 0 < ok.energy_used < budget
    assert kv(db) == {"still": "alive"}
    assert call(db, "check_preinit").committed
    errors = [r for r in log_records(db, "infinite_loop") if r["level"] == "Error"]
    assert len(errors) == 1 and "energy" in errors[0]["message"]


def test_a_call_past_its_time_budget_is_stopped_and_rolled_back(make_db: DbFactory) -> None:
    # Fuel enough for hours: only the time budget can end the loop.
    db = make_db("module-test", fuel_budget=10**15, time_budget_s=0.3)
    out = call(db, "infinite_loop")
    message = "reducer `infinite_loop` was stopped: it ran past its time budget of 300ms (DatabaseConfig.time_budget_s)"
    assert (out.status, out.message, out.offset) == (Status.FAILED, message, None)
    assert out.energy_used > 0 and out.duration_micros >= 300_000
    # The database keeps serving on a fresh instance, and the log says what stopped the call.
    assert call(db, "set_kv", "still", "alive").committed
    assert kv(db) == {"still": "alive"}
    assert call(db, "check_preinit").committed
    errors = [r for r in log_records(db, "infinite_loop") if r["level"] == "Error"]
    assert [e["message"] for e in errors] == [message]


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to leave one free"
)
def test_a_long_call_leaves_one_cpu_to_everything_else(make_db: DbFactory) -> None:
    db = make_db("module-test", fuel_budget=10**15, time_budget_s=1.0)
    everything = os.sched_getaffinity(0)
    me = threading.get_native_id()
    seen: list[set[int]] = []
    done = threading.Event()

    def watch() -> None:  # what the calling thread may run on, while the call runs
        while not done.is_set():
            seen.append(os.sched_getaffinity(me))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = call(db, "infinite_loop")
    finally:
        done.set()
        watcher.join()
    assert out.status is Status.FAILED and "time budget" in out.message
    assert everything - {min(everything)} in seen  # off the lowest CPU while it ran long
    assert os.sched_getaffinity(0) == everything  # and given every CPU back when it ended
    assert call(db, "set_kv", "short", "calls").committed


# ----------------------------------------------------------------------------- logs


def test_log_levels(make_db: DbFactory) -> None:
    db = make_db("module-test")
    assert call(db, "log_levels").committed
    records = log_records(db, "log_levels")
    by_message = {r["message"]: r for r in records}
    for level in ("error", "warn", "info", "debug", "trace"):
        r = by_message[f"log level {level}"]
        assert r["level"] == level.capitalize()
        assert r["target"] == "module_test"
        assert r["filename"].endswith("module-test.c")
        assert isinstance(r["line_number"], int) and r["line_number"] > 0
    assert by_message["log level 42"]["level"] == "Debug"
    for message in ("log without location", "bad \ufffd utf8"):
        r = by_message[message]
        assert r["level"] == "Info"
        assert set(r) == {"level", "ts", "function", "message"}, r
    timing = [r for r in records if r["message"].startswith('Timing span "module-test timer": ')]
    assert len(timing) == 1
    assert timing[0]["level"] == "Info" and "target" not in timing[0] and "filename" not in timing[0]
    assert timing[0]["message"][-1] == "s"  # Rust Debug of a Duration: 1.2µs / 3.4ms / 1s
    assert [r["message"] for r in records] == [
        "log level error",
        "log level warn",
        "log level info",
        "log level debug",
        "log level trace",
        "log level 42",
        "log without location",
        "bad \ufffd utf8",
        timing[0]["message"],
    ]
    assert all(isinstance(r["ts"], int) for r in records)


def test_panic_trap_logs_panic(make_db: DbFactory) -> None:
    db = make_db("module-test")
    out = call(db, "panic_trap")
    assert (out.status, out.message) == (Status.FAILED, FATAL_ERROR_MESSAGE)
    panics = [r for r in log_records(db, "panic_trap") if r["level"] == "Panic"]
    assert [r["message"] for r in panics] == ["module-test: deliberate panic"]
    assert call(db, "check_preinit").committed


# ----------------------------------------------------------------------------- sequences


def test_autoinc_u8_wraps(make_db: DbFactory) -> None:
    db = make_db("module-test")
    for i in range(255):
        out = call(db, "insert_autoinc_u8", f"n{i}")
        assert out.committed, (i, out.message)
    assert sorted(r[0] for r in rows(db, "autoinc_u8")) == list(range(1, 256))
    assert call(db, "insert_autoinc_u8", "wrapped").committed
    assert (0, "wrapped") in rows(db, "autoinc_u8")
    out = call(db, "insert_autoinc_u8", "clash")
    assert (out.status, out.message) == (Status.FAILED, "insert_autoinc_u8 failed: errno 12")
    assert len(rows(db, "autoinc_u8")) == 256
    generated = [r["message"] for r in log_records(db, "insert_autoinc_u8") if r["level"] == "Info"]
    assert generated[0] == "autoinc_u8 generated 1"
    assert generated[254:256] == ["autoinc_u8 generated 255", "autoinc_u8 generated 0"]


# ----------------------------------------------------------------------------- schedules


def _fired(db: Database, source: str) -> list[tuple[Any, ...]]:
    return [r for r in rows(db, "fired") if r[1] == source]


def test_oneshot_schedule_fires_once(make_db: DbFactory) -> None:
    db = make_db("module-test")
    ts = now_micros()
    assert call(db, "schedule_oneshot", 0, "p", timestamp_micros=ts).committed
    [(sched_id, at, payload)] = rows(db, "oneshot")
    assert (at, payload) == (SumValue(1, (ts,)), "p")
    assert db.next_schedule_micros() is not None
    outcomes = db.run_due_schedules()
    assert [(o.reducer, o.status) for o in outcomes] == [("run_oneshot", Status.COMMITTED)]
    assert outcomes[0].caller == DB_IDENTITY and outcomes[0].connection_id == 0
    [(_, source, ref_id, fired_payload, (fired_at,), sender)] = rows(db, "fired")
    assert (source, ref_id, fired_payload, sender) == ("oneshot", sched_id, "p", DB_IDENTITY.to_sats())
    assert fired_at >= ts
    assert rows(db, "oneshot") == []
    assert db.run_due_schedules() == []
    assert db.next_schedule_micros() is None


def test_oneshot_in_the_past_fires_at_once(make_db: DbFactory) -> None:
    db = make_db("module-test")
    ts = now_micros()
    assert call(db, "schedule_oneshot", -10_000_000, "past", timestamp_micros=ts).committed
    next_due = db.next_schedule_micros()
    assert next_due is not None and next_due <= now_micros()
    [out] = db.run_due_schedules()
    assert out.committed and out.timestamp_micros >= ts  # max(scheduled time, now)
    [(_, source, _, payload, (fired_at,), _)] = rows(db, "fired")
    assert (source, payload, fired_at) == ("oneshot", "past", out.timestamp_micros)
    assert rows(db, "oneshot") == []


def test_repeating_schedule_stops_after_max_fires(make_db: DbFactory) -> None:
    db = make_db("module-test")
    start = now_micros()
    assert call(db, "schedule_repeating", 20_000, 3).committed
    [(sched_id, at, max_fires)] = rows(db, "repeating")
    assert (at, max_fires) == (SumValue(0, (20_000,)), 3)
    poll_schedules(db, lambda: len(_fired(db, "repeating")) >= 3)
    fired = _fired(db, "repeating")
    assert len(fired) == 3
    assert {(r[2], r[3], r[5]) for r in fired} == {(sched_id, "", DB_IDENTITY.to_sats())}
    times = sorted(r[4][0] for r in fired)
    assert times[0] >= start + 20_000
    assert all(b - a >= 20_000 for a, b in itertools.pairwise(times)), times
    assert rows(db, "repeating") == []
    time.sleep(0.06)
    assert db.run_due_schedules() == []
    assert len(_fired(db, "repeating")) == 3
    assert db.next_schedule_micros() is None


def test_cancelled_schedules_never_fire(make_db: DbFactory) -> None:
    db = make_db("module-test")
    assert call(db, "schedule_oneshot", 50_000, "c").committed
    assert call(db, "schedule_repeating", 20_000, 0).committed
    [(oneshot_id, _, _)] = rows(db, "oneshot")
    [(repeating_id, _, _)] = rows(db, "repeating")
    assert call(db, "cancel_schedule", False, oneshot_id).committed
    assert call(db, "cancel_schedule", True, repeating_id).committed
    out = call(db, "cancel_schedule", True, repeating_id)
    assert (out.status, out.message) == (Status.FAILED, "no such scheduled row")
    time.sleep(0.08)
    assert db.run_due_schedules() == []
    assert rows(db, "fired") == []
    assert db.next_schedule_micros() is None


def test_rolled_back_schedule_row_never_fires(make_db: DbFactory) -> None:
    db = make_db("module-test")
    # check_schedule_too_long inserts a refused row (errno 13) and deletes it: nothing is armed.
    assert call(db, "check_schedule_too_long").committed
    assert db.next_schedule_micros() is None


def test_schedules_survive_restart(make_db: DbFactory, tmp_path: Path) -> None:
    db = make_db("module-test")
    assert call(db, "schedule_oneshot", 300_000, "r").committed
    assert call(db, "schedule_repeating", 20_000, 2).committed
    [(sched_id, at, _)] = rows(db, "oneshot")
    [(repeating_id, _, _)] = rows(db, "repeating")
    due = at.value[0]
    db.close()
    db = make_db.track(Database.open(tmp_path / "db"))
    assert rows(db, "oneshot") == [(sched_id, at, "r")]
    assert db.next_schedule_micros() is not None
    early = db.run_due_schedules(now_micros=due - 1)  # the oneshot is not due yet
    assert {o.reducer for o in early} <= {"run_repeating"}
    assert _fired(db, "oneshot") == []
    poll_schedules(db, lambda: bool(_fired(db, "oneshot")))
    [(_, _, ref_id, payload, (fired_at,), sender)] = _fired(db, "oneshot")
    assert (ref_id, payload, sender) == (sched_id, "r", DB_IDENTITY.to_sats())
    assert fired_at >= due
    assert rows(db, "oneshot") == []
    poll_schedules(db, lambda: len(_fired(db, "repeating")) >= 2)
    assert {r[2] for r in _fired(db, "repeating")} == {repeating_id}
    assert rows(db, "repeating") == []


def test_schedule_immediate(make_db: DbFactory) -> None:
    db = make_db("module-test")
    out = call(db, "schedule_immediate", "x", caller=BOB)
    assert out.committed
    [(_, source, ref_id, payload, _, sender)] = rows(db, "fired")
    assert (source, ref_id, payload, sender) == ("immediate", 0, "x", DB_IDENTITY.to_sats())


# ----------------------------------------------------------------------------- lifecycle


def _events(db: Database) -> list[tuple[str, tuple[int], tuple[int]]]:
    return [(kind, sender, conn) for _, kind, sender, conn, _ in rows(db, "lifecycle_event")]


def test_init_runs_once_as_owner(tmp_path: Path) -> None:
    before = now_micros()
    db, init = create_db(tmp_path / "db", module_wasm("module-test"))
    try:
        assert init is not None and init.committed and init.reducer == "init" and init.caller == OWNER
        [(_, kind, sender, conn, (at,))] = rows(db, "lifecycle_event")
        assert (kind, sender, conn) == ("init", OWNER.to_sats(), (0,))
        assert before <= at <= now_micros()
    finally:
        db.close()
    db = Database.open(tmp_path / "db")
    try:
        assert _events(db) == [("init", OWNER.to_sats(), (0,))]  # not run again on open
    finally:
        db.close()


def test_client_lifecycle(make_db: DbFactory) -> None:
    db = make_db("module-test")
    conn_a, conn_b = 0x1111_2222_3333_4444_5555_6666_7777_8888, 42
    out = db.client_connected(ALICE, conn_a)
    assert out.committed and out.reducer == "client_connected"
    assert _events(db)[1:] == [("connect", ALICE.to_sats(), (conn_a,))]

    assert call(db, "set_kv", "reject_connections", "yes").committed
    rejected = db.client_connected(BOB, conn_b)
    assert (rejected.status, rejected.message) == (Status.FAILED, "connection rejected by module")
    assert db.client_disconnected(BOB, conn_b) is None
    assert [e[0] for e in _events(db)] == ["init", "connect"]

    out2 = db.client_disconnected(ALICE, conn_a)
    assert out2 is not None and out2.committed
    assert _events(db)[2:] == [("disconnect", ALICE.to_sats(), (conn_a,))]
    assert db.client_disconnected(ALICE, conn_a) is None  # already gone
    assert len(_events(db)) == 3


def test_connected_clients_are_disconnected_on_reopen(make_db: DbFactory, tmp_path: Path) -> None:
    db = make_db("module-test")
    assert db.client_connected(CAROL, 99).committed
    assert db.client_connected(ALICE, 100).committed
    assert db.client_disconnected(ALICE, 100) is not None
    db.close()
    db = make_db.track(Database.open(tmp_path / "db"))
    assert _events(db) == [
        ("init", OWNER.to_sats(), (0,)),
        ("connect", CAROL.to_sats(), (99,)),
        ("connect", ALICE.to_sats(), (100,)),
        ("disconnect", ALICE.to_sats(), (100,)),
        ("disconnect", CAROL.to_sats(), (99,)),
    ]
    db.close()
    db = make_db.track(Database.open(tmp_path / "db"))
    assert len(_events(db)) == 5  # the client was forgotten: no second disconnect


# ----------------------------------------------------------------------------- jwt, whoami


def test_record_jwt(make_db: DbFactory) -> None:
    db = make_db("module-test")
    payload = '{"sub":"x","iss":"y"}'
    with_jwt, without_jwt = 0xDEAD_BEEF_0000_0001, 0xDEAD_BEEF_0000_0002
    assert db.client_connected(ALICE, with_jwt, jwt_payload=payload.encode()).committed
    assert db.client_connected(BOB, without_jwt).committed
    assert call(db, "record_jwt", caller=ALICE, connection_id=with_jwt).committed
    assert call(db, "record_jwt", caller=BOB, connection_id=without_jwt).committed
    assert [r[1:] for r in rows(db, "jwt_record")] == [
        ((with_jwt,), True, payload),
        ((without_jwt,), False, ""),
    ]
    # A rejected connection's payload is not kept.
    assert call(db, "set_kv", "reject_connections", "1").committed
    assert not db.client_connected(CAROL, 3, jwt_payload=b'{"sub":"c"}').committed
    assert call(db, "record_jwt", caller=CAROL, connection_id=3).committed
    assert rows(db, "jwt_record")[-1][1:] == ((3,), False, "")
    # The payload is forgotten on disconnect.
    assert db.client_disconnected(ALICE, with_jwt) is not None
    assert call(db, "record_jwt", caller=ALICE, connection_id=with_jwt).committed
    assert rows(db, "jwt_record")[-1][1:] == ((with_jwt,), False, "")


def test_whoami(make_db: DbFactory) -> None:
    db = make_db("module-test")
    conn = 0x0102030405060708090A0B0C0D0E0F10
    ts = 1_700_000_000_123_456
    out = call(db, "whoami", caller=BOB, connection_id=conn, timestamp_micros=ts)
    assert out.committed and out.timestamp_micros == ts
    assert kv(db) == {
        "whoami.sender": BOB.to_hex(),
        "whoami.connection_id": "0102030405060708090a0b0c0d0e0f10",
        "whoami.timestamp": str(ts),
        "whoami.db_identity": DB_IDENTITY.to_hex(),
    }


def test_each_call_runs_and_is_logged_as_its_own_caller(make_db: DbFactory) -> None:
    # The engine keeps the last caller's converted forms; a different caller (or an equal one in
    # another object) must never run or be logged as the previous one.
    db = make_db("module-test")
    callers = [BOB, ALICE, ALICE, Identity(BOB.value), CAROL, BOB]
    offsets: list[int] = []
    for caller in callers:
        out = call(db, "whoami", caller=caller)
        assert out.committed and kv(db)["whoami.sender"] == caller.to_hex()
        assert out.offset is not None
        offsets.append(out.offset)
    # A transaction with no reducer (SQL DML) right after BOB's call is logged as its own caller.
    _, out = db.run_sql_dml(lambda tx: None, CAROL)
    assert out.offset is not None
    offsets.append(out.offset)
    logged = {rec.offset: TxRecord.decode(rec.payload).caller_identity for rec in db.clog.read_from(offsets[0])}
    assert [logged[o] for o in offsets] == [c.to_bsatn() for c in [*callers, CAROL]]


@pytest.mark.parametrize("ts", [-5, 1])
def test_explicit_timestamps_are_used(make_db: DbFactory, ts: int) -> None:
    db = make_db("module-test")
    assert call(db, "whoami", timestamp_micros=ts).committed
    assert kv(db)["whoami.timestamp"] == str(ts)


def test_explicit_timestamp_zero_is_used(make_db: DbFactory) -> None:
    db = make_db("module-test")
    out = call(db, "whoami", timestamp_micros=0)
    assert out.timestamp_micros == 0
    assert kv(db)["whoami.timestamp"] == "0"


# ----------------------------------------------------------------------------- errors


def test_call_errors(make_db: DbFactory) -> None:
    db = make_db("module-test")
    assert call(db, "set_kv", "a", "1").committed
    offset = db.last_offset
    with pytest.raises(NoSuchReducer):
        db.call_reducer("no_such_reducer", b"", caller=ALICE)
    for lifecycle in ("init", "client_connected", "client_disconnected"):
        with pytest.raises(LifecycleReducerCall):
            db.call_reducer(lifecycle, b"", caller=ALICE)
    for bad in (
        b"\x01",
        b"\x05\x00\x00\x00ab",
        b"\x01\x00\x00\x00a\x01\x00\x00",
        b"\x01\x00\x00\x00\xff\x00\x00\x00\x00",
    ):
        with pytest.raises(InvalidArguments):
            db.call_reducer("set_kv", bad, caller=ALICE)
    assert db.last_offset == offset
    assert kv(db) == {"a": "1"}
    assert call(db, "set_kv", "b", "2").committed


def test_fixed_size_arguments_are_checked_by_length(make_db: DbFactory) -> None:
    """``transfer(u32, u32, i64)`` takes exactly 16 bytes (any 16 bytes decode); others are refused."""
    db = make_db("transfer")
    assert db.call_reducer("seed", struct.pack("<Iq", 2, 100), caller=ALICE).committed
    offset = db.last_offset
    for bad in (b"", struct.pack("<IIq", 0, 1, 5)[:15], struct.pack("<IIq", 0, 1, 5) + b"\x00"):
        with pytest.raises(InvalidArguments, match="^invalid arguments for reducer `transfer`: "):
            db.call_reducer("transfer", bad, caller=ALICE)
    assert db.last_offset == offset
    assert db.call_reducer("transfer", struct.pack("<IIq", 0, 1, 5), caller=ALICE).committed


def test_invalid_wasm_is_rejected(tmp_path: Path) -> None:
    for name, program in (("garbage", b"not wasm at all"), ("truncated", b"\0asm\x01\x00\x00\x00\x05")):
        with pytest.raises(ModuleLoadError):
            create_db(tmp_path / name, program)
        assert not (tmp_path / name).exists()


def _hand_written_module(body: str, *reducers: tuple[str, Lifecycle | None]) -> bytes:
    """A module whose `__describe_module__` declares ``reducers`` (no tables, no params) and whose
    `__call_reducer__` runs the WAT ``body`` ($id = reducer id; call $say_no to fail with `NO`)."""
    moduledef = encode_raw_module_def(
        RawModuleDefV9(
            typespace=Typespace([]),
            tables=(),
            reducers=tuple(RawReducerDefV9(name, product(), lifecycle) for name, lifecycle in reducers),
            types=(),
            misc_exports=(),
            row_level_security=(),
        )
    )
    data = "".join(f"\\{b:02x}" for b in moduledef)
    wat = f"""
      (module
        (import "spacetime_10.0" "bytes_sink_write" (func $sink_write (param i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 64) "{NO}")
        (data (i32.const 1024) "{data}")
        (func (export "__describe_module__") (param $sink i32)
          (i32.store (i32.const 8) (i32.const {len(moduledef)}))
          (drop (call $sink_write (local.get $sink) (i32.const 1024) (i32.const 8))))
        (func $say_no (param $sink i32) (result i32)
          (i32.store (i32.const 8) (i32.const {len(NO)}))
          (drop (call $sink_write (local.get $sink) (i32.const 64) (i32.const 8)))
          (i32.const 1))
        (func (export "__call_reducer__")
          (param $id i32) (param i64 i64 i64 i64 i64 i64 i64) (param $args i32) (param $err i32)
          (result i32)
          {body}))
    """
    return bytes(wasmtime.wat2wasm(wat))


NO = "module says no"
SAY_NO = "(call $say_no (local.get $err))"


@pytest.mark.parametrize(
    ("body", "message"),
    [(SAY_NO, NO), ("(unreachable)", FATAL_ERROR_MESSAGE), ("(i32.const 3)", FATAL_ERROR_MESSAGE)],
    ids=["error", "trap", "code3"],
)
def test_failing_init_leaves_nothing(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(InitFailed, match=f"^{message}$"):
        create_db(tmp_path / "db", _hand_written_module(body, ("init", Lifecycle.INIT)))
    assert not (tmp_path / "db").exists()


def test_hand_written_module_without_failures(tmp_path: Path) -> None:
    program = _hand_written_module("(i32.const 0)", ("init", Lifecycle.INIT), ("ping", None))
    db, init = create_db(tmp_path / "db", program)
    try:
        assert init is not None and init.committed and init.reducer == "init"
        assert db.call_reducer("ping", b"", caller=ALICE).committed
    finally:
        db.close()


#: Grows linear memory 1 MiB at a time up to 2 GiB and traps if a grow is refused, as a guest
#: allocator does when it cannot get memory (issue 12's probe: init growing to 2 GiB).
GROW_TO_2_GIB = """
  (block $done
    (loop $more
      (br_if $done (i32.ge_u (memory.size) (i32.const 32768)))
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
      (br $more)))
  (i32.const 0)"""


def test_init_growing_memory_past_the_cap_is_refused(tmp_path: Path) -> None:
    """The default cap stops an init that takes 2 GiB; the publish fails naming it, nothing kept."""
    program = _hand_written_module(GROW_TO_2_GIB, ("init", Lifecycle.INIT))
    with pytest.raises(ModuleLoadError, match=r"linear memory is capped at 256 MiB \(DatabaseConfig.max_memory_bytes\)"):
        create_db(tmp_path / "db", program)
    assert not (tmp_path / "db").exists()
    # The cap is a setting: with room for 2 GiB the same module installs.
    db, init = create_db(tmp_path / "roomy", program, max_memory_bytes=(2 << 30) + (1 << 20))
    try:
        assert init is not None and init.committed
    finally:
        db.close()


def test_initial_memory_over_the_cap_is_refused(tmp_path: Path) -> None:
    """A module that declares more memory than the cap cannot be instantiated: the error says why."""
    program = _hand_written_module("(i32.const 0)", ("ping", None)).replace(
        # The memory section of the module above: one memory, min 1 page → min 64 pages (4 MiB).
        b"\x05\x03\x01\x00\x01", b"\x05\x03\x01\x00\x40", 1
    )
    with pytest.raises(ModuleLoadError, match=r"initial linear memory \(4 MiB\) is over the cap: .* 1 MiB "):
        create_db(tmp_path / "db", program, max_memory_bytes=1 << 20)
    assert not (tmp_path / "db").exists()


def test_reducer_growing_memory_past_the_cap_fails_only_that_call(tmp_path: Path) -> None:
    body = f"(if (result i32) (i32.eq (local.get $id) (i32.const 0)) (then {GROW_TO_2_GIB}) (else (i32.const 0)))"
    db, _ = create_db(tmp_path / "db", _hand_written_module(body, ("grow", None), ("ping", None)), max_memory_bytes=8 << 20)
    try:
        offset = db.last_offset
        grown = db.call_reducer("grow", b"", caller=ALICE)
        assert grown.status is Status.FAILED
        assert grown.message == "reducer `grow` trapped near its memory cap: linear memory is capped at 8 MiB (DatabaseConfig.max_memory_bytes)"
        assert db.last_offset == offset
        assert any("near its memory cap" in r["message"] for r in log_records(db))
        # The trap discarded the instance; the next call gets a fresh one with its small memory.
        assert db.call_reducer("ping", b"", caller=ALICE).committed
        assert db.host is not None and db.host.memory_size() == 64 << 10
    finally:
        db.close()


def test_invalid_module_def_is_rejected(tmp_path: Path) -> None:
    wat = """
      (module
        (import "spacetime_10.0" "bytes_sink_write" (func $sink_write (param i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 64) "\\07garbage")
        (func (export "__describe_module__") (param $sink i32)
          (i32.store (i32.const 8) (i32.const 8))
          (drop (call $sink_write (local.get $sink) (i32.const 64) (i32.const 8))))
        (func (export "__call_reducer__") (param i32 i64 i64 i64 i64 i64 i64 i64 i32 i32) (result i32)
          (i32.const 0)))
    """
    two_inits = _hand_written_module("(i32.const 0)", ("a", Lifecycle.INIT), ("b", Lifecycle.INIT))
    for name, program, problem in (
        ("garbage", bytes(wasmtime.wat2wasm(wat)), "invalid RawModuleDef tag 7"),
        ("two_inits", two_inits, "lifecycle Init is already taken"),
    ):
        # Database.create documents ModuleLoadError; an invalid module def raises ModuleDefError.
        with pytest.raises((ModuleLoadError, ModuleDefError), match=problem):
            create_db(tmp_path / name, program)
        assert not (tmp_path / name).exists()


def test_failing_on_disconnect_still_forgets_the_client(tmp_path: Path) -> None:
    program = _hand_written_module(
        f"(if (result i32) (i32.eq (local.get $id) (i32.const 2)) (then {SAY_NO}) (else (i32.const 0)))",
        ("init", Lifecycle.INIT),
        ("connect", Lifecycle.ON_CONNECT),
        ("disconnect", Lifecycle.ON_DISCONNECT),
    )
    db, _ = create_db(tmp_path / "db", program)
    try:
        assert db.client_connected(ALICE, 1).committed
        offset = db.last_offset
        out = db.client_disconnected(ALICE, 1)
        assert out is not None and (out.status, out.message) == (Status.FAILED, NO)
        assert db.last_offset == offset + 1  # the fallback transaction removed the client row
        assert db.client_disconnected(ALICE, 1) is None
        assert [r["message"] for r in log_records(db) if r["level"] == "Error"] == [NO]
    finally:
        db.close()
    db = Database.open(tmp_path / "db")
    try:  # no stale client: the disconnect reducer does not run again
        assert [r["message"] for r in log_records(db) if r["level"] == "Error"] == [NO]
    finally:
        db.close()


def test_create_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "keep.txt").write_text("precious")
    with pytest.raises(DatabaseError, match="not empty"):
        create_db(tmp_path / "db", module_wasm("module-test"))
    assert (tmp_path / "db" / "keep.txt").read_text() == "precious"
    with pytest.raises(DatabaseError, match="not a database directory"):
        Database.open(tmp_path / "db")


def test_closed_database_refuses_calls(tmp_path: Path) -> None:
    db, _ = create_db(tmp_path / "db", module_wasm("module-test"))
    db.close()
    db.close()  # idempotent
    with pytest.raises(DatabaseClosed):
        call(db, "set_kv", "a", "b")
    with pytest.raises(DatabaseClosed):
        db.client_connected(ALICE, 1)
    with pytest.raises(DatabaseClosed):
        db.run_due_schedules()


# ----------------------------------------------------------------------------- restart


def _populate(db: Database) -> None:
    for i in range(5):
        assert call(db, "set_kv", f"k{i}", f"v{i}").committed
    assert call(db, "delete_kv", "k0").committed
    assert call(db, "check_autoinc").committed
    assert call(db, "big_row", "big", 100_000).committed
    assert call(db, "insert_private", "note").committed


def _generated_counter_ids(db: Database) -> set[int]:
    # check_autoinc also inserts rows with explicit ids (labels "explicit id", "all explicit").
    return {r[0] for r in rows(db, "counter") if r[2] in ("auto", "explicit step")}


def _snapshot(db: Database) -> dict[str, list[Any]]:
    return {t: sorted(rows(db, t)) for t in ("kv", "counter", "private_note", "lifecycle_event")}


def test_restart_keeps_rows_and_sequences(make_db: DbFactory, tmp_path: Path) -> None:
    db = make_db("module-test")
    _populate(db)
    before = _snapshot(db)
    assert len(before["counter"]) >= 3 and len(before["kv"]) == 5
    db.close()
    db = make_db.track(Database.open(tmp_path / "db"))
    assert _snapshot(db) == before
    old_ids = _generated_counter_ids(db)
    assert len(old_ids) == 4
    assert call(db, "check_autoinc").committed
    new_ids = _generated_counter_ids(db) - old_ids
    assert len(new_ids) == 4 and min(new_ids) > max(old_ids)
    assert call(db, "insert_private", "second").committed
    notes = sorted(rows(db, "private_note"))
    assert notes[-1][1] == "second" and notes[-1][0] > notes[0][0]


def test_reopen_without_close_recovers_every_commit(make_db: DbFactory, tmp_path: Path) -> None:
    # Small checkpoint interval never reached: the commits live only in the commit log.
    db = make_db("module-test", checkpoint_every_txs=10**6, checkpoint_every_s=3600.0)
    _populate(db)
    assert db.wait_durable()
    shutil.copytree(tmp_path / "db", tmp_path / "crashed")
    expected = _snapshot(db)
    crashed = make_db.track(Database.open(tmp_path / "crashed"))
    assert _snapshot(crashed) == expected
    old_ids = _generated_counter_ids(crashed)
    assert call(crashed, "check_autoinc").committed
    new_ids = _generated_counter_ids(crashed) - old_ids
    assert len(new_ids) == 4 and min(new_ids) > max(old_ids)


# ----------------------------------------------------------------------------- official modules


def _official(name: str) -> bytes:
    return official_module(name).read_bytes()


def test_official_quickstart_chat(make_db: DbFactory) -> None:
    # This build (SpacetimeDB's modules/quickstart-chat) logs no Info lines of its own.
    _chat_flow(make_db(_official("quickstart-chat")))


def test_official_upgrade_old_module(make_db: DbFactory) -> None:
    db = make_db(_official("upgrade_old_module_v1"))
    out = db.call_reducer("noop", b"", caller=ALICE)
    assert (out.status, out.message) == (Status.COMMITTED, "")
    assert out.offset is not None


def test_fired_one_shot_row_deletion_reaches_commit_listeners(make_db: DbFactory) -> None:
    db = make_db("module-test")
    seen: list[tuple[str, int]] = []
    oneshot = db.table_id("oneshot")

    def listener(outcome: Any) -> None:
        if outcome.txdata is not None and oneshot in outcome.txdata.tables:
            ch = outcome.txdata.tables[oneshot]
            seen.append((outcome.reducer, len(ch.deletes)))

    db.on_commit.append(listener)
    assert call(db, "schedule_oneshot", 0, "p").committed
    poll_schedules(db, lambda: any(deletes for _, deletes in seen))
    assert ("", 1) in seen  # the host's own transaction that deletes the fired row


def test_sql_system_variables_are_in_the_commit_log(make_db: DbFactory, tmp_path: Path) -> None:
    """``SET`` is logged: a replica rebuilt from the commit log alone (as a follower or a
    recovery without the LMDB file would be) has the variable."""
    from hostnode.sql.execute import execute_sql

    db = make_db("module-test")
    execute_sql(db, "SET row_limit = 7", db.owner)
    db.close()
    shutil.rmtree(tmp_path / "db" / "lmdb")  # only the commit log remains
    db = make_db.track(Database.open(tmp_path / "db"))
    assert execute_sql(db, "SHOW row_limit", db.owner).rows == [(7,)]


def test_a_checkpoint_whose_durability_wait_times_out_holds_nothing_undurable(make_db: DbFactory) -> None:
    """Issue 12: a checkpoint that waited for durability in vain is skipped, so LMDB (what
    readers see, and what a restart starts from) never holds a transaction no majority has;
    once the majority has it, the next checkpoint does."""
    from hostnode.durability import QuorumDurability

    db = make_db("module-test", replicated=True, checkpoint_wait_s=0.05)
    assert db.wait_durable(timeout=60) and db.checkpoint()  # the tables, as the local log has them
    start = db.last_offset + 1
    quorum = QuorumDurability(db.committer, voters=["f1", "f2"], epoch_start=start, committed=start)
    db.durability = quorum
    checkpointed = db.datastore.applied_offset()
    assert call(db, "set_kv", "a", "1").committed
    assert db.checkpoint() is False  # the followers never acknowledged it
    assert db.datastore.applied_offset() == checkpointed
    assert "a" not in dict(db.table_rows("kv"))
    quorum.ack("f1", db.last_offset + 1)
    assert db.checkpoint() is True
    assert dict(db.table_rows("kv"))["a"] == "1"


def test_row_iterator_over_several_chunks(make_db: DbFactory) -> None:
    # row_iter_bsatn_advance on an iterator of more than one chunk (module-abi.md §3.5): whole
    # chunks per call, BUFFER_TOO_SMALL with the size needed, -1 once the last one is out.
    from hostnode.wasm_host import BUFFER_TOO_SMALL, NO_SUCH_ITER, ROW_ITER_CHUNK_SIZE

    db = make_db("module-test")
    host = db.host
    assert host is not None and host.has_instance
    rows = [bytes([i]) * 1000 for i in range(80)]  # 80 KB: three chunks of whole rows
    iid = host._new_iter(rows)
    len_ptr = host.memory_size() - 8
    buf_ptr = len_ptr - 2 * ROW_ITER_CHUNK_SIZE
    got = b""
    results = []
    while True:
        host.write_u32(len_ptr, 10)  # too small for any chunk
        rc = host._imp_iter_advance((iid, buf_ptr, len_ptr))
        if rc == NO_SUCH_ITER:
            break
        assert rc == BUFFER_TOO_SMALL
        needed = host.read_u32(len_ptr)
        assert needed % 1000 == 0  # whole rows: 33, 33, then 14 of them
        host.write_u32(len_ptr, needed)
        rc = host._imp_iter_advance((iid, buf_ptr, len_ptr))
        results.append(rc)
        got += host.read(buf_ptr, host.read_u32(len_ptr))
    assert results[-1] == 0xFFFFFFFF and all(r == 0 for r in results[:-1]) and len(results) == 3
    assert got == b"".join(rows)
