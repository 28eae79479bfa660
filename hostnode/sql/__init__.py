"""The SQL engine behind ``POST /v1/database/:name/sql`` (``sql-and-subscriptions.md`` Part A, C).

Pipeline, one module per stage: :mod:`~hostnode.sql.parser` (text → :mod:`~hostnode.sql.ast`,
exact rejection texts) → :mod:`~hostnode.sql.typecheck` (names, literal typing, visibility,
row-level security) → :mod:`~hostnode.sql.plan` (index point/range scans, index and hash
joins) → :mod:`~hostnode.sql.execute` (rows, DML, SET/SHOW) → :mod:`~hostnode.sql.render`
(the JSON body). Every refusal is a :class:`SqlError` whose text is the client-facing message.

Typical HTTP use::

    stmt = parse_sql(body)                       # SqlError → 400
    if mutates(stmt):                            # DML/SET: on the writer thread
        result = worker.call(lambda db: execute_sql(db, stmt, caller))
        if not db.wait_durable(result.offset):   # timed out: the outcome is unknown
            ...
    else:                                        # queries: any thread, last checkpoint
        result = execute_sql(db, stmt, caller)
    body = render_response_bytes(result)
"""

from hostnode.sql.ast import Statement, mutates
from hostnode.sql.errors import SqlError
from hostnode.sql.execute import (
    SqlResult,
    SqlStats,
    execute_in_tx,
    execute_point_query,
    execute_sql,
    system_var,
)
from hostnode.sql.parser import parse_sql
from hostnode.sql.render import render_response, render_response_bytes, render_statement

__all__ = [
    "SqlError",
    "SqlResult",
    "SqlStats",
    "Statement",
    "execute_in_tx",
    "execute_point_query",
    "execute_sql",
    "mutates",
    "parse_sql",
    "render_response",
    "render_response_bytes",
    "render_statement",
    "system_var",
]
