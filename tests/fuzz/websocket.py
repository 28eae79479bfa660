"""The live WebSocket target: frames from a hostile client to ``orrery.standalone``'s ``/subscribe``.

Each input opens a v1 connection (BSATN or JSON) to the harness's quickstart-chat database and
sends a few frames — client messages with fuzzed reducer names, arguments and queries, mutated
encodings, and frames of the other protocol's kind — then a probe: a ``OneOffQuery`` whose
answer shows the connection still serves. The property: the probe is answered, or the server
closed the socket with a close frame (a code, and for 1011 the reason naming the problem);
never a dropped socket, never a dead server. A connection that neither answers nor closes
within :data:`HANG_SECONDS` is reported as hung (a hang detector, not a speed test: the probe
normally answers in milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from hypothesis import strategies as st

from sats.bsatn import codec_for
from sats.types import STRING, product
from sats.ws_v1 import (
    CallReducer,
    CallReducerFlags,
    ClientMessage,
    OneOffQuery,
    OneOffQueryResponse,
    QueryId,
    Subscribe,
    SubscribeMulti,
    SubscribeSingle,
    Unsubscribe,
    UnsubscribeMulti,
    decode_server_frame,
    decode_server_message_json,
    encode_client_message_bsatn,
    encode_client_message_json,
)
from tests.fuzz.inputs import mutated_bytes
from tests.fuzz.routes import live_server

__all__ = ["HANG_SECONDS", "Session", "ws_harness", "ws_sessions"]

BSATN = "v1.bsatn.spacetimedb"
JSON = "v1.json.spacetimedb"
PROBE_ID = b"fuzz-probe"
#: Seconds without an answer or a close after which a connection counts as hung.
HANG_SECONDS = 60.0

_NAME_ARGS = codec_for(product(("name", STRING)))


@dataclass(frozen=True)
class Session:
    """One connection's worth of input: the protocol and the frames sent before the probe."""

    protocol: str
    frames: tuple[bytes | str, ...]


_U32 = st.integers(0, 2**32 - 1)
_QUERY_ID = st.builds(QueryId, st.integers(0, 3))
_REDUCERS = st.one_of(
    st.sampled_from(["set_name", "send_message", "init", "identity_connected", "identity_disconnected"]),
    st.text(max_size=8),
)
_QUERIES = st.one_of(
    st.sampled_from(
        ["SELECT * FROM user", "SELECT * FROM message", "SELECT * FROM user WHERE online = true",
         "SELECT message.* FROM message JOIN user ON message.sender = user.identity", "SELECT * FROM nope",
         "SELECT COUNT(*) FROM user", "DELETE FROM user", "", "SELECT * FROM user WHERE identity = :sender"]
    ),  # fmt: skip
    st.text(max_size=16),
)


def _messages(bsatn: bool) -> st.SearchStrategy[ClientMessage]:
    if bsatn:
        args: st.SearchStrategy[bytes | str] = mutated_bytes(
            st.sampled_from(["Alice", "", "x" * 40]).map(lambda n: _NAME_ARGS.encode((n,))), max_mutations=2
        )
    else:
        args = st.sampled_from(['["Alice"]', "[]", '{"name":"Bob"}', '[1]', '["a","b"]', "{", '"x"'])
    return st.one_of(
        st.builds(CallReducer, _REDUCERS, args, _U32, st.sampled_from(CallReducerFlags)),
        st.builds(Subscribe, st.lists(_QUERIES, max_size=2).map(tuple), _U32),
        st.builds(OneOffQuery, st.binary(max_size=4), _QUERIES),
        st.builds(SubscribeSingle, _QUERIES, _U32, _QUERY_ID),
        st.builds(SubscribeMulti, st.lists(_QUERIES, max_size=2).map(tuple), _U32, _QUERY_ID),
        st.builds(Unsubscribe, _U32, _QUERY_ID),
        st.builds(UnsubscribeMulti, _U32, _QUERY_ID),
    )


@st.composite
def _frame(draw: st.DrawFn, protocol: str) -> bytes | str:
    bsatn = protocol == BSATN
    msg = draw(_messages(bsatn))
    encoded: bytes | str = encode_client_message_bsatn(msg) if bsatn else encode_client_message_json(msg)
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return encoded
    raw = encoded if isinstance(encoded, bytes) else encoded.encode()
    mutated = draw(mutated_bytes(st.just(raw), max_mutations=3))
    if kind < 9:  # a mutated frame of the protocol's own kind (a text frame's bytes made UTF-8 again)
        return mutated if bsatn else mutated.decode("utf-8", errors="replace")
    return mutated.decode("utf-8", errors="replace") if bsatn else mutated  # the other kind


@st.composite
def _session(draw: st.DrawFn) -> Session:
    protocol = draw(st.sampled_from((BSATN, JSON)))
    return Session(protocol, tuple(draw(st.lists(_frame(protocol), min_size=1, max_size=4))))


def ws_sessions() -> st.SearchStrategy[Session]:
    """Sessions of 1–4 frames, in either protocol."""
    return _session()


def _probe(protocol: str) -> bytes | str:
    probe = OneOffQuery(PROBE_ID, "SELECT * FROM user")
    return encode_client_message_bsatn(probe) if protocol == BSATN else encode_client_message_json(probe)


def _is_probe_answer(msg: aiohttp.WSMessage) -> bool:
    if msg.type == aiohttp.WSMsgType.BINARY:
        decoded = decode_server_frame(msg.data)
    elif msg.type == aiohttp.WSMsgType.TEXT:
        decoded = decode_server_message_json(msg.data)
    else:
        return False
    return isinstance(decoded, OneOffQueryResponse) and decoded.message_id == PROBE_ID


async def _run_session(url: str, session: Session) -> str:
    """``"answered"`` or ``"closed <code> <reason>"``; raises AssertionError for anything else."""
    async with aiohttp.ClientSession() as http:
        sock = await http.ws_connect(url, protocols=(session.protocol,), autoping=True, max_msg_size=0)
        async with sock:
            with contextlib.suppress(ConnectionResetError):  # the server may close mid-send; we see it below
                for frame in (*session.frames, _probe(session.protocol)):
                    if isinstance(frame, bytes):
                        await sock.send_bytes(frame)
                    else:
                        await sock.send_str(frame)
            async with asyncio.timeout(HANG_SECONDS):
                while True:
                    msg = await sock.receive()
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        if _is_probe_answer(msg):
                            return "answered"
                        continue
                    if msg.type == aiohttp.WSMsgType.CLOSE:
                        code, reason = msg.data, msg.extra or ""
                        assert code != 1011 or reason, "a 1011 close must say what was wrong"
                        return f"closed {code} {reason}"
                    raise AssertionError(f"the socket ended without a close frame: {msg.type.name} {sock.exception()!r}")


@contextlib.contextmanager
def ws_harness(workdir: Path) -> Iterator[Callable[[Session], None]]:
    """The standalone server of :func:`~tests.fuzz.routes.live_server`; each session on a new socket."""
    with live_server(workdir) as live:

        def check(session: Session) -> None:
            url = f"{live.server.url.replace('http', 'ws', 1)}/v1/database/{live.db_identity}/subscribe"
            try:
                asyncio.run(_run_session(url, session))
            except TimeoutError:
                raise AssertionError(
                    f"hung: neither the probe's answer nor a close in {HANG_SECONDS:.0f} s after {session!r}\n"
                    f"{live.log_tail()}"
                ) from None
            except AssertionError as e:
                raise AssertionError(f"{e} after {session!r}\n{live.log_tail()}") from None
            live.assert_running(repr(session))

        yield check
