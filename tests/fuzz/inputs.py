"""Hypothesis strategies for hostile inputs: valid encodings, mutated the way bugs like them.

Random bytes alone rarely get past a decoder's first tag, so every byte-level target starts
from real encodings (a message, a value, a module definition) and applies a few of the
mutations that reach deep code: a flipped or replaced byte, a length prefix made huge or
zero, a cut, a spliced or repeated slice. JSON targets mutate the parsed structure (a subtree
replaced by any JSON, a key dropped or added, an array grown or shrunk) and, sometimes, the
text itself (invalid UTF-8, cut mid-token).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from hypothesis import strategies as st

__all__ = ["any_json", "mutated_bytes", "mutated_json_text"]

#: Values that sit on the edges of lengths and integers: zero, one, sign bits, all ones.
_EDGE_U32 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
_EDGE_BYTES = (0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFE, 0xFF)


@st.composite
def _mutate_once(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(("byte", "u32", "cut", "insert", "delete", "repeat")))
    at = draw(st.integers(0, len(data)))
    if kind == "byte" and at < len(data):
        value = draw(st.one_of(st.sampled_from(_EDGE_BYTES), st.integers(0, 255)))
        return data[:at] + bytes([value]) + data[at + 1 :]
    if kind == "u32":
        value = draw(st.one_of(st.sampled_from(_EDGE_U32), st.integers(0, 0xFFFFFFFF)))
        return data[:at] + value.to_bytes(4, "little") + data[at + 4 :]
    if kind == "cut":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 8)) :]
    # repeat: a slice of the input appended again at a random place (a field read twice).
    end = draw(st.integers(at, min(len(data), at + 16)))
    to = draw(st.integers(0, len(data)))
    return data[:to] + data[at:end] + data[to:]


@st.composite
def mutated_bytes(draw: st.DrawFn, seeds: st.SearchStrategy[bytes], max_mutations: int = 4) -> bytes:
    """A seed with 0..``max_mutations`` mutations, or (one time in ten) plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=64))
    data = draw(seeds)
    for _ in range(draw(st.integers(0, max_mutations))):
        data = draw(_mutate_once(data))
    return data


@functools.cache  # one strategy object: building it per draw would dominate the run
def any_json() -> st.SearchStrategy[Any]:
    """Any small JSON value, with the numbers and strings decoders trip over."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**130), 2**130),
        st.sampled_from([0, -1, 2**32, 2**64, -(2**63) - 1, 2**128, 2**256]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
        st.sampled_from(["", "0x", "0xzz", "00" * 32, "some", "none", "__identity__", "NaN", "-0"]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
        max_leaves=10,
    )


@st.composite
def _mutate_json(draw: st.DrawFn, obj: Any) -> Any:
    """``obj`` with one change somewhere in it (descending into a random child first, maybe)."""
    if isinstance(obj, dict) and obj and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(obj)))
        return {**obj, key: draw(_mutate_json(obj[key]))}
    if isinstance(obj, list) and obj and draw(st.booleans()):
        i = draw(st.integers(0, len(obj) - 1))
        return [*obj[:i], draw(_mutate_json(obj[i])), *obj[i + 1 :]]
    if isinstance(obj, dict) and obj and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(obj)))
        return {k: v for k, v in obj.items() if k != key}
    if isinstance(obj, dict) and draw(st.booleans()):
        return {**obj, draw(st.text(max_size=6)): draw(any_json())}
    if isinstance(obj, list) and draw(st.booleans()):
        return draw(st.sampled_from((obj[:-1], [*obj, draw(any_json())], obj + obj)))
    return draw(any_json())


@st.composite
def mutated_json_text(draw: st.DrawFn, seeds: st.SearchStrategy[Any]) -> str | bytes:
    """JSON text of a seed with 0..3 structural changes; one time in five, bytes cut or spliced."""
    obj = draw(seeds)
    for _ in range(draw(st.integers(0, 3))):
        obj = draw(_mutate_json(obj))
    text = json.dumps(obj)
    if draw(st.integers(0, 4)) == 0:
        return draw(mutated_bytes(st.just(text.encode()), max_mutations=2))
    return text
