"""The gateway end of a split standalone server's link (:mod:`proto.link`).

In a split standalone server (``orrery.standalone --transport split``) the gateway process
terminates HTTP and WebSockets and the host-node process runs the databases. The traffic that
never stops goes over the link, a unix socket batching every event of one event-loop turn into
one write each way: WebSocket clients' frames, and HTTP reducer calls and SQL queries as
requests (:func:`request_body`) answered by the node's in-process adapter
(:class:`orrery.standalone.LocalHostNode`, so both transports give the same answers; the reply
format is :func:`reply_body`). The rest (schema, logs, publishing) uses the host node's and
control plane's gRPC services, as a cluster's gateway does.

Each client is a :class:`~gateway.grpc_backends.RelayedWsSession`, with the same per-client
limits as over gRPC. When the link ends (the host-node process stopped or died) every client is
closed 1012 and :attr:`GatewayLink.lost` is set; the server stops then.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

from gateway.backends import (
    CallOutcome,
    CallResult,
    ControlPlaneBackend,
    DatabaseInfo,
    PrePublish,
    PublishOutcome,
    SqlAnswer,
    WsParams,
    WsSession,
)
from gateway.errors import ApiError, InternalError
from gateway.grpc_backends import (
    WS_CLOSE_STREAM_LOST,
    GrpcHostNode,
    RelayedWsSession,
    WsBudget,
)
from proto import link
from sats.identity import Identity

__all__ = ["CachedControlPlane", "GatewayLink", "LinkHostNode", "error_reply", "reply_body", "request_body", "unreachable"]

log = logging.getLogger(__name__)

#: Each call outcome by its name, as a CALL's reply carries it.
_OUTCOMES = {outcome.value: outcome for outcome in CallOutcome}


def request_body(op: str, **fields: Any) -> bytes:
    """A control request's body: JSON naming the operation and its arguments."""
    return json.dumps({"op": op, **fields}).encode()


def reply_body(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """A reply's body: one line of JSON (``{"ok": …}`` or ``{"error": …}``), then raw bytes."""
    return json.dumps(header).encode() + b"\n" + payload


def error_reply(e: ApiError) -> bytes:
    """The reply carrying an API error exactly (status, body, content type, headers, detail)."""
    return reply_body({
        "error": {"status": e.status, "content_type": e.content_type, "headers": e.headers, "detail": e.detail}
    }, e.body)  # fmt: skip


def unreachable(e: ConnectionError) -> ApiError:
    """503: the link to the host node is gone (``e`` says how)."""
    return ApiError.text(503, f"the host node is not reachable: {e}")


def _parse_reply(body: bytes) -> tuple[dict[str, Any], bytes]:
    """The ``ok`` header and payload of a reply; raises the :class:`ApiError` an error reply carries."""
    line, _, payload = body.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        raise InternalError(f"the host node answered a request with {body[:200]!r}") from None
    if "error" in header:
        e = header["error"]
        raise ApiError(e["status"], payload, e["content_type"], e["headers"], detail=e["detail"])
    return header["ok"], payload


class GatewayLink:
    """The link to the host-node process: every WebSocket client of this gateway, and requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, budget: WsBudget | None = None):
        self.budget = budget or WsBudget()
        self.sessions: dict[int, RelayedWsSession] = {}
        self.dead = False
        #: Set once the link ended; :attr:`why` says how.
        self.lost = asyncio.Event()
        self.why = ""
        self._reader = reader
        self._writer = writer
        self._batch = link.Batch()
        self._scheduled = False
        self._refs = itertools.count(1)
        self._requests = itertools.count(1)
        self._replies: dict[int, asyncio.Future[bytes]] = {}
        self._flushing: list[RelayedWsSession] = []
        #: (``asyncio.get_running_loop()`` asks the kernel for the process id on every call.)
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.ensure_future(self._read())

    @property
    def out_bytes(self) -> int:
        """Bytes of client frames not yet taken by the host node (batched or in the socket's buffer)."""
        return self._batch.size + self._writer.transport.get_write_buffer_size()

    # --- gateway → node -----------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self.dead:
            self._batch = link.Batch()
            return
        if self._batch:
            self._writer.write(self._batch.take())

    def send_message(self, ref: int, frame: bytes | str) -> None:
        """Relay one client frame."""
        if isinstance(frame, str):
            self._batch.message(ref, frame.encode(), True)
        else:
            self._batch.message(ref, frame, False)
        self._schedule()

    def send_disconnected(self, ref: int) -> None:
        """Tell the node the client's socket is gone."""
        self._batch.disconnect(ref)
        self._schedule()

    def flush_later(self, session: RelayedWsSession) -> None:
        """See :class:`gateway.grpc_backends.RelayStream`."""
        self._flushing.append(session)

    async def connect(self, database: Identity, params: WsParams) -> RelayedWsSession | None:
        """A WebSocket client of ``database``; None when ``client_connected`` refused it."""
        ref = next(self._refs)
        session = RelayedWsSession(self, ref, params)
        if self.dead:
            session.server_closed(*WS_CLOSE_STREAM_LOST)
            return session
        self.sessions[ref] = session
        self._batch.connect(ref, link.Connect(
            database=database.to_bsatn(), identity=params.identity.to_bsatn(), token=params.token,
            connection_id=params.connection_id, json=params.json, compression=params.compression, light=params.light,
            confirmed=params.confirmed, jwt_payload=params.jwt_payload,
        ))  # fmt: skip
        self._schedule()
        if not await session.ready:
            self.sessions.pop(ref, None)
            return None
        return session

    async def request(self, body: bytes) -> bytes:
        """Send a control request to the node; its reply (ConnectionError once the link is gone)."""
        request_id = self._new_request()
        self._batch.request(link.REQUEST, request_id, body)
        future = self._reply(request_id)
        try:
            return await future
        finally:
            self._replies.pop(request_id, None)  # (a cancelled wait leaves no entry behind)

    async def call(
        self, database: Identity, reducer: str, args_json: str, caller: Identity, connection_id: int
    ) -> bytes:
        """Send an HTTP ``/call`` to the node (a CALL event); its reply, as :meth:`request`'s."""
        return await self.start_call(database, reducer, args_json, caller, connection_id)

    def start_call(
        self, database: Identity, reducer: str, args_json: str, caller: Identity, connection_id: int
    ) -> asyncio.Future[bytes]:
        """:meth:`call` without a coroutine: the future of the reply (ConnectionError at once, or
        in the future, once the link is gone)."""
        request_id = self._new_request()
        self._batch.call(
            request_id, database.to_bsatn(), caller.to_bsatn(), connection_id.to_bytes(16, "little"), reducer,
            args_json,
        )  # fmt: skip
        return self._reply(request_id)

    def _new_request(self) -> int:
        if self.dead:
            raise ConnectionError(f"the link to the host node is gone: {self.why}")
        return next(self._requests)

    def _reply(self, request_id: int) -> asyncio.Future[bytes]:
        """The future of request ``request_id``'s reply (the reader takes it out when it comes);
        the batch carrying the request is scheduled."""
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._replies[request_id] = future
        self._schedule()
        return future

    async def close(self) -> None:
        """End the link (the node disconnects every client and stops serving it)."""
        self._flush()
        self.dead = True
        self._writer.close()
        await self._task

    # --- node → gateway -----------------------------------------------------------------------

    async def _read(self) -> None:
        why = "the host node closed the link"
        try:
            while True:
                try:
                    head = await self._reader.readexactly(4)
                    body = await self._reader.readexactly(link.read_length(head))
                except asyncio.IncompleteReadError:
                    break
                sessions = self.sessions
                for ev in link.decode(body):
                    kind = ev[0]
                    if kind == link.FRAME:
                        data = ev[2]
                        for ref in ev[1]:
                            session = sessions.get(ref)
                            if session is not None:
                                session.deliver(data)
                    elif kind == link.CLOSED:
                        session = sessions.get(ev[1])
                        if session is not None:
                            session.server_closed(ev[2], ev[3])
                    elif kind == link.REPLY:
                        future = self._replies.pop(ev[1], None)
                        if future is not None and not future.done():
                            future.set_result(ev[2])
                    else:
                        raise link.LinkError(f"the host node sent an event of kind {kind}, which only the gateway sends")
                flushing, self._flushing = self._flushing, []
                for session in flushing:
                    session.flush()
        except (ConnectionError, OSError) as e:
            why = f"the link to the host node broke: {e}"
        except link.LinkError as e:
            log.error("the host node sent a batch that does not parse: %s", e)
            why = f"the host node sent a batch that does not parse: {e}"
        finally:
            self.dead = True
            self.why = why
            for session in list(self.sessions.values()):
                session.server_closed(*WS_CLOSE_STREAM_LOST)
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(ConnectionError(why))
            self.lost.set()


class LinkHostNode:
    """:class:`gateway.backends.HostNodeBackend` of a split standalone server: WebSocket clients,
    reducer calls and SQL over the link, the rest over the host node's gRPC service."""

    def __init__(self, grpc: GrpcHostNode, link: GatewayLink) -> None:
        self.grpc = grpc
        self.link = link

    async def _request(self, body: bytes) -> tuple[dict[str, Any], bytes]:
        try:
            reply = await self.link.request(body)
        except ConnectionError as e:
            raise unreachable(e) from None
        return _parse_reply(reply)

    async def call(
        self, database: Identity, reducer: str, args_json: str, *, caller: Identity, connection_id: int
    ) -> CallResult:
        """See :class:`gateway.backends.HostNodeBackend` (a CALL on the link)."""
        future = self.start_call(database, reducer, args_json, caller, connection_id)
        try:
            reply = await future
        except ConnectionError as e:
            raise unreachable(e) from None
        return self.call_result(reply)

    def start_call(
        self, database: Identity, reducer: str, args_json: str, caller: Identity, connection_id: int
    ) -> asyncio.Future[bytes]:
        """:meth:`call` up to the node's reply, without a coroutine (gateway/fast_calls.py): the
        future of the reply (ConnectionError in it once the link is gone: :func:`unreachable`),
        which :meth:`call_result` reads."""
        try:
            return self.link.start_call(database, reducer, args_json, caller, connection_id)
        except ConnectionError as e:
            raise unreachable(e) from None

    @staticmethod
    def call_result(reply: bytes) -> CallResult:
        """The outcome a CALL's reply carries (raises the ApiError an error reply carries)."""
        try:
            outcome = link.decode_call_outcome(reply)
        except link.LinkError as e:
            raise InternalError(f"the host node answered a call with {reply[:200]!r}: {e}") from None
        if outcome is not None:
            name, message, energy_used, duration_micros = outcome
            found = _OUTCOMES.get(name)
            if found is None:
                raise InternalError(f"the host node answered a call with the unknown outcome {name!r}")
            return CallResult(found, message, energy_used, duration_micros)
        ok, _ = _parse_reply(reply)
        return CallResult(CallOutcome(ok["outcome"]), ok["message"], ok["energy_used"], ok["duration_micros"])

    async def sql(self, database: Identity, query: str, caller: Identity) -> SqlAnswer:
        """See :class:`gateway.backends.HostNodeBackend` (a request on the link)."""
        ok, payload = await self._request(
            request_body("sql", database=database.to_hex(), query=query, caller=caller.to_hex())
        )
        return SqlAnswer(payload, ok["duration_micros"])

    async def schema(self, database: Identity) -> Any:
        """See :class:`gateway.backends.HostNodeBackend`."""
        return await self.grpc.schema(database)

    def logs(self, database: Identity, num_lines: int | None, follow: bool) -> AsyncGenerator[str, None]:
        """See :class:`gateway.backends.HostNodeBackend`."""
        return self.grpc.logs(database, num_lines, follow)

    async def pre_publish(self, database: Identity, program: bytes) -> PrePublish:
        """See :class:`gateway.backends.HostNodeBackend`."""
        return await self.grpc.pre_publish(database, program)

    async def connect(self, database: Identity, params: WsParams) -> WsSession | None:
        """See :class:`gateway.backends.HostNodeBackend`."""
        return await self.link.connect(database, params)


class CachedControlPlane:
    """A :class:`gateway.backends.ControlPlaneBackend` that remembers what names resolve to.

    Every database request resolves its path segment (``resolve`` / ``database``); over gRPC each
    lookup is a round trip costing both processes more CPU than the reducer call it precedes. A
    split standalone server has one gateway, this one, so every change to databases and names
    passes through here: the cache is emptied when each begins and when it ends, and a lookup
    that overlapped a change (one began or ended while it was answered) is not kept — it may
    predate the change. Only successful lookups are kept, so a database created meanwhile is
    found on the next request.
    """

    def __init__(self, inner: ControlPlaneBackend) -> None:
        self.inner = inner
        self._identities: dict[str, Identity] = {}
        self._infos: dict[str, DatabaseInfo] = {}
        #: Bumped when a change begins and when it ends; changes under way now.
        self._generation = 0
        self._changes = 0

    def _forget(self) -> None:
        self._generation += 1
        self._identities.clear()
        self._infos.clear()

    async def resolve(self, name_or_identity: str) -> Identity:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        found = self._identities.get(name_or_identity)
        if found is None:
            generation = self._generation
            found = await self.inner.resolve(name_or_identity)
            if generation == self._generation and not self._changes:
                self._identities[name_or_identity] = found
        return found

    def known(self, name_or_identity: str) -> DatabaseInfo | None:
        """What :meth:`database` answers from the cache alone, without a coroutine (None: not
        cached; gateway/fast_calls.py then awaits :meth:`database`)."""
        return self._infos.get(name_or_identity)

    async def database(self, name_or_identity: str) -> DatabaseInfo:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        found = self._infos.get(name_or_identity)
        if found is None:
            generation = self._generation
            found = await self.inner.database(name_or_identity)
            if generation == self._generation and not self._changes:
                self._infos[name_or_identity] = found
        return found

    async def _changing(self, change: Any) -> Any:
        self._forget()
        self._changes += 1
        try:
            return await change
        finally:
            self._changes -= 1
            self._forget()

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
        return await self._changing(self.inner.publish(  # type: ignore[no-any-return]
            caller, name_or_identity, program, clear=clear, break_clients=break_clients, token=token,
            num_replicas=num_replicas,
        ))  # fmt: skip

    async def reset(self, caller: Identity, name_or_identity: str, program: bytes | None) -> PublishOutcome:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return await self._changing(self.inner.reset(caller, name_or_identity, program))  # type: ignore[no-any-return]

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        await self._changing(self.inner.delete(caller, name_or_identity))

    async def names(self, identity: Identity) -> list[str]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return await self.inner.names(identity)

    async def add_name(self, caller: Identity, name_or_identity: str, name: str) -> dict[str, Any]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return await self._changing(self.inner.add_name(caller, name_or_identity, name))  # type: ignore[no-any-return]

    async def set_names(self, caller: Identity, name_or_identity: str, names: list[str]) -> None:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        await self._changing(self.inner.set_names(caller, name_or_identity, names))

    async def databases_of(self, owner: Identity) -> list[Identity]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return await self.inner.databases_of(owner)

    async def node_ids(self) -> list[int | str]:
        """See :class:`gateway.backends.ControlPlaneBackend`."""
        return list(await self.inner.node_ids())
