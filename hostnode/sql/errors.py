"""The one exception the SQL engine raises: its message is the exact text the client sees.

The HTTP layer turns a :class:`SqlError` into ``400`` with ``str(err)`` as the plain-text body
(``sql-and-subscriptions.md`` A.1–A.6 give the texts). Anything else escaping the engine is a
bug or an infrastructure failure (LMDB, closed database) and maps to 500.
"""

from __future__ import annotations


class SqlError(Exception):
    """A statement the engine refuses or could not run; ``message`` is user-facing."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def not_in_scope(name: str) -> SqlError:
    """``\\`<name>\\` is not in scope`` (unknown column or alias)."""
    return SqlError(f"`{name}` is not in scope")


def no_such_table(name: str) -> SqlError:
    """The same text for a missing table and one the caller may not see (A.3)."""
    return SqlError(f"no such table: `{name}`. If the table exists, it may be marked private.")


def unexpected_type(found: str, expected: str) -> SqlError:
    """The 1.12 ``UnexpectedType`` text; the first slot is the type actually found."""
    return SqlError(f"Unexpected type: (expected) {found} != {expected} (inferred)")


def invalid_literal(text: str, ty: str) -> SqlError:
    """A literal whose text does not parse at the type it is compared with or stored into."""
    return SqlError(f"The literal expression `{text}` cannot be parsed as type `{ty}`")


def unsupported(what: str) -> SqlError:
    """``Unsupported: <statement or select text>``."""
    return SqlError(f"Unsupported: {what}")
