"""The link between a split standalone server's gateway process and its host-node process.

One unix-domain socket (a ``socketpair`` made by the gateway process before it starts the host
node) carries every WebSocket client of every database both ways, and the few control requests
(startup, metrics). It was chosen by measurement over a gRPC stream and shared-memory rings
(``loadtest/bench_transport.py``, loadtest/RESULTS.md "Transport between gateway and host
node"): 6–7× less CPU per message than gRPC at every batch size, within 10 % of shared memory,
and the kernel gives flow control and tells each side when the other died (end of file).

The stream is a sequence of **batches**, each one write: a 4-byte little-endian length, then that
many bytes of events back to back. Each event starts with its kind (one byte):

========================  ==========================================================================
``CONNECT`` (→ node)      ``<B Q I``: kind, client ref, n; then n bytes of JSON (:class:`Connect`)
``MESSAGE`` (→ node)      ``<B Q B I``: kind, client ref, 1 if a text frame, n; then the n bytes
``DISCONNECT`` (→ node)   ``<B Q``: kind, client ref
``FRAME`` (→ gateway)     ``<B B I I``: kind, 1 if text, k refs, n; then k ``<Q`` refs, n bytes
``CLOSED`` (→ gateway)    ``<B Q H I``: kind, client ref, close code, n; then n bytes of UTF-8 reason
``REQUEST`` / ``REPLY``   ``<B Q I``: kind, request id, n; then n bytes (JSON request / reply body)
``CALL`` (→ node)         ``<B Q 32s 32s 16s H I``: kind, request id, database and caller identities
                          and connection id (BSATN), m, n; then m bytes of reducer name and n bytes
                          of JSON arguments (UTF-8): an HTTP ``/call``, answered by a ``REPLY``
                          whose body is the call's outcome (:func:`encode_call_outcome`: byte 0,
                          ``<QQH``: energy used, duration in µs, k; k bytes of outcome name, then
                          the message, UTF-8) or a JSON error reply like a request's
========================  ==========================================================================

A client *ref* is the gateway's number for one WebSocket connection, unique for the link's life.
A frame several clients receive (one subscription update) travels once with all their refs.
The link is internal: a batch that does not parse is a bug on the other side, reported as
:class:`LinkError` with what was wrong, and the link is dropped.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CALL",
    "CLOSED",
    "CONNECT",
    "Connect",
    "DISCONNECT",
    "FRAME",
    "MESSAGE",
    "REPLY",
    "REQUEST",
    "Batch",
    "LinkError",
    "decode",
    "decode_call_outcome",
    "encode_call_outcome",
    "read_length",
]

CONNECT = 1
MESSAGE = 2
DISCONNECT = 3
FRAME = 16
CLOSED = 17
REQUEST = 32
REPLY = 33
CALL = 34

#: Largest batch body either side accepts (a client message is at most 32 MiB, §9).
MAX_BATCH_BYTES = 256 << 20

_LENGTH = struct.Struct("<I")
_REF = struct.Struct("<BQ")
_REF_BODY = struct.Struct("<BQI")  # CONNECT, REQUEST, REPLY
_MESSAGE = struct.Struct("<BQBI")
_FRAME = struct.Struct("<BBII")
_FRAME_ONE = struct.Struct("<BBIIQ")  # a FRAME with its one ref
_CLOSED = struct.Struct("<BQHI")
_CALL = struct.Struct("<BQ32s32s16sHI")
_OUTCOME = struct.Struct("<BQQH")
_U64 = struct.Struct("<Q")
_U64_END = 1 << 64


class LinkError(Exception):
    """A batch on the link does not parse; the message says where and why."""


def read_length(head: bytes) -> int:
    """The body length a batch's 4-byte head announces (:class:`LinkError` past the limit)."""
    (n,) = _LENGTH.unpack(head)
    if n > MAX_BATCH_BYTES:
        raise LinkError(f"a batch announces {n} bytes, more than the limit of {MAX_BATCH_BYTES}")
    return n


@dataclass(frozen=True)
class Connect:
    """A new WebSocket client, as the gateway's ``/subscribe`` handshake established it."""

    database: bytes  # the database identity, 32 bytes (BSATN, little-endian)
    identity: bytes
    token: str
    connection_id: int
    json: bool
    compression: str
    light: bool
    confirmed: bool
    jwt_payload: bytes | None

    def to_json(self) -> bytes:
        """The CONNECT event's body."""
        return json.dumps({
            "database": self.database.hex(), "identity": self.identity.hex(), "token": self.token,
            "connection_id": format(self.connection_id, "x"), "json": self.json, "compression": self.compression,
            "light": self.light, "confirmed": self.confirmed,
            "jwt": None if self.jwt_payload is None else base64.b64encode(self.jwt_payload).decode(),
        }).encode()  # fmt: skip

    @classmethod
    def from_json(cls, body: bytes) -> Connect:
        """A CONNECT event's body; :class:`LinkError` naming what is wrong."""
        try:
            d = json.loads(body)
            jwt = d["jwt"]
            return cls(
                database=bytes.fromhex(d["database"]), identity=bytes.fromhex(d["identity"]), token=str(d["token"]),
                connection_id=int(d["connection_id"], 16), json=bool(d["json"]), compression=str(d["compression"]),
                light=bool(d["light"]), confirmed=bool(d["confirmed"]),
                jwt_payload=None if jwt is None else base64.b64decode(jwt),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError) as e:
            raise LinkError(f"a CONNECT event does not parse: {type(e).__name__}: {e}") from None


class Batch:
    """Events to send, as encoded parts; :meth:`take` gives them as one write."""

    __slots__ = ("_parts", "size")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        #: Bytes in all parts.
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self._parts)

    def _add(self, head: bytes, data: bytes = b"") -> None:
        self._parts.append(head)
        if data:
            self._parts.append(data)
        self.size += len(head) + len(data)

    def connect(self, ref: int, c: Connect) -> None:
        """Add a CONNECT event."""
        body = c.to_json()
        self._add(_REF_BODY.pack(CONNECT, ref, len(body)), body)

    def message(self, ref: int, data: bytes, text: bool) -> None:
        """Add a MESSAGE event (a client's frame)."""
        self._add(_MESSAGE.pack(MESSAGE, ref, text, len(data)), data)

    def disconnect(self, ref: int) -> None:
        """Add a DISCONNECT event."""
        self._add(_REF.pack(DISCONNECT, ref))

    def frame(self, refs: list[int], data: bytes, text: bool) -> None:
        """Add a FRAME event (one server frame for every client in ``refs``)."""
        n = len(refs)
        if n == 1:  # nearly every frame: a reply to one client
            head = _FRAME_ONE.pack(FRAME, text, 1, len(data), refs[0])
        else:
            head = _FRAME.pack(FRAME, text, n, len(data)) + struct.pack(f"<{n}Q", *refs)
        self._add(head, data)

    def closed(self, ref: int, code: int, reason: str) -> None:
        """Add a CLOSED event."""
        text = reason.encode()
        self._add(_CLOSED.pack(CLOSED, ref, code, len(text)), text)

    def request(self, kind: int, request_id: int, body: bytes) -> None:
        """Add a REQUEST or a REPLY."""
        self._add(_REF_BODY.pack(kind, request_id, len(body)), body)

    def call(
        self, request_id: int, database: bytes, caller: bytes, connection_id: bytes, reducer: str, args: str
    ) -> None:
        """Add a CALL (identities and connection id as their 32/32/16 BSATN bytes)."""
        name = reducer.encode()
        data = args.encode()
        self._add(_CALL.pack(CALL, request_id, database, caller, connection_id, len(name), len(data)) + name, data)

    def take(self) -> bytes:
        """Everything added so far as one length-prefixed batch, ready for one write; the
        batch is empty after."""
        parts, self._parts = self._parts, []
        self.size = 0
        body = b"".join(parts)
        return _LENGTH.pack(len(body)) + body


def encode_call_outcome(outcome: str, message: str, energy_used: int, duration_micros: int) -> bytes | None:
    """A CALL's ``REPLY`` body for a reducer outcome (no JSON on either side of the hot path);
    None when a figure does not fit its 64 bits (the caller then answers in JSON)."""
    if not (0 <= energy_used < _U64_END and 0 <= duration_micros < _U64_END):
        return None
    name = outcome.encode()
    return _OUTCOME.pack(0, energy_used, duration_micros, len(name)) + name + message.encode()


def decode_call_outcome(body: bytes) -> tuple[str, str, int, int] | None:
    """``(outcome, message, energy_used, duration_micros)`` of a body :func:`encode_call_outcome`
    made; None for any other reply (JSON, whose first byte is never 0)."""
    if not body or body[0] != 0:
        return None
    try:
        _, energy, duration, k = _OUTCOME.unpack_from(body)
        end = _OUTCOME.size + k
        if end > len(body):
            raise LinkError(f"a call outcome's name runs past its {len(body)}-byte reply")
        return body[_OUTCOME.size : end].decode(), body[end:].decode(), energy, duration
    except (struct.error, UnicodeDecodeError) as e:
        raise LinkError(f"a call outcome does not parse: {type(e).__name__}: {e}") from None


def decode(body: bytes) -> Iterator[tuple[Any, ...]]:
    """The events of a batch's body, in order, as tuples starting with their kind:
    ``(CONNECT, ref, Connect)``, ``(MESSAGE, ref, data, text)``, ``(DISCONNECT, ref)``,
    ``(FRAME, refs, data, text)``, ``(CLOSED, ref, code, reason)``, ``(REQUEST|REPLY, id, body)``,
    ``(CALL, id, database, caller, connection_id, reducer, args)`` (the last two decoded text)."""
    view = memoryview(body)
    end = len(body)
    off = 0
    try:
        while off < end:
            kind = body[off]
            if kind == MESSAGE:
                _, ref, text, n = _MESSAGE.unpack_from(body, off)
                off = _past(kind, off + _MESSAGE.size, n, end)
                yield MESSAGE, ref, bytes(view[off - n : off]), bool(text)
            elif kind == FRAME:
                _, text, k, n = _FRAME.unpack_from(body, off)
                if k == 1:  # nearly every frame: a reply to one client
                    refs = [_U64.unpack_from(body, off + _FRAME.size)[0]]
                else:
                    refs = list(struct.unpack_from(f"<{k}Q", body, off + _FRAME.size))
                off = _past(kind, off + _FRAME.size + 8 * k, n, end)
                yield FRAME, refs, bytes(view[off - n : off]), bool(text)
            elif kind == DISCONNECT:
                _, ref = _REF.unpack_from(body, off)
                off += _REF.size
                yield DISCONNECT, ref
            elif kind == CLOSED:
                _, ref, code, n = _CLOSED.unpack_from(body, off)
                off = _past(kind, off + _CLOSED.size, n, end)
                yield CLOSED, ref, code, bytes(view[off - n : off]).decode(errors="replace")
            elif kind in (CONNECT, REQUEST, REPLY):
                _, ref, n = _REF_BODY.unpack_from(body, off)
                off = _past(kind, off + _REF_BODY.size, n, end)
                data = bytes(view[off - n : off])
                yield (kind, ref, Connect.from_json(data) if kind == CONNECT else data)
            elif kind == CALL:
                _, ref, database, caller, conn, m, n = _CALL.unpack_from(body, off)
                off = _past(kind, off + _CALL.size, m + n, end)
                try:
                    reducer = bytes(view[off - m - n : off - n]).decode()
                    args = bytes(view[off - n : off]).decode()
                except UnicodeDecodeError as e:
                    raise LinkError(f"a CALL's reducer name or arguments are not UTF-8: {e}") from None
                yield CALL, ref, database, caller, conn, reducer, args
            else:
                raise LinkError(f"unknown event kind {kind} at byte {off} of a {end}-byte batch")
    except struct.error as e:
        raise LinkError(f"a batch of {end} bytes ends inside an event header at byte {off}: {e}") from None


def _past(kind: int, start: int, n: int, end: int) -> int:
    """Where an event's ``n``-byte payload starting at ``start`` ends (within the batch)."""
    if start + n > end:
        raise LinkError(f"an event of kind {kind} runs {start + n - end} bytes past the end of its {end}-byte batch")
    return start + n
