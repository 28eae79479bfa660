"""The short fuzz run of the suite: every target, a fixed set of inputs (derandomized), so a
regression in any decoder's error handling or an HTTP route answering 5xx fails ``make test``.

The long run is ``make fuzz`` (:mod:`tests.fuzz.__main__`); explicit examples of what it found
live beside the code they test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.runner import run_examples
from tests.fuzz.targets import TARGETS

#: Inputs per target in the suite: enough to cross every decoder's main paths, cheap on a slow machine.
EXAMPLES = {"http": 200, "websocket": 150}
DEFAULT_EXAMPLES = 300


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_input_gets_a_clean_answer(name: str, tmp_path: Path) -> None:
    target = TARGETS[name]
    examples = EXAMPLES.get(name, DEFAULT_EXAMPLES)
    with target.harness(tmp_path) as check:
        ran = run_examples(target, check, examples, derandomize=True)
    assert ran > examples // 2  # the strategy really produced inputs, not mostly rejections
