"""The SATS type model: AlgebraicType and its variants, typespaces and refs.

Mirrors SpacetimeDB 1.12's `AlgebraicType` (see `../shared/spec/sats-bsatn.md` §1). Types are
immutable, hashable values so that compiled codecs and key encoders can be cached per type.

Python value model used by every codec in this package:

| SATS type      | Python value                                   |
| -------------- | ---------------------------------------------- |
| Bool           | ``bool``                                       |
| I8 … U256      | ``int``                                        |
| F32, F64       | ``float``                                      |
| String         | ``str``                                        |
| Array(U8)      | ``bytes``                                      |
| Array(T)       | ``list``                                       |
| Product        | ``tuple`` (positional, element order)          |
| Sum            | :class:`SumValue` ``(tag, value)``             |
| unit           | ``()`` (the empty product)                     |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple


class TypeTag(enum.IntEnum):
    """The BSATN tag of each AlgebraicType variant (its index in the Rust enum)."""

    REF = 0
    SUM = 1
    PRODUCT = 2
    ARRAY = 3
    STRING = 4
    BOOL = 5
    I8 = 6
    U8 = 7
    I16 = 8
    U16 = 9
    I32 = 10
    U32 = 11
    I64 = 12
    U64 = 13
    I128 = 14
    U128 = 15
    I256 = 16
    U256 = 17
    F32 = 18
    F64 = 19


class AlgebraicType:
    """Base class of every SATS type."""

    __slots__ = ()
    tag: TypeTag


@dataclass(frozen=True, slots=True)
class Ref(AlgebraicType):
    """A reference to ``typespace.types[idx]``."""

    idx: int

    @property
    def tag(self) -> TypeTag:  # type: ignore[override]
        return TypeTag.REF


@dataclass(frozen=True, slots=True)
class SumTypeVariant:
    """One variant of a sum type: an optional name and its payload type."""

    name: str | None
    algebraic_type: AlgebraicType


@dataclass(frozen=True, slots=True)
class SumType(AlgebraicType):
    """A tagged union."""

    variants: tuple[SumTypeVariant, ...]

    @property
    def tag(self) -> TypeTag:  # type: ignore[override]
        return TypeTag.SUM

    def variant_index(self, name: str) -> int | None:
        """The tag of the variant called ``name``, or None."""
        for i, v in enumerate(self.variants):
            if v.name == name:
                return i
        return None


@dataclass(frozen=True, slots=True)
class ProductTypeElement:
    """One element (column / field) of a product type."""

    name: str | None
    algebraic_type: AlgebraicType


@dataclass(frozen=True, slots=True)
class ProductType(AlgebraicType):
    """A struct or tuple; the empty product is the unit type."""

    elements: tuple[ProductTypeElement, ...]

    @property
    def tag(self) -> TypeTag:  # type: ignore[override]
        return TypeTag.PRODUCT

    def names(self) -> list[str | None]:
        """Element names in order."""
        return [e.name for e in self.elements]

    def index_of(self, name: str) -> int | None:
        """Position of the element called ``name``, or None."""
        for i, e in enumerate(self.elements):
            if e.name == name:
                return i
        return None


@dataclass(frozen=True, slots=True)
class ArrayType(AlgebraicType):
    """A homogeneous list; ``Array(U8)`` is "bytes"."""

    elem_ty: AlgebraicType

    @property
    def tag(self) -> TypeTag:  # type: ignore[override]
        return TypeTag.ARRAY


@dataclass(frozen=True, slots=True)
class PrimitiveType(AlgebraicType):
    """String, Bool, the integers and the floats (tags 4–19)."""

    kind: TypeTag

    @property
    def tag(self) -> TypeTag:  # type: ignore[override]
        return self.kind

    def __repr__(self) -> str:
        return self.kind.name.capitalize() if self.kind in (TypeTag.STRING, TypeTag.BOOL) else self.kind.name


STRING = PrimitiveType(TypeTag.STRING)
BOOL = PrimitiveType(TypeTag.BOOL)
I8 = PrimitiveType(TypeTag.I8)
U8 = PrimitiveType(TypeTag.U8)
I16 = PrimitiveType(TypeTag.I16)
U16 = PrimitiveType(TypeTag.U16)
I32 = PrimitiveType(TypeTag.I32)
U32 = PrimitiveType(TypeTag.U32)
I64 = PrimitiveType(TypeTag.I64)
U64 = PrimitiveType(TypeTag.U64)
I128 = PrimitiveType(TypeTag.I128)
U128 = PrimitiveType(TypeTag.U128)
I256 = PrimitiveType(TypeTag.I256)
U256 = PrimitiveType(TypeTag.U256)
F32 = PrimitiveType(TypeTag.F32)
F64 = PrimitiveType(TypeTag.F64)

PRIMITIVES: dict[TypeTag, PrimitiveType] = {
    p.kind: p for p in (STRING, BOOL, I8, U8, I16, U16, I32, U32, I64, U64, I128, U128, I256, U256, F32, F64)
}

#: (bits, signed) of every integer type.
INT_LAYOUT: dict[TypeTag, tuple[int, bool]] = {
    TypeTag.I8: (8, True),
    TypeTag.U8: (8, False),
    TypeTag.I16: (16, True),
    TypeTag.U16: (16, False),
    TypeTag.I32: (32, True),
    TypeTag.U32: (32, False),
    TypeTag.I64: (64, True),
    TypeTag.U64: (64, False),
    TypeTag.I128: (128, True),
    TypeTag.U128: (128, False),
    TypeTag.I256: (256, True),
    TypeTag.U256: (256, False),
}

UNIT = ProductType(())
NEVER = SumType(())
BYTES = ArrayType(U8)


class SumValue(NamedTuple):
    """A value of a sum type: the variant's tag and its payload."""

    tag: int
    value: Any


def product(*fields: tuple[str | None, AlgebraicType]) -> ProductType:
    """Build a product type from ``(name, type)`` pairs."""
    return ProductType(tuple(ProductTypeElement(n, t) for n, t in fields))


def sum_type(*variants: tuple[str | None, AlgebraicType]) -> SumType:
    """Build a sum type from ``(name, type)`` pairs."""
    return SumType(tuple(SumTypeVariant(n, t) for n, t in variants))


def option(inner: AlgebraicType) -> SumType:
    """``Option<inner>``: ``some`` (tag 0) then ``none`` (tag 1)."""
    return sum_type(("some", inner), ("none", UNIT))


def result(ok: AlgebraicType, err: AlgebraicType) -> SumType:
    """``Result<ok, err>``: ``ok`` (tag 0) then ``err`` (tag 1)."""
    return sum_type(("ok", ok), ("err", err))


def simple_enum(*names: str) -> SumType:
    """A plain enum: every variant carries the unit payload."""
    return SumType(tuple(SumTypeVariant(n, UNIT) for n in names))


IDENTITY = product(("__identity__", U256))
CONNECTION_ID = product(("__connection_id__", U128))
TIMESTAMP = product(("__timestamp_micros_since_unix_epoch__", I64))
TIME_DURATION = product(("__time_duration_micros__", I64))
UUID = product(("__uuid__", U128))
SCHEDULE_AT = sum_type(("Interval", TIME_DURATION), ("Time", TIMESTAMP))


def is_option(ty: AlgebraicType) -> bool:
    """True for a sum shaped exactly like ``Option<T>``."""
    return (
        isinstance(ty, SumType)
        and len(ty.variants) == 2
        and ty.variants[0].name == "some"
        and ty.variants[1].name == "none"
        and ty.variants[1].algebraic_type == UNIT
    )


def is_special(ty: AlgebraicType) -> bool:
    """True for the shapes SpacetimeDB treats specially (Identity, Timestamp, Option, …)."""
    if ty in (IDENTITY, CONNECTION_ID, TIMESTAMP, TIME_DURATION, UUID, SCHEDULE_AT):
        return True
    if is_option(ty):
        return True
    return (
        isinstance(ty, SumType)
        and len(ty.variants) == 2
        and ty.variants[0].name == "ok"
        and ty.variants[1].name == "err"
    )


@dataclass(slots=True)
class Typespace:
    """The list of types that ``Ref(n)`` points into."""

    types: list[AlgebraicType]

    def resolve(self, ty: AlgebraicType) -> AlgebraicType:
        """Follow ``Ref`` links until a non-ref type; raises TypeError on a bad or cyclic ref."""
        seen = 0
        while isinstance(ty, Ref):
            if not 0 <= ty.idx < len(self.types):
                raise TypeError(f"type ref {ty.idx} is out of range (typespace has {len(self.types)} types)")
            ty = self.types[ty.idx]
            seen += 1
            if seen > len(self.types):
                raise TypeError("type ref cycle: a ref resolves only to refs")
        return ty


EMPTY_TYPESPACE = Typespace([])
