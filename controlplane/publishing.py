"""Publishing and deleting databases in a cluster: the record first, then the host nodes.

**Create.** Place the replicas (:mod:`controlplane.placement`), then write in one txn the record
(``creating``, epoch 1, replicas, leader), the owner index and — for a new name — ``/dns``,
``/rdns`` and ``/tld``, each create-if-absent: of two racing publishes of one new name exactly one
writes, the other gets :class:`~controlplane.core.Conflict` (409). Then ``Install`` on the leader
with the epoch, replicas and generation, then CAS the record to ``active``.

**A failed create leaves nothing behind**: the record, the owner index entry and the name *this
publish claimed* (with its top-level domain if this publish claimed that too) go, and every chosen
node is told to drop what it may have built. This departs from 1.12 (which keeps the name of a
failed first publish) on purpose: in a cluster the name is claimed in the same txn as the record,
so keeping it would leave a name pointing at a database that never existed. The claim is kept in
the ``creating`` record (``extra["claim"]``) so whoever finishes or abandons the create later
removes exactly it. A name that already existed (a deleted database's) is never removed.

**A control plane that dies mid-create** leaves a ``creating`` record. Only its owner may publish
to it again, which retries from scratch: the record moves to a new epoch and generation (live
nodes replace dead ones) and the leader installs with ``clear`` (wiping any partial replica); a
stranger gets 403, a second publish while one runs 409. The reconcile loop abandons a ``creating``
record nobody publishes for ``abandoned_create_timeout`` as a failed create.

**Update** goes to the current leader with the record's epoch (waiting ``leader_wait`` for a
leader); **reset** (``clear=true``, or the Reset RPC) is an election that also raises the
generation, then ``Install(clear)`` on its leader. **Delete**: record → ``deleting``, ``Delete`` on
every replica (best effort), then the record and owner index go; names stay, as in standalone,
and only the owner of a name may create a database under it again
(:meth:`~controlplane.core.Catalog.require_name_owner`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from clustermeta.metastore import Compare, DeleteOp, MetaStore, Op, mod_revision_equals
from clustermeta.records import DatabaseRecord, DbState, NodeInfo
from controlplane.config import ClusterConfig
from controlplane.core import (
    BadRequest,
    Catalog,
    Conflict,
    ControlPlaneError,
    DatabaseNotFound,
    Fence,
    NamePermissionDenied,
    PublishResult,
    Unavailable,
    busy,
    install_error,
    meta_key,
    name_race,
    new_identity,
    parse_name_or_identity,
    program_hash,
    require_token,
)
from controlplane.dbrecords import DbRecords, Versioned, leader_first
from controlplane.elections import Elector, evolve
from controlplane.hostnode_client import HostNodeFailure
from controlplane.logfields import kv
from controlplane.nodes import NodeDirectory
from controlplane.placement import Load, PlacementError, choose_leader, choose_nodes, place, replica_count
from controlplane.replica_client import NodeClients, NodeUnreachable
from proto import hostnode_pb2 as hpb
from sats.identity import Identity

__all__ = ["ClusterControlPlane"]

log = logging.getLogger(__name__)

#: Host refusals that mean "not now, ask again" rather than "this program is wrong".
_RETRY_KINDS = {hpb.ERROR_KIND_NOT_LEADER, hpb.ERROR_KIND_STALE_EPOCH}
_UNAVAILABLE_KINDS = {hpb.ERROR_KIND_NO_QUORUM, hpb.ERROR_KIND_OUTCOME_UNKNOWN, hpb.ERROR_KIND_DATABASE_CLOSED}


class ClusterControlPlane(Catalog):
    """Databases, names and owners over many host nodes (see the module docstring)."""

    def __init__(
        self,
        store: MetaStore,
        *,
        fence: Fence,
        records: DbRecords,
        nodes: NodeDirectory,
        clients: NodeClients,
        elector: Elector,
        config: ClusterConfig,
        load: Callable[[], Load],
        schedulable: Callable[[], dict[str, NodeInfo]] | None = None,
        mint_identity: Callable[[], Identity] = new_identity,
    ) -> None:
        super().__init__(store, mint_identity=mint_identity, fence=fence)
        self.records = records
        self.nodes = nodes
        self.clients = clients
        self.elector = elector
        self.config = config
        self.load = load
        #: The nodes new replicas may go to (live, not being drained).
        self.schedulable = schedulable or nodes.live
        #: Databases a publish or delete of this control plane is working on right now.
        self.in_flight: set[Identity] = set()
        # Placements chosen but not yet written: counted so concurrent creates spread out.
        self._placing: dict[Identity, DatabaseRecord] = {}

    def _load(self) -> Load:
        load = self.load()
        if not self._placing:
            return load
        total = Load(dict(load.replicas), dict(load.leaders))
        for record in self._placing.values():
            total.add(record)
        return total

    # --- publish ------------------------------------------------------------------------------

    async def publish(
        self,
        caller: Identity,
        name_or_identity: str | None,
        program: bytes,
        *,
        clear: bool = False,
        break_clients: bool = False,
        token: bytes | None = None,
        num_replicas: int = 0,
    ) -> PublishResult:
        """Create or update a database (client-api.md §6.2) on ``num_replicas`` nodes (0: default)."""
        self.fence.require_active()
        if clear and not name_or_identity:
            raise BadRequest("Clear database requires database name or identity")
        domain: str | None = None
        if not name_or_identity:
            return await self._create(caller, self.mint_identity(), program, None, break_clients, token, num_replicas)
        target = parse_name_or_identity(name_or_identity)
        if isinstance(target, Identity):
            identity = target
        else:
            domain = target
            kv_ = await self.store.get(meta_key("dns", target))
            if kv_ is None:
                return await self._create(
                    caller, self.mint_identity(), program, domain, break_clients, token, num_replicas, claim=True
                )
            identity = Identity.from_hex(kv_.value.decode())
        current = await self.records.get(identity)
        if current is None:
            await self.require_name_owner(caller, identity)
            return await self._create(caller, identity, program, domain, break_clients, token, num_replicas)
        record = current.record
        await self.authorize_publisher(caller, record)
        if record.state is DbState.CREATING:
            return await self._retry_create(current, program, domain, break_clients, token, num_replicas)
        if record.state is DbState.DELETING:
            raise Conflict(f"database {identity.to_hex()} is being deleted")
        if clear:
            await self.reset_replica(identity, record.owner, program)
        else:
            require_token(break_clients, token)
            await self._update(identity, program, token if break_clients else None)
        return PublishResult(identity, "updated", domain)

    async def _create(
        self,
        caller: Identity,
        identity: Identity,
        program: bytes,
        domain: str | None,
        break_clients: bool,
        token: bytes | None,
        num_replicas: int,
        *,
        claim: bool = False,
    ) -> PublishResult:
        require_token(break_clients, token)
        compares: list[Compare] = []
        ops: list[Op] = []
        claimed: dict[str, object] = {}
        if claim and domain is not None:
            try:
                name_claim = await self.name_claim(caller, domain, identity)
            except NamePermissionDenied:
                if await self.store.get(meta_key("dns", domain)) is not None:  # claimed since we looked
                    raise name_race(domain) from None
                raise
            compares, ops = name_claim.compares, name_claim.ops
            claimed = {"claim": {"name": domain, "tld": name_claim.claims_tld}}
        # No await from placing to _placing below: concurrent creates each see the others.
        live = self.schedulable()
        try:
            replicas, leader = place(live, num_replicas, self._load(), default=self.config.default_replicas)
        except PlacementError as e:
            raise (Unavailable(str(e)) if not live else BadRequest(str(e))) from None
        record = DatabaseRecord(
            identity, caller, "Wasm", program_hash(program), DbState.CREATING, len(replicas), replicas, [],
            leader, epoch=1, generation=1, leader_incarnation=live[leader].incarnation, extra=claimed,
        )  # fmt: skip
        if identity in self.in_flight:
            raise busy(identity)
        # In flight before the record exists: a racing publish that reads it must see it is taken.
        self.in_flight.add(identity)
        self._placing[identity] = record
        try:
            try:
                created = await self.records.create(record, compares=compares, ops=ops)
            finally:
                self._placing.pop(identity, None)  # written (and noted by the view) or refused
            if created is None:
                raise name_race(domain) if domain is not None else busy(identity)
            log.info(
                "creating database %s",
                kv(db=identity.to_hex(), name=domain, replicas=",".join(replicas), leader=leader,
                   owner=caller.to_hex()),
            )  # fmt: skip
            await self._install_new(created, program, clear=False)
        finally:
            self.in_flight.discard(identity)
        return PublishResult(identity, "created", domain)

    async def _retry_create(
        self,
        current: Versioned,
        program: bytes,
        domain: str | None,
        break_clients: bool,
        token: bytes | None,
        num_replicas: int,
    ) -> PublishResult:
        identity = current.record.identity
        if identity in self.in_flight:
            raise busy(identity)
        require_token(break_clients, token)
        self.in_flight.add(identity)
        try:
            retry = self._replace(current.record, program, num_replicas)
            written = await self.records.cas(current, retry)
            if written is None:
                raise busy(identity)
            log.info(
                "retrying create %s",
                kv(db=identity.to_hex(), epoch=retry.epoch, generation=retry.generation,
                   replicas=",".join(retry.replicas), leader=retry.leader),
            )  # fmt: skip
            dropped = [n for n in current.record.nodes() if n not in retry.nodes()]
            await self._drop_replicas(identity, dropped)
            await self._install_new(written, program, clear=True)
        finally:
            self.in_flight.discard(identity)
        return PublishResult(identity, "created", domain)

    def _replace(self, record: DatabaseRecord, program: bytes, num_replicas: int) -> DatabaseRecord:
        """A ``creating`` record's next attempt: live nodes only, new epoch and generation."""
        live = self.schedulable()
        load = self.load()
        try:
            count = replica_count(num_replicas or record.num_replicas, len(live), default=self.config.default_replicas)
            keep = [n for n in record.replicas if n in live][:count]
            keep += choose_nodes(live, count - len(keep), load, exclude=keep)
            leader = choose_leader(keep, load, preferred=record.leader)
        except PlacementError as e:
            raise (Unavailable(str(e)) if not live else BadRequest(str(e))) from None
        retry = evolve(record)
        retry.replicas = [leader, *(n for n in keep if n != leader)]
        retry.learners = []
        retry.num_replicas = count
        retry.leader = leader
        retry.leader_incarnation = live[leader].incarnation
        retry.epoch = record.epoch + 1
        retry.generation = record.generation + 1
        retry.initial_program_hash = program_hash(program)
        return retry

    async def _install_new(self, created: Versioned, program: bytes, *, clear: bool) -> None:
        """Install a ``creating`` record's program on its leader, then mark it active — or undo it."""
        record = created.record
        assert record.leader is not None
        address = self.nodes.address(record.leader)
        try:
            if not address:
                raise NodeUnreachable(record.leader, "the node is not live")
            await self.clients.node(address).install(
                record, program, self._addresses(record), clear=clear, timeout=self.config.install_timeout
            )
        except (HostNodeFailure, NodeUnreachable) as e:
            log.info("create failed %s", kv(db=record.identity.to_hex(), leader=record.leader, error=e))
            await self.discard_create(created)
            raise _create_error(e) from None
        active = evolve(record)
        active.state = DbState.ACTIVE
        active.extra.pop("claim", None)
        written = await self.records.cas(created, active)
        if written is None:
            raise Conflict(f"database {record.identity.to_hex()} changed while being created; publish again")
        log.info("created database %s", kv(db=record.identity.to_hex(), epoch=record.epoch, leader=record.leader))
        await self.elector.nudge(active)

    async def discard_create(self, current: Versioned) -> bool:
        """Undo a create: drop the replicas (best effort), then the record, its owner index entry
        and the name the create claimed. False if the record moved on meanwhile."""
        record = current.record
        await self._drop_replicas(record.identity, record.nodes())
        compares, ops = await self._claim_removal(record)
        # The name's keys are guarded too: a rename meanwhile keeps the (renamed) name.
        if compares and await self.records.remove(current, compares=compares, ops=ops):
            return True
        return await self.records.remove(current)

    async def _claim_removal(self, record: DatabaseRecord) -> tuple[list[Compare], list[Op]]:
        claim = record.extra.get("claim")
        if not isinstance(claim, dict) or not isinstance(claim.get("name"), str):
            return [], []
        name = claim["name"]
        dns = await self.store.get(meta_key("dns", name))
        if dns is None or dns.value.decode() != record.identity.to_hex():
            return [], []
        compares = [mod_revision_equals(dns.key, dns.mod_revision)]
        ops: list[Op] = [DeleteOp(dns.key), DeleteOp(meta_key("rdns", record.identity.to_hex(), name))]
        tld = await self.store.get(meta_key("tld", name))
        if claim.get("tld") and tld is not None and tld.value.decode() == record.owner.to_hex():
            compares.append(mod_revision_equals(tld.key, tld.mod_revision))
            ops.append(DeleteOp(tld.key))
        return compares, ops

    async def _drop_replicas(self, identity: Identity, nodes: list[str]) -> None:
        """``Delete`` the database on every live node of ``nodes``; failures are only logged."""

        async def one(node: str) -> None:
            address = self.nodes.address(node)
            if not address:
                return
            try:
                await self.clients.node(address).delete(identity, timeout=self.config.rpc_timeout)
            except HostNodeFailure as e:
                if e.kind != hpb.ERROR_KIND_NO_SUCH_DATABASE:
                    log.info("delete failed %s", kv(db=identity.to_hex(), node=node, error=e))
            except NodeUnreachable as e:
                log.info("delete failed %s", kv(db=identity.to_hex(), node=node, error=e))

        await asyncio.gather(*(one(n) for n in dict.fromkeys(nodes)))

    def _addresses(self, record: DatabaseRecord) -> dict[str, str]:
        return {n: self.nodes.address(n) for n in record.nodes()}

    # --- update and reset ---------------------------------------------------------------------

    async def leader_record(self, identity: Identity) -> DatabaseRecord:
        """The record once it has a live leader (waiting up to ``leader_wait``); 503 otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.leader_wait
        while True:
            current = await self.records.get(identity)
            if current is None:
                raise DatabaseNotFound("No such database.")
            record = current.record
            if record.state is DbState.DELETING:
                raise Conflict(f"database {identity.to_hex()} is being deleted")
            if record.leader is not None and self.nodes.is_live(record.leader):
                return record
            if loop.time() >= deadline:
                raise Unavailable(
                    f"database {identity.to_hex()} has no leader right now (an election is under way or a "
                    f"majority of its replicas is down); try again"
                )
            await asyncio.sleep(self.config.poll_interval)

    async def _update(self, identity: Identity, program: bytes, token: bytes | None) -> None:
        for _ in range(3):
            record = await self.leader_record(identity)
            assert record.leader is not None
            try:
                await self.clients.node(self.nodes.address(record.leader)).install(
                    record, program, self._addresses(record), token=token, timeout=self.config.install_timeout
                )
                return
            except HostNodeFailure as e:
                if e.kind in _RETRY_KINDS:
                    await asyncio.sleep(self.config.poll_interval)
                    continue
                if e.kind in _UNAVAILABLE_KINDS:
                    raise Unavailable(f"Failed to update the database: {e}") from None
                raise install_error(e, updating=True) from None
            except NodeUnreachable as e:
                raise Unavailable(f"Failed to update the database (the outcome is unknown): {e}") from None
        raise Unavailable(f"the leader of database {identity.to_hex()} kept changing; try again")

    async def reset_replica(self, identity: Identity, owner: Identity, program: bytes | None) -> object:
        """Wipe the database and reinstall ``program`` (None: its current one), in a new generation."""
        self.fence.require_active()
        current = await self.records.get(identity)
        if current is None:
            raise DatabaseNotFound("No such database.")
        if current.record.state is not DbState.ACTIVE:
            doing = "created" if current.record.state is DbState.CREATING else "deleted"
            raise Conflict(f"database {identity.to_hex()} is being {doing}; try again later")

        def next_generation(record: DatabaseRecord) -> DatabaseRecord:
            record.generation += 1
            return record

        outcome = await self.elector.elect(
            identity, reason="reset", preferred=current.record.leader, change=next_generation
        )
        if outcome is None or outcome.record is None or not outcome.elected:
            raise Unavailable(
                f"database {identity.to_hex()} could not be reset: no majority of its replicas answered; try again"
            )
        record = outcome.record.record
        assert record.leader is not None
        try:
            return await self.clients.node(self.nodes.address(record.leader)).install(
                record, program or b"", self._addresses(record), clear=True, keep_program=program is None,
                timeout=self.config.install_timeout,
            )  # fmt: skip
        except HostNodeFailure as e:
            if e.kind == hpb.ERROR_KIND_NO_SUCH_DATABASE:
                raise DatabaseNotFound("No such database.") from None
            if e.kind in _UNAVAILABLE_KINDS | _RETRY_KINDS:
                raise Unavailable(f"Failed to reset the database: {e}") from None
            raise install_error(e, updating=False) from None
        except NodeUnreachable as e:
            raise Unavailable(f"Failed to reset the database (the outcome is unknown): {e}") from None

    # --- delete -------------------------------------------------------------------------------

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """Delete a database (owner only; idempotent for identities); its names stay."""
        self.fence.require_active()
        identity = await self.resolve(name_or_identity)
        current = await self.records.get(identity)
        if current is None:
            return
        await self.authorize_owner(caller, current.record, "delete database")
        if identity in self.in_flight:
            raise Conflict(f"database {identity.to_hex()} is being published or deleted by another request")
        self.in_flight.add(identity)
        try:
            if current.record.state is not DbState.DELETING:
                deleting = evolve(current.record)
                deleting.state = DbState.DELETING
                written = await self.records.cas(current, deleting)
                if written is None:
                    raise Conflict(f"database {identity.to_hex()} changed while being deleted; try again")
                current = written
            await self.finish_delete(current)
        finally:
            self.in_flight.discard(identity)

    async def finish_delete(self, current: Versioned) -> bool:
        """Drop every replica of a ``deleting`` record (best effort), then the record and owner
        index entry. False if the record moved on meanwhile."""
        record = current.record
        await self._drop_replicas(record.identity, record.nodes())
        removed = await self.records.remove(current)
        if removed:
            log.info("deleted database %s", kv(db=record.identity.to_hex()))
        return removed

    # --- views --------------------------------------------------------------------------------

    def placements(self, record: DatabaseRecord) -> list[tuple[str, str]]:
        """``(node, address)`` of the voting replicas, the leader first."""
        return [(n, self.nodes.address(n)) for n in leader_first(record)]


def _create_error(e: Exception) -> ControlPlaneError:
    if isinstance(e, NodeUnreachable):
        return Unavailable(f"Failed to create the database: {e}")
    if isinstance(e, HostNodeFailure) and e.kind in _UNAVAILABLE_KINDS | _RETRY_KINDS:
        return Unavailable(f"Failed to create the database: {e}")
    return install_error(e, updating=False)
