"""The fuzz targets: what each one feeds, to what, and which outcomes count as clean.

A :class:`Target` pairs an input strategy with a harness: a context manager that sets up
whatever the code under test needs (a real LMDB datastore, a running server) and yields the
check run on each input. A check returns when the input was handled — accepted, or refused
with the documented error of its component — and raises anything else, which is the bug:

============== ======================================================= ==========================
target         feeds                                                   clean refusal
============== ======================================================= ==========================
bsatn          mutated BSATN of random values and types                ``sats.errors.DecodeError``
sats-json      mutated SATS-JSON (text and structure) of random values ``DecodeError``
ws-bsatn       mutated binary v1 client messages                       ``WsProtocolError``
ws-json        mutated text v1 client messages                         ``WsProtocolError``
sql            SQL token soup and mutated queries, run on Part D's     ``SqlError``
               tables (real LMDB) as owner and as a stranger under RLS,
               and compiled as subscriptions
moduledef      our modules' ``__describe_module__`` output, its   ``ModuleDefError``
               bytes or its decoded structure mutated
http           random requests to ``orrery.standalone`` on 127.0.0.1   any status below 500; the
               (methods, paths, query strings, bodies, tokens)         process stays up
websocket      v1 sessions (BSATN, JSON) of fuzzed and mutated frames  the probe after them is
               to the same server's ``/subscribe``                     answered, or a close frame
============== ======================================================= ==========================

The pytest module (:mod:`tests.fuzz.test_fuzz`) runs each briefly and deterministically;
``python -m tests.fuzz`` runs them for as long as it is told (``make fuzz``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from hostnode.moduledef import (
    ModuleDefError,
    decode_raw_module_def,
    encode_raw_module_def,
    load_module_def,
    to_schema_json,
)
from hostnode.schema_build import build_schemas
from hostnode.sql import SqlError, execute_in_tx, mutates, parse_sql
from hostnode.sql.typecheck import SchemaView
from hostnode.subscriptions import compile_query
from sats.bsatn import codec_for, decode_type, encode_type
from sats.errors import DecodeError, SatsError
from sats.json import (
    from_json,
    loads,
    to_json_row,
    to_json_typed,
    to_json_untyped,
    type_from_json,
    type_to_json,
)
from sats.types import (
    IDENTITY,
    SCHEDULE_AT,
    STRING,
    U8,
    U64,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    Ref,
    SumType,
    option,
    product,
)
from sats.ws_v1 import (
    MAX_CLOSE_REASON,
    CallProcedure,
    CallProcedureFlags,
    CallReducer,
    CallReducerFlags,
    ClientMessage,
    OneOffQuery,
    QueryId,
    Subscribe,
    SubscribeMulti,
    SubscribeSingle,
    Unsubscribe,
    UnsubscribeMulti,
    WsProtocolError,
    decode_client_message_bsatn,
    decode_client_message_json,
    encode_client_message_bsatn,
    encode_client_message_json,
)
from tests.fuzz.inputs import mutated_bytes, mutated_json_text
from tests.fuzz.routes import http_harness, http_requests
from tests.fuzz.websocket import ws_harness, ws_sessions
from tests.hostnode.sql.conftest import TABLES, O, U, make_partd
from tests.modules_harness import MODULES_DIR, describe
from tests.sats.strategies import types_and_values

__all__ = ["TARGETS", "Check", "Target"]

#: Runs one input; returns if it was handled cleanly, raises otherwise.
Check = Callable[[Any], None]


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``inputs()`` builds its strategy, ``harness(workdir)`` yields its check."""

    name: str
    inputs: Callable[[], st.SearchStrategy[Any]]
    harness: Callable[[Path], contextlib.AbstractContextManager[Check]]


def _pure(check: Check) -> Callable[[Path], contextlib.AbstractContextManager[Check]]:
    """The harness of a target that needs nothing set up."""

    @contextlib.contextmanager
    def harness(workdir: Path) -> Iterator[Check]:
        yield check

    return harness


# --------------------------------------------------------------------------------------- BSATN


@st.composite
def _bsatn_inputs(draw: st.DrawFn) -> tuple[Any, ...]:
    ts, ty, value = draw(types_and_values())
    data = draw(mutated_bytes(st.just(codec_for(ty, ts).encode(value))))
    type_data = draw(mutated_bytes(st.just(encode_type(ty))))
    return ts, ty, data, type_data


def _check_bsatn(case: tuple[Any, ...]) -> None:
    ts, ty, data, type_data = case
    with contextlib.suppress(DecodeError):
        codec_for(ty, ts).decode_all(data)
    try:
        decoded = decode_type(type_data)
    except DecodeError:
        return
    # A type read off the wire may name refs the typespace lacks: compiling it is a SatsError.
    try:
        codec = codec_for(decoded, ts)
    except SatsError:
        return
    with contextlib.suppress(DecodeError):
        codec.decode_all(data)


# --------------------------------------------------------------------------------------- SATS-JSON

_JSON_WRITERS = (to_json_typed, to_json_untyped, to_json_row)


@st.composite
def _sats_json_inputs(draw: st.DrawFn) -> tuple[Any, ...]:
    ts, ty, value = draw(types_and_values(named=True))
    write = draw(st.sampled_from(_JSON_WRITERS))
    text = draw(mutated_json_text(st.just(write(ty, value, ts))))
    type_text = draw(mutated_json_text(st.just(type_to_json(ty))))
    return ts, ty, text, type_text


def _check_sats_json(case: tuple[Any, ...]) -> None:
    ts, ty, text, type_text = case
    with contextlib.suppress(DecodeError):
        from_json(ty, loads(text), ts)
    with contextlib.suppress(DecodeError):
        type_from_json(loads(type_text))


# --------------------------------------------------------------------------------------- WebSocket

_U32 = st.integers(0, 2**32 - 1)
_QUERY_ID = st.builds(QueryId, _U32)
_WORDS = st.text(max_size=12)
_QUERIES = st.lists(_WORDS, max_size=3).map(tuple)


def _client_messages(args: st.SearchStrategy[Any]) -> st.SearchStrategy[ClientMessage]:
    return st.one_of(
        st.builds(CallReducer, _WORDS, args, _U32, st.sampled_from(CallReducerFlags)),
        st.builds(Subscribe, _QUERIES, _U32),
        st.builds(OneOffQuery, st.binary(max_size=16), _WORDS),
        st.builds(SubscribeSingle, _WORDS, _U32, _QUERY_ID),
        st.builds(SubscribeMulti, _QUERIES, _U32, _QUERY_ID),
        st.builds(Unsubscribe, _U32, _QUERY_ID),
        st.builds(UnsubscribeMulti, _U32, _QUERY_ID),
        st.builds(CallProcedure, _WORDS, args, _U32, st.just(CallProcedureFlags.DEFAULT)),
    )


def _ws_bsatn_inputs() -> st.SearchStrategy[bytes]:
    return mutated_bytes(_client_messages(st.binary(max_size=12)).map(encode_client_message_bsatn))


def _ws_json_inputs() -> st.SearchStrategy[str | bytes]:
    json_args = st.sampled_from(['[]', '["Alice"]', '{"name":"Alice"}', "[1,", ""])
    return mutated_json_text(_client_messages(json_args).map(encode_client_message_json).map(loads))


def _ws_refusal_is_clean(e: WsProtocolError) -> None:
    """The close frame quotes the error: it must say something and fit the frame."""
    reason = e.close_reason
    assert reason and len(reason.encode()) <= MAX_CLOSE_REASON, repr(reason)


def _check_ws_bsatn(data: bytes) -> None:
    try:
        decode_client_message_bsatn(data)
    except WsProtocolError as e:
        _ws_refusal_is_clean(e)


def _check_ws_json(text: str | bytes) -> None:
    try:
        decode_client_message_json(text)
    except WsProtocolError as e:
        _ws_refusal_is_clean(e)


# --------------------------------------------------------------------------------------- SQL

#: Part D's tables and columns, the keywords of the dialect, and literals at the edges of types.
_SQL_TOKENS = (
    "SELECT", "*", "FROM", "WHERE", "JOIN", "ON", "AND", "OR", "NOT", "LIMIT", "COUNT", "COUNT(*)",
    "AS", "INSERT", "INTO", "VALUES", "UPDATE", "SET", "DELETE", "SHOW", "row_limit", "(", ")",
    ",", ".", ";", "=", "!=", "<>", "<", "<=", ">", ">=", "+", "-", "TRUE", "FALSE", "NULL",
    ":sender", "person", "pet", "msg", "secret", "st_client", "p", "q", "p.*", "pet.*", "id",
    "name", "age", "owner", "nick", "owner_id", "kind", "sender", "text", "sent", "answer",
    "person.id", "pet.owner_id", "p.id", "q.id", "0", "1", "-1", "255", "256", "-129",
    "18446744073709551616", "1e3", "1.5", "-0.0", "0x00", "0xff", "'alice'", "''", "'", '"',
    "X'00'", "0x" + "ab" * 32, "'\x00'", "`person`", "\"person\"",
)  # fmt: skip

#: Well-formed statements the mutations start from.
_SQL_SEEDS = (
    "SELECT * FROM person",
    "SELECT * FROM person WHERE id = 1",
    "SELECT person.* FROM person JOIN pet ON person.id = pet.owner_id WHERE pet.kind = 'cat'",
    "SELECT p.* FROM person AS p JOIN person AS q ON p.id = q.id",
    "SELECT COUNT(*) AS n FROM pet WHERE owner_id > 0 AND kind <> 'dog' LIMIT 2",
    "SELECT name, age FROM person WHERE owner = :sender OR age >= 30",
    "SELECT * FROM msg WHERE sender = 0x" + "00" * 32,
    "INSERT INTO pet (id, owner_id, kind) VALUES (20, 1, 'eel')",
    "UPDATE person SET age = 36 WHERE id = 1",
    "DELETE FROM pet WHERE id = 10",
    "SET row_limit = 5",
    "SHOW row_limit",
)

#: Row-level security as the stranger meets it (sql-and-subscriptions.md Part B).
_RLS = (
    "SELECT * FROM person WHERE person.owner = :sender",
    "SELECT pet.* FROM pet JOIN person ON pet.owner_id = person.id",
)


@st.composite
def _mutated_sql(draw: st.DrawFn) -> str:
    tokens = draw(st.sampled_from(_SQL_SEEDS)).split(" ")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(tokens)))
        token = draw(st.sampled_from(_SQL_TOKENS))
        change = draw(st.sampled_from(("insert", "replace", "delete")))
        if change == "insert":
            tokens.insert(at, token)
        elif tokens and at < len(tokens):
            tokens[at : at + 1] = [token] if change == "replace" else []
    return " ".join(tokens)


def _sql_inputs() -> st.SearchStrategy[str]:
    soup = st.lists(st.sampled_from(_SQL_TOKENS), min_size=1, max_size=16).map(" ".join)
    # Punctuation and operators: where sqlglot's parser raises more than its ParseError.
    symbols = st.text(alphabet="{}[]()=<>!:;.,'\"`$@#%^&*+-/\\|?~ 0aZ_", max_size=12)
    return st.one_of(_mutated_sql(), _mutated_sql(), soup, symbols, st.text(max_size=40))


@contextlib.contextmanager
def _sql_harness(workdir: Path) -> Iterator[Check]:
    """Part D's database on a real LMDB; statements run as the owner and as a stranger, each in a
    transaction rolled back after (so a fuzzed DML statement never grows the tables)."""
    db = make_partd(workdir / "partd", _RLS)

    def check(text: str) -> None:
        # The same text as a subscription (its own grammar, B.1) and as a one-off query.
        for caller in (O, U):
            view = SchemaView(TABLES, caller=caller, is_owner=caller == O, rls=db.rls)
            for one_off in (False, True):
                with contextlib.suppress(SqlError):
                    compile_query(text, view, one_off=one_off)
        try:
            stmt = parse_sql(text)
        except SqlError:
            return
        for caller in (O, U):
            if mutates(stmt):
                tx = db.ds.begin_mut()
                try:
                    execute_in_tx(tx, stmt, caller, is_owner=caller == O, rls=db.rls)
                except SqlError:
                    pass
                finally:
                    tx.rollback()
            else:
                with db.ds.begin_read() as rtx, contextlib.suppress(SqlError):
                    execute_in_tx(rtx, stmt, caller, is_owner=caller == O, rls=db.rls)

    try:
        yield check
    finally:
        db.ds.close()


# --------------------------------------------------------------------------------------- module defs


@functools.cache
def _module_defs() -> tuple[bytes, ...]:
    """What ``__describe_module__`` of each committed module writes (run once, in wasmtime)."""
    names = ("quickstart-chat", "transfer", "module-test")
    return tuple(describe(MODULES_DIR / n / f"{n}.wasm").sink for n in names)


#: Types a mutation puts in place of another: the special ones, refs in and out of range.
_SOME_TYPES: tuple[AlgebraicType, ...] = (
    U8, U64, STRING, IDENTITY, SCHEDULE_AT, Ref(0), Ref(1), Ref(999), product(), option(U8), ArrayType(U8),
    product(("id", U64)), SumType(()),
)
_SOME_PRODUCTS = tuple(t for t in _SOME_TYPES if isinstance(t, ProductType))


@st.composite
def _mutate_structure(draw: st.DrawFn, value: Any) -> Any:
    """``value`` (a raw module def, or any part of it) with one field, element or leaf changed."""
    if isinstance(value, AlgebraicType) and (isinstance(value, (PrimitiveType, Ref)) or draw(st.integers(0, 3)) == 0):
        # A product stays a product: reducer params are typed so, and the encoder relies on it.
        return draw(st.sampled_from(_SOME_PRODUCTS if isinstance(value, ProductType) else _SOME_TYPES))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        if not names:
            return value
        name = draw(st.sampled_from(names))
        return dataclasses.replace(value, **{name: draw(_mutate_structure(getattr(value, name)))})
    if isinstance(value, (tuple, list)):
        items: list[Any] = list(value)
        if draw(st.booleans()) and items:
            i = draw(st.integers(0, len(items) - 1))
            items[i] = draw(_mutate_structure(items[i]))
        else:
            shapes: list[list[Any]] = [items[:-1], items + items[-1:], items[::-1], items + items, []]
            items = draw(st.sampled_from(shapes))
        return type(value)(items)
    if isinstance(value, bool):
        return not value
    if isinstance(value, enum.IntEnum):
        return draw(st.sampled_from(type(value)))
    if isinstance(value, int):
        return draw(st.sampled_from(sorted({0, 1, 2, 3, 7, 255, 65535, value + 1, max(0, value - 1)})))
    if isinstance(value, str):
        return draw(st.one_of(st.sampled_from(["", value + value, "x", value.upper(), "init", "st_client", "a b"]),
                              st.text(max_size=6)))  # fmt: skip
    return value


@st.composite
def _structurally_mutated_defs(draw: st.DrawFn) -> bytes:
    seed = draw(st.sampled_from(_module_defs()))
    raw = decode_raw_module_def(seed)
    for _ in range(draw(st.integers(1, 3))):
        raw = draw(_mutate_structure(raw))
    try:
        return encode_raw_module_def(raw)
    except (SatsError, ModuleDefError, ValueError, OverflowError):
        return seed  # a change the wire format cannot carry (e.g. a negative u32) tells nothing


def _moduledef_inputs() -> st.SearchStrategy[bytes]:
    return st.one_of(_structurally_mutated_defs(), mutated_bytes(st.sampled_from(_module_defs()), max_mutations=2))


def _check_moduledef(data: bytes) -> None:
    try:
        mdef = load_module_def(data)
    except ModuleDefError:
        return
    # A definition that validates must also be servable (/schema) and buildable into tables.
    to_schema_json(mdef)
    build_schemas(mdef)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("bsatn", _bsatn_inputs, _pure(_check_bsatn)),
        Target("sats-json", _sats_json_inputs, _pure(_check_sats_json)),
        Target("ws-bsatn", _ws_bsatn_inputs, _pure(_check_ws_bsatn)),
        Target("ws-json", _ws_json_inputs, _pure(_check_ws_json)),
        Target("sql", _sql_inputs, _sql_harness),
        Target("moduledef", _moduledef_inputs, _pure(_check_moduledef)),
        Target("http", http_requests, http_harness),
        Target("websocket", ws_sessions, ws_harness),
    )
}
