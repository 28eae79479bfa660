"""The host-node end of a split standalone server's link (:mod:`proto.link`).

:func:`serve_link` reads the gateway's batches — new clients, their frames, their ends, control
requests — and feeds the clients to one :class:`LinkStream` (the same client handling as the
gRPC ``Connect`` stream, :class:`~hostnode.realtime_stream.ClientStream`); what the clients'
connections send back, and the replies, go to the gateway as one batch per event-loop turn, one
write each. The link ends when the gateway closes it (or dies: end of file), and every client of
it is disconnected then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from clustermeta.aio import finish
from hostnode.realtime import ClientParams
from hostnode.realtime_stream import ClientStream
from hostnode.service import HostNode
from proto import link
from sats.identity import Identity
from sats.ws_v1 import Compression

__all__ = ["LinkStream", "Request", "serve_link"]

log = logging.getLogger(__name__)

#: What the node answers a control request with (the request's JSON body → the reply's body).
Request = Callable[[bytes], Awaitable[bytes]]
#: What answers a CALL (:data:`proto.link.CALL`): (database, caller, connection id, reducer, JSON
#: arguments, reply) → None; it hands the reply's body to ``reply`` once (any thread that runs the
#: event loop's callbacks; a function, not a coroutine: no task per call).
Call = Callable[[Identity, Identity, int, str, str, Callable[[bytes], None]], None]


@dataclass(slots=True)
class _Frame:
    refs: list[int]
    data: bytes
    text: bool


@dataclass(slots=True)
class _Closed:
    ref: int
    code: int
    reason: str


@dataclass(slots=True)
class _Reply:
    request_id: int
    body: bytes = field(repr=False)


class LinkStream(ClientStream["_Frame | _Closed | _Reply"]):
    """Every client the gateway relays over the link, of any database."""

    def _frame_event(self, ref: int, frame: bytes | str, data: bytes) -> _Frame | _Closed | _Reply:
        return _Frame([ref], data, isinstance(frame, str))

    def _add_ref(self, event: _Frame | _Closed | _Reply, ref: int) -> None:
        assert isinstance(event, _Frame)
        event.refs.append(ref)

    def _closed_event(self, ref: int, code: int, reason: str) -> _Frame | _Closed | _Reply:
        return _Closed(ref, code, reason)

    def reply(self, request_id: int, body: bytes) -> None:
        """Send the answer to a control request with the next batch."""
        self._events.append(_Reply(request_id, body))
        self._wake.set()

    def connect(self, ref: int, c: link.Connect) -> None:
        """A CONNECT event."""
        params = ClientParams(
            identity=Identity.from_bsatn(c.identity), token=c.token, connection_id=c.connection_id, json=c.json,
            compression=Compression(c.compression), light=c.light, confirmed=c.confirmed, jwt_payload=c.jwt_payload,
        )  # fmt: skip
        self.connected(ref, Identity.from_bsatn(c.database), params)


#: Identities a link remembers (:func:`serve_link`); past it, it forgets them all and starts again.
_IDENTITIES_KEPT = 4096


def _encode(events: list[_Frame | _Closed | _Reply]) -> bytes:
    batch = link.Batch()
    for ev in events:
        if type(ev) is _Frame:
            batch.frame(ev.refs, ev.data, ev.text)
        elif type(ev) is _Closed:
            batch.closed(ev.ref, ev.code, ev.reason)
        else:
            assert isinstance(ev, _Reply)
            batch.request(link.REPLY, ev.request_id, ev.body)
    return batch.take()


async def serve_link(
    node: HostNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request, call: Call
) -> None:
    """Serve the gateway on the link until it ends; every client of it is disconnected then.

    Raises :class:`proto.link.LinkError` when the gateway sent something that does not parse.
    """
    stream = LinkStream(node)
    sender = asyncio.ensure_future(_send(stream, writer))
    requests: set[asyncio.Task[None]] = set()

    async def answer(request_id: int, body: bytes) -> None:
        try:
            reply = await request(body)
        except Exception as e:  # noqa: BLE001 - the gateway gets the error as the reply
            log.exception("a control request on the link failed")
            reply = failure_reply(e)
        stream.reply(request_id, reply)

    #: The identities CALLs named lately, by their BSATN: a client calls again and again, and the
    #: database is nearly always the same (one dict lookup instead of building and checking one).
    identities: dict[bytes, Identity] = {}

    def identity(data: bytes) -> Identity:
        known = identities.get(data)
        if known is None:
            if len(identities) >= _IDENTITIES_KEPT:
                identities.clear()
            known = identities[data] = Identity.from_bsatn(data)
        return known

    def start_call(request_id: int, database: bytes, caller: bytes, connection_id: bytes, reducer: str, args: str) -> None:
        def reply(body: bytes) -> None:
            stream.reply(request_id, body)

        try:
            call(identity(database), identity(caller), int.from_bytes(connection_id, "little"), reducer, args, reply)
        except Exception as e:  # noqa: BLE001 - the gateway gets the error as the reply
            log.exception("a call on the link failed")
            reply(failure_reply(e))

    try:
        while True:
            try:
                head = await reader.readexactly(4)
                body = await reader.readexactly(link.read_length(head))
            except asyncio.IncompleteReadError:
                return  # the gateway closed the link (or died)
            for ev in link.decode(body):
                kind = ev[0]
                if kind == link.MESSAGE:
                    stream.message(ev[1], ev[2], ev[3])
                elif kind == link.CONNECT:
                    stream.connect(ev[1], ev[2])
                elif kind == link.DISCONNECT:
                    stream.disconnected(ev[1])
                elif kind == link.CALL:
                    start_call(ev[1], ev[2], ev[3], ev[4], ev[5], ev[6])
                elif kind == link.REQUEST:
                    task = asyncio.ensure_future(answer(ev[1], ev[2]))
                    requests.add(task)
                    task.add_done_callback(requests.discard)
                else:
                    raise link.LinkError(f"the gateway sent an event of kind {kind}, which only the node sends")
            stream.end_of_batch()
    finally:
        stream.end()
        await stream.close_all()
        for task in requests:
            task.cancel()
        await finish(sender)


def failure_reply(e: BaseException) -> bytes:
    """The reply to a request that failed unexpectedly (the gateway answers 500 with it)."""
    return f"error: {type(e).__name__}: {e}".encode()


async def _send(stream: LinkStream, writer: asyncio.StreamWriter) -> None:
    """Write each turn's events as one batch; the socket's flow control paces the clients."""
    try:
        while (events := await stream.next_batch()) is not None:
            writer.write(_encode(events))
            await writer.drain()
    except (ConnectionError, OSError) as e:
        log.warning("the link to the gateway broke: %s", e)
