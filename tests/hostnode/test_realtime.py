"""hostnode.realtime: the per-database hub and its connections, in process (no sockets).

End-to-end behaviour through the gateway is in tests/gateway/test_ws.py; these check what a
socket cannot show: one encoding shared by every connection, the outgoing bound, and
``confirmed`` holding a message until durable.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostnode.commitlog import DurableCallback
from hostnode.durability import Durability
from hostnode.realtime import (
    CLOSE_SERVER_FULL,
    CLOSE_TOO_MANY_REQUESTS,
    CLOSE_TOO_SLOW,
    MAX_OUTGOING_BYTES,
    ClientParams,
    Connection,
    committed_caller_update_bsatn,
    frame_bsatn,
    read_call,
)
from hostnode.service import HostNode, HostNodeConfig
from sats import ws_v1 as ws
from sats.bsatn import encode
from sats.errors import EncodeError
from sats.identity import ConnectionId, Identity
from sats.types import STRING
from tests.hostnode.conftest import module_wasm
from tests.waits import PATIENCE, until, writer_held

OWNER = Identity.from_claims("localhost", "owner")
DB = Identity.from_claims("localhost", "realtime-db")
CHAT = module_wasm("quickstart-chat")


def run(tmp_path: Path, body: Callable[[HostNode], Awaitable[None]], **config: Any) -> None:
    async def main() -> None:
        node = HostNode(HostNodeConfig(tmp_path / "node", **config))
        await node.start()
        try:
            await node.install(DB, OWNER, CHAT)
            await body(node)
        finally:
            await node.stop()

    asyncio.run(main())


async def client(node: HostNode, n: int, **kw: object) -> Connection:
    params = ClientParams(Identity.from_claims("localhost", f"user{n}"), "tok", n, **kw)  # type: ignore[arg-type]
    conn = await node.connect_client(DB, params)
    assert isinstance(conn, Connection)
    first = await asyncio.wait_for(conn.recv(), 5)
    assert isinstance(first, bytes) and isinstance(ws.decode_server_frame(first), ws.IdentityToken)
    return conn


@dataclass
class Held:
    """Waits for durability held back by :func:`held_durability`."""

    #: Set it to let the held waits (and later ones) through.
    gate: asyncio.Event
    #: The offset of every wait, in order.
    waited: list[int]
    #: Set whenever a wait is added to ``waited``.
    changed: asyncio.Event

    async def reached(self, count: int) -> None:
        """Return once ``count`` waits are held: the signal a test waits for instead of sleeping."""
        while len(self.waited) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), PATIENCE)


class _HeldDurability:
    """The database's durability with every async wait recorded and held at ``held.gate``."""

    def __init__(self, real: Durability, held: Held) -> None:
        self._real = real
        self._held = held

    @property
    def durable_offset(self) -> int:
        return self._real.durable_offset

    def add_callback(self, offset: int, fn: DurableCallback) -> None:
        self._real.add_callback(offset, fn)

    def wait_durable(self, offset: int, timeout: float | None = None) -> bool:
        return self._real.wait_durable(offset, timeout)

    async def wait_durable_async(self, offset: int) -> None:
        self._held.waited.append(offset)
        self._held.changed.set()
        await self._held.gate.wait()
        await self._real.wait_durable_async(offset)


@contextmanager
def held_durability(node: HostNode) -> Iterator[Held]:
    """Make every wait for durability (``confirmed`` frames) record its offset and block until
    the gate is set. The database's durability seam is swapped rather than a method patched:
    the compiled engine (``make native``) takes no patched methods."""
    db = node.database(DB)
    held = Held(asyncio.Event(), [], asyncio.Event())
    real = db.durability
    db.durability = _HeldDurability(real, held)
    try:
        yield held
    finally:
        db.durability = real


def msg(frame: bytes | str | None) -> ws.ServerMessage:
    assert frame is not None
    return ws.decode_server_message_json(frame) if isinstance(frame, str) else ws.decode_server_frame(frame)


async def subscribe(conn: Connection) -> None:
    conn.handle(
        ws.encode_client_message_bsatn(ws.SubscribeMulti(("SELECT * FROM message",), 1, ws.QueryId(1)))
    )
    assert isinstance(msg(await asyncio.wait_for(conn.recv(), 5)), ws.SubscribeMultiApplied)


def send_message(conn: Connection, text: str, request_id: int = 0) -> None:
    call = ws.CallReducer("send_message", encode(STRING, text), request_id)
    assert conn.handle(ws.encode_client_message_bsatn(call)) is None


def test_one_encoding_shared_by_every_connection(tmp_path: Path) -> None:
    async def body(node: HostNode) -> None:
        conns = [await client(node, i, compression=ws.Compression.NONE) for i in range(1, 5)]
        for conn in conns:
            await subscribe(conn)
        send_message(conns[0], "hello", 7)
        frames = [await asyncio.wait_for(c.recv(), 5) for c in conns]
        # The caller's full update and the others' are the same message: one object.
        assert all(f is frames[0] for f in frames)
        up = msg(frames[0])
        assert isinstance(up, ws.TransactionUpdate) and up.reducer_call.request_id == 7
        for conn in conns:
            await conn.close()

    run(tmp_path, body)


def test_malformed_frame_reports_close_reason(tmp_path: Path) -> None:
    async def body(node: HostNode) -> None:
        conn = await client(node, 1)
        reason = conn.handle(b"\xff")
        assert reason
        assert conn.handle("{not json") is not None
        await conn.close()

    run(tmp_path, body)


def test_slow_connection_is_cut_off_others_keep_receiving(tmp_path: Path) -> None:
    async def body(node: HostNode) -> None:
        slow = await client(node, 1)
        fast = await client(node, 2)
        slow.max_messages = 5
        await subscribe(slow)
        await subscribe(fast)
        for i in range(10):
            send_message(fast, f"m{i}", i)
            up = msg(await asyncio.wait_for(fast.recv(), 5))
            assert isinstance(up, ws.TransactionUpdate) and up.reducer_call.request_id == i
        assert slow.is_closed and (slow.close_code, slow.close_reason) == CLOSE_TOO_SLOW
        assert await slow.recv() is None
        await slow.close()
        send_message(fast, "after", 99)
        up = msg(await asyncio.wait_for(fast.recv(), 5))
        assert isinstance(up, ws.TransactionUpdate) and up.reducer_call.request_id == 99
        await fast.close()

    run(tmp_path, body)


def test_confirmed_holds_updates_until_durable(tmp_path: Path) -> None:
    async def body(node: HostNode) -> None:
        confirmed = await client(node, 1, confirmed=True)
        plain = await client(node, 2)
        await subscribe(confirmed)
        await subscribe(plain)
        with held_durability(node) as held:
            send_message(plain, "x", 1)
            assert isinstance(msg(await asyncio.wait_for(plain.recv(), 5)), ws.TransactionUpdate)
            pending = asyncio.ensure_future(confirmed.recv())
            await held.reached(1)
            await asyncio.sleep(0)
            assert not pending.done()
            held.gate.set()
            assert isinstance(msg(await asyncio.wait_for(pending, 5)), ws.TransactionUpdate)
        await confirmed.close()
        await plain.close()

    run(tmp_path, body)


def test_confirmed_holds_identity_token_until_client_connected_is_durable(tmp_path: Path) -> None:
    """With ``confirmed`` the client hears it was accepted only once ``client_connected`` (which
    may have written rows, e.g. the chat's user row) is durable; without, at once."""

    async def body(node: HostNode) -> None:
        with held_durability(node) as held:
            plain = await node.connect_client(DB, ClientParams(Identity.from_claims("localhost", "p"), "tok-p", 1))
            assert isinstance(plain, Connection)
            assert isinstance(msg(await asyncio.wait_for(plain.recv(), 5)), ws.IdentityToken)
            assert not held.waited
            params = ClientParams(Identity.from_claims("localhost", "c"), "tok-c", 2, confirmed=True)
            confirmed = await node.connect_client(DB, params)
            assert isinstance(confirmed, Connection)
            connected_at = node.database(DB).last_offset  # client_connected's commit
            pending = asyncio.ensure_future(confirmed.recv())
            await held.reached(1)
            await asyncio.sleep(0)
            assert not pending.done() and held.waited == [connected_at]
            held.gate.set()
            token = msg(await asyncio.wait_for(pending, 5))
            assert isinstance(token, ws.IdentityToken) and token.token == "tok-c"
        await confirmed.close()
        await plain.close()

    run(tmp_path, body)


def test_confirmed_holds_subscribe_and_one_off_answers_until_what_they_read_is_durable(tmp_path: Path) -> None:
    """As in 1.12, rows read for a subscription or a one-off query reach a confirmed client only
    once the last commit they include is durable; errors are not held."""

    async def body(node: HostNode) -> None:
        confirmed = await client(node, 1, confirmed=True)
        plain = await client(node, 2)
        with held_durability(node) as held:
            send_message(plain, "x", 1)
            assert isinstance(msg(await asyncio.wait_for(plain.recv(), 5)), ws.TransactionUpdate)
            last = node.database(DB).last_offset
            bad = ws.SubscribeMulti(("SELECT * FROM nope",), 2, ws.QueryId(2))
            sub = ws.SubscribeMulti(("SELECT * FROM message",), 1, ws.QueryId(1))
            for m in (bad, sub, ws.OneOffQuery(b"\x07", "SELECT * FROM message")):
                assert confirmed.handle(ws.encode_client_message_bsatn(m)) is None
            error = msg(await asyncio.wait_for(confirmed.recv(), 5))
            assert isinstance(error, ws.SubscriptionError) and not held.waited
            pending = asyncio.ensure_future(confirmed.recv())
            await held.reached(1)
            await asyncio.sleep(0)
            assert not pending.done() and held.waited[0] == last
            await subscribe(plain)  # not confirmed: at once
            held.gate.set()
            assert isinstance(msg(await asyncio.wait_for(pending, 5)), ws.SubscribeMultiApplied)
            one_off = msg(await asyncio.wait_for(confirmed.recv(), 5))
            assert isinstance(one_off, ws.OneOffQueryResponse) and one_off.message_id == b"\x07"
            assert held.waited == [last, last]
        await confirmed.close()
        await plain.close()

    run(tmp_path, body)


def test_database_deleted_closes_connections_1001(tmp_path: Path) -> None:
    async def body(node: HostNode) -> None:
        conn = await client(node, 1)
        await node.delete(DB)
        assert await asyncio.wait_for(conn.recv(), 5) is None
        assert (conn.close_code, conn.close_reason) == (1001, "module exited")
        await conn.close()  # the database is gone: nothing to run, no hang

    run(tmp_path, body)


def test_default_outgoing_limit_per_client_is_16_mib() -> None:
    assert MAX_OUTGOING_BYTES == 16 << 20  # was 256 MiB: N slow clients held N × 256 MiB


def test_slow_clients_over_the_process_budget_are_cut_off_others_keep_receiving(tmp_path: Path) -> None:
    """Issue 12: the bytes queued for all slow clients together are bounded. Each client here
    may queue 16 MiB, but the process only 3 kB: the client that does not read is disconnected
    with the reason once the total is over, its frames are released, and a client that keeps
    up receives every update."""

    async def body(node: HostNode) -> None:
        node.outgoing.limit = 3000
        slow = await client(node, 1)
        fast = await client(node, 2)
        await subscribe(slow)
        await subscribe(fast)
        for i in range(40):
            send_message(fast, f"message {i:02d} " + "x" * 100, i)
            up = msg(await asyncio.wait_for(fast.recv(), 5))
            assert isinstance(up, ws.TransactionUpdate) and up.reducer_call.request_id == i
        assert slow.is_closed and (slow.close_code, slow.close_reason) == CLOSE_SERVER_FULL
        assert node.outgoing.queued == 0  # the slow client's frames were released
        assert await slow.recv() is None
        await slow.close()
        await fast.close()

    run(tmp_path, body)


def test_too_many_unprocessed_messages_close_1013(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hostnode import realtime

    monkeypatch.setattr(realtime, "MAX_INCOMING_MESSAGES", 3)

    async def body(node: HostNode) -> None:
        conn = await client(node, 1)
        gate = threading.Event()
        blocked = asyncio.ensure_future(node.run(DB, lambda db: gate.wait(10)))  # the writer is busy
        frame = ws.encode_client_message_bsatn(ws.OneOffQuery(b"", "SELECT * FROM user"))
        for _ in range(3):
            assert conn.handle(frame) is None
        assert not conn.is_closed
        conn.handle(frame)
        assert conn.is_closed and (conn.close_code, conn.close_reason) == CLOSE_TOO_MANY_REQUESTS
        gate.set()
        await blocked
        await conn.close()

    run(tmp_path, body)


def test_a_full_writer_queue_fails_reducer_calls_and_runs_none_of_them(tmp_path: Path) -> None:
    """Issue 12: past the writer's queue limit a WebSocket reducer call is answered ``failed``
    with the reason (its request id kept) and never runs; a request whose protocol has no
    "not now" (a subscription) closes the connection 1013 with the reason."""

    async def body(node: HostNode) -> None:
        conn = await client(node, 1)
        await subscribe(conn)
        async with writer_held(node, DB):
            send_message(conn, "queued 1", 1)
            send_message(conn, "queued 2", 2)
            await until(lambda: node._worker(DB).queued == 2, "two messages waiting for the writer")
            send_message(conn, "refused", 3)
            refused = msg(await asyncio.wait_for(conn.recv(), 5))
            assert isinstance(refused, ws.TransactionUpdate) and isinstance(refused.status, ws.Failed)
            assert refused.reducer_call.request_id == 3 and refused.reducer_call.reducer_name == "send_message"
            assert refused.status.message.startswith("the database is overloaded: 2 requests are already waiting")
            assert not conn.is_closed
            conn.handle(ws.encode_client_message_bsatn(ws.SubscribeMulti(("SELECT * FROM user",), 4, ws.QueryId(2))))
            assert conn.is_closed and conn.close_code == CLOSE_TOO_MANY_REQUESTS[0]
            assert conn.close_reason.startswith("the database is overloaded")
        await conn.close()
        result = await node.sql(DB, "SELECT text FROM message", OWNER)
        assert sorted(row[0] for row in result.rows) == ["queued 1", "queued 2"]

    run(tmp_path, body, writer_max_queued=2)


def test_messages_of_many_clients_waiting_for_the_writer_are_one_job(tmp_path: Path) -> None:
    """Issue 11 item 4: what several clients send while the writer is busy goes to it as one job
    (each client's batch still counts against the writer's bound), runs in each client's order,
    and every client gets its own answers."""

    async def body(node: HostNode) -> None:
        conns = [await client(node, n) for n in (1, 2, 3)]
        worker = node._worker(DB)
        async with writer_held(node, DB):
            send_message(conns[0], "a1", 1)
            send_message(conns[1], "b1", 7)
            send_message(conns[0], "a2", 2)
            send_message(conns[2], "c1", 9)
            assert worker._jobs.qsize() == 1
            assert worker.queued == 4
        for conn, ids in ((conns[0], [1, 2]), (conns[1], [7]), (conns[2], [9])):
            got = [msg(await asyncio.wait_for(conn.recv(), 5)) for _ in ids]
            assert all(isinstance(m, ws.TransactionUpdate) and isinstance(m.status, ws.Committed) for m in got)
            assert [m.reducer_call.request_id for m in got] == ids  # type: ignore[union-attr]
        assert worker.queued == 0
        rows = (await node.sql(DB, "SELECT text FROM message", OWNER)).rows
        assert sorted(r[0] for r in rows) == ["a1", "a2", "b1", "c1"]
        for conn in conns:
            await conn.close()

    run(tmp_path, body)


def test_one_message_larger_than_the_byte_limit_reaches_a_client_that_keeps_up(tmp_path: Path) -> None:
    """The per-client byte limit cuts off a client that falls behind, not one that receives a
    single large message (a big subscription result) with nothing else waiting."""

    async def body(node: HostNode) -> None:
        conn = await client(node, 1, compression=ws.Compression.NONE)
        conn.max_bytes = 100
        send_message(conn, "x" * 1000, 1)
        assert isinstance(msg(await asyncio.wait_for(conn.recv(), 5)), ws.TransactionUpdate)
        await subscribe(conn)  # its initial rows are over 1000 bytes
        send_message(conn, "y" * 1000, 2)
        up = msg(await asyncio.wait_for(conn.recv(), 5))
        assert isinstance(up, ws.TransactionUpdate) and up.reducer_call.request_id == 2
        assert not conn.is_closed
        await conn.close()

    run(tmp_path, body)


@pytest.mark.parametrize("with_sink", [False, True], ids=["queued", "sink"])
def test_several_frames_handed_over_at_once_count_against_the_byte_limit(tmp_path: Path, with_sink: bool) -> None:
    """Only a single message may pass the per-client byte limit: answers the writer hands over
    together (one client's batch, or every client's batch of one writer job) count as frames
    waiting, so a client cannot be handed more than its limit in one go — nor past a sink."""

    async def body(node: HostNode) -> None:
        conn = await client(node, 1, compression=ws.Compression.NONE)
        await subscribe(conn)
        conn.max_bytes = 1500
        sink = _Sink()
        if with_sink:
            conn.sink = sink
        calls = [ws.CallReducer("send_message", encode(STRING, c * 1000), i) for i, c in enumerate("abc")]
        assert conn.handle_many([ws.encode_client_message_bsatn(c) for c in calls]) is None
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert (conn.close_code, conn.close_reason) == CLOSE_TOO_SLOW
        assert sink.got == []
        await conn.close()

    run(tmp_path, body)


class _Sink:
    """A connection's ``sink``: records what it is handed; ``accept`` False refuses."""

    def __init__(self) -> None:
        self.got: list[bytes | str] = []
        self.accept = True
        self.changed = asyncio.Event()

    def __call__(self, frames: list[bytes | str]) -> bool:
        if not self.accept:
            return False
        self.got.extend(frames)
        self.changed.set()
        return True

    async def wait_for(self, count: int) -> None:
        while len(self.got) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), PATIENCE)


def test_a_sink_takes_frames_at_once_but_never_ahead_of_queued_ones(tmp_path: Path) -> None:
    """A connection hands ready frames to its sink (no task wake-up per frame); while anything is
    queued — because the sink refused, say — later frames queue behind it, in order."""

    async def body(node: HostNode) -> None:
        sender = await client(node, 1)
        watcher = await client(node, 2, compression=ws.Compression.NONE)
        await subscribe(watcher)
        sink = watcher.sink = _Sink()
        send_message(sender, "first")
        await sink.wait_for(1)
        assert _texts(sink.got, "first") == [["first"]]
        sink.accept = False
        send_message(sender, "second")
        await until(lambda: bool(watcher._queue), what="the refused frame queued")
        sink.accept = True
        send_message(sender, "third")  # the sink would take it, but "second" waits
        await until(lambda: len(watcher._queue) == 2, what="the third frame queued behind the second")
        queued = await asyncio.wait_for(watcher.recv_many(), 5)
        assert queued is not None
        assert _texts(queued, "second", "third") == [["second"], ["third"]] and len(sink.got) == 1
        send_message(sender, "fourth")  # nothing queued any more: straight to the sink
        await sink.wait_for(2)
        assert _texts(sink.got[1:], "fourth") == [["fourth"]]
        await sender.close()
        await watcher.close()

    run(tmp_path, body)


def _texts(frames: list[bytes | str], *candidates: str) -> list[list[str]]:
    """For each (uncompressed BSATN) update frame, which of ``candidates`` its rows carry."""
    out = []
    for frame in frames:
        assert isinstance(frame, bytes) and isinstance(msg(frame), ws.TransactionUpdate)
        out.append([c for c in candidates if c.encode() in frame])
    return out


def test_a_confirmed_connection_holds_frames_then_hands_them_to_its_sink_in_order(tmp_path: Path) -> None:
    """With a sink, a confirmed client's update waits for durability without its drainer: the
    durability callback itself hands it to the sink. Frames handed over meanwhile queue behind it,
    even ones that could go at once, and the drainer takes them only after it."""

    async def body(node: HostNode) -> None:
        async with _one_update_held(node) as (sender, watcher, sink, late):
            assert sink.got == [] and not watcher._queue and watcher._holding
            drained = asyncio.ensure_future(watcher.recv_many())
            late.durable = True  # the next update may go at once, but "held" is not out yet
            send_message(sender, "behind")
            await until(lambda: bool(watcher._queue), what="the second update queued behind the held one")
            await asyncio.sleep(0.05)
            assert sink.got == [] and not drained.done()
            late.run(None)
            await sink.wait_for(1)
            assert _texts(sink.got, "held", "behind") == [["held"]] and not watcher._holding
            after = await asyncio.wait_for(drained, 5)
            assert after is not None and _texts(after, "held", "behind") == [["behind"]]

    run(tmp_path, body)


def test_held_frames_a_full_sink_refuses_go_first_to_the_drainer(tmp_path: Path) -> None:
    async def body(node: HostNode) -> None:
        async with _one_update_held(node) as (sender, watcher, sink, late):
            late.durable = True
            send_message(sender, "behind")
            await until(lambda: bool(watcher._queue), what="the second update queued behind the held one")
            sink.accept = False
            late.run(None)
            await until(lambda: len(watcher._queue) == 2, what="the held update put back first in line")
            frames = await asyncio.wait_for(watcher.recv_many(), 5)
            assert frames is not None and _texts(frames, "held", "behind") == [["held"], ["behind"]]
            assert sink.got == []

    run(tmp_path, body)


def test_held_frames_that_never_become_durable_close_the_client(tmp_path: Path) -> None:
    async def body(node: HostNode) -> None:
        async with _one_update_held(node) as (_, watcher, sink, late):
            late.run(OSError("disk gone"))
            await asyncio.wait_for(watcher.wait_closed(), 5)
            assert sink.got == []
            assert (watcher.close_code, watcher.close_reason) == (1011, "transaction not durable: disk gone")

    run(tmp_path, body)


@asynccontextmanager
async def _one_update_held(
    node: HostNode,
) -> AsyncIterator[tuple[Connection, Connection, _Sink, _LateDurability]]:
    """A sender and a confirmed subscriber with a sink, the database's durability replaced by a
    :class:`_LateDurability`, and the update of the sender's message "held" waiting for it."""
    sender = await client(node, 1)
    watcher = await client(node, 2, confirmed=True, compression=ws.Compression.NONE)
    try:
        await subscribe(watcher)
        sink = watcher.sink = _Sink()
        with late_durability(node) as late:
            send_message(sender, "held")
            await until(lambda: len(late.pending) == 1, what="a durability callback for the held update")
            yield sender, watcher, sink, late
    finally:
        await sender.close()
        await watcher.close()


@dataclass
class _LateDurability:
    """The database's durability with callbacks of its own: nothing is durable until
    ``durable`` is set, and the callbacks asked for run only at :meth:`run`."""

    real: Durability
    durable: bool = False
    pending: list[DurableCallback] = field(default_factory=list)

    @property
    def durable_offset(self) -> int:
        return 1 << 62 if self.durable else 0

    def add_callback(self, offset: int, fn: DurableCallback) -> None:
        self.pending.append(fn)

    def run(self, error: BaseException | None) -> None:
        self.durable = error is None
        pending, self.pending = self.pending, []
        for fn in pending:
            fn(error)

    def wait_durable(self, offset: int, timeout: float | None = None) -> bool:
        return self.real.wait_durable(offset, timeout)

    async def wait_durable_async(self, offset: int) -> None:
        await self.real.wait_durable_async(offset)


@contextmanager
def late_durability(node: HostNode) -> Iterator[_LateDurability]:
    db = node.database(DB)
    real = db.durability
    late = _LateDurability(real)
    db.durability = late  # type: ignore[assignment]
    try:
        yield late
    finally:
        db.durability = real


# --- read_call: the server's reading of CallReducer frames agrees with the general decoder ------


@given(
    st.text(max_size=40),
    st.binary(max_size=64),
    st.integers(0, 2**32 - 1),
    st.sampled_from(list(ws.CallReducerFlags)),
    st.data(),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_read_call_agrees_with_the_general_decoder(
    name: str, args: bytes, request_id: int, flags: ws.CallReducerFlags, data: st.DataObject
) -> None:
    frame = ws.encode_client_message_bsatn(ws.CallReducer(name, args, request_id, flags))
    call = read_call(frame)
    assert call is not None
    assert (call.reducer, call.args, call.request_id, call.flags) == (name, args, request_id, flags)
    assert call.flags is flags
    # Damaged frames (truncated, extended, one byte changed): read alike, or left to the general
    # decoder (which the server then uses, with its own error).
    cut = data.draw(st.integers(0, len(frame)))
    pos = data.draw(st.integers(0, len(frame) - 1))
    byte = data.draw(st.integers(0, 255))
    for bad in (frame[:cut], frame + b"\x00", frame[:pos] + bytes([byte]) + frame[pos + 1 :]):
        got = read_call(bad)
        if got is None:
            continue
        decoded = ws.decode_client_message_bsatn(bad)
        assert isinstance(decoded, ws.CallReducer)
        assert (got.reducer, got.args, got.request_id, got.flags) == (
            decoded.reducer, decoded.args, decoded.request_id, decoded.flags,
        )  # fmt: skip


def test_read_call_leaves_other_messages_to_the_general_decoder() -> None:
    for msg in (
        ws.OneOffQuery(b"\x01" * 16, "SELECT * FROM t"),
        ws.Subscribe(("SELECT * FROM t",), 7),
        ws.CallProcedure("p", b"", 3, ws.CallProcedureFlags.DEFAULT),
    ):
        assert read_call(ws.encode_client_message_bsatn(msg)) is None
    frame = ws.encode_client_message_bsatn(ws.CallReducer("r", b"", 1, ws.CallReducerFlags.FULL_UPDATE))
    assert read_call(frame[:-1] + b"\x02") is None  # flags past NO_SUCCESS_NOTIFY
    assert read_call(frame[:1] + b"\xff\xff\xff\xff" + frame[5:]) is None  # a name past the end


# --- the caller's own committed update, built without message objects -------------------------


@given(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**256 - 1),
    st.integers(0, 2**128 - 1),
    st.text(max_size=30),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=40),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**128 - 1),
    st.integers(-(2**63), 2**63 - 1),
)
def test_committed_caller_update_is_byte_identical_to_the_general_encoder(
    ts: int, ident: int, conn: int, name: str, rid: int, args: bytes, req: int, energy: int, dur: int
) -> None:
    msg = ws.TransactionUpdate(
        ws.Committed(ws.DatabaseUpdate(())), ws.Timestamp(ts), Identity(ident), ConnectionId(conn),
        ws.ReducerCallInfo(name, rid, args, req), ws.EnergyQuanta(energy), ws.TimeDuration(dur),
    )  # fmt: skip
    fast = committed_caller_update_bsatn(ts, Identity(ident), conn, name, rid, args, req, energy, dur)
    assert fast == ws.encode_server_message_bsatn(msg)
    for compression in ws.Compression:
        assert frame_bsatn(fast, compression) == ws.frame_server_message(fast, compression)



def test_committed_caller_update_refuses_numbers_past_their_fields() -> None:
    good = (0, Identity(1), 2, "r", 3, b"", 4, 5, 6)
    assert committed_caller_update_bsatn(*good)
    for i, bad in ((0, 2**63), (2, 2**128), (4, 2**32), (6, -1), (7, 2**128), (8, -(2**63) - 1)):
        args: list[Any] = list(good)
        args[i] = bad
        with pytest.raises(EncodeError, match="does not fit its field"):
            committed_caller_update_bsatn(*args)


def test_large_frames_are_compressed_like_the_general_encoder() -> None:
    big = bytes(range(256)) * 8
    for compression in ws.Compression:
        assert ws.unframe_server_message(frame_bsatn(big, compression)) == big
        assert frame_bsatn(big, compression)[0] == ws.frame_server_message(big, compression)[0]
