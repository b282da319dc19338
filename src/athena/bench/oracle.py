"""Regret of the adaptive selector against a per-query oracle (the Bao way).

For a sample of queries, every FEASIBLE executing strategy (sequential, parallel, and
distributed when the pool is up) runs the query several times from a controlled state:
result cache and query-embedding cache emptied before every run, so each run is cold. The
median per strategy is its cost; the cheapest is the query's oracle. The adaptive arm,
after a learning pass on other queries, runs the same queries the same way, interleaved
with the others. Then:

* ``vs_oracle``: mean over queries of (adaptive - oracle) / oracle;
* ``share_over_10pct``: the share of queries where adaptive is over 10% slower than it;
* ``vs_best_fixed``: (adaptive total - best fixed total) / best fixed total, the best fixed
  strategy being the one with the smallest total over the sample.

The adaptive arm's cost mixes two things: which strategy it picked, and what its own path
costs (cache key, single flight, cache fills, learning). :func:`decision_regret` isolates
the first, the Bao measure proper: each pick priced at the oracle's own median for that
strategy on that query.

Adaptive can come out below the oracle on a query: its medians carry noise too, and it may
search fewer layers (it drops layers that never contribute), which no forced run does.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from athena.bench.arms import Arm
from athena.bench.turns import turn_order
from athena.bench.workloads import Ask

OVER: Final = 0.10

Advance = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Regret:
    vs_oracle: float
    share_over_10pct: float
    vs_best_fixed: float
    best_fixed: str
    queries: int
    oracle_picks: dict[str, int] = field(default_factory=dict)
    per_query: tuple[float, ...] = ()  # relative regret of each query

    def to_dict(self) -> dict[str, Any]:
        return {
            "vs_oracle": round(self.vs_oracle, 4),
            "share_over_10pct": round(self.share_over_10pct, 4),
            "vs_best_fixed": round(self.vs_best_fixed, 4),
            "best_fixed": self.best_fixed,
            "queries": self.queries,
            "oracle_picks": dict(self.oracle_picks),
        }


def oracle(costs: Mapping[str, float]) -> tuple[str, float]:
    """The cheapest strategy and its cost (ties: the first named).

    >>> oracle({"sequential": 3.0, "parallel": 2.0, "distributed": 2.0})
    ('parallel', 2.0)
    """
    if not costs:
        raise ValueError("no feasible strategy")
    name = min(costs, key=lambda s: costs[s])
    return name, costs[name]


def regret(
    costs: Sequence[Mapping[str, float]], adaptive: Sequence[float], over: float = OVER
) -> Regret:
    """Regret of ``adaptive[i]`` against the oracle of ``costs[i]`` (ms per strategy).

    The best fixed strategy is chosen among those feasible on every query.

    >>> r = regret([{"s": 2.0, "p": 1.0}, {"s": 1.0, "p": 3.0}], [1.0, 1.5])
    >>> r.vs_oracle, r.share_over_10pct, r.best_fixed, round(r.vs_best_fixed, 4)
    (0.25, 0.5, 's', -0.1667)
    """
    if len(costs) != len(adaptive) or not costs:
        raise ValueError("need one adaptive cost per query, and at least one query")
    rel: list[float] = []
    picks: Counter[str] = Counter()
    for strategy_costs, mine in zip(costs, adaptive, strict=True):
        name, best = oracle(strategy_costs)
        picks[name] += 1
        rel.append((mine - best) / best)
    everywhere = set(costs[0]).intersection(*costs[1:])
    if not everywhere:
        raise ValueError("no strategy is feasible on every query")
    totals = {s: sum(c[s] for c in costs) for s in everywhere}
    best_fixed = min(sorted(totals), key=lambda s: totals[s])
    total = sum(adaptive)
    return Regret(
        vs_oracle=statistics.fmean(rel),
        share_over_10pct=sum(r > over for r in rel) / len(rel),
        vs_best_fixed=(total - totals[best_fixed]) / totals[best_fixed],
        best_fixed=best_fixed,
        queries=len(rel),
        oracle_picks=dict(picks),
        per_query=tuple(rel),
    )


def decision_regret(
    costs: Sequence[Mapping[str, float]], picks: Sequence[Sequence[str]], over: float = OVER
) -> dict[str, Any]:
    """Regret of the selector's choices alone: each query's picks priced at ``costs``.

    A pick with no measured cost (a strategy infeasible for that query) is left out.

    >>> decision_regret([{"s": 2.0, "p": 1.0}, {"s": 1.0, "p": 3.0}], [["p", "s"], ["s"]])
    {'vs_oracle': 0.25, 'share_over_10pct': 0.5, 'queries': 2, 'picks': {'p': 1, 's': 2}}
    """
    if len(costs) != len(picks):
        raise ValueError("need the picks of every query")
    rel: list[float] = []
    counted: Counter[str] = Counter()
    for strategy_costs, chosen in zip(costs, picks, strict=True):
        priced = [strategy_costs[name] for name in chosen if name in strategy_costs]
        if not priced:
            continue
        counted.update(name for name in chosen if name in strategy_costs)
        best = oracle(strategy_costs)[1]
        rel.append((statistics.fmean(priced) - best) / best)
    if not rel:
        return {}
    return {**_summary(rel, over), "picks": dict(sorted(counted.items()))}


def _summary(rel: Sequence[float], over: float) -> dict[str, Any]:
    """Mean relative regret, the share over ``over`` and the count of ``rel`` (not empty).

    >>> _summary([0.0, 0.2], 0.1)
    {'vs_oracle': 0.1, 'share_over_10pct': 0.5, 'queries': 2}
    """
    return {
        "vs_oracle": round(statistics.fmean(rel), 4),
        "share_over_10pct": round(sum(r > over for r in rel) / len(rel), 4),
        "queries": len(rel),
    }


def held_out(
    parts: Sequence[Mapping[str, Sequence[Sequence[float]]]],
    mine: str = "adaptive",
    over: float = OVER,
) -> dict[str, Any]:
    """The ``mine`` arm's regret against an oracle that does not see the run it is priced on.

    The oracle above picks each query's cheapest median and is priced at that same median:
    with a few noisy runs per strategy, the least of several medians lies below what any
    strategy costs when two of them tie (the winner's curse), so even the best a selector
    could do shows a regret. Here, for each run ``j`` of a query, the oracle picks the
    strategy with the cheapest median of the *other* runs and is priced at that strategy's
    run ``j``, as ``mine`` is priced at its own run ``j``; a query's regret is the ratio of
    the two means. This oracle can pick wrong from noise, so the truth lies between the two.
    ``parts``: each session's runs, arm by arm, per query (:attr:`OracleRun.runs`); a
    strategy with a failed run (NaN) is infeasible for that query, and a query with one run
    (nothing to hold out) or a failed run of ``mine`` is left out.

    >>> runs = {"s": [[1.0, 1.2, 1.1]], "p": [[1.1, 1.0, 1.3]], "adaptive": [[1.0, 1.2, 1.1]]}
    >>> held_out([runs])["vs_oracle"]  # the in-sample oracle (s, 1.1) would say 0.0
    -0.0571
    """
    rel: list[float] = []
    picks: Counter[str] = Counter()
    for runs in parts:
        forced = [name for name in runs if name != mine]
        for index, own in enumerate(runs.get(mine, ())):
            feasible = {n: runs[n][index] for n in forced if all(m == m for m in runs[n][index])}
            if len(own) < 2 or not all(m == m for m in own) or not feasible:
                continue
            priced = []
            for j in range(len(own)):
                rest = {n: statistics.median([*r[:j], *r[j + 1 :]]) for n, r in feasible.items()}
                pick = oracle(rest)[0]
                picks[pick] += 1
                priced.append(feasible[pick][j])
            rel.append(statistics.fmean(own) / statistics.fmean(priced) - 1.0)
    if not rel:
        return {}
    return {
        **_summary(rel, over),
        "oracle_picks": dict(sorted(picks.items())),
        "per_query": [round(r, 4) for r in rel],
    }


def merge(parts: Sequence[tuple[Sequence[Mapping[str, float]], Sequence[float]]]) -> Regret:
    """One regret over several samples (stores, embedders), strategies feasible in all."""
    costs = [c for part_costs, _ in parts for c in part_costs]
    adaptive = [a for _, part_adaptive in parts for a in part_adaptive]
    return regret(costs, adaptive)


@dataclass(slots=True)
class OracleRun:
    """The raw measurements of one oracle pass (one store and embedder)."""

    costs: list[dict[str, float]] = field(default_factory=list)
    adaptive: list[float] = field(default_factory=list)
    adaptive_picks: Counter[str] = field(default_factory=Counter)
    picks: list[list[str]] = field(default_factory=list)  # per query in ``costs``: each run's
    runs: dict[str, list[list[float]]] = field(default_factory=dict)


def measure(
    forced: Sequence[Arm],
    adaptive: Arm,
    sample: Sequence[Ask],
    learn: Sequence[Ask],
    *,
    repeats: int,
    advance: Advance | None = None,
    learn_budget_s: float | None = None,
) -> OracleRun:
    """Learning pass for ``adaptive`` over ``learn``, then every arm on every ``sample``
    query ``repeats`` times, cold, interleaved; a strategy whose run fails is infeasible
    for that query. ``forced`` are the executing arms (their names are the strategies)."""
    began = time.perf_counter()
    for ask in learn:
        if learn_budget_s is not None and time.perf_counter() - began > learn_budget_s:
            break
        adaptive.reset()
        adaptive.recall(ask)
    out = OracleRun(runs={arm.name: [] for arm in [*forced, adaptive]})
    arms = [*forced, adaptive]
    for index, ask in enumerate(sample):
        times: dict[str, list[float]] = {arm.name: [] for arm in arms}
        chosen: list[str] = []
        for rep in range(repeats):
            for arm in turn_order(arms, index * repeats + rep):
                arm.reset()
                seen = arm.recorded()
                times[arm.name].append(arm.recall(ask))
                if arm is adaptive and arm.recorded() > seen:
                    chosen.append(str(getattr(arm.telemetry()[-1], "strategy", "?")))
        out.adaptive_picks.update(chosen)
        for name, ms in times.items():
            out.runs[name].append(ms)
        medians = {n: statistics.median(ms) for n, ms in times.items() if all(m == m for m in ms)}
        mine = medians.pop(adaptive.name, None)
        if mine is not None and medians:
            out.costs.append(medians)
            out.adaptive.append(mine)
            out.picks.append(chosen)
        if advance:
            advance(1)
    return out
