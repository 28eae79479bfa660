"""The module host's crossings into and out of wasmtime, on both routes: the C trampolines
(``hostnode/_hostcall.c``, built by ``make native``) and the ctypes callbacks used without them.

Each test runs a small WebAssembly-text module through :class:`ModuleHost` directly and checks
what a reducer sees of a host import (arguments, u32 / i64 / no results), what a failing import
does to the call (a trap naming the failure, the exception kept for the log), and the timing of
imports while profiling (the reducer_abi_time metric and ``bench_engine``'s split)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import wasmtime

from hostnode import wasm_host
from hostnode.wasm_host import ModuleHost, WasmProgram

ROUTES = ["c", "ctypes"]

# Reducer ids (the first argument of __call_reducer__):
LOOKUP = 0  # table_id_from_name("accounts") -> returns the id written to memory
BAD_POINTER = 1  # bytes_sink_write with a length pointer outside memory -> HostTrap
NOW = 2  # procedure_sleep_until(0) (i64 -> i64): returns the result in seconds
LOG = 3  # console_log("hello") (no result), returns 7
LOOKUP_FAILS = 4  # table_id_from_name("boom"): the hooks raise
LATE_LOOKUP = 5  # spins past the first slice of fuel, then table_id_from_name("accounts") x3

WAT = """
(module
  (import "spacetime_10.0" "table_id_from_name" (func $tid (param i32 i32 i32) (result i32)))
  (import "spacetime_10.0" "bytes_sink_write" (func $w (param i32 i32 i32) (result i32)))
  (import "spacetime_10.0" "console_log" (func $log (param i32 i32 i32 i32 i32 i32 i32 i32)))
  (import "spacetime_10.3" "procedure_sleep_until" (func $sleep (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 64) "accounts")
  (data (i32.const 96) "hello")
  (data (i32.const 128) "boom")
  (func (export "__describe_module__") (param $sink i32))
  (func (export "__call_reducer__") (param i32 i64 i64 i64 i64 i64 i64 i64 i32 i32) (result i32)
    (local $i i32)
    (if (i32.eq (local.get 0) (i32.const 0)) (then
      (if (call $tid (i32.const 64) (i32.const 8) (i32.const 16)) (then (return (i32.const -2))))
      (return (i32.load (i32.const 16)))))
    (if (i32.eq (local.get 0) (i32.const 1)) (then
      (return (call $w (local.get 9) (i32.const 0) (i32.const 1000000)))))
    (if (i32.eq (local.get 0) (i32.const 2)) (then
      (return (i32.wrap_i64 (i64.div_u (call $sleep (i64.const -5)) (i64.const 1000000))))))
    (if (i32.eq (local.get 0) (i32.const 3)) (then
      (call $log (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                 (i32.const 7) (i32.const 96) (i32.const 5))
      (return (i32.const 7))))
    (if (i32.eq (local.get 0) (i32.const 4)) (then
      (return (call $tid (i32.const 128) (i32.const 4) (i32.const 16)))))
    (if (i32.eq (local.get 0) (i32.const 5)) (then
      (loop $spin
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $spin (i32.lt_u (local.get $i) (i32.const 2000000))))
      (drop (call $tid (i32.const 64) (i32.const 8) (i32.const 16)))
      (drop (call $tid (i32.const 64) (i32.const 8) (i32.const 16)))
      (return (i32.add (call $tid (i32.const 64) (i32.const 8) (i32.const 16)) (i32.load (i32.const 16))))))
    (i32.const -1)))
"""


class Hooks:
    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []
        self.database_identity = bytes(32)
        self.lookups = 0

    def table_id(self, name: str) -> int | None:
        self.lookups += 1
        if name == "boom":
            raise RuntimeError("the catalog is gone")
        return 4097 if name == "accounts" else None

    def index_id(self, name: str) -> int | None:
        return None

    def after_row_write(self, tx: Any, table_id: int, row: bytes) -> int:
        return 0

    def jwt_payload(self, connection_id: int) -> bytes | None:
        return None

    def schedule_immediate(self, reducer: str, args: bytes) -> None:
        pass

    def module_log(self, record: dict[str, Any]) -> None:
        self.logs.append(record)


@pytest.fixture(params=ROUTES)
def host(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleHost, Hooks]]:
    if request.param == "c":
        if wasm_host.HOSTCALL is None:
            pytest.skip("hostnode._hostcall is not built here (make native)")
    else:
        monkeypatch.setattr(wasm_host, "HOSTCALL", None)
    hooks = Hooks()
    h = ModuleHost(WasmProgram.compile(bytes(wasmtime.wat2wasm(WAT))), hooks)
    assert (h._hostcall is None) == (request.param == "ctypes")
    h.instantiate()
    yield h, hooks
    h.discard_instance()


def call(h: ModuleHost, reducer: int) -> Any:
    return h.call_reducer(reducer, (0, 0, 0, 0), 0, 0, b"", object(), f"r{reducer}")


def test_an_import_gets_its_arguments_and_its_u32_result_reaches_the_guest(host: tuple[ModuleHost, Hooks]) -> None:
    h, _ = host
    for _ in range(3):  # the same slots, reused call after call
        res = call(h, LOOKUP)
        assert not res.trapped and res.code == 4097


def test_an_i64_import_takes_and_returns_64_bit_values(host: tuple[ModuleHost, Hooks]) -> None:
    h, _ = host
    res = call(h, NOW)
    assert not res.trapped and res.code is not None
    assert abs(res.code - time.time()) < 60


def test_an_import_without_a_result_runs(host: tuple[ModuleHost, Hooks]) -> None:
    h, hooks = host
    res = call(h, LOG)
    assert not res.trapped and res.code == 7
    assert [(r["message"], r["line_number"]) for r in hooks.logs] == [("hello", 7)]


def test_a_host_trap_stops_the_guest_with_its_message(host: tuple[ModuleHost, Hooks]) -> None:
    h, _ = host
    res = call(h, BAD_POINTER)
    assert res.trapped and res.code is None
    assert "outside guest memory" in res.trap_message
    assert not h.has_instance  # a trapped instance is not used again
    res = call(h, LOOKUP)  # a fresh one is made
    assert not res.trapped and res.code == 4097


def test_an_import_that_raises_traps_the_guest_naming_the_error(
    host: tuple[ModuleHost, Hooks], caplog: pytest.LogCaptureFixture
) -> None:
    h, _ = host
    res = call(h, LOOKUP_FAILS)
    assert res.trapped
    assert "host error: RuntimeError: the catalog is gone" in res.trap_message
    assert "host import raised while running r4" in caplog.text  # with the traceback
    assert "the catalog is gone" in caplog.text


def test_profiling_times_the_u32_imports(host: tuple[ModuleHost, Hooks]) -> None:
    h, _ = host
    sample = h.profile_ns = [0, 0]
    call(h, LOOKUP)
    call(h, LOOKUP)
    call(h, LOG)  # no result: not counted
    assert sample[1] == 2 and sample[0] > 0
    h.profile_ns = None
    call(h, LOOKUP)
    assert sample[1] == 2



def test_imports_run_in_the_later_slices_of_a_long_call(host: tuple[ModuleHost, Hooks]) -> None:
    """A call that outlasts its first slice of fuel runs on with the GIL released between slices;
    an import it makes then must take the GIL back (both routes)."""
    h, hooks = host
    res = call(h, LATE_LOOKUP)
    assert not res.trapped and res.code == 4097
    assert hooks.lookups == 3
    assert res.fuel_used > wasm_host.SLICE_FUEL  # it did run past the first slice
