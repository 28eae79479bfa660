"""Reading the Prometheus text format in tests: every sample as ``(name, labels) → value``."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["Samples", "parse_samples"]

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Samples(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """Parsed samples, with lookups by name and a subset of labels."""

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """Every sample of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return [(dict(ls), v) for (n, ls), v in self.items() if n == name and want <= ls]

    def value(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` with ``labels`` (fails unless exactly one matches)."""
        found = self.find(name, **labels)
        assert len(found) == 1, (name, labels, found)
        return found[0][1]

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of ``name`` with ``labels``."""
        return sum(v for _, v in self.find(name, **labels))

    def names(self) -> set[str]:
        """Every sample name."""
        return {n for n, _ in self}


def parse_samples(text: str) -> Samples:
    """Every sample line of ``text`` (comments skipped)."""
    out = Samples()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels: Mapping[str, str] = dict(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out
