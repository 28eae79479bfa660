"""The SQL dialect's own small syntax tree (``sql-and-subscriptions.md`` A.2).

:mod:`hostnode.sql.parser` maps sqlglot's tree onto these frozen dataclasses, rejecting every
construct the dialect lacks; :mod:`hostnode.sql.typecheck` resolves names and types on them.
Identifiers are kept exactly as written (case-sensitive, never folded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Comparison operators, spelled as in error messages.
CmpOp = Literal["=", "<>", "<", "<=", ">", ">="]
LitKind = Literal["bool", "num", "str", "hex"]


@dataclass(frozen=True, slots=True)
class Var:
    """An unqualified column name (``age``); qualified by the parser when there is no join."""

    name: str


@dataclass(frozen=True, slots=True)
class Field:
    """A qualified column reference ``alias.col``."""

    table: str
    name: str


@dataclass(frozen=True, slots=True)
class Lit:
    """A literal token. ``text`` is what typing parses (hex without its prefix, a signed number
    with its sign, a string without quotes); bools are ``"true"``/``"false"``."""

    kind: LitKind
    text: str


@dataclass(frozen=True, slots=True)
class Sender:
    """The ``:sender`` parameter: the caller's identity, typed like a hex literal."""


@dataclass(frozen=True, slots=True)
class Bin:
    """``left op right`` for a comparison operator."""

    op: CmpOp
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Log:
    """``left AND right`` / ``left OR right``."""

    op: Literal["and", "or"]
    left: Expr
    right: Expr


Expr = Var | Field | Lit | Sender | Bin | Log
ColRef = Var | Field


@dataclass(frozen=True, slots=True)
class ProjectStar:
    """``*`` (``table`` None) or ``alias.*``."""

    table: str | None


@dataclass(frozen=True, slots=True)
class ProjectCount:
    """``COUNT(*) AS alias``."""

    alias: str


@dataclass(frozen=True, slots=True)
class ProjectCols:
    """A list of column references with their output names."""

    items: tuple[tuple[ColRef, str], ...]


Projection = ProjectStar | ProjectCount | ProjectCols


@dataclass(frozen=True, slots=True)
class TableRef:
    """A table in FROM/JOIN; ``alias`` is the table name when no alias was given."""

    name: str
    alias: str


@dataclass(frozen=True, slots=True)
class Join:
    """``JOIN table [ON left = right]`` (no ON: a cross join)."""

    table: TableRef
    on: tuple[ColRef, ColRef] | None


@dataclass(frozen=True, slots=True)
class Select:
    """``SELECT proj FROM from {JOIN} [WHERE] [LIMIT]``; ``limit`` is the literal's text."""

    project: Projection
    from_: TableRef
    joins: tuple[Join, ...]
    where: Expr | None
    limit: str | None


@dataclass(frozen=True, slots=True)
class Insert:
    """``INSERT INTO table [(cols)] VALUES (lits), …``."""

    table: str
    columns: tuple[str, ...] | None
    rows: tuple[tuple[Lit, ...], ...]


@dataclass(frozen=True, slots=True)
class Update:
    """``UPDATE table SET col = lit, … [WHERE]``."""

    table: str
    assignments: tuple[tuple[str, Lit], ...]
    where: Expr | None


@dataclass(frozen=True, slots=True)
class Delete:
    """``DELETE FROM table [WHERE]``."""

    table: str
    where: Expr | None


@dataclass(frozen=True, slots=True)
class SetVar:
    """``SET name = lit`` (system variable, owner only)."""

    name: str
    value: Lit


@dataclass(frozen=True, slots=True)
class ShowVar:
    """``SHOW name``."""

    name: str


Statement = Select | Insert | Update | Delete | SetVar | ShowVar


def mutates(stmt: Statement) -> bool:
    """True for statements that must run as a write transaction on the writer thread."""
    return isinstance(stmt, (Insert, Update, Delete, SetVar))
