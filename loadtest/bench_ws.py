"""WebSocket benchmark (issue 4 item 9): reducer calls over ``/subscribe`` and commit fan-out.

Starts a real standalone Orrery subprocess on a free port of 127.0.0.1 over a temporary data
directory (``/var/tmp``), then measures:

a. **transfers**: ``--conns`` BSATN WebSocket connections (``compression=None``), each keeping
   ``--inflight`` ``CallReducer("transfer")`` messages outstanding; every call is answered by the
   caller's ``TransactionUpdate`` (durable commits: the commit log fsyncs by group commit). Once
   with uniform account choice and once with Zipf(α) (``--alpha``, 1.5 by default), over
   ``modules/transfer`` seeded with ``--accounts`` accounts. Latency is call sent → its
   ``TransactionUpdate`` received (calls on one connection are answered in order). Every answer is
   checked to be a committed ``TransactionUpdate``. Both phases run again with ``confirmed=true``
   (each answer held until its commit is durable on disk) unless ``--no-confirmed``.
b. **fan-out**: ``--fanout-conns`` connections subscribe to ``SELECT * FROM message`` of a
   ``modules/quickstart-chat`` database; one more connection calls ``send_message``
   ``--fanout-rounds`` times, one call at a time; the delivery time of a round's commit to each
   subscriber is call sent → that subscriber's ``TransactionUpdate`` received.

The load generator is this process: raw asyncio sockets speaking the WebSocket framing by hand
(client frames pre-built with a zero mask key), so that it costs little of the machine it shares
with the server. Every loop is bounded by time and count; the server is stopped (SIGTERM, then
SIGKILL) on every exit path. Only 127.0.0.1 is contacted.

Usage: ``python -m loadtest.bench_ws [--seconds 10] [--conns 4] [--inflight 40]
[--fanout-conns 1000] [--transport grpc] [--profile out.svg]`` (``make bench``). Exit status 1 when
an answer was not the expected one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import os
import resource
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.bench_engine import make_pairs
from loadtest.bench_http import (
    _start_profiler,
    _stop_profiler,
    finish,
    machine_busy_seconds,
    machine_info,
    percentile,
    process_cpu_seconds,
)
from sats import ws_v1 as ws
from tests.servers import Client, ServerError, StandaloneServer

__all__ = ["BenchConfig", "FanoutStats", "LoadStats", "Report", "main", "run_benchmark"]

ROOT = Path(__file__).resolve().parent.parent
TRANSFER_WASM = ROOT / "modules" / "transfer" / "transfer.wasm"
CHAT_WASM = ROOT / "modules" / "quickstart-chat" / "quickstart-chat.wasm"
TRANSFER_DB = "bench-ws-transfer"
CHAT_DB = "bench-ws-chat"
BSATN_PROTOCOL = "v1.bsatn.spacetimedb"
#: ServerMessage tags (client-api.md §10.2) and UpdateStatus tags the checks look at.
TAG_TRANSACTION_UPDATE = 1
TAG_IDENTITY_TOKEN = 3
TAG_SUBSCRIBE_APPLIED = 5
TAG_SUBSCRIBE_MULTI_APPLIED = 8
STATUS_COMMITTED = 0
ERROR_SAMPLES = 5


@dataclass
class BenchConfig:
    """What to run; the defaults are the ``make bench`` figures."""

    seconds: float = 10.0
    warmup: float = 2.0
    conns: int = 4
    inflight: int = 40
    accounts: int = 100_000
    alpha: float = 1.5
    balance: int = 1_000_000_000
    #: Upper bound on calls of one load phase (the time bound usually ends it).
    max_calls: int = 2_000_000
    fanout_conns: int = 1000
    fanout_rounds: int = 20
    #: Pause between fan-out rounds (seconds), so rounds do not overlap.
    fanout_gap: float = 0.3
    seed: int = 7
    transport: str = "inprocess"
    seed_timeout: float = 600.0
    stop_timeout: float = 30.0
    profile: Path | None = None
    skip_fanout: bool = False
    skip_transfers: bool = False
    #: Also run both transfer phases with ``confirmed=true`` (each answer held until its commit is durable).
    confirmed: bool = True

    def validate(self) -> None:
        if self.accounts < 2:
            raise ValueError("--accounts must be at least 2")
        if min(self.conns, self.inflight, self.fanout_conns, self.fanout_rounds) < 1 or self.seconds <= 0:
            raise ValueError(
                "--conns, --inflight, --fanout-conns, --fanout-rounds and --seconds must be positive"
            )


@dataclass
class LoadStats:
    label: str
    conns: int
    inflight: int
    calls: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    bad_answers: int
    client_cpu_s: float
    #: CPU of every server process watched (``server_pids``), summed; None when one was unreadable.
    server_cpu_s: float | None
    other_cpu_s: float | None
    error_samples: list[str] = field(default_factory=list)
    #: CPU seconds of each watched server process during the phase, by the name it was given.
    process_cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FanoutStats:
    conns: int
    rounds: int
    deliveries: int
    missing: int
    connect_seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: p99 of the worst round.
    worst_round_p99_ms: float
    bad_answers: int
    error_samples: list[str] = field(default_factory=list)
    #: Each round's first, median, 99th-percentile and last delivery, ms (rounds missing none).
    round_ms: list[tuple[float, float, float, float]] = field(default_factory=list)


@dataclass
class Report:
    machine: dict[str, Any]
    config: dict[str, Any]
    loads: list[LoadStats]
    fanout: FanoutStats | None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(x.bad_answers == 0 and x.calls > 0 for x in self.loads) and (
            self.fanout is None or (self.fanout.bad_answers == 0 and self.fanout.missing == 0)
        )


# --- a minimal WebSocket client ------------------------------------------------------------------


class WsProtocolFailure(RuntimeError):
    """The server broke the WebSocket protocol or refused the upgrade."""


class RawWs(asyncio.Protocol):
    """One client WebSocket over a raw asyncio transport.

    ``on_frames(payloads)`` gets every complete data frame of one ``data_received`` call (after the
    101), so a caller can answer a batch with one write."""

    def __init__(self, request: bytes, on_frames: Callable[[list[bytes]], None]) -> None:
        self.request = request
        self.on_frames = on_frames
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._head = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(WsProtocolFailure(f"connection lost before the upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(f"connection lost: {exc}")

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            self._head = False
            if not head.startswith("HTTP/1.1 101"):
                self.upgraded.set_exception(WsProtocolFailure(f"upgrade refused: {head.splitlines()[0]}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded.set_result(None)
        pos, n = 0, len(buf)
        out: list[bytes] = []
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            size, hdr = b1 & 0x7F, 2
            if size == 126:
                if n - pos < 4:
                    break
                size, hdr = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if n - pos < hdr + size:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + size])
            pos += hdr + size
            opcode = b0 & 0x0F
            if not b0 & 0x80:
                raise WsProtocolFailure("fragmented server frame (not expected from Orrery)")
            if opcode in (1, 2):
                out.append(payload)
            elif opcode == 9:  # ping → pong
                self.send(payload, opcode=0xA)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self.closed.done():
                    self.closed.set_result(f"close {code} {payload[2:].decode(errors='replace')}")
        if pos:
            del buf[:pos]
        if out:
            self.on_frames(out)

    def send(self, payload: bytes, opcode: int = 2) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(payload, opcode))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(struct.pack(">H", 1000), 8))
            self.transport.close()


def client_frame(payload: bytes, opcode: int = 2) -> bytes:
    """A masked client frame with the all-zero mask key (the payload goes out unchanged)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


async def ws_connect(host: str, port: int, db: str, token: str, on_frames: Callable[[list[bytes]], None],
                     *, timeout: float = 30.0, confirmed: bool = False) -> RawWs:  # fmt: skip
    """Open ``/v1/database/<db>/subscribe`` (BSATN, no compression) and wait for the 101."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /v1/database/{db}/subscribe?compression=None{'&confirmed=true' if confirmed else ''} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {BSATN_PROTOCOL}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: RawWs(request, on_frames), host, port), timeout
    )
    await asyncio.wait_for(proto.upgraded, timeout)
    return proto


def call_reducer_payload(reducer: str, args: bytes, request_id: int) -> bytes:
    return ws.encode_client_message_bsatn(
        ws.CallReducer(reducer, args, request_id, ws.CallReducerFlags.FULL_UPDATE)
    )


def describe_frame(payload: bytes) -> str:
    """A short account of an unexpected server frame, for the report."""
    try:
        return repr(ws.decode_server_frame(payload))[:300]
    except Exception as e:  # noqa: BLE001 - we only describe it
        return f"undecodable frame ({e}): {payload[:40].hex()}"


def is_committed_update(payload: bytes) -> bool:
    return (
        len(payload) > 2
        and payload[0] == 0
        and payload[1] == TAG_TRANSACTION_UPDATE
        and payload[2] == STATUS_COMMITTED
    )


# --- (a) transfers -------------------------------------------------------------------------------


async def reducer_load(
    host: str, port: int, tokens: list[str], cfg: BenchConfig, *, alpha: float | None, seconds: float,
    confirmed: bool = False,
    label: str, server_pids: Mapping[str, int], seed: int, db: str = TRANSFER_DB,
    reducer: str = "transfer", call_args: Sequence[bytes] | None = None,
    started: asyncio.Event | None = None, stop: asyncio.Event | None = None,
) -> LoadStats:  # fmt: skip
    """``len(tokens)`` connections to database ``db``, each keeping ``cfg.inflight`` calls of
    ``reducer`` outstanding for ``seconds`` (at most ``cfg.max_calls`` in all).

    ``started`` is set once every connection is open and the first calls are sent; setting
    ``stop`` ends the load early (what is in flight is still awaited), so another measurement can
    run while this load does.

    The arguments (BSATN) cycle through ``call_args``; by default they are ``transfer(from, to,
    1)`` over ``cfg.accounts`` accounts, uniform or Zipf(``alpha``). ``server_pids`` names the
    server processes whose CPU the phase reports (one for standalone; the gateway, host nodes,
    etcd and control plane of a cluster)."""
    if call_args is None:
        args = [struct.pack("<IIq", a, b, 1) for a, b in make_pairs(cfg.accounts, 200_000, alpha, seed)]
    else:
        args = list(call_args)
    latencies: list[float] = []
    samples: list[str] = []
    bad = [0]
    budget = [cfg.max_calls]
    deadline = [0.0]
    done_all: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    open_conns = [len(tokens)]
    perf = time.perf_counter

    class Conn:
        def __init__(self, idx: int) -> None:
            self.idx = idx
            self.sent: collections.deque[float] = collections.deque()
            self.next_arg = idx * 7919
            self.request_id = 0
            self.started = False
            self.finished = False
            self.ws: RawWs | None = None

        def frames(self, payloads: list[bytes]) -> None:
            now = perf()
            for p in payloads:
                if not self.started:  # IdentityToken
                    if len(p) < 2 or p[1] != TAG_IDENTITY_TOKEN:
                        bad[0] += 1
                        samples.append(f"first frame: {describe_frame(p)}")
                    self.started = True
                    continue
                if not self.sent:
                    bad[0] += 1
                    if len(samples) < ERROR_SAMPLES:
                        samples.append(f"unsolicited: {describe_frame(p)}")
                    continue
                latencies.append(now - self.sent.popleft())
                if not is_committed_update(p):
                    bad[0] += 1
                    if len(samples) < ERROR_SAMPLES:
                        samples.append(describe_frame(p))
            self.top_up(now)

        def top_up(self, now: float) -> None:
            if self.finished or self.ws is None or not self.started or not deadline[0]:
                return
            if now >= deadline[0] or budget[0] <= 0 or (stop is not None and stop.is_set()):
                if not self.sent:
                    self.finished = True
                    open_conns[0] -= 1
                    if open_conns[0] == 0 and not done_all.done():
                        done_all.set_result(None)
                return
            want = cfg.inflight - len(self.sent)
            if want <= 0:
                return
            want = min(want, budget[0])
            budget[0] -= want
            chunks = []
            for _ in range(want):
                self.request_id += 1
                a = args[self.next_arg % len(args)]
                self.next_arg += 1
                chunks.append(client_frame(call_reducer_payload(reducer, a, self.request_id)))
                self.sent.append(now)
            assert self.ws.transport is not None
            self.ws.transport.write(b"".join(chunks))

    conns = [Conn(i) for i in range(len(tokens))]
    for c, token in zip(conns, tokens, strict=True):
        c.ws = await ws_connect(host, port, db, token, c.frames, confirmed=confirmed)
    t_wait = perf() + 30
    while not all(c.started for c in conns):
        if perf() > t_wait:
            raise WsProtocolFailure("no IdentityToken within 30 s")
        await asyncio.sleep(0.005)
    cpu0, srv0, busy0 = time.process_time(), _cpu_of(server_pids), machine_busy_seconds()
    t0 = perf()
    deadline[0] = t0 + seconds
    for c in conns:
        c.top_up(t0)
    if started is not None:
        started.set()
    try:
        await asyncio.wait_for(done_all, seconds + 60)
    except TimeoutError:
        bad[0] += sum(len(c.sent) for c in conns)
        samples.append(f"{sum(len(c.sent) for c in conns)} calls never answered within 60 s of the end")
    elapsed = perf() - t0
    cpu = time.process_time() - cpu0
    srv1, busy1 = _cpu_of(server_pids), machine_busy_seconds()
    for c in conns:
        assert c.ws is not None
        c.ws.close()
    per_process = {name: srv1[name] - srv0[name] for name in server_pids if name in srv0 and name in srv1}
    server_cpu = sum(per_process.values()) if len(per_process) == len(server_pids) else None
    other = None
    if busy0 is not None and busy1 is not None and server_cpu is not None:
        other = max(0.0, (busy1 - busy0) - server_cpu - cpu)
    latencies.sort()
    return LoadStats(
        label=label, conns=len(conns), inflight=cfg.inflight, calls=len(latencies), seconds=elapsed,
        p50_ms=percentile(latencies, 50) * 1e3, p95_ms=percentile(latencies, 95) * 1e3,
        p99_ms=percentile(latencies, 99) * 1e3, max_ms=(latencies[-1] * 1e3 if latencies else 0.0),
        bad_answers=bad[0], client_cpu_s=cpu, server_cpu_s=server_cpu, other_cpu_s=other,
        error_samples=samples[:ERROR_SAMPLES], process_cpu_s=per_process,
    )  # fmt: skip


def _cpu_of(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process that can be read."""
    out = {}
    for name, pid in pids.items():
        cpu = process_cpu_seconds(pid)
        if cpu is not None:
            out[name] = cpu
    return out


# --- (b) fan-out ---------------------------------------------------------------------------------


async def fanout(
    host: str, port: int, client: Client, cfg: BenchConfig, log: Callable[[str], None],
    before_rounds: Callable[[], Awaitable[None]] | None = None,
) -> FanoutStats:  # fmt: skip
    """``cfg.fanout_conns`` subscribers of ``message``; one caller sends ``cfg.fanout_rounds`` messages.

    ``before_rounds`` is awaited once everyone is subscribed, just before the first round (to start
    a load the rounds then run under)."""
    _identity, token = await client.new_identity()
    reply = await client.publish(CHAT_DB, CHAT_WASM.read_bytes(), token=token)
    if reply.status not in (200, 201):
        raise RuntimeError(f"publish failed: {reply!r}")
    perf = time.perf_counter
    samples: list[str] = []
    bad = [0]
    #: round → arrival times of its TransactionUpdate, one per subscriber.
    arrivals: dict[int, list[float]] = collections.defaultdict(list)
    current = [-1]
    subscribed = [0]
    all_subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def subscriber() -> Callable[[list[bytes]], None]:
        state = {"phase": 0}

        def frames(payloads: list[bytes]) -> None:
            now = perf()
            for p in payloads:
                tag = p[1] if len(p) > 1 else -1
                if state["phase"] == 0 and tag == TAG_IDENTITY_TOKEN:
                    state["phase"] = 1
                elif state["phase"] == 1 and tag == TAG_SUBSCRIBE_MULTI_APPLIED:
                    state["phase"] = 2
                    subscribed[0] += 1
                    if subscribed[0] == cfg.fanout_conns and not all_subscribed.done():
                        all_subscribed.set_result(None)
                elif state["phase"] == 2 and is_committed_update(p):
                    arrivals[current[0]].append(now)
                else:
                    bad[0] += 1
                    if len(samples) < ERROR_SAMPLES:
                        samples.append(f"subscriber: {describe_frame(p)}")

        return frames

    subscribe = client_frame(ws.encode_client_message_bsatn(
        ws.SubscribeMulti(("SELECT * FROM message",), 1, ws.QueryId(1))
    ))  # fmt: skip
    conns: list[RawWs] = []
    t0 = perf()
    log(f"  opening {cfg.fanout_conns} subscriber connections ...")
    # A handful of identities shared by the subscribers (minting one per connection only costs setup time).
    tokens = [(await client.new_identity())[1] for _ in range(min(50, cfg.fanout_conns))]
    batch = 50
    for start in range(0, cfg.fanout_conns, batch):
        opened = await asyncio.gather(*(
            ws_connect(host, port, CHAT_DB, tokens[i % len(tokens)], subscriber())
            for i in range(start, min(cfg.fanout_conns, start + batch))
        ))  # fmt: skip
        for c in opened:
            assert c.transport is not None
            c.transport.write(subscribe)
        conns.extend(opened)
        if (start // batch) % 5 == 4:
            log(f"    {len(conns)} open")
    try:
        await asyncio.wait_for(all_subscribed, 120)
    except TimeoutError:
        raise WsProtocolFailure(
            f"only {subscribed[0]} of {cfg.fanout_conns} subscriptions applied in 120 s"
        ) from None
    connect_seconds = perf() - t0
    log(f"  {cfg.fanout_conns} subscribed in {connect_seconds:.1f} s; {cfg.fanout_rounds} rounds ...")

    answers: asyncio.Queue[bytes] = asyncio.Queue()

    def caller_frames(payloads: list[bytes]) -> None:
        for p in payloads:
            answers.put_nowait(p)

    caller = await ws_connect(host, port, CHAT_DB, token, caller_frames)
    first = await asyncio.wait_for(answers.get(), 30)
    if len(first) < 2 or first[1] != TAG_IDENTITY_TOKEN:
        raise WsProtocolFailure(f"caller's first frame: {describe_frame(first)}")
    sent_at: dict[int, float] = {}
    if before_rounds is not None:
        await before_rounds()
    for rnd in range(cfg.fanout_rounds):
        current[0] = rnd
        text = f"fan-out round {rnd}".encode()
        payload = call_reducer_payload("send_message", struct.pack("<I", len(text)) + text, rnd + 1)
        sent_at[rnd] = perf()
        caller.send(payload)
        answer = await asyncio.wait_for(answers.get(), 30)
        if not is_committed_update(answer):
            bad[0] += 1
            samples.append(f"caller: {describe_frame(answer)}")
        t_end = perf() + 10
        while len(arrivals[rnd]) < cfg.fanout_conns and perf() < t_end:
            await asyncio.sleep(0.002)
        await asyncio.sleep(cfg.fanout_gap)
    caller.close()
    for c in conns:
        c.close()
    all_ms: list[float] = []
    worst = 0.0
    missing = 0
    round_ms: list[tuple[float, float, float, float]] = []
    for rnd in range(cfg.fanout_rounds):
        got = sorted((t - sent_at[rnd]) * 1e3 for t in arrivals.get(rnd, []))
        missing += max(0, cfg.fanout_conns - len(got))
        all_ms.extend(got)
        worst = max(worst, percentile(got, 99))
        if len(got) == cfg.fanout_conns:
            round_ms.append((got[0], percentile(got, 50), percentile(got, 99), got[-1]))
    all_ms.sort()
    return FanoutStats(
        conns=cfg.fanout_conns, rounds=cfg.fanout_rounds, deliveries=len(all_ms), missing=missing,
        connect_seconds=connect_seconds, p50_ms=percentile(all_ms, 50), p99_ms=percentile(all_ms, 99),
        max_ms=all_ms[-1] if all_ms else 0.0, worst_round_p99_ms=worst, bad_answers=bad[0],
        error_samples=samples[:ERROR_SAMPLES], round_ms=round_ms,
    )  # fmt: skip


# --- orchestration -------------------------------------------------------------------------------


def _raise_fd_limit(want: int) -> None:
    """Raise the open-file limit (inherited by the server) to ``want``, or fail saying why."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise ValueError(
            f"the fan-out phase needs {want} open files (two sockets per connection) but the hard "
            f"limit is {hard}: raise it (ulimit -Hn) or lower --fanout-conns"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def _setup_transfer(client: Client, cfg: BenchConfig) -> list[str]:
    """Publish and seed the transfer database; one identity per connection."""
    _identity, owner = await client.new_identity()
    reply = await client.publish(TRANSFER_DB, TRANSFER_WASM.read_bytes(), token=owner)
    if reply.status not in (200, 201):
        raise RuntimeError(f"publish failed: {reply!r}")
    reply = await asyncio.wait_for(client.call(TRANSFER_DB, "seed", cfg.accounts, cfg.balance, token=owner),
                                   cfg.seed_timeout)  # fmt: skip
    if reply.status != 200:
        raise RuntimeError(f"seed failed: {reply!r}")
    return [(await client.new_identity())[1] for _ in range(cfg.conns)]


def run_benchmark(cfg: BenchConfig, *, log: Callable[[str], None] = print) -> Report:
    """Start the server, run the phases, stop the server (also on errors and interrupts)."""
    cfg.validate()
    if not cfg.skip_fanout:
        _raise_fd_limit(cfg.fanout_conns * 2 + 256)
    notes: list[str] = []
    loads: list[LoadStats] = []
    fan: FanoutStats | None = None
    with tempfile.TemporaryDirectory(prefix="orrery-bench-ws-", dir="/var/tmp") as d:
        server = StandaloneServer(
            Path(d) / "data",
            args=["--log-level", "warning", "--transport", cfg.transport],
            log_dir=Path(d) / "logs",
        )
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        host, port_text = server.url.removeprefix("http://").rsplit(":", 1)
        port = int(port_text)
        try:
            if not cfg.skip_transfers:
                log(
                    f"server pid {pid} on {server.url} ({cfg.transport}); seeding {cfg.accounts:,} accounts ..."
                )
                tokens = server.run(lambda c: _setup_transfer(c, cfg))
                zipf = f"zipf α={cfg.alpha:g}"
                phases: list[tuple[str, float | None, bool]] = [("uniform", None, False), (zipf, cfg.alpha, False)]
                if cfg.confirmed:
                    phases += [("uniform, confirmed", None, True), (f"{zipf}, confirmed", cfg.alpha, True)]
                for i, (label, alpha, confirmed) in enumerate(phases):
                    if cfg.warmup > 0:
                        asyncio.run(reducer_load(host, port, tokens, cfg, alpha=alpha, seconds=cfg.warmup,
                                                  label="warm-up", server_pids={"server": pid}, seed=cfg.seed + 50 + i,
                                                  confirmed=confirmed))  # fmt: skip
                    log(
                        f"transfers, {label}: {cfg.conns} conns × {cfg.inflight} in flight, {cfg.seconds:g} s ..."
                    )
                    profiler = _start_profiler(pid, cfg.profile.with_stem(f"{cfg.profile.stem}-{i}"), cfg.seconds) \
                        if cfg.profile else None  # fmt: skip
                    try:
                        load = asyncio.run(reducer_load(host, port, tokens, cfg, alpha=alpha, seconds=cfg.seconds,
                                                         label=f"transfer {label}", server_pids={"server": pid}, seed=cfg.seed + i,
                                                         confirmed=confirmed))  # fmt: skip
                    finally:
                        _stop_profiler(profiler, cfg.seconds + 30)
                    loads.append(load)
                    log(f"  {load.rate:,.0f} calls/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, "
                        f"{load.bad_answers} bad answers")  # fmt: skip
            if not cfg.skip_fanout:
                log(f"fan-out: {cfg.fanout_conns} subscribers ...")
                fan = server.run(lambda c: fanout(host, port, c, cfg, log))
                log(f"  p50 {fan.p50_ms:.1f} ms, p99 {fan.p99_ms:.1f} ms, worst round p99 {fan.worst_round_p99_ms:.1f} ms, "
                    f"{fan.missing} missing, {fan.bad_answers} bad answers")  # fmt: skip
            if cfg.profile:
                notes.append(f"py-spy sampled the server at 200 Hz during each transfer phase: {cfg.profile}")
            for line in server.log_text().splitlines():
                if "level=error" in line or "level=warning" in line:
                    notes.append(f"server log: {line[:300]}")
                    if len(notes) > 20:
                        break
        finally:
            try:
                code = server.stop(cfg.stop_timeout)
            except ServerError as e:
                notes.append(str(e))
            else:
                if code != 0:
                    notes.append(f"the server exited with status {code} on SIGTERM")
    machine = machine_info()
    for load in loads:
        capacity = load.seconds * (machine["cores"] or 1)
        if load.other_cpu_s is not None and load.other_cpu_s > 0.05 * capacity:
            notes.append(f"{load.label}: other processes used {load.other_cpu_s:.1f} CPU-s of {capacity:.0f}: "
                         "the figures are lower and noisier than on an idle machine")  # fmt: skip
    return Report(machine=machine, config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
                  loads=loads, fanout=fan, notes=notes)  # fmt: skip


def render(report: Report) -> str:
    m = report.machine
    cfg = report.config
    lines = [
        f"machine: {m['cores']} cores ({m['cpu']}), {m['python']}, aiohttp {m['aiohttp']}, server loop "
        f"{m['server_loop']}, transport {cfg['transport']}; load generator and server share the cores",
        "",
    ]
    if report.loads:
        lines += [
            "| benchmark | conns × in flight | calls | seconds | calls/s | p50 ms | p95 ms | p99 ms | max ms | bad |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for x in report.loads:
            lines.append(f"| {x.label} | {x.conns} × {x.inflight} | {x.calls:,} | {x.seconds:.1f} | {x.rate:,.0f} "
                         f"| {x.p50_ms:.1f} | {x.p95_ms:.1f} | {x.p99_ms:.1f} | {x.max_ms:.1f} | {x.bad_answers} |")  # fmt: skip
        lines.append("")
        for x in report.loads:
            srv = (
                ""
                if x.server_cpu_s is None
                else f", server CPU {x.server_cpu_s / max(1, x.calls) * 1e6:.0f} µs/call"
            )
            other = "" if x.other_cpu_s is None else f", other processes {x.other_cpu_s:.1f} CPU-s"
            lines.append(
                f"- {x.label}: load generator CPU {x.client_cpu_s / max(1, x.calls) * 1e6:.0f} µs/call{srv}{other}"
            )
            lines += [f"- {x.label} error: {s}" for s in x.error_samples]
    f = report.fanout
    if f is not None:
        lines.append(
            f"- fan-out: {f.conns} subscribers × {f.rounds} commits: {f.deliveries:,} deliveries, p50 {f.p50_ms:.1f} ms, "
            f"p99 {f.p99_ms:.1f} ms, max {f.max_ms:.1f} ms, worst round p99 {f.worst_round_p99_ms:.1f} ms, "
            f"{f.missing} missing (subscribed in {f.connect_seconds:.1f} s)"
        )
        lines += [f"- fan-out error: {s}" for s in f.error_samples]
    lines += [f"- {n}" for n in report.notes]
    if not report.ok:
        lines.append("- **FAILED: some answers were not the expected ones (see above)**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    d = BenchConfig()
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench_ws", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=d.seconds)
    ap.add_argument("--warmup", type=float, default=d.warmup)
    ap.add_argument("--conns", type=int, default=d.conns)
    ap.add_argument("--inflight", type=int, default=d.inflight)
    ap.add_argument("--accounts", type=int, default=d.accounts)
    ap.add_argument("--alpha", type=float, default=d.alpha)
    ap.add_argument("--fanout-conns", type=int, default=d.fanout_conns)
    ap.add_argument("--fanout-rounds", type=int, default=d.fanout_rounds)
    ap.add_argument("--transport", choices=("inprocess", "grpc"), default=d.transport)
    ap.add_argument("--profile", type=Path, help="py-spy output per transfer phase (.svg, .txt raw, .json)")
    ap.add_argument("--skip-fanout", action="store_true")
    ap.add_argument("--skip-transfers", action="store_true")
    ap.add_argument("--no-confirmed", action="store_true", help="skip the confirmed=true transfer phases")
    ap.add_argument("--json", type=Path, help="also write the report as JSON here")
    a = ap.parse_args(argv)
    cfg = BenchConfig(
        seconds=a.seconds, warmup=a.warmup, conns=a.conns, inflight=a.inflight, accounts=a.accounts,
        alpha=a.alpha, fanout_conns=a.fanout_conns, fanout_rounds=a.fanout_rounds, transport=a.transport,
        profile=a.profile, skip_fanout=a.skip_fanout, skip_transfers=a.skip_transfers, confirmed=not a.no_confirmed,
    )  # fmt: skip
    try:
        cfg.validate()
        if not cfg.skip_fanout:
            _raise_fd_limit(cfg.fanout_conns * 2 + 256)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = run_benchmark(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
    return finish(report, render(report), a.json)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
