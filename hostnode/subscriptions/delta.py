"""Incremental evaluation of one query fragment from a transaction's net changes (B.4).

A fragment is an inner join of relations ``R₁ … Rₙ`` (one for a single-table filter, two for
a subscription join, more when row-level-security rules add joins) filtered by a conjunction,
returning the rows of one relation with bag semantics. With ``Rᵢ′`` the post-state,
``Rᵢ = Rᵢ′ − ΔRᵢ⁺ + ΔRᵢ⁻`` the pre-state and ``ΔRᵢ = ΔRᵢ⁺ − ΔRᵢ⁻`` the signed delta, the change
of the result telescopes into one term per changed relation::

    Q(R₁′…Rₙ′) − Q(R₁…Rₙ) = Σᵢ Q(R₁′ … Rᵢ₋₁′, ΔRᵢ, Rᵢ₊₁ … Rₙ)

For two relations that is ``ΔR·S + R′·ΔS`` = ``ΔR·S′ + R′·ΔS − ΔR·ΔS``, i.e. exactly the
eight terms of B.4 (``R′·ΔS⁺ ∪ ΔR⁺·S′ ∪ ΔR⁺·ΔS⁻ ∪ ΔR⁻·ΔS⁺`` minus ``R′·ΔS⁻ ∪ ΔR⁻·S′ ∪ ΔR⁺·ΔS⁺ ∪
ΔR⁻·ΔS⁻``) after cancellation. Each term starts from the changed rows of ``Rᵢ`` and reaches the
other relations through the plan's index lookups (:func:`hostnode.sql.plan.build_plan` with
``first=Rᵢ``) into the post-state; a relation that must be read in its pre-state gets the
same lookup minus the rows the transaction inserted plus the rows it deleted. Summing the
signed bindings per returned row gives ``count_after − count_before``: positive → that many
inserts, negative → that many deletes, zero → nothing (an identical delete + re-insert, or a
row whose partners changed without changing its multiplicity).

No term ever scans a whole table unless the fragment's plan has no index to reach a
relation (a join column without an index on the side being looked up — the subscription
compiler only guarantees one indexed side). :class:`Meter` counts every row examined: changed
rows, rows returned by index lookups, and pre-state corrections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hostnode.schema import TableSchema
from hostnode.sql.execute import compile_expr, fetch_raw, query_raw_rows
from hostnode.sql.limits import QueryMeter
from hostnode.sql.plan import Plan, Step, build_plan
from hostnode.sql.typecheck import LogicalQuery, OutStar
from hostnode.txdata import TxData
from sats.bsatn import Codec, codec_for

Row = tuple[bytes, tuple[Any, ...]]


@dataclass(slots=True)
class Meter:
    """Rows examined while evaluating (changed rows + rows read from the datastore), and the
    query limits a non-owner's initial rows are evaluated under (:mod:`hostnode.sql.limits`)."""

    rows: int = 0
    limits: QueryMeter | None = None


class TxDelta:
    """One transaction's net changes (:class:`~hostnode.txdata.TxData`), decoded on demand
    and at most once per table."""

    def __init__(self, txdata: TxData) -> None:
        self.txdata = txdata
        self._decoded: dict[int, tuple[list[Row], list[Row], frozenset[bytes]]] = {}

    @property
    def table_ids(self) -> frozenset[int]:
        """The tables the transaction inserted into or deleted from."""
        return frozenset(tid for tid, ch in self.txdata.tables.items() if ch.inserts or ch.deletes)

    def changes(self, table: TableSchema, codec: Codec) -> tuple[list[Row], list[Row], frozenset[bytes]]:
        """``(inserts, deletes, inserted row bytes)`` of ``table``; empty when untouched."""
        tid = table.table_id
        got = self._decoded.get(tid)
        if got is None:
            ch = self.txdata.tables.get(tid)
            if ch is None:
                got = ([], [], frozenset())
            else:
                decode = codec.decode
                ins = [(bytes(r), decode(r, 0)[0]) for r in ch.inserts]
                dels = [(bytes(r), decode(r, 0)[0]) for r in ch.deletes]
                got = (ins, dels, frozenset(r for r, _ in ins))
            self._decoded[tid] = got
        return got


@dataclass(slots=True)
class _DeltaPlan:
    """Plan for the term whose changed relation is the first step."""

    plan: Plan
    filters: list[list[Callable[[list[Any]], Any]]]
    pre_state: list[bool]  # per step: read the relation as it was before the transaction
    out_slot: int


@dataclass(slots=True)
class FragmentEvaluator:
    """One fragment, ready for initial and incremental evaluation."""

    query: LogicalQuery
    terms: list[_DeltaPlan] = field(default_factory=list)
    codecs: dict[int, Codec] = field(default_factory=dict)

    @classmethod
    def build(cls, q: LogicalQuery) -> FragmentEvaluator:
        """Plan every delta term of ``q`` once (plans don't depend on data, only on schema)."""
        out = q.output
        assert isinstance(out, OutStar)
        ev = cls(q)
        position = {r.alias: i for i, r in enumerate(q.rels)}
        for i, rel in enumerate(q.rels):
            plan = build_plan(q, lambda _tid: 0, first=rel.alias)
            filters = [[compile_expr(f, plan.slots) for f in s.filters] for s in plan.steps]
            pre = [position[s.rel.alias] > i for s in plan.steps]
            ev.terms.append(_DeltaPlan(plan, filters, pre, plan.slots[out.alias]))
            ev.codecs.setdefault(rel.table.table_id, codec_for(rel.table.row_type, rel.table.typespace))
        return ev

    @property
    def table_ids(self) -> frozenset[int]:
        """The tables this fragment reads."""
        return frozenset(self.codecs)

    def initial(self, tx: Any, meter: Meter) -> list[bytes]:
        """Every row the fragment returns in ``tx`` (BSATN, with bag multiplicity)."""
        rows, scanned = query_raw_rows(tx, self.query, meter.limits)
        meter.rows += scanned
        return rows

    def delta(self, tx: Any, delta: TxDelta, meter: Meter) -> tuple[list[bytes], list[bytes]]:
        """``(deletes, inserts)`` of the fragment's result caused by ``delta``; ``tx`` must
        read the state right after the transaction."""
        counts: dict[bytes, int] = {}
        for i, rel in enumerate(self.query.rels):
            table = rel.table
            ins, dels, _ = delta.changes(table, self.codecs[table.table_id])
            if ins or dels:
                self._term(self.terms[i], tx, delta, ins, dels, counts, meter)
        deletes: list[bytes] = []
        inserts: list[bytes] = []
        for raw, n in counts.items():
            if n > 0:
                inserts.extend([raw] * n)
            elif n < 0:
                deletes.extend([raw] * -n)
        return deletes, inserts

    def _term(
        self,
        term: _DeltaPlan,
        tx: Any,
        delta: TxDelta,
        ins: Sequence[Row],
        dels: Sequence[Row],
        counts: dict[bytes, int],
        meter: Meter,
    ) -> None:
        steps = term.plan.steps
        n = len(steps)
        filters = term.filters
        out_slot = term.out_slot
        vals: list[Any] = [None] * n
        raws: list[bytes] = [b""] * n
        cached: dict[int, Any] = {}

        def lookup(k: int) -> Sequence[Row]:
            step = steps[k]
            if step.hash_key is not None:
                # No index reaches this relation: read it once, probe a hash table per row.
                table = cached.get(k)
                if table is None:
                    table = cached[k] = {}
                    cols = [c for c, _ in step.hash_key]
                    for row in self._fetch(step, term.pre_state[k], tx, delta, vals, meter):
                        table.setdefault(tuple(row[1][c] for c in cols), []).append(row)
                probe = tuple(vals[src[1]][src[2]] if src[0] == "v" else src[1] for _, src in step.hash_key)
                return table.get(probe, ())  # type: ignore[no-any-return]
            if not step.access.dynamic:
                rows = cached.get(k)
                if rows is None:
                    rows = cached[k] = self._fetch(step, term.pre_state[k], tx, delta, vals, meter)
                return rows  # type: ignore[no-any-return]
            return self._fetch(step, term.pre_state[k], tx, delta, vals, meter)

        def rec(k: int, sign: int) -> None:
            slot = steps[k].slot
            preds = filters[k]
            last = k == n - 1
            for raw, row in lookup(k):
                vals[slot] = row
                raws[slot] = raw
                if preds and not all(p(vals) for p in preds):
                    continue
                if last:
                    key = raws[out_slot]
                    counts[key] = counts.get(key, 0) + sign
                else:
                    rec(k + 1, sign)

        slot0 = steps[0].slot
        preds0 = filters[0]
        for sign, rows in ((1, ins), (-1, dels)):
            meter.rows += len(rows)
            for raw, row in rows:
                vals[slot0] = row
                raws[slot0] = raw
                if preds0 and not all(p(vals) for p in preds0):
                    continue
                if n == 1:
                    counts[raw] = counts.get(raw, 0) + sign
                else:
                    rec(1, sign)

    def _fetch(self, step: Step, pre: bool, tx: Any, delta: TxDelta, vals: list[Any], meter: Meter) -> list[Row]:
        table = step.rel.table
        codec = self.codecs[table.table_id]
        raws = fetch_raw(tx, step, vals)
        meter.rows += len(raws)
        decode = codec.decode
        if not pre:
            return [(r, decode(r, 0)[0]) for r in raws]
        # Pre-state = post-state − inserted + deleted. The deleted rows are offered whole:
        # the step's filters include the predicate its index lookup served.
        ins, dels, inserted = delta.changes(table, codec)
        meter.rows += len(dels)
        rows = [(r, decode(r, 0)[0]) for r in raws if r not in inserted] if ins else [(r, decode(r, 0)[0]) for r in raws]
        rows.extend(dels)
        return rows
