"""``--fuel-budget`` and ``--time-budget``: how long one reducer call may run, for every process
that runs databases (``orrery start``, ``python -m orrery.standalone``, ``orrery hostnode``).

The CLI is installed without the server, so the defaults are only named here (in the help); the
server's own (``hostnode/budgets.py``) apply when an option is not given, and a test keeps the
two in step.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Budgets", "add_budget_options", "budgets_of"]

#: The defaults as the help states them (tests/cli/test_budget_options.py checks them).
FUEL_DEFAULT_TEXT = "10,000,000,000, a few seconds of wasm; SpacetimeDB 1.12: 120,000,000,000,000"
TIME_DEFAULT_TEXT = "10; SpacetimeDB 1.12 has no such limit"


@dataclass(frozen=True)
class Budgets:
    """The budgets a command line asked for; None leaves the server's default."""

    fuel: int | None = None
    time_s: float | None = None

    def database_config(self) -> dict[str, Any]:
        """The ``DatabaseConfig`` fields these set."""
        fields: dict[str, Any] = {}
        if self.fuel is not None:
            fields["fuel_budget"] = self.fuel
        if self.time_s is not None:
            fields["time_budget_s"] = self.time_s
        return fields


def add_budget_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--fuel-budget N`` and ``--time-budget SECONDS``."""
    parser.add_argument(
        "--fuel-budget", type=int, default=None, metavar="N",
        help=f"wasmtime fuel one reducer call may use before it is out of energy (default {FUEL_DEFAULT_TEXT})",
    )  # fmt: skip
    parser.add_argument(
        "--time-budget", type=float, default=None, metavar="SECONDS",
        help="wall-clock seconds one reducer call may run, host calls included, before it is stopped "
        f"(default {TIME_DEFAULT_TEXT})",
    )  # fmt: skip


def budgets_of(args: argparse.Namespace) -> Budgets:
    """The budgets the command line asks for; ValueError names a bad one."""
    fuel, time_s = args.fuel_budget, args.time_budget
    if fuel is not None and fuel <= 0:
        raise ValueError(f"--fuel-budget must be a positive number of fuel units, not {fuel}")
    if time_s is not None and not (math.isfinite(time_s) and time_s > 0):
        raise ValueError(f"--time-budget must be a positive number of seconds, not {time_s}")
    return Budgets(fuel, time_s)
