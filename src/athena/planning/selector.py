"""The strategy selector: CACHE / HYBRID / SEQUENTIAL / PARALLEL / DISTRIBUTED per recall.

A valid full cache hit short-circuits to CACHE and a partial hit goes HYBRID. Otherwise
each executing strategy has a cost model: the seed's rule estimate (warm start) plus a
linear correction learned online from measured latencies over query features and load
(ridge regression kept as an inverse via Sherman-Morrison, so a decision is a few dot
products). The cheapest feasible strategy wins; with a small, capped probability the
selector explores a strategy whose optimistic (lower-confidence-bound) cost is within
reach of the best, so the model keeps learning without paying much for it.
"""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt


class Strategy(StrEnum):
    CACHE = "cache"
    HYBRID = "hybrid"
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    DISTRIBUTED = "distributed"


EXECUTING: Final = (Strategy.SEQUENTIAL, Strategy.PARALLEL, Strategy.DISTRIBUTED)
FEATURES: Final = 6
RIDGE: Final = 1.0
EXPLORE_RATE: Final = 0.05
EXPLORE_WITHIN: Final = 1.5  # only explore strategies predicted within 1.5x of the best
UCB_ALPHA: Final = 1.0
PARALLEL_OVERHEAD_MS: Final = 0.15
DISTRIBUTED_OVERHEAD_MS: Final = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The selector's choice for one recall, with why and what it expects."""

    strategy: Strategy
    confidence: float
    reasoning: str
    estimated_ms: float
    estimated_speedup: float


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

    def features(self) -> npt.NDArray[np.float64]:
        return np.array(
            [
                1.0,
                float(self.layers),
                self.sequential_ms,
                float(self.queue_depth),
                self.pool_busy,
                float(self.inflight),
            ]
        )


def rule_estimate(strategy: Strategy, s: Situation) -> float:
    """The seed's threshold rules as a cost estimate: the warm start of the learned model."""
    if strategy is Strategy.SEQUENTIAL:
        return s.sequential_ms
    spread = s.sequential_ms / max(s.parallel_benefit, 1.0)
    if strategy is Strategy.PARALLEL:
        return spread + PARALLEL_OVERHEAD_MS
    return spread + DISTRIBUTED_OVERHEAD_MS


class _CostModel:
    """Ridge regression of (measured - rule estimate) on the features."""

    def __init__(self) -> None:
        self.inverse = np.eye(FEATURES) / RIDGE
        self.b = np.zeros(FEATURES)
        self.theta = np.zeros(FEATURES)
        self.n = 0

    def predict(self, x: npt.NDArray[np.float64]) -> tuple[float, float]:
        mean = float(self.theta @ x)
        width = math.sqrt(max(float(x @ self.inverse @ x), 0.0))
        return mean, width

    def update(self, x: npt.NDArray[np.float64], residual: float) -> None:
        ax = self.inverse @ x
        self.inverse -= np.outer(ax, ax) / (1.0 + float(x @ ax))
        self.b += residual * x
        self.theta = self.inverse @ self.b
        self.n += 1


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
        self._models = {strategy: _CostModel() for strategy in EXECUTING}
        self._rng = rng or random.Random()
        self.explore_rate = explore_rate
        self.history: deque[Decision] = deque(maxlen=history)
        self._lock = threading.Lock()
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
        mean, width = self._models[strategy].predict(s.features())
        return max(rule_estimate(strategy, s) + mean, 0.001), width

    def decide(self, s: Situation) -> Decision:
        """The decision for situation ``s`` (cache state is the caller's: see ``for_cache``)."""
        options = self.feasible(s)
        costs = {option: self.predict(option, s) for option in options}
        best = min(options, key=lambda o: (costs[o][0], EXECUTING.index(o)))
        chosen, why = best, "lowest predicted cost"
        if len(options) > 1 and self._rng.random() < self.explore_rate:
            # Optimism in the face of uncertainty, but only among near-best options.
            near = [o for o in options if costs[o][0] <= EXPLORE_WITHIN * costs[best][0]]
            pick = min(near, key=lambda o: costs[o][0] - UCB_ALPHA * costs[o][1])
            if pick is not best:
                chosen, why = pick, "exploring: optimistic cost within reach of the best"
                self.explored += 1
        mean, width = costs[chosen]
        sequential = costs[Strategy.SEQUENTIAL][0]
        decision = Decision(
            strategy=chosen,
            confidence=1.0 / (1.0 + width),
            reasoning=f"{why}: "
            + ", ".join(f"{o.value}≈{costs[o][0]:.2f}ms" for o in options)
            + f" over {s.layers} layer(s), pool {'up' if s.pool_available else 'down'}",
            estimated_ms=mean,
            estimated_speedup=sequential / mean if mean else 1.0,
        )
        with self._lock:
            self.history.append(decision)
        return decision

    def for_cache(
        self, full: bool, sequential_ms: float, cached_fraction: float, cached_ms: float
    ) -> Decision:
        """CACHE on a full hit, HYBRID on a partial one."""
        strategy = Strategy.CACHE if full else Strategy.HYBRID
        what = "valid full cache hit" if full else f"{cached_fraction:.0%} of layers cached"
        speedup = sequential_ms / max(cached_ms, 1e-3)
        decision = Decision(strategy, 1.0, what, cached_ms, speedup)
        with self._lock:
            self.history.append(decision)
        return decision

    def learn(self, strategy: Strategy, s: Situation, actual_ms: float) -> None:
        """Fold one measured latency into ``strategy``'s cost model."""
        model = self._models.get(strategy)
        if model is None:
            return
        with self._lock:
            model.update(s.features(), actual_ms - rule_estimate(strategy, s))

    def snapshot(self) -> dict[str, object]:
        counts: dict[str, int] = {}
        for d in list(self.history):
            counts[d.strategy.value] = counts.get(d.strategy.value, 0) + 1
        return {
            "decisions": counts,
            "explored": self.explored,
            "observations": {s.value: m.n for s, m in self._models.items()},
        }
