"""The subscriptions of one database: who holds which queries, and what each commit sends whom.

:class:`SubscriptionManager` keeps, per connection, its query sets (``query_id`` → queries,
plus the legacy ``Subscribe`` set) and a ref-count per query (B.2), and, per database, one
entry per distinct query (:data:`~hostnode.subscriptions.compile.QueryKey`) with the set of
connections holding it. A commit is evaluated once per affected query, from the transaction's
own changes (:mod:`hostnode.subscriptions.delta`), however many connections or query ids hold
it; connections whose matching queries are the same receive the very same update object, so
the protocol layer can encode it once per (query set, protocol, compression).

Threading and consistency contract. Every method must run on the database's writer thread,
between transactions, and gets ``tx``: a read view of the state *as of the last commit the
subscribers have been (or will be) sent* — :func:`~hostnode.subscriptions.hooks.writer_view`
gives exactly that (a rolled-back ``MutTx`` over the live state). Subscribe responses are
then consistent with the stream of commit updates: every earlier commit is in the initial
rows, no later one is. :meth:`SubscriptionManager.on_commit` needs the view right after the
commit it evaluates (before the next one). Reading through ``db.read()`` instead is only
correct after ``db.checkpoint()`` with no commit in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hostnode.schema import TableSchema
from hostnode.sql.errors import SqlError
from hostnode.sql.execute import query_limits, system_var
from hostnode.sql.limits import QueryMeter
from hostnode.sql.plan import build_plan
from hostnode.sql.typecheck import Cmp, Col, Const, SchemaView
from hostnode.subscriptions.compile import (
    CompiledQuery,
    QueryError,
    QueryKey,
    compile_queries,
    compile_query,
    executing,
)
from hostnode.subscriptions.delta import FragmentEvaluator, Meter, TxDelta
from hostnode.subscriptions.oneoff import one_off_query
from hostnode.subscriptions.results import (
    DatabaseUpdate,
    InitialSubscription,
    OneOffResult,
    QueryUpdate,
    SubscribeApplied,
    SubscribeMultiApplied,
    SubscribeMultiResult,
    SubscribeResult,
    SubscribeSingleResult,
    SubscriptionError,
    TableUpdate,
    TransactionFailure,
    UnsubscribeApplied,
    UnsubscribeMultiApplied,
    UnsubscribeMultiResult,
    UnsubscribeResult,
)
from hostnode.txdata import TxData
from sats.bsatn import codec_for
from sats.identity import Identity

log = logging.getLogger(__name__)

#: A connection handle: any hashable the caller uses to tell its connections apart.
Conn = Hashable

EVAL_ERROR = "Internal error evaluating queries"


@dataclass(slots=True)
class _Query:
    """One distinct query and the connections holding it."""

    compiled: CompiledQuery
    evaluators: tuple[FragmentEvaluator, ...]
    subscribers: set[Conn] = field(default_factory=set)
    #: ``(column, value)`` when the query is one table filtered by ``column = value``.
    point: tuple[int, Any] | None = None

    @classmethod
    def build(cls, cq: CompiledQuery, subscribers: set[Conn] | None = None) -> _Query:
        """An entry for ``cq`` with its fragment evaluators."""
        evaluators = tuple(FragmentEvaluator.build(f) for f in cq.fragments)
        return cls(cq, evaluators, set() if subscribers is None else subscribers)

    def rows(self, tx: Any, meter: Meter) -> list[tuple[FragmentEvaluator, list[bytes]]]:
        """Current rows per fragment."""
        return [(ev, ev.initial(tx, meter)) for ev in self.evaluators]


@dataclass(slots=True)
class _Client:
    identity: Identity
    connection_id: int
    sets: dict[int, tuple[QueryKey, ...]] = field(default_factory=dict)
    legacy: tuple[QueryKey, ...] = ()
    refs: dict[QueryKey, int] = field(default_factory=dict)

    def describe(self) -> str:
        return f"ClientActorId {{ identity: {self.identity.to_hex()}, connection_id: {self.connection_id:032x} }}"


@dataclass(slots=True)
class CommitUpdates:
    """What one commit sends: ``groups`` pairs the connections that hold the same matching
    queries with their (shared) update; connections with no matching change appear nowhere.
    ``errors``: connections whose queries failed to evaluate (their subscriptions are dropped,
    and they get this message instead of an update)."""

    groups: list[tuple[frozenset[Conn], DatabaseUpdate]] = field(default_factory=list)
    errors: list[tuple[Conn, SubscriptionError]] = field(default_factory=list)
    rows_evaluated: int = 0
    queries_evaluated: int = 0
    _by_conn: dict[Conn, DatabaseUpdate] = field(default_factory=dict)

    def update_for(self, conn: Conn) -> DatabaseUpdate:
        """``conn``'s tables for this commit; ``()`` when nothing it holds changed (the reducer
        caller still gets a ``TransactionUpdate`` with these empty tables, §11)."""
        return self._by_conn.get(conn, ())

    @property
    def connections(self) -> frozenset[Conn]:
        """Every connection that gets an update."""
        return frozenset(self._by_conn)


class SubscriptionManager:
    """The subscription state of one database (module docstring: threading and consistency).

    ``owner``: the database owner (sees private tables, bypasses RLS); ``rls``: the module's
    row-level-security rules (``ModuleDef.row_level_security``).
    """

    def __init__(self, *, owner: Identity, rls: Sequence[str] = ()) -> None:
        self.owner = owner
        self.rls = tuple(rls)
        self._clients: dict[Conn, _Client] = {}
        self._queries: dict[QueryKey, _Query] = {}
        #: Queries to evaluate whenever a table changes.
        self._by_table: dict[int, set[QueryKey]] = {}
        #: Single-table ``col = value`` queries, evaluated only when a changed row of their
        #: table has that value: table id → (schema, column → value → queries).
        self._by_point: dict[int, tuple[TableSchema, dict[int, dict[Any, set[QueryKey]]]]] = {}
        #: Rows examined by incremental evaluation since creation (changed rows + lookups).
        self.rows_evaluated = 0
        #: Query evaluations run for commits since creation (one per query per commit).
        self.queries_evaluated = 0
        #: Rows read computing subscribers' initial (and unsubscribe) rows since creation.
        self.rows_scanned_initial = 0

    @classmethod
    def for_database(cls, db: Any) -> SubscriptionManager:
        """A manager for a :class:`~hostnode.database.Database` (its owner and RLS rules)."""
        return cls(owner=db.owner, rls=db.row_level_security)

    # --- connections --------------------------------------------------------------------------

    def connect(self, conn: Conn, identity: Identity, connection_id: int = 0) -> None:
        """Register a connection (before any request from it)."""
        if conn in self._clients:
            raise ValueError(f"connection {conn!r} is already registered")
        self._clients[conn] = _Client(identity, connection_id)

    def disconnect(self, conn: Conn) -> None:
        """Drop every subscription of ``conn`` (unknown connections are ignored)."""
        client = self._clients.pop(conn, None)
        if client is None:
            return
        for key in client.refs:
            self._release(conn, key)

    def queries_of(self, conn: Conn) -> frozenset[QueryKey]:
        """The queries ``conn`` currently holds."""
        return frozenset(self._clients[conn].refs)

    @property
    def num_queries(self) -> int:
        """Distinct live queries (each is evaluated at most once per commit)."""
        return len(self._queries)

    def subscribed_connections(self) -> int:
        """Connections holding at least one query (any thread: counts a snapshot)."""
        return sum(1 for c in list(self._clients.values()) if c.refs)

    def _view(self, tx: Any, client: _Client) -> SchemaView:
        return SchemaView(tx.tables(), caller=client.identity, is_owner=client.identity == self.owner, rls=self.rls)

    # --- query registry -----------------------------------------------------------------------

    def _acquire(self, conn: Conn, query: _Query) -> None:
        """Count one more hold of ``query`` by ``conn`` (registering the query on first use)."""
        cq = query.compiled
        q = self._queries.get(cq.key)
        if q is None:
            q = self._register(query)
        client = self._clients[conn]
        n = client.refs.get(cq.key, 0)
        client.refs[cq.key] = n + 1
        q.subscribers.add(conn)

    def _register(self, q: _Query) -> _Query:
        """Make ``q`` the live entry of its key and index it by the tables it reads."""
        cq = q.compiled
        self._queries[cq.key] = q
        q.point = _point_filter(cq)
        if q.point is not None:
            col, value = q.point
            entry = self._by_point.setdefault(cq.table_id, (cq.table, {}))
            entry[1].setdefault(col, {}).setdefault(value, set()).add(cq.key)
        else:
            for tid in cq.table_ids:
                self._by_table.setdefault(tid, set()).add(cq.key)
        return q

    def _drop_ref(self, conn: Conn, key: QueryKey) -> bool:
        """One hold fewer; True when ``conn`` no longer holds ``key`` at all."""
        client = self._clients[conn]
        n = client.refs[key] - 1
        if n:
            client.refs[key] = n
            return False
        del client.refs[key]
        self._release(conn, key)
        return True

    def _release(self, conn: Conn, key: QueryKey) -> None:
        q = self._queries.get(key)
        if q is None:
            return
        q.subscribers.discard(conn)
        if not q.subscribers:
            del self._queries[key]
            if q.point is not None:
                tid = q.compiled.table_id
                col, value = q.point
                cols = self._by_point[tid][1]
                holders = cols[col][value]
                holders.discard(key)
                if not holders:
                    del cols[col][value]
                    if not cols[col]:
                        del cols[col]
                        if not cols:
                            del self._by_point[tid]
                return
            for tid in q.compiled.table_ids:
                keys = self._by_table.get(tid)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._by_table[tid]

    def _registered(self, cq: CompiledQuery) -> _Query:
        """The live entry for ``cq``'s key, or a detached one (not registered) to evaluate."""
        q = self._queries.get(cq.key)
        return q if q is not None else _Query.build(cq)

    def _row_limit_error(self, tx: Any, client: _Client, queries: Iterable[CompiledQuery]) -> str | None:
        if client.identity == self.owner:
            return None
        limit = system_var(tx, "row_limit")
        if limit is None:
            return None
        for cq in queries:
            estimate = sum(build_plan(f, tx.row_count).estimate for f in cq.fragments)
            if estimate > limit:
                return f"Estimated cardinality ({estimate} rows) exceeds limit ({limit} rows)"
        return None

    def _id_in_use(self, client: _Client, query_id: int, start: int) -> TransactionFailure:
        return TransactionFailure(
            f"Subscription with id QueryId {{ id: {query_id} }} already exists for client: {client.describe()}",
            _micros(start),
        )

    # --- subscribe ----------------------------------------------------------------------------

    def subscribe_single(self, conn: Conn, tx: Any, sql: str, request_id: int, query_id: int) -> SubscribeSingleResult:
        """``SubscribeSingle`` (B.3): all current rows of ``sql`` in one QueryUpdate, even if
        the client already holds the query. The text is used untrimmed."""
        start = time.perf_counter_ns()
        client = self._clients[conn]
        if query_id in client.sets:
            return self._id_in_use(client, query_id, start)
        try:
            cq = compile_query(sql, self._view(tx, client))
        except SqlError as e:
            return SubscriptionError(_micros(start), request_id, query_id, executing(e.message, sql))
        limited = self._row_limit_error(tx, client, [cq])
        if limited is not None:
            return SubscriptionError(_micros(start), request_id, query_id, executing(limited, sql))
        q = self._registered(cq)
        try:
            rows = [r for _, frag_rows in q.rows(tx, self._initial_meter(tx, client)) for r in frag_rows]
        except SqlError as e:  # over a query limit
            return SubscriptionError(_micros(start), request_id, query_id, executing(e.message, sql))
        self._acquire(conn, q)
        client.sets[query_id] = (cq.key,)
        table = TableUpdate(cq.table_id, cq.table_name, (QueryUpdate((), tuple(rows)),))
        return SubscribeApplied(request_id, query_id, _micros(start), table)

    def subscribe_multi(
        self, conn: Conn, tx: Any, sqls: Sequence[str], request_id: int, query_id: int
    ) -> SubscribeMultiResult:
        """``SubscribeMulti`` (B.3): all-or-nothing; rows only of queries new to this client."""
        start = time.perf_counter_ns()
        client = self._clients[conn]
        if query_id in client.sets:
            return self._id_in_use(client, query_id, start)
        try:
            compiled = compile_queries(sqls, self._view(tx, client))
        except QueryError as e:
            return SubscriptionError(_micros(start), request_id, query_id, e.executing)
        if self._row_limit_error(tx, client, compiled) is not None:
            return SubscriptionError(_micros(start), request_id, query_id, EVAL_ERROR)
        queries = [self._registered(cq) for cq in compiled]
        fresh = [q for q in queries if q.compiled.key not in client.refs]
        try:
            update = self._initial_update(tx, fresh, meter=self._initial_meter(tx, client))
        except SqlError as e:  # over a query limit
            return SubscriptionError(_micros(start), request_id, query_id, e.message)
        except Exception:  # an evaluation failure must not leave a half-made set behind
            log.exception("evaluating SubscribeMulti %r", sqls)
            return SubscriptionError(_micros(start), request_id, query_id, EVAL_ERROR)
        for q in queries:
            self._acquire(conn, q)
        client.sets[query_id] = tuple(cq.key for cq in compiled)
        return SubscribeMultiApplied(request_id, query_id, _micros(start), update)

    def subscribe(self, conn: Conn, tx: Any, sqls: Sequence[str], request_id: int) -> SubscribeResult:
        """Legacy ``Subscribe``: replaces the connection's legacy set; rows of every query in
        the new set. Failures are a failed ``TransactionUpdate`` (B.6)."""
        start = time.perf_counter_ns()
        client = self._clients[conn]
        try:
            compiled = compile_queries(sqls, self._view(tx, client))
        except QueryError as e:
            return TransactionFailure(e.executing, _micros(start))
        limited = self._row_limit_error(tx, client, compiled)
        if limited is not None:
            return TransactionFailure(limited, _micros(start))
        queries = [self._registered(cq) for cq in compiled]
        try:
            update = self._initial_update(tx, queries, meter=self._initial_meter(tx, client))
        except SqlError as e:  # over a query limit
            return TransactionFailure(e.message, _micros(start))
        old = client.legacy
        for q in queries:  # acquire first, so queries in both sets stay registered
            self._acquire(conn, q)
        client.legacy = tuple(cq.key for cq in compiled)
        for key in old:
            self._drop_ref(conn, key)
        return InitialSubscription(request_id, _micros(start), update)

    def _initial_meter(self, tx: Any, client: _Client) -> Meter:
        """The meter of a subscription's initial rows: a non-owner's run under the query limits."""
        return Meter(limits=None if client.identity == self.owner else QueryMeter(query_limits(tx)))

    def _initial_update(
        self, tx: Any, queries: Sequence[_Query], *, deletes: bool = False, meter: Meter | None = None
    ) -> DatabaseUpdate:
        """One TableUpdate per fragment (B.3), skipping fragments that read an empty table;
        ``meter`` (its limits) may stop the evaluation with a SqlError."""
        out: list[TableUpdate] = []
        meter = meter or Meter()
        for q in queries:
            cq = q.compiled
            for ev, rows in q.rows(tx, meter):
                if any(tx.row_count(tid) == 0 for tid in ev.table_ids):
                    continue
                qu = QueryUpdate(tuple(rows), ()) if deletes else QueryUpdate((), tuple(rows))
                out.append(TableUpdate(cq.table_id, cq.table_name, (qu,)))
        self.rows_scanned_initial += meter.rows
        return tuple(out)

    # --- unsubscribe --------------------------------------------------------------------------

    def _not_found(self, start: int, request_id: int, query_id: int) -> SubscriptionError:
        return SubscriptionError(
            _micros(start), request_id, query_id, f"Subscription not found: QueryId {{ id: {query_id} }}"
        )

    def unsubscribe(self, conn: Conn, tx: Any, request_id: int, query_id: int) -> UnsubscribeResult:
        """``Unsubscribe`` (B.5): the query's current rows as deletes. As in 1.12, when the
        client still holds the same query under another id the answer is ``Internal error``
        (the subscription is removed all the same)."""
        start = time.perf_counter_ns()
        client = self._clients[conn]
        keys = client.sets.pop(query_id, None)
        if keys is None:
            return self._not_found(start, request_id, query_id)
        rows: list[bytes] = []
        q = self._queries[keys[0]] if len(keys) == 1 else None
        if q is not None:
            rows = [r for _, frag_rows in q.rows(tx, Meter()) for r in frag_rows]
        gone = [self._drop_ref(conn, key) for key in keys]
        if q is None or not all(gone):
            return SubscriptionError(_micros(start), request_id, query_id, "Internal error")
        cq = q.compiled
        table = TableUpdate(cq.table_id, cq.table_name, (QueryUpdate(tuple(rows), ()),))
        return UnsubscribeApplied(request_id, query_id, _micros(start), table)

    def unsubscribe_multi(self, conn: Conn, tx: Any, request_id: int, query_id: int) -> UnsubscribeMultiResult:
        """``UnsubscribeMulti`` (B.5): rows of the queries the client no longer holds, as deletes."""
        start = time.perf_counter_ns()
        client = self._clients[conn]
        keys = client.sets.pop(query_id, None)
        if keys is None:
            return self._not_found(start, request_id, query_id)
        last = [self._queries[k] for k in keys if client.refs.get(k) == 1]
        update = self._initial_update(tx, last, deletes=True)
        for key in keys:
            self._drop_ref(conn, key)
        return UnsubscribeMultiApplied(request_id, query_id, _micros(start), update)

    # --- one-off ------------------------------------------------------------------------------

    def one_off(self, tx: Any, caller: Identity, sql: str) -> OneOffResult:
        """``OneOffQuery`` (B.7) as ``caller`` (needs no connection)."""
        return one_off_query(tx, sql, caller, owner=self.owner, rls=self.rls)

    # --- commits ------------------------------------------------------------------------------

    def affected_by(self, txdata: TxData) -> bool:
        """Whether any live query reads a table ``txdata`` changed (if not, :meth:`on_commit`
        would return an empty result: callers can skip opening a read view)."""
        by_table = self._by_table
        by_point = self._by_point
        if not by_table and not by_point:
            return False  # nobody subscribed: every commit asks, so this answer is kept short
        for tid, ch in txdata.tables.items():  # a loop: a generator costs a frame per commit
            if (tid in by_table or tid in by_point) and (ch.inserts or ch.deletes):
                return True
        return False

    def on_commit(self, tx: Any, txdata: TxData) -> CommitUpdates:
        """Evaluate every query a committed transaction may affect, once each, from ``txdata``
        alone (``tx``: the state right after that commit) and group the updates (B.4, §11)."""
        result = CommitUpdates()
        if not self._queries or not txdata.tables:
            return result
        delta = TxDelta(txdata)
        changed = delta.table_ids
        affected: set[QueryKey] = set()
        for tid in changed:
            affected |= self._by_table.get(tid, set())
            point = self._by_point.get(tid)
            if point is not None:
                table, cols = point
                ins, dels, _ = delta.changes(table, codec_for(table.row_type, table.typespace))
                for _, row in (*ins, *dels):
                    for col, by_value in cols.items():
                        affected |= by_value.get(row[col], set())
        meter = Meter()
        per_query: list[tuple[QueryKey, list[tuple[TableSchema, QueryUpdate]]]] = []
        failed: dict[Conn, SubscriptionError] = {}
        for key in sorted(affected, key=_key_order):
            q = self._queries[key]
            result.queries_evaluated += 1
            try:
                parts = []
                for ev in q.evaluators:
                    if ev.table_ids & changed:
                        deletes, inserts = ev.delta(tx, delta, meter)
                        if deletes or inserts:
                            parts.append((q.compiled.table, QueryUpdate(tuple(deletes), tuple(inserts))))
            except Exception as e:  # B.4: the subscribers lose their subscriptions, not the database
                log.exception("evaluating %r for a commit", q.compiled.sql)
                err = SubscriptionError(0, None, None, executing(str(e), q.compiled.sql))
                for conn in q.subscribers:
                    failed.setdefault(conn, err)
                continue
            if parts:
                per_query.append((key, parts))
        result.rows_evaluated = meter.rows
        self.rows_evaluated += meter.rows
        self.queries_evaluated += result.queries_evaluated
        for conn, err in failed.items():
            result.errors.append((conn, err))
            self.disconnect_subscriptions(conn)
        self._group(result, per_query, failed)
        return result

    # --- module updates -----------------------------------------------------------------------

    def module_updated(self, tx: Any, rls: Sequence[str]) -> list[tuple[Conn, SubscriptionError]]:
        """The module was replaced (republished without clearing): take its RLS rules and
        recompile every live query against the schema in ``tx``.

        Plans are made for one schema: they name indexes (which an update may drop or add) and
        table schemas. A query that no longer compiles — a join whose only indexed join column
        lost its index — is dropped: each connection holding it loses all its subscriptions
        and gets the returned error, as when a query fails to evaluate (B.4).
        """
        self.rls = tuple(rls)
        old = self._queries
        self._queries, self._by_table, self._by_point = {}, {}, {}
        failed: dict[Conn, SubscriptionError] = {}
        for key in sorted(old, key=_key_order):
            q = old[key]
            # Any holder's view will do: the key names the caller when the rows depend on it.
            holder = self._clients[next(iter(q.subscribers))]
            try:
                cq = compile_query(q.compiled.sql, self._view(tx, holder))
                if cq.key != key:
                    raise SqlError("the module's row-level-security rules changed: subscribe again")
            except SqlError as e:
                err = SubscriptionError(0, None, None, executing(e.message, q.compiled.sql))
                for conn in q.subscribers:
                    failed.setdefault(conn, err)
                continue
            self._register(_Query.build(cq, q.subscribers))
        for conn in failed:
            self.disconnect_subscriptions(conn)
        return list(failed.items())

    def disconnect_subscriptions(self, conn: Conn) -> None:
        """Drop every subscription of ``conn`` but keep the connection registered."""
        client = self._clients.get(conn)
        if client is None:
            return
        for key in list(client.refs):
            del client.refs[key]
            self._release(conn, key)
        client.sets.clear()
        client.legacy = ()

    def _group(
        self,
        result: CommitUpdates,
        per_query: list[tuple[QueryKey, list[tuple[TableSchema, QueryUpdate]]]],
        failed: dict[Conn, SubscriptionError],
    ) -> None:
        matched: dict[Conn, list[int]] = {}
        for i, (key, _) in enumerate(per_query):
            q = self._queries.get(key)
            if q is None:
                continue
            for conn in q.subscribers:
                if conn not in failed:
                    matched.setdefault(conn, []).append(i)
        groups: dict[tuple[int, ...], list[Conn]] = {}
        for conn, idx in matched.items():
            groups.setdefault(tuple(idx), []).append(conn)
        for members_of, conns in groups.items():
            tables: dict[int, tuple[str, list[QueryUpdate]]] = {}
            for i in members_of:
                for table, qu in per_query[i][1]:
                    tables.setdefault(table.table_id, (table.name, []))[1].append(qu)
            update = tuple(TableUpdate(tid, name, tuple(qus)) for tid, (name, qus) in tables.items())
            members = frozenset(conns)
            result.groups.append((members, update))
            for conn in conns:
                result._by_conn[conn] = update


def _point_filter(cq: CompiledQuery) -> tuple[int, Any] | None:
    """``(column, value)`` of a single-table, single-fragment query with a top-level
    ``column = literal`` conjunct: only changed rows with that value can affect it."""
    if len(cq.fragments) != 1 or len(cq.fragments[0].rels) != 1:
        return None
    for c in cq.fragments[0].conds:
        if isinstance(c, Cmp) and c.op == "=":
            if isinstance(c.left, Col) and isinstance(c.right, Const):
                col, value = c.left.col, c.right.value
            elif isinstance(c.right, Col) and isinstance(c.left, Const):
                col, value = c.right.col, c.left.value
            else:
                continue
            try:
                hash(value)
            except TypeError:
                continue
            return col, value
    return None


def _key_order(key: QueryKey) -> tuple[str, str]:
    return key[0], "" if key[1] is None else key[1].to_hex()


def _micros(start_ns: int) -> int:
    return (time.perf_counter_ns() - start_ns) // 1000
