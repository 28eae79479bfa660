"""The control plane's logic: databases, names, owners and placement, over a MetaStore.

Semantics follow SpacetimeDB 1.12's standalone control database (client-api.md §6): names are
DNS-like records owned through their top-level domain (for a database name the TLD is the whole
name), names survive the deletion of their database, a database's owner is whoever created it,
and a publish to an unknown name registers the name before the database exists (so a failed
first publish leaves the name behind, as in 1.12).

One departure from 1.12: a name that resolves to no database (its database was deleted, or its
first publish failed) is published to only by the owner of its top-level domain; anyone else
gets 403 (:meth:`Catalog.require_name_owner`). 1.12 lets anyone publish there and so take over
the name, the old database identity and every client that still uses them.

Key layout in the MetaStore (all values JSON or hex text):

    /db/<identity hex>                      the database record (owner, host type, placement)
    /owner/<owner hex>/<identity hex>       index of an owner's databases
    /dns/<name>                             name → database identity hex
    /rdns/<identity hex>/<name>             reverse index
    /tld/<name>                             top-level domain → owner identity hex

Errors are :class:`ControlPlaneError` subclasses carrying the HTTP status and body the 1.12 API
answers with, so the gateway maps them in one place.

Cluster mode (:mod:`controlplane.publishing`) builds on this class: lookups and names are the same,
publish and delete write the record first. There every write also carries the compares of a
:class:`Fence` (the control plane's election: a standby or deposed control plane writes nothing);
standalone has no fence.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from clustermeta import names
from clustermeta.metastore import (
    Compare,
    DeleteOp,
    MetaStore,
    Op,
    PutOp,
    key_absent,
    prefix_end,
    value_equals,
)
from clustermeta.records import KECCAK_256, DatabaseRecord, DbState
from sats.hash import hash_bytes
from sats.identity import Identity

log = logging.getLogger(__name__)

LOCAL_ISSUER = "localhost"
#: A publish with policy ``BreakClients`` and no ``token`` (1.12's wording).
MISSING_TOKEN = "Migration policy is set to `BreakClients`, but no migration token was provided."


# --- errors ---------------------------------------------------------------------------------------


class ControlPlaneError(Exception):
    """An error with the HTTP status and body the client API answers with."""

    status = 500

    def __init__(self, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        #: A JSON body when the 1.12 API answers with JSON; None means the message as text.
        self.body = body


class InvalidName(ControlPlaneError):
    """A path segment that is neither an identity nor a valid database name."""

    status = 400


class NameNotFound(ControlPlaneError):
    """A database name that resolves to nothing."""

    status = 404


class DatabaseNotFound(ControlPlaneError):
    """An identity with no database."""

    status = 404


class NotAuthorized(ControlPlaneError):
    """The caller does not own the database."""

    status = 403


class NamePermissionDenied(ControlPlaneError):
    """The name's top-level domain belongs to someone else."""

    status = 401


class BadRequest(ControlPlaneError):
    """Anything else the caller must fix."""

    status = 400


class PublishFailed(ControlPlaneError):
    """The module could not be installed (init failed, the node failed)."""

    status = 500


class InvalidProgram(BadRequest):
    """The program is not a module this server can run (not wasm, truncated, no
    ``__describe_module__``, an invalid module definition …): the publisher's to fix, so a 400
    (1.12 answers 500). The message keeps the host node's reason."""


class UpdateRejected(ControlPlaneError):
    """The new module needs a manual migration, or would disconnect the clients without the
    publisher's consent (migration policy, client-api.md §6.2)."""

    status = 400


class Conflict(ControlPlaneError):
    """Another request on the same database or name is in flight; nothing changed, try again."""

    status = 409


class Unavailable(ControlPlaneError):
    """The cluster cannot do it now (no live node, no leader, no majority); the message says why."""

    status = 503


class NotActive(ControlPlaneError):
    """This control plane is a standby (or was deposed): it changes nothing.

    ``active_address`` is the active control plane's ControlPlane service, empty while none is.
    """

    status = 503

    def __init__(self, message: str, *, active_address: str = "") -> None:
        super().__init__(message)
        self.active_address = active_address


# --- fencing --------------------------------------------------------------------------------------


class Fence(Protocol):
    """What makes a control plane's writes safe against a newer active control plane."""

    def compares(self) -> list[Compare]:
        """Compares every write txn adds; they fail once this control plane is no longer active."""

    async def check(self) -> None:
        """Raise :class:`NotActive` unless this control plane is (still) the active one."""

    def require_active(self) -> None:
        """Raise :class:`NotActive` unless this control plane believes it is active (no I/O)."""


class NoFence:
    """Standalone: one control plane, nothing to fence."""

    def compares(self) -> list[Compare]:
        """No compares."""
        return []

    async def check(self) -> None:
        """Always active."""

    def require_active(self) -> None:
        """Always active."""


NO_FENCE = NoFence()


# --- interfaces -----------------------------------------------------------------------------------


class HostNodeClient(Protocol):
    """What the control plane needs from the host node running a database."""

    async def install(
        self, identity: Identity, owner: Identity, program: bytes, *, clear: bool = False, token: bytes | None = None
    ) -> Any:
        """Create or update the database; raises on failure.

        ``token``: the pre-publish token of the update, given when the publisher accepts that
        it disconnects the clients; without one such an update is refused.
        """

    async def delete(self, identity: Identity) -> None:
        """Stop the database and remove its replica."""


@dataclass
class Placement:
    """Where a replica runs."""

    node_id: str
    address: str
    epoch: int = 1


@dataclass
class PublishResult:
    """The `Success` payload of a publish."""

    identity: Identity
    op: str  # "created" | "updated"
    domain: str | None

    def to_json(self) -> dict[str, Any]:
        """The 1.12 JSON body."""
        return {"Success": {"domain": self.domain, "database_identity": self.identity.to_hex(), "op": self.op}}


# --- names ------------------------------------------------------------------------------------------


def parse_name_or_identity(text: str) -> Identity | str:
    """An identity (64 hex digits, optional 0x) or a valid database name (client-api.md §6.1);
    InvalidName (the control plane's, a 400) with 1.12's wording otherwise."""
    try:
        return names.parse_name_or_identity(text)
    except names.InvalidName as e:
        raise InvalidName(str(e)) from None


def validate_name(name: str) -> str:
    """Check a database name, raising InvalidName with the 1.12 wording."""
    try:
        return names.validate_name(name)
    except names.InvalidName as e:
        raise InvalidName(str(e)) from None


def new_identity() -> Identity:
    """A fresh identity allocated the way 1.12 does (issuer `localhost`, a UUIDv4 subject)."""
    return Identity.from_claims(LOCAL_ISSUER, str(uuid.uuid4()))


def program_hash(program: bytes) -> str:
    """The hash naming a program, as 1.12 computes it (``Program::from_bytes``: Keccak-256 of
    the bytes), in hex of the digest bytes (``Hash::to_hex``)."""
    return hash_bytes(program).hex()


async def migrate_program_hashes(
    store: MetaStore, initial_program: Callable[[Identity], Awaitable[bytes | None]]
) -> int:
    """Rewrite the records made before program hashes were Keccak-256 (they hold SHA3-256).

    ``initial_program(identity)`` returns the program the database was created with (its host
    node has it: the first record of the commit log), or None when it cannot; such a record is
    left as it is and logged. Each record is rewritten only if it has not changed meanwhile.
    Returns how many records were migrated; run at start-up, before serving.
    """
    migrated = 0
    resp = await store.get_prefix(_k("db") + b"/")
    for kv in resp.kvs:
        record = DatabaseRecord.from_json(kv.value)
        if record.program_hash_kind == KECCAK_256:
            continue
        program = await initial_program(record.identity)
        if program is None:
            log.warning(
                "database %s: initial program not found; its program hash stays %s",
                record.identity.to_hex(), record.program_hash_kind,
            )  # fmt: skip
            continue
        record.initial_program_hash, record.program_hash_kind = program_hash(program), KECCAK_256
        done = await store.txn([value_equals(kv.key, kv.value)], [PutOp(kv.key, record.to_json())])
        migrated += int(done.succeeded)
    if migrated:
        log.info("migrated the program hash of %d database record(s) to Keccak-256", migrated)
    return migrated


def meta_key(*parts: str) -> bytes:
    """``/part/part/…`` (the key layout in the module docstring)."""
    return ("/" + "/".join(parts)).encode()


_k = meta_key


@dataclass
class NameClaim:
    """The txn parts that bind ``name`` to a database: compares that hold while it is free (and its
    top-level domain free or the caller's), and the writes (dns, rdns, and tld when claimed)."""

    name: str
    compares: list[Compare]
    ops: list[Op]
    #: The caller's claim on the top-level domain is new (undone with the name).
    claims_tld: bool


# --- the control plane ------------------------------------------------------------------------------


class Catalog:
    """Lookups, names and owners over the MetaStore: what every control plane shares.

    :class:`ControlPlane` (standalone) and :class:`controlplane.publishing.ClusterControlPlane`
    add publishing and deletion; writes here carry ``fence``'s compares.
    """

    def __init__(
        self,
        store: MetaStore,
        *,
        mint_identity: Callable[[], Identity] = new_identity,
        fence: Fence = NO_FENCE,
    ) -> None:
        self.store = store
        self.mint_identity = mint_identity
        self.fence = fence
        self._lookups: dict[str, tuple[int, DatabaseRecord]] = {}

    # --- lookups ------------------------------------------------------------------------------

    async def resolve(self, name_or_identity: str) -> Identity:
        """The identity a path segment names (an identity is returned without existence check)."""
        target = parse_name_or_identity(name_or_identity)
        if isinstance(target, Identity):
            return target
        kv = await self.store.get(_k("dns", target))
        if kv is None:
            raise NameNotFound(f"Could not resolve database `{target}`")
        return Identity.from_hex(kv.value.decode())

    async def database(self, identity: Identity) -> DatabaseRecord | None:
        """The database record, or None."""
        kv = await self.store.get(_k("db", identity.to_hex()))
        return None if kv is None else DatabaseRecord.from_json(kv.value)

    async def require_database(self, name_or_identity: str) -> DatabaseRecord:
        """Resolve and load, raising the 404s of §6.1.

        Every HTTP request starts here, so answers are cached per path segment and reused for as
        long as the store's revision has not moved (any write anywhere invalidates them).
        """
        revision = await self.store.current_revision()
        hit = self._lookups.get(name_or_identity)
        if hit is not None and hit[0] == revision:
            return hit[1]
        record = await self.database(await self.resolve(name_or_identity))
        if record is None:
            raise DatabaseNotFound("No such database.")
        if len(self._lookups) >= 4096:
            self._lookups.clear()
        self._lookups[name_or_identity] = (revision, record)
        return record

    async def names(self, identity: Identity) -> list[str]:
        """Every name that points at the database (reverse DNS)."""
        prefix = _k("rdns", identity.to_hex()) + b"/"
        resp = await self.store.get_prefix(prefix)
        return [kv.key[len(prefix):].decode() for kv in resp.kvs]

    async def databases_of(self, owner: Identity) -> list[Identity]:
        """Identities of the databases an identity owns."""
        prefix = _k("owner", owner.to_hex()) + b"/"
        resp = await self.store.get_prefix(prefix)
        return [Identity.from_hex(kv.key[len(prefix):].decode()) for kv in resp.kvs]

    async def all_databases(self) -> list[DatabaseRecord]:
        """Every database record."""
        resp = await self.store.get_prefix(_k("db") + b"/")
        return [DatabaseRecord.from_json(kv.value) for kv in resp.kvs]

    # --- publish and delete (by mode) ---------------------------------------------------------

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
        """Create or update a database (client-api.md §6.2)."""
        raise NotImplementedError

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """Delete a database; its names stay (client-api.md §6.5)."""
        raise NotImplementedError

    # --- names and owners ---------------------------------------------------------------------

    async def name_claim(self, caller: Identity, name: str, identity: Identity) -> NameClaim:
        """What binding ``name`` to ``identity`` takes; NamePermissionDenied if the TLD is someone else's."""
        tld = await self.store.get(_k("tld", name))
        if tld is not None and tld.value.decode() != caller.to_hex():
            raise NamePermissionDenied(f"permission denied for name `{name}`", body={"PermissionDenied": {"name": name}})
        compares: list[Compare] = [key_absent(_k("dns", name))]
        ops: list[Op] = [PutOp(_k("dns", name), identity.to_hex().encode()), PutOp(_k("rdns", identity.to_hex(), name), b"")]
        if tld is None:
            compares.append(key_absent(_k("tld", name)))
            ops.append(PutOp(_k("tld", name), caller.to_hex().encode()))
        else:
            compares.append(value_equals(_k("tld", name), tld.value))
        return NameClaim(name, compares, ops, tld is None)

    async def require_name_owner(self, caller: Identity, identity: Identity) -> None:
        """NotAuthorized unless ``caller`` may create a database at ``identity``, which has none:
        every name still pointing at it (its database was deleted, or a first publish failed) must
        have the caller's top-level domain, so a name and its clients stay with their owner."""
        for name in sorted(await self.names(identity)):
            tld = await self.store.get(_k("tld", name))
            if tld is not None and tld.value.decode() != caller.to_hex():
                raise NotAuthorized(
                    f"{caller.to_hex()} is not authorized to publish to database {identity.to_hex()}: "
                    f"its name `{name}` belongs to the identity that published it, and only that identity "
                    f"may publish to it"
                )

    async def _register_name(self, caller: Identity, name: str, identity: Identity, *, publishing: bool) -> None:
        """Create `name → identity`, claiming the TLD for the caller if it is free; Conflict when
        another request registered the name meanwhile (``publishing``: words it as a publish race)."""
        claim = await self.name_claim(caller, name, identity)
        resp = await self.store.txn([*claim.compares, *self.fence.compares()], claim.ops)
        if not resp.succeeded:
            await self.fence.check()
            if publishing:
                raise name_race(name)
            raise Conflict(f"the name `{name}` was registered by another request meanwhile; try again")

    async def set_initial_program(self, record: DatabaseRecord, program: bytes) -> None:
        """Record that the database starts over from ``program`` (a clear or a reset with a
        program: 1.12 then sets ``initial_program`` to the new program's hash)."""
        updated = dataclasses.replace(record, initial_program_hash=program_hash(program), program_hash_kind=KECCAK_256)
        await self.store.txn([*self.fence.compares()], [PutOp(_k("db", record.identity.to_hex()), updated.to_json())])

    async def authorize_publisher(self, caller: Identity, record: DatabaseRecord) -> None:
        """Raise NotAuthorized (with 1.12's "update database" wording) unless the caller owns it."""
        if record.owner != caller:
            raise NotAuthorized(
                f"{caller.to_hex()} is not authorized to perform action on database "
                f"{record.identity.to_hex()}: update database"
            )

    async def authorize_owner(self, caller: Identity, record: DatabaseRecord, action: str) -> None:
        """Raise NotAuthorized unless the caller owns the database (action as 1.12 words it)."""
        if record.owner != caller:
            raise NotAuthorized(
                f"{caller.to_hex()} is not authorized to perform action on database {record.identity.to_hex()}: {action}"
            )

    # --- names --------------------------------------------------------------------------------

    async def add_name(self, caller: Identity, name_or_identity: str, name: str) -> dict[str, Any]:
        """POST …/names (client-api.md §6.6): register one more name for the database."""
        identity = await self.resolve(name_or_identity)
        name = validate_name(name)
        if await self.store.get(_k("dns", name)) is not None:
            raise ControlPlaneError(f"Record for name '{name}' already exists.")
        await self._register_name(caller, name, identity, publishing=False)
        return {"Success": {"domain": name, "database_identity": identity.to_hex()}}

    async def set_names(self, caller: Identity, name_or_identity: str, names: list[str]) -> None:
        """PUT …/names: replace every name of the database atomically."""
        identity = await self.resolve(name_or_identity)
        record = await self.database(identity)
        if record is None:
            raise DatabaseNotFound("database not found", body="DatabaseNotFound")
        if record.owner != caller:
            err = NamePermissionDenied("not your database", body={"NotYourDatabase": {"database": identity.to_hex()}})
            raise err
        for name in names:
            if await self.store.get(_k("dns", name)) is not None:
                raise BadRequest(
                    f"Cannot rename to {name} because it already is in use.",
                    body={"OtherError": f"Cannot rename to {name} because it already is in use."},
                )
            tld = await self.store.get(_k("tld", name))
            if tld is not None and tld.value.decode() != record.owner.to_hex():
                raise NamePermissionDenied(f"permission denied for `{name}`", body={"PermissionDenied": {"domain": name}})
        old = await self.names(identity)
        compares: list[Compare] = [key_absent(_k("dns", n)) for n in names]
        ops: list[Op] = []
        for n in old:
            ops += [DeleteOp(_k("dns", n)), DeleteOp(_k("rdns", identity.to_hex(), n))]
        for n in names:
            ops += [
                PutOp(_k("dns", n), identity.to_hex().encode()),
                PutOp(_k("rdns", identity.to_hex(), n), b""),
                PutOp(_k("tld", n), record.owner.to_hex().encode()),
            ]
        resp = await self.store.txn([*compares, *self.fence.compares()], ops)
        if not resp.succeeded:
            await self.fence.check()
            raise BadRequest("a name was taken concurrently; try again")


class ControlPlane(Catalog):
    """Databases, names and owners with one host node (standalone mode)."""

    def __init__(
        self,
        store: MetaStore,
        host: HostNodeClient,
        placement: Placement,
        *,
        mint_identity: Callable[[], Identity] = new_identity,
        fence: Fence = NO_FENCE,
    ) -> None:
        super().__init__(store, mint_identity=mint_identity, fence=fence)
        self.host = host
        self.placement = placement
        #: Databases a publish is creating right now: a second publish to one of them is a 409.
        self._creating: set[Identity] = set()

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
        """Create or update a database (client-api.md §6.2); one replica whatever ``num_replicas`` says.

        ``break_clients`` and ``token`` are the migration policy: an update that disconnects
        the clients goes through only with both, ``token`` being the one the pre-publish of
        this update answered. As in 1.12, ``break_clients`` without a token is refused once
        the caller may publish here (a clear of an existing database has no policy).

        Two publishes creating one database (racing for a new name, or to a name whose first
        publish is still installing): one creates it, the other gets Conflict (409).
        """
        domain: str | None = None
        if clear and not name_or_identity:
            raise BadRequest("Clear database requires database name or identity")
        if not name_or_identity:
            identity = self.mint_identity()
        else:
            target = parse_name_or_identity(name_or_identity)
            if isinstance(target, Identity):
                identity = target
            else:
                domain = target
                kv = await self.store.get(_k("dns", target))
                if kv is not None:
                    identity = Identity.from_hex(kv.value.decode())
                else:
                    identity = self.mint_identity()
                    # Creating before the name exists: whoever then finds the name finds it taken.
                    self._creating.add(identity)
                    try:
                        await self._register_name(caller, target, identity, publishing=True)
                    except BaseException:
                        self._creating.discard(identity)
                        raise
                    # A failed install leaves the name behind, as in 1.12 (§6.2 step 4).
                    return await self._create(caller, identity, program, domain, break_clients, token)
        record = await self.database(identity)
        if record is not None:
            await self.authorize_publisher(caller, record)
            if not clear:
                require_token(break_clients, token)
            try:
                await self.host.install(
                    identity, record.owner, program, clear=clear, token=token if break_clients else None
                )
            except Exception as e:
                raise install_error(e, updating=True) from None
            if clear:
                await self.set_initial_program(record, program)
            return PublishResult(identity, "updated", domain)
        await self.require_name_owner(caller, identity)
        if identity in self._creating:  # checked after the last await: no publish slips in between
            raise name_race(domain) if domain is not None else busy(identity)
        self._creating.add(identity)
        return await self._create(caller, identity, program, domain, break_clients, token)

    async def _create(
        self,
        caller: Identity,
        identity: Identity,
        program: bytes,
        domain: str | None,
        break_clients: bool,
        token: bytes | None,
    ) -> PublishResult:
        """Install a new database at ``identity`` (already in ``_creating``, which this empties)
        and record it."""
        try:
            require_token(break_clients, token)
            try:
                await self.host.install(identity, caller, program)
            except Exception as e:
                raise install_error(e, updating=False) from None
            record = DatabaseRecord(
                identity, caller, "Wasm", program_hash(program), DbState.ACTIVE, 1,
                [self.placement.node_id], leader=self.placement.node_id, epoch=self.placement.epoch,
            )
            await self.store.txn(
                [key_absent(_k("db", identity.to_hex()))],
                [
                    PutOp(_k("db", identity.to_hex()), record.to_json()),
                    PutOp(_k("owner", caller.to_hex(), identity.to_hex()), b""),
                ],
            )
        finally:
            self._creating.discard(identity)
        return PublishResult(identity, "created", domain)

    async def delete(self, caller: Identity, name_or_identity: str) -> None:
        """Delete a database; its names stay (client-api.md §6.5). Idempotent for identities."""
        identity = await self.resolve(name_or_identity)
        record = await self.database(identity)
        if record is None:
            return
        if record.owner != caller:
            raise NotAuthorized(
                f"{caller.to_hex()} is not authorized to perform action on database {identity.to_hex()}: delete database"
            )
        try:
            await self.host.delete(identity)
        except Exception as e:  # noqa: BLE001 - a missing replica must not block forgetting the record
            if type(e).__name__ != "DatabaseNotFound":
                raise
        await self.store.txn(
            [],
            [DeleteOp(_k("db", identity.to_hex())), DeleteOp(_k("owner", record.owner.to_hex(), identity.to_hex()))],
        )


def require_token(break_clients: bool, token: bytes | None) -> None:
    """BadRequest for ``BreakClients`` without a migration token (1.12's check)."""
    if break_clients and token is None:
        raise BadRequest(MISSING_TOKEN)


def name_race(name: str) -> Conflict:
    """Two publishes creating a database under one new name: the one that lost."""
    return Conflict(f"the name `{name}` is being published by another request; try again")


def busy(identity: Identity) -> Conflict:
    """A publish to a database another publish is creating right now."""
    return Conflict(f"database {identity.to_hex()} is being published by another request; try again")


def install_error(e: Exception, *, updating: bool) -> ControlPlaneError:
    """The publish error a host node's refusal to install stands for."""
    # Host nodes (in-process or remote) name their refusals with these class names.
    if type(e).__name__ == "MigrationError":
        return UpdateRejected(f"Database update rejected: {e}")
    if type(e).__name__ == "MigrationPolicyError":
        return UpdateRejected(f"Failed to create or update the database: {e}")
    verb = "update" if updating else "create"
    if type(e).__name__ == "ModuleLoadError":
        return InvalidProgram(f"Failed to {verb} the database: {e}")
    return PublishFailed(f"Failed to {verb} the database: {e}")


__all__ = [
    "BadRequest",
    "Catalog",
    "Conflict",
    "ControlPlane",
    "ControlPlaneError",
    "DatabaseNotFound",
    "DatabaseRecord",
    "Fence",
    "HostNodeClient",
    "InvalidName",
    "InvalidProgram",
    "MISSING_TOKEN",
    "NO_FENCE",
    "NameClaim",
    "NameNotFound",
    "NamePermissionDenied",
    "NoFence",
    "NotActive",
    "NotAuthorized",
    "Placement",
    "PublishFailed",
    "PublishResult",
    "Unavailable",
    "UpdateRejected",
    "busy",
    "install_error",
    "meta_key",
    "name_race",
    "parse_name_or_identity",
    "prefix_end",
    "require_token",
    "validate_name",
]
