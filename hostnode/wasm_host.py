"""The WebAssembly module host: loads SpacetimeDB 1.12 modules and provides the 29 host imports.

The rules implemented here are in ``../shared/spec/module-abi.md``: §1 (loading), §2 (errnos),
§3 (imports), §4 (exports), §9 (traps and fuel).

Speed: wasmtime-py's high-level call API costs ~40 µs per call and ~15 µs per host import
(PLATFORM.md §3), which alone would cap a database at a few thousand reducers per second. The hot
path therefore uses wasmtime's "unchecked" C entry points through the package's ctypes layer
(``wasmtime._ffi``), which is why ``wasmtime`` is pinned in pyproject.toml. Guest memory is read
through one cached memoryview; the engine is configured so linear memory never moves
(``memory_may_move = False``), so only its length can change, and the view is rebuilt whenever an
access falls past the known end.

Isolation: a store is switched to wasmtime's async mode once instantiated, so a call yields
after each slice of fuel. A call starts on the fast path, holding the GIL like any other C call
(releasing and re-taking it around every short reducer costs more than the reducer); a call
still running after its first slice (``SLICE_FUEL``) is a long one, and the rest of it runs in
slices of ``LONG_SLICE_FUEL`` with the GIL released, so the other databases, the event loop and
the network keep going while it spins. Host imports take the GIL back for as long as they run.
The time budget is checked between slices.

Everything the imports need from the database (the open transaction, name → id maps, schedule
checks, JWT payloads, logging) comes through :class:`HostHooks`, so this module knows nothing
about LMDB, commit logs or networking.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, Protocol

import wasmtime
from wasmtime import _ffi as ffi  # noqa: PLC2701 - the raw path, see module docstring

from hostnode import wasm_abi
from hostnode.budgets import DEFAULT_FUEL_BUDGET, DEFAULT_TIME_BUDGET_S
from hostnode.modulelog import level_name

_hostcall_module: Any
try:  # the two hot crossings into wasmtime in C (make native; hostnode/_hostcall.c)
    from hostnode import _hostcall as _hostcall_module
except ImportError:  # not built: the ctypes route below does the same
    _hostcall_module = None

log: Final = logging.getLogger(__name__)

# --- errnos (module-abi.md §2) -------------------------------------------------------------------
HOST_CALL_FAILURE: Final = 1
NOT_IN_TRANSACTION: Final = 2
BSATN_DECODE_ERROR: Final = 3
NO_SUCH_TABLE: Final = 4
NO_SUCH_INDEX: Final = 5
NO_SUCH_ITER: Final = 6
NO_SUCH_CONSOLE_TIMER: Final = 7
NO_SUCH_BYTES: Final = 8
NO_SPACE: Final = 9
WRONG_INDEX_ALGO: Final = 10
BUFFER_TOO_SMALL: Final = 11
UNIQUE_ALREADY_EXISTS: Final = 12
SCHEDULE_AT_DELAY_TOO_LONG: Final = 13
INDEX_NOT_UNIQUE: Final = 14
NO_SUCH_ROW: Final = 15
AUTO_INC_OVERFLOW: Final = 16
WOULD_BLOCK_TRANSACTION: Final = 17
TRANSACTION_NOT_ANONYMOUS: Final = 18
TRANSACTION_IS_READ_ONLY: Final = 19
TRANSACTION_IS_MUT: Final = 20
HTTP_ERROR: Final = 21

#: What a row iterator or bytes source returns when it is used up: -1, as the u32 bits of the i32
#: result (import callbacks store results as u32 items).
_EXHAUSTED: Final = 0xFFFFFFFF

#: The reference closes a row-iterator chunk once it exceeds this many bytes.
ROW_ITER_CHUNK_SIZE: Final = 32 * 1024


#: Fuel a call runs with the GIL held before it counts as long (a fraction of a millisecond of
#: wasm; a reducer that touches a few rows uses a few thousand).
SLICE_FUEL: Final = 1_000_000
#: The fuel of each later slice of a long call, after which the time budget is checked: about a
#: millisecond of wasm; a loop of host calls (a few fuel each, microseconds of Python) checks it
#: every fraction of a second.
LONG_SLICE_FUEL: Final = 4_000_000
#: Bytes of the stack a call runs on (Linux's default thread stack).
ASYNC_STACK_SIZE: Final = 8 << 20
#: Orrery's default cap on a module's linear memory (wasmtime store limits). SpacetimeDB 1.12 sets
#: none, so a module may take all of wasm32's 4 GiB; a cap keeps one database from holding the
#: host's memory for as long as it exists. Configurable per database.
DEFAULT_MEMORY_LIMIT: Final = 256 << 20
WASM_PAGE_SIZE: Final = 64 << 10

HOST_VERSION: Final = (10, 4)
FATAL_ERROR_MESSAGE: Final = "The instance encountered a fatal error."

#: ``__call_reducer__``'s arguments as ten wasmtime_val_t (kind byte, value at offset 8); the
#: kinds are WASMTIME_I32 = 0 for the first and the last two, WASMTIME_I64 = 1 between.
_CALL_REDUCER_VALS: Final = struct.Struct("<" + "B7xQ16x" * 10)
_VAL_SIZE: Final = 32
_I32_VAL: Final = struct.Struct("<B7xI")
assert ctypes.sizeof(ffi.wasmtime_val_t) == _VAL_SIZE

# Hot-path entry points bound through PyDLL so the calls keep the GIL: releasing and re-taking
# it around every tiny call costs more than the call, and lets the commit-log sync thread steal
# the GIL mid-reducer. Host imports run on this same thread, so holding it is safe. A long call's
# later slices are polled through the CDLL binding, which releases the GIL (module docstring).
_PYDLL: Final = ctypes.PyDLL(str(ffi.filename))
_func_call_async = _PYDLL.wasmtime_func_call_async
_func_call_async.restype = ctypes.c_void_p
_func_call_async.argtypes = [
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
    ctypes.c_void_p, ctypes.c_void_p,
]
_future_poll = _PYDLL.wasmtime_call_future_poll
_future_poll.restype = ctypes.c_bool
_future_poll.argtypes = [ctypes.c_void_p]
_future_poll_without_gil = ctypes.CDLL(str(ffi.filename)).wasmtime_call_future_poll
_future_poll_without_gil.restype = ctypes.c_bool
_future_poll_without_gil.argtypes = [ctypes.c_void_p]
_future_delete = _PYDLL.wasmtime_call_future_delete
_future_delete.restype = None
_future_delete.argtypes = [ctypes.c_void_p]
_yield_interval = _PYDLL.wasmtime_context_fuel_async_yield_interval
_yield_interval.restype = ctypes.c_void_p
_yield_interval.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
_set_fuel = _PYDLL.wasmtime_context_set_fuel
_set_fuel.restype = ctypes.c_void_p
_set_fuel.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
_get_fuel = _PYDLL.wasmtime_context_get_fuel
_get_fuel.restype = ctypes.c_void_p
_get_fuel.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_memory_data_size = _PYDLL.wasmtime_memory_data_size
_memory_data_size.restype = ctypes.c_size_t
_memory_data_size.argtypes = [ctypes.c_void_p, ctypes.c_void_p]


def _address(fn: Any) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value or 0


if _hostcall_module is not None:
    _hostcall_module.bind(
        _address(_set_fuel), _address(_get_fuel), _address(_func_call_async), _address(_future_poll),
        _address(_future_delete), _address(_PYDLL.wasmtime_trap_new),
    )  # fmt: skip
#: The C crossings when built (tests set this to None to run the ctypes route).
HOSTCALL: Any = _hostcall_module

_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_I64: Final = struct.Struct("<q")


class ModuleLoadError(Exception):
    """The wasm program cannot be used as a module (bad wasm, wrong ABI, failed setup)."""


class HostTrap(Exception):
    """Raised inside an import to trap the guest with a message."""


class HostHooks(Protocol):
    """What the host imports need from the database that owns the instance."""

    @property
    def database_identity(self) -> bytes:
        """The database identity, 32 bytes little-endian (BSATN order)."""

    def table_id(self, name: str) -> int | None:
        """The id of the table called ``name``."""

    def index_id(self, name: str) -> int | None:
        """The id of the index called ``name``."""

    def after_row_write(self, tx: Any, table_id: int, row: bytes) -> int:
        """Called after a successful insert/update; returns an errno (0 = fine). Used for schedules."""

    def jwt_payload(self, connection_id: int) -> bytes | None:
        """The JWT payload recorded for a connected client, or None."""

    def schedule_immediate(self, reducer: str, args: bytes) -> None:
        """Queue a reducer call in its own transaction (volatile_nonatomic_schedule_immediate)."""

    def module_log(self, record: dict[str, Any]) -> None:
        """Write one module log record (keys as in modulelog.ModuleLog.write)."""


class CallResult(NamedTuple):
    """The outcome of one guest export call (a tuple: built once per reducer call)."""

    code: int | None  # the export's i32 result; None when it trapped
    message: str  # sink contents decoded lossily (the error message for code 1)
    fuel_used: int
    trapped: bool = False
    out_of_fuel: bool = False
    trap_message: str = ""
    duration_micros: int = 0
    #: It trapped with its linear memory near the cap: a refused ``memory.grow`` (which returns
    #: -1 rather than trapping) is the likely cause, so the cap is named.
    out_of_memory: bool = False
    #: It ran past its time budget and was stopped there.
    out_of_time: bool = False


_new_tuple: Final = tuple.__new__

# ------------------------------------------------------------------------------------------------
# Engine and program


def make_engine() -> wasmtime.Engine:
    """A wasmtime engine configured the way the host needs (fuel metering, fixed memory base)."""
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    # A 4 GiB reservation with no moving means a linear memory's base address is stable for
    # the instance's life; the cached memoryview then only needs rebuilding when memory grows.
    cfg.memory_may_move = False
    cfg.memory_reservation = 1 << 32
    cfg.cranelift_opt_level = "speed"
    # Calls run on a fiber stack of this size (async mode, module docstring), host imports too:
    # as much as a thread's stack, so deep Python in an import has the room it has elsewhere
    # (wasmtime's default, 2 MiB, overflows at a few thousand nested Python-C-Python calls).
    ffi.wasmtime_config_async_stack_size_set(cfg.ptr(), ASYNC_STACK_SIZE)
    return wasmtime.Engine(cfg)


_ENGINE_LOCK: Final = threading.Lock()
_ENGINE: wasmtime.Engine | None = None


def shared_engine() -> wasmtime.Engine:
    """One engine per process: compiled modules and stores share it."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = make_engine()
            # It lives as long as the process: one reference more than its owners hold, so that
            # clearing this module at exit does not run its finaliser after wasmtime's own
            # bindings are gone (which prints a TypeError as the interpreter ends).
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(_ENGINE))
        return _ENGINE


def _functype_eq(ft: wasmtime.FuncType, params: list[wasmtime.ValType], results: list[wasmtime.ValType]) -> bool:
    return list(ft.params) == params and list(ft.results) == results


@dataclass(frozen=True, slots=True)
class WasmProgram:
    """A compiled, checked module program (module-abi.md §1 steps 1–5)."""

    module: wasmtime.Module
    abi_version: tuple[int, int]
    preinits: tuple[str, ...]
    has_setup: bool
    has_call_view: bool
    has_call_procedure: bool
    #: Pages the exported memory starts with (checked against the memory cap at instantiation).
    memory_minimum: int = 0

    @staticmethod
    def compile(wasm: bytes, engine: wasmtime.Engine | None = None) -> WasmProgram:
        """Compile and check a program; raises ModuleLoadError naming the problem."""
        engine = engine or shared_engine()
        if not wasm.startswith(b"\0asm"):
            raise ModuleLoadError("not a WebAssembly module (missing \\0asm header)")
        try:
            module = wasmtime.Module(engine, wasm)
        except wasmtime.WasmtimeError as e:
            raise ModuleLoadError(f"invalid WebAssembly: {e}") from None
        abi = _abi_version(module)
        exports = {e.name: e.type for e in module.exports}
        memory = exports.get("memory")
        if not isinstance(memory, wasmtime.MemoryType):
            raise ModuleLoadError("module does not export a linear memory named `memory`")
        if "__describe_module__" not in exports:
            if "__describe_module_v10__" in exports:
                raise ModuleLoadError("RawModuleDef V10 modules (__describe_module_v10__) are not supported")
            raise ModuleLoadError("module does not export `__describe_module__`")
        _check_sig(exports, "__describe_module__", [wasm_abi.I32], [])
        _check_sig(exports, "__call_reducer__", *wasm_abi.CALL_REDUCER_SIG)
        has_setup = "__setup__" in exports
        if has_setup:
            _check_sig(exports, "__setup__", [wasm_abi.I32], [wasm_abi.I32])
        preinits = tuple(sorted((n for n in exports if n.startswith("__preinit__")), key=lambda s: s.encode()))
        for name in preinits:
            _check_sig(exports, name, [], [])
        return WasmProgram(
            module=module,
            abi_version=abi,
            preinits=preinits,
            has_setup=has_setup,
            has_call_view="__call_view__" in exports,
            has_call_procedure="__call_procedure__" in exports,
            memory_minimum=memory.limits.min,
        )


def _check_sig(exports: dict[str, Any], name: str, params: list[wasmtime.ValType], results: list[wasmtime.ValType]) -> None:
    ty = exports.get(name)
    if ty is None:
        raise ModuleLoadError(f"module does not export `{name}`")
    if not isinstance(ty, wasmtime.FuncType) or not _functype_eq(ty, params, results):
        raise ModuleLoadError(f"export `{name}` has the wrong type: expected {params} -> {results}, got {ty}")


def _abi_version(module: wasmtime.Module) -> tuple[int, int]:
    versions: set[tuple[int, int]] = set()
    known = {(m, n) for m, n, _, _ in wasm_abi.ABI_IMPORTS}
    for imp in module.imports:
        if not isinstance(imp.type, wasmtime.FuncType):
            raise ModuleLoadError(f"unsupported non-function import {imp.module}.{imp.name}")
        if not imp.module.startswith("spacetime_"):
            raise ModuleLoadError(f"unknown import {imp.module}.{imp.name}: modules may only import spacetime_10.x functions")
        ver = imp.module[len("spacetime_"):]
        try:
            major_s, minor_s = ver.split(".")
            major, minor = int(major_s), int(minor_s)
            if not (0 <= major < 65536 and 0 <= minor < 65536) or not major_s.isdigit() or not minor_s.isdigit():
                raise ValueError
        except ValueError:
            raise ModuleLoadError(f"malformed ABI version in import module name {imp.module!r}") from None
        versions.add((major, minor))
        if (imp.module, imp.name) not in known:
            raise ModuleLoadError(f"unknown host function {imp.module}.{imp.name}")
    if not versions:
        raise ModuleLoadError("unable to determine ABI: the module imports no spacetime_* functions")
    majors = {v[0] for v in versions}
    if len(majors) > 1:
        raise ModuleLoadError(f"module imports from several ABI major versions: {sorted(majors)}")
    needed = max(versions)
    if needed[0] != HOST_VERSION[0] or needed[1] > HOST_VERSION[1]:
        raise ModuleLoadError(
            f"module needs ABI {needed[0]}.{needed[1]}; this host provides {HOST_VERSION[0]}.{HOST_VERSION[1]}"
        )
    return needed


# ------------------------------------------------------------------------------------------------
# Per-database host: linker with the 29 imports bound to this object, and the live instance.

_NOFIN: Final = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(0)


# The argument/result slots of an unchecked call are 16-byte wasmtime_val_raw_t values, i32
# arguments in each slot's low word. A callback receives the slots' address as a plain int (ctypes
# then builds no pointer object for it), reads every argument with one struct unpack over a
# memoryview of the slots (cached per address: wasmtime keeps them at the same place in the
# trampoline's frame from call to call) and hands the import a tuple of unsigned ints. That is
# one C call per host call where indexing a ctypes array cost a pointer object, an array object
# and a type lookup per element.
_SLOT_SIZE: Final = 16
# The slots hold values little-endian; results are stored as native items (see _make_callback).
assert sys.byteorder == "little", "wasmtime's raw values are little-endian; this host assumes a little-endian machine"
assert ctypes.sizeof(ffi.wasmtime_val_raw_t) == _SLOT_SIZE
#: Slot views a callback keeps; past this many addresses (never seen in practice) it starts over.
_MAX_SLOT_VIEWS: Final = 64
_CALLBACK: Final = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_Callback = Callable[[Any], Any]  # the arguments: a tuple of ints, one per parameter


def _leave_a_cpu_free() -> set[int] | None:
    """Keep the calling thread (running a long call) off the lowest CPU it may use, so that the
    event loops and short calls of every process always find one CPU that no long call holds;
    returns the CPUs to give back when the call ends (None: nothing was changed).

    Without it, long calls on every core make each wake-up of a short request's path wait for a
    time slice: in a three-node cluster on two cores, another database's reducer calls went from
    p99 8 ms to 80 ms while three calls spun, and to 26 ms with this (loadtest/RESULTS.md,
    "Isolation"). Priorities do not do it: an unprivileged thread may lower its own but not
    raise it back. Linux only; a single-CPU machine has nothing to spare."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cpus = os.sched_getaffinity(0)
        if len(cpus) < 2:
            return None
        _set_thread_cpus(cpus - {min(cpus)})
    except OSError:  # e.g. a CPU set that changed under us: run where we are
        return None
    return cpus


def _set_thread_cpus(cpus: set[int]) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(threading.get_native_id(), cpus)


def _check_error(err: int | None) -> None:
    """Raise the wasmtime error a C call returned (None or 0 when it succeeded)."""
    if err:
        raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))


def time_budget_message(budget_s: float) -> str:
    """How the time budget is named in errors: the figure and the setting that changes it."""
    return f"it ran past its time budget of {_format_duration(budget_s)} (DatabaseConfig.time_budget_s)"


def memory_limit_message(limit: int) -> str:
    """How the memory cap is named in errors: the figure and the setting that changes it."""
    return f"linear memory is capped at {_format_bytes(limit)} (DatabaseConfig.max_memory_bytes)"


def _format_bytes(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def _format_duration(seconds: float) -> str:
    """Format like Rust's ``Debug`` for ``Duration`` (``1.234567ms``, ``12µs``, ``2.5s``)."""
    nanos = max(0, int(round(seconds * 1e9)))
    if nanos >= 1_000_000_000:
        whole, frac, digits, unit = nanos // 1_000_000_000, nanos % 1_000_000_000, 9, "s"
    elif nanos >= 1_000_000:
        whole, frac, digits, unit = nanos // 1_000_000, nanos % 1_000_000, 6, "ms"
    elif nanos >= 1_000:
        whole, frac, digits, unit = nanos // 1_000, nanos % 1_000, 3, "µs"
    else:
        return f"{nanos}ns"
    if frac == 0:
        return f"{whole}{unit}"
    return f"{whole}.{str(frac).rjust(digits, '0').rstrip('0')}{unit}"


class ModuleHost:
    """Runs one database's module: owns the linker, the current instance and per-call host state.

    Not thread-safe: a database runs one call at a time on its writer thread.
    """

    def __init__(
        self,
        program: WasmProgram,
        hooks: HostHooks,
        *,
        fuel_budget: int = DEFAULT_FUEL_BUDGET,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    ) -> None:
        self.program = program
        self.hooks = hooks
        self._memory_limit = memory_limit
        #: Table ids for which after_row_write must be called (schedule tables); set by the owner.
        self.schedule_tables: frozenset[int] | set[int] = frozenset()
        self._fuel_budget = fuel_budget
        self._time_budget_s = time_budget_s
        self._time_budget_ns = int(time_budget_s * 1e9)
        self._engine = shared_engine()
        self.linker = wasmtime.Linker(self._engine)
        self._keep: list[Any] = []  # ctypes callbacks and FuncTypes must outlive the linker
        # [ns inside i32-returning imports, number of such calls], or None = not profiling: in a
        # box the C trampolines read (the profile_ns property).
        self._profile_box: list[Any] = [None]
        self._hostcall: Any = HOSTCALL  # chosen once: the imports are defined for one route
        self._run: Callable[..., tuple[int, int]] = self._run_ctypes if HOSTCALL is None else HOSTCALL.run
        self._define_imports()

        # Per-call state (module-abi.md §5).
        self.tx: Any = None
        self.function_name = "<initializing>"
        self._sources: dict[int, list[Any]] = {}  # id -> [bytes, pos]
        self._next_source = 1
        self._sink: bytearray | None = None
        #: Open row iterators: the one chunk left as bytes (a point scan's row), else a deque of
        #: chunks. (Typed Any: the hot path tells them apart with ``type(...) is bytes``, which
        #: mypy does not narrow and which costs less than ``isinstance``.)
        self._iters: dict[int, Any] = {}
        self._next_iter = 1
        self._timers: dict[int, tuple[str, float]] = {}
        self._next_timer = 1
        self._pending_exc: BaseException | None = None

        # Instance state.
        self._store: wasmtime.Store | None = None
        self._ctx: Any = None
        self._call_reducer: Any = None
        self._memory: Any = None
        self._base = 0
        self._size = 0
        self._mv: memoryview = memoryview(b"")
        self._argbuf = (ffi.wasmtime_val_t * 10)()
        self._argview = memoryview(self._argbuf).cast("B")
        self._args_addr = ctypes.addressof(self._argbuf)
        self._result = (ffi.wasmtime_val_t * 1)()
        self._result_addr = ctypes.addressof(self._result)
        # The result as native i32 items: an i32 result is item 2 (the value sits at offset 8).
        self._result_items = memoryview(self._result).cast("B").cast("i")
        self._trap_ptr = ctypes.POINTER(ffi.wasm_trap_t)()
        self._trap_arg = ctypes.c_void_p(ctypes.addressof(self._trap_ptr))
        self._error_ptr = ctypes.POINTER(ffi.wasmtime_error_t)()
        self._error_arg = ctypes.c_void_p(ctypes.addressof(self._error_ptr))
        self._fuel_out = ctypes.c_uint64(0)
        self._fuel_out_arg = ctypes.c_void_p(ctypes.addressof(self._fuel_out))
        self._call_reducer_addr = 0
        self._ctx_addr = 0
        self._ctx_arg = ctypes.c_void_p(0)

    @property
    def profile_ns(self) -> list[int] | None:
        """[ns inside i32-returning imports, number of such calls] while profiling, else None."""
        p: list[int] | None = self._profile_box[0]
        return p

    @profile_ns.setter
    def profile_ns(self, value: list[int] | None) -> None:
        self._profile_box[0] = value

    # --- instance lifecycle --------------------------------------------------------------------

    @property
    def has_instance(self) -> bool:
        """Whether a live instance exists (it is discarded after a trap)."""
        return self._store is not None

    def instantiate(self) -> bytes:
        """Create a fresh instance and run preinit/setup/describe (module-abi.md §1 step 6).

        Returns the ``__describe_module__`` bytes. Raises ModuleLoadError on any failure.
        """
        self.discard_instance()
        store = wasmtime.Store(self._engine)
        # Past the cap `memory.grow` returns -1 (what a guest allocator sees as out of memory).
        store.set_limits(memory_size=self._memory_limit)
        try:
            instance = self.linker.instantiate(store, self.program.module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
            initial = self.program.memory_minimum * WASM_PAGE_SIZE
            if initial > self._memory_limit:
                raise ModuleLoadError(
                    f"the module's initial linear memory ({_format_bytes(initial)}) is over the cap: "
                    f"{memory_limit_message(self._memory_limit)}"
                ) from None
            raise ModuleLoadError(f"instantiation failed: {e}") from None
        exports = instance.exports(store)
        self._store = store
        self._ctx = store._context()
        self._ctx_addr = ctypes.cast(self._ctx, ctypes.c_void_p).value or 0
        self._ctx_arg = ctypes.c_void_p(self._ctx_addr)
        # From here on every call is an async one that yields each slice (module docstring).
        _check_error(_yield_interval(self._ctx_arg, SLICE_FUEL))
        memory: Any = exports["memory"]
        self._memory = memory
        self._base = ctypes.cast(ffi.wasmtime_memory_data(self._ctx, ctypes.byref(memory._memory)), ctypes.c_void_p).value or 0
        self._refresh_memory()
        self._call_reducer = exports["__call_reducer__"]
        self._call_reducer_addr = ctypes.addressof(self._call_reducer._func)
        self.function_name = "<initializing>"
        try:
            for name in self.program.preinits:
                res = self._call_export(exports[name], [], 0, 0)
                if res.trapped:
                    raise ModuleLoadError(f"{name} {self._trap_reason(res)}")
            if self.program.has_setup:
                self._sink = bytearray()
                res = self._call_export(exports["__setup__"], [1], 1, 1)
                if res.trapped:
                    raise ModuleLoadError(f"__setup__ {self._trap_reason(res)}")
                if res.code != 0:
                    raise ModuleLoadError(f"__setup__ failed: {res.message or f'code {res.code}'}")
            self._sink = bytearray()
            res = self._call_export(exports["__describe_module__"], [1], 1, 0)
            if res.trapped:
                raise ModuleLoadError(f"__describe_module__ {self._trap_reason(res)}")
            return self._last_sink
        except BaseException:
            self.discard_instance()
            raise

    def _trap_reason(self, res: CallResult) -> str:
        """What ended a call that did not return, as the rest of a sentence naming the export."""
        if res.out_of_time:
            return f"was stopped: {res.trap_message}"
        if res.out_of_memory:
            return f"trapped near its memory cap ({memory_limit_message(self._memory_limit)}): {res.trap_message}"
        return f"trapped: {res.trap_message}"

    @property
    def memory_limit(self) -> int:
        """The cap on the instance's linear memory, in bytes."""
        return self._memory_limit

    def discard_instance(self) -> None:
        """Drop the current instance (after a trap, or before replacing the program)."""
        self._store = None
        self._ctx = None
        self._call_reducer = None
        self._memory = None
        self._mv = memoryview(b"")
        self._size = 0
        self._iters.clear()
        self._timers.clear()
        self._sources.clear()

    # --- calls --------------------------------------------------------------------------------

    def call_reducer(
        self,
        reducer_id: int,
        sender_words: tuple[int, int, int, int],
        connection_id: int,
        timestamp_micros: int,
        args: bytes,
        tx: Any,
        function_name: str,
    ) -> CallResult:
        """Call ``__call_reducer__`` with ``tx`` as the open transaction (module-abi.md §4.1, §6)."""
        if self._store is None:
            self.instantiate()
        self.tx = tx
        self.function_name = function_name
        if args:
            # Sources are numbered from 1 within each call; this is the call's first.
            self._sources[1] = [args, 0]
            self._next_source = 2
        # All ten values in one pack (ten ctypes item stores cost more); i64 ones as unsigned.
        s0, s1, s2, s3 = sender_words
        _CALL_REDUCER_VALS.pack_into(
            self._argview, 0, 0, reducer_id, 1, s0, 1, s1, 1, s2, 1, s3,
            1, connection_id & 0xFFFF_FFFF_FFFF_FFFF, 1, connection_id >> 64,
            1, timestamp_micros & 0xFFFF_FFFF_FFFF_FFFF, 0, 1 if args else 0, 0, 1,
        )  # fmt: skip
        self._sink = bytearray()
        try:
            return self._raw_call(self._call_reducer_addr, self._args_addr, 10)
        finally:
            self.tx = None

    def _call_export(self, func: Any, params: list[int], nparams: int, nresults: int) -> CallResult:
        """Call an export taking ``nparams`` i32 values (``params``) and returning ``nresults``
        (0 or 1) i32."""
        buf = (ffi.wasmtime_val_t * max(1, nparams))()
        view = memoryview(buf).cast("B")
        for i, p in enumerate(params):
            _I32_VAL.pack_into(view, i * _VAL_SIZE, 0, p)  # kind WASMTIME_I32
        # ``buf`` goes along (``keep``): compiled (mypyc) code drops a local after its last use,
        # so its address alone would point at freed memory during the call.
        return self._raw_call(
            ctypes.addressof(func._func), ctypes.addressof(buf), nparams, nresults, nresults > 0, keep=buf
        )

    _last_sink: bytes = b""

    @property
    def fuel_budget(self) -> int:
        """Fuel each call starts with."""
        return self._fuel_budget

    def _raw_call(
        self, func: int, args: int, nargs: int, nresults: int = 1, has_result: bool = True, keep: Any = None
    ) -> CallResult:
        """Call the export at address ``func`` with ``nargs`` wasmtime_val_t at address ``args``
        (``keep``: what owns them, held for the call); an i32 result lands in ``_result``."""
        ctx = self._ctx_arg
        self._pending_exc = None
        t0 = time.perf_counter_ns()
        future, left = self._run(
            self._ctx_addr, func, args, nargs, self._result_addr, nresults, self._trap_arg.value,
            self._error_arg.value, self._fuel_budget,
        )  # fmt: skip
        finished = True
        if future:  # the call outlasted its first slice
            finished = self._finish_long_call(future, t0)
            _future_delete(future)
            _get_fuel(ctx, self._fuel_out_arg)
            left = self._fuel_out.value
        duration = (time.perf_counter_ns() - t0) // 1000
        fuel_used = self._fuel_budget - left
        raw_sink = self._sink
        self._sink = None
        if raw_sink:
            sink = bytes(raw_sink)
            message = sink.decode("utf-8", errors="replace")
        else:
            sink, message = b"", ""
        self._last_sink = sink
        if self._sources:
            self._sources.clear()
        self._next_source = 1
        trap = self._trap_ptr
        if not finished:
            self._log_host_failure()
            self.discard_instance()
            return CallResult(
                None, message, fuel_used, trapped=True, trap_message=time_budget_message(self._time_budget_s),
                duration_micros=duration, out_of_time=True,
            )
        err = self._error_ptr
        if err:
            self._error_ptr = ctypes.POINTER(ffi.wasmtime_error_t)()
            self._error_arg = ctypes.c_void_p(ctypes.addressof(self._error_ptr))
            error = wasmtime.WasmtimeError._from_ptr(err)
            self._log_host_failure()  # a trap an import returned comes back this way
            out_of_memory = self._at_memory_cap()
            self.discard_instance()
            return CallResult(
                None, message, fuel_used, trapped=True, trap_message=str(error), duration_micros=duration,
                out_of_memory=out_of_memory,
            )
        if trap:
            t = wasmtime.Trap._from_ptr(trap)
            self._trap_ptr = ctypes.POINTER(ffi.wasm_trap_t)()
            self._trap_arg = ctypes.c_void_p(ctypes.addressof(self._trap_ptr))
            out_of_fuel = left == 0 or t.trap_code == wasmtime.TrapCode.OUT_OF_FUEL
            out_of_memory = not out_of_fuel and self._at_memory_cap()
            trap_message = t.message
            self._log_host_failure()
            self.discard_instance()
            return CallResult(
                None, message, fuel_used, trapped=True, out_of_fuel=out_of_fuel, trap_message=trap_message,
                duration_micros=duration, out_of_memory=out_of_memory,
            )
        code = self._result_items[2] if has_result else 0
        # The tuple built directly: a NamedTuple's __new__ is Python code, a frame per call.
        return _new_tuple(CallResult, (code, message, fuel_used, False, False, "", duration, False, False))

    def _run_ctypes(
        self, ctx: int, func: int, args: int, nargs: int, results: int, nresults: int, trap_out: int,
        error_out: int, fuel: int,
    ) -> tuple[int, int]:
        """``hostnode/_hostcall.c``'s ``run`` through ctypes (no C build): set the fuel, start
        the call, run its first slice; (0, fuel left) when it finished (the future deleted), else
        (the future, 0)."""
        _check_error(_set_fuel(ctx, fuel))
        future = _func_call_async(ctx, func, args, nargs, results, nresults, trap_out, error_out)
        if not _future_poll(future):
            return future, 0
        _future_delete(future)
        _get_fuel(ctx, self._fuel_out_arg)
        return 0, self._fuel_out.value

    def _log_host_failure(self) -> None:
        """Log what an import raised (a bug of the host, not the module's: with its traceback)
        when it stopped the call; a HostTrap is the module's fault and is in the trap message."""
        e, self._pending_exc = self._pending_exc, None
        if e is not None and not isinstance(e, HostTrap):
            log.error("host import raised while running %s", self.function_name, exc_info=e)

    def _finish_long_call(self, future: int, t0: int) -> bool:
        """Run the rest of a call that outlasted its first slice with the GIL released, a slice
        per poll; False if it ran past the time budget (the caller then drops the future, which
        stops the call where it yielded)."""
        deadline = t0 + self._time_budget_ns
        poll = _future_poll_without_gil
        ctx = self._ctx_arg
        _check_error(_yield_interval(ctx, LONG_SLICE_FUEL))
        cpus = _leave_a_cpu_free()
        try:
            while not poll(future):
                if time.perf_counter_ns() >= deadline:
                    return False
            return True
        finally:
            _check_error(_yield_interval(ctx, SLICE_FUEL))
            if cpus is not None:
                _set_thread_cpus(cpus)

    # --- guest memory -------------------------------------------------------------------------

    def memory_size(self) -> int:
        """Bytes of the instance's linear memory now (0 without an instance; the owning thread only)."""
        if self._store is None or self._memory is None:
            return 0
        self._refresh_memory()
        return self._size

    def _at_memory_cap(self) -> bool:
        """Whether the memory is within an eighth of the cap (or a page): read after a trap, this
        says a refused ``memory.grow`` is the likely cause, allocators growing in steps of a few
        pages. (wasmtime's C API has no hook that reports the refusal itself; a single grow far
        past the cap leaves memory small, and that trap goes unnamed.)"""
        return self.memory_size() + max(WASM_PAGE_SIZE, self._memory_limit // 8) > self._memory_limit

    def _refresh_memory(self) -> None:
        size = _memory_data_size(self._ctx_addr, ctypes.addressof(self._memory._memory))
        if size != self._size:
            self._size = size
            self._mv = memoryview((ctypes.c_ubyte * size).from_address(self._base)).cast("B") if size else memoryview(b"")

    def _check(self, ptr: int, n: int) -> None:
        if ptr == 0:
            raise HostTrap("null pointer passed to a host function")
        if ptr + n > self._size:
            self._refresh_memory()
            if ptr + n > self._size:
                raise HostTrap(f"pointer range {ptr}..{ptr + n} is outside guest memory ({self._size} bytes)")

    def read(self, ptr: int, n: int) -> bytes:
        """Copy ``n`` bytes of guest memory at ``ptr`` (traps on null or out-of-bounds)."""
        self._check(ptr, n)
        # ``.tobytes()``, not ``bytes(...)``: calling the type costs ~600 instructions more per copy.
        return self._mv[ptr : ptr + n].tobytes()

    def write(self, ptr: int, data: bytes) -> None:
        """Write bytes into guest memory."""
        n = len(data)
        self._check(ptr, n)
        self._mv[ptr : ptr + n] = data

    def read_u32(self, ptr: int) -> int:
        """Read a little-endian u32."""
        self._check(ptr, 4)
        return _U32.unpack_from(self._mv, ptr)[0]  # type: ignore[no-any-return]

    def write_u32(self, ptr: int, value: int) -> None:
        """Write a little-endian u32."""
        self._check(ptr, 4)
        _U32.pack_into(self._mv, ptr, value & 0xFFFFFFFF)

    def _read_str(self, ptr: int, n: int) -> str:
        data = self.read(ptr, n)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise HostTrap("name is not valid UTF-8") from None

    # --- sources, sink, iterators --------------------------------------------------------------

    def _new_source(self, data: bytes) -> int:
        sid = self._next_source
        self._next_source += 1
        self._sources[sid] = [data, 0]
        return sid

    @staticmethod
    def _chunks(rows: list[bytes]) -> deque[bytes]:
        """Whole rows packed into chunks that close once they pass ROW_ITER_CHUNK_SIZE."""
        chunks: deque[bytes] = deque()
        cur: list[bytes] = []
        size = 0
        for r in rows:
            cur.append(r)
            size += len(r)
            if size > ROW_ITER_CHUNK_SIZE:
                chunks.append(b"".join(cur))
                cur, size = [], 0
        if cur:
            chunks.append(b"".join(cur))
        return chunks

    def _new_iter(self, rows: list[bytes]) -> int:
        iid = self._next_iter
        self._next_iter = iid + 1 if iid < 0xFFFFFFFF else 1
        self._iters[iid] = rows[0] if len(rows) == 1 else self._chunks(rows)
        return iid

    # --- import definitions --------------------------------------------------------------------

    def _define_imports(self) -> None:
        impls: dict[str, _Callback] = {
            "table_id_from_name": self._imp_table_id_from_name,
            "index_id_from_name": self._imp_index_id_from_name,
            "datastore_table_row_count": self._imp_row_count,
            "datastore_table_scan_bsatn": self._imp_table_scan,
            "datastore_index_scan_range_bsatn": self._imp_index_scan_range,
            "datastore_btree_scan_bsatn": self._imp_index_scan_range,
            "datastore_delete_by_index_scan_range_bsatn": self._imp_delete_by_range,
            "datastore_delete_by_btree_scan_bsatn": self._imp_delete_by_range,
            "datastore_delete_all_by_eq_bsatn": self._imp_delete_all_by_eq,
            "row_iter_bsatn_advance": self._imp_iter_advance,
            "row_iter_bsatn_close": self._imp_iter_close,
            "datastore_insert_bsatn": self._imp_insert,
            "datastore_update_bsatn": self._imp_update,
            "volatile_nonatomic_schedule_immediate": self._imp_schedule_immediate,
            "bytes_sink_write": self._imp_sink_write,
            "bytes_source_read": self._imp_source_read,
            "console_log": self._imp_console_log,
            "console_timer_start": self._imp_timer_start,
            "console_timer_end": self._imp_timer_end,
            "identity": self._imp_identity,
            "bytes_source_remaining_length": self._imp_source_remaining,
            "get_jwt": self._imp_get_jwt,
            "procedure_sleep_until": self._imp_sleep_until,
            "procedure_start_mut_tx": self._imp_start_mut_tx,
            "procedure_commit_mut_tx": self._imp_commit_mut_tx,
            "procedure_abort_mut_tx": self._imp_abort_mut_tx,
            "procedure_http_request": self._imp_http_request,
            "datastore_index_scan_point_bsatn": self._imp_index_scan_point,
            "datastore_delete_by_index_scan_point_bsatn": self._imp_delete_by_point,
        }
        for module, name, params, results in wasm_abi.ABI_IMPORTS:
            functype = wasmtime.FuncType(params, results)
            impl, nparams, result_i64 = impls[name], len(params), results == [wasm_abi.I64]
            if self._hostcall is not None:
                hc = self._hostcall
                kind = hc.I64_RESULT if result_i64 else hc.U32_RESULT if results else hc.NO_RESULT
                cb = hc.HostFunc(impl, nparams, kind, self._host_failure, self._profile_box)
                callback, env = ctypes.c_void_p(cb.callback), ctypes.c_void_p(cb.env)
            else:
                cb = self._make_callback(impl, nparams, bool(results), result_i64)
                callback, env = cb, None
            m = module.encode()
            nm = name.encode()
            err = ffi.wasmtime_linker_define_func_unchecked(
                self.linker.ptr(), ctypes.create_string_buffer(m), len(m),
                ctypes.create_string_buffer(nm), len(nm), functype.ptr(),
                ctypes.cast(callback, ffi.wasmtime_func_unchecked_callback_t), env, _NOFIN,
            )
            if err:
                raise wasmtime.WasmtimeError._from_ptr(err)
            self._keep.extend((functype, cb))

    def _host_failure(self, e: BaseException) -> int:
        """A host import raised ``e`` (either route): keep it for the call's result and return
        the trap (its address) that stops the guest."""
        self._pending_exc = e
        message = str(e) if isinstance(e, HostTrap) else f"host error: {type(e).__name__}: {e}"
        return ctypes.cast(wasmtime.Trap(message)._consume(), ctypes.c_void_p).value or 0

    def _make_callback(self, impl: _Callback, nparams: int, has_result: bool, result_i64: bool) -> Any:
        """The ctypes route's callback for one import (without the C trampolines)."""
        host = self
        size = _SLOT_SIZE * max(1, nparams)
        unpack = struct.Struct("<" + ("q8x" if result_i64 else "I12x") * nparams).unpack_from
        # The slots seen as native u32 (i64) items: the result is stored as item 0, a plain
        # item assignment (struct's pack_into parses its arguments from a format string).
        item: Literal["q", "I"] = "q" if result_i64 else "I"
        views: dict[int, memoryview] = {}

        def slots(p: int) -> memoryview:
            if len(views) >= _MAX_SLOT_VIEWS:
                views.clear()
            mv = views[p] = memoryview((ctypes.c_ubyte * size).from_address(p)).cast("B").cast(item)
            return mv

        fail = host._host_failure

        if has_result and not result_i64:

            # The impls return u32 values (an i32 result's bits: -1 is _EXHAUSTED); anything else
            # fails the item store and traps. (Masking here cost ~350 instructions per call:
            # 0xFFFFFFFF is past CPython's fast path for small ints.)
            @_CALLBACK
            def cb(_env: Any, _caller: Any, p: int, _n: int) -> int:
                try:
                    try:
                        mv = views[p]  # a subscript costs less than .get()
                    except KeyError:
                        mv = slots(p)
                    if host.profile_ns is None:
                        mv[0] = impl(unpack(mv))
                    else:
                        t0 = time.perf_counter_ns()
                        mv[0] = impl(unpack(mv))
                        host.profile_ns[0] += time.perf_counter_ns() - t0
                        host.profile_ns[1] += 1
                    return 0
                except BaseException as e:  # noqa: BLE001 - any host failure traps the guest
                    return fail(e)

        elif result_i64:

            @_CALLBACK
            def cb(_env: Any, _caller: Any, p: int, _n: int) -> int:
                try:
                    mv = views.get(p) or slots(p)
                    mv[0] = impl(unpack(mv))
                    return 0
                except BaseException as e:  # noqa: BLE001
                    return fail(e)

        else:

            @_CALLBACK
            def cb(_env: Any, _caller: Any, p: int, _n: int) -> int:
                try:
                    impl(unpack(views.get(p) or slots(p)))
                    return 0
                except BaseException as e:  # noqa: BLE001
                    return fail(e)

        return cb

    # Each _imp_* takes its arguments as a tuple of unsigned ints (i64 ones: signed), in order.

    def _tx_or_none(self) -> Any:
        return self.tx

    def _imp_table_id_from_name(self, a: Any) -> int:
        name = self._read_str(a[0], a[1])
        out = a[2]
        if self.tx is None:
            return NOT_IN_TRANSACTION
        tid = self.hooks.table_id(name)
        if tid is None:
            return NO_SUCH_TABLE
        self.write_u32(out, tid)
        return 0

    def _imp_index_id_from_name(self, a: Any) -> int:
        name = self._read_str(a[0], a[1])
        out = a[2]
        if self.tx is None:
            return NOT_IN_TRANSACTION
        iid = self.hooks.index_id(name)
        if iid is None:
            return NO_SUCH_INDEX
        self.write_u32(out, iid)
        return 0

    def _imp_row_count(self, a: Any) -> int:
        table_id, out = a[0], a[1]
        tx = self.tx
        if tx is None:
            return NOT_IN_TRANSACTION
        errno, count = _datastore_call(tx.row_count, table_id)
        if errno:
            return errno
        self._check(out, 8)
        _U64.pack_into(self._mv, out, count)
        return 0

    def _imp_table_scan(self, a: Any) -> int:
        table_id, out = a[0], a[1]
        tx = self.tx
        if tx is None:
            return NOT_IN_TRANSACTION
        errno, rows = _datastore_call(tx.scan, table_id)
        if errno:
            return errno
        self.write_u32(out, self._new_iter(rows))
        return 0

    def _range_args(self, a: Any) -> tuple[int, bytes, int, bytes, bytes, int]:
        index_id = a[0]
        prefix_ptr, prefix_len, prefix_elems = a[1], a[2], a[3]
        if prefix_elems > 0xFFFF:
            raise HostTrap(f"prefix_elems {prefix_elems} does not fit a ColId (u16)")
        prefix = self.read(prefix_ptr, prefix_len) if prefix_elems else b""
        rstart = self.read(a[4], a[5])
        rend = self.read(a[6], a[7])
        return index_id, prefix, prefix_elems, rstart, rend, a[8]

    def _imp_index_scan_range(self, a: Any) -> int:
        index_id, prefix, elems, rstart, rend, out = self._range_args(a)
        tx = self.tx
        if tx is None:
            return NOT_IN_TRANSACTION
        errno, rows = _datastore_call(tx.index_scan_range, index_id, prefix, elems, rstart, rend)
        if errno:
            return errno
        self.write_u32(out, self._new_iter(rows))
        return 0

    def _imp_delete_by_range(self, a: Any) -> int:
        index_id, prefix, elems, rstart, rend, out = self._range_args(a)
        tx = self.tx
        if tx is None:
            return NOT_IN_TRANSACTION
        errno, count = _datastore_call(tx.delete_by_index_scan_range, index_id, prefix, elems, rstart, rend)
        if errno:
            return errno
        self.write_u32(out, count)
        return 0

    def _imp_index_scan_point(self, a: tuple[int, int, int, int]) -> int:
        # Hot path (every primary-key lookup): bounds checks are inlined.
        index_id, ptr, n, out = a
        if not (ptr and ptr + n <= self._size and out and out + 4 <= self._size):
            self._check(ptr, n)
            self._check(out, 4)
        tx = self.tx
        if tx is None:
            return NOT_IN_TRANSACTION
        try:
            rows = tx.index_scan_point_rows(index_id, self._mv[ptr : ptr + n].tobytes())
        except Exception as e:
            return _errno_of(e)
        iid = self._next_iter
        self._next_iter = iid + 1 if iid < 0xFFFFFFFF else 1
        if type(rows) is not bytes:  # bytes: the one row, the iterator's one chunk
            rows = rows[0] if len(rows) == 1 else self._chunks(rows)
        self._iters[iid] = rows
        _U32.pack_into(self._mv, out, iid)
        return 0

    def _delete_and_count(self, a: Any, operation: str) -> int:
        """`(id, bytes_ptr, bytes_len, out:u32 count)` deletes: run ``tx.<operation>`` and write the count."""
        ident = a[0]
        data = self.read(a[1], a[2])
        out = a[3]
        tx = self.tx
        if tx is None:
            return NOT_IN_TRANSACTION
        errno, count = _datastore_call(getattr(tx, operation), ident, data)
        if errno:
            return errno
        self.write_u32(out, count)
        return 0

    def _imp_delete_by_point(self, a: Any) -> int:
        return self._delete_and_count(a, "delete_by_index_scan_point")

    def _imp_delete_all_by_eq(self, a: Any) -> int:
        return self._delete_and_count(a, "delete_by_rel")

    def _imp_iter_advance(self, a: tuple[int, int, int]) -> int:
        iid, buf_ptr, len_ptr = a
        # Taken out, and put back only if it does not end here (a point scan's always does).
        # A trap on the way loses it, but a trap discards the instance and its iterators anyway.
        iters = self._iters
        chunks = iters.pop(iid, None)
        if chunks is None:
            return NO_SUCH_ITER
        size = self._size
        if not (len_ptr and len_ptr + 4 <= size):
            self._check(len_ptr, 4)
            size = self._size
        mv = self._mv
        cap: int = _U32.unpack_from(mv, len_ptr)[0]
        if not (buf_ptr and buf_ptr + cap <= size):
            self._check(buf_ptr, cap)
            mv = self._mv
        if type(chunks) is bytes:
            # One chunk left (always so for a point scan): the iterator ends if it fits.
            n = len(chunks)
            if n > cap:
                _U32.pack_into(mv, len_ptr, n)
                iters[iid] = chunks
                return BUFFER_TOO_SMALL
            mv[buf_ptr : buf_ptr + n] = chunks
            _U32.pack_into(mv, len_ptr, n)
            return _EXHAUSTED
        written = 0
        while chunks:
            chunk = chunks[0]
            n = len(chunk)
            if written + n > cap:
                break
            mv[buf_ptr + written : buf_ptr + written + n] = chunk
            written += n
            chunks.popleft()
        if not chunks:
            _U32.pack_into(mv, len_ptr, written)
            return _EXHAUSTED
        iters[iid] = chunks
        if written == 0:
            _U32.pack_into(mv, len_ptr, len(chunks[0]))
            return BUFFER_TOO_SMALL
        _U32.pack_into(mv, len_ptr, written)
        return 0

    def _imp_iter_close(self, a: Any) -> int:
        iid = a[0]
        if self._iters.pop(iid, None) is None:
            return NO_SUCH_ITER
        return 0

    def _imp_insert(self, a: Any) -> int:
        table_id, row_ptr, len_ptr = a[0], a[1], a[2]
        tx = self.tx
        if tx is None:
            return NOT_IN_TRANSACTION
        row = self.read(row_ptr, self.read_u32(len_ptr))
        try:
            stored, generated = tx.insert(table_id, row)
        except Exception as e:
            return _errno_of(e)
        if generated:
            self.write(row_ptr, generated)
        self.write_u32(len_ptr, len(generated))
        return self.hooks.after_row_write(tx, table_id, stored) if table_id in self.schedule_tables else 0

    def _imp_update(self, a: tuple[int, int, int, int]) -> int:
        table_id, index_id, row_ptr, len_ptr = a
        tx = self.tx
        if tx is None:
            return NOT_IN_TRANSACTION
        size = self._size
        if not (len_ptr and len_ptr + 4 <= size):
            self._check(len_ptr, 4)
        n: int = _U32.unpack_from(self._mv, len_ptr)[0]
        if not (row_ptr and row_ptr + n <= size):
            self._check(row_ptr, n)
        row = self._mv[row_ptr : row_ptr + n].tobytes()
        try:
            stored, generated = tx.update(table_id, index_id, row)
        except Exception as e:
            return _errno_of(e)
        if generated:
            self.write(row_ptr, generated)
        _U32.pack_into(self._mv, len_ptr, len(generated))
        return self.hooks.after_row_write(tx, table_id, stored) if table_id in self.schedule_tables else 0

    def _imp_schedule_immediate(self, a: Any) -> None:
        name = self._read_str(a[0], a[1])
        args = self.read(a[2], a[3])
        self.hooks.schedule_immediate(name, args)

    def _imp_sink_write(self, a: Any) -> int:
        sink, buf_ptr, len_ptr = a[0], a[1], a[2]
        if sink != 1 or self._sink is None:
            return NO_SUCH_BYTES
        n = self.read_u32(len_ptr)
        self._sink += self.read(buf_ptr, n)
        return 0

    def _imp_source_read(self, a: tuple[int, int, int]) -> int:
        sid, buf_ptr, len_ptr = a
        src = self._sources.get(sid)
        if src is None:
            return NO_SUCH_BYTES
        if not (len_ptr and len_ptr + 4 <= self._size):
            self._check(len_ptr, 4)
        cap: int = _U32.unpack_from(self._mv, len_ptr)[0]
        data, pos = src
        total = len(data)
        n = min(cap, total - pos)
        if not (buf_ptr and buf_ptr + n <= self._size):
            self._check(buf_ptr, n)
        mv = self._mv
        if n:
            mv[buf_ptr : buf_ptr + n] = data[pos : pos + n] if pos or n != total else data
        _U32.pack_into(mv, len_ptr, n)
        pos += n
        if pos >= total:
            del self._sources[sid]
            return _EXHAUSTED
        src[1] = pos
        return 0

    def _imp_source_remaining(self, a: Any) -> int:
        sid, out = a[0], a[1]
        src = self._sources.get(sid)
        if src is None:
            return NO_SUCH_BYTES
        self.write_u32(out, len(src[0]) - src[1])
        return 0

    def _lossy(self, ptr: int, n: int) -> str | None:
        if ptr == 0:
            return None
        try:
            self._check(ptr, n)
        except HostTrap:
            raise _DropRecord() from None
        return self._mv[ptr : ptr + n].tobytes().decode("utf-8", errors="replace")

    def _imp_console_log(self, a: Any) -> None:
        level = a[0]
        try:
            target = self._lossy(a[1], a[2])
            filename = self._lossy(a[3], a[4])
            msg_ptr = a[6]
            if msg_ptr == 0:
                return
            message = self._lossy(msg_ptr, a[7]) or ""
        except _DropRecord:
            return  # console_log never traps: an out-of-bounds record is dropped
        line = a[5]
        record: dict[str, Any] = {
            "level": level_name(level),
            "message": message,
            "function": self.function_name,
            "target": target,
            "filename": filename,
            "line_number": None if line == 0xFFFFFFFF else line,
        }
        self.hooks.module_log(record)

    def _imp_timer_start(self, a: Any) -> int:
        name = self.read(a[0], a[1]).decode("utf-8", errors="replace")
        tid = self._next_timer
        self._next_timer += 1
        self._timers[tid] = (name, time.perf_counter())
        return tid & 0xFFFFFFFF

    def _imp_timer_end(self, a: Any) -> int:
        entry = self._timers.pop(a[0], None)
        if entry is None:
            return NO_SUCH_CONSOLE_TIMER
        name, start = entry
        message = f'Timing span "{name}": {_format_duration(time.perf_counter() - start)}'
        self.hooks.module_log({"level": "Info", "message": message, "function": self.function_name})
        return 0

    def _imp_identity(self, a: Any) -> None:
        self.write(a[0], self.hooks.database_identity)

    def _imp_get_jwt(self, a: Any) -> int:
        conn = self.read(a[0], 16)
        out = a[1]
        if self.tx is None:
            return NOT_IN_TRANSACTION
        payload = self.hooks.jwt_payload(int.from_bytes(conn, "little"))
        self.write_u32(out, self._new_source(payload) if payload else 0)
        return 0

    # Procedures are not supported yet (they are unstable in 1.12); the imports link so that
    # official modules instantiate, and answer as the reference does when called from a reducer.

    def _imp_sleep_until(self, a: Any) -> int:
        return time.time_ns() // 1000

    def _imp_start_mut_tx(self, a: Any) -> int:
        if self.tx is not None:
            return WOULD_BLOCK_TRANSACTION
        raise HostTrap("procedures are not supported by this host")

    def _imp_commit_mut_tx(self, a: Any) -> int:
        return TRANSACTION_NOT_ANONYMOUS

    def _imp_abort_mut_tx(self, a: Any) -> int:
        return TRANSACTION_NOT_ANONYMOUS

    def _imp_http_request(self, a: Any) -> int:
        if self.tx is not None:
            return WOULD_BLOCK_TRANSACTION
        raise HostTrap("procedures are not supported by this host")


class _DropRecord(Exception):
    pass


def _datastore_call(fn: Callable[..., Any], *args: Any) -> tuple[int, Any]:
    """Run a datastore operation; map its errno-carrying errors to (errno, None)."""
    try:
        return 0, fn(*args)
    except Exception as e:
        return _errno_of(e), None


def _errno_of(e: Exception) -> int:
    """The ABI errno carried by a datastore/SATS error; anything else is re-raised (→ trap)."""
    errno = getattr(e, "errno", None)
    if isinstance(errno, int) and errno > 0 and type(e).__module__.startswith(("hostnode", "sats")):
        return errno
    raise e
