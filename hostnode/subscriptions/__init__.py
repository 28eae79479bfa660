"""The subscription engine (``sql-and-subscriptions.md`` Part B/C, ``client-api.md`` §11): pure,
no sockets — requests in, row updates out.

* :mod:`~hostnode.subscriptions.compile` — the B.1 grammar and rejection texts, ``SELECT * FROM
  *``, query identity (B.2), RLS expansion into fragments (via :mod:`hostnode.sql`).
* :mod:`~hostnode.subscriptions.delta` — per-commit evaluation of one fragment from the
  transaction's net changes and index lookups (never re-running the query), with a row meter.
* :mod:`~hostnode.subscriptions.manager` — per-connection query sets and ref-counts, the
  request outcomes of B.3/B.5/B.6, each commit evaluated once per query and grouped by
  identical update.
* :mod:`~hostnode.subscriptions.oneoff` — ``OneOffQuery`` (B.7).
* :mod:`~hostnode.subscriptions.results` — the values handed to the protocol layer.
* :mod:`~hostnode.subscriptions.hooks` — the writer-thread read view and the ``on_commit`` hook.
* :mod:`~hostnode.subscriptions.wire` — results as :mod:`sats.ws_v1` messages (BSATN or JSON rows).

Typical use on the database's writer thread::

    mgr = SubscriptionManager.for_database(db)
    attach(mgr, db, deliver)               # deliver(outcome, CommitUpdates | None)
    mgr.connect(conn, identity, connection_id)
    with writer_view(db) as tx:
        reply = mgr.subscribe_multi(conn, tx, ["SELECT * FROM user"], request_id=1, query_id=7)
    # enqueue `reply` before the next commit's updates
"""

from hostnode.subscriptions.compile import CompiledQuery, QueryKey, compile_query, is_all_tables
from hostnode.subscriptions.hooks import attach, writer_view
from hostnode.subscriptions.manager import CommitUpdates, SubscriptionManager
from hostnode.subscriptions.oneoff import one_off_query
from hostnode.subscriptions.results import (
    DatabaseUpdate,
    InitialSubscription,
    OneOffResult,
    QueryUpdate,
    SubscribeApplied,
    SubscribeMultiApplied,
    SubscriptionError,
    TableUpdate,
    TransactionFailure,
    UnsubscribeApplied,
    UnsubscribeMultiApplied,
)

__all__ = [
    "CommitUpdates",
    "CompiledQuery",
    "DatabaseUpdate",
    "InitialSubscription",
    "OneOffResult",
    "QueryKey",
    "QueryUpdate",
    "SubscribeApplied",
    "SubscribeMultiApplied",
    "SubscriptionError",
    "SubscriptionManager",
    "TableUpdate",
    "TransactionFailure",
    "UnsubscribeApplied",
    "UnsubscribeMultiApplied",
    "attach",
    "compile_query",
    "is_all_tables",
    "one_off_query",
    "writer_view",
]
