"""``--fuel-budget`` and ``--time-budget``: how long one reducer call may run, for every process
that runs databases (``orrery start``, ``python -m orrery.standalone``, ``orrery hostnode``)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from hostnode.budgets import DEFAULT_FUEL_BUDGET, DEFAULT_TIME_BUDGET_S, REFERENCE_DEFAULT_BUDGET

__all__ = ["Budgets", "add_budget_options", "budgets_of"]


@dataclass(frozen=True)
class Budgets:
    """A call's budgets: fuel (1.12's energy) and wall-clock seconds."""

    fuel: int = DEFAULT_FUEL_BUDGET
    time_s: float = DEFAULT_TIME_BUDGET_S


def add_budget_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--fuel-budget N`` and ``--time-budget SECONDS``."""
    parser.add_argument(
        "--fuel-budget", type=int, default=DEFAULT_FUEL_BUDGET, metavar="N",
        help=f"wasmtime fuel one reducer call may use before it is out of energy (default {DEFAULT_FUEL_BUDGET:,}, "
        f"a few seconds of wasm; SpacetimeDB 1.12: {REFERENCE_DEFAULT_BUDGET:,})",
    )  # fmt: skip
    parser.add_argument(
        "--time-budget", type=float, default=DEFAULT_TIME_BUDGET_S, metavar="SECONDS",
        help=f"wall-clock seconds one reducer call may run, host calls included, before it is stopped "
        f"(default {DEFAULT_TIME_BUDGET_S:g}; SpacetimeDB 1.12 has no such limit)",
    )  # fmt: skip


def budgets_of(args: argparse.Namespace) -> Budgets:
    """The budgets the command line asks for; ValueError names a bad one."""
    if args.fuel_budget <= 0:
        raise ValueError(f"--fuel-budget must be a positive number of fuel units, not {args.fuel_budget}")
    if not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise ValueError(f"--time-budget must be a positive number of seconds, not {args.time_budget}")
    return Budgets(args.fuel_budget, args.time_budget)
