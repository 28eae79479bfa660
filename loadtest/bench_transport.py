"""Transport between gateway and host node (issue 11 item 3): which one, and at what batch size.

Before the standalone server is split into a gateway process (WebSocket and HTTP termination) and
a host-node process (the database's writer), this measures what carrying client frames between
two processes costs, at the shape the server needs: many small messages, each tagged with the
WebSocket connection it belongs to — a ``CallReducer("transfer", …)`` frame of 60–120 bytes one
way, its answer of 120–180 bytes back — written in batches of 1, 8, 64 and 512 messages.

Two real processes on this machine: this one plays the gateway (it builds each batch from its
messages and writes it), a child (``--serve KIND``, started and stopped here) plays the host node
(it reads each batch back into ``(connection id, frame)`` pairs and, echoing, answers every message
with one batch of replies). The candidates:

- ``grpc``: a grpc.aio bidirectional stream on 127.0.0.1 carrying hostnode.proto's own
  ``GatewayFrames`` / ``HostFrames`` (a ``ClientMessage`` / ``ServerFrame`` per message, as the
  cluster's ``Connect`` stream does), served through grpc's generic handler, so nothing is
  generated for the benchmark.
- ``unix``: an asyncio unix-domain socket in a temporary directory; a batch is one length-prefixed
  frame (:func:`encode_batch`: the connection ids and the lengths as two ``struct`` columns, then
  the frames), read back with ``StreamReader.readexactly``.
- ``shm``: the same frames through two single-producer rings in shared memory (a ``memfd`` both
  processes map: nothing to unlink if either dies), with an ``eventfd`` per direction to wake the
  reader and one to tell the writer space was freed (:class:`Ring`).

For every transport, batch size and mode (each run ``--seconds`` long, at most ``--max-messages``):

- ``oneway``: the gateway writes batches as fast as the transport takes them; messages/s from the
  first write to the host's last read.
- ``echo`` (round trip): at most ``--window`` batches in flight; messages/s from the first write to
  the last reply read, and each batch's round-trip time.

Beside each rate, the CPU µs per message of each process (``time.process_time``: every thread of
it, over the run), the CPU other processes of the machine used meanwhile, and a CPU probe (the
fixed pure-Python loop of :func:`loadtest.bench_cluster.cpu_probe`) at the start and the end.

Every message is checked: each receiver folds each frame into a CRC-32 chained per connection, and
after the run the chains are compared with those of what was sent, so a message lost, repeated,
damaged or out of order within its connection fails the run (exit status 1). Each run is bounded
in time and count and each wait for the child by a timeout; the child is stopped on every exit
path (its stdin closed, then SIGKILL), and stops by itself when its stdin closes.

Usage: ``python -m loadtest.bench_transport [--transport unix] [--batch 64] [--seconds 2]
[--json out.json]`` (``make bench``). Exit status 1 when a message did not arrive as sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import mmap
import os
import random
import statistics
import struct
import sys
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import google.protobuf
import grpc
import grpc.aio

from loadtest import bench_http
from loadtest.bench_cluster import PROBE_ITERATIONS, PROBE_REPEATS, CpuProbe, cpu_probe, probe_text
from loadtest.bench_http import machine_busy_seconds, machine_info, percentile
from proto import GRPC_OPTIONS
from proto import hostnode_pb2 as hpb

__all__ = [
    "BatchError", "Report", "Ring", "RunResult", "Tally", "TransportConfig", "decode_batch", "encode_batch",
    "main", "run_benchmark",
]  # fmt: skip

ROOT = Path(__file__).resolve().parent.parent
TRANSPORTS = ("grpc", "unix", "shm")
BATCHES = (1, 8, 64, 512)
MODES = ("oneway", "echo")
#: Messages the gateway cycles through: every batch size asked for is cut from them.
POOL_MESSAGES = 4096
#: Request frames are 60–120 bytes; a reply is its request and this many bytes more.
REQUEST_BYTES = (60, 120)
REPLY_TAIL = bytes(range(60))
#: The batch size whose echo run warms each transport up before the measured runs.
WARMUP_BATCH = 64
#: How long the child may take to start, to answer a command, and to stop before it is killed.
START_TIMEOUT = 60.0
ANSWER_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
#: How long a run may take beyond ``--seconds`` (draining what is in flight) before it is abandoned.
RUN_GRACE = 60.0
#: The grpc method the child serves: hostnode.proto's messages, not its service.
GRPC_SERVICE = "orrery.bench.v1.Transport"
GRPC_METHOD = f"/{GRPC_SERVICE}/Stream"
#: StreamReader buffer of either end of the unix socket (asyncio's default is 64 KiB).
STREAM_LIMIT = 1 << 20
#: A unix socket's path must fit ``sockaddr_un.sun_path`` (108 bytes with its NUL).
MAX_SOCKET_PATH = 107


class BenchError(RuntimeError):
    """The child did not do what the benchmark needs (it did not start, answer or stop)."""


class BatchError(ValueError):
    """A batch frame that does not decode: the message says which part is wrong."""


# --- the batch format of ``unix`` and ``shm`` (pure functions over bytes) --------------------------

#: A frame: ``u32 length`` of the body that follows. The body: ``u32 count``, ``count × u64``
#: connection ids, ``count × u32`` frame lengths, then the frames back to back. Two ``struct``
#: columns instead of a header per message: one ``pack``/``unpack`` per batch, not per message.
PREFIX = struct.Struct("<I")
_COUNT = struct.Struct("<I")


def encode_batch(messages: Sequence[tuple[int, bytes]]) -> bytes:
    """``messages`` as one length-prefixed frame, ready for one write."""
    n = len(messages)
    conns = [conn for conn, _ in messages]
    frames = [frame for _, frame in messages]
    lengths = list(map(len, frames))
    head = struct.pack(f"<II{n}Q{n}I", 4 + 12 * n + sum(lengths), n, *conns, *lengths)
    return b"".join([head, *frames])


def decode_batch(body: bytes) -> list[tuple[int, bytes]]:
    """The ``(connection id, frame)`` pairs of a frame's body (what follows its length prefix)."""
    if len(body) < _COUNT.size:
        raise BatchError(f"a batch of {len(body)} bytes is shorter than its 4-byte message count")
    (n,) = _COUNT.unpack_from(body)
    table_end = 4 + 12 * n
    if table_end > len(body):
        raise BatchError(f"a batch of {len(body)} bytes cannot hold the table of the {n} messages it announces")
    conns = struct.unpack_from(f"<{n}Q", body, 4)
    lengths = struct.unpack_from(f"<{n}I", body, 4 + 8 * n)
    carried = len(body) - table_end
    if sum(lengths) != carried:
        raise BatchError(f"the {n} messages of a batch add up to {sum(lengths)} bytes, but it carries {carried}")
    offsets = itertools.accumulate(lengths, initial=table_end)
    return list(zip(conns, [body[a:b] for a, b in itertools.pairwise(offsets)], strict=True))


# --- the batch format of ``grpc``: hostnode.proto's Connect messages -------------------------------


def gateway_frames(messages: Sequence[tuple[int, bytes]]) -> hpb.GatewayFrames:
    """Client frames as the gateway's ``Connect`` stream carries them."""
    return hpb.GatewayFrames(
        events=[hpb.GatewayEvent(message=hpb.ClientMessage(connection_ref=c, frame=f)) for c, f in messages]
    )


def gateway_messages(msg: hpb.GatewayFrames) -> list[tuple[int, bytes]]:
    """The client frames of a ``GatewayFrames``, read as the host node's ``Connect`` reader does."""
    out: list[tuple[int, bytes]] = []
    for ev in msg.events:
        if ev.WhichOneof("event") == "message":
            m = ev.message
            out.append((m.connection_ref, m.frame))
    return out


def host_frames(messages: Sequence[tuple[int, bytes]]) -> hpb.HostFrames:
    """Server frames (one connection each) as the host node's ``Connect`` stream carries them."""
    return hpb.HostFrames(
        events=[hpb.HostEvent(frame=hpb.ServerFrame(connection_refs=[c], frame=f)) for c, f in messages]
    )


def host_messages(msg: hpb.HostFrames) -> list[tuple[int, bytes]]:
    """The server frames of a ``HostFrames``, one pair per receiving connection, as the gateway reads them."""
    out: list[tuple[int, bytes]] = []
    for ev in msg.events:
        if ev.WhichOneof("event") == "frame":
            f = ev.frame
            data = f.frame
            out.extend((ref, data) for ref in f.connection_refs)
    return out


def answers(messages: Sequence[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The host's reply to each message: to the same connection, 60 bytes longer."""
    return [(conn, frame + REPLY_TAIL) for conn, frame in messages]


# --- what arrived ----------------------------------------------------------------------------------


class Tally:
    """Every message one side received in one run. Each connection's frames are folded, in arrival
    order, into one CRC-32 chain: equal chains (and counts) mean every message arrived intact, once,
    and in order within its connection — what the WebSocket clients behind the transport rely on."""

    def __init__(self, conns: int) -> None:
        #: Chains by connection id (ids run from 1; index 0 stays 0 unless a message says 0).
        self.digests = [0] * (conns + 1)
        self.messages = 0
        self.batches = 0
        #: When the last batch was read (``time.monotonic_ns``: one clock for every process).
        self.last_ns = 0
        self.errors: list[str] = []

    def add(self, messages: Sequence[tuple[int, bytes]]) -> None:
        """Fold one received batch in."""
        digests = self.digests
        crc32 = zlib.crc32
        try:
            for conn, frame in messages:
                digests[conn] = crc32(frame, digests[conn])
        except IndexError:
            bad = sorted({c for c, _ in messages if c >= len(digests)})
            self.errors.append(f"connection ids {bad[:5]} are not among the run's 1..{len(digests) - 1}")
        self.last_ns = time.monotonic_ns()
        self.batches += 1
        self.messages += len(messages)


def expected_digests(batches: Sequence[Sequence[tuple[int, bytes]]], count: int, conns: int, *,
                     replies: bool) -> list[int]:  # fmt: skip
    """The chains a :class:`Tally` holds after the first ``count`` batches of the cycle ``batches``
    (or, with ``replies``, the answers to them) arrived as sent. Written out here rather than
    through :func:`answers`, so a host that answers wrongly cannot agree with it by construction."""
    tail = REPLY_TAIL if replies else b""
    digests = [0] * (conns + 1)
    for k in range(count):
        for conn, frame in batches[k % len(batches)]:
            digests[conn] = zlib.crc32(frame + tail, digests[conn])
    return digests


# --- the shared-memory ring ------------------------------------------------------------------------

#: A ring's mapping: the write position at 0, the read position at 64 (apart, on their own cache
#: lines), the data from 128. Positions count bytes since the ring was made and only grow.
_WRITE_AT, _READ_AT, _DATA_AT = 0, 64, 128
#: Length word telling the reader the rest of the ring's end is unused and the next frame is at 0.
_WRAP = 0xFFFFFFFF


class _Wakeup:
    """An eventfd: one process adds to it to say "look again", the other sleeps on it in its loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        os.eventfd_write(self.fd, 1)

    async def until(self, ready: Callable[[], bool]) -> None:
        """Return once ``ready()`` holds, sleeping between checks until the other side notifies.
        The event is cleared *before* the check, so a notice sent after it is never missed."""
        if self._event is None:
            self._event = asyncio.Event()
            asyncio.get_running_loop().add_reader(self.fd, self._readable)
        while not ready():
            self._event.clear()
            if ready():
                return
            await self._event.wait()

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)
        assert self._event is not None
        self._event.set()

    def close(self) -> None:
        if self._event is not None:
            asyncio.get_running_loop().remove_reader(self.fd)
            self._event = None


class Ring:
    """One direction of the ``shm`` transport: frames (as :func:`encode_batch` makes them) in a
    single-producer, single-consumer ring over shared memory; a zero-length frame ends a run.

    The writer copies a frame in, then publishes the new write position, then notifies ``data``;
    the reader copies a frame out, publishes the read position, then notifies ``space`` (always:
    a writer that only sometimes needs the notice cannot tell the reader so without a race). Each
    position is one aligned 8-byte store through a ``Q`` memoryview, and a notice is a system call,
    which orders it after the stores before it; x86-64 keeps stores in order, which is what a reader
    that sees a position relies on to see the frame before it. A production ring would use C atomics.
    """

    def __init__(self, mem_fd: int, capacity: int, data_fd: int, space_fd: int) -> None:
        self.capacity = capacity
        self._map = mmap.mmap(mem_fd, _DATA_AT + capacity)
        self._view = memoryview(self._map)
        self._write_pos = self._view[_WRITE_AT : _WRITE_AT + 8].cast("Q")
        self._read_pos = self._view[_READ_AT : _READ_AT + 8].cast("Q")
        self._data = self._view[_DATA_AT:]
        self.data = _Wakeup(data_fd)
        self.space = _Wakeup(space_fd)

    async def put(self, frame: bytes) -> None:
        """Copy ``frame`` (length prefix included) in, waiting for the reader to free space."""
        need = len(frame)
        if need > self.capacity // 2:
            raise BatchError(f"a frame of {need} bytes does not fit a ring of {self.capacity} (half of it at most)")
        cap, w = self.capacity, self._write_pos[0]
        offset = w % cap
        # A frame never wraps: if it does not fit before the ring's end, it goes to its start.
        skip = cap - offset if cap - offset < need else 0
        await self.space.until(lambda: w - self._read_pos[0] + skip + need <= cap)
        if skip:
            if skip >= PREFIX.size:
                PREFIX.pack_into(self._data, offset, _WRAP)
            w, offset = w + skip, 0
        self._data[offset : offset + need] = frame
        self._write_pos[0] = w + need
        self.data.notify()

    async def get(self) -> bytes | None:
        """The next frame's body (None: the end of a run), waiting for the writer if need be."""
        cap, r = self.capacity, self._read_pos[0]
        await self.data.until(lambda: self._write_pos[0] != r)
        offset = r % cap
        if cap - offset < PREFIX.size or PREFIX.unpack_from(self._data, offset)[0] == _WRAP:
            r, offset = r + cap - offset, 0
        (length,) = PREFIX.unpack_from(self._data, offset)
        body = bytes(self._data[offset + PREFIX.size : offset + PREFIX.size + length])
        self._read_pos[0] = r + PREFIX.size + length
        self.space.notify()
        return body or None

    def close(self) -> None:
        self.data.close()
        self.space.close()
        for view in (self._write_pos, self._read_pos, self._data, self._view):
            view.release()
        self._map.close()


#: The frame that ends a run on a ring.
END_FRAME = PREFIX.pack(0)


# --- the host node's side (the child process) ------------------------------------------------------


class Control:
    """The child's side of its line protocol with the benchmark, one JSON object a line: it says
    ``{"ready": …}`` once serving; each ``{"mode": "oneway"|"echo"}`` read from stdin arms the next
    run (answered ``{"armed": …}``); at the end of every run it says what arrived and its CPU time."""

    def __init__(self, conns: int) -> None:
        self.conns = conns
        self.echo = False
        self._cpu0 = time.process_time()

    def say(self, doc: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    def start_run(self) -> Tally:
        return Tally(self.conns)

    def end_run(self, tally: Tally) -> None:
        self.say({
            "messages": tally.messages, "batches": tally.batches, "digests": tally.digests,
            "last_ns": tally.last_ns, "errors": tally.errors,
            "cpu_s": time.process_time() - self._cpu0,
        })  # fmt: skip

    async def commands(self) -> None:
        """Arm runs as the benchmark asks, until its end of stdin (it finished, or died)."""
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            mode = json.loads(line)["mode"]
            self.echo = mode == "echo"
            self._cpu0 = time.process_time()
            self.say({"armed": mode})


async def serve_grpc(ctl: Control) -> None:
    """The host on a grpc.aio server (127.0.0.1, a free port): each stream is one run."""
    async def stream(requests: Any, context: Any) -> Any:
        tally, echo = ctl.start_run(), ctl.echo
        try:
            async for msg in requests:
                messages = gateway_messages(msg)
                tally.add(messages)
                if echo:
                    yield host_frames(answers(messages))
        finally:
            ctl.end_run(tally)

    server = grpc.aio.server(options=GRPC_OPTIONS)
    handler = grpc.stream_stream_rpc_method_handler(
        stream, request_deserializer=hpb.GatewayFrames.FromString, response_serializer=hpb.HostFrames.SerializeToString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, {"Stream": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ctl.say({"ready": f"127.0.0.1:{port}"})
    try:
        await ctl.commands()
    finally:
        await server.stop(None)


async def serve_unix(ctl: Control, path: str) -> None:
    """The host on a unix socket at ``path``: each connection is one run."""
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tally, echo = ctl.start_run(), ctl.echo
        try:
            while True:
                try:
                    head = await reader.readexactly(PREFIX.size)
                except asyncio.IncompleteReadError as e:
                    if e.partial:
                        tally.errors.append("the connection ended inside a frame's length prefix")
                    break
                messages = decode_batch(await reader.readexactly(PREFIX.unpack(head)[0]))
                tally.add(messages)
                if echo:
                    writer.write(encode_batch(answers(messages)))
                    await writer.drain()
        except (BatchError, asyncio.IncompleteReadError, ConnectionError) as e:
            tally.errors.append(f"{type(e).__name__}: {e}")
        finally:
            writer.close()
            ctl.end_run(tally)

    server = await asyncio.start_unix_server(connection, path, limit=STREAM_LIMIT)
    ctl.say({"ready": path})
    try:
        await ctl.commands()
    finally:
        server.close()


async def serve_shm(ctl: Control, fds: Sequence[int], capacity: int) -> None:
    """The host on the rings the benchmark made (``fds``: the two memfds, then each one's data
    and space eventfds): each run ends with an empty frame, answered with one."""
    inbound = Ring(fds[0], capacity, data_fd=fds[2], space_fd=fds[3])
    outbound = Ring(fds[1], capacity, data_fd=fds[4], space_fd=fds[5])

    async def pump() -> None:
        tally: Tally | None = None
        while True:
            body = await inbound.get()
            if tally is None:
                tally, echo = ctl.start_run(), ctl.echo
            if body is None:
                await outbound.put(END_FRAME)
                ctl.end_run(tally)
                tally = None
                continue
            try:
                messages = decode_batch(body)
            except BatchError as e:
                tally.errors.append(str(e))
                continue
            tally.add(messages)
            if echo:
                await outbound.put(encode_batch(answers(messages)))

    task = asyncio.ensure_future(pump())
    ctl.say({"ready": "shm"})
    try:
        await ctl.commands()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        inbound.close()
        outbound.close()


def host_main(kind: str, conns: int, socket_path: str | None, fds: Sequence[int], ring_bytes: int) -> int:
    """The child: serve ``kind`` until stdin closes."""
    ctl = Control(conns)
    if kind == "grpc":
        asyncio.run(serve_grpc(ctl))
    elif kind == "unix":
        assert socket_path is not None
        asyncio.run(serve_unix(ctl, socket_path))
    else:
        asyncio.run(serve_shm(ctl, fds, ring_bytes))
    return 0


# --- the gateway's side (this process) -------------------------------------------------------------


class Link(Protocol):
    """The gateway's end of one run on one transport."""

    async def send(self, messages: Sequence[tuple[int, bytes]]) -> None: ...

    async def finish(self) -> None:
        """Everything was sent: the host ends the run (and its side of the link) when it has read it."""

    async def receive(self) -> list[tuple[int, bytes]] | None:
        """The next batch of replies; None once the host ended the run."""

    async def close(self) -> None: ...


class GrpcLink:
    """A run on one call of the bidirectional stream."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def send(self, messages: Sequence[tuple[int, bytes]]) -> None:
        await self.call.write(gateway_frames(messages))

    async def finish(self) -> None:
        await self.call.done_writing()

    async def receive(self) -> list[tuple[int, bytes]] | None:
        msg = await self.call.read()
        return None if msg is grpc.aio.EOF else host_messages(msg)

    async def close(self) -> None:
        self.call.cancel()


class UnixLink:
    """A run on one connection of the unix socket; the end of the run is the end of the connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, messages: Sequence[tuple[int, bytes]]) -> None:
        self.writer.write(encode_batch(messages))
        await self.writer.drain()

    async def finish(self) -> None:
        self.writer.write_eof()

    async def receive(self) -> list[tuple[int, bytes]] | None:
        try:
            head = await self.reader.readexactly(PREFIX.size)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise
            return None
        return decode_batch(await self.reader.readexactly(PREFIX.unpack(head)[0]))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class ShmLink:
    """A run on the two rings, which outlive it: an empty frame ends it each way."""

    def __init__(self, outbound: Ring, inbound: Ring) -> None:
        self.outbound, self.inbound = outbound, inbound

    async def send(self, messages: Sequence[tuple[int, bytes]]) -> None:
        await self.outbound.put(encode_batch(messages))

    async def finish(self) -> None:
        await self.outbound.put(END_FRAME)

    async def receive(self) -> list[tuple[int, bytes]] | None:
        body = await self.inbound.get()
        return None if body is None else decode_batch(body)

    async def close(self) -> None:
        pass


class HostProcess:
    """The child playing the host node on one transport, and how to open a link to it."""

    def __init__(self, kind: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.kind = kind
        self.proc = proc
        self.log_path = log_path
        self.address = ""
        self.fds: list[int] = []
        self.rings: list[Ring] = []
        self._channel: grpc.aio.Channel | None = None

    @classmethod
    async def start(cls, kind: str, workdir: Path, cfg: TransportConfig) -> HostProcess:
        """Start the child serving ``kind`` and wait until it says it is ready."""
        args = [sys.executable, "-m", "loadtest.bench_transport", "--serve", kind, "--conns", str(cfg.conns)]
        fds: list[int] = []
        if kind == "unix":
            path = str(workdir / "host.sock")
            if len(path.encode()) > MAX_SOCKET_PATH:
                raise BenchError(f"the socket path {path} is longer than {MAX_SOCKET_PATH} bytes: use a shorter --dir")
            args += ["--socket", path]
        elif kind == "shm":
            # Two rings (gateway → host, host → gateway), then each ring's data and space eventfds.
            for name in ("to-host", "to-gateway"):
                fd = os.memfd_create(f"orrery-bench-{name}")
                os.ftruncate(fd, _DATA_AT + cfg.ring_bytes)
                fds.append(fd)
            fds += [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(4)]
            args += ["--fds", ",".join(map(str, fds)), "--ring-bytes", str(cfg.ring_bytes)]
        log_path = workdir / f"{kind}-host.log"
        try:
            with log_path.open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=ROOT,
                    pass_fds=fds,
                )  # fmt: skip
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        host = cls(kind, proc, log_path)
        host.fds = fds
        try:
            host.address = (await host.read(START_TIMEOUT, "start"))["ready"]
            if kind == "grpc":
                host._channel = grpc.aio.insecure_channel(host.address, options=GRPC_OPTIONS)
            elif kind == "shm":
                host.rings = [
                    Ring(fds[0], cfg.ring_bytes, data_fd=fds[2], space_fd=fds[3]),
                    Ring(fds[1], cfg.ring_bytes, data_fd=fds[4], space_fd=fds[5]),
                ]
        except BaseException:
            await host.stop()
            raise
        return host

    async def read(self, timeout: float, what: str) -> dict[str, Any]:
        """The child's next line; BenchError (with its log's tail) when it does not come in time."""
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            line = b""
        if not line:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise BenchError(f"the {self.kind} host did not {what} within {timeout:g} s; its log ends: {tail or '(empty)'}")
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def arm(self, mode: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"mode": mode}).encode() + b"\n")
        await self.proc.stdin.drain()
        await self.read(ANSWER_TIMEOUT, "arm a run")

    async def open(self) -> Link:
        if self.kind == "grpc":
            assert self._channel is not None
            method = self._channel.stream_stream(
                GRPC_METHOD, request_serializer=hpb.GatewayFrames.SerializeToString,
                response_deserializer=hpb.HostFrames.FromString,
            )  # fmt: skip
            return GrpcLink(method())
        if self.kind == "unix":
            reader, writer = await asyncio.open_unix_connection(self.address, limit=STREAM_LIMIT)
            return UnixLink(reader, writer)
        return ShmLink(self.rings[0], self.rings[1])

    async def stop(self) -> None:
        """Close the links' resources and stop the child: end of stdin, SIGKILL if it lingers."""
        if self._channel is not None:
            await self._channel.close()
        for ring in self.rings:
            ring.close()
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for fd in self.fds:
            os.close(fd)
        self.fds = []


# --- one run ---------------------------------------------------------------------------------------


@dataclass
class TransportConfig:
    """What to run; the defaults are the ``make bench`` figures."""

    transports: tuple[str, ...] = TRANSPORTS
    batches: tuple[int, ...] = BATCHES
    seconds: float = 2.0
    #: Seconds of an unreported echo run warming each transport up.
    warmup: float = 0.5
    conns: int = 64
    #: Batches in flight in an echo run.
    window: int = 4
    #: Upper bound on the messages of one run (the time bound usually ends it).
    max_messages: int = 2_000_000
    ring_bytes: int = 4 << 20
    data_parent: str = tempfile.gettempdir()
    seed: int = 11

    def validate(self) -> None:
        """Raise ValueError on settings the benchmark cannot run with."""
        unknown = [t for t in self.transports if t not in TRANSPORTS]
        if unknown or not self.transports:
            raise ValueError(f"unknown transport {', '.join(unknown) or '(none)'}; the transports are {', '.join(TRANSPORTS)}")
        if not self.batches or not all(0 < b <= POOL_MESSAGES for b in self.batches):
            raise ValueError(f"--batch must be between 1 and {POOL_MESSAGES}, got {', '.join(map(str, self.batches)) or 'none'}")
        positive = {"--seconds": self.seconds, "--conns": self.conns, "--window": self.window,
                    "--max-messages": self.max_messages}  # fmt: skip
        bad = [k for k, v in positive.items() if v <= 0]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive")
        if self.warmup < 0:
            raise ValueError("--warmup must not be negative")
        largest = PREFIX.size + 4 + max(self.batches) * (12 + REQUEST_BYTES[1] + len(REPLY_TAIL))
        if "shm" in self.transports and self.ring_bytes < 2 * largest:
            raise ValueError(f"--ring-bytes must be at least {2 * largest} (twice the largest frame of --batch {max(self.batches)})")


@dataclass
class RunResult:
    """One transport, batch size and mode."""

    transport: str
    mode: str
    batch: int
    messages: int
    seconds: float
    rate: float
    #: CPU µs per message of the gateway's process (this one) and of the host's.
    gateway_cpu_us: float
    host_cpu_us: float
    #: Round-trip time of one batch (echo only).
    rtt_p50_ms: float | None
    rtt_p99_ms: float | None
    #: CPU seconds every other process of the machine used during the run (contention).
    other_cpu_s: float | None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Messages went through, every one as sent."""
        return self.messages > 0 and not self.errors


def make_pool(conns: int, seed: int) -> list[tuple[int, bytes]]:
    """The messages a gateway sends, in order: a random connection and 60–120 random bytes each."""
    rng = random.Random(seed)
    return [(rng.randint(1, conns), rng.randbytes(rng.randint(*REQUEST_BYTES))) for _ in range(POOL_MESSAGES)]


def cut_batches(pool: Sequence[tuple[int, bytes]], size: int) -> list[list[tuple[int, bytes]]]:
    """The pool as whole batches of ``size`` (the gateway sends them round and round)."""
    return [list(pool[i : i + size]) for i in range(0, len(pool) - size + 1, size)]


@dataclass
class _Sent:
    batches: int = 0
    t0_ns: int = 0
    end_ns: int = 0
    replies: Tally | None = None
    rtts_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _drive(link: Link, echo: bool, batches: Sequence[Sequence[tuple[int, bytes]]], cfg: TransportConfig) -> _Sent:
    """Send batches for ``cfg.seconds`` (and at most ``cfg.max_messages``); read what comes back."""
    sent = _Sent(t0_ns=time.monotonic_ns())
    deadline = sent.t0_ns + int(cfg.seconds * 1e9)
    most = max(1, cfg.max_messages // len(batches[0]))
    window = asyncio.Semaphore(cfg.window)
    sent_at: deque[int] = deque()

    async def write() -> None:
        while sent.batches < most and time.monotonic_ns() < deadline:
            if echo:
                await window.acquire()
                sent_at.append(time.monotonic_ns())
            await link.send(batches[sent.batches % len(batches)])
            sent.batches += 1
        await link.finish()

    async def read() -> None:
        while (got := await link.receive()) is not None:
            now = time.monotonic_ns()
            if not echo:
                sent.errors.append(f"the host answered {len(got)} messages in a one-way run")
                continue
            replies.add(got)
            sent.rtts_ms.append((now - sent_at.popleft()) / 1e6)
            sent.end_ns = now
            window.release()

    replies = Tally(cfg.conns)
    try:
        # Either side failing (the link broke) stops the other.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(write())
            tg.create_task(read())
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    sent.replies = replies if echo else None
    return sent


async def measure(host: HostProcess, mode: str, batches: Sequence[Sequence[tuple[int, bytes]]],
                  cfg: TransportConfig) -> RunResult:  # fmt: skip
    """One run: arm the host, drive the link, then check every message against what was sent."""
    echo = mode == "echo"
    await host.arm(mode)
    busy0, cpu0 = machine_busy_seconds(), time.process_time()
    link = await host.open()
    try:
        sent = await asyncio.wait_for(_drive(link, echo, batches, cfg), cfg.seconds + RUN_GRACE)
    finally:
        await link.close()
    got = await host.read(ANSWER_TIMEOUT, "report the run")
    cpu1, busy1 = time.process_time(), machine_busy_seconds()

    size = len(batches[0])
    messages = sent.batches * size
    errors = list(sent.errors) + [f"host: {e}" for e in got["errors"]]
    if got["messages"] != messages:
        errors.append(f"the host read {got['messages']:,} of the {messages:,} messages sent")
    elif got["digests"] != expected_digests(batches, sent.batches, cfg.conns, replies=False):
        errors.append("the messages the host read differ from those sent (content, or order within a connection)")
    if sent.replies is not None:
        errors += [f"gateway: {e}" for e in sent.replies.errors]
        if sent.replies.messages != messages:
            errors.append(f"the gateway read {sent.replies.messages:,} replies to {messages:,} messages")
        elif sent.replies.digests != expected_digests(batches, sent.batches, cfg.conns, replies=True):
            errors.append("the replies the gateway read differ from the host's answers (content, or order within a connection)")
    end_ns = sent.end_ns if echo else got["last_ns"]
    seconds = max(end_ns - sent.t0_ns, 1) / 1e9
    gateway_cpu, host_cpu = cpu1 - cpu0, float(got["cpu_s"])
    other = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - gateway_cpu - host_cpu)
    rtts = sorted(sent.rtts_ms)
    return RunResult(
        transport=host.kind, mode=mode, batch=size, messages=messages, seconds=seconds,
        rate=messages / seconds, gateway_cpu_us=gateway_cpu / max(messages, 1) * 1e6,
        host_cpu_us=host_cpu / max(messages, 1) * 1e6,
        rtt_p50_ms=percentile(rtts, 0.50) if rtts else None, rtt_p99_ms=percentile(rtts, 0.99) if rtts else None,
        other_cpu_s=other, errors=errors,
    )  # fmt: skip


# --- the benchmark ---------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything one run of the benchmark measured."""

    machine: dict[str, Any]
    config: dict[str, Any]
    probe_start: CpuProbe
    probe_end: CpuProbe | None = None
    runs: list[RunResult] = field(default_factory=list)
    #: The pids of the host children, so a caller can check each was stopped.
    host_pids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every transport × batch × mode asked for ran, every message as sent."""
        c = self.config
        wanted = len(c["transports"]) * len(c["batches"]) * len(MODES)
        return len(self.runs) == wanted and all(r.ok for r in self.runs)


async def _measure_transport(kind: str, pool: list[tuple[int, bytes]], cfg: TransportConfig, report: Report,
                             log: Callable[[str], None]) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="orrery-bench-transport-", dir=cfg.data_parent) as d:
        host = await HostProcess.start(kind, Path(d), cfg)
        report.host_pids.append(host.proc.pid)
        try:
            if cfg.warmup > 0:
                warm_cfg = dataclasses.replace(cfg, seconds=cfg.warmup)
                warm = await measure(host, "echo", cut_batches(pool, min(WARMUP_BATCH, max(cfg.batches))), warm_cfg)
                report.notes += [f"{kind} warm-up: {e}" for e in warm.errors]
            for size in cfg.batches:
                batches = cut_batches(pool, size)
                for mode in MODES:
                    r = await measure(host, mode, batches, cfg)
                    report.runs.append(r)
                    rtt = "" if r.rtt_p50_ms is None else f", batch RTT p50 {r.rtt_p50_ms:.2f} ms"
                    log(f"{kind:>4} × {size:>3} {mode:>6}: {r.rate:>10,.0f} msg/s, gateway {r.gateway_cpu_us:.2f} "
                        f"µs/msg, host {r.host_cpu_us:.2f} µs/msg{rtt}{'' if r.ok else ' — FAILED: ' + '; '.join(r.errors)}")  # fmt: skip
        finally:
            await host.stop()
            if host.proc.returncode != 0:
                report.notes.append(f"the {kind} host exited with status {host.proc.returncode}")


def run_benchmark(cfg: TransportConfig, *, log: Callable[[str], None] = print) -> Report:
    """Probe, every transport asked for (its host child stopped on every exit path), probe."""
    cfg.validate()
    report = Report(machine=machine_info(), config=asdict(cfg), probe_start=cpu_probe())
    report.machine["grpcio"], report.machine["protobuf"] = grpc.__version__, google.protobuf.__version__
    log(f"CPU probe: {report.probe_start.best_ms:.1f} ms (median {report.probe_start.median_ms:.1f})")
    pool = make_pool(cfg.conns, cfg.seed)
    for kind in cfg.transports:
        try:
            asyncio.run(_measure_transport(kind, pool, cfg, report, log))
        except (BenchError, BatchError, OSError, EOFError, grpc.aio.AioRpcError, TimeoutError) as e:
            report.notes.append(f"{kind}: {type(e).__name__}: {e}")
            log(f"{kind}: {type(e).__name__}: {e}")
    report.probe_end = cpu_probe()
    return report


def render(report: Report) -> str:
    """The markdown the benchmark prints: a row per transport and batch size, both modes side by side."""
    m, cfg = report.machine, report.config
    end = "n/a" if report.probe_end is None else probe_text(report.probe_end)
    pool = make_pool(cfg["conns"], cfg["seed"])
    mean_req = statistics.fmean(len(f) for _, f in pool)
    lines = [
        f"machine: {m['cores']} cores ({m['cpu']}), {m['python']}, grpcio {m['grpcio']}, protobuf {m['protobuf']}; "
        "both processes share the cores",
        f"- CPU probe ({PROBE_ITERATIONS:,}-iteration Python loop, best of {PROBE_REPEATS}): "
        f"start {probe_text(report.probe_start)}; end {end}",
        f"- {cfg['conns']} connections, requests {REQUEST_BYTES[0]}–{REQUEST_BYTES[1]} bytes (mean {mean_req:.0f}), "
        f"replies {len(REPLY_TAIL)} bytes longer; {cfg['seconds']:g} s a run; echo with {cfg['window']} batches in flight",
        "",
        "| transport | batch | one way msg/s | gateway µs/msg | host µs/msg | round trip msg/s | gateway µs/msg "
        "| host µs/msg | batch RTT p50 / p99 ms | other CPU-s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    runs = {(r.transport, r.batch, r.mode): r for r in report.runs}
    for kind in cfg["transports"]:
        for size in cfg["batches"]:
            one, echo = runs.get((kind, size, "oneway")), runs.get((kind, size, "echo"))
            cells = [kind, str(size)]
            for r in (one, echo):
                cells += (["-"] * 3 if r is None else
                          [f"**{r.rate:,.0f}**", f"{r.gateway_cpu_us:.2f}", f"{r.host_cpu_us:.2f}"])  # fmt: skip
            rtt = echo.rtt_p50_ms if echo else None
            cells.append("-" if rtt is None or echo is None or echo.rtt_p99_ms is None
                         else f"{rtt:.2f} / {echo.rtt_p99_ms:.2f}")  # fmt: skip
            other = [r.other_cpu_s for r in (one, echo) if r is not None and r.other_cpu_s is not None]
            cells.append(" / ".join(f"{o:.1f}" for o in other) or "-")
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in report.runs:
        lines += [f"- {r.transport} × {r.batch} {r.mode}: {e}" for e in r.errors]
    lines += [f"- {n}" for n in report.notes]
    if not report.ok:
        lines.append("- **FAILED: a run did not happen, or a message did not arrive as sent (see above)**")
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run, print the report (exit 1 when a message went wrong, 2 on bad flags)."""
    d = TransportConfig()
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench_transport", description=__doc__.splitlines()[0])
    ap.add_argument("--transport", action="append", metavar="KIND",
                    help=f"measure only this transport (repeatable; default all): {', '.join(TRANSPORTS)}")  # fmt: skip
    ap.add_argument("--batch", action="append", type=int, metavar="N",
                    help=f"messages per write (repeatable; default {', '.join(map(str, BATCHES))})")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=d.seconds, help="length of each run (default %(default)s)")
    ap.add_argument("--warmup", type=float, default=d.warmup, help="warm-up of each transport (default %(default)s)")
    ap.add_argument("--conns", type=int, default=d.conns, help="connection ids the messages carry (default %(default)s)")
    ap.add_argument("--window", type=int, default=d.window, help="batches in flight in an echo run (default %(default)s)")
    ap.add_argument("--max-messages", type=int, default=d.max_messages, help="cap on the messages of one run")
    ap.add_argument("--ring-bytes", type=int, default=d.ring_bytes, help="size of each shm ring (default %(default)s)")
    ap.add_argument("--dir", default=d.data_parent, help="parent of the temporary directory (default %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the report as JSON here")
    ap.add_argument("--serve", choices=TRANSPORTS, help=argparse.SUPPRESS)  # the child: the host node's side
    ap.add_argument("--socket", help=argparse.SUPPRESS)
    ap.add_argument("--fds", type=_ints, default=(), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        return host_main(a.serve, a.conns, a.socket, a.fds, a.ring_bytes)
    cfg = TransportConfig(
        transports=tuple(dict.fromkeys(a.transport)) if a.transport else d.transports,
        batches=tuple(dict.fromkeys(a.batch)) if a.batch else d.batches, seconds=a.seconds, warmup=a.warmup,
        conns=a.conns, window=a.window, max_messages=a.max_messages, ring_bytes=a.ring_bytes, data_parent=a.dir,
    )  # fmt: skip
    try:
        cfg.validate()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    report = run_benchmark(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    status = bench_http.finish(report, render(report), a.json)
    print(f"\n({time.monotonic() - t0:.0f} s in all)", file=sys.stderr)
    return status


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
