"""Standalone Orrery: gateway, control plane and one host node in one process, one data directory.

Layout of ``<data-dir>``::

    keys/               id_ecdsa, id_ecdsa.pub — the token signing key pair
    control/meta.lmdb   the embedded MetaStore (databases, names, owners)
    node/               the host node's databases

The gateway reaches the control plane and the host node through in-process adapters
(:class:`LocalControlPlane`, :class:`LocalHostNode`) that implement
:mod:`gateway.backends` and translate every engine/control-plane exception into the
:class:`gateway.errors.ApiError` 1.12 answers with. Run it with::

    python -m orrery.standalone --listen-addr 127.0.0.1:3000 --data-dir ./data
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from controlplane.core import (
    ControlPlane,
    ControlPlaneError,
    DatabaseRecord,
    InvalidName,
    Placement,
    parse_name_or_identity,
    validate_name,
)
from controlplane.metastore_lmdb import LmdbMetaStore
from gateway.app import create_app
from gateway.auth import KeyFileError, SigningKeys, TokenAuthority
from gateway.backends import (
    CallOutcome,
    CallResult,
    DatabaseInfo,
    PrePublish,
    PublishOutcome,
    SqlAnswer,
)
from gateway.context import GatewayConfig
from gateway.errors import ApiError
from hostnode.database import (
    DatabaseClosed,
    DatabaseError,
    InvalidArguments,
    LifecycleReducerCall,
    NoSuchReducer,
    ReducerOutcome,
    Status,
)
from hostnode.migrate import MigrationError, MigrationPlan
from hostnode.service import DatabaseNotFound, HostNode, HostNodeConfig
from hostnode.sql import SqlError, render_response_bytes
from hostnode.wasm_host import ModuleLoadError
from sats.identity import Identity

__all__ = ["LocalControlPlane", "LocalHostNode", "StandaloneConfig", "main", "run", "serve"]

log = logging.getLogger("orrery.standalone")

DEFAULT_LISTEN_ADDR = "127.0.0.1:3000"
NODE_ID = 0


# --- errors -------------------------------------------------------------------------------------


def control_error(e: ControlPlaneError, *, path: bool = True) -> ApiError:
    """The response a control-plane error stands for (an invalid path segment is ``Invalid URL``)."""
    if isinstance(e, InvalidName) and path:
        return ApiError.text(400, f"Invalid URL: {e.message}")
    if e.body is None:
        return ApiError.text(e.status, e.message)
    return ApiError.json(e.status, e.body)


@contextlib.contextmanager
def _control_errors(*, path: bool = True) -> Iterator[None]:
    try:
        yield
    except ControlPlaneError as e:
        raise control_error(e, path=path) from None


def _missing_replica(_e: DatabaseNotFound) -> ApiError:
    return ApiError.text(404, "No such database.")


def _info(record: DatabaseRecord) -> DatabaseInfo:
    return DatabaseInfo(record.identity, record.owner, record.host_type, record.initial_program_hash)


def call_result(outcome: ReducerOutcome, *, connect: bool = False) -> CallResult:
    """The gateway's view of a reducer outcome (``connect``: the outcome of ``client_connected``)."""
    if outcome.status is Status.COMMITTED:
        kind = CallOutcome.COMMITTED
    elif outcome.status is Status.OUT_OF_ENERGY:
        kind = CallOutcome.CONNECT_OUT_OF_ENERGY if connect else CallOutcome.OUT_OF_ENERGY
    else:
        kind = CallOutcome.CONNECT_REJECTED if connect else CallOutcome.FAILED
    return CallResult(kind, outcome.message, outcome.energy_used, outcome.duration_micros)


def reducer_call_error(e: DatabaseError) -> ApiError:
    """Errors raised before a reducer runs (client-api.md §6.8)."""
    if isinstance(e, NoSuchReducer):
        # 1.12 then looks for a procedure of that name; procedures are not supported here.
        return ApiError.text(404, "No such procedure")
    if isinstance(e, LifecycleReducerCall | InvalidArguments):
        return ApiError.text(400, str(e))
    if isinstance(e, DatabaseClosed):
        return ApiError.text(503, "The database is shutting down")
    return ApiError.text(500, str(e))


# --- adapters -----------------------------------------------------------------------------------


class LocalControlPlane:
    """:class:`gateway.backends.ControlPlaneBackend` over an in-process :class:`ControlPlane`."""

    def __init__(self, control: ControlPlane, node: HostNode) -> None:
        self.control = control
        self.node = node

    async def resolve(self, name_or_identity: str) -> Identity:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            return await self.control.resolve(name_or_identity)

    async def database(self, name_or_identity: str) -> DatabaseInfo:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            return _info(await self.control.require_database(name_or_identity))

    async def publish(
        self, caller: Identity, name_or_identity: str | None, program: bytes, *, clear: bool
    ) -> PublishOutcome:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            result = await self.control.publish(caller, name_or_identity, program, clear=clear)
        return PublishOutcome(result.identity, result.op, result.domain)

    async def reset(self, caller: Identity, name_or_identity: str, program: bytes | None) -> PublishOutcome:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            record = await self.control.require_database(name_or_identity)
            await self.control.authorize_owner(caller, record, "reset database")
            target = parse_name_or_identity(name_or_identity)
        if program is None:
            try:
                program = self.node.database(record.identity).program_bytes
            except DatabaseNotFound as e:
                raise _missing_replica(e) from None
        try:
            await self.node.install(record.identity, record.owner, program, clear=True)
        except (ModuleLoadError, DatabaseError) as e:
            raise ApiError.text(500, f"Failed to create the database: {e}") from None
        return PublishOutcome(record.identity, "updated", target if isinstance(target, str) else None)

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _control_errors():
            await self.control.delete(caller, name_or_identity)

    async def names(self, identity: Identity) -> list[str]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return sorted(await self.control.names(identity))

    async def add_name(self, caller: Identity, name_or_identity: str, name: str) -> dict[str, Any]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        await self.resolve(name_or_identity)
        with _control_errors(path=False):
            validate_name(name)
        try:
            return await self.control.add_name(caller, name_or_identity, name)
        except ControlPlaneError as e:
            if e.status == 401:
                raise ApiError.json(401, {"PermissionDenied": {"domain": name}}) from None
            raise control_error(e) from None

    async def set_names(self, caller: Identity, name_or_identity: str, names: list[str]) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        await self.resolve(name_or_identity)
        for name in names:
            try:
                validate_name(name)
            except InvalidName as e:
                raise ApiError.text(400, f"Error parsing `{name}`: {e.message}") from None
        with _control_errors():
            await self.control.set_names(caller, name_or_identity, names)

    async def databases_of(self, owner: Identity) -> list[Identity]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return await self.control.databases_of(owner)

    async def node_ids(self) -> list[int]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return [NODE_ID]


class LocalHostNode:
    """:class:`gateway.backends.HostNodeBackend` over an in-process :class:`HostNode`."""

    def __init__(self, node: HostNode) -> None:
        self.node = node

    async def call(
        self, database: Identity, reducer: str, args_json: str, *, caller: Identity, connection_id: int
    ) -> CallResult:
        """Connect → reducer → disconnect, as HTTP ``/call`` does (module-abi.md §7)."""
        try:
            done = await self.node.call_via_http(
                database,
                reducer,
                lambda: self.node.encode_json_args(database, reducer, args_json),
                caller=caller,
                connection_id=connection_id,
            )
        except DatabaseNotFound as e:
            raise _missing_replica(e) from None
        if done.error is not None:
            raise reducer_call_error(done.error)
        if done.reducer is None:
            return call_result(done.connected, connect=True)
        return call_result(done.reducer)

    async def sql(self, database: Identity, query: str, caller: Identity) -> SqlAnswer:
        """See :class:`gateway.backends.HostNodeBackend`."""
        try:
            result = await self.node.sql(database, query, caller)
        except SqlError as e:
            raise ApiError.text(400, str(e)) from None
        except DatabaseNotFound:
            raise ApiError.text(404, "module not found") from None
        return SqlAnswer(render_response_bytes(result), result.total_duration_micros)

    async def schema(self, database: Identity) -> Any:
        """See :class:`gateway.backends.HostNodeBackend`."""
        try:
            return self.node.schema_json(database)
        except DatabaseNotFound as e:
            raise _missing_replica(e) from None

    async def logs(self, database: Identity, num_lines: int | None, follow: bool) -> AsyncGenerator[str, None]:
        """Tail, then (``follow``) new lines; the follower is registered atomically with the tail."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()

        def on_line(line: str) -> None:
            # Runs on the database's writer thread.
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, line)

        def start(db: Any) -> tuple[list[str], Callable[[], None] | None]:
            old = db.logs.tail(num_lines) if (num_lines or not follow) else []
            return old, db.logs.follow(on_line) if follow else None

        try:
            old, unsubscribe = await self.node.run(database, start)
        except DatabaseNotFound as e:
            raise _missing_replica(e) from None
        try:
            for line in old:
                yield line
            while unsubscribe is not None:
                yield await queue.get()
        finally:
            if unsubscribe is not None:
                unsubscribe()

    async def pre_publish(self, database: Identity, program: bytes) -> PrePublish:
        """Plan the update; the token names (database, old program, new program)."""
        try:
            plan = await self.node.plan_program_update(database, program)
            old_program, index_names = await self.node.run(database, _program_and_index_names)
        except DatabaseNotFound as e:
            raise _missing_replica(e) from None
        except MigrationError as e:
            return PrePublish(automatic=False, reason=str(e))
        except (ModuleLoadError, DatabaseError) as e:
            raise ApiError.text(500, f"Failed to plan the update: {e}") from None
        digest = hashlib.sha3_256(
            database.to_bsatn() + hashlib.sha3_256(old_program).digest() + hashlib.sha3_256(program).digest()
        ).digest()
        token = f"0x{int.from_bytes(digest, 'little'):x}"
        return PrePublish(automatic=True, plan=describe_plan(plan, index_names), break_clients=False, token=token)


def _program_and_index_names(db: Any) -> tuple[bytes, dict[int, str]]:
    names = {ix.index_id: ix.name for t in db.datastore.tables().values() for ix in t.indexes}
    return db.program_bytes, names


def describe_plan(plan: MigrationPlan, index_names: dict[int, str]) -> str:
    """A migration plan as the lines ``spacetime publish`` prints."""
    lines = ["Updating the module; the automatic migration will:"]
    lines += [f"- create table `{t.name}`" for t in plan.create_tables]
    lines += [f"- remove index `{index_names.get(i, f'#{i}')}`" for i in plan.drop_indexes]
    lines += [f"- create index `{ix.name}`" for ix in plan.create_indexes]
    if plan.is_empty:
        lines.append("- change no tables (code only)")
    return "\n".join(lines) + "\n"


# --- the server ---------------------------------------------------------------------------------


@dataclass
class StandaloneConfig:
    """Limits of one standalone server (everything else comes from the two required arguments)."""

    max_module_bytes: int = 64 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024
    #: Seconds in-flight requests get to finish at shutdown.
    shutdown_timeout: float = 5.0


def parse_listen_addr(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen-addr must be host:port, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


async def serve(
    listen_addr: str,
    data_dir: Path,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    config: StandaloneConfig | None = None,
) -> None:
    """Run standalone Orrery until ``stop`` is set (default: until SIGINT/SIGTERM).

    ``ready(address)`` is called once the server accepts connections, with the ``host:port`` it
    listens on (the real port when ``listen_addr`` asks for port 0). Every database is closed
    (checkpointed and synced) before this returns.
    """
    config = config or StandaloneConfig()
    host, port = parse_listen_addr(listen_addr)
    data_dir = Path(data_dir)
    (data_dir / "control").mkdir(parents=True, exist_ok=True)
    authority = TokenAuthority(SigningKeys.load_or_create(data_dir / "keys"))
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
    store = await LmdbMetaStore.open(data_dir / "control" / "meta.lmdb")
    node = HostNode(HostNodeConfig(data_dir / "node"))
    runner: web.AppRunner | None = None
    try:
        started = time.monotonic()
        await node.start()
        control = ControlPlane(store, node, Placement(f"node-{NODE_ID}", listen_addr))
        gateway_config = GatewayConfig(
            max_module_bytes=config.max_module_bytes, max_body_bytes=config.max_body_bytes
        )
        app = create_app(authority, LocalControlPlane(control, node), LocalHostNode(node), gateway_config)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=config.shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = _bound_address(runner, host, port)
        gateway_config.advertise.append(bound)
        log.info("listening on http://%s (data in %s, started in %.2fs)", bound, data_dir, time.monotonic() - started)
        if ready is not None:
            ready(bound)
        await stop.wait()
        log.info("shutting down")
    finally:
        if runner is not None:
            await runner.cleanup()
        await node.stop()
        await store.close()
        log.info("stopped")


def _bound_address(runner: web.AppRunner, host: str, port: int) -> str:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            host, port = str(addr[0]), int(addr[1])
            break
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- process entry points -----------------------------------------------------------------------


class _LogfmtFormatter(logging.Formatter):
    """``ts=… level=… logger=… msg="…"`` lines (one record per line, machine-parseable)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} msg={json.dumps(record.getMessage())}"
        if record.exc_info:
            line += f" exc={json.dumps(self.formatException(record.exc_info))}"
        return line


def configure_logging(level: str = "info") -> None:
    """Quiet, structured logs on stderr: our INFO lines, everyone else's warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("orrery", "gateway", "controlplane"):
        logging.getLogger(name).setLevel(level.upper())


def run(
    listen_addr: str = DEFAULT_LISTEN_ADDR,
    data_dir: str | os.PathLike[str] = "data",
    *,
    config: StandaloneConfig | None = None,
) -> None:
    """Run the server in this process until SIGINT/SIGTERM; prints one line when ready."""

    def ready(address: str) -> None:
        print(f"Orrery is listening on http://{address} (data in {data_dir})", flush=True)

    coro = serve(listen_addr, Path(data_dir), ready=ready, config=config)
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    """``python -m orrery.standalone``."""
    parser = argparse.ArgumentParser(prog="python -m orrery.standalone", description=__doc__.splitlines()[0])
    parser.add_argument("--listen-addr", default=DEFAULT_LISTEN_ADDR, help="host:port (default %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="data directory (default %(default)s)")
    parser.add_argument("--max-module-bytes", type=int, default=StandaloneConfig.max_module_bytes)
    parser.add_argument("--max-body-bytes", type=int, default=StandaloneConfig.max_body_bytes)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    try:
        parse_listen_addr(args.listen_addr)
    except ValueError as e:
        parser.error(str(e))
    configure_logging(args.log_level)
    config = StandaloneConfig(max_module_bytes=args.max_module_bytes, max_body_bytes=args.max_body_bytes)
    try:
        run(args.listen_addr, args.data_dir, config=config)
    except (OSError, KeyFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
