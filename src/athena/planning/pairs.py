"""Paired runs: now and then one question's layers run both ways, to compare two strategies
on the same work.

The selector's cost models compare medians of different questions. Where questions differ
in cost far more than the strategies do (one tenant of 100k memories: its questions cost 2-10
ms, the graph layer alone 0.3-6.4 ms by question, while PARALLEL saved about 14%), two
medians of a few dozen runs cannot tell the gain from noise, however long it lasts. The
same question run both ways can: the ratio of its two layer times carries only the noise of
the runs, not the spread of the questions. A paired recall costs its layers twice, so only
an undecided context asks for one, one recall in :data:`PAIR_EVERY`, until the pairs decide
against the other strategy or :data:`PAIR_CAP` of them could not decide. Which strategy runs
first alternates, so the warmth the first run leaves the second falls on both alike.
"""

from __future__ import annotations

import math
import threading
from typing import Final

PAIR_MIN: Final = 8  # pairs before their ratio may decide
PAIR_EVERY: Final = 6  # an undecided context pairs one recall in this many
PAIR_CAP: Final = 48  # pairs after which a context that is still undecided stops asking
HORIZON: Final = 64  # pairs a ratio remembers (exponentially weighted beyond)
CLIP: Final = 1.0  # log ratios beyond ±1 (2.7x either way) count as ±1: a stall, not a strategy

Key = tuple[str, int, int]  # strategy, layers, concurrency level


class PairedRatio:
    """The running mean and variance of log(other's layer time / SEQUENTIAL's) over pairs.

    >>> r = PairedRatio()
    >>> for value in [0.8, 0.9] * 4: r.add(value)
    >>> low, high = r.bounds(2.0)
    >>> round(low, 3), round(high, 3)
    (0.814, 0.885)
    """

    __slots__ = ("mean", "n", "var")

    def __init__(self) -> None:
        self.n, self.mean, self.var = 0, 0.0, 0.0

    def add(self, ratio: float) -> None:
        if not ratio > 0.0 or not math.isfinite(ratio):
            return
        value = min(max(math.log(ratio), -CLIP), CLIP)
        weight = 1.0 / min(self.n + 1, HORIZON)
        delta = value - self.mean
        self.mean += weight * delta
        self.var = (1.0 - weight) * (self.var + weight * delta * delta)
        self.n += 1

    def bounds(self, z: float) -> tuple[float, float]:
        """The ratio's interval, ``z`` standard errors either side of its mean."""
        error = z * math.sqrt(self.var / max(min(self.n, HORIZON), 1))
        return math.exp(self.mean - error), math.exp(self.mean + error)


class PairedRuns:
    """The paired runs of one selector, per (strategy, layers, concurrency level).

    >>> pairs = PairedRuns()
    >>> [pairs.wanted(("parallel", 3, 0), 2.0) for _ in range(PAIR_EVERY)].count(True)
    1
    >>> for _ in range(PAIR_MIN): pairs.record(("parallel", 3, 0), 0.8)
    >>> round(pairs.verdict(("parallel", 3, 0), 2.0), 2), pairs.verdict(("parallel", 5, 0), 2.0)
    (0.8, None)
    """

    def __init__(self) -> None:
        self._ratios: dict[Key, PairedRatio] = {}
        self._asked: dict[Key, int] = {}
        self._flips = 0
        self._lock = threading.Lock()

    def record(self, key: Key, ratio: float) -> None:
        """One pair: the other strategy's layer time over SEQUENTIAL's on one question."""
        with self._lock:
            found = self._ratios.get(key)
            if found is None:
                found = self._ratios[key] = PairedRatio()
            found.add(ratio)

    def verdict(self, key: Key, z: float) -> float | None:
        """The ratio, if at least :data:`PAIR_MIN` pairs put it below 1 by ``z`` standard
        errors; else None."""
        found = self._ratios.get(key)
        if found is None or found.n < PAIR_MIN:
            return None
        return math.exp(found.mean) if found.bounds(z)[1] < 1.0 else None

    def wanted(self, key: Key, z: float) -> bool:
        """Whether this recall of an undecided context should run both ways (one in
        :data:`PAIR_EVERY`, until :data:`PAIR_CAP` pairs, or until :data:`PAIR_MIN` or more
        put the ratio above 1 by ``z`` standard errors: decided against)."""
        with self._lock:
            found = self._ratios.get(key)
            if found is not None and (
                found.n >= PAIR_CAP or (found.n >= PAIR_MIN and found.bounds(z)[0] > 1.0)
            ):
                return False
            asked = self._asked[key] = self._asked.get(key, 0) + 1
            return asked % PAIR_EVERY == 0

    def flip(self) -> bool:
        """Whether SEQUENTIAL runs first in the next pair (it alternates)."""
        with self._lock:
            self._flips += 1
            return self._flips % 2 == 1

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Each key's pairs and mean ratio, for stats.

        >>> PairedRuns().snapshot()
        {}
        """
        with self._lock:
            return {
                f"{s}/{layers}/{load}": {"pairs": r.n, "ratio": round(math.exp(r.mean), 3)}
                for (s, layers, load), r in self._ratios.items()
            }
