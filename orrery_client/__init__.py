"""Orrery's Python client SDK: a WebSocket v1 client with a local cache, like SpacetimeDB's SDKs.

::

    conn = await DbConnection.connect("http://127.0.0.1:3000", "quickstart-chat",
                                      token_store="~/.orrery/chat.token")
    conn.db.table("message").on_insert(lambda event, row: print(row.text))
    await (await conn.subscribe(["SELECT * FROM message", "SELECT * FROM user"])).applied()
    result = await conn.call_reducer("send_message", "hello")
    assert result.committed
    await conn.close()

Rows are namedtuples (attribute per column); see :mod:`orrery_client.values` for how SATS
values map to Python. Modules: :mod:`~orrery_client.connection` (the socket, subscriptions,
reducer calls), :mod:`~orrery_client.cache` (the ref-counted row cache),
:mod:`~orrery_client.schema` (row types and reducer params from the module schema).
"""

from orrery_client.cache import ClientCache, RowChange, TableCache
from orrery_client.connection import (
    ClientError,
    ConnectionLost,
    Db,
    DbConnection,
    Event,
    QueryFailed,
    ReducerEvent,
    SubscriptionFailed,
    SubscriptionHandle,
    TableHandle,
    load_token,
    save_token,
)
from orrery_client.schema import ModuleSchema, ReducerSchema, SchemaError, TableSchema
from orrery_client.values import from_python, to_python

#: What ``call_reducer`` returns: the caller's view of its reducer's TransactionUpdate.
ReducerResult = ReducerEvent

__all__ = [
    "ClientCache",
    "ClientError",
    "ConnectionLost",
    "Db",
    "DbConnection",
    "Event",
    "ModuleSchema",
    "QueryFailed",
    "ReducerEvent",
    "ReducerResult",
    "ReducerSchema",
    "RowChange",
    "SchemaError",
    "SubscriptionFailed",
    "SubscriptionHandle",
    "TableCache",
    "TableHandle",
    "TableSchema",
    "from_python",
    "load_token",
    "save_token",
    "to_python",
]
