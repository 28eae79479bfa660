"""Physical plans for :class:`~hostnode.sql.typecheck.LogicalQuery`: access paths and join order.

A plan is a left-deep sequence of :class:`Step`\\ s, one per relation. Each step fetches its
relation's rows through the cheapest access path the predicates allow:

* **point** — every column of an index is fixed by ``=`` (to a literal, or to a column of a
  relation bound by an earlier step: an index nested-loop join);
* **range** — a prefix of an ordered (btree/direct) index is fixed by ``=`` and/or the next
  column is bounded by ``<``/``<=``/``>``/``>=`` literals (incl. multi-column prefixes);
* **hash** — no usable index but an ``=`` to an earlier relation: the relation is read once
  (through its best literal-only access) into a hash table and probed per outer row;
* **scan** — none of the above.

Relations are ordered greedily: first the one with the best literal-only access, then
repeatedly the one with the best access given what is already bound (ties keep FROM order).
Every predicate is still evaluated, as soon as its relations are bound, so an access path only
has to return a superset of the matching rows. Estimates (for ``row_limit``) are heuristic,
as the reference's are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hostnode.schema import IndexSchema, TableSchema
from hostnode.sql.literals import resolve
from hostnode.sql.typecheck import Cmp, Col, Const, LogicalQuery, Rel, TExpr
from sats.bsatn import Codec, codec_for
from sats.types import ProductType

#: ``("c", value)``: a literal; ``("v", slot, col)``: a column of an earlier step's row.
KeySrc = tuple[Any, ...]
Bound = tuple[bool, KeySrc]  # (inclusive, source)

_FLIP: dict[str, str] = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass(frozen=True, slots=True)
class Access:
    """How one step fetches rows: a scan, or an index point/range scan with key sources."""

    kind: Literal["scan", "point", "range"]
    index: IndexSchema | None = None
    key: tuple[KeySrc, ...] = ()  # point: every index column; range: the equality prefix
    lower: Bound | None = None  # range: bound on the column after the prefix
    upper: Bound | None = None
    codecs: tuple[Codec, ...] = ()  # per index column, for the key and the bounds

    @property
    def dynamic(self) -> bool:
        """True when the key depends on an earlier step's row (re-evaluated per outer row)."""
        parts = list(self.key) + [b[1] for b in (self.lower, self.upper) if b is not None]
        return any(p[0] == "v" for p in parts)

    def rank(self) -> int:
        if self.kind == "point":
            return 4 if self.index is not None and self.index.unique else 3
        return 2 if self.kind == "range" else 0


@dataclass(frozen=True, slots=True)
class Step:
    """Bind relation ``rel`` to ``slot``; keep rows passing ``filters`` (all bound by now)."""

    rel: Rel
    slot: int
    access: Access
    hash_key: tuple[tuple[int, KeySrc], ...] | None  # hash join: (inner column, outer source)
    filters: tuple[TExpr, ...]
    estimate: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Steps in execution order; ``slots`` maps each alias to its position in a row binding."""

    steps: tuple[Step, ...]
    slots: dict[str, int]
    query: LogicalQuery

    @property
    def estimate(self) -> int:
        """Heuristic number of rows the plan produces (for ``row_limit``)."""
        n = 1
        for s in self.steps:
            n *= s.estimate
        return n

    def describe(self) -> list[str]:
        """One line per step (tests and debugging): ``alias: kind [index]``."""
        out = []
        for s in self.steps:
            kind = "hash" if s.hash_key is not None else s.access.kind
            ix = f" {s.access.index.name}" if s.access.index is not None else ""
            out.append(f"{s.rel.alias}: {kind}{ix}")
        return out


def _aliases(e: TExpr, out: set[str]) -> set[str]:
    if isinstance(e, Col):
        out.add(e.alias)
    elif not isinstance(e, Const):
        _aliases(e.left, out)
        _aliases(e.right, out)
    return out


@dataclass(slots=True)
class _Sargs:
    """What the predicates say about one relation's columns."""

    const_eq: dict[int, Any]
    join_eq: dict[int, list[tuple[str, int]]]  # column → [(other alias, other column)]
    lower: dict[int, tuple[bool, Any]]
    upper: dict[int, tuple[bool, Any]]


def _sargs(alias: str, conds: Sequence[TExpr]) -> _Sargs:
    s = _Sargs({}, {}, {}, {})
    for c in conds:
        if not isinstance(c, Cmp) or c.op == "<>":
            continue
        left, right, op = c.left, c.right, str(c.op)
        if not (isinstance(left, Col) and left.alias == alias):
            left, right, op = right, left, _FLIP[op]
        if not (isinstance(left, Col) and left.alias == alias):
            continue
        col = left.col
        if isinstance(right, Const):
            v = right.value
            if op == "=":
                s.const_eq.setdefault(col, v)
            elif op in (">", ">="):
                cur = s.lower.get(col)
                inc = op == ">="
                if cur is None or v > cur[1] or (v == cur[1] and not inc):
                    s.lower[col] = (inc, v)
            else:
                cur = s.upper.get(col)
                inc = op == "<="
                if cur is None or v < cur[1] or (v == cur[1] and not inc):
                    s.upper[col] = (inc, v)
        elif isinstance(right, Col) and right.alias != alias and op == "=":
            s.join_eq.setdefault(col, []).append((right.alias, right.col))
    return s


def _rangeable(table: TableSchema, ix: IndexSchema, k: int) -> bool:
    """Whether index element ``k`` can carry bounds: ordered, and for a one-column index whose
    column is a product, only a one-field product (Identity, Timestamp, …), whose BSATN is its
    field's."""
    if not ix.ordered:
        return False
    if len(ix.columns) == 1:
        ty = resolve(table.row_type.elements[ix.columns[0]].algebraic_type, table.typespace)
        return not isinstance(ty, ProductType) or len(ty.elements) == 1
    return True


def _best_access(rel: Rel, s: _Sargs, slots: dict[str, int] | None) -> Access:
    """The best access for ``rel`` given sargs; join equalities count only if ``slots`` binds them."""
    table = rel.table
    best = Access("scan")
    best_score: tuple[int, ...] = (0,)
    for ix in table.indexes:
        key: list[KeySrc] = []
        for c in ix.columns:
            src = _eq_source(s, c, slots)
            if src is None:
                break
            key.append(src)
        k = len(key)
        codecs = tuple(codec_for(table.row_type.elements[c].algebraic_type, table.typespace) for c in ix.columns)
        if k == len(ix.columns):
            acc = Access("point", ix, tuple(key), codecs=codecs)
            score = (acc.rank(), k, 0)
        elif ix.ordered and _rangeable(table, ix, k) and (k > 0 or ix.columns[k] in s.lower or ix.columns[k] in s.upper):
            c = ix.columns[k]
            lo = s.lower.get(c)
            hi = s.upper.get(c)
            acc = Access(
                "range",
                ix,
                tuple(key),
                None if lo is None else (lo[0], ("c", lo[1])),
                None if hi is None else (hi[0], ("c", hi[1])),
                codecs,
            )
            score = (2, k, (lo is not None) + (hi is not None))
        else:
            continue
        if score > best_score:
            best, best_score = acc, score
    return best


def _eq_source(s: _Sargs, col: int, slots: dict[str, int] | None) -> KeySrc | None:
    if col in s.const_eq:
        return ("c", s.const_eq[col])
    if slots is not None:
        for alias, other in s.join_eq.get(col, ()):
            if alias in slots:
                return ("v", slots[alias], other)
    return None


def build_plan(q: LogicalQuery, row_count: Callable[[int], int], *, first: str | None = None) -> Plan:
    """Order ``q``'s relations and pick each one's access path (module docstring).

    ``first``: the alias that must be the first step whatever its access (incremental
    subscription evaluation binds it to a transaction's changed rows and looks the others up).
    """
    sargs = {r.alias: _sargs(r.alias, q.conds) for r in q.rels}
    cond_aliases = [_aliases(c, set()) for c in q.conds]
    slots: dict[str, int] = {}
    remaining = list(q.rels)
    steps: list[Step] = []
    placed = [False] * len(q.conds)
    while remaining:
        choice: tuple[tuple[int, int], Rel, Access, tuple[tuple[int, KeySrc], ...] | None] | None = None
        for pos, rel in enumerate(remaining):
            if first is not None and not steps and rel.alias != first:
                continue
            s = sargs[rel.alias]
            acc = _best_access(rel, s, slots)
            hash_key = None
            rank = acc.rank()
            if not acc.dynamic and slots:
                joins = tuple(
                    (c, ("v", slots[a], oc)) for c, pairs in s.join_eq.items() for a, oc in pairs if a in slots
                )
                if joins and rank < 3:
                    hash_key, rank = joins, 1
            score = (rank, -pos)
            if choice is None or score > choice[0]:
                choice = (score, rel, acc, hash_key)
        assert choice is not None
        _, rel, acc, hash_key = choice
        remaining.remove(rel)
        slot = len(slots)
        slots[rel.alias] = slot
        filters = []
        for i, aliases in enumerate(cond_aliases):
            if not placed[i] and aliases <= slots.keys():
                placed[i] = True
                filters.append(q.conds[i])
        steps.append(Step(rel, slot, acc, hash_key, tuple(filters), _estimate(rel, acc, hash_key, row_count)))
    return Plan(tuple(steps), slots, q)


def _estimate(rel: Rel, acc: Access, hash_key: object, row_count: Callable[[int], int]) -> int:
    n = row_count(rel.table.table_id)
    if acc.kind == "point" and acc.index is not None and acc.index.unique:
        return min(n, 1)
    if acc.kind == "point" or hash_key is not None:
        return max(min(n, 1), n // 10)
    if acc.kind == "range":
        return max(min(n, 1), n // 3)
    return n
