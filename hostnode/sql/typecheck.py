"""Name resolution, typing, visibility and row-level security (``sql-and-subscriptions.md`` A.3–A.6, C).

Input: a parsed statement (:mod:`hostnode.sql.ast`) and a :class:`SchemaView` — the tables of
one database as one caller sees them. Output: typed, resolved statements whose queries are
:class:`LogicalQuery` values (relations, a conjunction of typed predicates, an output), which
:mod:`hostnode.sql.plan` turns into index-aware plans.

Row-level security is a rewrite: for a non-owner, every relation whose table has rules is
replaced by each of its rules in turn (the rule's return table stays, its other tables and
predicates join the query under fresh aliases), recursively, giving a *list* of queries whose
results are concatenated (bag union, as the reference's fragments).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from hostnode.schema import TableSchema
from hostnode.sql import ast
from hostnode.sql.errors import SqlError, invalid_literal, no_such_table, not_in_scope, unexpected_type
from hostnode.sql.limits import DEFAULTS as LIMIT_DEFAULTS
from hostnode.sql.literals import LiteralError, fmt_type, parse_literal, resolve, supports_ops
from sats.identity import Identity
from sats.types import BOOL, STRING, U64, AlgebraicType, ProductType, Typespace, product

#: System variables settable with SET (A.6), then Orrery's per-query limits (hostnode/sql/limits.py).
SYSTEM_VARS = (
    "row_limit", "slow_ad_hoc_query_ms", "slow_tx_update_ms", "slow_subscription_query_ms",
    *LIMIT_DEFAULTS,
)


# --- typed expressions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Col:
    """Column ``col`` of the relation called ``alias``."""

    alias: str
    col: int
    ty: AlgebraicType


@dataclass(frozen=True, slots=True)
class Const:
    """A literal, already parsed at its type (a Python SATS value)."""

    value: Any
    ty: AlgebraicType


@dataclass(frozen=True, slots=True)
class Cmp:
    """A comparison; both sides have the same type."""

    op: ast.CmpOp
    left: TExpr
    right: TExpr
    ty: AlgebraicType = BOOL


@dataclass(frozen=True, slots=True)
class Logic:
    """AND / OR of two boolean expressions."""

    op: Literal["and", "or"]
    left: TExpr
    right: TExpr
    ty: AlgebraicType = BOOL


TExpr = Col | Const | Cmp | Logic


@dataclass(frozen=True, slots=True)
class Rel:
    """One table reference of a query. ``raw``: already restricted by a row-level-security rule."""

    alias: str
    table: TableSchema = field(compare=False)
    raw: bool = False


@dataclass(frozen=True, slots=True)
class OutStar:
    """Return the rows of one relation as stored."""

    alias: str


@dataclass(frozen=True, slots=True)
class OutCols:
    """Return these columns."""

    cols: tuple[Col, ...]


@dataclass(frozen=True, slots=True)
class OutCount:
    """Return one row holding the number of result rows (u64)."""


Output = OutStar | OutCols | OutCount


@dataclass(frozen=True, slots=True)
class LogicalQuery:
    """An inner join of ``rels`` filtered by the conjunction ``conds``, then ``output``."""

    rels: tuple[Rel, ...]
    conds: tuple[TExpr, ...]
    output: Output
    schema: ProductType
    typespace: Typespace
    limit: int | None = None


# --- typed statements --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TQuery:
    """A SELECT: the union (bag) of ``fragments`` (one per RLS alternative), then ``limit``."""

    fragments: tuple[LogicalQuery, ...]
    schema: ProductType
    typespace: Typespace
    limit: int | None
    count: bool


@dataclass(frozen=True, slots=True)
class TInsert:
    """Rows (tuples of SATS values in column order) to insert."""

    table: TableSchema
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True, slots=True)
class TUpdate:
    """Set ``assignments`` (column → value) on every row ``query`` returns."""

    table: TableSchema
    assignments: tuple[tuple[int, Any], ...]
    query: LogicalQuery


@dataclass(frozen=True, slots=True)
class TDelete:
    """Delete every row ``query`` returns."""

    table: TableSchema
    query: LogicalQuery


@dataclass(frozen=True, slots=True)
class TSet:
    """``SET name = value``."""

    name: str
    value: int


@dataclass(frozen=True, slots=True)
class TShow:
    """``SHOW name``."""

    name: str


TStatement = TQuery | TInsert | TUpdate | TDelete | TSet | TShow


# --- the schema as one caller sees it ----------------------------------------------------------


class SchemaView:
    """The tables of one database as one caller sees them (the reference's ``SchemaViewer``).

    ``tables``: every table (``tx.tables()``); ``rls``: the module's row-level-security rule SQL.
    Non-owners cannot see private tables (the "no such table" text is the same as for a table
    that does not exist) and read through the RLS rules; owners see everything unfiltered.
    """

    def __init__(
        self, tables: Mapping[int, TableSchema] | Iterable[TableSchema], *, caller: Identity, is_owner: bool, rls: Sequence[str] = ()
    ) -> None:
        values = tables.values() if isinstance(tables, Mapping) else tables
        self.by_name: dict[str, TableSchema] = {t.name: t for t in values}
        self.caller = caller
        self.is_owner = is_owner
        self.rls = tuple(rls)
        self._rules: dict[str, list[ast.Select]] | None = None

    def table(self, name: str) -> TableSchema:
        """The table called ``name`` if this caller may see it; SqlError otherwise."""
        t = self.by_name.get(name)
        if t is None or not (t.is_public or self.is_owner):
            raise no_such_table(name)
        return t

    def as_owner(self) -> SchemaView:
        """The same database seen with owner rights but the same ``:sender`` (for RLS rules)."""
        v = SchemaView(self.by_name.values(), caller=self.caller, is_owner=True, rls=self.rls)
        v._rules = self._rules
        return v

    def rules(self, table: str) -> list[ast.Select]:
        """The parsed RLS rules whose return table is ``table``."""
        if self._rules is None:
            from hostnode.sql.parser import parse_sql

            rules: dict[str, list[ast.Select]] = {}
            for sql in self.rls:
                stmt = parse_sql(sql)
                if not isinstance(stmt, ast.Select) or not isinstance(stmt.project, ast.ProjectStar):
                    raise SqlError(f"row-level security rule is not a table query: {sql}")
                rules.setdefault(_return_table(stmt), []).append(stmt)
            self._rules = rules
        return self._rules.get(table, [])


def _return_table(sel: ast.Select) -> str:
    assert isinstance(sel.project, ast.ProjectStar)
    alias = sel.project.table or sel.from_.alias
    for ref in (sel.from_, *(j.table for j in sel.joins)):
        if ref.alias == alias:
            return ref.name
    raise not_in_scope(alias)


# --- expressions -------------------------------------------------------------------------------


class _Scope:
    """The relations of one query by alias, and the caller (for ``:sender``)."""

    def __init__(self, rels: Sequence[Rel], caller: Identity) -> None:
        self.rels = {r.alias: r for r in rels}
        self.caller = caller

    def field(self, f: ast.Field) -> Col:
        rel = self.rels.get(f.table)
        if rel is None:
            raise not_in_scope(f.table)
        col = rel.table.row_type.index_of(f.name)
        if col is None:
            raise not_in_scope(f.name)
        return Col(rel.alias, col, rel.table.row_type.elements[col].algebraic_type)

    def typespace(self) -> Typespace:
        return next(iter(self.rels.values())).table.typespace


def _same_type(a: AlgebraicType, b: AlgebraicType, ts: Typespace) -> bool:
    return a == b or resolve(a, ts) == resolve(b, ts)


def type_expr(e: ast.Expr, scope: _Scope, expected: AlgebraicType | None) -> TExpr:
    """Type ``e`` (A.4): literals take the type of the other operand, columns must match."""
    ts = scope.typespace()
    if isinstance(e, ast.Lit) and e.kind == "bool":
        if expected is None or _same_type(expected, BOOL, ts):
            return Const(e.text == "true", BOOL)
        raise unexpected_type("Bool", fmt_type(expected, ts))
    if isinstance(e, (ast.Lit, ast.Sender)):
        text = scope.caller.to_hex() if isinstance(e, ast.Sender) else e.text
        if expected is None:
            raise SqlError("Cannot resolve type for literal expression")
        try:
            return Const(parse_literal(text, expected, ts), expected)
        except LiteralError:
            raise invalid_literal(text, fmt_type(expected, ts)) from None
    if isinstance(e, ast.Var):  # the parser qualifies every bare name; keep the error sane anyway
        raise not_in_scope(e.name)
    if isinstance(e, ast.Field):
        col = scope.field(e)
        if expected is not None and not _same_type(col.ty, expected, ts):
            raise unexpected_type(fmt_type(col.ty, ts), fmt_type(expected, ts))
        return col
    if expected is not None and not _same_type(expected, BOOL, ts):
        raise unexpected_type("Bool", fmt_type(expected, ts))
    if isinstance(e, ast.Log):
        return Logic(e.op, type_expr(e.left, scope, BOOL), type_expr(e.right, scope, BOOL))
    # Comparison: a literal on the left takes the right side's type, else the left side leads.
    if isinstance(e.left, (ast.Lit, ast.Sender)):
        b = type_expr(e.right, scope, None)
        a = type_expr(e.left, scope, b.ty)
    else:
        a = type_expr(e.left, scope, None)
        b = type_expr(e.right, scope, a.ty)
    if not supports_ops(a.ty, ts):
        raise SqlError(f"Invalid binary operator `{e.op}` for type `{fmt_type(a.ty, ts)}`")
    return Cmp(e.op, a, b)


def conjuncts(e: TExpr) -> list[TExpr]:
    """The top-level AND operands of ``e``."""
    if isinstance(e, Logic) and e.op == "and":
        return conjuncts(e.left) + conjuncts(e.right)
    return [e]


def _strict_value(lit: ast.Lit, ty: AlgebraicType, ts: Typespace) -> Any:
    """INSERT/UPDATE values: strings only into String columns, bools only into Bool (A.4)."""
    if lit.kind == "bool":
        if _same_type(ty, BOOL, ts):
            return lit.text == "true"
        raise unexpected_type("Bool", fmt_type(ty, ts))
    if lit.kind == "str":
        if _same_type(ty, STRING, ts):
            return lit.text
        raise unexpected_type("String", fmt_type(ty, ts))
    try:
        return parse_literal(lit.text, ty, ts)
    except LiteralError:
        raise invalid_literal(lit.text, fmt_type(ty, ts)) from None


# --- statements --------------------------------------------------------------------------------


def check_statement(stmt: ast.Statement, view: SchemaView) -> TStatement:
    """Type ``stmt`` for ``view``'s caller; DML and SET are refused to non-owners after typing."""
    if isinstance(stmt, ast.Select):
        return type_query(stmt, view)
    if isinstance(stmt, ast.ShowVar):
        if not view.is_owner:
            raise no_such_table("st_var")
        return TShow(_system_var(stmt.name))
    typed: TStatement
    if isinstance(stmt, ast.Insert):
        typed = _type_insert(stmt, view)
    elif isinstance(stmt, ast.Update):
        typed = _type_update(stmt, view)
    elif isinstance(stmt, ast.Delete):
        table = view.table(stmt.table)
        typed = TDelete(table, _single_table_query(table, stmt.where, view.caller))
    else:
        typed = _type_set(stmt)
    if not view.is_owner:
        raise SqlError(f"Caller {view.caller.to_hex()} is not authorized to run SQL DML statements")
    return typed


def _system_var(name: str) -> str:
    if name not in SYSTEM_VARS:
        raise SqlError(f"{name} is not a valid system variable")
    return name


def _type_set(stmt: ast.SetVar) -> TSet:
    name = _system_var(stmt.name)
    lit = stmt.value
    if lit.kind != "num":
        found = {"bool": "Bool", "str": "String", "hex": "Array<U8>"}[lit.kind]
        raise unexpected_type("U64", found)
    try:
        return TSet(name, parse_literal(lit.text, U64, Typespace([])))
    except LiteralError:
        raise invalid_literal(lit.text, "U64") from None


def _type_insert(stmt: ast.Insert, view: SchemaView) -> TInsert:
    table = view.table(stmt.table)
    elems = table.row_type.elements
    n = len(elems)
    # 1.12 quirk: the column list only has to have the right length; values stay positional.
    if stmt.columns is not None and len(stmt.columns) != n:
        raise SqlError(
            f"The number of fields ({len(stmt.columns)}) in the INSERT does not match the number of columns "
            f"({n}) of the table `{table.name}`"
        )
    rows = []
    for row in stmt.rows:
        if len(row) != n:
            raise SqlError(f"Inserting a row with {len(row)} values into `{table.name}` which has {n} fields")
        rows.append(tuple(_strict_value(lit, e.algebraic_type, table.typespace) for lit, e in zip(row, elems, strict=True)))
    return TInsert(table, tuple(rows))


def _type_update(stmt: ast.Update, view: SchemaView) -> TUpdate:
    table = view.table(stmt.table)
    assignments = []
    for name, lit in stmt.assignments:
        col = table.row_type.index_of(name)
        if col is None:
            raise SqlError(f"`{table.name}` does not have a field `{name}`")
        ty = table.row_type.elements[col].algebraic_type
        assignments.append((col, _strict_value(lit, ty, table.typespace)))
    return TUpdate(table, tuple(assignments), _single_table_query(table, stmt.where, view.caller))


def _single_table_query(table: TableSchema, where: ast.Expr | None, caller: Identity) -> LogicalQuery:
    rel = Rel(table.name, table, raw=True)
    scope = _Scope([rel], caller)
    conds = () if where is None else tuple(conjuncts(type_expr(where, scope, BOOL)))
    return LogicalQuery((rel,), conds, OutStar(rel.alias), table.row_type, table.typespace)


def type_select(sel: ast.Select, view: SchemaView) -> LogicalQuery:
    """Resolve and type one SELECT (no RLS applied)."""
    rels: list[Rel] = []
    for ref in (sel.from_, *(j.table for j in sel.joins)):
        if any(r.alias == ref.alias for r in rels):
            raise SqlError(f"Duplicate name `{ref.alias}`")
        rels.append(Rel(ref.alias, view.table(ref.name)))
    scope = _Scope(rels, view.caller)
    ts = rels[0].table.typespace
    conds: list[TExpr] = []
    for j in sel.joins:
        if j.on is not None:
            conds.append(type_expr(ast.Bin("=", j.on[0], j.on[1]), scope, BOOL))
    if sel.where is not None:
        conds.extend(conjuncts(type_expr(sel.where, scope, BOOL)))
    output: Output
    project = sel.project
    if isinstance(project, ast.ProjectStar):
        if project.table is None:
            if len(rels) > 1:
                raise SqlError("SELECT * is not supported for joins")
            alias = rels[0].alias
        else:
            alias = project.table
            if alias not in scope.rels:
                raise not_in_scope(alias)
        output, schema = OutStar(alias), scope.rels[alias].table.row_type
    elif isinstance(project, ast.ProjectCount):
        output, schema = OutCount(), product((project.alias, U64))
    else:
        cols, names = [], []
        for cref, name in project.items:
            if name in names:
                raise SqlError(f"Duplicate name `{name}`")
            if isinstance(cref, ast.Var):
                raise not_in_scope(cref.name)
            cols.append(scope.field(cref))
            names.append(name)
        output = OutCols(tuple(cols))
        schema = product(*((n, c.ty) for n, c in zip(names, cols, strict=True)))
    limit: int | None = None
    if sel.limit is not None:
        try:
            limit = parse_literal(sel.limit, U64, ts)
        except LiteralError:
            raise invalid_literal(sel.limit, "U64") from None
    return LogicalQuery(tuple(rels), tuple(conds), output, schema, ts, limit)


def type_query(sel: ast.Select, view: SchemaView) -> TQuery:
    """Type a SELECT and, for non-owners, rewrite it through the RLS rules."""
    q = type_select(sel, view)
    frags = [q] if view.is_owner else expand_rls(q, view)
    return TQuery(tuple(frags), q.schema, q.typespace, q.limit, isinstance(q.output, OutCount))


# --- row-level security ------------------------------------------------------------------------


def expand_rls(q: LogicalQuery, view: SchemaView) -> list[LogicalQuery]:
    """``q`` as the bag union of queries in which every relation is restricted by its rules."""
    fresh = itertools.count()
    frags = _expand(q.rels, q.conds, view, frozenset(), lambda: f"\x00rls{next(fresh)}")
    return [replace(q, rels=tuple(r), conds=tuple(c)) for r, c in frags]


Fragment = tuple[list[Rel], list[TExpr]]


def _expand(
    rels: Sequence[Rel], conds: Sequence[TExpr], view: SchemaView, stack: frozenset[int], fresh: Callable[[], str]
) -> list[Fragment]:
    frags: list[Fragment] = [([], list(conds))]
    for rel in rels:
        alts = _restrict(rel, view, stack, fresh)
        frags = [(fr + ar, fc + ac) for fr, fc in frags for ar, ac in alts]
    return frags


def _restrict(rel: Rel, view: SchemaView, stack: frozenset[int], fresh: Callable[[], str]) -> list[Fragment]:
    rules = [] if rel.raw else view.rules(rel.table.name)
    if not rules:
        return [([rel], [])]
    tid = rel.table.table_id
    if tid in stack:
        raise SqlError(f"Discovered cyclic dependency when resolving RLS rules for table id `{tid}`")
    out: list[Fragment] = []
    owner_view = view.as_owner()
    for rule in rules:
        typed = type_select(rule, owner_view)
        assert isinstance(typed.output, OutStar)
        ret = typed.output.alias
        names = {r.alias: (rel.alias if r.alias == ret else fresh()) for r in typed.rels}
        rule_rels = [Rel(names[r.alias], r.table, raw=r.alias == ret) for r in typed.rels]
        rule_conds = [_rename(c, names) for c in typed.conds]
        out.extend(_expand(rule_rels, rule_conds, view, stack | {tid}, fresh))
    return out


def _rename(e: TExpr, names: Mapping[str, str]) -> TExpr:
    if isinstance(e, Col):
        return Col(names[e.alias], e.col, e.ty)
    if isinstance(e, Cmp):
        return Cmp(e.op, _rename(e.left, names), _rename(e.right, names))
    if isinstance(e, Logic):
        return Logic(e.op, _rename(e.left, names), _rename(e.right, names))
    return e
