"""Shared machinery for compiling per-type functions (BSATN codecs, key encoders).

Both compilers walk a type once, build closures bottom-up, share results between
structurally equal types, and must cope with recursive types: a ``Ref`` that leads back to
a type still being compiled gets a small indirection (built by the caller's ``lazy``
factory around a :class:`Cell`) that is patched when that type's compilation finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sats.errors import SatsError
from sats.types import AlgebraicType, Ref, Typespace

T = TypeVar("T")


class Cell(Generic[T]):
    """Holds the compiled result of a type that is still being compiled."""

    __slots__ = ("target",)

    def __init__(self) -> None:
        self.target: T | None = None


class TypeCompiler(Generic[T]):
    """Compiles ``T``s for the types of one typespace, memoised in ``memo``.

    ``build(compiler, ty)`` makes the ``T`` of a non-ref type, calling ``compiler.compile``
    for its parts; ``lazy(ty, cell)`` makes a stand-in that defers to ``cell.target``.
    """

    def __init__(
        self,
        typespace: Typespace,
        memo: dict[AlgebraicType, T],
        build: Callable[[TypeCompiler[T], AlgebraicType], T],
        lazy: Callable[[AlgebraicType, Cell[T]], T],
    ) -> None:
        self.ts = typespace
        self.memo = memo
        self._build = build
        self._lazy = lazy
        self._in_progress: dict[AlgebraicType, Cell[T] | None] = {}

    def resolve(self, ty: AlgebraicType) -> AlgebraicType:
        """Follow refs; a bad or ref-only-cyclic ref is a SatsError."""
        try:
            return self.ts.resolve(ty)
        except TypeError as e:
            raise SatsError(str(e)) from None

    def compile(self, ty: AlgebraicType) -> T:
        """The memoised ``T`` of ``ty``."""
        done = self.memo.get(ty)
        if done is not None:
            return done
        if isinstance(ty, Ref):
            target = self.resolve(ty)
            if target in self._in_progress:
                cell = self._in_progress[target]
                if cell is None:
                    cell = self._in_progress[target] = Cell()
                return self._lazy(target, cell)
            result = self.compile(target)
            self.memo[ty] = result
            return result
        self._in_progress[ty] = None
        try:
            result = self._build(self, ty)
        finally:
            cell = self._in_progress.pop(ty)
        if cell is not None:
            cell.target = result
        self.memo[ty] = result
        return result


class CompileCache(Generic[T]):
    """Per-typespace memo tables, keyed by the typespace object.

    Entries hold the typespace itself so its ``id`` cannot be recycled by another object
    while the entry exists. Typespaces are assumed immutable once compiled against.
    """

    def __init__(
        self,
        build: Callable[[TypeCompiler[T], AlgebraicType], T],
        lazy: Callable[[AlgebraicType, Cell[T]], T],
    ) -> None:
        self._entries: dict[int, tuple[Typespace, dict[AlgebraicType, T]]] = {}
        self._build = build
        self._lazy = lazy

    def get(self, ty: AlgebraicType, typespace: Typespace) -> T:
        """The compiled ``T`` of ``ty`` in ``typespace``, compiling on first use."""
        entry = self._entries.get(id(typespace))
        if entry is None or entry[0] is not typespace:
            entry = self._entries[id(typespace)] = (typespace, {})
        memo = entry[1]
        done = memo.get(ty)
        if done is None:
            done = TypeCompiler(typespace, memo, self._build, self._lazy).compile(ty)
        return done


def sum_writer(
    n: int, names: Sequence[str], writers: Sequence[Callable[[Any, bytearray], None]]
) -> Callable[[Any, bytearray], None]:
    """Append ``tag`` then the payload written by ``writers[tag]``: the shared shape of the BSATN
    and key encoders for a sum value ``(tag, payload)``."""
    from sats.errors import EncodeError

    def write(v: Any, out: bytearray) -> None:
        try:
            tag, payload = v
        except (TypeError, ValueError):
            raise EncodeError(f"{v!r} is not a sum value (tag, payload)") from None
        if type(tag) is not int or not 0 <= tag < n:
            raise EncodeError(f"invalid sum tag {tag!r} (the type has {n} variant(s))")
        out.append(tag)
        try:
            writers[tag](payload, out)
        except EncodeError as e:
            raise e.under(names[tag]) from None

    return write
