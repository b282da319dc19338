"""The arms of the comparison, and running a stream of operations across them INTERLEAVED.

Every arm is its own :class:`~athena.memory.AsyncMemory` on the same database file, so
each has its own result cache, embedding cache, vector indexes, reader threads and worker
pool: nothing one arm caches or warms can serve another, and a write by any arm is seen by
all (generations move in the shared file). Every operation is made by every arm in turn,
in the balanced order of :func:`athena.bench.turns.turn_order` (within turns, each arm
after each other and in each place about equally often), so machine noise, the cost of
being first after a write and what the arm before left in the CPU's caches fall on every
arm alike.

| arm | engine | strategy | embedding cache | worker pool |
|---|---|---|---|---|
| baseline | ``SequentialEngine`` (the reference path) | sequential | off | off |
| sequential / parallel | adaptive, forced | that strategy | on | off |
| distributed | adaptive, forced | distributed | on | lazy (started at warm-up) |
| cache / hybrid / adaptive | adaptive | that strategy | on | eager, as a server runs it |

Forced sequential/parallel/distributed neither read nor fill the result cache; ``baseline``
also embeds every query afresh, so nothing at all is cached: the seed's "current" column.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TypeVar

from athena.bench.turns import turn_order
from athena.bench.workloads import Ask, Op
from athena.embedding import CachingEmbedder, load_embedder
from athena.errors import AthenaError
from athena.memory import AsyncMemory, Memory

T = TypeVar("T")

ARMS: Final = ("baseline", "sequential", "parallel", "distributed", "cache", "hybrid", "adaptive")
FIXED: Final = ("sequential", "parallel", "distributed", "cache", "hybrid")
EXECUTING: Final = ("sequential", "parallel", "distributed")
POOL_START_S: Final = 180.0
POOLS: Final = ("full", "distributed", "off")

Advance = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ArmSpec:
    strategy: str
    execution: str
    embed_cache: bool
    pool: str


SPECS: Final = {
    "baseline": ArmSpec("sequential", "sequential", False, "off"),
    "sequential": ArmSpec("sequential", "adaptive", True, "off"),
    "parallel": ArmSpec("parallel", "adaptive", True, "off"),
    "distributed": ArmSpec("distributed", "adaptive", True, "lazy"),
    "cache": ArmSpec("cache", "adaptive", True, "eager"),
    "hybrid": ArmSpec("hybrid", "adaptive", True, "eager"),
    "adaptive": ArmSpec("adaptive", "adaptive", True, "eager"),
}


class Arm:
    """One arm: its own Memory (sync core plus async face) and the strategy it forces."""

    def __init__(self, name: str, path: Path, embedder: str, *, pools: str = "full") -> None:
        spec = SPECS[name]
        if pools == "off" and spec.pool != "off":
            spec = replace(spec, pool="off")  # forced distributed then falls back to parallel
        elif pools == "distributed" and spec.pool == "eager":
            spec = replace(spec, pool="lazy")  # never started: the selector cannot use it
        self.name, self.spec, self.strategy = name, spec, spec.strategy
        self.opened = 0  # its place in the order the arms were opened in (open_arms)
        model: Any = embedder
        if not spec.embed_cache:
            wrapped = load_embedder(embedder)
            model = wrapped.inner if isinstance(wrapped, CachingEmbedder) else wrapped
        self.aio = AsyncMemory(path, embedder=model, execution=spec.execution, pool=spec.pool)
        self.memory: Memory = self.aio.core
        self.errors: list[str] = []

    def recall(
        self,
        ask: Ask,
        *,
        k: int = 10,
        layers: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> float:
        """One recall; returns its latency in ms, or NaN if it failed (the error is kept)."""
        start = time.perf_counter()
        try:
            self.memory.recall(
                ask.text,
                tenant=ask.tenant,
                k=k,
                layers=layers,
                strategy=self.strategy,
                timeout=timeout,
            )
        except (AthenaError, TimeoutError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return float("nan")
        return (time.perf_counter() - start) * 1000.0

    async def arecall(self, ask: Ask, *, k: int = 10, timeout: float | None = None) -> None:
        await self.aio.recall(
            ask.text, tenant=ask.tenant, k=k, strategy=self.strategy, timeout=timeout
        )

    def reset(self, *, embeddings: bool = True) -> None:
        """Empty the result cache (and the query-embedding cache): a cold start."""
        cache = getattr(self.memory.engine, "cache", None)
        if cache is not None:
            cache.clear()
        if embeddings and isinstance(self.memory.embedder, CachingEmbedder):
            self.memory.embedder.clear()

    def cache_counts(self) -> dict[str, float]:
        """The result cache's counters (hits, partial_hits, misses…); empty for baseline."""
        cache = getattr(self.memory.engine, "cache", None)
        return dict(cache.stats()) if cache is not None else {}

    def telemetry(self) -> list[Any]:
        """The engine's in-memory telemetry rows (newest last); empty for baseline."""
        telemetry = getattr(self.memory.engine, "telemetry", None)
        return list(telemetry.rows()) if telemetry is not None else []

    def recorded(self) -> int:
        telemetry = getattr(self.memory.engine, "telemetry", None)
        return int(telemetry.recorded) if telemetry is not None else 0

    def pool(self) -> dict[str, Any]:
        return dict(self.memory.execution_stats().get("pool", {}))

    def close(self) -> None:
        asyncio.run(self.aio.close())  # its recall threads, then the core


@contextmanager
def open_arms(
    path: Path,
    embedder: str,
    names: Sequence[str] = ARMS,
    *,
    pools: str = "full",
    shuffle: str | None = None,
) -> Iterator[list[Arm]]:
    """Every arm in ``names`` on the database ``path``, in that order; all closed at the end.

    ``pools``: "full" as in the table above; "distributed" starts only the distributed
    arm's pool; "off" starts none (forced distributed falls back to parallel). The last two
    are smoke-test shortcuts: spawned workers take seconds to start on two busy cores.
    ``shuffle``: a seed to open the arms in a shuffled order (see :func:`opening_order`)."""
    if pools not in POOLS:
        raise ValueError(f"pools must be one of {', '.join(POOLS)}")
    arms: list[Arm] = []  # in the order opened
    asked: list[Arm | None] = [None] * len(names)  # in the order of ``names``
    try:
        for index in opening_order(range(len(names)), shuffle):
            arm = asked[index] = Arm(names[index], path, embedder, pools=pools)
            arm.opened = len(arms)
            arms.append(arm)
            if arm.spec.pool == "eager":
                # One pool at a time: on a large tenant each worker builds its indexes at
                # start, and eight workers building at once on two cores overran the pool's
                # start allowance (the one-tenant store's pools never came up).
                wait_for_pools([arm])
        yield [arm for arm in asked if arm is not None]
    finally:
        for arm in arms:
            arm.close()


def opening_order(names: Iterable[T], seed: str | None) -> list[T]:
    """The order to open the arms in: ``names`` as given, or shuffled by ``seed``.

    The order an arm was opened in moves its cached hits, whatever its strategy: on
    LoCoMo's static store, every arm taking turns with SEQUENTIAL's cold recalls between
    (`benchmarks/arm_hits.py`, pools off, CACHE, HYBRID, ADAPTIVE opened in that order),
    the hit p50 rose with the order, 7.43-7.99, 8.01-8.28 and 8.44-8.56 µs; the adaptive
    arm asked with HYBRID's strategy and opened last was 0.34-0.43 µs slower than the
    HYBRID arm. The bench opened ADAPTIVE last in every session, and "never slower" flagged
    its cached hit more than any other row. The bench now shuffles the order afresh for each
    session of each run (a fixed seed per session kept one order run after run), and keeps
    it in the session's details.

    >>> opening_order(["a", "b"], None)
    ['a', 'b']
    >>> sorted(opening_order(["a", "b", "c"], "s")) == ["a", "b", "c"]
    True
    """
    order = list(names)
    if seed is not None:
        random.Random(seed).shuffle(order)
    return order


@dataclass(slots=True)
class Samples:
    """What one arm did in one scenario."""

    ms: list[float] = field(default_factory=list)
    errors: int = 0
    cache: dict[str, float] = field(default_factory=dict)
    rows: list[Any] = field(default_factory=list)  # telemetry rows of these recalls
    wall_s: float = 0.0
    qps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def ok(self) -> list[float]:
        return [m for m in self.ms if m == m]  # NaN marks a failed recall


@dataclass(slots=True)
class Outcome:
    """One scenario's samples per arm, and the timings of the writes it made."""

    arms: dict[str, Samples]
    writes_ms: list[float] = field(default_factory=list)


def counts_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    keys = ("hits", "partial_hits", "misses", "stale_dropped", "expired_dropped")
    return {key: after.get(key, 0.0) - before.get(key, 0.0) for key in keys if key in after}


def run_ops(
    arms: Sequence[Arm],
    ops: Sequence[Op],
    *,
    k: int = 10,
    layers: Sequence[str] | None = None,
    advance: Advance | None = None,
    writer: Memory | None = None,
    cap_s: Mapping[str, float] | None = None,
) -> Outcome:
    """Run ``ops`` with every recall made by every arm, interleaved op by op.

    A write is made once (by ``writer``, default the first arm's Memory) and timed on its
    own; every arm then sees it through the shared file. An arm whose recalls have taken
    more than its ``cap_s`` seconds in all makes no more (``extra["stopped_after"]``).
    """
    out = Outcome({arm.name: Samples() for arm in arms})
    before = {arm.name: (arm.cache_counts(), arm.recorded(), len(arm.errors)) for arm in arms}
    spent = dict.fromkeys(out.arms, 0.0)
    write_to = writer or arms[0].memory
    live, turn = list(arms), 0  # the arms still asking, and the recall turns so far
    for op in ops:
        if op.kind == "write":
            start = time.perf_counter()
            write_to.remember(op.ask.text, tenant=op.ask.tenant, layer=op.layer)
            out.writes_ms.append((time.perf_counter() - start) * 1000.0)
        else:
            # Counted by recalls and over the arms still asking: a write or a stopped arm
            # skipping rows of the design would unbalance it (benchmarks/neighbours.py
            # rebuilds the same order from the samples).
            for arm in turn_order(live, turn):
                samples = out.arms[arm.name]
                start = time.perf_counter()
                samples.ms.append(arm.recall(op.ask, k=k, layers=layers))
                spent[arm.name] += time.perf_counter() - start
                if cap_s is not None and spent[arm.name] > cap_s.get(arm.name, math.inf):
                    samples.extra["stopped_after"] = len(samples.ms)
                    live.remove(arm)
            turn += 1
        if advance:
            advance(1)
    for arm in arms:
        samples = out.arms[arm.name]
        counts, recorded, errors = before[arm.name]
        samples.cache = counts_delta(counts, arm.cache_counts())
        fresh = arm.recorded() - recorded
        samples.rows = arm.telemetry()[-fresh:] if fresh > 0 else []
        samples.errors = len(arm.errors) - errors
        samples.wall_s = spent[arm.name]
        ok = samples.ok()
        samples.qps = len(ok) / samples.wall_s if samples.wall_s > 0 else None
    return out


def wait_for_pools(arms: Sequence[Arm], timeout: float = POOL_START_S) -> dict[str, str]:
    """Start the distributed arm's pool and wait for the eager ones; name -> state."""
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    for arm in arms:
        if arm.spec.pool == "off":
            continue
        if arm.spec.pool == "lazy":
            pools = getattr(arm.memory.engine, "pools", None)  # what a forced recall starts
            if pools is not None:
                pools.get()
        while time.monotonic() < deadline:
            pool = arm.pool()
            if pool.get("available") or pool.get("error"):
                break
            time.sleep(0.1)
        pool = arm.pool()
        states[arm.name] = "up" if pool.get("available") else f"down: {pool.get('error', '?')}"
    return states


def warm_up(
    arms: Sequence[Arm],
    tenants: Sequence[str],
    learn: Sequence[Ask],
    *,
    advance: Advance | None = None,
    rounds: int = 2,
    learn_budget_s: float | None = None,
) -> dict[str, Any]:
    """Build every arm's indexes (``rounds`` recalls per tenant, so pool workers warm too),
    then a learning pass over ``learn`` (stopped after ``learn_budget_s``); finally empty
    every cache. Every warm-up recall is a cold one, so the selectors learn real costs.

    Returns the time it took, the median cold recall over the learning pass (the cost the
    scenarios are sized with) and the arms whose recalls fell back or failed.
    """
    start = time.perf_counter()
    seen = {arm.name: arm.recorded() for arm in arms}
    for index, tenant in enumerate(t for t in tenants for _ in range(rounds)):
        for arm in turn_order(arms, index):
            arm.recall(Ask(tenant, "warm up the indexes"))
            arm.reset()
        if advance:
            advance(1)
    learned: list[float] = []
    began = time.perf_counter()
    for index, ask in enumerate(learn):
        if learn_budget_s is not None and time.perf_counter() - began > learn_budget_s:
            break
        for arm in turn_order(arms, index):
            learned.append(arm.recall(ask))
            arm.reset()
        if advance:
            advance(1)
    troubled: dict[str, str] = {}
    for arm in arms:
        fresh = arm.recorded() - seen[arm.name]
        rows = arm.telemetry()[-fresh:] if fresh > 0 else []
        fallbacks = [str(r.fallback) for r in rows if getattr(r, "fallback", None)]
        if fallbacks or arm.errors:
            troubled[arm.name] = (fallbacks or arm.errors)[-1]
        arm.reset()
        arm.errors.clear()
    ok = [m for m in learned if m == m]
    return {
        "recalls_per_arm": len(tenants) * rounds + len(learned) // max(len(arms), 1),
        "seconds": round(time.perf_counter() - start, 2),
        "cold_recall_ms": round(statistics.median(ok), 3) if ok else None,
        "fell_back_or_failed": troubled,
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation); NaN for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def layer_medians(rows: Sequence[Any]) -> dict[str, float]:
    """Median measured ms per layer over telemetry rows of executed (not cached) recalls."""
    per: dict[str, list[float]] = {}
    for row in rows:
        if getattr(row, "cache", "miss") != "miss":
            continue
        for name, ms in dict(getattr(row, "layers_ms", {})).items():
            per.setdefault(name, []).append(float(ms))
    return {name: round(statistics.median(v), 4) for name, v in per.items() if v}


def parallel_limit(layer_ms: dict[str, float], cores: int) -> float:
    """The best speedup running these layers at once on ``cores`` cores can give.

    limit = sum / max(max layer, sum / cores): the longest layer, or the work spread over the
    cores, whichever is longer, bounds the parallel time.

    >>> parallel_limit({"a": 3.0, "b": 1.0}, 2)
    1.3333333333333333
    >>> parallel_limit({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, 2)
    2.0
    """
    total = sum(layer_ms.values())
    if total <= 0:
        return 1.0
    return total / max(max(layer_ms.values()), total / max(cores, 1))


def recall_limit(recall_ms: float, layer_ms: dict[str, float], cores: int) -> float:
    """The best speedup a fan-out of these layers can give a whole recall of ``recall_ms``.

    Only the layers fan out: the rest of the recall (embedding the query, fusing, reading
    the hits' rows, learning) runs once, before or after them (Amdahl's law):
    limit = recall / (recall - layers + layers / parallel_limit).

    >>> recall_limit(4.0, {"a": 1.0, "b": 1.0}, 2)
    1.3333333333333333
    >>> recall_limit(2.0, {"a": 1.0, "b": 1.0}, 2)
    2.0
    """
    layers = sum(layer_ms.values())
    if not recall_ms > 0 or layers <= 0:  # NaN too: no recall succeeded
        return 1.0
    outside = max(recall_ms - layers, 0.0)
    return recall_ms / (outside + layers / parallel_limit(layer_ms, cores))


def summarise(rows: Sequence[Any]) -> dict[str, Any]:
    """What an arm's telemetry rows say: strategies executed, cache states, where time went."""
    executed: dict[str, int] = {}
    states: dict[str, int] = {}
    overhead, spread, layer_sum = [], [], []
    fallbacks = 0
    for row in rows:
        name = str(getattr(row, "strategy", "?"))
        executed[name] = executed.get(name, 0) + 1
        state = str(getattr(row, "cache", "?"))
        states[state] = states.get(state, 0) + 1
        fallbacks += bool(getattr(row, "fallback", None))
        layers = [float(v) for v in dict(getattr(row, "layers_ms", {})).values()]
        if state == "miss" and layers:
            actual = float(getattr(row, "actual_ms", 0.0))
            layer_sum.append(sum(layers))
            spread.append(max(layers))
            overhead.append(actual - max(layers))

    def med(values: list[float]) -> float | None:
        return round(statistics.median(values), 4) if values else None

    return {
        "executed": executed,
        "cache": states,
        "fallbacks": fallbacks,
        "layers_sum_ms_p50": med(layer_sum),
        "slowest_layer_ms_p50": med(spread),
        "actual_minus_slowest_layer_ms_p50": med(overhead),
        "layer_ms_p50": layer_medians(rows),
    }
