"""Subscription queries: the B.1 grammar, its rejection texts, query identity (B.2).

A subscription query is a SELECT of ``*``/``alias.*`` over one table or over an inner join of
two tables on an indexed column, with a WHERE of the ``/sql`` dialect. It is parsed and typed
by :mod:`hostnode.sql` (same literal typing, visibility and row-level security), then checked
against the subscription rules here. The result, :class:`CompiledQuery`, holds one
:class:`~hostnode.sql.typecheck.LogicalQuery` per *fragment* (a non-owner's query expands into
one fragment per combination of RLS rules; an owner's is one fragment) and the key under which
the manager shares its evaluation between clients.

Every refusal is a :class:`~hostnode.sql.SqlError` whose message is the B.1 text; the manager
adds ``, executing: `<sql>``` where the protocol wants it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hostnode.schema import TableSchema
from hostnode.schema_build import FIRST_USER_ID
from hostnode.sql import ast
from hostnode.sql.errors import SqlError, unsupported
from hostnode.sql.parser import MAX_SQL_LENGTH, parse_sql, statement_shape
from hostnode.sql.typecheck import Cmp, Col, LogicalQuery, OutStar, SchemaView, expand_rls, type_select
from sats.identity import Identity

#: The special "every table" subscription (B.1), accepted by Subscribe and SubscribeMulti.
_ALL_TABLES = re.compile(r"^\s*SELECT\s+\*\s+FROM\s+\*\s*$", re.IGNORECASE)

PROJECTION_ERROR = "Column projections are not supported in subscriptions; Subscriptions must return a table type"
INDEX_ERROR = "Subscriptions require indexes on join columns"

#: A query's identity: its text, plus the caller when the result depends on who asks (B.2).
QueryKey = tuple[str, Identity | None]


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """One subscription query as one caller sees it.

    ``fragments``: the queries whose results are bag-unioned (RLS alternatives), each returning
    rows of ``table``; ``table_ids``: every table any fragment reads (a commit touching none of
    them cannot change the result).
    """

    sql: str
    key: QueryKey
    table: TableSchema = field(compare=False)
    fragments: tuple[LogicalQuery, ...] = field(compare=False)
    table_ids: frozenset[int] = field(compare=False)

    @property
    def table_id(self) -> int:
        """The id of the table whose rows the query returns."""
        return self.table.table_id

    @property
    def table_name(self) -> str:
        """The name of the table whose rows the query returns."""
        return self.table.name


def is_all_tables(sql: str) -> bool:
    """True for ``SELECT * FROM *`` (any case and spacing)."""
    return _ALL_TABLES.match(sql) is not None


def all_tables_queries(view: SchemaView) -> list[str]:
    """``SELECT * FROM *`` expanded: one ``SELECT * FROM <t>`` per user table ``view``'s caller
    can read (public tables; the owner also private ones), in table-id order."""
    tables = sorted(view.by_name.values(), key=lambda t: t.table_id)
    return [
        f"SELECT * FROM {_quote(t.name)}"
        for t in tables
        if t.table_id >= FIRST_USER_ID and (t.is_public or view.is_owner)
    ]


def _quote(name: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def parse_subscription(sql: str) -> ast.Select:
    """Parse ``sql`` with the subscription grammar (B.1 rejection texts, before typing)."""
    if not sql.strip():
        raise SqlError("SubscriptionError: Empty string")
    if len(sql.encode("utf-8", "surrogatepass")) > MAX_SQL_LENGTH:
        raise SqlError(f'SQL query exceeds maximum allowed length: "{sql[:120]}..."')
    try:
        stmt = parse_sql(sql)
    except SqlError as e:
        raise _subscription_parse_error(sql, e) from None
    if not isinstance(stmt, ast.Select):
        raise SqlError("Unsupported: Non-SELECT queries")
    if stmt.limit is not None:
        raise unsupported(statement_shape(sql)[1])
    return stmt


def _subscription_parse_error(sql: str, err: SqlError) -> SqlError:
    # The /sql parser reports every unsupported clause as `Unsupported: …`; the subscription
    # grammar names non-queries, set operations and select-level clauses separately.
    kind, text = statement_shape(sql)
    if kind == "other":
        return SqlError("Unsupported: Non-SELECT queries")
    if kind == "set_operation":
        return SqlError(f"Unsupported set operation: {text}")
    if kind == "select_clauses" and err.message.startswith("Unsupported: "):
        return SqlError(f"Unsupported SELECT: {text}")
    return err


def check_shape(sel: ast.Select, *, check_table_count: bool = True) -> None:
    """The subscription grammar's limits on a parsed SELECT: whole-table projection only,
    no ``*`` over a join, at most two tables (``check_table_count``)."""
    if not isinstance(sel.project, ast.ProjectStar):
        raise SqlError(PROJECTION_ERROR)
    if sel.project.table is None and sel.joins:
        raise SqlError("SELECT * is not supported for joins")
    n = 1 + len(sel.joins)
    if check_table_count and n > 2:
        raise SqlError(f"Invalid number of tables in subscription: {n}")


def _check_join_index(q: LogicalQuery, sel: ast.Select) -> None:
    """Accept a join iff at least one ON column has a single-column index (B.1 index rule)."""
    if not sel.joins:
        return
    join = sel.joins[0]
    if join.on is None:
        raise SqlError(INDEX_ERROR)
    rels = {r.alias: r for r in q.rels}
    on = q.conds[0]  # type_select puts the ON equalities first
    assert isinstance(on, Cmp) and isinstance(on.left, Col) and isinstance(on.right, Col)
    if on.left.alias == on.right.alias:
        raise SqlError(INDEX_ERROR)
    for side in (on.left, on.right):
        table = rels[side.alias].table
        if any(ix.columns == (side.col,) for ix in table.indexes):
            return
    raise SqlError(INDEX_ERROR)


def _has_sender(e: ast.Expr | None) -> bool:
    if e is None:
        return False
    if isinstance(e, ast.Sender):
        return True
    if isinstance(e, (ast.Bin, ast.Log)):
        return _has_sender(e.left) or _has_sender(e.right)
    return False


def compile_query(sql: str, view: SchemaView, *, one_off: bool = False) -> CompiledQuery:
    """Compile one subscription query (not ``SELECT * FROM *``) for ``view``'s caller.

    ``one_off``: the B.7 variant — same grammar, but no index or table-count check.
    """
    sel = parse_subscription(sql)
    check_shape(sel, check_table_count=not one_off)
    q = type_select(sel, view)
    if not one_off:
        _check_join_index(q, sel)
    assert isinstance(q.output, OutStar)
    table = next(r.table for r in q.rels if r.alias == q.output.alias)
    fragments = (q,) if view.is_owner else tuple(expand_rls(q, view))
    # The result depends on the caller when it names :sender, or when a table it reads has
    # RLS rules (they may name :sender, and the owner bypasses them).
    caller_dependent = _has_sender(sel.where) or any(view.rules(r.table.name) for r in q.rels)
    key: QueryKey = (sql, view.caller if caller_dependent else None)
    table_ids = frozenset(r.table.table_id for f in fragments for r in f.rels)
    return CompiledQuery(sql, key, table, fragments, table_ids)


def compile_queries(sqls: Iterable[str], view: SchemaView, *, allow_all_tables: bool = True) -> list[CompiledQuery]:
    """Compile a query set (SubscribeMulti / Subscribe): strings are trimmed, ``SELECT * FROM *``
    expanded, duplicates dropped (first occurrence kept). The first failure raises
    :class:`QueryError` naming the offending text; nothing is partially returned."""
    out: dict[QueryKey, CompiledQuery] = {}
    for raw in sqls:
        text = raw.strip()
        texts = all_tables_queries(view) if allow_all_tables and is_all_tables(text) else [text]
        for t in texts:
            try:
                cq = compile_query(t, view)
            except SqlError as e:
                raise QueryError(e.message, t) from None
            out.setdefault(cq.key, cq)
    return list(out.values())


class QueryError(SqlError):
    """A query of a set failed to compile: ``message`` plus the ``sql`` it came from."""

    def __init__(self, message: str, sql: str) -> None:
        super().__init__(message)
        self.sql = sql

    @property
    def executing(self) -> str:
        """The protocol's error text: ``<msg>, executing: `<sql>```."""
        return executing(self.message, self.sql)


def executing(message: str, sql: str) -> str:
    """``<msg>, executing: `<sql>``` (the SubscriptionError text of B.1/B.6)."""
    return f"{message}, executing: `{sql}`"


def schema_view(
    tables: Mapping[int, TableSchema] | Sequence[TableSchema], caller: Identity, owner: Identity, rls: Sequence[str]
) -> SchemaView:
    """The schema as ``caller`` sees it (owner: every table, no RLS)."""
    return SchemaView(tables, caller=caller, is_owner=caller == owner, rls=rls)
