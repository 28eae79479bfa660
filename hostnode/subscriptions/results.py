"""What the subscription engine hands the protocol layer: rows per table per query, and one
value per request outcome (client-api.md §10.2, sql-and-subscriptions.md B.3–B.7).

These are plain values with BSATN rows; encoding them as ``ServerMessage``\\ s (BSATN or JSON,
compression) is the WebSocket layer's job. Field names follow the v1 messages so the mapping
is one-to-one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueryUpdate:
    """The rows one query fragment removed and added (BSATN rows, bag multiplicity)."""

    deletes: tuple[bytes, ...] = ()
    inserts: tuple[bytes, ...] = ()

    @property
    def num_rows(self) -> int:
        """Rows in both lists."""
        return len(self.deletes) + len(self.inserts)


@dataclass(frozen=True, slots=True)
class TableUpdate:
    """One table's part of a message: one :class:`QueryUpdate` per matching query fragment."""

    table_id: int
    table_name: str
    updates: tuple[QueryUpdate, ...]

    @property
    def num_rows(self) -> int:
        """``num_rows`` of the v1 ``TableUpdate``: the rows of every update."""
        return sum(u.num_rows for u in self.updates)


#: A ``DatabaseUpdate``: the tables of one message.
DatabaseUpdate = tuple[TableUpdate, ...]


@dataclass(frozen=True, slots=True)
class SubscribeApplied:
    """``SubscribeSingle`` succeeded: ``rows`` holds every current row as inserts."""

    request_id: int
    query_id: int
    micros: int
    rows: TableUpdate


@dataclass(frozen=True, slots=True)
class UnsubscribeApplied:
    """``Unsubscribe`` succeeded: ``rows`` holds the query's current rows as deletes."""

    request_id: int
    query_id: int
    micros: int
    rows: TableUpdate


@dataclass(frozen=True, slots=True)
class SubscribeMultiApplied:
    """``SubscribeMulti`` succeeded: rows of the queries this client did not already hold."""

    request_id: int
    query_id: int
    micros: int
    update: DatabaseUpdate


@dataclass(frozen=True, slots=True)
class UnsubscribeMultiApplied:
    """``UnsubscribeMulti`` succeeded: rows of the queries the client no longer holds, as deletes."""

    request_id: int
    query_id: int
    micros: int
    update: DatabaseUpdate


@dataclass(frozen=True, slots=True)
class InitialSubscription:
    """Legacy ``Subscribe`` succeeded: the rows of every query of the new set."""

    request_id: int
    micros: int
    update: DatabaseUpdate


@dataclass(frozen=True, slots=True)
class SubscriptionError:
    """A ``SubscriptionError`` message (``table_id`` is always None in 1.12)."""

    micros: int
    request_id: int | None
    query_id: int | None
    error: str
    table_id: int | None = None


@dataclass(frozen=True, slots=True)
class TransactionFailure:
    """A request 1.12 answers with a failed ``TransactionUpdate`` (reducer name ``"<none>"``,
    status ``Failed(message)``): legacy ``Subscribe`` errors and reused query ids (B.2, B.6)."""

    message: str
    micros: int = 0


@dataclass(frozen=True, slots=True)
class OneOffResult:
    """A ``OneOffQueryResponse``: ``error`` None and one table of rows, or an error and no table."""

    micros: int
    table_name: str | None = None
    rows: tuple[bytes, ...] = ()
    error: str | None = None
    table_id: int | None = None


SubscribeSingleResult = SubscribeApplied | SubscriptionError | TransactionFailure
SubscribeMultiResult = SubscribeMultiApplied | SubscriptionError | TransactionFailure
SubscribeResult = InitialSubscription | TransactionFailure
UnsubscribeResult = UnsubscribeApplied | SubscriptionError
UnsubscribeMultiResult = UnsubscribeMultiApplied | SubscriptionError
