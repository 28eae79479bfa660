"""Running a target under hypothesis: a fixed number of inputs, or batches until a deadline.

Hypothesis has no time limit of its own, so the long run (:func:`run_for`) repeats batches of
fresh random inputs until its time is up; a failing input stops it, shrunk to a minimal example
as usual. The example database is off: a run must not depend on what an earlier one stored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import Check, Target

__all__ = ["run_examples", "run_for"]

#: Inputs per batch of the long run: large enough that hypothesis's own start-up is amortised.
BATCH = 500


def run_examples(target: Target, check: Check, max_examples: int, *, derandomize: bool) -> int:
    """Run up to ``max_examples`` inputs of ``target`` through ``check``; the count it ran.

    ``derandomize`` makes the inputs a function of the target alone (the suite's short run).
    """
    count = 0

    def one(value: Any) -> None:
        nonlocal count
        count += 1
        check(value)

    test = settings(
        max_examples=max_examples,
        derandomize=derandomize,
        database=None,
        deadline=None,  # as the suite's ``ci`` profile: time per input judges the machine, not the code
        # Fuzzed inputs are large and often filtered on purpose; these checks judge the strategy.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )(given(target.inputs())(one))
    test()
    return count


def run_for(target: Target, seconds: float, workdir: Path) -> int:
    """Run ``target`` with fresh random inputs for about ``seconds``; the number of inputs run."""
    total = 0
    with target.harness(workdir) as check:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            total += run_examples(target, check, BATCH, derandomize=False)
    return total
