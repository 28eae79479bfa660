"""What one query by a caller who does not own the database may cost (README, "Limits").

1.12 bounds such queries only by ``row_limit`` (an estimate, unset by default), so one
anonymous self-join can run for seconds and answer with tens of megabytes. Here every query by
a non-owner runs under four limits, each a system variable the owner may ``SET`` (the value
applies from the next query on; unset means the default below):

* ``max_rows_examined`` — rows the evaluation considers: each candidate row at each step of
  a join, plus the rows a hash join reads to build its table;
* ``max_rows_returned`` and ``max_result_bytes`` — the answer's rows and their BSATN size;
* ``query_timeout_ms`` — wall time, checked every :data:`CHECK_EVERY` rows examined, so a
  query that examines fewer rows never reads the clock.

The owner's own queries run unbounded, as ``row_limit`` leaves them. A query over a limit
stops there with a :class:`SqlError` naming the limit; nothing of it is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hostnode.sql.errors import SqlError

#: The defaults for non-owners: generous for point and range queries and for reading a
#: table of tens of thousands of rows, and well under what stalls the server or its memory.
DEFAULTS: dict[str, int] = {
    "max_rows_examined": 1_000_000,
    "max_rows_returned": 100_000,
    "max_result_bytes": 16 << 20,
    "query_timeout_ms": 5_000,
}

#: Rows examined between two looks at the clock.
CHECK_EVERY = 1024


def over_limit(var: str, what: str) -> SqlError:
    """The error of a query stopped by limit ``var`` (``what`` says how far it got)."""
    return SqlError(
        f"the query exceeds {var} ({what}); the database owner may change it with SET {var} = <n>"
    )


@dataclass(slots=True)
class QueryLimits:
    """The limits one query runs under."""

    max_rows_examined: int = DEFAULTS["max_rows_examined"]
    max_rows_returned: int = DEFAULTS["max_rows_returned"]
    max_result_bytes: int = DEFAULTS["max_result_bytes"]
    query_timeout_ms: int = DEFAULTS["query_timeout_ms"]


class QueryMeter:
    """Counts one query's rows examined, rows returned and bytes against its limits.

    Examined rows are counted down in a caller-held budget (one subtraction per row in the
    evaluation loop); :meth:`refill` runs when it goes negative, checks the total and the
    clock, and hands out the next budget.
    """

    __slots__ = ("limits", "_deadline", "_granted", "returned", "result_bytes")

    def __init__(self, limits: QueryLimits) -> None:
        self.limits = limits
        self._deadline = time.monotonic() + limits.query_timeout_ms / 1000
        self._granted = 0
        self.returned = 0
        self.result_bytes = 0

    def first_budget(self) -> int:
        """Rows the query may examine before the first :meth:`refill`."""
        self._granted = min(CHECK_EVERY, self.limits.max_rows_examined)
        return self._granted

    def refill(self, left: int) -> int:
        """Called with the budget gone negative (``left`` < 0): check the limits, return the next."""
        examined = self._granted - left
        limits = self.limits
        if examined > limits.max_rows_examined:
            raise over_limit("max_rows_examined", f"more than {limits.max_rows_examined} rows examined")
        if time.monotonic() > self._deadline:
            raise over_limit("query_timeout_ms", f"still running after {limits.query_timeout_ms} ms")
        budget = min(CHECK_EVERY, limits.max_rows_examined - examined)
        self._granted = examined + budget
        return budget

    def emit(self, nbytes: int) -> None:
        """Count one returned row of ``nbytes`` BSATN bytes."""
        self.returned += 1
        self.result_bytes += nbytes
        limits = self.limits
        if self.returned > limits.max_rows_returned:
            raise over_limit("max_rows_returned", f"more than {limits.max_rows_returned} rows")
        if self.result_bytes > limits.max_result_bytes:
            raise over_limit("max_result_bytes", f"more than {limits.max_result_bytes} bytes of rows")
