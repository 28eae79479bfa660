"""Placement: replica counts, spreading replicas and leaderships, and the errors."""

from __future__ import annotations

import pytest

from clustermeta.records import DatabaseRecord
from controlplane.placement import (
    Load,
    PlacementError,
    choose_leader,
    choose_nodes,
    load_of,
    place,
    replica_count,
)
from sats.identity import Identity

OWNER = Identity.from_claims("localhost", "owner")


def record(n: int, replicas: list[str], leader: str | None) -> DatabaseRecord:
    return DatabaseRecord(Identity.from_claims("localhost", f"db{n}"), OWNER, replicas=replicas, leader=leader)


@pytest.mark.parametrize(("live", "expected"), [(1, 1), (2, 1), (3, 3), (7, 3)])
def test_default_is_three_with_three_live_nodes_else_one(live: int, expected: int) -> None:
    assert replica_count(0, live) == expected


def test_counts_up_to_the_live_nodes_even_ones_included() -> None:
    assert [replica_count(n, 5) for n in (1, 2, 3, 4, 5)] == [1, 2, 3, 4, 5]


def test_more_replicas_than_live_nodes_is_refused_with_the_numbers() -> None:
    with pytest.raises(PlacementError, match=r"^num_replicas=5 needs 5 live host nodes, but only 3 are live$"):
        replica_count(5, 3)
    with pytest.raises(PlacementError, match="only 1 is live"):
        replica_count(2, 1)
    with pytest.raises(PlacementError, match="no host node is live"):
        replica_count(0, 0)


def test_least_loaded_nodes_first_and_leaders_spread() -> None:
    load = load_of([record(1, ["a", "b", "c"], "a"), record(2, ["a", "b"], "b")])
    assert choose_nodes(["a", "b", "c", "d"], 2, load) == ["d", "c"]
    # Among equally loaded nodes the one leading fewest databases leads.
    replicas, leader = place(["a", "b", "c"], 3, load)
    assert sorted(replicas) == ["a", "b", "c"] and leader == "c" and replicas[0] == "c"


def test_successive_placements_spread_evenly() -> None:
    records: list[DatabaseRecord] = []
    for i in range(6):
        replicas, leader = place(["n1", "n2", "n3", "n4", "n5", "n6"], 3, load_of(records))
        assert len(set(replicas)) == 3
        records.append(record(i, replicas, leader))
    load = load_of(records)
    assert set(load.replicas.values()) == {3} and set(load.leaders.values()) == {1}


def test_preferred_leader_and_exclusions() -> None:
    load = Load()
    assert choose_leader(["a", "b"], load, preferred="b") == "b"
    assert choose_leader(["a", "b"], load, preferred="z") == "a"
    assert choose_nodes(["a", "b", "c"], 1, load, exclude=["a", "b"]) == ["c"]
    with pytest.raises(PlacementError):
        choose_nodes(["a"], 1, load, exclude=["a"])
