"""Module definitions: decode ``bsatn(RawModuleDef)``, validate it, serve it as JSON.

Spec: ``shared/spec/module-abi.md`` §11 (the raw def, generated names, validation) and §12
(``GET /schema?version=9``). Three layers, all pure (bytes and values in, values out):

* :func:`decode_raw_module_def` / :func:`encode_raw_module_def` — the ``Raw*V9`` structures
  of §11.2 as frozen dataclasses. Only ``RawModuleDef::V9`` (tag 1) is accepted; trailing
  bytes after the value are ignored, as the reference does.
* :func:`validate` — §11.4 generated names and the §11.5 checks (following
  ``v1.12.0:crates/schema/src/def/validate/v9.rs``), producing a :class:`ModuleDef`: tables
  sorted by name with fully resolved row types, final index/constraint/sequence/schedule
  names, reducers in module order. Every problem found is collected into one
  :class:`ModuleDefError` whose messages name the table/index/column/reducer at fault.
* :func:`to_schema_json` — the validated def as the SATS-JSON the reference serves.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sats.bsatn import BsatnReader, BsatnWriter, decode
from sats.errors import DecodeError, SatsError
from sats.types import (
    SCHEDULE_AT,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    ProductTypeElement,
    Ref,
    SumType,
    SumTypeVariant,
    Typespace,
    TypeTag,
    is_special,
)

__all__ = [
    "ColumnDef",
    "ConstraintDef",
    "IndexAlgorithm",
    "IndexDef",
    "Lifecycle",
    "ModuleDef",
    "ModuleDefError",
    "RawColumnDefaultValueV9",
    "RawConstraintDefV9",
    "RawIndexDefV9",
    "RawModuleDefV9",
    "RawProcedureDefV9",
    "RawReducerDefV9",
    "RawRowLevelSecurityDefV9",
    "RawScheduleDefV9",
    "RawScopedTypeNameV9",
    "RawSequenceDefV9",
    "RawTableDefV9",
    "RawTypeDefV9",
    "RawViewDefV9",
    "ReducerDef",
    "ScheduleDef",
    "SequenceDef",
    "TableAccess",
    "TableDef",
    "TableType",
    "decode_raw_module_def",
    "encode_raw_module_def",
    "load_module_def",
    "to_schema_json",
    "validate",
]

I128_MAX = (1 << 127) - 1


class ModuleDefError(Exception):
    """A module definition that cannot be decoded or does not validate.

    ``problems`` lists every problem found (validation keeps going after the first one);
    each message names the table, index, column, reducer or type at fault.
    """

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else sorted(set(problems))
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems in the module definition:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(message)


# ---------------------------------------------------------------------------------- enums


class TableType(enum.IntEnum):
    """``TableType``: modules always send USER."""

    SYSTEM = 0
    USER = 1

    @property
    def json_name(self) -> str:
        return ("System", "User")[self]


class TableAccess(enum.IntEnum):
    """``TableAccess``: private tables are readable (SQL/subscriptions) only by the owner."""

    PUBLIC = 0
    PRIVATE = 1

    @property
    def json_name(self) -> str:
        return ("Public", "Private")[self]


class Lifecycle(enum.IntEnum):
    """``Lifecycle`` of a reducer (module-abi.md §7)."""

    INIT = 0
    ON_CONNECT = 1
    ON_DISCONNECT = 2

    @property
    def json_name(self) -> str:
        return ("Init", "OnConnect", "OnDisconnect")[self]


class IndexAlgorithm(enum.IntEnum):
    """``RawIndexAlgorithm`` tag. B-tree and direct indexes are ordered; hash is not."""

    BTREE = 0
    HASH = 1
    DIRECT = 2

    @property
    def json_name(self) -> str:
        return ("BTree", "Hash", "Direct")[self]

    @property
    def label(self) -> str:
        """The suffix used in generated index names (``_idx_btree`` …)."""
        return ("btree", "hash", "direct")[self]

    @property
    def supports_range(self) -> bool:
        return self is not IndexAlgorithm.HASH


# ---------------------------------------------------------------------------------- raw defs (§11.2)


@dataclass(frozen=True)
class RawIndexDefV9:
    """An index; ``columns`` has exactly one entry for DIRECT."""

    name: str | None
    accessor_name: str | None
    algorithm: IndexAlgorithm
    columns: tuple[int, ...]


@dataclass(frozen=True)
class RawConstraintDefV9:
    """A constraint; V9 only has ``Unique { columns }``."""

    name: str | None
    columns: tuple[int, ...]


@dataclass(frozen=True)
class RawSequenceDefV9:
    """An auto-increment sequence on an integer column (None = default)."""

    name: str | None
    column: int
    start: int | None
    min_value: int | None
    max_value: int | None
    increment: int


@dataclass(frozen=True)
class RawScheduleDefV9:
    """Makes a table a schedule table calling ``reducer_name`` (a reducer or procedure)."""

    name: str | None
    reducer_name: str
    scheduled_at_column: int


@dataclass(frozen=True)
class RawTableDefV9:
    """A table as the module declared it."""

    name: str
    product_type_ref: int
    primary_key: tuple[int, ...]
    indexes: tuple[RawIndexDefV9, ...]
    constraints: tuple[RawConstraintDefV9, ...]
    sequences: tuple[RawSequenceDefV9, ...]
    schedule: RawScheduleDefV9 | None
    table_type: TableType
    table_access: TableAccess


@dataclass(frozen=True)
class RawReducerDefV9:
    """A reducer; ``params`` is an inline product whose element names are the parameter names."""

    name: str
    params: ProductType
    lifecycle: Lifecycle | None


@dataclass(frozen=True)
class RawScopedTypeNameV9:
    """A type name with its (module-local) scope."""

    scope: tuple[str, ...]
    name: str


@dataclass(frozen=True)
class RawTypeDefV9:
    """Names a typespace entry (for client codegen)."""

    name: RawScopedTypeNameV9
    ty: int
    custom_ordering: bool


@dataclass(frozen=True)
class RawColumnDefaultValueV9:
    """Misc export 0: default for a column added by a migration (``value`` = bsatn at its type)."""

    table: str
    col_id: int
    value: bytes


@dataclass(frozen=True)
class RawProcedureDefV9:
    """Misc export 1: a procedure."""

    name: str
    params: ProductType
    return_type: AlgebraicType


@dataclass(frozen=True)
class RawViewDefV9:
    """Misc export 2: a view."""

    name: str
    index: int
    is_public: bool
    is_anonymous: bool
    params: ProductType
    return_type: AlgebraicType


RawMiscModuleExportV9 = RawColumnDefaultValueV9 | RawProcedureDefV9 | RawViewDefV9


@dataclass(frozen=True)
class RawRowLevelSecurityDefV9:
    """A row-level-security SQL filter."""

    sql: str


@dataclass(frozen=True, eq=True)
class RawModuleDefV9:
    """``RawModuleDefV9``, field by field."""

    typespace: Typespace
    tables: tuple[RawTableDefV9, ...]
    reducers: tuple[RawReducerDefV9, ...]
    types: tuple[RawTypeDefV9, ...]
    misc_exports: tuple[RawMiscModuleExportV9, ...]
    row_level_security: tuple[RawRowLevelSecurityDefV9, ...]


# ---------------------------------------------------------------------------------- decoding

_T = TypeVar("_T")

_VERSION_NAMES = {0: "V8BackCompat", 1: "V9", 2: "V10"}


def decode_raw_module_def(data: bytes | bytearray | memoryview) -> RawModuleDefV9:
    """Decode ``bsatn(RawModuleDef)``; only tag 1 (V9) is supported. Trailing bytes are ignored."""
    r = BsatnReader(data)
    try:
        tag = r.u8()
        if tag != 1:
            name = _VERSION_NAMES.get(tag)
            if name is None:
                raise ModuleDefError(f"invalid RawModuleDef tag {tag}")
            raise ModuleDefError(
                f"unsupported module definition version {name} (RawModuleDef tag {tag}); only V9 is supported"
            )
        return _read_v9(r)
    except DecodeError as e:
        raise ModuleDefError(f"malformed module definition: {e}") from None


def _vec(r: BsatnReader, fn: Callable[[], _T], min_size: int = 1) -> tuple[_T, ...]:
    return tuple(r.vec(fn, min_size))


def _opt_str(r: BsatnReader) -> str | None:
    value: str | None = r.option(r.string)
    return value


def _col_list(r: BsatnReader) -> tuple[int, ...]:
    return _vec(r, r.u16, 2)


def _enum_tag(r: BsatnReader, what: str, n: int) -> int:
    pos = r.pos
    tag = r.u8()
    if tag >= n:
        raise DecodeError(f"invalid {what} tag {tag} at byte {pos}")
    return tag


def _read_index(r: BsatnReader) -> RawIndexDefV9:
    name = _opt_str(r)
    accessor = _opt_str(r)
    algo = IndexAlgorithm(_enum_tag(r, "RawIndexAlgorithm", 3))
    cols = (r.u16(),) if algo is IndexAlgorithm.DIRECT else _col_list(r)
    return RawIndexDefV9(name, accessor, algo, cols)


def _read_constraint(r: BsatnReader) -> RawConstraintDefV9:
    name = _opt_str(r)
    _enum_tag(r, "RawConstraintDataV9", 1)
    return RawConstraintDefV9(name, _col_list(r))


def _read_sequence(r: BsatnReader) -> RawSequenceDefV9:
    name = _opt_str(r)
    column = r.u16()
    start = r.option(r.i128)
    min_value = r.option(r.i128)
    max_value = r.option(r.i128)
    return RawSequenceDefV9(name, column, start, min_value, max_value, r.i128())


def _read_schedule(r: BsatnReader) -> RawScheduleDefV9:
    return RawScheduleDefV9(_opt_str(r), r.string(), r.u16())


def _read_table(r: BsatnReader) -> RawTableDefV9:
    return RawTableDefV9(
        name=r.string(),
        product_type_ref=r.u32(),
        primary_key=_col_list(r),
        indexes=_vec(r, lambda: _read_index(r)),
        constraints=_vec(r, lambda: _read_constraint(r)),
        sequences=_vec(r, lambda: _read_sequence(r)),
        schedule=r.option(lambda: _read_schedule(r)),
        table_type=TableType(_enum_tag(r, "TableType", 2)),
        table_access=TableAccess(_enum_tag(r, "TableAccess", 2)),
    )


def _read_reducer(r: BsatnReader) -> RawReducerDefV9:
    name = r.string()
    params = r.product_type()
    lifecycle = r.option(lambda: Lifecycle(_enum_tag(r, "Lifecycle", 3)))
    return RawReducerDefV9(name, params, lifecycle)


def _read_type(r: BsatnReader) -> RawTypeDefV9:
    scope = _vec(r, r.string, 4)
    name = r.string()
    return RawTypeDefV9(RawScopedTypeNameV9(scope, name), r.u32(), r.bool())


def _read_misc(r: BsatnReader) -> RawMiscModuleExportV9:
    tag = _enum_tag(r, "RawMiscModuleExportV9", 3)
    if tag == 0:
        return RawColumnDefaultValueV9(r.string(), r.u16(), r.bytes())
    if tag == 1:
        return RawProcedureDefV9(r.string(), r.product_type(), r.algebraic_type())
    return RawViewDefV9(r.string(), r.u32(), r.bool(), r.bool(), r.product_type(), r.algebraic_type())


def _read_v9(r: BsatnReader) -> RawModuleDefV9:
    typespace = r.typespace()
    return RawModuleDefV9(
        typespace=typespace,
        tables=_vec(r, lambda: _read_table(r)),
        reducers=_vec(r, lambda: _read_reducer(r)),
        types=_vec(r, lambda: _read_type(r)),
        misc_exports=_vec(r, lambda: _read_misc(r)),
        row_level_security=_vec(r, lambda: RawRowLevelSecurityDefV9(r.string()), 4),
    )


# ---------------------------------------------------------------------------------- encoding


def encode_raw_module_def(raw: RawModuleDefV9) -> bytes:
    """``bsatn(RawModuleDef::V9(raw))`` — the inverse of :func:`decode_raw_module_def`."""
    w = BsatnWriter()
    w.u8(1)
    w.typespace(raw.typespace)

    def opt_str(v: str | None) -> None:
        w.option(v, w.string)

    def col_list(cols: tuple[int, ...]) -> None:
        w.vec(cols, w.u16)

    def index(ix: RawIndexDefV9) -> None:
        opt_str(ix.name)
        opt_str(ix.accessor_name)
        w.u8(ix.algorithm)
        if ix.algorithm is IndexAlgorithm.DIRECT:
            w.u16(ix.columns[0])
        else:
            col_list(ix.columns)

    def constraint(c: RawConstraintDefV9) -> None:
        opt_str(c.name)
        w.u8(0)
        col_list(c.columns)

    def sequence(s: RawSequenceDefV9) -> None:
        opt_str(s.name)
        w.u16(s.column)
        for v in (s.start, s.min_value, s.max_value):
            w.option(v, w.i128)
        w.i128(s.increment)

    def schedule(s: RawScheduleDefV9) -> None:
        opt_str(s.name)
        w.string(s.reducer_name)
        w.u16(s.scheduled_at_column)

    def table(t: RawTableDefV9) -> None:
        w.string(t.name)
        w.u32(t.product_type_ref)
        col_list(t.primary_key)
        w.vec(t.indexes, index)
        w.vec(t.constraints, constraint)
        w.vec(t.sequences, sequence)
        w.option(t.schedule, schedule)
        w.u8(t.table_type)
        w.u8(t.table_access)

    def reducer(rd: RawReducerDefV9) -> None:
        w.string(rd.name)
        w.product_type(rd.params)
        w.option(rd.lifecycle, w.u8)

    def typedef(td: RawTypeDefV9) -> None:
        w.vec(td.name.scope, w.string)
        w.string(td.name.name)
        w.u32(td.ty)
        w.bool(td.custom_ordering)

    def misc(m: RawMiscModuleExportV9) -> None:
        if isinstance(m, RawColumnDefaultValueV9):
            w.u8(0).string(m.table).u16(m.col_id).bytes(m.value)
        elif isinstance(m, RawProcedureDefV9):
            w.u8(1).string(m.name).product_type(m.params).algebraic_type(m.return_type)
        else:
            w.u8(2).string(m.name).u32(m.index).bool(m.is_public).bool(m.is_anonymous)
            w.product_type(m.params).algebraic_type(m.return_type)

    w.vec(raw.tables, table)
    w.vec(raw.reducers, reducer)
    w.vec(raw.types, typedef)
    w.vec(raw.misc_exports, misc)
    w.vec(raw.row_level_security, lambda rls: w.string(rls.sql))
    return w.getvalue()


# ---------------------------------------------------------------------------------- validated defs


@dataclass(frozen=True)
class ColumnDef:
    """A column: position, name and fully resolved type (no refs)."""

    col_id: int
    name: str
    type: AlgebraicType
    default_value: bytes | None = None  # bsatn, from a ColumnDefaultValue misc export


@dataclass(frozen=True)
class IndexDef:
    """An index with its final name. ``unique`` when a unique constraint has exactly these columns."""

    name: str
    accessor_name: str | None
    algorithm: IndexAlgorithm
    columns: tuple[int, ...]
    unique: bool


@dataclass(frozen=True)
class ConstraintDef:
    """A unique constraint with its final name; ``columns`` sorted (a column set)."""

    name: str
    columns: tuple[int, ...]


@dataclass(frozen=True)
class SequenceDef:
    """A sequence with its final name. ``start``/``min_value``/``max_value`` are as declared
    (None = default); the ``effective_*`` properties apply the 1.12 defaults."""

    name: str
    column: int
    start: int | None
    min_value: int | None
    max_value: int | None
    increment: int

    # v1.12.0:crates/schema/src/schema.rs SequenceSchema::from_module_def: start 1, min 1,
    # max i128::MAX whatever the increment's sign.
    @property
    def effective_start(self) -> int:
        return 1 if self.start is None else self.start

    @property
    def effective_min(self) -> int:
        return 1 if self.min_value is None else self.min_value

    @property
    def effective_max(self) -> int:
        return I128_MAX if self.max_value is None else self.max_value


@dataclass(frozen=True)
class ScheduleDef:
    """Schedule of a table: ``id_column`` is the u64 primary key, ``at_column`` the ScheduleAt."""

    name: str
    function_name: str
    at_column: int
    id_column: int
    is_procedure: bool = False


@dataclass(frozen=True)
class TableDef:
    """A validated table."""

    name: str
    product_type_ref: int
    row_type: ProductType  # fully resolved: no Ref anywhere
    columns: tuple[ColumnDef, ...]
    primary_key: int | None
    indexes: tuple[IndexDef, ...]  # sorted by name
    constraints: tuple[ConstraintDef, ...]  # sorted by name
    sequences: tuple[SequenceDef, ...]  # sorted by name
    schedule: ScheduleDef | None
    table_type: TableType
    table_access: TableAccess

    @property
    def is_public(self) -> bool:
        return self.table_access is TableAccess.PUBLIC

    def column(self, name: str) -> ColumnDef | None:
        """The column called ``name``, or None."""
        for c in self.columns:
            if c.name == name:
                return c
        return None

    def index(self, name: str) -> IndexDef | None:
        """The index called ``name``, or None."""
        for ix in self.indexes:
            if ix.name == name:
                return ix
        return None

    def unique_column_sets(self) -> list[tuple[int, ...]]:
        """Column sets (sorted) of every unique constraint."""
        return [c.columns for c in self.constraints]

    def sequence_for(self, col_id: int) -> SequenceDef | None:
        """The sequence on column ``col_id``, or None."""
        for s in self.sequences:
            if s.column == col_id:
                return s
        return None


@dataclass(frozen=True)
class ReducerDef:
    """A validated reducer; its id is its position in :attr:`ModuleDef.reducers`."""

    id: int
    name: str
    params: ProductType  # may contain refs into the module typespace
    lifecycle: Lifecycle | None


@dataclass(frozen=True)
class ModuleDef:
    """A validated module definition: what the engine needs to create and run a database."""

    raw: RawModuleDefV9
    typespace: Typespace
    tables: tuple[TableDef, ...]  # sorted by name
    reducers: tuple[ReducerDef, ...]  # module order (= reducer ids)
    types: tuple[RawTypeDefV9, ...]  # sorted by (scope, name)
    procedures: tuple[RawProcedureDefV9, ...]
    views: tuple[RawViewDefV9, ...]
    row_level_security: tuple[str, ...]
    _tables_by_name: dict[str, TableDef] = field(repr=False, compare=False)
    _reducers_by_name: dict[str, ReducerDef] = field(repr=False, compare=False)

    def table(self, name: str) -> TableDef | None:
        """The table called ``name``, or None."""
        return self._tables_by_name.get(name)

    def reducer(self, name: str) -> ReducerDef | None:
        """The reducer called ``name``, or None."""
        return self._reducers_by_name.get(name)

    def lifecycle_reducer(self, lifecycle: Lifecycle) -> ReducerDef | None:
        """The reducer with ``lifecycle`` (at most one), or None."""
        for rd in self.reducers:
            if rd.lifecycle is lifecycle:
                return rd
        return None

    def index(self, name: str) -> tuple[TableDef, IndexDef] | None:
        """The table and index for a (final) index name, or None."""
        for t in self.tables:
            ix = t.index(name)
            if ix is not None:
                return t, ix
        return None


# ---------------------------------------------------------------------------------- validation


def _is_identifier(name: str) -> bool:
    """``Identifier::new`` (v1.12.0:crates/schema/src/identifier.rs): NFC, XID_Start|_ then XID_Continue."""
    if not name or unicodedata.normalize("NFC", name) != name:
        return False
    return name.isidentifier()  # Python identifiers are exactly XID_Start|_ XID_Continue*


def _col_name(pt: ProductType, col: int) -> str:
    """Column name for generated names (``col_{n}`` when unnamed or out of range)."""
    if 0 <= col < len(pt.elements):
        name = pt.elements[col].name
        if name is not None:
            return name
    return f"col_{col}"


def generate_index_name(
    table: str, pt: ProductType, algorithm: IndexAlgorithm, columns: Iterable[int]
) -> str:
    """§11.4: ``{table}_{cols}_idx_{btree|hash|direct}``."""
    return f"{table}_{'_'.join(_col_name(pt, c) for c in columns)}_idx_{algorithm.label}"


def generate_unique_constraint_name(table: str, pt: ProductType, columns: Iterable[int]) -> str:
    """§11.4: ``{table}_{cols}_key``."""
    return f"{table}_{'_'.join(_col_name(pt, c) for c in columns)}_key"


def generate_sequence_name(table: str, pt: ProductType, column: int) -> str:
    """§11.4: ``{table}_{col}_seq``."""
    return f"{table}_{_col_name(pt, column)}_seq"


def generate_schedule_name(table: str) -> str:
    """§11.4: ``{table}_sched``."""
    return f"{table}_sched"


_UNSIGNED_DIRECT = frozenset({TypeTag.U8, TypeTag.U16, TypeTag.U32, TypeTag.U64})
_INTEGERS = frozenset(
    {
        TypeTag.I8, TypeTag.U8, TypeTag.I16, TypeTag.U16, TypeTag.I32, TypeTag.U32,
        TypeTag.I64, TypeTag.U64, TypeTag.I128, TypeTag.U128, TypeTag.I256, TypeTag.U256,
    }
)  # fmt: skip


def _is_simple_enum(ty: AlgebraicType) -> bool:
    return isinstance(ty, SumType) and all(v.algebraic_type == ProductType(()) for v in ty.variants)


def _is_schedule_at(ty: AlgebraicType) -> bool:
    return ty == SCHEDULE_AT


class _TypeProblem(Exception):
    pass


class _Validator:
    """Collects problems while building the validated structures."""

    def __init__(self, raw: RawModuleDefV9) -> None:
        self.raw = raw
        self.ts = raw.typespace
        self.problems: list[str] = []
        self.names: dict[str, str] = {}  # global namespace: name -> what claimed it
        self.defined_refs = {td.ty for td in raw.types}

    def problem(self, msg: str) -> None:
        self.problems.append(msg)

    def claim(self, name: str, what: str) -> None:
        """Add ``name`` to the global namespace (tables, indexes, constraints, sequences, schedules)."""
        prev = self.names.get(name)
        if prev is not None:
            self.problem(f"duplicate name `{name}`: used by {prev} and by {what}")
        else:
            self.names[name] = what

    def identifier(self, name: str, what: str) -> None:
        if not _is_identifier(name):
            self.problem(f"{what}: `{name}` is not a valid identifier")

    # -- types ------------------------------------------------------------------------------

    def resolve(self, ty: AlgebraicType, stack: tuple[int, ...] = ()) -> AlgebraicType:
        """Inline every ref; raises _TypeProblem on an out-of-range or recursive ref."""
        if isinstance(ty, Ref):
            if not 0 <= ty.idx < len(self.ts.types):
                raise _TypeProblem(
                    f"type ref {ty.idx} is out of range (typespace has {len(self.ts.types)} types)"
                )
            if ty.idx in stack:
                raise _TypeProblem(f"type ref {ty.idx} is recursive")
            return self.resolve(self.ts.types[ty.idx], (*stack, ty.idx))
        if isinstance(ty, ProductType):
            return ProductType(
                tuple(ProductTypeElement(e.name, self.resolve(e.algebraic_type, stack)) for e in ty.elements)
            )
        if isinstance(ty, SumType):
            return SumType(
                tuple(SumTypeVariant(v.name, self.resolve(v.algebraic_type, stack)) for v in ty.variants)
            )
        if isinstance(ty, ArrayType):
            return ArrayType(self.resolve(ty.elem_ty, stack))
        return ty

    def check_use(self, ty: AlgebraicType, where: str, touching: tuple[int, ...] = ()) -> None:
        """The reference's "type use" rule (type_for_generate.rs ``parse_use``): inline products
        and sums must be special (Identity, Option, ScheduleAt, …); others go through a ref."""
        if isinstance(ty, Ref):
            if not 0 <= ty.idx < len(self.ts.types):
                self.problem(
                    f"{where}: type ref {ty.idx} is out of range (typespace has {len(self.ts.types)} types)"
                )
                return
            if ty.idx in self.defined_refs:
                return
            if ty.idx in touching or self.ts.types[ty.idx] == ty:
                self.problem(f"{where}: type ref {ty.idx} is recursive")
                return
            self.check_use(self.ts.types[ty.idx], where, (*touching, ty.idx))
            return
        if is_special(ty) or ty == ProductType(()) or ty == SumType(()):
            if isinstance(ty, SumType):
                for v in ty.variants:  # Option<T> / Result<T, E> payloads
                    self.check_use(v.algebraic_type, where, touching)
            return
        if isinstance(ty, ArrayType):
            self.check_use(ty.elem_ty, where, touching)
        elif isinstance(ty, ProductType | SumType):
            self.problem(
                f"{where}: a non-special product or sum type must be declared in the typespace with a type "
                f"definition and used through a ref"
            )

    def typedefs(self) -> list[RawTypeDefV9]:
        seen: dict[RawScopedTypeNameV9, int] = {}
        for td in self.raw.types:
            label = ".".join((*td.name.scope, td.name.name))
            what = f"type `{label}`"
            for part in (*td.name.scope, td.name.name):
                self.identifier(part, what)
            if td.name in seen:
                self.problem(f"duplicate type name `{label}`")
            seen[td.name] = td.ty
            if not 0 <= td.ty < len(self.ts.types):
                self.problem(
                    f"{what}: type ref {td.ty} is out of range (typespace has {len(self.ts.types)} types)"
                )
                continue
            target = self.ts.types[td.ty]
            if isinstance(target, ProductType):
                items: tuple[ProductTypeElement | SumTypeVariant, ...] = target.elements
            elif isinstance(target, SumType):
                items = target.variants
            else:
                self.problem(f"{what}: typespace entry {td.ty} is not a product or sum type")
                continue
            if not td.custom_ordering and not _default_ordering(items):
                self.problem(
                    f"{what}: fields/variants are not in the default order and custom_ordering is false"
                )
            for i, item in enumerate(items):
                if item.name is None:
                    self.problem(f"{what}: element {i} has no name")
                else:
                    self.identifier(item.name, f"{what} element {i}")
                self.check_use(item.algebraic_type, f"{what} element `{item.name or i}`")
        return sorted(self.raw.types, key=lambda td: (td.name.scope, td.name.name))

    # -- functions --------------------------------------------------------------------------

    def params(self, params: ProductType, what: str) -> None:
        for i, p in enumerate(params.elements):
            if p.name is None:
                self.problem(f"{what}: parameter {i} has no name")
            else:
                self.identifier(p.name, f"{what} parameter {i}")
            self.check_use(p.algebraic_type, f"{what} parameter `{p.name or i}`")

    def reducers(self) -> list[ReducerDef]:
        out: list[ReducerDef] = []
        lifecycles: dict[Lifecycle, str] = {}
        for i, rd in enumerate(self.raw.reducers):
            what = f"reducer `{rd.name}`"
            self.identifier(rd.name, what)
            self.params(rd.params, what)
            if rd.lifecycle is not None:
                prev = lifecycles.get(rd.lifecycle)
                if prev is not None:
                    self.problem(
                        f"{what}: lifecycle {rd.lifecycle.json_name} is already taken by reducer `{prev}`"
                    )
                else:
                    lifecycles[rd.lifecycle] = rd.name
            out.append(ReducerDef(i, rd.name, rd.params, rd.lifecycle))
        return out

    # -- tables -----------------------------------------------------------------------------

    def table(self, t: RawTableDefV9) -> TableDef | None:
        what = f"table `{t.name}`"
        if not 0 <= t.product_type_ref < len(self.ts.types) or not isinstance(
            self.ts.types[t.product_type_ref], ProductType
        ):
            self.problem(f"{what}: product_type_ref {t.product_type_ref} does not refer to a product type")
            self.claim(t.name, what)
            return None
        pt = self.ts.types[t.product_type_ref]
        assert isinstance(pt, ProductType)
        self.claim(t.name, what)
        self.identifier(t.name, what)
        if t.table_type is not TableType.SYSTEM and t.name.startswith("st_"):
            self.problem(f"{what}: names starting with `st_` are reserved for system tables")

        columns: list[ColumnDef] = []
        seen_cols: set[str] = set()
        for i, e in enumerate(pt.elements):
            if e.name is None:
                self.problem(f"{what}: column {i} has no name")
                name = f"col_{i}"
            else:
                name = e.name
                self.identifier(name, f"{what} column {i}")
                if name in seen_cols:
                    self.problem(f"{what}: duplicate column name `{name}`")
                seen_cols.add(name)
            self.check_use(e.algebraic_type, f"{what} column `{name}`")
            try:
                col_ty = self.resolve(e.algebraic_type)
            except _TypeProblem as err:
                self.problem(f"{what} column `{name}`: {err}")
                col_ty = e.algebraic_type
            columns.append(ColumnDef(i, name, col_ty))
        ncols = len(pt.elements)

        def cols_ok(cols: tuple[int, ...], owner: str) -> bool:
            ok = True
            for c in cols:
                if not 0 <= c < ncols:
                    self.problem(f"{owner}: column {c} does not exist ({what} has {ncols} columns)")
                    ok = False
            if len(set(cols)) != len(cols):
                self.problem(f"{owner}: duplicate columns {list(cols)}")
                ok = False
            return ok

        # Constraints first: index uniqueness derives from them.
        constraints: list[ConstraintDef] = []
        for c in t.constraints:
            cname = c.name if c.name is not None else generate_unique_constraint_name(t.name, pt, c.columns)
            owner = f"unique constraint `{cname}` of {what}"
            self.claim(cname, owner)
            if cols_ok(c.columns, owner):
                constraints.append(ConstraintDef(cname, tuple(sorted(c.columns))))
        unique_sets = {frozenset(c.columns) for c in constraints}

        indexes: list[IndexDef] = []
        for ix in t.indexes:
            iname = (
                ix.name if ix.name is not None else generate_index_name(t.name, pt, ix.algorithm, ix.columns)
            )
            owner = f"index `{iname}` of {what}"
            self.claim(iname, owner)
            if ix.accessor_name is not None:
                self.identifier(ix.accessor_name, f"{owner} accessor")
            if not cols_ok(ix.columns, owner):
                continue
            if ix.algorithm is IndexAlgorithm.DIRECT:
                col = columns[ix.columns[0]]
                if not _direct_ok(col.type):
                    self.problem(
                        f"{owner}: a direct index needs a u8/u16/u32/u64 or plain-enum column, "
                        f"but column `{col.name}` is {col.type!r}"
                    )
                if frozenset(ix.columns) not in unique_sets:
                    self.problem(f"{owner}: a direct index needs a unique constraint on column `{col.name}`")
            indexes.append(
                IndexDef(
                    iname, ix.accessor_name, ix.algorithm, ix.columns, frozenset(ix.columns) in unique_sets
                )
            )
        index_sets = {frozenset(ix.columns) for ix in indexes}
        for cd in constraints:
            if frozenset(cd.columns) not in index_sets:
                names = ", ".join(f"`{columns[i].name}`" for i in cd.columns)
                self.problem(
                    f"unique constraint `{cd.name}` of {what} has no index on exactly its columns ({names})"
                )

        primary_key: int | None = None
        if len(t.primary_key) > 1:
            self.problem(f"{what}: a primary key has at most one column, got {list(t.primary_key)}")
        elif t.primary_key:
            pk = t.primary_key[0]
            if not 0 <= pk < ncols:
                self.problem(f"{what}: primary key column {pk} does not exist ({ncols} columns)")
            elif frozenset((pk,)) not in unique_sets:
                self.problem(
                    f"{what}: primary key column `{columns[pk].name}` has no unique constraint on exactly that column"
                )
            else:
                primary_key = pk

        sequences: list[SequenceDef] = []
        seq_cols: set[int] = set()
        for s in t.sequences:
            sname = s.name if s.name is not None else generate_sequence_name(t.name, pt, s.column)
            owner = f"sequence `{sname}` of {what}"
            self.claim(sname, owner)
            ok = True
            if not 0 <= s.column < ncols:
                self.problem(f"{owner}: column {s.column} does not exist ({ncols} columns)")
                ok = False
            else:
                col = columns[s.column]
                if not (isinstance(col.type, PrimitiveType) and col.type.kind in _INTEGERS):
                    self.problem(f"{owner}: column `{col.name}` is {col.type!r}, not an integer type")
                    ok = False
                elif s.column in seq_cols:
                    self.problem(f"{what}: column `{col.name}` has more than one sequence")
                    ok = False
                seq_cols.add(s.column)
            lo, st, hi = s.min_value, s.start, s.max_value
            if not (_le(lo, st) and _le(st, hi) and _le(lo, hi)):
                self.problem(f"{owner}: invalid range min={lo} start={st} max={hi}")
                ok = False
            if s.increment == 0:
                self.problem(f"{owner}: increment must be non-zero")
                ok = False
            if ok:
                sequences.append(SequenceDef(sname, s.column, s.start, s.min_value, s.max_value, s.increment))

        schedule: ScheduleDef | None = None
        if t.schedule is not None:
            sname = t.schedule.name if t.schedule.name is not None else generate_schedule_name(t.name)
            self.claim(sname, f"schedule of {what}")
            at = t.schedule.scheduled_at_column
            at_ok = 0 <= at < ncols and _is_schedule_at(columns[at].type)
            id_ok = primary_key is not None and columns[primary_key].type == PrimitiveType(TypeTag.U64)
            if not (at_ok and id_ok):
                self.problem(
                    f"schedule `{sname}` of {what}: a schedule table needs a u64 primary key and a ScheduleAt "
                    f"column (scheduled_at_column {at})"
                )
            else:
                assert primary_key is not None
                schedule = ScheduleDef(sname, t.schedule.reducer_name, at, primary_key)

        row_type = ProductType(tuple(ProductTypeElement(c.name, c.type) for c in columns))
        return TableDef(
            name=t.name,
            product_type_ref=t.product_type_ref,
            row_type=row_type,
            columns=tuple(columns),
            primary_key=primary_key,
            indexes=tuple(sorted(indexes, key=lambda i: i.name)),
            constraints=tuple(sorted(constraints, key=lambda c: c.name)),
            sequences=tuple(sorted(sequences, key=lambda s: s.name)),
            schedule=schedule,
            table_type=t.table_type,
            table_access=t.table_access,
        )


def _le(lo: int | None, hi: int | None) -> bool:
    return lo is None or hi is None or lo <= hi


def _direct_ok(ty: AlgebraicType) -> bool:
    if isinstance(ty, PrimitiveType):
        return ty.kind in _UNSIGNED_DIRECT
    return _is_simple_enum(ty)


def _default_ordering(items: tuple[ProductTypeElement | SumTypeVariant, ...]) -> bool:
    """``default_element_ordering.rs``: unnamed (by position) first, then named sorted by name."""
    labels = [(0, i, "") if it.name is None else (1, 0, it.name) for i, it in enumerate(items)]
    return labels == sorted(labels)


def validate(raw: RawModuleDefV9) -> ModuleDef:
    """Validate ``raw`` (§11.5) and resolve it into a :class:`ModuleDef`.

    Raises :class:`ModuleDefError` listing every problem found.
    """
    v = _Validator(raw)
    reducers = v.reducers()
    procedures = [m for m in raw.misc_exports if isinstance(m, RawProcedureDefV9)]
    views = [m for m in raw.misc_exports if isinstance(m, RawViewDefV9)]
    defaults = [m for m in raw.misc_exports if isinstance(m, RawColumnDefaultValueV9)]
    for p in procedures:
        v.identifier(p.name, f"procedure `{p.name}`")
        v.params(p.params, f"procedure `{p.name}`")
        v.check_use(p.return_type, f"procedure `{p.name}` return type")
    for vw in views:
        v.identifier(vw.name, f"view `{vw.name}`")
        v.claim(vw.name, f"view `{vw.name}`")
        v.params(vw.params, f"view `{vw.name}`")
    tables = [td for td in (v.table(t) for t in raw.tables) if td is not None]
    types = v.typedefs()

    # Reducers, procedures and views share the function namespace.
    functions: dict[str, str] = {}
    for kind, names in (
        ("reducer", [r.name for r in reducers]),
        ("procedure", [p.name for p in procedures]),
        ("view", [vw.name for vw in views]),
    ):
        for name in names:
            if name in functions:
                v.problem(f"duplicate function name `{name}`: a {functions[name]} and a {kind}")
            else:
                functions[name] = kind

    # Scheduled functions exist and take exactly the row.
    reducers_by_name = {r.name: r for r in reducers}
    procs_by_name = {p.name: p for p in procedures}
    for i, td in enumerate(tables):
        if td.schedule is None:
            continue
        fn = td.schedule.function_name
        params: ProductType | None
        if fn in reducers_by_name:
            params, is_proc = reducers_by_name[fn].params, False
        elif fn in procs_by_name:
            params, is_proc = procs_by_name[fn].params, True
        else:
            v.problem(
                f"schedule `{td.schedule.name}` of table `{td.name}`: no reducer or procedure named `{fn}`"
            )
            continue
        if len(params.elements) != 1 or params.elements[0].algebraic_type != Ref(td.product_type_ref):
            v.problem(
                f"{'procedure' if is_proc else 'reducer'} `{fn}` scheduled by table `{td.name}` must take exactly "
                f"one parameter of type Ref({td.product_type_ref}) (the table's row)"
            )
        elif is_proc:
            tables[i] = _replace_schedule(td, is_procedure=True)

    # Column default values (misc export 0).
    by_name = {t.name: t for t in tables}
    seen_defaults: set[tuple[str, int]] = set()
    for d in defaults:
        t = by_name.get(d.table)
        if t is None:
            v.problem(f"column default value: no table named `{d.table}`")
            continue
        if not 0 <= d.col_id < len(t.columns):
            v.problem(f"column default value for table `{d.table}`: column {d.col_id} does not exist")
            continue
        col = t.columns[d.col_id]
        if (d.table, d.col_id) in seen_defaults:
            v.problem(f"table `{d.table}` column `{col.name}` has more than one default value")
            continue
        seen_defaults.add((d.table, d.col_id))
        try:
            decode(col.type, d.value)
        except SatsError as e:
            v.problem(f"default value of table `{d.table}` column `{col.name}` does not decode: {e}")
            continue
        cols = list(t.columns)
        cols[d.col_id] = ColumnDef(col.col_id, col.name, col.type, d.value)
        by_name[d.table] = _replace_columns(t, tuple(cols))

    if v.problems:
        raise ModuleDefError(v.problems)

    sorted_tables = tuple(sorted(by_name.values(), key=lambda t: t.name))
    rls: dict[str, None] = {r.sql: None for r in raw.row_level_security}
    return ModuleDef(
        raw=raw,
        typespace=raw.typespace,
        tables=sorted_tables,
        reducers=tuple(reducers),
        types=tuple(types),
        procedures=tuple(procedures),
        views=tuple(views),
        row_level_security=tuple(rls),
        _tables_by_name={t.name: t for t in sorted_tables},
        _reducers_by_name=reducers_by_name,
    )


def _replace_schedule(td: TableDef, is_procedure: bool) -> TableDef:
    assert td.schedule is not None
    return replace(td, schedule=replace(td.schedule, is_procedure=is_procedure))


def _replace_columns(td: TableDef, columns: tuple[ColumnDef, ...]) -> TableDef:
    return replace(td, columns=columns)


def load_module_def(data: bytes | bytearray | memoryview) -> ModuleDef:
    """Decode and validate the bytes a module's ``__describe_module__`` wrote."""
    return validate(decode_raw_module_def(data))


# ---------------------------------------------------------------------------------- /schema JSON (§12)

_TYPE_JSON_NAMES = {
    TypeTag.STRING: "String",
    TypeTag.BOOL: "Bool",
    **{t: t.name for t in TypeTag if t >= TypeTag.I8},
}


def _none() -> dict[str, Any]:
    return {"none": []}


def _opt(v: Any) -> dict[str, Any]:
    return _none() if v is None else {"some": v}


def _element_json(name: str | None, ty: AlgebraicType) -> dict[str, Any]:
    return {"name": _opt(name), "algebraic_type": type_json(ty)}


def product_type_json(pt: ProductType) -> dict[str, Any]:
    """A ``ProductType`` as derived SATS-JSON: ``{"elements": [...]}``."""
    return {"elements": [_element_json(e.name, e.algebraic_type) for e in pt.elements]}


def type_json(ty: AlgebraicType) -> dict[str, Any]:
    """An ``AlgebraicType`` as derived SATS-JSON (sats-bsatn.md §5.1 flavour A)."""
    if isinstance(ty, Ref):
        return {"Ref": ty.idx}
    if isinstance(ty, ProductType):
        return {"Product": product_type_json(ty)}
    if isinstance(ty, SumType):
        return {"Sum": {"variants": [_element_json(v.name, v.algebraic_type) for v in ty.variants]}}
    if isinstance(ty, ArrayType):
        return {"Array": type_json(ty.elem_ty)}
    assert isinstance(ty, PrimitiveType)
    return {_TYPE_JSON_NAMES[ty.kind]: []}


def _algorithm_json(ix: IndexDef) -> dict[str, Any]:
    if ix.algorithm is IndexAlgorithm.DIRECT:
        return {"Direct": ix.columns[0]}
    return {ix.algorithm.json_name: list(ix.columns)}


def _table_json(t: TableDef) -> dict[str, Any]:
    return {
        "name": t.name,
        "product_type_ref": t.product_type_ref,
        "primary_key": [] if t.primary_key is None else [t.primary_key],
        "indexes": [
            {
                "name": {"some": ix.name},
                "accessor_name": _opt(ix.accessor_name),
                "algorithm": _algorithm_json(ix),
            }
            for ix in t.indexes
        ],
        "constraints": [
            {"name": {"some": c.name}, "data": {"Unique": {"columns": list(c.columns)}}}
            for c in t.constraints
        ],
        "sequences": [
            {
                "name": {"some": s.name},
                "column": s.column,
                "start": _opt(s.start),
                "min_value": _opt(s.min_value),
                "max_value": _opt(s.max_value),
                "increment": s.increment,
            }
            for s in t.sequences
        ],
        "schedule": _none()
        if t.schedule is None
        else {
            "some": {
                "name": {"some": t.schedule.name},
                "reducer_name": t.schedule.function_name,
                "scheduled_at_column": t.schedule.at_column,
            }
        },
        "table_type": {t.table_type.json_name: []},
        "table_access": {t.table_access.json_name: []},
    }


def to_schema_json(md: ModuleDef) -> dict[str, Any]:
    """The body of ``GET /v1/database/:name/schema?version=9`` (§12), as a JSON-ready dict."""
    misc: list[dict[str, Any]] = [
        {
            "Procedure": {
                "name": p.name,
                "params": product_type_json(p.params),
                "return_type": type_json(p.return_type),
            }
        }
        for p in md.procedures
    ]
    misc += [
        {
            "View": {
                "name": vw.name,
                "index": vw.index,
                "is_public": vw.is_public,
                "is_anonymous": vw.is_anonymous,
                "params": product_type_json(vw.params),
                "return_type": type_json(vw.return_type),
            }
        }
        for vw in md.views
    ]
    return {
        "typespace": {"types": [type_json(t) for t in md.typespace.types]},
        "tables": [_table_json(t) for t in md.tables],
        "reducers": [
            {
                "name": r.name,
                "params": product_type_json(r.params),
                "lifecycle": _none() if r.lifecycle is None else {"some": {r.lifecycle.json_name: []}},
            }
            for r in md.reducers
        ],
        "types": [
            {
                "name": {"scope": list(t.name.scope), "name": t.name.name},
                "ty": t.ty,
                "custom_ordering": t.custom_ordering,
            }
            for t in md.types
        ],
        "misc_exports": misc,
        "row_level_security": [{"sql": s} for s in md.row_level_security],
    }
