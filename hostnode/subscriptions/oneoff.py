"""One-off queries (``OneOffQuery``, sql-and-subscriptions.md B.7).

Compiled with the subscription grammar (one returned table, ``*``/``t.*`` only) but without the
index and table-count checks; row-level security, the row limit and the per-query limits
(hostnode/sql/limits.py) apply to non-owners; one read snapshot. The answer is rows of the return table or an error text, never both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hostnode.sql.errors import SqlError
from hostnode.sql.execute import query_limits, query_raw_rows, system_var
from hostnode.sql.limits import QueryMeter
from hostnode.sql.plan import build_plan
from hostnode.sql.typecheck import SchemaView
from hostnode.subscriptions.compile import compile_query
from hostnode.subscriptions.results import OneOffResult
from sats.identity import Identity


def one_off_query(tx: Any, sql: str, caller: Identity, *, owner: Identity, rls: Sequence[str] = ()) -> OneOffResult:
    """Run ``sql`` once in ``tx`` (any consistent read view) as ``caller``."""
    start = time.perf_counter_ns()
    is_owner = caller == owner
    try:
        view = SchemaView(tx.tables(), caller=caller, is_owner=is_owner, rls=rls)
        cq = compile_query(sql, view, one_off=True)
        if not is_owner:
            limit = system_var(tx, "row_limit")
            if limit is not None:
                estimate = sum(build_plan(f, tx.row_count).estimate for f in cq.fragments)
                if estimate > limit:
                    raise SqlError(f"Estimated cardinality ({estimate} rows) exceeds limit ({limit} rows)")
        meter = None if is_owner else QueryMeter(query_limits(tx))
        rows: list[bytes] = []
        for fragment in cq.fragments:
            rows.extend(query_raw_rows(tx, fragment, meter)[0])
    except SqlError as e:
        return OneOffResult(_micros(start), error=e.message)
    return OneOffResult(_micros(start), cq.table_name, tuple(rows), table_id=cq.table_id)


def _micros(start_ns: int) -> int:
    return (time.perf_counter_ns() - start_ns) // 1000
