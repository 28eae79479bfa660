"""The records the cluster keeps in its MetaStore, and the keys they live under (docs/cluster.md).

Pure data: JSON codecs and key builders, no I/O. The control plane writes database records (by
compare-and-swap on their ``mod_revision``); host nodes write their own node record under their
lease; gateways and host nodes only read. Keys are relative to the cluster's prefix (the etcd
store adds it).

=====================================  =========================================================
key                                    value
=====================================  =========================================================
``/nodes/<node id>``                   :class:`NodeInfo` (under the node's lease)
``/controlplane/leader``               the active control plane (election key, under its lease)
``/controlplanes/<id>``                :class:`ControlPlaneInfo` (under its lease)
``/db/<identity hex>``                 :class:`DatabaseRecord`
``/owner/<owner hex>/<identity hex>``  ``b""`` (an owner's databases)
``/dns/<name>``                        identity hex
``/rdns/<identity hex>/<name>``        ``b""``
``/tld/<name>``                        owner identity hex
=====================================  =========================================================
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from sats.identity import Identity

__all__ = [
    "KECCAK_256",
    "LEGACY_SHA3_256",
    "CONTROLPLANE_LEADER_KEY",
    "CONTROLPLANES_PREFIX",
    "DB_PREFIX",
    "DNS_PREFIX",
    "NODES_PREFIX",
    "OWNER_PREFIX",
    "RDNS_PREFIX",
    "ControlPlaneInfo",
    "DatabaseRecord",
    "DbState",
    "NodeInfo",
    "db_key",
    "dns_key",
    "identity_of_db_key",
    "majority",
    "node_key",
    "node_of_key",
    "owner_key",
    "owner_prefix",
    "rdns_key",
    "rdns_prefix",
]

#: ``DatabaseRecord.program_hash_kind`` values.
KECCAK_256 = "keccak-256"
LEGACY_SHA3_256 = "sha3-256"

NODES_PREFIX = b"/nodes/"
DB_PREFIX = b"/db/"
DNS_PREFIX = b"/dns/"
RDNS_PREFIX = b"/rdns/"
OWNER_PREFIX = b"/owner/"
CONTROLPLANES_PREFIX = b"/controlplanes/"
CONTROLPLANE_LEADER_KEY = b"/controlplane/leader"


def node_key(node_id: str) -> bytes:
    """``/nodes/<node id>``."""
    return NODES_PREFIX + node_id.encode()


def node_of_key(key: bytes) -> str:
    """The node id of a ``/nodes/…`` key."""
    return key[len(NODES_PREFIX) :].decode()


def db_key(identity: Identity) -> bytes:
    """``/db/<identity hex>``."""
    return DB_PREFIX + identity.to_hex().encode()


def identity_of_db_key(key: bytes) -> Identity:
    """The identity of a ``/db/…`` key."""
    return Identity.from_hex(key[len(DB_PREFIX) :].decode())


def dns_key(name: str) -> bytes:
    """``/dns/<name>``."""
    return DNS_PREFIX + name.encode()


def rdns_prefix(identity: Identity) -> bytes:
    """``/rdns/<identity hex>/``: the names of one database."""
    return RDNS_PREFIX + identity.to_hex().encode() + b"/"


def rdns_key(identity: Identity, name: str) -> bytes:
    """``/rdns/<identity hex>/<name>``."""
    return rdns_prefix(identity) + name.encode()


def owner_prefix(owner: Identity) -> bytes:
    """``/owner/<owner hex>/``: the databases of one owner."""
    return OWNER_PREFIX + owner.to_hex().encode() + b"/"


def owner_key(owner: Identity, identity: Identity) -> bytes:
    """``/owner/<owner hex>/<identity hex>``."""
    return owner_prefix(owner) + identity.to_hex().encode()


def majority(n: int) -> int:
    """How many of ``n`` voting replicas form a majority."""
    return n // 2 + 1


class DbState(enum.StrEnum):
    """Where a database is in its life (docs/cluster.md, Flows)."""

    #: The record exists, the install has not finished: only its owner may publish to it.
    CREATING = "creating"
    ACTIVE = "active"
    DELETING = "deleting"


@dataclass
class NodeInfo:
    """A live host node (``/nodes/<id>``, kept under the node's lease)."""

    id: str
    #: host:port of the node's HostNode and Replication gRPC services.
    address: str
    #: Drawn afresh at every process start: a new incarnation never resumes an old leadership.
    incarnation: str
    #: ``http://host:port/metrics`` or empty.
    metrics: str = ""

    def to_json(self) -> bytes:
        """Serialise for the MetaStore."""
        return json.dumps(
            {"id": self.id, "address": self.address, "incarnation": self.incarnation, "metrics": self.metrics}
        ).encode()

    @staticmethod
    def from_json(data: bytes) -> NodeInfo:
        """Parse a stored node record."""
        doc = json.loads(data)
        return NodeInfo(doc["id"], doc["address"], doc.get("incarnation", ""), doc.get("metrics", ""))


@dataclass
class ControlPlaneInfo:
    """A running control plane (``/controlplanes/<id>`` and the election value)."""

    id: str
    #: host:port of its ControlPlane gRPC service.
    address: str
    metrics: str = ""

    def to_json(self) -> bytes:
        """Serialise for the MetaStore."""
        return json.dumps({"id": self.id, "address": self.address, "metrics": self.metrics}).encode()

    @staticmethod
    def from_json(data: bytes) -> ControlPlaneInfo:
        """Parse a stored control-plane record."""
        doc = json.loads(data)
        return ControlPlaneInfo(doc["id"], doc["address"], doc.get("metrics", ""))


@dataclass
class DatabaseRecord:
    """One database: owner, program hash, and where its replicas run (``/db/<identity hex>``).

    ``replicas`` are the voting replicas' node ids, ``learners`` the ones still catching up;
    ``leader`` may write in ``epoch`` (None while an election runs). Only the active control
    plane changes ``epoch``, ``leader``, ``replicas`` and ``learners``, by compare-and-swap.
    """

    identity: Identity
    owner: Identity
    host_type: str = "Wasm"
    initial_program_hash: str = ""
    state: DbState = DbState.ACTIVE
    num_replicas: int = 1
    replicas: list[str] = field(default_factory=list)
    learners: list[str] = field(default_factory=list)
    leader: str | None = None
    epoch: int = 1
    generation: int = 1
    #: The hash function of ``initial_program_hash``: ``keccak-256`` (as 1.12), or ``sha3-256``
    #: in a record written before Orrery used Keccak and not yet migrated.
    program_hash_kind: str = KECCAK_256
    #: The incarnation of ``leader``'s process when it was elected: a leader whose node restarted
    #: (another incarnation) leads nothing until elected again (docs/cluster.md).
    leader_incarnation: str = ""
    #: Fields this version does not know, kept so a rewrite does not drop them.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def majority(self) -> int:
        """Voting replicas needed to commit."""
        return majority(len(self.replicas))

    def nodes(self) -> list[str]:
        """Every node holding a replica (voters, then learners)."""
        return [*self.replicas, *self.learners]

    def to_json(self) -> bytes:
        """Serialise for the MetaStore."""
        doc = dict(self.extra)
        doc.update(
            {
                "identity": self.identity.to_hex(),
                "owner": self.owner.to_hex(),
                "host_type": self.host_type,
                "initial_program_hash": self.initial_program_hash,
                "state": self.state.value,
                "num_replicas": self.num_replicas,
                "replicas": list(self.replicas),
                "learners": list(self.learners),
                "leader": self.leader,
                "epoch": self.epoch,
                "generation": self.generation,
                "program_hash": self.program_hash_kind,
                "leader_incarnation": self.leader_incarnation,
            }
        )
        return json.dumps(doc).encode()

    @staticmethod
    def from_json(data: bytes) -> DatabaseRecord:
        """Parse a stored record, including the standalone form written before the cluster
        existed (``replicas`` as ``[{"node_id", "address", "epoch"}]``, no state)."""
        doc = json.loads(data)
        known = {
            "identity", "owner", "host_type", "initial_program_hash", "state", "num_replicas", "replicas",
            "learners", "leader", "epoch", "generation", "program_hash", "leader_incarnation",
        }  # fmt: skip
        raw = doc.get("replicas", [])
        replicas = [r["node_id"] if isinstance(r, dict) else str(r) for r in raw]
        epoch = int(doc.get("epoch", max((r.get("epoch", 1) for r in raw if isinstance(r, dict)), default=1)))
        leader = doc["leader"] if "leader" in doc else (replicas[0] if replicas else None)
        return DatabaseRecord(
            identity=Identity.from_hex(doc["identity"]),
            owner=Identity.from_hex(doc["owner"]),
            host_type=doc.get("host_type", "Wasm"),
            initial_program_hash=doc.get("initial_program_hash", ""),
            state=DbState(doc.get("state", DbState.ACTIVE.value)),
            num_replicas=int(doc.get("num_replicas", len(replicas) or 1)),
            replicas=replicas,
            learners=[str(x) for x in doc.get("learners", [])],
            leader=leader,
            epoch=epoch,
            generation=int(doc.get("generation", 1)),
            program_hash_kind=str(doc.get("program_hash", LEGACY_SHA3_256)),
            leader_incarnation=str(doc.get("leader_incarnation") or ""),
            extra={k: v for k, v in doc.items() if k not in known},
        )
