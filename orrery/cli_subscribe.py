"""``orrery subscribe``: print a database's subscription updates as JSON lines, like ``spacetime subscribe`` 1.12.

The 1.12 CLI (``crates/cli/src/subcommands/subscribe.rs``) connects with the JSON protocol,
sends a legacy ``Subscribe`` (request id 0), waits for the ``InitialSubscription`` (printing it
with ``--print-initial-update``), then prints one line per committed transaction that touched
the subscribed rows, until ``--num-updates`` lines were printed, ``--timeout`` seconds passed
(``timed out after Ns`` on stderr, success) or the server closed the socket, before the initial
update too (``disconnected by server`` on stderr, success). Each line is a JSON object mapping
every table in the update to ``{"deletes": [...], "inserts": [...]}``, rows re-typed with the
module schema and written as typed SATS-JSON (products as objects by field name, sums
``{"variant": payload}``).

:func:`format_update` is the pure part; :func:`run_subscribe` the aiohttp shell around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TextIO

import aiohttp

from orrery.cli_errors import CliError
from orrery_client.schema import ModuleSchema
from sats import ws_v1 as ws
from sats.errors import SatsError
from sats.json import dumps, to_json_typed

__all__ = ["format_update", "run_subscribe", "subscribe_url"]

_RECV_TX_UPDATE = "protocol error: received transaction update before initial subscription update"


def _row_json(schema: ModuleSchema, table: str, row: str | bytes) -> Any:
    t = schema.tables.get(table)
    if t is None:
        raise CliError(f"error formatting response: table `{table}` not found in schema")
    try:
        return to_json_typed(t.row_type, t.raw(row), t.typespace)
    except SatsError as e:
        raise CliError(f"error formatting response: {e}") from None


def format_update(update: ws.DatabaseUpdate, schema: ModuleSchema) -> str:
    """One output line (no newline): ``{"<table>":{"deletes":[…],"inserts":[…]},…}``.

    Several table updates for one table (one per query of a legacy subscription) are merged.
    """
    out: dict[str, dict[str, list[Any]]] = {}
    for tu in update.tables:
        entry = out.setdefault(tu.table_name, {"deletes": [], "inserts": []})
        for qu in tu.updates:
            entry["deletes"] += [_row_json(schema, tu.table_name, r) for r in qu.deletes]
            entry["inserts"] += [_row_json(schema, tu.table_name, r) for r in qu.inserts]
    return dumps(out)


def subscribe_url(host_url: str, database_identity: str, confirmed: bool) -> str:
    """``ws(s)://…/v1/database/<identity>/subscribe`` for the server at ``host_url``."""
    base = host_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    url = f"{base}/v1/database/{database_identity}/subscribe"
    return url + "?confirmed=true" if confirmed else url


class _Closed(Exception):
    """The server closed the socket."""


async def _next(sock: aiohttp.ClientWebSocketResponse, err: TextIO) -> ws.ServerMessage | None:
    """The next parseable server message; None for frames that do not parse (reported, skipped)."""
    while True:
        m = await sock.receive()
        if m.type is aiohttp.WSMsgType.TEXT:
            try:
                return ws.decode_server_message_json(m.data)
            except SatsError as e:
                print(f"couldn't parse message from server: {e}", file=err, flush=True)
                return None
        if m.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
            continue
        if m.type is aiohttp.WSMsgType.ERROR:
            raise CliError(f"websocket error: {m.data}")
        raise _Closed


async def _session(
    sock: aiohttp.ClientWebSocketResponse,
    queries: Sequence[str],
    num_updates: int | None,
    print_initial: bool,
    schema: ModuleSchema,
    out: TextIO,
    err: TextIO,
) -> None:
    await sock.send_str(ws.encode_client_message_json(ws.Subscribe(tuple(queries), 0)))
    while True:
        try:
            msg = await _next(sock, err)
        except _Closed:
            # Closed before the initial update: 1.12 then reports it where the updates start.
            if num_updates is None or num_updates > 0:
                print("disconnected by server", file=err, flush=True)
            raise
        if isinstance(msg, ws.InitialSubscription):
            if print_initial:
                print(format_update(msg.database_update, schema), file=out, flush=True)
            break
        if isinstance(msg, ws.TransactionUpdate):
            if isinstance(msg.status, ws.Failed):
                raise CliError(f"encountered failed transaction: {msg.status.message}")
            raise CliError(_RECV_TX_UPDATE)
        if isinstance(msg, ws.TransactionUpdateLight):
            raise CliError(_RECV_TX_UPDATE)
    received = 0
    while num_updates is None or received < num_updates:
        try:
            msg = await _next(sock, err)
        except _Closed:
            print("disconnected by server", file=err, flush=True)
            raise
        if isinstance(msg, ws.InitialSubscription):
            raise CliError("protocol error: received a second initial subscription update")
        update = None
        if isinstance(msg, ws.TransactionUpdateLight):
            update = msg.update
        elif isinstance(msg, ws.TransactionUpdate) and isinstance(msg.status, ws.Committed):
            update = msg.status.database_update
        if update is not None:
            print(format_update(update, schema), file=out, flush=True)
            received += 1


async def run_subscribe(
    url: str,
    token: str | None,
    queries: Sequence[str],
    schema: ModuleSchema,
    *,
    num_updates: int | None,
    timeout: float | None,
    print_initial: bool,
    out: TextIO,
    err: TextIO,
) -> None:
    """Connect, subscribe and print updates (see the module docstring); CliError on failure."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        try:
            sock = await http.ws_connect(
                url, protocols=("v1.json.spacetimedb",), headers=headers, max_msg_size=0, autoping=True
            )
        except aiohttp.WSServerHandshakeError as e:
            raise CliError(f"the server refused the subscription: {e.status} {e.message}") from None
        except (aiohttp.ClientError, OSError) as e:
            raise CliError(f"cannot connect to {url}: {e}") from None
        try:
            task = _session(sock, queries, num_updates, print_initial, schema, out, err)
            if timeout is None:
                await task
            else:
                try:
                    await asyncio.wait_for(task, timeout)
                except TimeoutError:
                    print(f"timed out after {timeout:g}s", file=err, flush=True)
        except _Closed:
            pass
        finally:
            try:
                await asyncio.wait_for(sock.close(), 2.0)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
