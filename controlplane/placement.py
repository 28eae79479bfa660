"""Where a database's replicas go: pure functions over the live nodes and the current records.

A database gets ``num_replicas`` replicas on distinct live host nodes, the nodes holding fewest
replicas first; its leader is the chosen node that leads fewest databases, so leaderships spread
as evenly as replicas do. Ties break on the node id, so a placement is a function of its inputs.

Replica counts (``PublishRequest.num_replicas``):

* ``0`` means the default: 3 when at least 3 nodes are live, else 1.
* ``1``..number of live nodes are allowed. Odd counts (1, 3, 5) are the useful ones: ``n`` voting
  replicas survive ``(n - 1) // 2`` failures, so 4 survives no more than 3 does and 2 no more than
  1 does. Even counts are accepted all the same: they are sound (a commit needs ``n // 2 + 1`` of
  them fsynced: 2 of 2, 3 of 4) and a membership change passes through them anyway (moving a
  replica of 3 goes 3 → 4 → 3), and 2 is a legitimate choice for a synchronous second copy on
  another disk when availability matters less than durability.
* More than the live nodes is refused (400): two replicas on one node would share its failures.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from clustermeta.records import DatabaseRecord

__all__ = [
    "DEFAULT_REPLICAS",
    "Load",
    "PlacementError",
    "choose_leader",
    "choose_nodes",
    "load_of",
    "place",
    "replica_count",
]

#: Replicas of a new database when the request leaves it to us and enough nodes are live.
DEFAULT_REPLICAS = 3


class PlacementError(ValueError):
    """The request cannot be placed; the message says why (a 400 for the caller)."""


@dataclass
class Load:
    """How many replicas and leaderships each node holds."""

    replicas: dict[str, int] = field(default_factory=dict)
    leaders: dict[str, int] = field(default_factory=dict)

    def replicas_on(self, node: str) -> int:
        """Replicas (voters and learners) on ``node``."""
        return self.replicas.get(node, 0)

    def leaders_on(self, node: str) -> int:
        """Databases ``node`` leads."""
        return self.leaders.get(node, 0)

    def add(self, record: DatabaseRecord) -> None:
        """Count one more record's replicas and leader."""
        for node in record.nodes():
            self.replicas[node] = self.replicas.get(node, 0) + 1
        if record.leader is not None:
            self.leaders[record.leader] = self.leaders.get(record.leader, 0) + 1


def load_of(records: Iterable[DatabaseRecord]) -> Load:
    """The load every record puts on the nodes."""
    load = Load()
    for record in records:
        load.add(record)
    return load


def replica_count(requested: int, live: int, *, default: int = DEFAULT_REPLICAS) -> int:
    """The number of replicas a new database gets; raises :class:`PlacementError`."""
    if live <= 0:
        raise PlacementError("no host node is live: the database cannot be placed")
    if requested < 0:
        raise PlacementError(f"num_replicas must be at least 1, got {requested}")
    if requested == 0:
        return default if live >= default else 1
    if requested > live:
        raise PlacementError(
            f"num_replicas={requested} needs {requested} live host nodes, but only {live} "
            f"{'is' if live == 1 else 'are'} live"
        )
    return requested


def choose_nodes(live: Iterable[str], count: int, load: Load, *, exclude: Collection[str] = ()) -> list[str]:
    """``count`` distinct nodes of ``live`` (not in ``exclude``), those holding fewest replicas first."""
    candidates = sorted((n for n in set(live) if n not in exclude), key=lambda n: (load.replicas_on(n), n))
    if len(candidates) < count:
        raise PlacementError(f"{count} host nodes needed, only {len(candidates)} available")
    return candidates[:count]


def choose_leader(nodes: Iterable[str], load: Load, *, preferred: str | None = None) -> str:
    """The node of ``nodes`` to lead: ``preferred`` if among them, else the one leading fewest."""
    pool = list(nodes)
    if not pool:
        raise PlacementError("no node to lead")
    if preferred is not None and preferred in pool:
        return preferred
    return min(pool, key=lambda n: (load.leaders_on(n), load.replicas_on(n), n))


def place(live: Iterable[str], requested: int, load: Load, *, default: int = DEFAULT_REPLICAS) -> tuple[list[str], str]:
    """Replicas (the leader first) and the leader of a new database."""
    live = list(live)
    count = replica_count(requested, len(live), default=default)
    nodes = choose_nodes(live, count, load)
    leader = choose_leader(nodes, load)
    return [leader, *(n for n in nodes if n != leader)], leader
