"""A tiny stand-in host for describing wasm modules in tests, without the real host.

It links all 29 SpacetimeDB 1.12 host imports (``module-abi.md`` §3.1) with exact wasm
signatures, as stubs good enough to run a module's ``__preinit__*`` exports and
``__describe_module__``: the standard sink (id 1) collects bytes, ``console_log`` records
lines, every transactional call answers ``NOT_IN_TRANSACTION`` (as the real host does outside
a transaction) and the rest answer a harmless errno. It is *not* the real host
(``hostnode/wasm_host.py``); use it only to inspect what a module emits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

from hostnode.wasm_abi import ABI_IMPORTS

I32 = wasmtime.ValType.i32()
I64 = wasmtime.ValType.i64()

NOT_IN_TRANSACTION = 2
NO_SUCH_ITER = 6
NO_SUCH_CONSOLE_TIMER = 7
NO_SUCH_BYTES = 8
TRANSACTION_NOT_ANONYMOUS = 18

#: (import module, name, params, results) of every host function, in §3.1 order — the real
#: host's table, so the stand-in links exactly what the host links.
HOST_IMPORTS = ABI_IMPORTS

#: The directory of SpacetimeDB's own Rust-built modules, from ``ORRERY_OFFICIAL_MODULES`` only
#: (None when unset: they are never committed, and tests that need them skip).
OFFICIAL_MODULES_DIR: Path | None = (
    Path(os.environ["ORRERY_OFFICIAL_MODULES"]) if os.environ.get("ORRERY_OFFICIAL_MODULES") else None
)
#: How to get them, for the skip message.
OFFICIAL_MODULES_HOWTO = (
    "set ORRERY_OFFICIAL_MODULES to a directory holding quickstart-chat.wasm and "
    "upgrade_old_module_v1.wasm, extracted from a clone of SpacetimeDB's repository with "
    "`.venv/bin/python tools/official_modules.py <SpacetimeDB clone> <dir>` (quickstart-chat: the "
    "program in crates/core/testdata/v1.2/replicas/22000001/clog/00000000000000000000.stdb.log at "
    "v1.12.0; upgrade_old_module_v1: crates/smoketests/fixtures/upgrade_old_module_v1.wasm at v2.0.0)"
)
#: The committed C test modules.
MODULES_DIR = Path(__file__).resolve().parent.parent / "modules"


def official_module(name: str) -> Path:
    """The path of official module ``name`` (e.g. ``"quickstart-chat"``); skips the calling test
    when ``ORRERY_OFFICIAL_MODULES`` is unset or lacks it."""
    import pytest  # only tests call this; the harness itself serves scripts too

    if OFFICIAL_MODULES_DIR is None:
        pytest.skip(f"official module {name}.wasm: ORRERY_OFFICIAL_MODULES is not set; {OFFICIAL_MODULES_HOWTO}")
    path = OFFICIAL_MODULES_DIR / f"{name}.wasm"
    if not path.is_file():
        pytest.skip(f"official module {path} is absent; {OFFICIAL_MODULES_HOWTO}")
    return path


@dataclass
class Described:
    """What one instantiation of a module produced."""

    sink: bytes
    logs: list[tuple[int, str]] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)


class _StubHost:
    """Per-instance state of the stub host: the sink, the log, the memory export."""

    def __init__(self) -> None:
        self.sink: bytearray | None = None
        self.logs: list[tuple[int, str]] = []
        self.memory: wasmtime.Memory | None = None
        self.next_timer = 1

    def _read(self, store: wasmtime.Store, ptr: int, length: int) -> bytes:
        assert self.memory is not None
        if ptr == 0 or ptr + length > self.memory.data_len(store):
            raise wasmtime.WasmtimeError(f"bad guest pointer {ptr}+{length}")
        return bytes(self.memory.read(store, ptr, ptr + length))

    def _u32(self, store: wasmtime.Store, ptr: int) -> int:
        return int.from_bytes(self._read(store, ptr, 4), "little")

    def implementation(self, store: wasmtime.Store, name: str) -> Callable[..., Any]:
        """The Python function standing in for host import ``name``."""
        if name == "bytes_sink_write":

            def sink_write(sink: int, ptr: int, len_ptr: int) -> int:
                if sink != 1 or self.sink is None:
                    return NO_SUCH_BYTES
                self.sink += self._read(store, ptr, self._u32(store, len_ptr))
                return 0

            return sink_write
        if name == "console_log":

            def console_log(
                level: int, _tp: int, _tl: int, _fp: int, _fl: int, _ln: int, mp: int, ml: int
            ) -> None:
                try:
                    self.logs.append((level, self._read(store, mp, ml).decode("utf-8", "replace")))
                except wasmtime.WasmtimeError:
                    pass  # the real host silently drops records with bad pointers

            return console_log
        if name == "console_timer_start":

            def timer_start(ptr: int, length: int) -> int:
                self.next_timer += 1
                return self.next_timer - 1

            return timer_start
        if name == "identity":

            def identity(ptr: int) -> None:
                assert self.memory is not None
                self.memory.write(store, bytes(32), ptr)

            return identity
        if name == "volatile_nonatomic_schedule_immediate":
            return lambda *args: None
        if name == "procedure_sleep_until":
            return lambda t: t
        fixed = {
            "row_iter_bsatn_advance": NO_SUCH_ITER,
            "row_iter_bsatn_close": NO_SUCH_ITER,
            "bytes_source_read": NO_SUCH_BYTES,
            "bytes_source_remaining_length": NO_SUCH_BYTES,
            "console_timer_end": 0,
            "procedure_commit_mut_tx": TRANSACTION_NOT_ANONYMOUS,
            "procedure_abort_mut_tx": TRANSACTION_NOT_ANONYMOUS,
        }.get(name, NOT_IN_TRANSACTION)
        return lambda *args: fixed


def describe(wasm: bytes | Path) -> Described:
    """Instantiate ``wasm`` against stub imports, run ``__preinit__*`` then ``__describe_module__(1)``.

    Returns the sink bytes (``bsatn(RawModuleDef)``), the log lines and the export names.
    """
    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, wasm.read_bytes() if isinstance(wasm, Path) else wasm)
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)
    host = _StubHost()
    for mod, name, params, results in HOST_IMPORTS:
        linker.define_func(mod, name, wasmtime.FuncType(params, results), host.implementation(store, name))
    instance = linker.instantiate(store, module)
    exports = instance.exports(store)
    memory = exports["memory"]
    assert isinstance(memory, wasmtime.Memory)
    host.memory = memory
    names = sorted(e.name for e in module.exports)
    for name in names:
        if name.startswith("__preinit__"):
            func = exports[name]
            assert isinstance(func, wasmtime.Func)
            func(store)
    host.sink = bytearray()
    describe_fn = exports["__describe_module__"]
    assert isinstance(describe_fn, wasmtime.Func)
    describe_fn(store, 1)
    return Described(bytes(host.sink), host.logs, names)
