"""The gateway's backends in cluster mode: :class:`ClusterControlPlane` and :class:`ClusterHostNode`.

Both read where things are from the gateway's mirror of the cluster's records
(:class:`~gateway.cluster_view.ClusterView`) and talk gRPC through per-server clients of
:mod:`gateway.grpc_backends` (one channel per address, kept in a pool, keepalive on each, a
deadline on every unary call).

**Control plane.** Lookups (names, records, owners, live nodes) are answered from the mirror.
Changes (publish, reset, delete, names) go to the active control plane (``/controlplane/leader``);
once it answered, the gateway waits until its mirror shows the write, so the client's next
request through this gateway sees it (a publish is never followed by a 404).

**Host nodes.** Every request goes to the database's current leader. Retries follow one rule —
retry only what certainly did not run, or cannot change anything — so a call in flight during a
failover either commits once or fails visibly, never a 200 for a lost write:

======================================  ====================================================
what happened                           what the gateway does
======================================  ====================================================
``NOT_LEADER`` (nothing ran)            wait for the mirror to move (or a short backoff),
                                        retry at the leader it names
the record names no leader; the         wait the same way; after ``failover_wait``: 503
leader's node is not live               saying so
``NO_QUORUM``                           503 with the node's reason (nothing ran; not retried:
                                        a quorum does not come back in seconds)
``OUTCOME_UNKNOWN``                     503 "the outcome is unknown" — never retried
no connection could be opened           nothing was sent: retried like ``NOT_LEADER``
the call broke or timed out (deadline,  reducer calls, SQL that may write, WebSocket
reset stream, node gone mid-call)       connects: 503 "the outcome is unknown", never
                                        retried; schema, logs, plans, single SELECTs:
                                        retried at the (new) leader
======================================  ====================================================

Every wait is bounded by ``failover_wait`` from the start of the request, then the client gets
a 503 with a text body that says what happened.

**WebSockets.** A client's socket is relayed over its leader's ``Connect`` stream. When that
stream ends (the node stepped down, stopped, or vanished) every client on it is closed with 1012
and a reason; the gateway also ends the stream itself as soon as its mirror shows another node
leading the database, or the node's registration gone — a partitioned old leader cannot keep
clients listening to a database it no longer writes. Clients reconnect and resubscribe (the
Python SDK does so by itself) and find the new leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc

from clustermeta.aio import cancel_and_wait, finish
from clustermeta.metastore import MetaStoreError
from clustermeta.names import InvalidName
from clustermeta.records import (
    ControlPlaneInfo,
    DbState,
    NodeInfo,
    db_key,
    dns_key,
    owner_key,
    rdns_key,
    rdns_prefix,
)
from gateway.backends import (
    CallResult,
    DatabaseInfo,
    PrePublish,
    PublishOutcome,
    SqlAnswer,
    WsParams,
    WsSession,
)
from gateway.cluster_view import Changes, ClusterView
from gateway.errors import ApiError
from gateway.failures import (
    ControlErrorKind,
    HostError,
    HostErrorKind,
    Unreachable,
    control_error,
    host_error,
    unavailable,
)
from gateway.grpc_backends import (
    WS_CLOSE_STREAM_ENDED,
    Deadlines,
    GrpcControlPlane,
    GrpcHostNode,
    WsBudget,
    is_read_only_sql,
)
from gateway.metrics import GatewayStats
from proto import GRPC_OPTIONS, auth
from sats.identity import Identity

__all__ = ["ClusterConfig", "ClusterControlPlane", "ClusterHostNode", "WS_CLOSE_NODE_GONE"]

log = logging.getLogger(__name__)

C = TypeVar("C")
T = TypeVar("T")

#: The close of a WebSocket whose leader's registration vanished (its lease expired).
WS_CLOSE_NODE_GONE = (1012, "the database's host node left the cluster; reconnect")

#: The gateway's channels: the services' options (sizes, keepalive) plus a short reconnect
#: backoff, so a node that restarts at the same address is reachable again within seconds
#: (gRPC's default backoff grows to two minutes).
CHANNEL_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

#: Answers meaning "this node does not lead the database (at that epoch)": nothing ran.
_NOT_LEADER = (HostErrorKind.NOT_LEADER, HostErrorKind.STALE_EPOCH)


@dataclass(frozen=True)
class ClusterConfig:
    """Deadlines and waits of a cluster gateway (see the module docstring for what they bound)."""

    deadlines: Deadlines = field(default_factory=Deadlines)
    #: Seconds a request waits for a database to have a reachable leader (or for a control
    #: plane to be elected), counted from its start; then 503. Long enough for an election
    #: after a leader's lease (2 s by default) runs out.
    failover_wait: float = 5.0
    #: Between retries while the mirror shows nothing new: from the first to the longest wait.
    retry_backoff_min: float = 0.05
    retry_backoff_max: float = 0.5
    #: Seconds a change made through this gateway waits for the mirror to show it.
    catch_up_timeout: float = 10.0


# --- plumbing ---------------------------------------------------------------------------------------


class _Clients(Generic[C]):
    """One channel, and one client over it, per server address."""

    def __init__(self, secret: auth.ClusterSecret, make: Callable[[grpc.aio.Channel, str], C]) -> None:
        self._secret = secret
        self._make = make
        self._entries: dict[str, tuple[grpc.aio.Channel, C]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, address: str, name: str) -> C:
        """The client of ``address`` (``name`` is how error messages call the server)."""
        entry = self._entries.get(address)
        if entry is None:
            channel = auth.channel(address, self._secret, CHANNEL_OPTIONS)
            entry = self._entries[address] = (channel, self._make(channel, name))
        return entry[1]

    def items(self) -> list[tuple[str, C]]:
        """Every (address, client) open now."""
        return [(address, client) for address, (_, client) in self._entries.items()]

    def drop(self, address: str, grace: float) -> None:
        """Forget ``address``; its channel closes once in-flight calls end (at most ``grace`` s)."""
        entry = self._entries.pop(address, None)
        if entry is not None:
            task = asyncio.ensure_future(entry[0].close(grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every channel now."""
        entries, self._entries = list(self._entries.values()), {}
        for channel, _ in entries:
            await channel.close()
        for task in list(self._closing):
            await finish(task)


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """A store read that failed (etcd unreachable) is a 503, not a 500 and not a 404."""
    try:
        yield
    except MetaStoreError as e:
        raise unavailable(f"the cluster's metadata store is unreachable: {e}") from None


class _Deadline:
    """The bounded wait of one request: backoff between attempts, the final error when time is up."""

    def __init__(self, config: ClusterConfig, stats: GatewayStats) -> None:
        self.config = config
        self.stats = stats
        self.end = time.monotonic() + config.failover_wait
        self.backoff = config.retry_backoff_min

    async def pause(self, error: ApiError, wait: Callable[[float], Awaitable[bool]], reason: str) -> None:
        """Before the next attempt: ``wait(seconds)`` for news (True: something changed), at most
        the current backoff; raise ``error`` when the request's time is up. ``reason`` names
        the retry in the gateway's metrics."""
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise error
        self.stats.retry(reason)
        if not await wait(min(remaining, self.backoff)):
            self.backoff = min(self.backoff * 2, self.config.retry_backoff_max)


# --- host nodes -------------------------------------------------------------------------------------


#: How long a call to a node that stopped leading may still answer by itself before it is given up.
MOVED_GRACE_S = 0.5


class ClusterHostNode:
    """:class:`gateway.backends.HostNodeBackend` that sends each request to its database's leader."""

    def __init__(
        self,
        view: ClusterView,
        secret: auth.ClusterSecret,
        config: ClusterConfig | None = None,
        stats: GatewayStats | None = None,
    ) -> None:
        self.view = view
        self.config = config or ClusterConfig()
        self.stats = stats or GatewayStats()
        ws_budget = WsBudget()  # one total for the gateway, whichever nodes its clients use
        self._clients: _Clients[GrpcHostNode] = _Clients(
            secret,
            lambda channel, name: GrpcHostNode(channel, deadlines=self.config.deadlines, target=name, ws_budget=ws_budget)
        )
        #: Node addresses live at the last check (only a node seen leaving counts as gone).
        self._live = view.node_addresses()
        view.add_listener(self._on_changes)

    async def close(self) -> None:
        """Close every client's stream and every channel."""
        for _, client in self._clients.items():
            client.end_ws(None, 1001, "server shutting down")
        await self._clients.close()

    def _client(self, node: NodeInfo) -> GrpcHostNode:
        return self._clients.get(node.address, f"host node {node.id} at {node.address}")

    async def _leader(
        self, database: Identity, deadline: _Deadline, missing: str | None
    ) -> tuple[NodeInfo, tuple[int, int]]:
        """The live leader of ``database``, waiting (bounded) while there is none; with the
        change token of the route it came from."""
        while True:
            with _store_errors():
                route = await self.view.route(database)
            if route.record is None:
                raise host_error(HostErrorKind.NO_SUCH_DATABASE, "No such database.", missing=missing)
            hex_id = database.to_hex()
            if route.leader is None:
                error = unavailable(
                    f"no leader: database {hex_id} has no leader right now (an election is running, or a "
                    "majority of its replicas is unreachable); try again shortly"
                )
                reason = "no_leader"
            elif route.node is None:
                error = unavailable(
                    f"no leader: the leader of database {hex_id}, host node {route.leader}, is not live and no "
                    "new leader was elected in time; try again shortly"
                )
                reason = "leader_not_live"
            else:
                return route.node, route.token
            await deadline.pause(
                error, functools.partial(self.view.wait_for_change, database, since=route.token), reason
            )

    async def _run(
        self,
        database: Identity,
        op: Callable[[GrpcHostNode], Awaitable[T]],
        *,
        idempotent: bool,
        missing: str | None = None,
    ) -> T:
        """Run ``op`` on the leader's client; retry what certainly did not run (and, when
        ``idempotent``, what broke mid-way) at the leader the mirror names next."""
        deadline = _Deadline(self.config, self.stats)
        while True:
            node, token = await self._leader(database, deadline, missing)
            try:
                return await self._unless_moved(database, node, op(self._client(node)), idempotent)
            except HostError as e:
                if e.kind not in _NOT_LEADER:
                    raise
                error: ApiError = unavailable(
                    f"no leader: host node {node.id} does not lead database {database.to_hex()} ({e.reason}), "
                    "and no new leader took over in time; try again shortly"
                )
                reason = "not_leader"
            except Unreachable as e:
                if e.may_have_run and not idempotent:
                    raise
                error = e
                reason = "unreachable"
            await deadline.pause(error, functools.partial(self.view.wait_for_change, database, since=token), reason)

    async def _unless_moved(self, database: Identity, node: NodeInfo, call: Awaitable[T], idempotent: bool) -> T:
        """Await ``call`` at ``node``, but give up on it once the mirror shows that ``node`` no
        longer leads ``database`` (another leader or epoch, or the node gone): a frozen or
        partitioned old leader would otherwise hold the request until its deadline. Its write
        can no longer commit there (the new epoch fenced it), but it might have committed
        before: the outcome is unknown."""
        route = self.view.cached_route(database)
        epoch = route.record.epoch if route.record is not None else None

        def moved() -> bool:
            now = self.view.cached_route(database)
            return (
                now.node is None
                or now.node.id != node.id
                or (now.record is not None and epoch is not None and now.record.epoch != epoch)
            )

        task = asyncio.ensure_future(call)
        watch = asyncio.ensure_future(self.view.wait_until(moved, self.config.deadlines.call))
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if task.done():
            return task.result()
        if not watch.cancelled() and watch.done() and watch.result():
            # A node that stepped down answers by itself (NOT_LEADER: retried); give it a moment.
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(task), MOVED_GRACE_S)
            await cancel_and_wait(task)
            raise Unreachable(
                f"the outcome is unknown: host node {node.id} stopped leading database {database.to_hex()} "
                "during the request; it may or may not have taken effect"
                if not idempotent
                else f"host node {node.id} stopped leading database {database.to_hex()} during the request",
                may_have_run=True,
            )
        return await task

    async def call(
        self, database: Identity, reducer: str, args_json: str, *, caller: Identity, connection_id: int
    ) -> CallResult:
        """See :class:`gateway.backends.HostNodeBackend` (retried only when it certainly did not run)."""
        return await self._run(
            database,
            lambda c: c.call(database, reducer, args_json, caller=caller, connection_id=connection_id),
            idempotent=False,
        )

    async def sql(self, database: Identity, query: str, caller: Identity) -> SqlAnswer:
        """See :class:`gateway.backends.HostNodeBackend`; a single SELECT is retried after a
        broken connection, anything that may write is not."""
        return await self._run(
            database, lambda c: c.sql(database, query, caller), idempotent=is_read_only_sql(query),
            missing="module not found",
        )  # fmt: skip

    async def schema(self, database: Identity) -> Any:
        """See :class:`gateway.backends.HostNodeBackend`."""
        return await self._run(database, lambda c: c.schema(database), idempotent=True)

    async def pre_publish(self, database: Identity, program: bytes) -> PrePublish:
        """See :class:`gateway.backends.HostNodeBackend` (planning changes nothing: retried)."""
        return await self._run(database, lambda c: c.pre_publish(database, program), idempotent=True)

    async def logs(self, database: Identity, num_lines: int | None, follow: bool) -> AsyncGenerator[str, None]:
        """The leader's log lines; retried at a new leader until the first line arrives. A stream
        that breaks later just ends (the client sees the end of the response)."""
        lines: AsyncGenerator[str, None] | None = None

        async def first(client: GrpcHostNode) -> str | None:
            nonlocal lines
            if lines is not None:
                await lines.aclose()
            lines = client.logs(database, num_lines, follow)
            return await anext(lines, None)

        try:
            line = await self._run(database, first, idempotent=True)
            if line is None:
                return
            yield line
            assert lines is not None
            with contextlib.suppress(Unreachable):
                async for line in lines:
                    yield line
        finally:
            if lines is not None:
                await lines.aclose()

    async def connect(self, database: Identity, params: WsParams) -> WsSession | None:
        """A WebSocket client on the leader's ``Connect`` stream (waiting, bounded, for a leader).

        Not retried: ``client_connected`` may have run. A stream that ends closes the client
        with 1012, and the client reconnects.
        """
        node, _ = await self._leader(database, _Deadline(self.config, self.stats), None)
        session = await self._client(node).connect(database, params)
        self._check_streams(frozenset((database,)), nodes=False)  # the leader may have moved meanwhile
        return session

    def _on_changes(self, changes: Changes) -> None:
        self._check_streams(changes.databases, nodes=changes.nodes)

    def _check_streams(self, databases: frozenset[Identity], *, nodes: bool) -> None:
        """End the ``Connect`` streams that no longer go to their database's leader."""
        left: set[str] = set()
        if nodes:
            live = self.view.node_addresses()
            left, self._live = self._live - live, live
        for address, client in self._clients.items():
            if address in left:
                if client.end_ws(None, *WS_CLOSE_NODE_GONE):
                    log.info("closed the WebSocket clients on %s: the node left the cluster", address)
                self._clients.drop(address, grace=self.config.deadlines.call)
                continue
            for database in client.ws_databases():
                if database not in databases:
                    continue
                route = self.view.cached_route(database)
                if route.node is not None and route.node.address != address:
                    closed = client.end_ws(database, *WS_CLOSE_STREAM_ENDED)
                    log.info(
                        "database %s: leader moved to %s; closed %d WebSocket clients on %s",
                        database.to_hex(), route.node.id, closed, address,
                    )  # fmt: skip


# --- control plane ----------------------------------------------------------------------------------


class ClusterControlPlane:
    """:class:`gateway.backends.ControlPlaneBackend`: lookups from the mirror, changes through
    the active control plane (then waiting until the mirror shows them)."""

    def __init__(
        self,
        view: ClusterView,
        secret: auth.ClusterSecret,
        config: ClusterConfig | None = None,
        stats: GatewayStats | None = None,
    ) -> None:
        self.view = view
        self.config = config or ClusterConfig()
        self.stats = stats or GatewayStats()
        self._clients: _Clients[GrpcControlPlane] = _Clients(
            secret,
            lambda channel, name: GrpcControlPlane(channel, deadlines=self.config.deadlines, target=name)
        )

    async def close(self) -> None:
        """Close every channel."""
        await self._clients.close()

    # --- lookups (the mirror) -------------------------------------------------------------------

    async def resolve(self, name_or_identity: str) -> Identity:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        try:
            with _store_errors():
                identity = await self.view.resolve(name_or_identity)
        except InvalidName as e:
            raise control_error(ControlErrorKind.INVALID_NAME, str(e)) from None
        if identity is None:
            raise control_error(ControlErrorKind.NAME_NOT_FOUND, f"Could not resolve database `{name_or_identity}`")
        return identity

    async def database(self, name_or_identity: str) -> DatabaseInfo:
        """See :class:`gateway.backends.ControlPlaneBackend`: only an active database exists (one
        being created or deleted is "No such database.")."""
        identity = await self.resolve(name_or_identity)
        with _store_errors():
            record = await self.view.database(identity)
        if record is None or record.state is not DbState.ACTIVE:
            raise control_error(ControlErrorKind.DATABASE_NOT_FOUND, "No such database.")
        return DatabaseInfo(record.identity, record.owner, record.host_type, record.initial_program_hash)

    async def names(self, identity: Identity) -> list[str]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _store_errors():
            return await self.view.names(identity)

    async def databases_of(self, owner: Identity) -> list[Identity]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        with _store_errors():
            return await self.view.databases_of(owner)

    async def node_ids(self) -> Sequence[int | str]:
        """The live host nodes' ids."""
        return [node.id for node in self.view.live_nodes()]

    # --- changes (the active control plane) -----------------------------------------------------

    async def _change(self, op: Callable[[GrpcControlPlane], Awaitable[T]]) -> T:
        """Run ``op`` on the active control plane, waiting (bounded) while none is elected or the
        one named cannot be reached. A request that may have arrived is never sent twice."""
        deadline = _Deadline(self.config, self.stats)
        while True:
            with _store_errors():
                info = await self.view.controlplane()
            if info is None:
                error: ApiError = unavailable(
                    "no control plane is active right now (an election is running); try again shortly"
                )
                reason = "no_controlplane"
            else:
                for address, _ in self._clients.items():
                    if address != info.address:  # a control plane that is no longer the active one
                        self._clients.drop(address, grace=self.config.deadlines.publish)
                try:
                    return await op(self._clients.get(info.address, f"the control plane at {info.address}"))
                except Unreachable as e:
                    if e.may_have_run:
                        raise
                    error = e
                    reason = "controlplane_unreachable"

            await deadline.pause(error, functools.partial(self._wait_controlplane_change, info), reason)

    async def _wait_controlplane_change(self, was: ControlPlaneInfo | None, seconds: float) -> bool:
        return await self.view.wait_until(lambda: self.view.cached_controlplane() != was, seconds)

    async def _catch_up(self, keys: Sequence[bytes], prefixes: Sequence[bytes] = ()) -> None:
        """Wait until the mirror shows the control plane's write (bounded; answer anyway after)."""
        try:
            if await self.view.catch_up(keys, prefixes, self.config.catch_up_timeout):
                return
            log.warning("the cluster view did not show a change within %.1fs", self.config.catch_up_timeout)
        except MetaStoreError as e:
            log.warning("could not check that the cluster view shows a change: %s", e)

    async def _identity_or_none(self, name_or_identity: str) -> Identity | None:
        with contextlib.suppress(ApiError):
            return await self.resolve(name_or_identity)
        return None

    async def publish(
        self,
        caller: Identity,
        name_or_identity: str | None,
        program: bytes,
        *,
        clear: bool,
        break_clients: bool = False,
        token: bytes | None = None,
        num_replicas: int | None = None,
    ) -> PublishOutcome:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        outcome = await self._change(
            lambda cp: cp.publish(
                caller, name_or_identity, program, clear=clear, break_clients=break_clients, token=token,
                num_replicas=num_replicas,
            )
        )  # fmt: skip
        keys = [db_key(outcome.identity), owner_key(caller, outcome.identity)]
        if outcome.domain is not None:
            keys.append(dns_key(outcome.domain))
        await self._catch_up(keys, [rdns_prefix(outcome.identity)])
        return outcome

    async def reset(self, caller: Identity, name_or_identity: str, program: bytes | None) -> PublishOutcome:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        outcome = await self._change(lambda cp: cp.reset(caller, name_or_identity, program))
        await self._catch_up([db_key(outcome.identity)])
        return outcome

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        identity = await self._identity_or_none(name_or_identity)
        await self._change(lambda cp: cp.delete(caller, name_or_identity))
        if identity is not None:
            await self._catch_up([db_key(identity), owner_key(caller, identity)])

    async def add_name(self, caller: Identity, name_or_identity: str, name: str) -> dict[str, Any]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        result = await self._change(lambda cp: cp.add_name(caller, name_or_identity, name))
        success = result["Success"]
        identity = Identity.from_hex(success["database_identity"])
        await self._catch_up([dns_key(success["domain"]), rdns_key(identity, success["domain"])])
        return result

    async def set_names(self, caller: Identity, name_or_identity: str, names: list[str]) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        identity = await self._identity_or_none(name_or_identity)
        old = await self.names(identity) if identity is not None else []
        await self._change(lambda cp: cp.set_names(caller, name_or_identity, names))
        if identity is not None:
            await self._catch_up([dns_key(n) for n in {*names, *old}], [rdns_prefix(identity)])
