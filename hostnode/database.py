"""One database replica: module host + LMDB datastore + commit log, driven in-process.

This is the engine the host-node service wraps. It is deliberately synchronous and
single-threaded for writes: every mutating method must be called from one thread (the
database's writer thread, see :class:`hostnode.worker.DatabaseWorker`). Durability is
asynchronous: a committed transaction is appended to the commit log and its offset returned;
the group committer fsyncs in the background and ``wait_durable(offset)`` (or a callback) tells
the caller when it may acknowledge.

Directory layout of a replica::

    <dir>/lmdb/        the datastore (materialised state, records the last applied log offset)
    <dir>/clog/        the commit log (the truth)
    <dir>/module.log   module logs, JSON lines

Recovery on open: the datastore is at some applied offset A (it is only checkpointed after the
commit log is durable past A, so it is never ahead of the log); every log record after A is
replayed. The program and schema come back from the datastore (or from the replayed INSTALL
record).
"""

from __future__ import annotations

import enum
import heapq
import logging
import shutil
import struct
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hostnode.budgets import DEFAULT_FUEL_BUDGET, DEFAULT_TIME_BUDGET_S
from hostnode.commitlog import CommitLog, GroupCommitter
from hostnode.datastore import Datastore, DatastoreError
from hostnode.durability import Durability, NoQuorum
from hostnode.migrate import MigrationError, MigrationPlan, check_policy, migration_token, plan_update
from hostnode.moduledef import Lifecycle, ModuleDef, ModuleDefError, decode_raw_module_def, validate
from hostnode.modulelog import DEFAULT_KEEP, DEFAULT_MAX_BYTES, ModuleLog
from hostnode.schema_build import ST_CLIENT, SystemTables, build_schemas
from hostnode.stats import ABI_SAMPLE_EVERY, DatabaseStats, TxnStats
from hostnode.txdata import TxData
from hostnode.txrecord import RecordKind, TxRecord, record_head, record_parts, record_txdata
from hostnode.wasm_host import (
    DEFAULT_MEMORY_LIMIT,
    FATAL_ERROR_MESSAGE,
    SCHEDULE_AT_DELAY_TOO_LONG,
    ModuleHost,
    ModuleLoadError,
    WasmProgram,
    memory_limit_message,
)
from sats.bsatn import Codec, codec_for
from sats.errors import DecodeError
from sats.identity import Identity
from sats.types import INT_LAYOUT, PrimitiveType, ProductType, SumValue, TypeTag

log: Final = logging.getLogger(__name__)

META_PROGRAM: Final = b"program"
META_OWNER: Final = b"owner"
META_IDENTITY: Final = b"database_identity"

_ABI_SAMPLE_MASK: Final = ABI_SAMPLE_EVERY - 1
#: An identity's 32 BSATN bytes as ``__call_reducer__``'s four sender words (Identity.sender_words).
_FOUR_U64: Final = struct.Struct("<4Q")
assert not ABI_SAMPLE_EVERY & _ABI_SAMPLE_MASK, "ABI_SAMPLE_EVERY must be a power of two"

#: ScheduleAt delays at or beyond this many milliseconds are refused (module-abi.md §8).
MAX_SCHEDULE_DELAY_MICROS: Final = ((1 << 36) - 1) * 1000


class DatabaseError(Exception):
    """Base class of errors a caller of the engine can act on."""


class NoSuchReducer(DatabaseError):
    """The module has no reducer of that name."""


class LifecycleReducerCall(DatabaseError):
    """A client tried to call a lifecycle reducer (init / connect / disconnect)."""


class InvalidArguments(DatabaseError):
    """Reducer arguments do not decode against the reducer's parameters."""


class InitFailed(DatabaseError):
    """The module's init reducer failed; nothing was created."""


class DatabaseClosed(DatabaseError):
    """The database has been closed."""


class Status(enum.Enum):
    """The outcome of a reducer call (the WebSocket `UpdateStatus`)."""

    COMMITTED = "committed"
    FAILED = "failed"
    OUT_OF_ENERGY = "out_of_energy"


#: Enum members as module constants for the per-call path: Python 3.11's enum metaclass defines
#: ``__getattr__``, so reading ``Status.COMMITTED`` takes the slow attribute hook (~70 ns, a global ~5).
_COMMITTED: Final = Status.COMMITTED
_REDUCER_RECORD: Final = RecordKind.REDUCER


@dataclass(slots=True, init=False)
class ReducerOutcome:
    """What happened when a reducer ran.

    (``__init__`` written out: the one ``dataclass`` generates is interpreted Python even in
    the compiled engine, ~4,000 instructions of every reducer call.)"""

    status: Status
    message: str
    reducer: str
    reducer_id: int | None
    caller: Identity
    connection_id: int
    timestamp_micros: int
    args: bytes
    energy_used: int
    duration_micros: int
    offset: int | None = None  # commit-log offset when committed (None if nothing was logged)
    txdata: TxData | None = None
    #: It trapped near the linear-memory cap (the message names it).
    out_of_memory: bool = False

    def __init__(
        self, status: Status, message: str, reducer: str, reducer_id: int | None, caller: Identity,
        connection_id: int, timestamp_micros: int, args: bytes, energy_used: int, duration_micros: int,
        offset: int | None = None, txdata: TxData | None = None, out_of_memory: bool = False,
    ) -> None:  # fmt: skip
        self.status = status
        self.message = message
        self.reducer = reducer
        self.reducer_id = reducer_id
        self.caller = caller
        self.connection_id = connection_id
        self.timestamp_micros = timestamp_micros
        self.args = args
        self.energy_used = energy_used
        self.duration_micros = duration_micros
        self.offset = offset
        self.txdata = txdata
        self.out_of_memory = out_of_memory

    @property
    def committed(self) -> bool:
        """True when the transaction committed."""
        return self.status is _COMMITTED


@dataclass(slots=True)
class DatabaseConfig:
    """Tunables of one database replica."""

    #: Fuel (1.12's energy) each call starts with; a call that uses it all is out of energy.
    fuel_budget: int = DEFAULT_FUEL_BUDGET
    #: Wall-clock seconds one call may run (host imports included); past it the call is stopped
    #: and fails, rolled back, naming this setting (README, "Limits").
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    #: Cap on the module's linear memory in bytes (README, "Limits"): a `memory.grow` past it
    #: fails, and a call that then traps fails with a message naming this setting.
    max_memory_bytes: int = DEFAULT_MEMORY_LIMIT
    epoch: int = 1
    segment_bytes: int = 64 << 20
    # At most one commit-log fsync per this many seconds (group commit); 0 = back to back.
    group_commit_interval_s: float = 0.002
    # LMDB checkpoints (commit the outer txn so readers see new state); each waits for the log
    # and fsyncs the LMDB data (under uniform load nearly every leaf page is dirty: ~10 MB for
    # 100k accounts), hence once a second under sustained load. An idle writer checkpoints
    # after 20 ms anyway, and /sql checkpoints on demand, so readers never see stale state.
    checkpoint_every_txs: int = 50_000
    checkpoint_every_s: float = 1.0
    #: An idle writer checkpoints after this quiet spell (hostnode/worker.py).
    idle_checkpoint_s: float = 0.02
    lmdb_map_size: int = 1 << 34
    #: Cluster mode: durability is a quorum's (docs/cluster.md). Checkpoints then wait at most
    #: ``checkpoint_wait_s`` for the quorum and are skipped when it does not answer in time
    #: (LMDB must never hold a transaction a failover could still undo); the checkpoints of
    #: install, update and recovery do not wait at all (the replication streams may not run yet).
    replicated: bool = False
    checkpoint_wait_s: float = 2.0
    #: The module log is rotated at this size, keeping this many rotated files (README, "Limits").
    module_log_max_bytes: int = DEFAULT_MAX_BYTES
    module_log_keep: int = DEFAULT_KEEP


@dataclass(order=True, slots=True)
class _Timer:
    fire_at: int
    table_id: int = field(compare=False)
    schedule_id: int = field(compare=False)
    generation: int = field(compare=False)


def _now_micros() -> int:
    return time.time_ns() // 1000


class Database:
    """One database replica. See the module docstring for threading and durability rules."""

    def __init__(self, path: Path, config: DatabaseConfig, hooks: ReplicationHooks | None = None) -> None:
        # Use Database.create / Database.open.
        self.path = path
        self.config = config
        self.datastore: Datastore = Datastore(path / "lmdb", map_size=config.lmdb_map_size)
        self.clog: CommitLog = CommitLog.open(path / "clog", segment_size=config.segment_bytes)
        self.committer = GroupCommitter(self.clog, min_interval=config.group_commit_interval_s)
        #: The one thing every caller waits on before acknowledging (hostnode/durability.py).
        self.durability: Durability = self.committer
        #: Called (writer thread) with (epoch, offset, payload) of every appended record.
        self._on_append: Callable[[int, int, bytes], None] | None = None
        #: Returns why writes must be refused right now (no quorum, leadership ending), or None.
        self.write_gate: Callable[[], str | None] | None = None
        if hooks is not None:
            try:
                self.durability = hooks.durability(self.committer, self.clog)
            except BaseException:
                self._close_quietly()
                raise
            self._on_append = hooks.on_append
            self.write_gate = hooks.write_gate
        self.logs = ModuleLog(path / "module.log", max_bytes=config.module_log_max_bytes, keep=config.module_log_keep)
        self.identity = Identity.ZERO
        self.owner = Identity.ZERO
        self.moduledef: ModuleDef | None = None
        self.program_bytes = b""
        self.host: ModuleHost | None = None
        self.system = SystemTables()
        self._table_ids: dict[str, int] = {}
        self._index_ids: dict[str, int] = {}
        self._reducer_ids: dict[str, int] = {}
        self._callable_ids: dict[str, int] = {}
        self._checkpoint_txs = config.checkpoint_every_txs
        self._arg_codecs: list[Codec] = []
        #: Per reducer: the argument size when any bytes of that size decode (integers and
        #: floats only), else -1.
        self._arg_sizes: list[int] = []
        self._row_codecs: dict[int, Codec] = {}
        self._schedule_tables: dict[int, Any] = {}  # table_id -> TableSchema
        self._timers: list[_Timer] = []
        self._timer_gen: dict[tuple[int, int], int] = {}
        self._pending_arms: list[tuple[int, int, int]] = []
        self._immediate: list[tuple[str, bytes]] = []
        self._jwt: dict[int, bytes] = {}
        #: The module has looked ``st_client`` (or an index of it) up by name: it may read the
        #: table (see _run_transient), and the pending insert to run when it first does.
        self.st_client_named = False
        self._on_st_client_named: Callable[[], None] | None = None
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._last_offset = self.clog.next_offset - 1
        self._closed = False
        self._writer_lock = threading.RLock()
        self.on_commit: list[Callable[[ReducerOutcome], None]] = []
        #: Called (writer thread) after :meth:`update_program` replaced the module.
        self.on_program_update: list[Callable[[MigrationPlan], None]] = []
        #: What this database counts (hostnode/stats.py; exported by hostnode/metrics.py).
        self.stats = DatabaseStats()
        self._reducer_stats = self.stats.reducers
        #: The last caller of a reducer with its BSATN and sender words: a client calls again and
        #: again with the same Identity object, and converting a u256 costs two C calls per call.
        self._last_caller: tuple[Identity | None, bytes, tuple[int, int, int, int]] = (None, b"", (0, 0, 0, 0))
        #: Reducer name → the head of its REDUCER records (txrecord.record_head).
        self._record_heads: dict[str, bytes] = {}
        #: ``time.perf_counter()`` when the writer's current job was queued (0: not known). The
        #: worker sets it; reducer calls count the difference as their wait.
        self.queued_at = 0.0

    # --- creation and opening -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        program: bytes,
        *,
        owner: Identity,
        identity: Identity,
        config: DatabaseConfig | None = None,
        timestamp_micros: int | None = None,
        hooks: ReplicationHooks | None = None,
    ) -> tuple[Database, ReducerOutcome | None]:
        """Create a database in the empty directory ``path``: install the program and run init.

        On any failure (bad wasm, invalid module, init error) the directory is removed and a
        ModuleLoadError / InitFailed is raised, so nothing is left behind.
        """
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise DatabaseError(f"database directory {path} is not empty")
        path.mkdir(parents=True, exist_ok=True)
        config = config or DatabaseConfig()
        db: Database | None = None
        try:
            wasm = WasmProgram.compile(program)
            db = cls(path, config, hooks)
            db.identity, db.owner = identity, owner
            outcome = db._install(
                program, wasm, _now_micros() if timestamp_micros is None else timestamp_micros
            )
            return db, outcome
        except BaseException:
            if db is not None:
                db._close_quietly()
            shutil.rmtree(path, ignore_errors=True)
            raise

    @classmethod
    def open(
        cls, path: Path, config: DatabaseConfig | None = None, hooks: ReplicationHooks | None = None
    ) -> Database:
        """Open an existing database, replaying the commit log past the datastore's checkpoint."""
        path = Path(path)
        if not (path / "clog").is_dir():
            raise DatabaseError(f"{path} is not a database directory")
        started = time.perf_counter()
        db = cls(path, config or DatabaseConfig(), hooks)
        try:
            db._recover()
        except BaseException:
            db._close_quietly()
            raise
        db.stats.replay_seconds = time.perf_counter() - started
        return db

    def _install(self, program: bytes, wasm: WasmProgram, timestamp: int) -> ReducerOutcome | None:
        self._load_program(program, wasm)
        mdef = self.moduledef
        assert mdef is not None and self.host is not None
        tx = self.datastore.begin_mut()
        try:
            for schema in build_schemas(mdef, self.system):
                tx.create_table(schema)
            tx.put_meta(META_PROGRAM, program)
            tx.put_meta(META_OWNER, self.owner.to_bsatn())
            tx.put_meta(META_IDENTITY, self.identity.to_bsatn())
        except BaseException:
            tx.rollback()
            raise
        self._refresh_ids(tx)
        outcome: ReducerOutcome | None = None
        init = mdef.lifecycle_reducer(Lifecycle.INIT)
        if init is not None:
            outcome = self._run_reducer_in(tx, init.name, b"", self.owner, 0, timestamp)
            if not outcome.committed:
                tx.rollback()
                if outcome.out_of_memory:
                    # Not a failure of the module's logic: it cannot run here as configured.
                    raise ModuleLoadError(outcome.message)
                raise InitFailed(outcome.message or "init failed")
        txdata = tx.commit()
        self._refresh_ids()
        record = TxRecord(
            # For INSTALL records `args` holds the database identity.
            RecordKind.INSTALL,
            init.name if init else "",
            self.owner.to_bsatn(),
            bytes(16),
            timestamp,
            self.identity.to_bsatn(),
            program,
            txdata.encode(),
        )
        offset = self._append(record)
        if outcome is not None:
            outcome.offset, outcome.txdata = offset, txdata
        self._arm_pending()
        self.checkpoint(wait=not self.config.replicated)
        return outcome

    def update_program(
        self, program: bytes, *, token: bytes | None = None, timestamp_micros: int | None = None
    ) -> MigrationPlan:
        """Replace the module with a new version, migrating the schema automatically (§10).

        The update itself runs no reducer (no init). Then the ``on_program_update`` callbacks get
        the plan: the realtime hub disconnects its clients there (running ``client_disconnected``)
        or recompiles their queries. ``token`` is the caller's consent to disconnect clients
        (:func:`hostnode.migrate.check_policy`); republishing the running program needs none.
        Raises ModuleLoadError for a bad program, MigrationError when the schema change needs a
        manual migration and MigrationPolicyError when the policy refuses the plan; in each
        case nothing changes.
        """
        self._check_open()
        wasm = WasmProgram.compile(program)
        host = self.new_host(wasm)
        describe = host.instantiate()
        try:
            mdef = validate(decode_raw_module_def(describe))
        except (ModuleDefError, DecodeError) as e:
            raise ModuleLoadError(f"invalid module definition: {e}") from None
        plan = plan_update(self.datastore.tables(), mdef, old_rls=self.row_level_security)
        if program != self.program_bytes:
            check_policy(plan, token, migration_token(self.identity, self.program_bytes, program))
        tx = self.datastore.begin_mut()
        try:
            for index_id in plan.drop_indexes:
                tx.drop_index(index_id)
            for schema in plan.create_tables:
                tx.create_table(schema)
            for index in plan.create_indexes:
                tx.create_index(index)
            tx.put_meta(META_PROGRAM, program)
        except BaseException:
            tx.rollback()
            raise
        txdata = tx.commit()
        ts = _now_micros() if timestamp_micros is None else timestamp_micros
        self._append(
            TxRecord(
                RecordKind.INSTALL, "", self.owner.to_bsatn(), bytes(16), ts, self.identity.to_bsatn(), program,
                txdata.encode(),
            )
        )
        if self.host is not None:
            self.host.discard_instance()
        self.host = None
        self._install_moduledef(host, mdef, program)
        self._refresh_ids()
        self.checkpoint(wait=not self.config.replicated)
        for cb in self.on_program_update:
            cb(plan)
        return plan

    def new_host(self, wasm: WasmProgram) -> ModuleHost:
        """A module host for ``wasm`` under this database's call budget and memory cap."""
        return ModuleHost(
            wasm, self, fuel_budget=self.config.fuel_budget, memory_limit=self.config.max_memory_bytes,
            time_budget_s=self.config.time_budget_s,
        )

    def _load_program(self, program: bytes, wasm: WasmProgram | None = None) -> None:
        wasm = wasm or WasmProgram.compile(program)
        host = self.new_host(wasm)
        describe = host.instantiate()
        try:
            mdef = validate(decode_raw_module_def(describe))
        except (ModuleDefError, DecodeError) as e:
            raise ModuleLoadError(f"invalid module definition: {e}") from None
        self._install_moduledef(host, mdef, program)

    def _install_moduledef(self, host: ModuleHost, mdef: ModuleDef, program: bytes) -> None:
        self.moduledef = mdef
        self.host = host
        self.program_bytes = program
        self._reducer_ids = {r.name: i for i, r in enumerate(self.moduledef.reducers)}
        self._callable_ids = {r.name: i for i, r in enumerate(self.moduledef.reducers) if r.lifecycle is None}
        self._arg_codecs = [codec_for(r.params, self.moduledef.typespace) for r in self.moduledef.reducers]
        self._arg_sizes = [_any_bytes_size(r.params, c) for r, c in zip(mdef.reducers, self._arg_codecs, strict=True)]

    def _refresh_ids(self, tx: Any = None) -> None:
        tables = (tx or self.datastore).tables()
        self._table_ids = {t.name: t.table_id for t in tables.values()}
        self._index_ids = {i.name: i.index_id for t in tables.values() for i in t.indexes}
        self._row_codecs = {t.table_id: codec_for(t.row_type, t.typespace) for t in tables.values()}
        self._schedule_tables = {t.table_id: t for t in tables.values() if t.schedule is not None}
        if self.host is not None:
            self.host.schedule_tables = frozenset(self._schedule_tables)

    def _recover(self) -> None:
        start = self.datastore.applied_offset()
        replayed = 0
        if self.clog.first_offset > start + 1:
            raise DatabaseError(
                f"{self.path}: the commit log starts at offset {self.clog.first_offset} but the datastore "
                f"holds only up to {start}: records are missing"
            )
        for rec in self.clog.read_from(start + 1):
            replay_payload(self.datastore, rec.payload)
            replayed += 1
            self._last_offset = rec.offset
        program = self.datastore.get_meta(META_PROGRAM)
        if program is None:
            raise DatabaseError(f"{self.path}: no program installed (creation never completed)")
        self.owner = Identity.from_bsatn(self.datastore.get_meta(META_OWNER) or bytes(32))
        self.identity = Identity.from_bsatn(self.datastore.get_meta(META_IDENTITY) or bytes(32))
        self._load_program(program)
        self._refresh_ids()
        if replayed:
            log.info("replayed %d commit-log records for %s", replayed, self.path)
        self.checkpoint(wait=not self.config.replicated)
        self._arm_all_schedules()
        self._disconnect_stale_clients()

    def initial_program(self) -> bytes | None:
        """The program the database was created with: the first record of its commit log, the
        creating INSTALL. None when the log does not start there."""
        if self.clog.first_offset != 0 or self.clog.next_offset == 0:
            return None
        for rec in self.clog.read_from(0, 1):
            txr = TxRecord.decode(rec.payload)
            return txr.program if txr.kind is RecordKind.INSTALL else None
        return None

    @property
    def row_level_security(self) -> tuple[str, ...]:
        """The running module's row-level-security rules (their SQL text)."""
        return self.moduledef.row_level_security if self.moduledef is not None else ()

    # --- HostHooks (called by the module host during a call) ---------------------------------

    @property
    def database_identity(self) -> bytes:
        """The database identity as 32 little-endian bytes (for the `identity` import)."""
        return self.identity.to_bsatn()

    def table_id(self, name: str) -> int | None:
        """Table id by name, for `table_id_from_name`."""
        if name == ST_CLIENT:
            self._st_client_looked_up()
        return self._table_ids.get(name)

    def table_names(self) -> dict[int, str]:
        """Every table's name by id (any thread: a snapshot)."""
        return {tid: name for name, tid in list(self._table_ids.items())}

    def index_id(self, name: str) -> int | None:
        """Index id by name, for `index_id_from_name`."""
        if name.startswith(ST_CLIENT):
            self._st_client_looked_up()
        return self._index_ids.get(name)

    def after_row_write(self, tx: Any, table_id: int, row: bytes) -> int:
        """Arm schedule rows (on commit) and refuse delays that are too long."""
        schema = self._schedule_tables.get(table_id)
        if schema is None:
            return 0
        values = self._row_codecs[table_id].decode_all(row)
        at: SumValue = values[schema.schedule.scheduled_at_column]
        schedule_id = values[schema.primary_key]
        now = max(self._call_timestamp, _now_micros())
        if at.tag == 0:  # Interval
            delay = abs(at.value[0])
        else:  # Time
            delay = max(0, at.value[0] - now)
        if delay >= MAX_SCHEDULE_DELAY_MICROS:
            return SCHEDULE_AT_DELAY_TOO_LONG
        self._pending_arms.append((now + delay, table_id, schedule_id))
        return 0

    _call_timestamp = 0

    def jwt_payload(self, connection_id: int) -> bytes | None:
        """The JWT payload recorded when that connection connected."""
        return self._jwt.get(connection_id)

    def schedule_immediate(self, reducer: str, args: bytes) -> None:
        """Queue a reducer to run after the current call, in its own transaction."""
        self._immediate.append((reducer, args))

    def module_log(self, record: dict[str, Any]) -> None:
        """Write a module log line."""
        self.module_log_write(**record)

    def module_log_write(self, level: str, message: str, **kw: Any) -> None:
        """Write a module log line with optional target/filename/line_number/function."""
        self.logs.write(level, message, **{k: v for k, v in kw.items() if v is not None})

    # --- reducers -----------------------------------------------------------------------------

    def arg_codec(self, reducer_id: int) -> Codec:
        """The BSATN codec of reducer ``reducer_id``'s arguments (writer thread: a program update
        replaces it)."""
        return self._arg_codecs[reducer_id]

    def reducer_params(self, name: str) -> Any:
        """The params ProductType of a reducer (for JSON argument decoding)."""
        rid = self._reducer_ids.get(name)
        if rid is None or self.moduledef is None:
            raise NoSuchReducer(f"no such reducer `{name}`")
        return self.moduledef.reducers[rid].params

    def call_reducer(
        self,
        name: str,
        args: bytes,
        *,
        caller: Identity,
        connection_id: int = 0,
        timestamp_micros: int | None = None,
        transient_client: bool = False,
    ) -> ReducerOutcome:
        """Run a client-callable reducer in its own transaction (module-abi.md §6).

        ``transient_client``: the caller is connected for this call only (HTTP ``/call``) and the
        module has no connect/disconnect lifecycle reducers (:attr:`has_client_lifecycle`). Its
        ``st_client`` row then lives inside the reducer's transaction (:meth:`_run_transient`):
        the reducer sees it as it would after a separate connect, while the pair nets to nothing:
        no connect and disconnect transactions, no commit-log records of their own.
        """
        if self._closed:
            raise DatabaseClosed(f"database {self.path} is closed")
        if self.write_gate is not None:
            self._check_writable()
        rid = self._callable_ids.get(name)
        if rid is None:
            if name in self._reducer_ids:
                lifecycle = self.moduledef.reducers[self._reducer_ids[name]].lifecycle  # type: ignore[union-attr]
                kind = lifecycle.json_name if lifecycle is not None else "lifecycle"
                # The text the 1.12 HTTP API answers with (client-api.md §6.8).
                raise LifecycleReducerCall(f"can't directly call special {kind} lifecycle reducer")
            raise NoSuchReducer(f"no such reducer `{name}`")
        if len(args) != self._arg_sizes[rid]:  # else every byte string of this length is valid
            try:
                self._arg_codecs[rid].decode_all(args)
            except DecodeError as e:
                raise InvalidArguments(f"invalid arguments for reducer `{name}`: {e}") from None
        ts = time.time_ns() // 1000 if timestamp_micros is None else timestamp_micros
        if transient_client:
            outcome = self._run_transient(name, args, caller, connection_id, ts)
        else:
            outcome = self._run_reducer(name, args, caller, connection_id, ts)
        if self._immediate:
            self._drain_immediate()
        return outcome

    def _run_transient(self, name: str, args: bytes, caller: Identity, connection_id: int, ts: int) -> ReducerOutcome:
        """Run a reducer for a caller connected for this call only (``transient_client``).

        Its ``st_client`` row is inserted only where the reducer could read it: a module reads
        ``st_client`` only through an id it looked up by name, so until it first does
        (:attr:`st_client_named`) the row is inserted at that lookup, before any read can
        happen, and from then on before every such call. It is deleted again before the commit.
        Most modules never look, and never pay for the row (a quarter of the writer's time per
        HTTP call).
        """
        row = self.system.client_row(caller, connection_id)
        client_table = self.system.client_table_id
        inserted: list[bool] = []

        def insert(tx: Any) -> None:
            tx.insert(client_table, row)
            inserted.append(True)

        def before(tx: Any) -> None:
            if self.st_client_named:
                insert(tx)
            else:
                self._on_st_client_named = lambda: insert(tx)

        def after(tx: Any) -> None:
            if inserted:
                tx.delete_row(client_table, row)

        try:
            return self._run_reducer(name, args, caller, connection_id, ts, before=before, after=after)
        finally:
            self._on_st_client_named = None

    def _st_client_looked_up(self) -> None:
        self.st_client_named = True
        pending, self._on_st_client_named = self._on_st_client_named, None
        if pending is not None:
            pending()

    def _run_reducer(
        self,
        name: str,
        args: bytes,
        caller: Identity,
        connection_id: int,
        timestamp: int,
        before: Callable[[Any], object] | None = None,
        after: Callable[[Any], object] | None = None,
    ) -> ReducerOutcome:
        # ``before`` runs in the transaction before the reducer, ``after`` once it succeeded.
        started = time.perf_counter()
        st = self._reducer_stats.get(name) or self.stats.reducer(name)
        host = self.host
        assert host is not None
        tx = self.datastore.begin_mut()
        # One call in ABI_SAMPLE_EVERY times its host calls (hostnode/stats.py), unless a profiler
        # times them all already.
        sample = None
        if not (st.committed + st.failed) & _ABI_SAMPLE_MASK and host.profile_ns is None:
            sample = host.profile_ns = [0, 0]
        try:
            if before is not None:
                before(tx)
            rid = self._reducer_ids[name]
            self._call_timestamp = timestamp
            last = self._last_caller
            if last[0] is not caller:
                bsatn = caller.to_bsatn()
                last = self._last_caller = (caller, bsatn, _FOUR_U64.unpack(bsatn))
            res = host.call_reducer(rid, last[2], connection_id, timestamp, args, tx, name)
            if res.code == 0:
                # The common case, kept flat: it runs for every committed reducer.
                if after is not None:
                    after(tx)
                outcome = ReducerOutcome(
                    _COMMITTED, "", name, rid, caller, connection_id, timestamp, args, res.fuel_used,
                    res.duration_micros,
                )
            else:
                outcome = self._failed_outcome(res, name, rid, caller, connection_id, timestamp, args)
        except BaseException:
            tx.rollback()
            self._pending_arms.clear()
            raise
        finally:
            if sample is not None:
                # This call stands for the calls since the previous sample (counted ones only).
                host.profile_ns = None
                st.abi_us += sample[0] * (st.calls + 1 - st.abi_calls) // 1000
                st.abi_calls = st.calls + 1
        if outcome.status is _COMMITTED:
            self._commit(outcome, tx.commit(), _REDUCER_RECORD, st)
        else:
            tx.rollback()
            self._pending_arms.clear()
            st.failed += 1
            if res.trapped:
                st.traps += 1
            self._maybe_checkpoint()
        st.energy += res.fuel_used
        st.wasm_us += res.duration_micros
        # Histogram.observe, inlined: this runs for every reducer call.
        h = st.elapsed
        elapsed = time.perf_counter() - started
        h.counts[bisect_left(h.bounds, elapsed)] += 1
        h.sum += elapsed
        if self.queued_at:
            st.wait.observe(started - self.queued_at)
        if self.on_commit:
            for cb in self.on_commit:
                cb(outcome)
        return outcome

    def _run_reducer_in(
        self, tx: Any, name: str, args: bytes, caller: Identity, connection_id: int, timestamp: int
    ) -> ReducerOutcome:
        """Run a reducer inside ``tx`` (the caller commits or rolls back)."""
        assert self.host is not None
        rid = self._reducer_ids[name]
        self._call_timestamp = timestamp
        res = self.host.call_reducer(rid, caller.sender_words(), connection_id, timestamp, args, tx, name)
        if res.code == 0:
            return ReducerOutcome(
                Status.COMMITTED, "", name, rid, caller, connection_id, timestamp, args, res.fuel_used,
                res.duration_micros,
            )
        return self._failed_outcome(res, name, rid, caller, connection_id, timestamp, args)

    def _failed_outcome(
        self, res: Any, name: str, rid: int, caller: Identity, connection_id: int, timestamp: int, args: bytes
    ) -> ReducerOutcome:
        out_of_memory = False
        if res.trapped and res.out_of_memory:
            # 1.12 answers every trap with FATAL_ERROR_MESSAGE; a refused memory.grow has a
            # cause the caller can act on, so it is named.
            out_of_memory = True
            status = Status.FAILED
            message = f"reducer `{name}` trapped near its memory cap: {memory_limit_message(self.config.max_memory_bytes)}"
            log.warning("reducer %s trapped at the memory cap: %s", name, res.trap_message.strip())
            self.module_log_write("Error", message, function=name)
        elif res.trapped and res.out_of_time:
            # 1.12 has no time budget; the message says which budget stopped the call.
            status = Status.FAILED
            message = f"reducer `{name}` was stopped: {res.trap_message}"
            log.warning("reducer %s ran past its time budget (%.1f s)", name, self.config.time_budget_s)
            self.module_log_write("Error", message, function=name)
        elif res.trapped:
            status = Status.OUT_OF_ENERGY if res.out_of_fuel else Status.FAILED
            message = "" if res.out_of_fuel else FATAL_ERROR_MESSAGE
            if res.out_of_fuel:
                self.module_log_write(
                    "Error",
                    f"reducer `{name}` ran out of energy (budget {self.config.fuel_budget})",
                    function=name,
                )
            else:
                log.warning("reducer %s trapped: %s", name, res.trap_message.strip())
                self.module_log_write(
                    "Error", f"reducer `{name}` trapped: {_first_line(res.trap_message)}", function=name
                )
        elif res.code == 1:
            status, message = Status.FAILED, res.message
            self.module_log_write(
                "Error", message, function=name, target="__spacetimedb__", filename="__spacetimedb__"
            )
        else:
            status, message = Status.FAILED, FATAL_ERROR_MESSAGE
            self.module_log_write(
                "Error", f"reducer `{name}` returned unknown code {res.code}", function=name
            )
        return ReducerOutcome(
            status, message, name, rid, caller, connection_id, timestamp, args, res.fuel_used, res.duration_micros,
            out_of_memory=out_of_memory,
        )

    def _commit(self, outcome: ReducerOutcome, txdata: TxData, kind: RecordKind, st: TxnStats) -> None:
        st.committed += 1
        if txdata.tables:
            st.count_rows(txdata.tables)
        last = self._last_caller
        caller = outcome.caller
        reducer = outcome.reducer
        head = self._record_heads.get(reducer) if kind is _REDUCER_RECORD else None
        if head is None:
            head = record_head(kind, reducer)
            if kind is _REDUCER_RECORD:
                self._record_heads[reducer] = head
        # The record's head and the TxData's pieces joined once (TxRecord's layout).
        parts = record_parts(
            head,
            last[1] if last[0] is caller else caller.to_bsatn(),
            outcome.connection_id.to_bytes(16, "little"),
            outcome.timestamp_micros,
            outcome.args,
            b"",
        )
        txdata.encode_into(parts)
        payload = b"".join(parts)
        offset = outcome.offset = self.clog.append(self.config.epoch, payload)
        self._last_offset = offset
        n = self._since_checkpoint = self._since_checkpoint + 1
        self.committer.notify()
        if self._on_append is not None:
            self._on_append(self.config.epoch, offset, payload)
        outcome.txdata = txdata
        if self._pending_arms:
            self._arm_pending()
        if n >= self._checkpoint_txs or not n & 31:
            self._maybe_checkpoint()

    def _append(self, record: TxRecord) -> int:
        return self._append_payload(record.encode())

    def _append_payload(self, payload: bytes) -> int:
        offset = self.clog.append(self.config.epoch, payload)
        self._last_offset = offset
        self._since_checkpoint += 1
        self.committer.notify()
        if self._on_append is not None:
            self._on_append(self.config.epoch, offset, payload)
        return offset

    def begin_epoch(self) -> int:
        """Append the epoch-start record of a new leader's epoch (``config.epoch``): a
        transaction that changes nothing. Records of earlier epochs count as committed only once
        it is (REPLICATION.md rule 5); returns its offset."""
        self._check_open()
        return self._append(
            TxRecord(RecordKind.SYSTEM, "", bytes(32), bytes(16), _now_micros(), b"", b"", _EMPTY_TXDATA)
        )

    def _drain_immediate(self) -> None:
        while self._immediate:
            name, args = self._immediate.pop(0)
            if name not in self._reducer_ids:
                self.module_log_write(
                    "Error", f"volatile_nonatomic_schedule_immediate: no such reducer `{name}`"
                )
                continue
            try:
                self._arg_codecs[self._reducer_ids[name]].decode_all(args)
            except DecodeError as e:
                self.module_log_write(
                    "Error", f"volatile_nonatomic_schedule_immediate: bad args for `{name}`: {e}"
                )
                continue
            self._run_reducer(name, args, self.identity, 0, _now_micros())

    # --- SQL DML (hostnode/sql) ---------------------------------------------------------------

    def run_sql_dml(
        self, fn: Callable[[Any], Any], caller: Identity, timestamp_micros: int | None = None
    ) -> tuple[Any, ReducerOutcome]:
        """Run ``fn(tx)`` as one SQL DML transaction (writer thread only) and commit it.

        If ``fn`` raises, the transaction is rolled back and the exception propagates. Otherwise
        the changes are committed and logged like a reducer's (reducer name ``""``, caller = the
        SQL caller, connection id 0) and ``on_commit`` callbacks see the outcome, so subscribers
        get a TransactionUpdate (sql-and-subscriptions.md A.6). Returns ``fn``'s result and the
        outcome (``outcome.offset``: the commit-log offset to ``wait_durable`` on).
        """
        self._check_open()
        self._check_writable()
        ts = _now_micros() if timestamp_micros is None else timestamp_micros
        started = time.perf_counter()
        tx = self.datastore.begin_mut()
        try:
            result = fn(tx)
        except BaseException:
            tx.rollback()
            self._pending_arms.clear()
            self.stats.sql.failed += 1
            self.stats.sql.elapsed.observe(time.perf_counter() - started)
            raise
        outcome = ReducerOutcome(Status.COMMITTED, "", "", None, caller, 0, ts, b"", 0, 0)
        self._commit(outcome, tx.commit(), RecordKind.SYSTEM, self.stats.sql)
        self.stats.sql.elapsed.observe(time.perf_counter() - started)
        for cb in self.on_commit:
            cb(outcome)
        return result, outcome

    # --- lifecycle: clients -------------------------------------------------------------------

    @property
    def has_client_lifecycle(self) -> bool:
        """Whether the module defines ``client_connected`` or ``client_disconnected``."""
        mdef = self.moduledef
        return mdef is not None and (
            mdef.lifecycle_reducer(Lifecycle.ON_CONNECT) is not None
            or mdef.lifecycle_reducer(Lifecycle.ON_DISCONNECT) is not None
        )

    def client_connected(
        self,
        identity: Identity,
        connection_id: int,
        jwt_payload: bytes | None = None,
        timestamp_micros: int | None = None,
    ) -> ReducerOutcome:
        """Record a connected client and run the OnConnect reducer; a failure means "reject"."""
        self._check_open()
        self._check_writable()
        assert self.moduledef is not None
        row = self.system.client_row(identity, connection_id)
        ts = _now_micros() if timestamp_micros is None else timestamp_micros
        reducer = self.moduledef.lifecycle_reducer(Lifecycle.ON_CONNECT)
        if jwt_payload is not None:
            self._jwt[connection_id] = jwt_payload

        def insert_client(tx: Any) -> None:
            tx.insert(self.system.client_table_id, row)

        if reducer is None:
            tx = self.datastore.begin_mut()
            insert_client(tx)
            outcome = ReducerOutcome(Status.COMMITTED, "", "", None, identity, connection_id, ts, b"", 0, 0)
            self._commit(outcome, tx.commit(), RecordKind.SYSTEM, self.stats.internal)
        else:
            outcome = self._run_reducer(reducer.name, b"", identity, connection_id, ts, before=insert_client)
        if not outcome.committed:
            self._jwt.pop(connection_id, None)
        self._drain_immediate()
        return outcome

    def client_disconnected(
        self, identity: Identity, connection_id: int, timestamp_micros: int | None = None
    ) -> ReducerOutcome | None:
        """Run OnDisconnect and forget the client; the client row is removed even if it fails."""
        self._check_open()
        assert self.moduledef is not None
        row = self.system.client_row(identity, connection_id)
        ts = _now_micros() if timestamp_micros is None else timestamp_micros
        self._jwt.pop(connection_id, None)
        if not self._client_present(row):
            return None
        reducer = self.moduledef.lifecycle_reducer(Lifecycle.ON_DISCONNECT)

        def delete_client(tx: Any) -> None:
            tx.delete_by_rel(self.system.client_table_id, _rel([row]))

        outcome: ReducerOutcome | None = None
        if reducer is not None:
            outcome = self._run_reducer(reducer.name, b"", identity, connection_id, ts, before=delete_client)
        if outcome is None or not outcome.committed:
            tx = self.datastore.begin_mut()
            delete_client(tx)
            fallback = ReducerOutcome(Status.COMMITTED, "", "", None, identity, connection_id, ts, b"", 0, 0)
            self._commit(fallback, tx.commit(), RecordKind.SYSTEM, self.stats.internal)
            outcome = outcome or fallback
        self._drain_immediate()
        return outcome

    def _client_present(self, row: bytes) -> bool:
        tx = self.datastore.begin_mut()
        try:
            return row in tx.scan(self.system.client_table_id)
        finally:
            tx.rollback()

    def _disconnect_stale_clients(self) -> None:
        tx = self.datastore.begin_mut()
        try:
            rows = tx.scan(self.system.client_table_id)
        finally:
            tx.rollback()
        for row in rows:
            identity, connection_id = self.system.parse_client_row(row)
            self.client_disconnected(identity, connection_id)

    # --- scheduling ---------------------------------------------------------------------------

    def _arm(self, fire_at: int, table_id: int, schedule_id: int) -> None:
        key = (table_id, schedule_id)
        gen = self._timer_gen.get(key, 0) + 1
        self._timer_gen[key] = gen
        heapq.heappush(self._timers, _Timer(fire_at, table_id, schedule_id, gen))

    def _arm_pending(self) -> None:
        for fire_at, table_id, schedule_id in self._pending_arms:
            self._arm(fire_at, table_id, schedule_id)
        self._pending_arms.clear()

    def _arm_all_schedules(self) -> None:
        now = _now_micros()
        tx = self.datastore.begin_mut()
        try:
            for table_id, schema in self._schedule_tables.items():
                codec = self._row_codecs[table_id]
                for row in tx.scan(table_id):
                    values = codec.decode_all(row)
                    at = values[schema.schedule.scheduled_at_column]
                    delay = abs(at.value[0]) if at.tag == 0 else max(0, at.value[0] - now)
                    self._arm(now + delay, table_id, values[schema.primary_key])
        finally:
            tx.rollback()

    def next_schedule_micros(self) -> int | None:
        """When the next scheduled reducer is due (µs since epoch), or None."""
        while self._timers:
            t = self._timers[0]
            if self._timer_gen.get((t.table_id, t.schedule_id)) != t.generation:
                heapq.heappop(self._timers)
                continue
            return t.fire_at
        return None

    def run_due_schedules(self, now_micros: int | None = None, limit: int = 1000) -> list[ReducerOutcome]:
        """Fire every scheduled reducer that is due (module-abi.md §8); returns their outcomes."""
        self._check_open()
        now = _now_micros() if now_micros is None else now_micros
        outcomes: list[ReducerOutcome] = []
        while len(outcomes) < limit:
            due = self.next_schedule_micros()
            if due is None or due > now:
                break
            t = heapq.heappop(self._timers)
            self._timer_gen.pop((t.table_id, t.schedule_id), None)
            out = self._fire(t, now)
            if out is not None:
                outcomes.append(out)
        return outcomes

    def _schedule_row(self, tx: Any, schema: Any, schedule_id: int) -> bytes | None:
        pk_index = next(i for i in schema.indexes if i.columns == (schema.primary_key,))
        rows = tx.index_scan_point(pk_index.index_id, schedule_id.to_bytes(8, "little"))
        return rows[0] if rows else None

    def _fire(self, t: _Timer, now: int) -> ReducerOutcome | None:
        schema = self._schedule_tables.get(t.table_id)
        if schema is None:
            return None
        tx = self.datastore.begin_mut()
        try:
            row = self._schedule_row(tx, schema, t.schedule_id)
        finally:
            tx.rollback()
        if row is None:
            return None  # deleted = cancelled
        reducer = schema.schedule.reducer_name
        outcome = self._run_reducer(reducer, row, self.identity, 0, max(t.fire_at, now))
        self._drain_immediate()
        # Afterwards, in a separate transaction: delete one-shot rows, re-arm interval rows.
        tx = self.datastore.begin_mut()
        row = self._schedule_row(tx, schema, t.schedule_id)
        if row is None:
            tx.rollback()
            return outcome
        at = self._row_codecs[t.table_id].decode_all(row)[schema.schedule.scheduled_at_column]
        if at.tag == 1:
            tx.delete_by_rel(t.table_id, _rel([row]))
            system = ReducerOutcome(
                Status.COMMITTED, "", "", None, self.identity, 0, _now_micros(), b"", 0, 0
            )
            self._commit(system, tx.commit(), RecordKind.SYSTEM, self.stats.internal)
            # The one-shot row's deletion is a visible change: subscribers must see it.
            for cb in self.on_commit:
                cb(system)
        else:
            tx.rollback()
            self._arm(_now_micros() + abs(at.value[0]), t.table_id, t.schedule_id)
        return outcome

    # --- durability and reads -----------------------------------------------------------------

    @property
    def uncheckpointed(self) -> int:
        """Transactions committed since the last checkpoint (invisible to readers until then)."""
        return self._since_checkpoint

    @property
    def last_offset(self) -> int:
        """Offset of the last appended record (-1 if none)."""
        return self._last_offset

    def wait_durable(self, offset: int | None = None, timeout: float | None = 30.0) -> bool:
        """Block until the commit log is durable through ``offset`` (default: everything so far)."""
        target = self._last_offset if offset is None else offset
        if target < 0:
            return True
        return self.durability.wait_durable(target, timeout)

    def _maybe_checkpoint(self) -> None:
        n = self._since_checkpoint
        # The clock is read only every 32 transactions: this is on the hot path.
        if n >= self._checkpoint_txs or (
            n and not n & 31 and time.monotonic() - self._last_checkpoint >= self.config.checkpoint_every_s
        ):
            self.checkpoint()

    def checkpoint(self, wait: bool = True) -> bool:
        """Make the datastore state visible to readers, never ahead of what is durable.

        Durable means what :attr:`durability` says (in a cluster: a majority has it), so LMDB
        never holds a transaction a failover could undo. ``wait=False`` checkpoints only when
        everything applied is durable already. Returns False when the checkpoint was skipped
        (not durable in time: the next one covers it).
        """
        if self._last_offset >= 0 and self._last_offset >= self.durability.durable_offset:
            if not wait:
                return False
            timeout = self.config.checkpoint_wait_s if self.config.replicated else None
            if not self.wait_durable(self._last_offset, timeout):
                self._last_checkpoint = time.monotonic()  # try again after the usual interval
                return False
        started = time.perf_counter()
        self.datastore.checkpoint(self._last_offset)
        self.stats.checkpoints.observe(time.perf_counter() - started)
        if self.host is not None:  # the writer's own moment to look (wasmtime is single-threaded)
            self.stats.wasm_memory_bytes = self.host.memory_size()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        return True

    def checkpoint_is_committed_state(self) -> bool:
        """Whether the last checkpoint holds every durable (committed) transaction: readers of
        :meth:`read` then see the committed state, not an older one."""
        return self.datastore.applied_offset() + 1 >= self.durability.durable_offset

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A read transaction over the last checkpoint (safe from any thread)."""
        tx = self.datastore.begin_read()
        try:
            yield tx
        finally:
            tx.close() if hasattr(tx, "close") else tx.abort()

    def table_rows(self, table: str) -> list[Any]:
        """Decoded rows of a table as of the last checkpoint (tests and tools)."""
        tid = self._table_ids[table]
        with self.read() as tx:
            rows = tx.scan(tid)
        return [self._row_codecs[tid].decode_all(r) for r in rows]

    # --- closing ------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        """Raise NoQuorum when the write gate refuses writes now (cluster mode)."""
        gate = self.write_gate
        if gate is not None:
            refused = gate()
            if refused is not None:
                raise NoQuorum(refused)

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseClosed(f"database {self.path} is closed")

    def close(self) -> None:
        """Checkpoint, flush the log and release every resource."""
        if self._closed:
            return
        self.checkpoint()
        self._close_quietly()

    def _close_quietly(self) -> None:
        self._closed = True
        for closer in (self.committer.close, self.clog.close, self.datastore.close, self.logs.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must release everything it can
                log.exception("error while closing %s", self.path)
        if self.host is not None:
            self.host.discard_instance()


_EMPTY_TXDATA: Final = TxData().encode()


def replay_payload(datastore: Datastore, payload: bytes) -> None:
    """Apply one commit-log payload to ``datastore`` (recovery, and followers applying what the
    leader committed). INSTALL records also store the program (and, the first time, owner and
    identity) in the datastore's metadata."""
    kind, txdata = record_txdata(payload)
    if kind == RecordKind.INSTALL:
        txr = TxRecord.decode(payload)
        tx = datastore.begin_mut()
        tx.put_meta(META_PROGRAM, txr.program)
        if datastore.get_meta(META_OWNER) is None:
            tx.put_meta(META_OWNER, txr.caller_identity)
            tx.put_meta(META_IDENTITY, txr.args)
        tx.commit()
    datastore.apply(TxData.decode(txdata))


@dataclass
class ReplicationHooks:
    """How a replicated database's engine meets its replication (hostnode/replication.py)."""

    #: Builds the durability seam once the commit log exists: (committer, log) → Durability.
    durability: Callable[[GroupCommitter, CommitLog], Durability]
    #: Every appended record (writer thread): (epoch, offset, payload).
    on_append: Callable[[int, int, bytes], None] | None = None
    #: Why writes are refused right now, or None (checked before each client reducer call).
    write_gate: Callable[[], str | None] | None = None


def _rel(rows: list[bytes]) -> bytes:
    return len(rows).to_bytes(4, "little") + b"".join(rows)


def _first_line(s: str) -> str:
    for line in s.splitlines():
        if "wasm trap:" in line:
            return line.strip()
    return s.strip().splitlines()[0] if s.strip() else "trap"


__all__ = [
    "Database",
    "DatabaseClosed",
    "DatabaseConfig",
    "DatabaseError",
    "DatastoreError",
    "InitFailed",
    "InvalidArguments",
    "LifecycleReducerCall",
    "MigrationError",
    "ModuleLoadError",
    "NoSuchReducer",
    "ReducerOutcome",
    "Status",
]


def _any_bytes_size(params: ProductType, codec: Codec) -> int:
    """``codec``'s fixed size when ``params`` holds only integers and floats (every byte string
    of that size is a valid value, so checking the length validates the arguments), else -1."""
    ok = all(
        isinstance(e.algebraic_type, PrimitiveType) and e.algebraic_type.kind in _ANY_BYTES_KINDS
        for e in params.elements
    )
    return codec.fixed_size if ok and codec.fixed_size is not None else -1


_ANY_BYTES_KINDS: Final = frozenset(INT_LAYOUT) | {TypeTag.F32, TypeTag.F64}
