"""The engine's results as :mod:`sats.ws_v1` server messages, for one wire format.

The engine produces format-free values (BSATN rows in :mod:`~hostnode.subscriptions.results`)
so one commit's update can be encoded once per protocol for every connection that shares it.
A :data:`RowEncoder` turns one table's rows into that format's row list: :func:`bsatn_rows`
for ``v1.bsatn.spacetimedb``, :func:`json_rows` (given the table schemas) for
``v1.json.spacetimedb``. ``TransactionUpdate`` itself (status, caller, reducer metadata) is
assembled by the connection layer around :func:`database_update`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from hostnode.schema import TableSchema
from hostnode.subscriptions import results as r
from sats import ws_v1 as ws

#: ``(table_id, rows) → row list`` of one wire format.
RowEncoder = Callable[[int, Sequence[bytes]], ws.RowList]

EngineReply = (
    r.SubscribeApplied
    | r.UnsubscribeApplied
    | r.SubscribeMultiApplied
    | r.UnsubscribeMultiApplied
    | r.InitialSubscription
    | r.SubscriptionError
)


def bsatn_rows(table_id: int, rows: Sequence[bytes]) -> ws.RowList:
    """The binary protocol's row list (the rows are already BSATN)."""
    return ws.BsatnRowList.from_rows(rows)


def json_rows(tables: Mapping[int, TableSchema]) -> RowEncoder:
    """The JSON protocol's row lists, decoding rows with ``tables[table_id]``'s row type."""

    def encode(table_id: int, rows: Sequence[bytes]) -> ws.RowList:
        t = tables[table_id]
        return ws.rows_to_json(t.row_type, rows, t.typespace)

    return encode


def table_update(t: r.TableUpdate, rows: RowEncoder) -> ws.TableUpdate:
    """One table's updates in the wire format."""
    tid = t.table_id
    return ws.TableUpdate(
        tid, t.table_name, tuple(ws.QueryUpdate(rows(tid, u.deletes), rows(tid, u.inserts)) for u in t.updates)
    )


def database_update(update: r.DatabaseUpdate, rows: RowEncoder) -> ws.DatabaseUpdate:
    """A ``DatabaseUpdate`` (e.g. ``CommitUpdates.update_for(conn)``) in the wire format."""
    return ws.DatabaseUpdate(tuple(table_update(t, rows) for t in update))


def _subscribe_rows(t: r.TableUpdate, rows: RowEncoder) -> ws.SubscribeRows:
    return ws.SubscribeRows(t.table_id, t.table_name, table_update(t, rows))


def reply(result: EngineReply, rows: RowEncoder) -> ws.ServerMessage:
    """The server message answering a subscribe/unsubscribe request (``TransactionFailure``
    is not here: it becomes a failed ``TransactionUpdate`` the connection layer builds)."""
    if isinstance(result, r.SubscribeApplied):
        return ws.SubscribeApplied(result.request_id, result.micros, ws.QueryId(result.query_id), _subscribe_rows(result.rows, rows))
    if isinstance(result, r.UnsubscribeApplied):
        return ws.UnsubscribeApplied(
            result.request_id, result.micros, ws.QueryId(result.query_id), _subscribe_rows(result.rows, rows)
        )
    if isinstance(result, r.SubscribeMultiApplied):
        return ws.SubscribeMultiApplied(
            result.request_id, result.micros, ws.QueryId(result.query_id), database_update(result.update, rows)
        )
    if isinstance(result, r.UnsubscribeMultiApplied):
        return ws.UnsubscribeMultiApplied(
            result.request_id, result.micros, ws.QueryId(result.query_id), database_update(result.update, rows)
        )
    if isinstance(result, r.InitialSubscription):
        return ws.InitialSubscription(
            database_update(result.update, rows), result.request_id, ws.TimeDuration(result.micros)
        )
    return ws.SubscriptionError(result.micros, result.request_id, result.query_id, result.table_id, result.error)


def one_off_response(message_id: bytes, result: r.OneOffResult, rows: RowEncoder) -> ws.OneOffQueryResponse:
    """The ``OneOffQueryResponse`` for ``result``: one table of rows, or the error and none."""
    duration = ws.TimeDuration(result.micros)
    if result.error is not None or result.table_name is None or result.table_id is None:
        return ws.OneOffQueryResponse(message_id, result.error or "", (), duration)
    table = ws.OneOffTable(result.table_name, rows(result.table_id, result.rows))
    return ws.OneOffQueryResponse(message_id, None, (table,), duration)
