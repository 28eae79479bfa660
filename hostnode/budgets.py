"""How long one call into a module may run: the defaults (no imports, so command lines can show
them without loading wasmtime). README, "Limits", compares them with 1.12's."""

from __future__ import annotations

__all__ = ["DEFAULT_FUEL_BUDGET", "DEFAULT_TIME_BUDGET_S", "REFERENCE_DEFAULT_BUDGET"]

#: SpacetimeDB's default per-call budget (FunctionBudget::DEFAULT_BUDGET, about a minute of wasm).
REFERENCE_DEFAULT_BUDGET = 120_000_000_000_000
#: Orrery's default budget: ~10^10 fuel is a few seconds of wasm here, so a runaway reducer stops
#: long before it could hold a database for a minute. Configurable per host process.
DEFAULT_FUEL_BUDGET = 10_000_000_000
#: Orrery's default wall-clock budget of one call, in seconds (1.12 has none: only fuel). Fuel
#: does not count time spent in host imports, so a loop of imports could otherwise run for hours.
DEFAULT_TIME_BUDGET_S = 10.0
