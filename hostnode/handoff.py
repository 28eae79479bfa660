"""Leaving the cluster cleanly: hand every leadership over before the process stops.

A host node that is told to go (SIGTERM: Kubernetes deleting or rolling its pod) asks the active
control plane to move each leadership it holds to another replica (``TransferLeader`` with no
target: the control plane picks the live voter furthest along, lets it catch up while the old
leader takes no writes, and elects it). It waits until no database record in etcd names it as
leader and it leads nothing locally, then the process stops as before — as a follower of
everything, which costs no election and loses nothing: every write acknowledged before the
transfer is on a majority, the new leader among them.

The wait is bounded (``timeout``): a node still leading at the deadline stops anyway, and the
control plane fails those databases over as it would after a crash (their clients see 503 for a
moment). A database with no other live voting replica (one replica, or the others down) cannot be
handed over; it is skipped at once, not waited for.

While it hands over, the node marks itself leaving: ``/leaving/<node id>`` under its own lease
(gone with the node). Leaderships only go to replicas whose nodes are not leaving, so when many
nodes are told to go at once (a namespace or StatefulSet deleted, a whole cluster stopped) they do
not pass leaderships around among themselves until their timeouts: a database whose other voters
are all leaving counts as stranded, like one with no other live voter. When some other voter is
leaving, the node names the target itself — the non-leaving follower furthest along by its own
replication links; otherwise the control plane chooses (furthest along, then fewest leaderships).

The node finds the active control plane under ``/controlplane/leader`` (docs/cluster.md) and asks
again every round, so a control plane failover during the handoff only costs a round.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from clustermeta.metastore import MetaStore, MetaStoreError
from clustermeta.records import (
    CONTROLPLANE_LEADER_KEY,
    DB_PREFIX,
    NODES_PREFIX,
    ControlPlaneInfo,
    DatabaseRecord,
    DbState,
    node_of_key,
)
from hostnode.cluster import ClusterNode
from proto import auth
from proto import controlplane_pb2 as cpb
from proto import controlplane_pb2_grpc as cpb_grpc
from sats.identity import Identity

__all__ = ["LEAVING_PREFIX", "HandoffResult", "LeadershipHandoff", "leaving_key"]

log = logging.getLogger(__name__)

#: ``/leaving/<node id>``: a node handing its leaderships over (value ``{"id"}``, its lease).
LEAVING_PREFIX = b"/leaving/"
#: Seconds between rounds (each round re-reads etcd and asks again for what is still led here).
ROUND_PAUSE_S = 0.2
#: The longest one TransferLeader may take (the rest of the budget is kept for later rounds).
TRANSFER_TIMEOUT_S = 10.0
#: Transfers asked for at once.
PARALLEL_TRANSFERS = 8


def leaving_key(node_id: str) -> bytes:
    """``/leaving/<node id>``."""
    return LEAVING_PREFIX + node_id.encode()


@dataclass
class HandoffResult:
    """What a handoff achieved."""

    #: True: this node leads nothing that another replica could lead.
    done: bool
    #: Databases whose leadership moved away during the handoff (hex identities).
    moved: list[str] = field(default_factory=list)
    #: Databases that no other live voting replica could take over (they stop with the node).
    stranded: list[str] = field(default_factory=list)
    #: Databases still led here at the deadline (only when ``done`` is False).
    still_led: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _State:
    #: Records naming this node as leader that another live voter could take over → the target
    #: to ask for ("": the control plane chooses).
    to_move: dict[str, str]
    #: Led here locally while the record already names another leader (or none).
    stepping_down: set[str]
    #: Records naming this node as leader with no other live voter.
    stranded: set[str]


class LeadershipHandoff:
    """Moves every leadership of one host node to other replicas (see the module docstring)."""

    def __init__(self, store: MetaStore, cluster: ClusterNode, timeout: float, lease: Callable[[], int]) -> None:
        """``lease()``: the node's current etcd lease (0: none), which the leaving mark is put under."""
        self.store = store
        self.cluster = cluster
        self.node_id = cluster.node_id
        self.timeout = timeout
        self.lease = lease

    async def run(self) -> HandoffResult:
        """Hand over until nothing is led here or ``timeout`` passes; never raises for the
        cluster's failures (they are logged and retried)."""
        started = time.monotonic()
        deadline = started + self.timeout
        ever_led: set[str] = set()
        stranded: set[str] = set()
        await self._mark_leaving()
        while True:
            try:
                state = await self._state()
            except (MetaStoreError, OSError) as e:
                log.warning("handoff: cannot read the cluster's records: %s", e)
                state = _State({}, set(self._local_leading()), set())
            stranded |= state.stranded
            led = set(state.to_move) | state.stepping_down
            ever_led |= led
            if not led:
                result = HandoffResult(
                    True, sorted(ever_led - stranded), sorted(stranded), [], time.monotonic() - started
                )
                log.info(
                    "handoff done in %.2fs: moved=%s stranded=%s",
                    result.seconds, ",".join(h[:16] for h in result.moved) or "-",
                    ",".join(h[:16] for h in result.stranded) or "-",
                )  # fmt: skip
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                result = HandoffResult(
                    False, sorted(ever_led - led - stranded), sorted(stranded), sorted(led), time.monotonic() - started
                )
                log.warning(
                    "handoff gave up after %.2fs: still leading %s; the control plane fails them over",
                    result.seconds, ",".join(h[:16] for h in result.still_led),
                )  # fmt: skip
                return result
            if state.to_move:
                await self._ask(state.to_move, left)
            await asyncio.sleep(min(ROUND_PAUSE_S, max(0.0, deadline - time.monotonic())))

    async def _mark_leaving(self) -> None:
        lease = self.lease()
        if not lease:
            return
        try:
            await self.store.put(leaving_key(self.node_id), json.dumps({"id": self.node_id}).encode(), lease=lease)
        except (MetaStoreError, OSError) as e:
            log.warning("handoff: cannot mark this node as leaving: %s", e)

    def _local_leading(self) -> list[str]:
        return [i.to_hex() for i in self.cluster.leading]

    async def _state(self) -> _State:
        """What is led here now, from etcd's records, live and leaving nodes, and the local roles."""
        dbs = await self.store.get_prefix(DB_PREFIX)
        nodes = await self.store.get_prefix(NODES_PREFIX)
        leaving_kvs = await self.store.get_prefix(LEAVING_PREFIX)
        live = {node_of_key(kv.key) for kv in nodes.kvs}
        leaving = {kv.key[len(LEAVING_PREFIX) :].decode() for kv in leaving_kvs.kvs}
        records = {r.identity.to_hex(): r for r in (DatabaseRecord.from_json(kv.value) for kv in dbs.kvs)}
        state = _State({}, set(), set())
        for h, r in records.items():
            if r.leader != self.node_id or r.state is not DbState.ACTIVE:
                continue
            others = [n for n in r.replicas if n != self.node_id and n in live]
            staying = [n for n in others if n not in leaving]
            if not staying:
                state.stranded.add(h)
            elif len(staying) == len(others):
                state.to_move[h] = ""  # the control plane chooses among them
            else:
                state.to_move[h] = self._furthest(r.identity, staying)
        # Led locally though the record names another leader (or none): stepping down is under
        # way (a new epoch was promised); wait for it to finish.
        state.stepping_down = {
            h for h in self._local_leading() if h in records and records[h].leader != self.node_id
        }
        return state

    def _furthest(self, identity: Identity, candidates: list[str]) -> str:
        """The candidate whose replica this node, as its leader, knows to be furthest along."""
        leader = self.cluster.leading.get(identity)
        durable: dict[str, int] = {}
        if leader is not None:
            durable = {n: link.state.durable_offset for n, link in leader.links.items() if link.state.connected}
        return min(candidates, key=lambda n: (-durable.get(n, -1), n))

    async def _active_controlplane(self) -> str | None:
        kv = await self.store.get(CONTROLPLANE_LEADER_KEY)
        return None if kv is None else ControlPlaneInfo.from_json(kv.value).address or None

    async def _ask(self, to_move: dict[str, str], left: float) -> None:
        """One TransferLeader per database whose record names this node, at the active control
        plane, all at once (bounded)."""
        try:
            address = await self._active_controlplane()
        except (MetaStoreError, OSError) as e:
            log.warning("handoff: cannot find the active control plane: %s", e)
            return
        if address is None:
            log.info("handoff: no active control plane right now; waiting")
            return
        timeout = min(TRANSFER_TIMEOUT_S, left)
        gate = asyncio.Semaphore(PARALLEL_TRANSFERS)
        async with auth.channel(address, self.cluster.channels.secret) as channel:
            stub = cpb_grpc.ControlPlaneStub(channel)

            async def transfer(identity_hex: str, target: str) -> None:
                async with gate:
                    await self._transfer(stub, address, identity_hex, target, timeout)

            await asyncio.gather(*(transfer(h, t) for h, t in sorted(to_move.items())))

    async def _transfer(
        self, stub: cpb_grpc.ControlPlaneStub, address: str, identity_hex: str, target: str, timeout: float
    ) -> None:
        request = cpb.TransferLeaderRequest(name_or_identity=identity_hex, to_node=target, timeout_ms=int(timeout * 1000))
        try:
            reply = await stub.TransferLeader(request, timeout=timeout + 2.0)
        except grpc.aio.AioRpcError as e:
            log.info("handoff: transfer of %s at %s failed: %s %s", identity_hex[:16], address, e.code().name, e.details())
            return
        if reply.failure.kind:
            log.info(
                "handoff: transfer of %s not done (%s): %s",
                identity_hex[:16], cpb.ErrorKind.Name(reply.failure.kind), reply.failure.message,
            )  # fmt: skip
            return
        log.info("handoff: %s moved: %s", identity_hex[:16], "; ".join(reply.steps))
