"""The cluster control plane's settings: one dataclass, filled from flags by the process."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClusterConfig"]


@dataclass
class ClusterConfig:
    """Everything the cluster control plane can be told (times in seconds)."""

    #: This control plane's id (``/controlplanes/<id>``) and the address of its ControlPlane service.
    id: str = "controlplane"
    address: str = ""
    #: Its metrics URL (``http://host:port/metrics``), registered beside the address; empty: none.
    metrics: str = ""
    #: TTL of this control plane's lease: a standby takes over about this long after it dies.
    lease_ttl: float = 2.0
    #: Replicas of a new database when the publish does not say (3 needs 3 live nodes, else 1).
    default_replicas: int = 3
    #: Deadline of the small host-node calls (Promise, Assign, Status, Delete).
    rpc_timeout: float = 2.0
    #: Deadline of an Install (it compiles the module and runs ``init`` on a majority).
    install_timeout: float = 120.0
    #: How often the reconcile loop looks for leaderless databases, dead leaders and leftovers.
    reconcile_interval: float = 0.5
    #: Longest wait between election attempts of a database with no reachable majority.
    max_election_backoff: float = 5.0
    #: Elections running at once (each is a few small RPCs and two store writes).
    max_concurrent_elections: int = 64
    #: A ``creating`` record nobody is publishing for this long is abandoned and cleaned up.
    abandoned_create_timeout: float = 600.0
    #: How long a publish waits for a leaderless database to get a leader before answering 503.
    leader_wait: float = 5.0
    #: Default deadline of a cluster operation (add/move replica, transfer, drain, verify).
    operation_timeout: float = 120.0
    #: A learner becomes a voter once its durable offset is within this many records of the leader's.
    catchup_lag: int = 16
    #: Longest a leader transfer keeps the leader's writes stopped while its target catches up
    #: (the leader resumes by itself after twice this if no election follows: this control plane
    #: may die between the two steps). A target further behind fails the transfer; try again.
    transfer_write_stop: float = 10.0
    #: How often the active control plane asks every node that leads something how its
    #: leaderships are (one Status call per node), and how long a leader may be seen not leading
    #: its epoch, or leading without a quorum while a majority of its replicas is live, before it
    #: is replaced (a partial partition: the node keeps its lease but cannot reach its followers).
    health_interval: float = 1.0
    stuck_leader_after: float = 5.0
    #: How often an operation polls the leader's progress, and logs it.
    poll_interval: float = 0.2
    progress_log_interval: float = 2.0
