"""``--fuel-budget`` / ``--time-budget``: the help names the server's real defaults, and a value
given reaches the databases' configuration while an absent one leaves the default."""

from __future__ import annotations

import argparse

import pytest

from hostnode.budgets import DEFAULT_FUEL_BUDGET, DEFAULT_TIME_BUDGET_S, REFERENCE_DEFAULT_BUDGET
from hostnode.database import DatabaseConfig
from orrery.budget_options import FUEL_DEFAULT_TEXT, TIME_DEFAULT_TEXT, add_budget_options, budgets_of


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_budget_options(parser)
    return parser.parse_args(argv)


def test_the_help_states_the_servers_defaults() -> None:
    assert FUEL_DEFAULT_TEXT.startswith(f"{DEFAULT_FUEL_BUDGET:,},")
    assert FUEL_DEFAULT_TEXT.endswith(f"{REFERENCE_DEFAULT_BUDGET:,}")
    assert TIME_DEFAULT_TEXT.startswith(f"{DEFAULT_TIME_BUDGET_S:g};")


def test_given_budgets_reach_the_database_config_and_absent_ones_keep_the_default() -> None:
    assert DatabaseConfig(**budgets_of(_parse()).database_config()) == DatabaseConfig()
    config = DatabaseConfig(**budgets_of(_parse("--fuel-budget", "5000", "--time-budget", "2.5")).database_config())
    assert (config.fuel_budget, config.time_budget_s) == (5000, 2.5)
    only_time = DatabaseConfig(**budgets_of(_parse("--time-budget", "3")).database_config())
    assert (only_time.fuel_budget, only_time.time_budget_s) == (DEFAULT_FUEL_BUDGET, 3.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--time-budget", "0"], "--time-budget must be a positive number of seconds, not 0.0"),
        (["--time-budget", "inf"], "--time-budget must be a positive number of seconds, not inf"),
        (["--fuel-budget", "0"], "--fuel-budget must be a positive number of fuel units, not 0"),
    ],
)
def test_bad_budgets_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        budgets_of(_parse(*argv))


def test_orrery_start_offers_every_transport_of_the_server() -> None:
    from orrery import standalone
    from orrery.cli import DEFAULT_STANDALONE_TRANSPORT, STANDALONE_TRANSPORTS

    assert STANDALONE_TRANSPORTS == standalone.TRANSPORTS
    assert DEFAULT_STANDALONE_TRANSPORT == standalone.DEFAULT_TRANSPORT
