"""The gateway end of a split standalone server's link (:mod:`proto.link`).

In a split standalone server (``orrery.standalone --transport split``) the gateway process
terminates HTTP and WebSockets and the host-node process runs the databases. WebSocket clients —
the traffic that never stops — go over the link, a unix socket batching every client's events of
one event-loop turn into one write each way; the rest (HTTP calls, SQL, schema, logs, publishing)
uses the host node's and control plane's gRPC services, as a cluster's gateway does.

Each client is a :class:`~gateway.grpc_backends.RelayedWsSession`, with the same per-client
limits as over gRPC. When the link ends (the host-node process stopped or died) every client is
closed 1012 and :attr:`GatewayLink.lost` is set; the server stops then.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncGenerator
from typing import Any

from gateway.backends import CallResult, PrePublish, SqlAnswer, WsParams, WsSession
from gateway.grpc_backends import (
    WS_CLOSE_STREAM_LOST,
    GrpcHostNode,
    RelayedWsSession,
    WsBudget,
)
from proto import link
from sats.identity import Identity

__all__ = ["GatewayLink", "LinkHostNode"]

log = logging.getLogger(__name__)


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
        self._task = asyncio.ensure_future(self._read())

    @property
    def out_bytes(self) -> int:
        """Bytes of client frames not yet taken by the host node (batched or in the socket's buffer)."""
        return self._batch.size + self._writer.transport.get_write_buffer_size()

    # --- gateway → node -----------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

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
        if self.dead:
            raise ConnectionError(f"the link to the host node is gone: {self.why}")
        request_id = next(self._requests)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        self._batch.request(link.REQUEST, request_id, body)
        self._schedule()
        try:
            return await future
        finally:
            self._replies.pop(request_id, None)

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
                        future = self._replies.get(ev[1])
                        if future is not None and not future.done():
                            future.set_result(ev[2])
                    else:
                        raise link.LinkError(f"the host node sent an event of kind {kind}, which only the gateway sends")
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
    """:class:`gateway.backends.HostNodeBackend` of a split standalone server: WebSocket clients
    over the link, everything else over the host node's gRPC service."""

    def __init__(self, grpc: GrpcHostNode, link: GatewayLink) -> None:
        self.grpc = grpc
        self.link = link

    async def call(
        self, database: Identity, reducer: str, args_json: str, *, caller: Identity, connection_id: int
    ) -> CallResult:
        """See :class:`gateway.backends.HostNodeBackend`."""
        return await self.grpc.call(database, reducer, args_json, caller=caller, connection_id=connection_id)

    async def sql(self, database: Identity, query: str, caller: Identity) -> SqlAnswer:
        """See :class:`gateway.backends.HostNodeBackend`."""
        return await self.grpc.sql(database, query, caller)

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
