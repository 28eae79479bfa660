"""Hypothesis strategies for SATS types and values, reusable by any test suite.

* :func:`algebraic_types` — random types of bounded size (products, sums, options, arrays,
  every primitive), optionally referring into a typespace.
* :func:`typespaces_and_types` — a small typespace whose entries refer to earlier entries,
  plus a type that may refer into it.
* :func:`values` — values of a given type, in the value model of :mod:`sats.types`.
* :func:`types_and_values` — ``(typespace, type, value)`` triples.
* :func:`values_equal` — equality that treats NaN as equal to NaN and keeps −0.0 ≠ +0.0,
  which is what a BSATN round trip preserves.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from hypothesis import strategies as st

from sats.types import (
    EMPTY_TYPESPACE,
    INT_LAYOUT,
    PRIMITIVES,
    AlgebraicType,
    ArrayType,
    PrimitiveType,
    ProductType,
    ProductTypeElement,
    Ref,
    SumType,
    SumTypeVariant,
    SumValue,
    Typespace,
    TypeTag,
    option,
)

PRIMITIVE_TYPES = list(PRIMITIVES.values())

_NAMES = st.text(alphabet="abcxyz_", min_size=1, max_size=4)


def _names(n: int, named: bool) -> st.SearchStrategy[list[str | None]]:
    """``n`` element/variant names: unique when all named, else possibly None."""
    if named:
        return st.lists(_NAMES, min_size=n, max_size=n, unique=True)  # type: ignore[return-value]
    return st.lists(st.one_of(st.none(), _NAMES), min_size=n, max_size=n)


@st.composite
def _product(draw: st.DrawFn, inner: st.SearchStrategy[AlgebraicType], named: bool) -> ProductType:
    tys = draw(st.lists(inner, max_size=4))
    names = draw(_names(len(tys), named))
    return ProductType(tuple(ProductTypeElement(n, t) for n, t in zip(names, tys, strict=True)))


@st.composite
def _sum(draw: st.DrawFn, inner: st.SearchStrategy[AlgebraicType], named: bool) -> SumType:
    # At least one variant: the never type has no values to generate.
    tys = draw(st.lists(inner, min_size=1, max_size=4))
    names = draw(_names(len(tys), named))
    return SumType(tuple(SumTypeVariant(n, t) for n, t in zip(names, tys, strict=True)))


@functools.cache  # strategies are immutable; building one anew per draw dominated run time
def algebraic_types(
    max_leaves: int = 8, named: bool = False, refs: int = 0
) -> st.SearchStrategy[AlgebraicType]:
    """Random types with at most ``max_leaves`` leaves.

    ``named`` makes every product element and sum variant carry a unique name (needed for
    typed SATS-JSON); ``refs`` > 0 lets leaves be ``Ref(0)`` … ``Ref(refs - 1)``.
    """
    leaves: st.SearchStrategy[AlgebraicType] = st.sampled_from(PRIMITIVE_TYPES)
    if refs:
        leaves = st.one_of(leaves, st.integers(0, refs - 1).map(Ref))

    def extend(inner: st.SearchStrategy[AlgebraicType]) -> st.SearchStrategy[AlgebraicType]:
        return st.one_of(
            _product(inner, named),
            _sum(inner, named),
            inner.map(ArrayType),
            inner.map(option),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


@st.composite
def typespaces_and_types(
    draw: st.DrawFn, max_types: int = 3, named: bool = False
) -> tuple[Typespace, AlgebraicType]:
    """A typespace whose entry ``i`` may refer to entries ``< i`` (so no cycles), and a type into it."""
    types: list[AlgebraicType] = []
    for i in range(draw(st.integers(0, max_types))):
        types.append(draw(algebraic_types(max_leaves=5, named=named, refs=i)))
    ty = draw(algebraic_types(max_leaves=6, named=named, refs=len(types)))
    return Typespace(types), ty


def _float_values(width: int, allow_nan: bool) -> st.SearchStrategy[float]:
    return st.floats(width=width, allow_nan=allow_nan, allow_infinity=allow_nan)  # type: ignore[arg-type]


def _as_sum(tag_and_payload: tuple[int, Any]) -> SumValue:
    return SumValue(*tag_and_payload)


def values(
    ty: AlgebraicType, typespace: Typespace = EMPTY_TYPESPACE, allow_nan: bool = True
) -> st.SearchStrategy[Any]:
    """Values of ``ty``. ``allow_nan=False`` also excludes ±inf (they can't go through JSON)."""
    ty = typespace.resolve(ty)
    if isinstance(ty, PrimitiveType):
        kind = ty.kind
        if kind in INT_LAYOUT:
            bits, signed = INT_LAYOUT[kind]
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
            # Bias towards the edges, where sign and width bugs live.
            return st.one_of(st.integers(lo, hi), st.sampled_from(sorted({lo, hi, 0, min(hi, 1), max(lo, -1)})))
        if kind == TypeTag.BOOL:
            return st.booleans()
        if kind == TypeTag.STRING:
            # A tiny alphabet makes shared prefixes and embedded NULs common, which is where
            # key-encoding bugs hide.
            return st.one_of(
                st.text(max_size=6),
                st.text(alphabet="\x00a€", max_size=3),
                st.sampled_from(["", "\x00", "a\x00", "a", "\x00\x00", "€"]),
            )
        if kind == TypeTag.F32:
            return st.one_of(_float_values(32, allow_nan), st.sampled_from([0.0, -0.0]))
        return st.one_of(_float_values(64, allow_nan), st.sampled_from([0.0, -0.0]))
    if isinstance(ty, ProductType):
        return st.tuples(*(values(e.algebraic_type, typespace, allow_nan) for e in ty.elements))
    if isinstance(ty, SumType):
        return st.one_of(
            *(
                st.tuples(st.just(i), values(v.algebraic_type, typespace, allow_nan)).map(_as_sum)
                for i, v in enumerate(ty.variants)
            )
        )
    if isinstance(ty, ArrayType):
        elem = typespace.resolve(ty.elem_ty)
        if elem == PRIMITIVES[TypeTag.U8]:
            return st.one_of(
                st.binary(max_size=6),
                st.lists(st.sampled_from([0, 1, 255]), max_size=3).map(bytes),
            )
        return st.lists(values(elem, typespace, allow_nan), max_size=3)
    raise TypeError(f"no values for {ty!r}")


@st.composite
def types_and_values(
    draw: st.DrawFn, named: bool = False, allow_nan: bool = True, with_refs: bool = True
) -> tuple[Typespace, AlgebraicType, Any]:
    """A ``(typespace, type, value)`` triple."""
    if with_refs:
        ts, ty = draw(typespaces_and_types(named=named))
    else:
        ts, ty = EMPTY_TYPESPACE, draw(algebraic_types(named=named))
    return ts, ty, draw(values(ty, ts, allow_nan))


def values_equal(a: Any, b: Any) -> bool:
    """Structural equality where NaN == NaN and 0.0 is distinguished from −0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and a == b  # type: ignore[no-any-return]


@st.composite
def nearby_values(
    draw: st.DrawFn, ty: AlgebraicType, value: Any, typespace: Typespace = EMPTY_TYPESPACE, allow_nan: bool = True
) -> Any:
    """A value of ``ty`` that shares most of its structure with ``value``.

    Random pairs of values usually differ in their first field; comparisons and key
    encodings are mostly exercised when two values agree on a long prefix, so this changes
    one leaf, or grows/shrinks one array, deep inside ``value``.
    """
    ty = typespace.resolve(ty)
    if isinstance(ty, ProductType) and ty.elements:
        i = draw(st.integers(0, len(ty.elements) - 1))
        new = list(value)
        new[i] = draw(nearby_values(ty.elements[i].algebraic_type, value[i], typespace, allow_nan))
        return tuple(new)
    if isinstance(ty, SumType) and draw(st.booleans()):
        return SumValue(value.tag, draw(nearby_values(ty.variants[value.tag].algebraic_type, value.value, typespace, allow_nan)))
    if isinstance(ty, ArrayType) and not isinstance(value, bytes | bytearray):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            return value + [draw(values(ty.elem_ty, typespace, allow_nan))]
        if choice == 1 and value:
            return value[: draw(st.integers(0, len(value) - 1))]
        if value:
            i = draw(st.integers(0, len(value) - 1))
            new_list = list(value)
            new_list[i] = draw(nearby_values(ty.elem_ty, value[i], typespace, allow_nan))
            return new_list
    if isinstance(ty, PrimitiveType) and ty.kind == TypeTag.STRING and draw(st.booleans()):
        return value + draw(st.sampled_from(["", "\x00", "a"]))
    if isinstance(value, bytes) and draw(st.booleans()):
        return value + draw(st.sampled_from([b"", b"\x00", b"\x01"]))
    return draw(values(ty, typespace, allow_nan))
