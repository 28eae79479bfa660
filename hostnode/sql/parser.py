"""SQL text → :mod:`hostnode.sql.ast`, with the exact rejection texts of ``sql-and-subscriptions.md`` A.1/A.2.

sqlglot (``read="postgres"``, PLATFORM.md §7) does the lexing and the grammar; this module
accepts only the small dialect SpacetimeDB 1.12 accepts and maps everything else onto its
error texts. sqlglot parses far more than the dialect, and is lenient in places (``SELEC *``
parses as arithmetic), so statements are recognised by their root node type and every node is
checked against a whitelist rather than a blacklist.

Identifiers keep their case (sqlglot does not fold unless asked). ``SHOW`` and statements
sqlglot only knows as opaque commands are recognised from the token stream, so they never go
through sqlglot's "falling back to Command" path (which logs a warning per call).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import sqlglot.expressions as exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from hostnode.sql import ast
from hostnode.sql.errors import SqlError, unsupported

#: Requests longer than this many bytes are refused before parsing (A.1).
MAX_SQL_LENGTH = 50_000
#: Expression nesting deeper than this is refused (the reference has a recursion limit too).
MAX_EXPR_DEPTH = 200

_DIALECT = Dialect.get_or_raise("postgres")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_CMP: dict[type[exp.Expr], ast.CmpOp] = {
    exp.EQ: "=",
    exp.NEQ: "<>",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}
#: Binary operators that parse but are not comparisons, as sqlparser prints them.
_OTHER_BINOPS: dict[type[exp.Expr], str] = {
    exp.Add: "+",
    exp.Sub: "-",
    exp.Mul: "*",
    exp.Div: "/",
    exp.Mod: "%",
    exp.DPipe: "||",
    exp.BitwiseAnd: "&",
    exp.BitwiseOr: "|",
    exp.BitwiseXor: "^",
    exp.BitwiseLeftShift: "<<",
    exp.BitwiseRightShift: ">>",
    exp.Pow: "^",
    exp.IntDiv: "DIV",
    exp.Xor: "XOR",
    exp.NullSafeEQ: "<=>",
}
#: Literal-like nodes the dialect has no literal for.
_OTHER_LITERALS = (exp.Null, exp.BitString, exp.ByteString, exp.National, exp.RawString, exp.UnicodeString)


def parse_sql(sql: str) -> ast.Statement:
    """Parse one statement of the HTTP ``/sql`` dialect; SqlError with the A.1/A.2 text otherwise."""
    if len(sql.encode("utf-8", "surrogatepass")) > MAX_SQL_LENGTH:
        raise SqlError(f'SQL query exceeds maximum allowed length: "{sql[:120]}..."')
    shaped = _by_shape(sql)
    return shaped if shaped is not None else _parse_cached(sql)


# --- statements that differ only in their literals -----------------------------------------------
#
# A point query is sent with a new literal each time (``… WHERE id = 17611``), so caching by text
# never hits, and sqlglot takes ~250 µs per statement. Such statements share a *shape*: the text
# with each plain literal (an unsigned integer, a quoted string without escapes) replaced by a
# sentinel literal of the same kind. A shape is parsed once; its tree is reused with the sentinels
# replaced by the statement's own literal texts. A shape is reused only when every sentinel came
# out of the parse as a whole literal text and nothing else contains one (a digit in a comment or a
# quoted identifier, say): otherwise, and for every statement that fails, the text is parsed as it
# is, so errors and every unusual statement are exactly as before.

#: A plain literal: an unsigned integer or a string without escapes, standing alone (not part of a
#: name, a decimal, ``X'…'``/``E'…'``, a quoted name).
_PLAIN_LITERAL = re.compile(r"""(?<![\w.'"$])(?:(\d+)(?![\w.'"$])|'([^'\\]*)'(?!['\w]))""")
#: Sentinels are ``<_SENTINEL_BASE + i>`` for integers and ``'\x01<i>\x01'`` for strings.
_SENTINEL_BASE = 7_391_000_000_000_000_000
_SENTINEL_MARK = str(_SENTINEL_BASE)[:15]
_MAX_SHAPED_LITERALS = 64


def _by_shape(sql: str) -> ast.Statement | None:
    """``sql`` parsed through its shape's cached tree, or None (parse the text itself)."""
    if "\x01" in sql or _SENTINEL_MARK in sql:  # could collide with a sentinel: not worth telling apart
        return None
    texts: list[str] = []
    parts: list[str] = []
    last = 0
    for m in _PLAIN_LITERAL.finditer(sql):
        if len(texts) == _MAX_SHAPED_LITERALS:
            return None
        i = len(texts)
        number = m.group(1)
        parts.append(sql[last : m.start()])
        if number is not None:
            texts.append(number)
            parts.append(str(_SENTINEL_BASE + i))
        else:
            texts.append(m.group(2))
            parts.append(f"'\x01{i}\x01'")
        last = m.end()
    if not texts:
        return None
    parts.append(sql[last:])
    shape = _shape_tree("".join(parts), len(texts))
    if shape is None:
        return None
    fill = {_sentinel(i, number): text for i, (text, number) in enumerate(zip(texts, shape[1], strict=True))}
    fill.update({"-" + k: "-" + v for k, v in fill.items()})
    return _fill(shape[0].tree, shape[0], fill)  # type: ignore[no-any-return]


def _sentinel(i: int, number: bool) -> str:
    return str(_SENTINEL_BASE + i) if number else f"\x01{i}\x01"


@lru_cache(maxsize=512)
def _shape_tree(shape: str, n: int) -> tuple[_Shape, tuple[bool, ...]] | None:
    """The tree of a shape and which of its ``n`` sentinels are numbers, or None when the shape's
    parse fails or does not carry each sentinel as a whole literal text."""
    numbers = tuple(str(_SENTINEL_BASE + i) in shape for i in range(n))
    try:
        tree = _parse_cached(shape)
    except SqlError:
        return None
    wanted = {_sentinel(i, numbers[i]) for i in range(n)}
    seen: set[str] = set()
    ok = True

    def check(text: str) -> None:
        nonlocal ok
        bare = text[1:] if text.startswith("-") else text
        if bare in wanted:
            seen.add(bare)
        elif "\x01" in text or _SENTINEL_MARK in text:
            ok = False  # a sentinel inside some other text: this shape cannot be reused

    carriers: set[int] = set()
    _walk_texts(tree, check, carriers)
    return (_Shape(tree, frozenset(carriers)), numbers) if ok and seen == wanted else None


@dataclass(frozen=True, slots=True)
class _Shape:
    tree: ast.Statement
    #: ids of the nodes of ``tree`` (which the cache keeps alive) holding a sentinel below them.
    carriers: frozenset[int]


def _walk_texts(node: object, visit: Callable[[str], None], carriers: set[int]) -> bool:
    """Visit every text below ``node``; True (and ``id(node)`` in ``carriers``) when one of them
    is a sentinel's."""
    if isinstance(node, str):
        visit(node)
        return node.lstrip("-").startswith(("\x01", _SENTINEL_MARK))
    if isinstance(node, tuple):
        items: Iterable[object] = node
    elif node is not None and hasattr(node, "__dataclass_fields__"):
        items = [getattr(node, name) for name in node.__dataclass_fields__]
    else:
        return False
    found = False
    for item in items:
        found = _walk_texts(item, visit, carriers) or found
    if found:
        carriers.add(id(node))
    return found


def _fill(node: Any, shape: _Shape, fill: dict[str, str]) -> Any:
    """``node`` with every text that is a sentinel replaced by its literal's text (the nodes
    without one below them are shared with the shape's tree)."""
    if isinstance(node, str):
        return fill.get(node, node)
    if id(node) not in shape.carriers:
        return node
    if isinstance(node, tuple):
        return tuple(_fill(item, shape, fill) for item in node)
    return type(node)(*(_fill(getattr(node, name), shape, fill) for name in node.__dataclass_fields__))


@lru_cache(maxsize=512)
def _parse_cached(sql: str) -> ast.Statement:
    # Statements are immutable values, so repeated queries (RLS rules, hot dashboards) parse once.
    try:
        tokens = _DIALECT.tokenize(sql)
    except TokenError as e:
        raise SqlError(f"sql parser error: {_first_line(str(e))}") from None
    chunks: list[list[Token]] = [[]]
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            chunks.append([])
        else:
            chunks[-1].append(tok)
    statements = [c for c in chunks if c]
    if not statements:
        raise SqlError("Empty SQL query")
    if len(statements) > 1:
        raise SqlError("Multiple SQL statements are not supported")
    toks = statements[0]
    text = sql[toks[0].start : toks[-1].end + 1]
    head = toks[0].token_type
    if head == TokenType.SHOW:
        return _show(toks, text)
    if head == TokenType.COMMAND:
        raise unsupported(text)
    try:
        trees = _DIALECT.parser(error_level=ErrorLevel.RAISE).parse(toks, sql)
    except ParseError as e:
        raise SqlError(f"sql parser error: {_parse_error_text(e)}") from None
    except RecursionError:
        raise SqlError(f"Recursion limit exceeded, nesting deeper than {MAX_EXPR_DEPTH}") from None
    except Exception:  # noqa: BLE001 - whatever sqlglot raises on client text refuses that text
        # sqlglot raises more than ParseError on input it cannot read: ValueError for
        # ``SET row_limit = LIMIT .`` ("Cannot convert empty name into var"), AttributeError
        # for ``{=``. Either is the statement's fault, not the server's.
        raise unsupported(text) from None
    roots = [t for t in trees if t is not None]
    if len(roots) != 1:  # defensive: the token split above already guarantees one
        raise SqlError("Multiple SQL statements are not supported" if roots else "Empty SQL query")
    return _statement(roots[0])


def _first_line(s: str) -> str:
    return s.strip().splitlines()[0] if s.strip() else s


def _parse_error_text(e: ParseError) -> str:
    if e.errors:
        err = e.errors[0]
        return f"{err.get('description')} at Line: {err.get('line')}, Column: {err.get('col')}"
    return _first_line(str(e))


def _sql(node: exp.Expr) -> str:
    return node.sql(dialect="postgres")


def _placeholder(node: exp.Placeholder) -> str:
    # sqlglot's postgres rendering of `:name` is `%(name)s`; show it as written.
    return "?" if node.args.get("jdbc") or not node.name else f":{node.name}"


def _show(toks: list[Token], text: str) -> ast.ShowVar:
    rest = text[len(toks[0].text) :].strip()
    if _IDENT.fullmatch(rest):
        return ast.ShowVar(rest)
    if len(rest) >= 2 and rest[0] == rest[-1] == '"' and '"' not in rest[1:-1]:
        return ast.ShowVar(rest[1:-1])
    raise unsupported(text)


def _statement(root: exp.Expr) -> ast.Statement:
    if isinstance(root, exp.Select):
        return _select(root)
    if isinstance(root, exp.Insert):
        return _insert(root)
    if isinstance(root, exp.Update):
        return _update(root)
    if isinstance(root, exp.Delete):
        return _delete(root)
    if isinstance(root, exp.Set):
        return _set(root)
    raise unsupported(_sql(root))


def _extra_args(node: exp.Expr, allowed: frozenset[str]) -> bool:
    """True when ``node`` uses anything beyond ``allowed`` (flags set to False don't count)."""
    return any(v not in (None, False, []) and k not in allowed for k, v in node.args.items())


# --- SELECT ------------------------------------------------------------------------------------

_SELECT_QUERY_ARGS = frozenset({"with_", "order", "offset", "locks", "fetch", "sort", "cluster", "distribute"})
_SELECT_ALLOWED = frozenset({"expressions", "from_", "joins", "where", "limit"})


def _select(sel: exp.Select) -> ast.Select:
    text = _sql(sel)
    # Query-level clauses (ORDER BY, OFFSET, WITH, FOR UPDATE) and select-level ones (DISTINCT,
    # GROUP BY, HAVING, …) are all "Unsupported: <statement>" in 1.12.
    if any(sel.args.get(k) for k in _SELECT_QUERY_ARGS) or _extra_args(sel, _SELECT_ALLOWED):
        raise unsupported(text)
    limit: str | None = None
    lim = sel.args.get("limit")
    if lim is not None:
        value = lim.args.get("expression")
        if lim.args.get("offset") or not (isinstance(value, exp.Literal) and not value.is_string):
            raise unsupported(text)
        limit = value.name
    from_ = sel.args.get("from_")
    if from_ is None:
        raise SqlError("A FROM clause is required")
    first = _table_ref(from_.this)
    joins = tuple(_join(j) for j in sel.args.get("joins") or [])
    project = _projection(list(sel.expressions))
    where = _where(sel.args.get("where"))
    select = ast.Select(project, first, joins, where, limit)
    return _qualify(select)


def _table_ref(node: exp.Expr) -> ast.TableRef:
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        raise SqlError(f"Unsupported FROM expression: {_sql(node)}")
    if node.args.get("db") or node.args.get("catalog"):
        raise SqlError(f"Multi-part names are not supported: {_sql(node)}")
    if _extra_args(node, frozenset({"this", "alias"})):
        raise SqlError(f"Unsupported FROM expression: {_sql(node)}")
    name = node.this.this
    alias = node.args.get("alias")
    if alias is None:
        return ast.TableRef(name, name)
    if alias.args.get("columns") or not isinstance(alias.this, exp.Identifier):
        raise SqlError(f"Unsupported FROM expression: {_sql(node)}")
    return ast.TableRef(name, alias.this.this)


def _join(j: exp.Join) -> ast.Join:
    args = j.args
    # sqlglot gives `FROM a, b` and `FROM a JOIN b` the same node shape except that only an
    # explicit JOIN records its (empty) `pivots` slot.
    explicit = "pivots" in args or args.get("kind") or args.get("side") or args.get("on") or args.get("method")
    if not explicit:
        raise SqlError("Implicit joins are not supported")
    kind = (args.get("kind") or "").upper()
    if args.get("side") or args.get("method") or args.get("using") or kind not in ("", "INNER", "CROSS"):
        raise SqlError("Non-inner joins are not supported")
    table = _table_ref(j.this)
    on = args.get("on")
    if on is None:
        return ast.Join(table, None)
    if not (isinstance(on, exp.EQ) and _is_colref(on.this) and _is_colref(on.expression)):
        raise SqlError("Non-inner joins are not supported")
    return ast.Join(table, (_colref(on.this), _colref(on.expression)))


def _is_colref(node: exp.Expr) -> bool:
    return isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier) and not node.args.get("db")


def _colref(node: exp.Column) -> ast.ColRef:
    table = node.args.get("table")
    return ast.Field(table.this, node.this.this) if table is not None else ast.Var(node.this.this)


def _projection(items: list[exp.Expr]) -> ast.Projection:
    if len(items) == 1:
        item = items[0]
        if isinstance(item, exp.Star):
            return ast.ProjectStar(None)
        if isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
            return ast.ProjectStar(_star_table(item))
        if isinstance(item, exp.Func):
            raise SqlError("Aggregate expressions must have column aliases")
        if isinstance(item, exp.Alias) and isinstance(item.this, exp.Func):
            func = item.this
            if isinstance(func, exp.Count) and isinstance(func.this, exp.Star) and not func.args.get("distinct"):
                return ast.ProjectCount(item.alias)
            raise SqlError(f"Unsupported aggregate function: {_sql(func)}")
    return ast.ProjectCols(tuple(_project_elem(i) for i in items))


def _star_table(col: exp.Column) -> str:
    table = col.args.get("table")
    if table is None or col.args.get("db"):
        raise SqlError(f"Unsupported projection expression: {_sql(col)}")
    return str(table.this)


def _project_elem(item: exp.Expr) -> tuple[ast.ColRef, str]:
    if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
        raise SqlError("Mixed wildcard projections are not supported")
    alias: str | None = None
    expr = item
    if isinstance(item, exp.Alias):
        alias, expr = item.alias, item.this
    if not _is_colref(expr):
        raise SqlError(f"Unsupported projection expression: {_sql(expr)}")
    ref = _colref(expr)  # type: ignore[arg-type]
    return ref, alias if alias is not None else ref.name


def _where(where: exp.Expr | None) -> ast.Expr | None:
    return None if where is None else parse_expr(where.this)


def parse_expr(node: exp.Expr, depth: int = 0) -> ast.Expr:
    """A WHERE/ON expression (A.2 predicates) from a sqlglot node."""
    if depth > MAX_EXPR_DEPTH:
        raise SqlError(f"Recursion limit exceeded, nesting deeper than {MAX_EXPR_DEPTH}")
    if isinstance(node, exp.Paren):
        return parse_expr(node.this, depth + 1)
    if isinstance(node, (exp.And, exp.Or)):
        op: Literal["and", "or"] = "and" if isinstance(node, exp.And) else "or"
        return ast.Log(op, parse_expr(node.this, depth + 1), parse_expr(node.expression, depth + 1))
    cmp = _CMP.get(type(node))
    if cmp is not None:
        return ast.Bin(cmp, parse_expr(node.this, depth + 1), parse_expr(node.expression, depth + 1))
    other = _OTHER_BINOPS.get(type(node))
    if other is not None:
        parse_expr(node.this, depth + 1)
        parse_expr(node.expression, depth + 1)
        raise SqlError(f"Unsupported binary operator: {other}")
    if isinstance(node, exp.Column):
        if not _is_colref(node):
            raise SqlError(f"Unsupported expression: {_sql(node)}")
        return _colref(node)
    if isinstance(node, exp.Placeholder):
        if node.name == "sender" and not node.args.get("jdbc"):
            return ast.Sender()
        raise SqlError(f"Unsupported literal expression: {_placeholder(node)}")
    return _literal(node, lambda n: SqlError(f"Unsupported expression: {_sql(n)}"))


def _literal(node: exp.Expr, otherwise: Callable[[exp.Expr], SqlError]) -> ast.Lit:
    """A literal token (incl. a signed number); ``otherwise(node)`` builds the error for the rest."""
    if isinstance(node, exp.Boolean):
        return ast.Lit("bool", "true" if node.this else "false")
    if isinstance(node, exp.Literal):
        return ast.Lit("str", node.this) if node.is_string else ast.Lit("num", node.this)
    if isinstance(node, exp.HexString):
        return ast.Lit("hex", node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        return ast.Lit("num", "-" + node.this.this)
    if isinstance(node, exp.Placeholder):
        raise SqlError(f"Unsupported literal expression: {_placeholder(node)}")
    if isinstance(node, _OTHER_LITERALS):
        raise SqlError(f"Unsupported literal expression: {_sql(node)}")
    raise otherwise(node)


def _qualify(sel: ast.Select) -> ast.Select:
    """Qualify bare column names with the single FROM alias; with joins they are an error."""
    refs: list[ast.ColRef] = []
    if isinstance(sel.project, ast.ProjectCols):
        refs.extend(r for r, _ in sel.project.items)
    for j in sel.joins:
        if j.on is not None:
            refs.extend(j.on)
    if sel.where is not None:
        _collect_refs(sel.where, refs)
    if not any(isinstance(r, ast.Var) for r in refs):
        return sel
    if sel.joins:
        raise SqlError("Names must be qualified when using joins")
    alias = sel.from_.alias
    project = sel.project
    if isinstance(project, ast.ProjectCols):
        project = ast.ProjectCols(tuple((qualify_expr(r, alias), n) for r, n in project.items))  # type: ignore[misc]
    where = None if sel.where is None else qualify_expr(sel.where, alias)
    return ast.Select(project, sel.from_, sel.joins, where, sel.limit)


def _collect_refs(e: ast.Expr, out: list[ast.ColRef]) -> None:
    if isinstance(e, (ast.Var, ast.Field)):
        out.append(e)
    elif isinstance(e, (ast.Bin, ast.Log)):
        _collect_refs(e.left, out)
        _collect_refs(e.right, out)


def qualify_expr(e: ast.Expr, alias: str) -> ast.Expr:
    """``e`` with every bare column name qualified by ``alias``."""
    if isinstance(e, ast.Var):
        return ast.Field(alias, e.name)
    if isinstance(e, ast.Bin):
        return ast.Bin(e.op, qualify_expr(e.left, alias), qualify_expr(e.right, alias))
    if isinstance(e, ast.Log):
        return ast.Log(e.op, qualify_expr(e.left, alias), qualify_expr(e.right, alias))
    return e


# --- DML, SET ----------------------------------------------------------------------------------


def _dml_table(node: exp.Expr, text: str) -> str:
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        raise unsupported(text)
    if node.args.get("db") or node.args.get("catalog"):
        raise SqlError(f"Multi-part names are not supported: {_sql(node)}")
    return str(node.this.this)


def _insert(ins: exp.Insert) -> ast.Insert:
    text = _sql(ins)
    if _extra_args(ins, frozenset({"this", "expression"})):
        raise unsupported(text)
    target = ins.this
    columns: tuple[str, ...] | None = None
    if isinstance(target, exp.Schema):
        columns = tuple(str(c.this) for c in target.expressions if isinstance(c, exp.Identifier))
        if len(columns) != len(target.expressions):
            raise unsupported(text)
        target = target.this
    table = _dml_table(target, text)
    values = ins.args.get("expression")
    if not isinstance(values, exp.Values) or _extra_args(values, frozenset({"expressions"})):
        raise unsupported(text)
    rows: list[tuple[ast.Lit, ...]] = []
    for row in values.expressions:
        items = row.expressions if isinstance(row, exp.Tuple) else [row]
        rows.append(
            tuple(_literal(v, lambda n: SqlError(f"Unsupported INSERT value: {_sql(n)}")) for v in items)
        )
    return ast.Insert(table, columns, tuple(rows))


def _update(upd: exp.Update) -> ast.Update:
    text = _sql(upd)
    if _extra_args(upd, frozenset({"this", "expressions", "where"})):
        raise unsupported(text)
    table_node = upd.this
    if isinstance(table_node, exp.Table) and table_node.args.get("alias") is not None:
        raise unsupported(text)
    table = _dml_table(table_node, text)
    assignments: list[tuple[str, ast.Lit]] = []
    for a in upd.expressions:
        if not (isinstance(a, exp.EQ) and isinstance(a.this, exp.Column) and isinstance(a.this.this, exp.Identifier)):
            raise unsupported(text)
        if a.this.args.get("table") is not None:
            raise unsupported(text)
        value = _literal(
            a.expression, lambda n: SqlError(f"Unsupported column/variable assignment expression: {_sql(n)}")
        )
        assignments.append((str(a.this.this.this), value))
    where = _where(upd.args.get("where"))
    return ast.Update(table, tuple(assignments), None if where is None else qualify_expr(where, table))


def _delete(de: exp.Delete) -> ast.Delete:
    text = _sql(de)
    if de.args.get("using") or de.args.get("tables"):
        raise SqlError("Multi-table DELETE is not supported")
    if _extra_args(de, frozenset({"this", "where"})):
        raise unsupported(text)
    node = de.this
    if not isinstance(node, exp.Table) or node.args.get("alias") is not None or not isinstance(node.this, exp.Identifier):
        raise SqlError(f"Unsupported table expression in DELETE: {_sql(node)}")
    table = _dml_table(node, text)
    where = _where(de.args.get("where"))
    return ast.Delete(table, None if where is None else qualify_expr(where, table))


def _set(st: exp.Set) -> ast.SetVar:
    text = _sql(st)
    items = st.expressions
    if _extra_args(st, frozenset({"expressions"})) or len(items) != 1:
        raise unsupported(text)
    item = items[0]
    eq = item.this if isinstance(item, exp.SetItem) else None
    if (
        eq is None
        or _extra_args(item, frozenset({"this"}))
        or not isinstance(eq, exp.EQ)
        or not _is_colref(eq.this)
        or eq.this.args.get("table") is not None
    ):
        raise unsupported(text)
    value = _literal(eq.expression, lambda n: unsupported(text))
    return ast.SetVar(str(eq.this.this.this), value)


def statement_shape(sql: str) -> tuple[str, str]:
    """What kind of statement sqlglot reads in ``sql``, for the subscription grammar's own
    rejection texts (B.1), which distinguish what the ``/sql`` dialect lumps together.

    Returns ``(kind, text)``: kind is ``"select"`` (a plain SELECT), ``"select_clauses"``
    (DISTINCT, GROUP BY, HAVING … but no query-level clause), ``"query_clauses"`` (ORDER BY,
    OFFSET, WITH, …), ``"set_operation"`` (UNION/INTERSECT/EXCEPT), ``"other"`` (anything that
    is not a query) or ``"invalid"`` (sqlglot cannot read it); text is the statement as
    rendered in ``Unsupported…`` messages. Only used on error paths.
    """
    try:
        tokens = [t for t in _DIALECT.tokenize(sql) if t.token_type != TokenType.SEMICOLON]
    except TokenError:
        return "invalid", sql
    if not tokens:
        return "invalid", sql
    if tokens[0].token_type not in (TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN):
        return "other", sql
    try:
        trees = [t for t in _DIALECT.parser(error_level=ErrorLevel.RAISE).parse(tokens, sql) if t is not None]
    except Exception:  # noqa: BLE001 - ParseError, RecursionError, or sqlglot's others (see _parse_cached)
        return "invalid", sql
    if len(trees) != 1:
        return "invalid", sql
    root = trees[0]
    text = _sql(root)
    if isinstance(root, exp.SetOperation):
        return "set_operation", text
    if not isinstance(root, exp.Select):
        return "other", text
    if any(root.args.get(k) for k in _SELECT_QUERY_ARGS):
        return "query_clauses", text
    if _extra_args(root, _SELECT_ALLOWED):
        return "select_clauses", text
    return "select", text
