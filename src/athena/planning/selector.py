"""The strategy selector: CACHE / HYBRID / SEQUENTIAL / PARALLEL / DISTRIBUTED per recall.

A valid full cache hit short-circuits to CACHE and a partial hit goes HYBRID. Otherwise
each executing strategy has a cost model: the median of its recent measured latencies per
coarse context (layers, the size of the sequential estimate, concurrent recalls, and for
DISTRIBUTED pool load; see :func:`context`), blended while a context has few observations
with a prior (the seed's rule estimate at first, then the strategy's cost ratio seen at the
same concurrency: relative to what SEQUENTIAL costs in the same context once that is
measured, else to the sequential estimate), so a decision is a few dictionary lookups.
The cheapest feasible strategy wins, and leaving SEQUENTIAL must pay a margin; with a
small, capped probability the selector explores a strategy whose optimistic
(lower-confidence-bound) cost is within reach of the best, so the model keeps learning
without paying much for it. Wherever another strategy is exploited, SEQUENTIAL still runs
now and then (see :class:`athena.planning.costs.Refresh`): its runs are the reference
every other cost is compared with, and the only ones that time the layers.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from athena.planning.costs import (
    REFERENCE_AFTER,
    SETTLED_SLACK,
    WINDOW,
    Cell,
    Context,
    CostModel,
    Refresh,
    Settled,
    busiest,
)


class Strategy(StrEnum):
    CACHE = "cache"
    HYBRID = "hybrid"
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    DISTRIBUTED = "distributed"


EXECUTING: Final = (Strategy.SEQUENTIAL, Strategy.PARALLEL, Strategy.DISTRIBUTED)
_NAMES: Final = {s: s.value for s in Strategy}  # plain str; `.value` is a slow descriptor
EXPLORE_RATE: Final = 0.05
EXPLORE_WITHIN: Final = 1.5  # only explore strategies predicted within 1.5x of the best
UCB_ALPHA: Final = 1.0
PARALLEL_OVERHEAD_MS: Final = 0.15
DISTRIBUTED_OVERHEAD_MS: Final = 1.0
# Leaving SEQUENTIAL (no threads, no processes) must pay: another strategy wins only if it
# is predicted at least 10% and 0.25 ms cheaper. Two strategies within noise of each other
# are a coin flip for the model, and the simple path then costs least to be wrong about.
SWITCH_MARGIN: Final = 0.9
SWITCH_MIN_MS: Final = 0.25
# ... and the saving must also clear the measured noise: two standard errors of the two
# medians' difference. On one 103k-memory tenant, with seven harness arms interleaved, the
# same recall cost 2.0-10.7 ms run to run (bimodal, about 2.5 or 7); a median of a few
# PARALLEL runs that landed low sent 57 of 120 oracle recalls to PARALLEL, 34% slower there.
SWITCH_SE: Final = 2.0
SETTLED_WHY: Final = (
    "sequential: every other option far dearer in this context's last full decision"
)


@dataclass(slots=True)
class Decision:
    """The selector's choice for one recall, with why and what it expects.

    ``why`` is the short reason; ``predicted`` (each option's predicted ms) and ``setting``
    are only formatted into :attr:`reasoning` when something reads it (explain, telemetry
    inspection), not on every recall's path. Not frozen (nothing changes one once made): a
    frozen dataclass of these eight fields took 1.01 µs to build against 0.32, per recall.

    >>> Decision(Strategy.SEQUENTIAL, 1.0, "lowest predicted cost", 1.2, 1.0,
    ...          (("sequential", 1.2), ("parallel", 1.5)), "over 5 layer(s)").reasoning
    'lowest predicted cost: sequential≈1.20ms, parallel≈1.50ms over 5 layer(s)'
    """

    strategy: Strategy
    confidence: float
    why: str
    estimated_ms: float
    estimated_speedup: float
    predicted: tuple[tuple[str, float], ...] = ()
    setting: str = ""
    warm_pool: bool = False  # exploring drew the pool, whose workers lack the tenant: warm it

    @property
    def reasoning(self) -> str:
        if not self.predicted:
            return self.why
        costs = ", ".join(f"{name}≈{ms:.2f}ms" for name, ms in self.predicted)
        return f"{self.why}: {costs} {self.setting}".rstrip()


# What the history keeps for each full cache hit (see StrategySelector.served).
_SERVED: Final = Decision(Strategy.CACHE, 1.0, "valid full cache hit", 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class Situation:
    """What the selector looks at."""

    layers: int
    sequential_ms: float  # learned cost of the layers one after another
    parallel_benefit: float
    cached_fraction: float
    queue_depth: int
    pool_busy: float  # share of pool workers busy, 0..1
    pool_available: bool
    pool_saturated: bool
    inflight: int
    pool_warm: bool = True  # the pool's workers have served this tenant without a build

    def features(self) -> tuple[float, ...]:
        """What a telemetry row keeps of the situation (a plain tuple: one per recall).

        >>> Situation(2, 4.0, 2.0, 0.0, 0, 0.0, True, False, 1).features()
        (1.0, 2.0, 4.0, 0.0, 0.0, 1.0)
        """
        return (
            1.0,
            float(self.layers),
            float(self.sequential_ms),
            float(self.queue_depth),
            float(self.pool_busy),
            float(self.inflight),
        )


def rule_estimate(strategy: Strategy, s: Situation) -> float:
    """The seed's threshold rules as a cost estimate: the warm start of the learned model."""
    if strategy is Strategy.SEQUENTIAL:
        return s.sequential_ms
    spread = s.sequential_ms / max(s.parallel_benefit, 1.0)
    if strategy is Strategy.PARALLEL:
        return spread + PARALLEL_OVERHEAD_MS
    return spread + DISTRIBUTED_OVERHEAD_MS


def context(s: Situation) -> Context:
    """The coarse regime a cost is learned in: layers, the sequential estimate's power of
    two, concurrent recalls (0, 1-3, 4-15, 16+ others) and pool load (idle, busy, queued).

    A cost is only ever predicted from observations of the same regime, never extrapolated
    from another one (a fit across regimes once predicted 8 ms for a 1.3 ms recall). Only
    DISTRIBUTED's cost is kept per pool load (see :func:`cell_key`)."""
    estimate = s.sequential_ms if math.isfinite(s.sequential_ms) else 1.0
    scale = round(math.log2(min(max(estimate, 1.0 / 16), 1e6)))
    others = max(s.inflight - 1, 0)
    load = 0 if others == 0 else 1 if others < 4 else 2 if others < 16 else 3
    pool = 2 if s.queue_depth > 0 else 1 if s.pool_busy > 0 else 0
    return (s.layers, scale, load, pool)


def cell_key(strategy: Strategy, key: Context) -> Context:
    """Where ``strategy``'s cost in context ``key`` is kept: the pool's load is a dimension
    of DISTRIBUTED's cost alone. SEQUENTIAL and PARALLEL never touch the pool, and split by
    it they found every context unmeasured as soon as one recall went to the workers: then
    SEQUENTIAL was priced from its prior and the pool looked cheap beside it, which sent the
    next recall to the pool too (10 of 120 recalls in a burst of 10, p99 493 ms vs 41 ms)."""
    return key if strategy is Strategy.DISTRIBUTED else (*key[:3], 0)


def switch_limit(sequential: float) -> float:
    """What another strategy's predicted cost must come under to replace SEQUENTIAL's
    ``sequential`` ms: 90% of it and 0.25 ms less, both (before the noise is added).

    >>> switch_limit(3.0), switch_limit(1.0)
    (2.7, 0.75)
    """
    return min(SWITCH_MARGIN * sequential, sequential - SWITCH_MIN_MS)


def far_dearer(sequential: float, others: list[float]) -> bool:
    """Whether every other option's predicted cost stands :data:`SETTLED_SLACK` of
    SEQUENTIAL's past the switch rule (what settles a context, see ``costs.Settled``).

    >>> far_dearer(3.0, [4.5, 6.0]), far_dearer(3.0, [2.9])
    (True, False)
    """
    limit = switch_limit(sequential) + SETTLED_SLACK * sequential
    return all(cost > limit for cost in others)


def _measured(models: dict[Strategy, CostModel], key: Context) -> float | None:
    """SEQUENTIAL's measured cost in context ``key``, once it has a few observations:
    what another strategy's cost there is learned relative to."""
    cell = models[Strategy.SEQUENTIAL].cells.get(cell_key(Strategy.SEQUENTIAL, key))
    return cell.mean if cell is not None and cell.n >= REFERENCE_AFTER else None


def _noise(models: dict[Strategy, CostModel], strategy: Strategy, key: Context) -> float:
    """The standard error of the difference between ``strategy``'s measured median cost in
    context ``key`` and SEQUENTIAL's (0 for a cell not measured yet)."""
    total = 0.0
    for option in (strategy, Strategy.SEQUENTIAL):
        cell = models[option].cells.get(cell_key(option, key))
        if cell is not None and cell.n:
            total += cell.var / min(cell.n, WINDOW)
    return math.sqrt(total)


_SETTINGS: Final = {
    (layers, up): f"over {layers} layer(s), pool {'up' if up else 'down'}"
    for layers in range(16)
    for up in (False, True)
}


class StrategySelector:
    """Chooses an execution strategy per recall and learns from what it cost.

    >>> sel = StrategySelector(rng=random.Random(0))
    >>> s = Situation(1, 2.0, 1.0, 0.0, 0, 0.0, False, False, 1)
    >>> sel.decide(s).strategy.value
    'sequential'
    """

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        history: int = 1000,
        explore_rate: float = EXPLORE_RATE,
    ) -> None:
        self._models = {strategy: CostModel() for strategy in EXECUTING}
        self._rng = rng or random.Random()
        self.explore_rate = explore_rate
        self.history: deque[Decision] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._refresh = Refresh()
        self._settled = Settled()
        self._generation = 0  # costs learnt by strategies other than SEQUENTIAL
        self.explored = 0

    def feasible(self, s: Situation) -> list[Strategy]:
        """Guards: no PARALLEL for one layer; no DISTRIBUTED if the pool is down or full."""
        options = [Strategy.SEQUENTIAL]
        if s.layers > 1:
            options.append(Strategy.PARALLEL)
            if s.pool_available and not s.pool_saturated:
                options.append(Strategy.DISTRIBUTED)
        return options

    def predict(self, strategy: Strategy, s: Situation) -> tuple[float, float]:
        """Predicted cost in ms and its uncertainty."""
        return self._predict(strategy, s, context(s))

    def _predict(
        self, strategy: Strategy, s: Situation, key: Context, reference: float | None = None
    ) -> tuple[float, float]:
        """Predicted cost and width. Other strategies' priors scale from SEQUENTIAL's
        prediction in the same context: under load every recall slows down, and a strategy
        never measured there must not look as cheap as it was when idle (10 concurrent
        recalls once sent the adaptive arm to PARALLEL 99 times in 120: SEQUENTIAL's queued
        cost was compared with PARALLEL's idle one)."""
        model = self._models[strategy]
        rule = rule_estimate(strategy, s)
        measured = False
        if strategy is Strategy.SEQUENTIAL:
            reference = None
        else:
            if reference is None:
                reference = self._predict(Strategy.SEQUENTIAL, s, key)[0]
            measured = _measured(self._models, key) is not None
        mean, width = model.predict(
            cell_key(strategy, key), rule, s.sequential_ms, reference, measured
        )
        return max(mean, 0.001), width

    def decide(self, s: Situation) -> Decision:
        """The decision for situation ``s`` (cache state is the caller's: see ``for_cache``);
        in a context SEQUENTIAL won by far a few decisions ago, SEQUENTIAL's cost alone is
        predicted (see :class:`~athena.planning.costs.Settled`)."""
        options = self.feasible(s)
        key = context(s)
        generation = self._generation  # read first: a cost learnt from here on unsettles
        exploring = len(options) > 1 and self._rng.random() < self.explore_rate
        seq = self._predict(Strategy.SEQUENTIAL, s, key)
        others = None if exploring else self._settled.use(key, len(options), generation)
        if others is not None and far_dearer(seq[0], [cost for _, cost in others]):
            predicted = ((_NAMES[Strategy.SEQUENTIAL], seq[0]), *others)
            settled = _decision(s, Strategy.SEQUENTIAL, SETTLED_WHY, seq, seq[0], predicted)
            self.history.append(settled)  # deque.append is atomic
            return settled
        sequential = seq[0]
        costs = {Strategy.SEQUENTIAL: seq}
        for option in options[1:]:  # SEQUENTIAL's prediction once: every prior scales from it
            costs[option] = self._predict(option, s, key, sequential)
        best, why = _cheapest(self._models, options, costs, key)
        chosen = best
        warm = False
        if exploring:
            pick, warm = explore(options, costs, best, s)
            if pick is not best:
                chosen, why = pick, "exploring: optimistic cost within reach of the best"
                self.explored += 1
        if chosen is not Strategy.SEQUENTIAL:
            reference = cell_key(Strategy.SEQUENTIAL, key)
            with self._lock:
                due = self._refresh.due(reference, costs[chosen][0])
            if due:
                chosen, why = Strategy.SEQUENTIAL, "sequential again, to check the choice"
        # Plain names: a pair holding a Strategy stays tracked by the cyclic collector, and
        # the history keeps a thousand decisions (see athena.heap).
        predicted = tuple([(_NAMES[o], costs[o][0]) for o in options])
        if chosen is best is Strategy.SEQUENTIAL and _settles(
            self._models[Strategy.SEQUENTIAL].cells.get(cell_key(best, key)), predicted
        ):
            self._settled.keep(key, len(options), generation, predicted[1:])
        else:
            self._settled.forget(key)
        decision = _decision(s, chosen, why, costs[chosen], sequential, predicted, warm)
        self.history.append(decision)  # deque.append is atomic
        return decision

    def for_cache(
        self,
        full: bool,
        sequential_ms: float,
        cached_fraction: float,
        cached_ms: float,
        *,
        record: bool = True,
    ) -> Decision:
        """CACHE on a full hit, HYBRID on a partial one (kept in the history if ``record``)."""
        strategy = Strategy.CACHE if full else Strategy.HYBRID
        what = "valid full cache hit" if full else f"{cached_fraction:.0%} of layers cached"
        speedup = sequential_ms / max(cached_ms, 1e-3)
        decision = Decision(strategy, 1.0, what, cached_ms, speedup)
        if record:
            with self._lock:
                self.history.append(decision)
        return decision

    def served(self) -> None:
        """Count a full cache hit in the history, as a CACHE decision (one shared object:
        a hit is served on its own path, which builds no decision)."""
        self.history.append(_SERVED)  # deque.append is atomic

    def learn(self, strategy: Strategy, s: Situation, actual_ms: float) -> None:
        """Fold one measured latency into ``strategy``'s cost model."""
        model = self._models.get(strategy)
        if model is None or not math.isfinite(actual_ms):
            return
        key = context(s)
        with self._lock:
            if strategy is Strategy.SEQUENTIAL:
                reference = None
                self._refresh.measured(cell_key(strategy, key), actual_ms)
            else:
                reference = _measured(self._models, key)
                self._generation += 1  # every settled context: cells and ratios are shared
            model.update(cell_key(strategy, key), actual_ms, s.sequential_ms, reference)

    def snapshot(self) -> dict[str, object]:
        """The decisions kept in the history by strategy, and what each cost model knows.

        >>> StrategySelector().snapshot()["decisions"]
        {}
        """
        return _snapshot(list(self.history), self.explored, self._models)


def _cheapest(
    models: dict[Strategy, CostModel],
    options: list[Strategy],
    costs: dict[Strategy, tuple[float, float]],
    key: Context,
) -> tuple[Strategy, str]:
    """The option of least predicted cost, and why (``costs``: each one's mean and width), where
    leaving SEQUENTIAL must pay: the winner's cost plus :data:`SWITCH_SE` standard errors
    of the medians' difference must come under :func:`switch_limit`. A tie keeps the
    simpler strategy (``options`` are in :data:`EXECUTING` order).

    >>> costs = {Strategy.SEQUENTIAL: (3.0, 0.1), Strategy.PARALLEL: (2.5, 0.1)}
    >>> models = {strategy: CostModel() for strategy in EXECUTING}
    >>> _cheapest(models, list(costs), costs, (2, 2, 0, 0))[0].value  # 10% and 0.25 ms less
    'parallel'
    >>> costs[Strategy.PARALLEL] = (2.8, 0.1)  # cheaper, not by 10%
    >>> _cheapest(models, list(costs), costs, (2, 2, 0, 0))[0].value
    'sequential'
    """
    best = Strategy.SEQUENTIAL
    best_ms = costs[best][0]
    for option in options[1:]:
        if costs[option][0] < best_ms:
            best, best_ms = option, costs[option][0]
    if best is not Strategy.SEQUENTIAL and best_ms + SWITCH_SE * _noise(
        models, best, key
    ) > switch_limit(costs[Strategy.SEQUENTIAL][0]):
        # not cheaper by enough to be worth the hand-off
        return Strategy.SEQUENTIAL, "sequential: none cheaper beyond the margin and the noise"
    return best, "lowest predicted cost"


def _snapshot(
    history: list[Decision], explored: int, models: dict[Strategy, CostModel]
) -> dict[str, object]:
    """:meth:`StrategySelector.snapshot` of a copy of its ``history``."""
    counts: dict[str, int] = {}
    for d in history:
        counts[d.strategy.value] = counts.get(d.strategy.value, 0) + 1
    return {
        "decisions": counts,
        "explored": explored,
        "observations": {s.value: m.n for s, m in models.items()},
        "costs": {s.value: busiest(m) for s, m in models.items()},
    }


def _settles(seq_cell: Cell | None, predicted: tuple[tuple[str, float], ...]) -> bool:
    """Whether a full decision that chose SEQUENTIAL (``predicted``: its cost first, then
    the other options') settles its context: SEQUENTIAL's median is no longer young, and
    every other option is far dearer (:func:`far_dearer`)."""
    return (
        len(predicted) > 1
        and seq_cell is not None
        and seq_cell.n >= WINDOW  # a young median still moves a lot from run to run
        and far_dearer(predicted[0][1], [cost for _, cost in predicted[1:]])
    )


def _decision(
    s: Situation,
    chosen: Strategy,
    why: str,
    cost: tuple[float, float],
    sequential: float,
    predicted: tuple[tuple[str, float], ...],
    warm: bool = False,
) -> Decision:
    """The decision to run ``chosen`` at its predicted ``cost`` (mean, width).

    >>> s = Situation(2, 4.0, 2.0, 0.0, 0, 0.0, False, False, 1)
    >>> _decision(s, Strategy.SEQUENTIAL, "why", (4.0, 1.0), 4.0, ()).confidence
    0.5
    """
    mean, width = cost
    return Decision(
        strategy=chosen,
        confidence=1.0 / (1.0 + width),
        why=why,
        estimated_ms=mean,
        estimated_speedup=sequential / mean if mean else 1.0,
        predicted=predicted,
        setting=_SETTINGS[s.layers, s.pool_available] if s.layers < 16 else "",
        warm_pool=warm,
    )


def explore(
    options: list[Strategy],
    costs: dict[Strategy, tuple[float, float]],
    best: Strategy,
    s: Situation,
) -> tuple[Strategy, bool]:
    """The strategy an exploring recall runs (``best`` if none other), and whether the pool
    should be warmed for the tenant instead. ``costs``: each option's predicted cost and
    uncertainty.

    >>> s = Situation(2, 4.0, 2.0, 0.0, 0, 0.0, True, False, 1, pool_warm=False)
    >>> costs = {Strategy.SEQUENTIAL: (4.0, 0.1), Strategy.PARALLEL: (3.0, 0.1),
    ...          Strategy.DISTRIBUTED: (3.5, 5.0)}
    >>> explore(list(costs), costs, Strategy.PARALLEL, s)
    (<Strategy.PARALLEL: 'parallel'>, True)
    """
    # Optimism in the face of uncertainty, among near-best options and always the
    # reference, whose runs are what time the layers. Under load only the reference:
    # a detour to threads or workers costs the tail of every recall waiting behind it,
    # and a server that is never idle must still learn what its layers cost.
    near = [Strategy.SEQUENTIAL]
    if s.inflight <= 1:
        limit = EXPLORE_WITHIN * costs[best][0]
        near += [o for o in options[1:] if costs[o][0] <= limit]
    pick = min(near, key=lambda o: costs[o][0] - UCB_ALPHA * costs[o][1])
    if pick is Strategy.DISTRIBUTED and pick is not best and not s.pool_warm:
        # A worker new to the tenant builds its indexes first (21-54 ms for a 4 ms
        # recall on 100k-tenants): a tail no exploration should charge a caller.
        # The caller warms the pool in the background; this recall runs as decided.
        return best, True
    return pick, False
