"""The dependency graph between layers, learned from telemetry and saved across restarts.

Per query type it counts how often layers are used together and which layers actually
contributed hits to final results; per layer it keeps a moving average of measured
latency. From these it answers: which layers to search for a query type (skipping layers
that never help), how much parallel execution can gain, and how worth caching a query
type is (the seed's hit rate × result size × query frequency / query cost).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

EWMA: Final = 0.1
MIN_OBSERVATIONS: Final = 200  # a layer is skipped only after this many queries of a type
MAX_KEPT: Final = 1024  # remembered select_layers answers (query types x layer sets)
DEFAULT_LAYER_MS: Final = 1.0


@dataclass(slots=True)
class _TypeStats:
    queries: int = 0
    used: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    contributed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    together: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # as loaded
    sets: dict[tuple[str, ...], int] = field(default_factory=dict)  # counted since
    cache_hits: int = 0
    result_size: float = 0.0
    cost_ms: float = 0.0

    def count(self, cache_hit: bool, result_size: int, cost_ms: float) -> bool:
        """Count one recall of this type; whether that crossed ``MIN_OBSERVATIONS``."""
        self.queries += 1
        self.cache_hits += int(cache_hit)
        self.result_size += (result_size - self.result_size) / self.queries
        self.cost_ms += (cost_ms - self.cost_ms) / self.queries
        return self.queries == MIN_OBSERVATIONS

    def count_layers(self, layers: Iterable[str], contributed: set[str]) -> bool:
        """Count the layers one recall searched and those that contributed; whether a
        count crossed a threshold the layer choice reads. The layers used together are
        counted once per layer set (a dict's increment), and told apart in pairs only
        when saved: counting every pair on each recall took a third of the graph's time."""
        used, contributions, crossed, names = self.used, self.contributed, False, tuple(layers)
        for name in names:
            times = used[name] = used[name] + 1
            crossed |= times == MIN_OBSERVATIONS
            if name in contributed:
                helped = contributions[name] = contributions[name] + 1
                crossed |= helped == 1
        self.sets[names] = self.sets.get(names, 0) + 1
        return crossed

    def pairs(self) -> dict[str, int]:
        """How often each two layers were searched together ("a+b", names in order).

        >>> stats = _TypeStats()
        >>> _ = stats.count_layers(["semantic", "episodic", "graph"], set())
        >>> stats.pairs()
        {'episodic+graph': 1, 'episodic+semantic': 1, 'graph+semantic': 1}
        """
        together = dict(self.together)
        for layers, times in self.sets.items():
            names = sorted(layers)
            for i, name in enumerate(names):
                for other in names[i + 1 :]:
                    pair = f"{name}+{other}"
                    together[pair] = together.get(pair, 0) + times
        return dict(sorted(together.items()))

    def to_dict(self) -> dict[str, Any]:
        """These counts as plain JSON values (the form :meth:`from_dict` reads back)."""
        return {
            "queries": self.queries,
            "used": dict(sorted(self.used.items())),
            "contributed": dict(sorted(self.contributed.items())),
            "together": self.pairs(),
            "cache_hits": self.cache_hits,
            "result_size": self.result_size,
            "cost_ms": self.cost_ms,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> _TypeStats:
        """Counts saved by :meth:`to_dict`."""
        stats = cls(
            queries=int(raw["queries"]),
            cache_hits=int(raw["cache_hits"]),
            result_size=float(raw["result_size"]),
            cost_ms=float(raw["cost_ms"]),
        )
        stats.used.update(raw["used"])
        stats.contributed.update(raw["contributed"])
        stats.together.update(raw["together"])
        return stats


class DependencyGraph:
    """Learned layer relationships.

    >>> g = DependencyGraph(cores=2)
    >>> g.observe("factual", {"episodic": 2.0, "semantic": 1.0}, {"episodic"}, False, 10, 3.0)
    >>> round(g.parallel_benefit(["episodic", "semantic"]), 2)
    1.5
    """

    def __init__(self, cores: int = 2, skip_layers: bool = True) -> None:
        self.cores = max(1, cores)
        self.skip_layers = skip_layers
        self._types: dict[str, _TypeStats] = defaultdict(_TypeStats)
        self._latency: dict[str, float] = {}
        self._choices = LayerChoices()
        self._kept = self._choices.kept  # read on every adaptive recall: one lookup less
        self._lock = threading.Lock()

    def observe(
        self,
        query_type: str,
        layer_ms: Mapping[str, float],
        contributed: set[str],
        cache_hit: bool,
        result_size: int,
        cost_ms: float,
        *,
        timed: bool = True,
    ) -> None:
        """Learn from one executed recall; its per-layer times only if ``timed``: the layers
        ran one after another, alone (a fan-out's per-layer times include the layers'
        contention for the GIL and the cores, and would inflate the sequential estimate)."""
        with self._lock:
            stats = self._types[query_type]
            crossed = stats.count(cache_hit, result_size, cost_ms)
            crossed |= stats.count_layers(layer_ms, contributed)
            if crossed:
                self._forget_kept(query_type)
            if cache_hit or not timed:
                return  # cached or contended timings say nothing about the layers' cost
            for name, ms in layer_ms.items():
                old = self._latency.get(name)
                self._latency[name] = ms if old is None else old + EWMA * (ms - old)

    def observe_hit(self, query_type: str, result_size: int, cost_ms: float) -> None:
        """:meth:`observe` of a full cache hit (no layer ran), on the path a hit takes.

        >>> g = DependencyGraph()
        >>> g.observe_hit("factual", 10, 0.02)
        >>> g.snapshot()["types"]["factual"]["cache_hits"]
        1
        """
        with self._lock:
            if self._types[query_type].count(True, result_size, cost_ms):
                self._forget_kept(query_type)

    def _forget_kept(self, query_type: str | None = None) -> None:
        """:meth:`LayerChoices.forget` (lock held)."""
        self._choices.forget(query_type)

    def choice_version(self, query_type: str) -> list[int]:
        """:meth:`LayerChoices.version`: a plan made at another version is stale."""
        return self._choices.version(query_type)

    def layer_ms(self, layer: str) -> float:
        return self._latency.get(layer, DEFAULT_LAYER_MS)

    def learned_ms(self, layer: str) -> float | None:
        """What ``layer`` takes run alone, as learnt; None before it has run so.

        >>> DependencyGraph().learned_ms("graph") is None
        True
        """
        return self._latency.get(layer)

    def estimate_ms(self, layers: Sequence[str]) -> float:
        """Learned cost of searching ``layers`` one after another."""
        return sum(self.layer_ms(name) for name in layers)

    def estimates(self, layers: Sequence[str]) -> tuple[float, float]:
        """:meth:`estimate_ms` and :meth:`parallel_benefit` of ``layers``, in one pass (the
        planner asks for both on every recall).

        >>> DependencyGraph(cores=2).estimates(["episodic", "semantic"])
        (2.0, 2.0)
        """
        latency = self._latency
        times = [latency.get(name, DEFAULT_LAYER_MS) for name in layers]
        total = sum(times)
        if len(times) < 2:
            return total, 1.0
        return total, total / max(max(times), total / self.cores)

    def parallel_benefit(self, layers: Sequence[str]) -> float:
        """Expected speed-up of running ``layers`` at once, bounded by the cores."""
        return self.estimates(layers)[1]

    def select_layers(self, query_type: str, layers: Sequence[str]) -> tuple[str, ...]:
        """``layers`` minus those that never contributed to this query type's results."""
        asked = tuple(layers)
        if not self.skip_layers:
            return asked
        key = (query_type, asked)
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        with self._lock:  # computed and kept under the lock observe() clears them under
            stats = self._types.get(query_type)
            if stats is None or stats.queries < MIN_OBSERVATIONS:
                kept = asked
            else:
                kept = (
                    tuple(
                        name
                        for name in asked
                        if stats.used.get(name, 0) < MIN_OBSERVATIONS
                        or stats.contributed.get(name, 0) > 0
                    )
                    or asked
                )
            self._choices.keep(key, kept)
        return kept

    def cache_worthiness(self, query_type: str) -> float:
        """Hit rate × result size × query frequency / query cost (the seed's formula)."""
        stats = self._types.get(query_type)
        total = sum(s.queries for s in self._types.values())
        if stats is None or not stats.queries or not total:
            return 0.0
        hit_rate = stats.cache_hits / stats.queries
        frequency = stats.queries / total
        return hit_rate * stats.result_size * frequency / max(stats.cost_ms, 1e-3)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            types = {name: s.to_dict() for name, s in self._types.items()}
            return {"latency_ms": dict(self._latency), "types": types}

    def to_json(self) -> str:
        return json.dumps(self.snapshot(), sort_keys=True)

    def load_json(self, text: str) -> None:
        data = json.loads(text)
        with self._lock:
            self._latency = {k: float(v) for k, v in data.get("latency_ms", {}).items()}
            for name, raw in data.get("types", {}).items():
                self._types[name] = _TypeStats.from_dict(raw)
            self._forget_kept()


class LayerChoices:
    """The layer choices :meth:`DependencyGraph.select_layers` made, and their versions.

    Its answers are read on every adaptive recall (a cache hit included) and change only
    when a count crosses a threshold: the graph forgets a type's answers then, under its
    lock. Per query type a one-item list holds the version of its answers, moved whenever
    they may change: a plan kept by a caller holds the cell and the version it was made
    at, and is current while they agree.

    >>> choices = LayerChoices()
    >>> factual, temporal = choices.version("factual"), choices.version("temporal")
    >>> before = factual[0], temporal[0]
    >>> choices.forget("temporal")
    >>> factual[0] == before[0], temporal[0] == before[1]
    (True, False)
    """

    def __init__(self) -> None:
        self.kept: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self._versions: dict[str, list[int]] = {}

    def keep(self, key: tuple[str, tuple[str, ...]], layers: tuple[str, ...]) -> None:
        """Remember one answer (at most :data:`MAX_KEPT`; the graph's lock held)."""
        if len(self.kept) >= MAX_KEPT:
            self.kept.clear()  # a bounded memo only: no answer changed, plans stay current
        self.kept[key] = layers

    def forget(self, query_type: str | None = None) -> None:
        """Drop the answers of ``query_type`` (all of them if None; the graph's lock held):
        plans made before for that type are stale. A type's choice reads only that type's
        counts, so a count crossing a threshold in one type leaves the plans of the others
        kept (in a loop of cached recalls, every plan was made again each time)."""
        if query_type is None:
            self.kept.clear()
            for cell in self._versions.values():
                cell[0] += 1
            return
        for key in [key for key in self.kept if key[0] == query_type]:
            del self.kept[key]
        self.version(query_type)[0] += 1

    def version(self, query_type: str) -> list[int]:
        """The cell holding the version of ``query_type``'s answers. A caller keeps the
        cell and reads it without a call (a cache hit checks its kept plan so on every
        repeat)."""
        cell = self._versions.get(query_type)
        if cell is None:
            cell = self._versions.setdefault(query_type, [0])  # atomic: one cell per type
        return cell
