"""Turn a validated module definition into datastore schemas, with ids and system tables.

Id assignment follows SpacetimeDB 1.12: ids below 4096 are reserved for system objects; user
tables get ids from 4096 upwards in lexicographic table-name order (module-abi.md §7), and their
indexes and sequences are numbered in the same walk. Ids must be stable for a module version
because modules cache them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostnode.moduledef import ModuleDef
from hostnode.schema import IndexSchema, ScheduleSchema, SequenceSchema, TableSchema
from sats.identity import Identity
from sats.types import CONNECTION_ID, IDENTITY, Typespace, product

FIRST_USER_ID = 4096

ST_CLIENT = "st_client"
ST_CLIENT_ID = 1
ST_CLIENT_INDEX_ID = 1


@dataclass
class SystemTables:
    """The host's own tables (currently the connected-clients table)."""

    client_table_id: int = ST_CLIENT_ID

    def schemas(self) -> list[TableSchema]:
        """Schemas of the system tables."""
        row_type = product(("identity", IDENTITY), ("connection_id", CONNECTION_ID))
        return [
            TableSchema(
                table_id=ST_CLIENT_ID,
                name=ST_CLIENT,
                row_type=row_type,
                typespace=Typespace([]),
                primary_key=None,
                indexes=[
                    IndexSchema(
                        index_id=ST_CLIENT_INDEX_ID,
                        name="st_client_identity_connection_id_idx_btree",
                        table_id=ST_CLIENT_ID,
                        columns=(0, 1),
                        algorithm="btree",
                        unique=True,
                    )
                ],
                sequences=[],
                is_public=False,
                schedule=None,
            )
        ]

    @staticmethod
    def client_row(identity: Identity, connection_id: int) -> bytes:
        """BSATN of an st_client row."""
        return identity.to_bsatn() + connection_id.to_bytes(16, "little")

    @staticmethod
    def parse_client_row(row: bytes) -> tuple[Identity, int]:
        """(identity, connection id) of an st_client row."""
        return Identity.from_bsatn(row[:32]), int.from_bytes(row[32:48], "little")


def build_schemas(mdef: ModuleDef, system: SystemTables | None = None) -> list[TableSchema]:
    """All table schemas for a module: system tables first, then user tables by name."""
    out: list[TableSchema] = list((system or SystemTables()).schemas())
    next_table = next_index = next_seq = FIRST_USER_ID
    for table in sorted(mdef.tables, key=lambda t: t.name.encode()):
        table_id = next_table
        next_table += 1
        indexes: list[IndexSchema] = []
        for idx in sorted(table.indexes, key=lambda i: i.name.encode()):
            indexes.append(
                IndexSchema(
                    index_id=next_index,
                    name=idx.name,
                    table_id=table_id,
                    columns=tuple(idx.columns),
                    algorithm=idx.algorithm.label,  # type: ignore[arg-type]
                    unique=idx.unique,
                )
            )
            next_index += 1
        sequences: list[SequenceSchema] = []
        for seq in sorted(table.sequences, key=lambda s: s.name.encode()):
            sequences.append(
                SequenceSchema(
                    seq_id=next_seq,
                    name=seq.name,
                    table_id=table_id,
                    column=seq.column,
                    start=seq.effective_start,
                    min_value=seq.effective_min,
                    max_value=seq.effective_max,
                    increment=seq.increment,
                )
            )
            next_seq += 1
        schedule = None
        if table.schedule is not None:
            schedule = ScheduleSchema(
                name=table.schedule.name,
                reducer_name=table.schedule.function_name,
                scheduled_at_column=table.schedule.at_column,
            )
        out.append(
            TableSchema(
                table_id=table_id,
                name=table.name,
                row_type=table.row_type,
                typespace=mdef.typespace,
                primary_key=table.primary_key,
                indexes=indexes,
                sequences=sequences,
                is_public=table.is_public,
                schedule=schedule,
            )
        )
    return out
