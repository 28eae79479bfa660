"""The HTTP ``/sql`` response body (``sql-and-subscriptions.md`` A.7) from a :class:`SqlResult`.

``schema`` is the SATS-JSON ``ProductType`` of the result columns, ``rows`` the untyped
SATS-JSON of each row (positional arrays; sums ``[tag, payload]``; U256/I256 ``"0x…"``; byte
arrays as hex), ``stats`` the DML counters. The body is a JSON array with one element per
statement — always one here, since multi-statement requests are refused.
"""

from __future__ import annotations

from typing import Any

from hostnode.sql.execute import SqlResult
from sats.json import dumps, product_type_to_json, to_json_untyped


def render_statement(result: SqlResult) -> dict[str, Any]:
    """One ``SqlStmtResult`` object."""
    schema = result.schema
    ts = result.typespace
    return {
        "schema": product_type_to_json(schema),
        "rows": [to_json_untyped(schema, row, ts) for row in result.rows],
        "total_duration_micros": result.total_duration_micros,
        "stats": {
            "rows_inserted": result.stats.rows_inserted,
            "rows_deleted": result.stats.rows_deleted,
            "rows_updated": result.stats.rows_updated,
        },
    }


def render_response(result: SqlResult) -> list[dict[str, Any]]:
    """The response body as a JSON-able list (one statement result)."""
    return [render_statement(result)]


def render_response_bytes(result: SqlResult) -> bytes:
    """The response body, serialised (big integers stay exact)."""
    return dumps(render_response(result)).encode()
