"""Automatic migration when a module is republished without clearing (module-abi.md §10).

Pure planning: compares the datastore's current table schemas with a new module definition
and returns the schema operations to apply, or every reason the update cannot be automatic.

Supported today: adding tables (with their indexes, constraints and sequences), adding
non-unique indexes, removing indexes and changing the row-level-security rules (which, as in
1.12, disconnects every client: their subscriptions were filtered by the old rules).
Everything else the reference supports or rejects is refused with a message naming the table
and the change, so the publisher can decide to clear the database instead; nothing is ever
changed silently. Still to come: changing a table's access, adding/removing sequences and
schedules on existing tables, appending columns with defaults, and layout-compatible type
changes (new enum variants).

An update that disconnects clients needs the publisher's consent, as in 1.12: the
pre-publish answer carries a :func:`migration_token` naming (database, running program, new
program), and :func:`check_policy` lets such an update through only when the publish echoes
that token back. Without a token, only updates that keep every client connected go through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hostnode.moduledef import ModuleDef
from hostnode.schema import IndexSchema, SequenceSchema, TableSchema
from hostnode.schema_build import FIRST_USER_ID, build_schemas
from sats.hash import hash_bytes
from sats.identity import Identity

#: Why an update without the caller's consent is refused (1.12's wording).
BREAKS_CLIENTS = "Migration plan contains a client-breaking change which is disallowed under current policy"
#: Why an update with a token that is not this update's is refused (1.12's wording).
INVALID_TOKEN = "Token provided is invalid or does not match expected hash"


class MigrationError(Exception):
    """The new module cannot replace the old one without clearing the database."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "the update needs a manual migration (publish with --clear-database to start over): "
            + "; ".join(problems)
        )


class MigrationPolicyError(Exception):
    """The update is possible but the publish did not consent to what it does to clients."""


@dataclass
class MigrationPlan:
    """Schema operations, in the order they must be applied."""

    create_tables: list[TableSchema] = field(default_factory=list)
    drop_indexes: list[int] = field(default_factory=list)
    create_indexes: list[IndexSchema] = field(default_factory=list)
    #: Row-level-security rules (their SQL text) the old module had and the new one has not, and
    #: the reverse.
    drop_rls: list[str] = field(default_factory=list)
    create_rls: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        """True when neither the schema nor the RLS rules change."""
        return not (self.create_tables or self.drop_indexes or self.create_indexes or self.disconnects_clients)

    @property
    def disconnects_clients(self) -> bool:
        """Whether every connected client is disconnected by the update (``break_clients``).

        1.12 does so when the set of RLS rules changes: every subscription was compiled with
        the old rules (``auto_migrate_row_level_security``). Its other reasons — adding columns,
        removing or retyping views — are migrations this server refuses.
        """
        return bool(self.drop_rls or self.create_rls)


def _seq_shape(s: SequenceSchema) -> tuple[int, int, int, int, int]:
    return (s.column, s.start, s.min_value, s.max_value, s.increment)


def plan_update(current: dict[int, TableSchema], new: ModuleDef, *, old_rls: Sequence[str]) -> MigrationPlan:
    """Plan the update from ``current`` (datastore schemas) and ``old_rls`` (the running module's
    row-level-security rules) to module definition ``new``."""
    wanted = {t.name: t for t in build_schemas(new) if t.table_id >= FIRST_USER_ID}
    existing = {t.name: t for t in current.values() if t.table_id >= FIRST_USER_ID}
    ids = [t.table_id for t in current.values()]
    ids += [i.index_id for t in current.values() for i in t.indexes]
    ids += [s.seq_id for t in current.values() for s in t.sequences]
    next_id = max([FIRST_USER_ID - 1, *ids]) + 1
    plan = MigrationPlan(
        drop_rls=[r for r in old_rls if r not in new.row_level_security],
        create_rls=[r for r in new.row_level_security if r not in old_rls],
    )
    problems: list[str] = []

    for name in sorted(existing):
        if name not in wanted:
            problems.append(f"table `{name}` would be removed")

    for name in sorted(wanted):
        want = wanted[name]
        have = existing.get(name)
        if have is None:
            # A new table: fresh ids for it and everything it owns (ids never get reused).
            table_id = next_id
            next_id += 1
            indexes = []
            for ix in want.indexes:
                indexes.append(IndexSchema(next_id, ix.name, table_id, ix.columns, ix.algorithm, ix.unique))
                next_id += 1
            sequences = []
            for sq in want.sequences:
                sequences.append(
                    SequenceSchema(next_id, sq.name, table_id, sq.column, sq.start, sq.min_value, sq.max_value, sq.increment)
                )
                next_id += 1
            plan.create_tables.append(
                TableSchema(
                    table_id=table_id, name=name, row_type=want.row_type, typespace=want.typespace,
                    primary_key=want.primary_key, indexes=indexes, sequences=sequences,
                    is_public=want.is_public, schedule=want.schedule,
                )
            )
            continue
        if have.row_type != want.row_type:
            problems.append(f"table `{name}`: its columns change (adding, removing, renaming, reordering or retyping columns)")
            continue
        if have.primary_key != want.primary_key:
            problems.append(f"table `{name}`: its primary key changes")
        if have.is_public != want.is_public:
            problems.append(f"table `{name}`: changing public/private access is not supported yet")
        if have.schedule != want.schedule:
            problems.append(f"table `{name}`: its schedule changes (not supported yet)")
        if sorted(map(_seq_shape, have.sequences)) != sorted(map(_seq_shape, want.sequences)):
            problems.append(f"table `{name}`: its sequences (auto_inc) change (not supported yet)")
        have_ix = {(i.name, i.columns, i.algorithm): i for i in have.indexes}
        want_ix = {(i.name, i.columns, i.algorithm): i for i in want.indexes}
        for key, ix in have_ix.items():
            if key not in want_ix:
                plan.drop_indexes.append(ix.index_id)
            elif want_ix[key].unique != ix.unique:
                problems.append(f"table `{name}`: index `{ix.name}` changes uniqueness")
        for key, ix in want_ix.items():
            if key in have_ix:
                continue
            if ix.unique:
                problems.append(f"table `{name}`: adding a unique constraint (`{ix.name}`) needs a manual migration")
                continue
            plan.create_indexes.append(IndexSchema(next_id, ix.name, have.table_id, ix.columns, ix.algorithm, False))
            next_id += 1
    if problems:
        raise MigrationError(problems)
    return plan


def migration_token(identity: Identity, old_program: bytes, new_program: bytes) -> bytes:
    """The 32-byte token a pre-publish hands out for replacing ``old_program`` by ``new_program``.

    It names the update, not a secret (anyone can compute it): echoing it back only shows that
    the publisher saw this plan. A token for another database, or planned while another program
    was running, does not match.

    1.12's ``MigrationToken::hash``: Keccak-256 of the text made of the database identity's hex
    and the old and new programs' hashes in hex (``Hash::to_hex``), 192 lowercase hex digits
    without separators or ``0x``. The programs are the running one and the one published.
    """
    text = identity.to_hex() + hash_bytes(old_program).hex() + hash_bytes(new_program).hex()
    return hash_bytes(text.encode("ascii"))


def check_policy(plan: MigrationPlan, token: bytes | None, expected: bytes) -> None:
    """Raise MigrationPolicyError unless the publish may run ``plan``.

    ``token`` None (1.12's policy ``Compatible``): the plan must keep every client connected.
    A token (``BreakClients``): it must be ``expected`` — this update's — whatever the plan does.
    """
    if token is None:
        if plan.disconnects_clients:
            raise MigrationPolicyError(BREAKS_CLIENTS)
    elif token != expected:
        raise MigrationPolicyError(INVALID_TOKEN)
