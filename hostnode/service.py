"""The host node: many database replicas on one machine, driven from asyncio.

Each database lives in ``<data_dir>/databases/<identity hex>/`` and has its own writer thread
(:class:`hostnode.worker.DatabaseWorker`); every method here hands the work to that thread and
awaits the result without blocking the event loop. Mutating calls resolve only once their
transaction is durable in the commit log, so a caller that gets an answer may acknowledge it.

This is the in-process interface the gRPC host-node service and the standalone gateway share.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hostnode.database import (
    Database,
    DatabaseConfig,
    DatabaseError,
    InvalidArguments,
    LifecycleReducerCall,
    NoSuchReducer,
    ReducerOutcome,
)
from hostnode.durability import NoQuorum
from hostnode.http_calls import CallDone, HttpCall, HttpCallQueue
from hostnode.migrate import MigrationPlan, migration_token, plan_update
from hostnode.moduledef import ModuleDefError, load_module_def, to_schema_json
from hostnode.realtime import CLOSE_MODULE_EXITED, ClientParams, Connection, OutgoingBudget, RealtimeHub
from hostnode.sql import SqlResult, execute_point_query, execute_sql, mutates, parse_sql
from hostnode.stats import SQL
from hostnode.wasm_host import ModuleLoadError, WasmProgram
from hostnode.worker import DEFAULT_MAX_QUEUED, DatabaseWorker
from sats.bsatn import codec_for
from sats.errors import DecodeError, EncodeError
from sats.identity import Identity
from sats.json import args_reader, from_json, loads

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClusterRoles(Protocol):
    """What the host node asks of its cluster side (hostnode/cluster.py) on every call."""

    def refuse_not_leading(self, identity: Identity) -> None:
        """Raise NotLeader when this node holds a replica of ``identity`` it does not lead."""

    def check_serving(self, identity: Identity) -> None:
        """Raise NotLeader when this node may not serve ``identity`` now (lease lost, stepping down)."""


class HostNodeError(Exception):
    """Base class of host-node errors a caller can act on."""


class DatabaseNotFound(HostNodeError):
    """No database with that identity lives on this node."""


@dataclass
class HostNodeConfig:
    """Configuration of one host node."""

    data_dir: Path
    database: DatabaseConfig | None = None
    #: Client jobs that may wait for one database's writer before more are refused (503).
    writer_max_queued: int = DEFAULT_MAX_QUEUED


@dataclass(frozen=True)
class PlannedUpdate:
    """What republishing a program would do, planned against the running one."""

    plan: MigrationPlan
    #: The :func:`hostnode.migrate.migration_token` of this update (what install checks).
    token: bytes
    #: Names of the current indexes by id (the plan names the indexes it drops by id).
    index_names: dict[int, str]


@dataclass
class InstallResult:
    """What publishing a program did."""

    created: bool
    init: ReducerOutcome | None = None
    migration: MigrationPlan | None = None


class HostNode:
    """Owns every database replica of this node."""

    def __init__(self, config: HostNodeConfig) -> None:
        self.config = config
        self.root = Path(config.data_dir) / "databases"
        self._workers: dict[Identity, DatabaseWorker] = {}
        self._locks: dict[Identity, asyncio.Lock] = {}
        self._hubs: dict[Identity, RealtimeHub] = {}
        self._hub_locks: dict[Identity, asyncio.Lock] = {}
        self._http_calls: dict[Identity, HttpCallQueue] = {}
        #: The bytes queued for every WebSocket client of this node (realtime.OutgoingBudget).
        self.outgoing = OutgoingBudget()
        #: Cluster mode: the replication roles of this node's replicas (hostnode/cluster.py);
        #: None standalone.
        self.cluster: ClusterRoles | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every database found under the data directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.root.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            try:
                identity = Identity.from_hex(path.name)
            except Exception:  # noqa: BLE001 - a stray directory is reported, not fatal
                log.warning("ignoring %s: not a database directory", path)
                continue
            self._workers[identity] = await asyncio.to_thread(self._open_worker, path)
            log.info("opened database %s", identity.to_hex())

    async def stop(self) -> None:
        """Close every database (final checkpoint and sync)."""
        for hub in self._hubs.values():
            hub.shutdown()
        self._hubs.clear()
        workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            await asyncio.to_thread(w.close)

    def _open_worker(self, path: Path) -> DatabaseWorker:
        return self.new_worker(lambda: Database.open(path, self.config.database), path.name)

    def new_worker(self, open_fn: Callable[[], Database], name: str) -> DatabaseWorker:
        """A writer thread for the database ``open_fn`` opens, with this node's limits (blocks
        until it is open: call it off the event loop)."""
        return DatabaseWorker(open_fn, name=f"db-{name[:12]}", max_queued=self.config.writer_max_queued)

    def _path(self, identity: Identity) -> Path:
        return self.root / identity.to_hex()

    def _lock(self, identity: Identity) -> asyncio.Lock:
        return self._locks.setdefault(identity, asyncio.Lock())

    # --- access -------------------------------------------------------------------------------

    def has(self, identity: Identity) -> bool:
        """Whether the database lives here."""
        return identity in self._workers

    def database(self, identity: Identity) -> Database:
        """The engine object (read-only use from other threads: schema, logs, read txns)."""
        return self._worker(identity).db

    def serving(self) -> list[tuple[Identity, Database, RealtimeHub | None]]:
        """Every database this node serves now, with its realtime hub (if a client connected):
        a snapshot, for metrics."""
        hubs = dict(self._hubs)
        return [(identity, w.db, hubs.get(identity)) for identity, w in list(self._workers.items())]

    def _worker(self, identity: Identity) -> DatabaseWorker:
        w = self._workers.get(identity)
        if w is None:
            if self.cluster is not None:
                self.cluster.refuse_not_leading(identity)
            raise DatabaseNotFound(f"no database {identity.to_hex()} on this node")
        if self.cluster is not None:
            self.cluster.check_serving(identity)
        return w

    async def run(self, identity: Identity, fn: Callable[[Database], T]) -> T:
        """Run ``fn(db)`` on the database's writer thread."""
        return await _wrap(self._worker(identity).submit(fn))

    # --- publishing ---------------------------------------------------------------------------

    async def install(
        self, identity: Identity, owner: Identity, program: bytes, *, clear: bool = False, token: bytes | None = None
    ) -> InstallResult:
        """Create the database (running init), or update its program (migrating the schema).

        An update that would disconnect the clients needs ``token``, the one the pre-publish of
        this update handed out (:func:`hostnode.migrate.check_policy`); creates and clears
        ignore it. With ``clear`` an existing database is replaced by a new one: the new
        database is created (and its init run) in a staging directory first, and only then
        swapped in, so a failing program leaves the old database serving. Failures leave the
        previous state untouched (a failed create leaves nothing behind).
        """
        async with self._lock(identity):
            if identity in self._workers and clear:
                return await self._replace(identity, owner, program)
            worker = self._workers.get(identity)
            if worker is not None:
                plan = await _wrap(worker.submit(lambda db: db.update_program(program, token=token)))
                return InstallResult(created=False, migration=plan)
            path = self._path(identity)
            if path.exists():
                # Left over by a crash during an earlier create or delete.
                await asyncio.to_thread(shutil.rmtree, path, True)
            holder: dict[str, Any] = {}

            def create() -> Database:
                db, init = Database.create(path, program, owner=owner, identity=identity, config=self.config.database)
                holder["init"] = init
                return db

            worker = await asyncio.to_thread(self.new_worker, create, identity.to_hex())
            self._workers[identity] = worker
            return InstallResult(created=True, init=holder.get("init"))

    async def _replace(self, identity: Identity, owner: Identity, program: bytes) -> InstallResult:
        path = self._path(identity)
        staging = self.root / f".staging-{identity.to_hex()}"
        trash = self.root / f".trash-{identity.to_hex()}"
        for leftover in (staging, trash):
            await asyncio.to_thread(shutil.rmtree, leftover, True)

        def create_staged() -> ReducerOutcome | None:
            db, init = Database.create(staging, program, owner=owner, identity=identity, config=self.config.database)
            db.close()
            return init

        init = await asyncio.to_thread(create_staged)
        self._drop_hub(identity)
        old = self._workers.pop(identity)
        await asyncio.to_thread(old.close)
        # Two renames within one directory; start() ignores the dot-directories if a crash
        # lands between them (the old database is then still in .trash-… for an operator).
        await asyncio.to_thread(path.rename, trash)
        await asyncio.to_thread(staging.rename, path)
        self._workers[identity] = await asyncio.to_thread(self._open_worker, path)
        await asyncio.to_thread(shutil.rmtree, trash, True)
        return InstallResult(created=True, init=init)

    async def delete(self, identity: Identity) -> None:
        """Stop the database and remove its files."""
        async with self._lock(identity):
            await self._delete(identity)

    async def _delete(self, identity: Identity) -> None:
        worker = self._workers.pop(identity, None)
        if worker is None:
            raise DatabaseNotFound(f"no database {identity.to_hex()} on this node")
        self._drop_hub(identity)
        await asyncio.to_thread(worker.close)
        await asyncio.to_thread(shutil.rmtree, self._path(identity), True)

    # --- calls --------------------------------------------------------------------------------

    async def call_reducer(
        self,
        identity: Identity,
        reducer: str,
        args: bytes,
        *,
        caller: Identity,
        connection_id: int = 0,
        timestamp_micros: int | None = None,
    ) -> ReducerOutcome:
        """Run a reducer; resolves once the outcome is durable (committed) or known (failed)."""
        worker = self._worker(identity)
        outcome = await _wrap(
            worker.submit(
                lambda db: db.call_reducer(
                    reducer, args, caller=caller, connection_id=connection_id, timestamp_micros=timestamp_micros
                ),
                limited=True,
            )
        )
        await self._durable(worker, outcome)
        return outcome

    async def client_connected(
        self, identity: Identity, caller: Identity, connection_id: int, jwt_payload: bytes | None = None
    ) -> ReducerOutcome:
        """Run the OnConnect lifecycle; a failed outcome means the connection is rejected."""
        worker = self._worker(identity)
        outcome = await _wrap(
            worker.submit(lambda db: db.client_connected(caller, connection_id, jwt_payload), limited=True)
        )
        await self._durable(worker, outcome)
        return outcome

    async def client_disconnected(self, identity: Identity, caller: Identity, connection_id: int) -> None:
        """Run the OnDisconnect lifecycle (errors are swallowed by the engine's fallback)."""
        worker = self._worker(identity)
        outcome = await _wrap(worker.submit(lambda db: db.client_disconnected(caller, connection_id)))
        if outcome is not None:
            await self._durable(worker, outcome)

    def call_via_http(
        self,
        identity: Identity,
        reducer: str,
        args: bytes | Callable[[], bytes],
        *,
        caller: Identity,
        connection_id: int,
    ) -> asyncio.Future[HttpCall]:
        """HTTP `/call` semantics (module-abi.md §7): connect → reducer → disconnect.

        (Event loop.) The future of the outcome (await it), resolved once the outcome is
        durable; DatabaseNotFound and Overloaded are raised at once. Calls waiting for the same
        database run as one writer job with one durability wait, and a module without
        connect/disconnect lifecycle reducers gets them folded into the reducer's transaction
        (:mod:`hostnode.http_calls`). ``args`` may be a thunk so that argument decoding errors
        surface between connect and disconnect, as in 1.12. A refused connect ends the sequence
        (``reducer`` stays None); a reducer that cannot be called (no such reducer, bad
        arguments, lifecycle) is reported in ``error``.
        """
        return self._http_call_queue(identity).submit(reducer, args, caller, connection_id)

    def call_via_http_then(
        self, identity: Identity, reducer: str, args: bytes | Callable[[], bytes], caller: Identity, connection_id: int,
        done: CallDone,
    ) -> None:  # fmt: skip
        """:meth:`call_via_http` without a future: ``done`` gets the :class:`HttpCall` (or the
        exception) on the event loop once it is durable (the split server's link answers so)."""
        self._http_call_queue(identity).submit_with(reducer, args, caller, connection_id, done)

    def _http_call_queue(self, identity: Identity) -> HttpCallQueue:
        worker = self._worker(identity)
        calls = self._http_calls.get(identity)
        if calls is None or calls.worker is not worker:
            calls = self._http_calls[identity] = HttpCallQueue(worker)
        return calls

    def encode_json_args(self, identity: Identity, reducer: str, args_json: str) -> bytes:
        """BSATN of a reducer's arguments given as SATS-JSON text (an array, or an object by name).

        Raises NoSuchReducer, LifecycleReducerCall (lifecycle reducers are refused before their
        arguments are looked at, as in 1.12) or InvalidArguments (malformed JSON, wrong arity/types).
        """
        db = self.database(identity)
        mdef = db.moduledef
        assert mdef is not None
        rdef = mdef.reducer(reducer)
        if rdef is None:
            raise NoSuchReducer(f"no such reducer `{reducer}`")
        if rdef.lifecycle is not None:
            raise LifecycleReducerCall(f"can't directly call special {rdef.lifecycle.json_name} lifecycle reducer")
        try:
            obj = loads(args_json)
            quick = args_reader(rdef.params, mdef.typespace)
            value = quick(obj) if quick is not None else None
            if value is None:
                value = from_json(rdef.params, obj, mdef.typespace, root="args")
            codec = db.arg_codec(rdef.id)
            if db.moduledef is not mdef:
                # Called off the writer and a program update came in between (it installs the
                # module before its codecs): compile the codec of the module read above.
                codec = codec_for(rdef.params, mdef.typespace)
            return codec.encode(value)
        except (DecodeError, EncodeError) as e:
            raise InvalidArguments(f"invalid arguments for reducer {reducer}: {e}") from None

    async def plan_program_update(self, identity: Identity, program: bytes) -> PlannedUpdate:
        """The migration republishing ``program`` would run, without changing anything.

        The plan and its token are made in one step on the writer thread, so the token names
        the very program the plan was made against. Raises ModuleLoadError for a program that
        cannot be loaded and MigrationError when the update needs a manual migration.
        """

        def plan(db: Database) -> PlannedUpdate:
            host = db.new_host(WasmProgram.compile(program))
            try:
                describe = host.instantiate()
            finally:
                host.discard_instance()
            try:
                mdef = load_module_def(describe)
            except (ModuleDefError, DecodeError) as e:
                raise ModuleLoadError(f"invalid module definition: {e}") from None
            tables = db.datastore.tables()
            return PlannedUpdate(
                plan=plan_update(tables, mdef, old_rls=db.row_level_security),
                token=migration_token(db.identity, db.program_bytes, program),
                index_names={ix.index_id: ix.name for t in tables.values() for ix in t.indexes},
            )

        return await self.run(identity, plan)

    async def sql(self, identity: Identity, query: str, caller: Identity) -> SqlResult:
        """Run one SQL statement (raises SqlError with the client-facing text).

        Statements run on the writer thread: DML must, and a query then reads a fresh
        checkpoint, so a caller sees its own acknowledged writes. DML answers once durable.
        A point query (a unique-index lookup per table) when every commit is checkpointed
        already reads that checkpoint here instead, without the trip through the writer's queue:
        the checkpoint then holds every write anyone was answered for.
        """
        stmt = parse_sql(query)
        worker = self._worker(identity)
        db = worker.db
        if not db.uncheckpointed and not mutates(stmt):
            try:
                quick = execute_point_query(db, stmt, caller)
            except Exception:  # noqa: BLE001 - e.g. raced a publish: the writer's path answers it
                quick = None
            if quick is not None:
                db.stats.rows_scanned[SQL] += quick.rows_scanned
                return quick

        def run(db: Database) -> SqlResult:
            if not mutates(stmt) and db.uncheckpointed and not db.checkpoint():
                # Transactions a majority does not have yet (a quorum was lost) keep the
                # checkpoint back. Serve it only if it still holds everything committed:
                # never an older state than a client was already answered.
                if not db.checkpoint_is_committed_state():
                    raise NoQuorum(
                        "the newest committed state cannot be read until a majority of replicas "
                        "is back (writes since are waiting for it)"
                    )
            result = execute_sql(db, stmt, caller)
            db.stats.rows_scanned[SQL] += result.rows_scanned
            return result

        result = await _wrap(worker.submit(run, limited=True))
        if result.offset is not None:
            await worker.db.durability.wait_durable_async(result.offset)
        return result

    def schema_json(self, identity: Identity) -> dict[str, Any]:
        """`GET /schema?version=9` JSON of the running module."""
        mdef = self.database(identity).moduledef
        assert mdef is not None
        return to_schema_json(mdef)

    def log_lines(self, identity: Identity, num_lines: int | None = None) -> list[str]:
        """The last module log lines (all when ``num_lines`` is None)."""
        return self.database(identity).logs.tail(num_lines)

    def follow_logs(self, identity: Identity, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(line)`` (from the writer thread) for each new log line; returns unsubscribe."""
        return self.database(identity).logs.follow(callback)

    # --- WebSocket clients --------------------------------------------------------------------

    async def connect_client(self, identity: Identity, params: ClientParams) -> Connection | ReducerOutcome:
        """A WebSocket client (client-api.md §9): runs ``client_connected``; returns the
        connection (its first frame is ``IdentityToken``), or the failed outcome when the module
        rejected the client."""
        worker = self._worker(identity)
        async with self._hub_locks.setdefault(identity, asyncio.Lock()):
            hub = self._hubs.get(identity)
            if hub is None or hub.db is not worker.db or hub.closed:
                hub = await _wrap(worker.submit(lambda db: RealtimeHub(db, worker)))
                self._hubs[identity] = hub
        conn = Connection(hub, params, asyncio.get_running_loop(), self.outgoing)
        outcome = await _wrap(worker.submit(lambda db: hub.connect(conn), limited=True))
        if not outcome.committed:
            return outcome
        return conn

    def _drop_hub(self, identity: Identity, close: tuple[int, str] = CLOSE_MODULE_EXITED) -> None:
        """The database's writer is going away: close its realtime hub, forget its HTTP call queue."""
        self._http_calls.pop(identity, None)
        hub = self._hubs.pop(identity, None)
        if hub is not None:
            hub.shutdown(close)

    async def _durable(self, worker: DatabaseWorker, outcome: ReducerOutcome) -> None:
        if outcome.offset is not None:
            await worker.db.durability.wait_durable_async(outcome.offset)


async def _wrap(fut: Future[T]) -> T:
    return await asyncio.wrap_future(fut)


__all__ = [
    "DatabaseError",
    "HttpCall",
    "DatabaseNotFound",
    "HostNode",
    "HostNodeConfig",
    "HostNodeError",
    "InstallResult",
    "PlannedUpdate",
]
