"""Read-only views of the cluster: ``cluster status`` and ``cluster verify``.

**Status** joins the records with what every live node reports (``Replication.Status``): for each
database its names, epoch and replicas with their role, durable offset and lag (the leader's
durable offset minus the replica's; None when either is unknown).

**Verify** compares the replicas' table digests at one committed offset (docs/cluster.md, Table
digests): the leader's commit offset ``X``, then ``Digest(db, X)`` on every replica. A replica
whose checkpoint is already past ``X`` answers ``retry_at``; then every replica is asked again at
the highest such offset, so all digests always describe the same prefix of the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clustermeta.records import DatabaseRecord
from controlplane.config import ClusterConfig
from controlplane.core import Catalog, DatabaseNotFound, Unavailable
from controlplane.dbrecords import DbRecords, leader_first
from controlplane.hostnode_client import HostNodeFailure
from controlplane.logfields import kv
from controlplane.nodes import NodeDirectory
from controlplane.operations import Deadline
from controlplane.replica_client import DigestReport, NodeClients, NodeStatus, NodeUnreachable
from sats.identity import Identity

__all__ = ["Inspector", "ReplicaDigest", "Verification"]

log = logging.getLogger(__name__)

#: Rounds of "ask again at retry_at" before verify gives up.
MAX_VERIFY_ROUNDS = 5


@dataclass(frozen=True)
class ReplicaDigest:
    """One replica's answer to verify: its digest (hex) and rows, or why it gave none."""

    node_id: str
    digest: str = ""
    rows: int = 0
    error: str = ""


@dataclass(frozen=True)
class Verification:
    """The digests of every replica at ``offset``; ``agree`` when all answered alike."""

    offset: int
    agree: bool
    replicas: list[ReplicaDigest]


class Inspector:
    """Status and verification over the records, the live nodes and their replicas."""

    def __init__(
        self,
        catalog: Catalog,
        records: DbRecords,
        nodes: NodeDirectory,
        clients: NodeClients,
        config: ClusterConfig,
        all_records: Callable[[], list[DatabaseRecord]],
    ) -> None:
        self.catalog = catalog
        self.records = records
        self.nodes = nodes
        self.clients = clients
        self.config = config
        self.all_records = all_records

    # --- status -------------------------------------------------------------------------------

    async def status(self, identity: Identity | None = None) -> dict[str, Any]:
        """The ``ClusterStatusResponse.json`` document (see ``proto/controlplane.proto``)."""
        if identity is None:
            records = sorted(self.all_records(), key=lambda r: r.identity.to_hex())
        else:
            current = await self.records.get(identity)
            if current is None:
                raise DatabaseNotFound("No such database.")
            records = [current.record]
        live = self.nodes.live()
        statuses = await self._node_statuses(list(live))
        known = set(live) | {n for r in records for n in r.nodes()}
        nodes = [
            {"id": n, "address": live[n].address if n in live else "", "alive": n in live}
            for n in sorted(known)
        ]
        databases = []
        for record in records:
            databases.append(await self._database_status(record, statuses))
        return {"nodes": nodes, "databases": databases}

    async def _node_statuses(self, node_ids: list[str]) -> dict[str, NodeStatus]:
        async def one(node: str) -> tuple[str, NodeStatus | None]:
            try:
                return node, await self.clients.node(self.nodes.address(node)).status(timeout=self.config.rpc_timeout)
            except (NodeUnreachable, HostNodeFailure) as e:
                log.info("status failed %s", kv(node=node, error=e))
                return node, None

        answers = await asyncio.gather(*(one(n) for n in node_ids))
        return {n: s for n, s in answers if s is not None}

    async def _database_status(self, record: DatabaseRecord, statuses: dict[str, NodeStatus]) -> dict[str, Any]:
        def durable(node: str) -> int | None:
            status = statuses.get(node)
            state = None if status is None else status.replica(record.identity)
            return None if state is None else state.durable_offset

        leader_durable = None if record.leader is None else durable(record.leader)
        replicas = []
        for node in [*leader_first(record), *record.learners]:
            offset = durable(node)
            role = "leader" if node == record.leader else "learner" if node in record.learners else "follower"
            lag = None if offset is None or leader_durable is None else max(leader_durable - offset, 0)
            replicas.append({"node": node, "role": role, "durable_offset": offset, "lag": lag})
        return {
            "identity": record.identity.to_hex(),
            "names": sorted(await self.catalog.names(record.identity)),
            "state": record.state.value,
            "epoch": record.epoch,
            "leader": record.leader,
            "replicas": replicas,
        }

    # --- verify -------------------------------------------------------------------------------

    async def verify(self, identity: Identity, deadline: Deadline) -> Verification:
        """Every replica's digest at the leader's commit offset (see the module docstring)."""
        current = await self.records.get(identity)
        if current is None:
            raise DatabaseNotFound("No such database.")
        record = current.record
        if record.leader is None or not self.nodes.is_live(record.leader):
            raise Unavailable(f"database {identity.to_hex()} has no live leader to say what is committed")
        try:
            status = await self.clients.node(self.nodes.address(record.leader)).status(
                identity, timeout=self.config.rpc_timeout
            )
        except (NodeUnreachable, HostNodeFailure) as e:
            raise Unavailable(f"leader {record.leader} did not report its commit offset: {e}") from None
        state = status.replica(identity)
        if state is None:
            raise Unavailable(f"leader {record.leader} has no replica of {identity.to_hex()}")
        offset = state.commit_offset
        nodes = list(dict.fromkeys([*leader_first(record), *record.learners]))
        answers: dict[str, DigestReport | str] = {}
        for _ in range(MAX_VERIFY_ROUNDS):
            answers = await self._digests(identity, nodes, offset, deadline)
            retry = max((a.retry_at for a in answers.values() if isinstance(a, DigestReport)), default=0)
            if retry <= offset:
                break
            log.info("verify retries %s", kv(db=identity.to_hex(), offset=offset, retry_at=retry))
            offset = retry
        digests = [_digest_of(node, answers[node], offset) for node in nodes]
        agree = all(d.digest and not d.error for d in digests) and len({d.digest for d in digests}) == 1
        log.info("verified %s", kv(db=identity.to_hex(), offset=offset, agree=agree))
        return Verification(offset, agree, digests)

    async def _digests(
        self, identity: Identity, nodes: list[str], offset: int, deadline: Deadline
    ) -> dict[str, DigestReport | str]:
        async def one(node: str) -> tuple[str, DigestReport | str]:
            address = self.nodes.address(node)
            if not address:
                return node, "node is not live"
            try:
                wait = max(min(deadline.left(), self.config.operation_timeout), 0.1)
                return node, await self.clients.node(address).digest(identity, offset, timeout=wait)
            except (NodeUnreachable, HostNodeFailure) as e:
                return node, str(e)

        return dict(await asyncio.gather(*(one(n) for n in nodes)))


def _digest_of(node: str, answer: DigestReport | str, offset: int) -> ReplicaDigest:
    if isinstance(answer, str):
        return ReplicaDigest(node, error=answer)
    if answer.retry_at > offset:
        return ReplicaDigest(node, error=f"checkpoint already past offset {offset} (retry at {answer.retry_at})")
    if answer.offset != offset:
        return ReplicaDigest(node, error=f"digest at offset {answer.offset}, not {offset}")
    return ReplicaDigest(node, answer.digest.hex(), answer.rows)


def status_json(document: dict[str, Any]) -> str:
    """The status document as the JSON text ``ClusterStatusResponse.json`` carries."""
    return json.dumps(document, sort_keys=False)
