"""Running typed statements: SELECT over a ReadTx/MutTx, DML and SET/SHOW over a MutTx.

Two entry points:

* :func:`execute_in_tx` — the pure engine over one datastore transaction the caller owns
  (queries on a ``ReadTx`` or ``MutTx``; DML only on a ``MutTx``, which the caller commits or
  rolls back).
* :func:`execute_sql` — the same against a :class:`~hostnode.database.Database`. Queries read
  the last checkpoint (``db.read()``, any thread). DML and SET must be called **on the
  database's writer thread** (``DatabaseWorker.call``): they run as one transaction through
  ``Database.run_sql_dml``, which logs the commit and notifies subscribers like a reducer's.
  Route with :func:`hostnode.sql.ast.mutates` on :func:`~hostnode.sql.parser.parse_sql`'s
  result; ``SqlResult.offset`` is the commit-log offset to ``wait_durable`` before answering.

``SqlResult.rows_scanned`` counts the rows the datastore returned (scans, index scans, hash
builds), so tests can check that an indexed predicate touches only matching rows.
"""

from __future__ import annotations

import operator
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hostnode.datastore import DatastoreError
from hostnode.sql import ast
from hostnode.sql.errors import SqlError
from hostnode.sql.limits import DEFAULTS, QueryLimits, QueryMeter
from hostnode.sql.parser import parse_sql
from hostnode.sql.plan import Access, KeySrc, Plan, Step, build_plan
from hostnode.sql.typecheck import (
    Cmp,
    Col,
    Const,
    Logic,
    LogicalQuery,
    OutCols,
    OutCount,
    OutStar,
    SchemaView,
    TDelete,
    TExpr,
    TInsert,
    TQuery,
    TSet,
    TShow,
    TStatement,
    TUpdate,
    check_statement,
)
from sats.bsatn import Codec, codec_for
from sats.identity import Identity
from sats.types import U64, UNIT, ProductType, Typespace, product

if TYPE_CHECKING:
    from hostnode.database import Database

#: Datastore meta key prefix of the system variables (the reference's ``st_var`` table).
ST_VAR_META = b"sql/st_var/"
_U64 = struct.Struct("<Q")
_EMPTY_TS = Typespace([])
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

@dataclass(slots=True)
class SqlStats:
    """Rows changed by a DML statement (A.7 ``stats``)."""

    rows_inserted: int = 0
    rows_deleted: int = 0
    rows_updated: int = 0


@dataclass(slots=True)
class SqlResult:
    """One statement's result: the A.7 ``SqlStmtResult`` before rendering, plus engine facts."""

    schema: ProductType
    rows: list[tuple[Any, ...]]
    typespace: Typespace = field(default_factory=lambda: _EMPTY_TS)
    stats: SqlStats = field(default_factory=SqlStats)
    total_duration_micros: int = 0
    #: Rows the datastore returned while evaluating the statement.
    rows_scanned: int = 0
    #: Commit-log offset of a DML statement's transaction (None for reads).
    offset: int | None = None


def system_var(tx: Any, name: str) -> int | None:
    """The value of system variable ``name`` (``SET``), or None when unset."""
    raw = tx.get_meta(ST_VAR_META + name.encode())
    return None if raw is None else int(_U64.unpack(raw)[0])


def query_limits(tx: Any) -> QueryLimits:
    """The limits a non-owner's query in ``tx`` runs under: the SET values, else the defaults
    (:mod:`hostnode.sql.limits`)."""
    values = {}
    for name, default in DEFAULTS.items():
        value = system_var(tx, name)
        values[name] = default if value is None else value
    return QueryLimits(**values)


# --- entry points ------------------------------------------------------------------------------


def execute_in_tx(
    tx: Any,
    sql: str | ast.Statement,
    caller: Identity,
    *,
    is_owner: bool,
    rls: Sequence[str] = (),
) -> SqlResult:
    """Parse, type and run one statement in ``tx`` for ``caller`` (see the module docstring)."""
    start = time.perf_counter_ns()
    stmt = parse_sql(sql) if isinstance(sql, str) else sql
    view = SchemaView(tx.tables(), caller=caller, is_owner=is_owner, rls=rls)
    typed = check_statement(stmt, view)
    result = run_statement(tx, typed, is_owner=is_owner)
    result.total_duration_micros = (time.perf_counter_ns() - start) // 1000
    return result


def execute_sql(db: Database, sql: str | ast.Statement, caller: Identity, *, is_owner: bool | None = None) -> SqlResult:
    """Run one statement against ``db`` (DML/SET: on the writer thread only; module docstring)."""
    start = time.perf_counter_ns()
    stmt = parse_sql(sql) if isinstance(sql, str) else sql
    owner = caller == db.owner if is_owner is None else is_owner
    rls = db.row_level_security
    if not ast.mutates(stmt):
        with db.read() as tx:
            result = execute_in_tx(tx, stmt, caller, is_owner=owner, rls=rls)
    else:
        result, outcome = db.run_sql_dml(lambda tx: execute_in_tx(tx, stmt, caller, is_owner=owner, rls=rls), caller)
        result.offset = outcome.offset
        if isinstance(stmt, ast.SetVar):
            # The new value is in the log (a PUT_META op); checkpoint so that reads see it now.
            db.checkpoint()
    result.total_duration_micros = (time.perf_counter_ns() - start) // 1000
    return result


def execute_point_query(db: Database, stmt: ast.Statement, caller: Identity) -> SqlResult | None:
    """``stmt`` run against the last checkpoint from the caller's own thread when it is a query
    whose every step is a point lookup on a unique index (it reads at most one row per table, so
    it is too short to need the writer's queue); None for any other statement (nothing ran)."""
    if not isinstance(stmt, ast.Select):
        return None
    start = time.perf_counter_ns()
    owner = caller == db.owner
    with db.read() as tx:
        view = SchemaView(tx.tables(), caller=caller, is_owner=owner, rls=db.row_level_security)
        typed = check_statement(stmt, view)
        if not isinstance(typed, TQuery):
            return None
        plans = [build_plan(f, tx.row_count) for f in typed.fragments]
        if not _point_lookups(plans):
            return None
        result = run_query(tx, typed, plans=plans)
    result.total_duration_micros = (time.perf_counter_ns() - start) // 1000
    return result


def run_statement(tx: Any, stmt: TStatement, *, is_owner: bool) -> SqlResult:
    """Run an already typed statement in ``tx``."""
    if isinstance(stmt, TQuery):
        limit = None if is_owner else system_var(tx, "row_limit")
        return run_query(tx, stmt, row_limit=limit, limited=not is_owner)
    if isinstance(stmt, TShow):
        value = system_var(tx, stmt.name)
        return SqlResult(product(("value", U64)), [] if value is None else [(value,)])
    runner = _Runner(tx)
    try:
        stats = runner.dml(stmt)
    except DatastoreError as e:
        raise SqlError(str(e)) from None
    return SqlResult(UNIT, [], stats=stats, rows_scanned=runner.scanned)


def run_query(
    tx: Any, q: TQuery, *, row_limit: int | None = None, limited: bool = False, plans: list[Plan] | None = None
) -> SqlResult:
    """Evaluate a typed SELECT; ``row_limit`` (non-owners) refuses plans estimated too large;
    ``limited`` (non-owners) runs it under the query limits, stopping one that examines,
    returns or takes too much. ``plans``: the fragments' plans when the caller built them."""
    if plans is None:
        plans = [build_plan(f, tx.row_count) for f in q.fragments]
    if row_limit is not None:
        estimate = sum(p.estimate for p in plans)
        if estimate > row_limit:
            raise SqlError(f"Estimated cardinality ({estimate} rows) exceeds limit ({row_limit} rows)")
    meter = None
    if limited and not _point_lookups(plans):
        meter = QueryMeter(query_limits(tx))
    runner = _Runner(tx, meter)
    limit = q.limit
    rows: list[tuple[Any, ...]] = []
    count = 0
    for plan in plans:
        if limit is not None and not q.count and len(rows) >= limit:
            break
        emit = _output(plan)
        size = _output_size(plan)
        for vals, raws in runner.run(plan):
            if q.count:
                count += 1
                continue
            if meter is not None:
                meter.emit(size(raws))
            rows.append(emit(vals))
            if limit is not None and len(rows) >= limit:
                break
    if q.count:
        rows = [(count,)]
        if limit is not None:
            rows = rows[:limit]
    return SqlResult(q.schema, rows, q.typespace, rows_scanned=runner.scanned)


def _output(plan: Plan) -> Callable[[list[Any]], tuple[Any, ...]]:
    out = plan.query.output
    if isinstance(out, OutStar):
        slot = plan.slots[out.alias]
        return lambda vals: vals[slot]
    if isinstance(out, OutCols):
        picks = [(plan.slots[c.alias], c.col) for c in out.cols]
        return lambda vals: tuple(vals[s][c] for s, c in picks)
    assert isinstance(out, OutCount)
    return lambda vals: ()


def _point_lookups(plans: list[Plan]) -> bool:
    """Whether every step is a point lookup on a unique index: each then binds at most one row,
    so the query is within any limit and runs unmetered (the limits cost point queries nothing)."""
    return all(
        s.hash_key is None and s.access.kind == "point" and s.access.index is not None and s.access.index.unique
        for p in plans
        for s in p.steps
    )


def _output_size(plan: Plan) -> Callable[[list[bytes]], int]:
    """The BSATN size of a result row, from the raw rows it is taken from (an upper bound for
    a column list)."""
    out = plan.query.output
    if isinstance(out, OutStar):
        slot = plan.slots[out.alias]
        return lambda raws: len(raws[slot])
    if isinstance(out, OutCols):
        slots = sorted({plan.slots[c.alias] for c in out.cols})
        return lambda raws: sum(len(raws[s]) for s in slots)
    return lambda raws: 0


# --- expressions -------------------------------------------------------------------------------


def compile_expr(e: TExpr, slots: dict[str, int]) -> Callable[[list[Any]], Any]:
    """``e`` as a function of the bound rows (``vals[slot]`` = decoded row tuple)."""
    if isinstance(e, Const):
        v = e.value
        return lambda vals: v
    if isinstance(e, Col):
        slot, col = slots[e.alias], e.col
        return lambda vals: vals[slot][col]
    left = compile_expr(e.left, slots)
    right = compile_expr(e.right, slots)
    if isinstance(e, Logic):
        if e.op == "and":
            return lambda vals: left(vals) and right(vals)
        return lambda vals: left(vals) or right(vals)
    assert isinstance(e, Cmp)
    op = _OPS[e.op]
    if isinstance(e.right, Const):
        rv = e.right.value
        return lambda vals: op(left(vals), rv)
    return lambda vals: op(left(vals), right(vals))


# --- the row engine ----------------------------------------------------------------------------

Row = tuple[bytes, tuple[Any, ...]]


class _Runner:
    """Runs plans over one transaction, counting the rows the datastore hands back."""

    def __init__(self, tx: Any, meter: QueryMeter | None = None) -> None:
        self.tx = tx
        self.scanned = 0
        self._codecs: dict[int, Codec] = {}
        self._meter = meter
        #: Rows left to examine before the meter's next check (unmetered: never runs out).
        self._left = sys.maxsize if meter is None else meter.first_budget()

    def _examined(self, n: int) -> None:
        self._left -= n
        if self._left < 0:
            assert self._meter is not None
            self._left = self._meter.refill(self._left)

    def _codec(self, step: Step) -> Codec:
        table = step.rel.table
        c = self._codecs.get(table.table_id)
        if c is None:
            c = self._codecs[table.table_id] = codec_for(table.row_type, table.typespace)
        return c

    def fetch(self, step: Step, vals: list[Any]) -> list[Row]:
        """The rows ``step``'s access path returns, raw and decoded."""
        raws = fetch_raw(self.tx, step, vals)
        self.scanned += len(raws)
        decode = self._codec(step).decode
        return [(r, decode(r, 0)[0]) for r in raws]

    def run(self, plan: Plan) -> Iterator[tuple[list[Any], list[bytes]]]:
        """Yield ``(vals, raws)`` per result binding; both lists are reused between yields."""
        steps = plan.steps
        n = len(steps)
        vals: list[Any] = [None] * n
        raws: list[bytes] = [b""] * n
        filters = [[compile_expr(f, plan.slots) for f in s.filters] for s in steps]
        # Inner steps whose access does not depend on outer rows are read once and reused.
        reuse = [i > 0 and not s.access.dynamic for i, s in enumerate(steps)]
        cached: dict[int, Any] = {}

        def rows_for(i: int) -> Sequence[Row]:
            step = steps[i]
            if step.hash_key is not None:
                table = cached.get(i)
                if table is None:
                    table = cached[i] = {}
                    cols = [c for c, _ in step.hash_key]
                    built = self.fetch(step, vals)
                    self._examined(len(built))
                    for row in built:
                        table.setdefault(tuple(row[1][c] for c in cols), []).append(row)
                probe = tuple(_source(src, vals) for _, src in step.hash_key)
                return table.get(probe, ())  # type: ignore[no-any-return]
            if reuse[i]:
                rows = cached.get(i)
                if rows is None:
                    rows = cached[i] = self.fetch(step, vals)
                return rows  # type: ignore[no-any-return]
            return self.fetch(step, vals)

        def rec(i: int) -> Iterator[tuple[list[Any], list[bytes]]]:
            slot = steps[i].slot
            preds = filters[i]
            last = i == n - 1
            for raw, row in rows_for(i):
                # The meter's countdown, inlined: this runs for every row considered.
                self._left -= 1
                if self._left < 0:
                    self._examined(0)
                vals[slot] = row
                raws[slot] = raw
                if preds and not all(p(vals) for p in preds):
                    continue
                if last:
                    yield vals, raws
                else:
                    yield from rec(i + 1)

        if n:
            yield from rec(0)

    # -- DML ------------------------------------------------------------------------------------

    def matches(self, plan: Plan) -> list[Row]:
        """Every (raw, decoded) row of a single-table plan."""
        return [(raws[0], vals[0]) for vals, raws in self.run(plan)]

    def dml(self, stmt: TStatement) -> SqlStats:
        """Apply INSERT/UPDATE/DELETE/SET in the (mutable) transaction."""
        tx = self.tx
        stats = SqlStats()
        if isinstance(stmt, TSet):
            tx.put_logged_meta(ST_VAR_META + stmt.name.encode(), _U64.pack(stmt.value))
            return stats
        assert isinstance(stmt, (TInsert, TUpdate, TDelete))
        table = stmt.table
        tid = table.table_id
        codec = codec_for(table.row_type, table.typespace)
        if isinstance(stmt, TInsert):
            for row in stmt.rows:
                before = tx.row_count(tid)
                tx.insert(tid, codec.encode(row))
                # An identical row already present makes the insert a no-op (not counted).
                stats.rows_inserted += tx.row_count(tid) - before
            return stats
        assert isinstance(stmt, (TUpdate, TDelete))
        found = self.matches(build_plan(stmt.query, tx.row_count))
        if isinstance(stmt, TDelete):
            for raw, _ in found:
                stats.rows_deleted += bool(tx.delete_row(tid, raw))
            return stats
        # UPDATE: every match is deleted first, then every modified copy inserted.
        for raw, _ in found:
            tx.delete_row(tid, raw)
        for _, vals in found:
            new = list(vals)
            for col, value in stmt.assignments:
                new[col] = value
            tx.insert(tid, codec.encode(tuple(new)))
        stats.rows_updated = len(found)
        return stats


def fetch_raw(tx: Any, step: Step, vals: list[Any]) -> list[bytes]:
    """The BSATN rows ``step``'s access path returns from ``tx`` (a superset of the matches:
    the step's filters still apply); ``vals`` holds the rows bound by earlier steps."""
    acc: Access = step.access
    if acc.kind == "scan":
        return tx.scan(step.rel.table.table_id)  # type: ignore[no-any-return]
    assert acc.index is not None
    key = b"".join(c.encode(_source(p, vals)) for p, c in zip(acc.key, acc.codecs, strict=False))
    if acc.kind == "point":
        return tx.index_scan_point(acc.index.index_id, key)  # type: ignore[no-any-return]
    codec = acc.codecs[len(acc.key)]
    return tx.index_scan_range(  # type: ignore[no-any-return]
        acc.index.index_id, key, len(acc.key), _bound(acc.lower, codec, vals), _bound(acc.upper, codec, vals)
    )


def query_raw_rows(tx: Any, q: LogicalQuery, meter: QueryMeter | None = None) -> tuple[list[bytes], int]:
    """The BSATN rows a single-table-output query (``OutStar``) returns in ``tx``, with the
    number of rows the datastore handed back (subscriptions' initial results, one-off queries);
    ``meter`` (shared by a query's fragments) stops one over its limits."""
    out = q.output
    assert isinstance(out, OutStar)
    plan = build_plan(q, tx.row_count)
    slot = plan.slots[out.alias]
    runner = _Runner(tx, meter)
    if meter is None:
        rows = [raws[slot] for _, raws in runner.run(plan)]
    else:
        rows = []
        for _, raws in runner.run(plan):
            meter.emit(len(raws[slot]))
            rows.append(raws[slot])
    return rows, runner.scanned


def _source(src: KeySrc, vals: list[Any]) -> Any:
    return src[1] if src[0] == "c" else vals[src[1]][src[2]]


def _bound(b: tuple[bool, KeySrc] | None, codec: Codec, vals: list[Any]) -> bytes:
    """BSATN ``Bound<T>``: tag 0 Included / 1 Excluded + value, 2 Unbounded."""
    if b is None:
        return b"\x02"
    return (b"\x00" if b[0] else b"\x01") + codec.encode(_source(b[1], vals))
