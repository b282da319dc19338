"""What the adaptive engine adds to a cold recall over the reference engine, by part.

``python benchmarks/engine_overhead.py [--arms baseline,sequential,adaptive] [--queries 1000]
[--store locomo] [--embedder static] [--pools off] [--parts] [--out bench-out]`` builds (or
reuses, under ``--out/stores``) the store, opens the arms as ``athena bench`` does
(``baseline`` is the reference ``SequentialEngine`` with no caches at all; the others the
adaptive engine, forced or not; ``--pools full`` gives the caching arms their eager worker
pools and waits for them, as the bench does; ``off``, the default, starts none), warms them
with 300 questions, then asks each of the next ``--queries`` questions
once per arm in a shuffled order, every cache emptied before each recall. It prints each
arm's cold p50 and mean and each arm's p50 over the first arm's. ``--parts`` also times the
engine's steps (each method wrapped in a timer, a microsecond or so each) and prints their
mean per recall, per arm.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from athena.bench.arms import POOLS, Arm, open_arms
from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy

# (module, class, method): the steps a cold recall takes in either engine
PARTS = (
    ("athena.execution.pipeline", "Pipeline", "request"),
    ("athena.execution.pipeline", "Pipeline", "run"),
    ("athena.execution.pipeline", "Pipeline", "hits"),
    ("athena.embedding.cache", "CachingEmbedder", "embed"),
    ("athena.execution.plans", "RecallPlans", "plan"),
    ("athena.execution.situations", "Situations", "of"),
    ("athena.execution.recall_run", "RecallRun", "_decide"),
    ("athena.execution.recall_run", "RecallRun", "_finish"),
    ("athena.execution.feedback", "Feedback", "executed"),
    ("athena.execution.cache", "ResultCache", "get_full"),
    ("athena.execution.cache", "ResultCache", "put_recall"),
    ("athena.memory_recalls", "MemoryRecalls", "_generations"),
    ("athena.records", "RequestMemo", "make"),
)


def timed(parts: dict[tuple[str, str], float], current: list[str]) -> None:
    """Wrap every method of :data:`PARTS` in a timer adding to ``parts[(arm, step)]``."""
    import importlib

    for module, cls_name, method in PARTS:
        cls = getattr(importlib.import_module(module), cls_name)
        inner = getattr(cls, method)

        def wrapper(
            *a: Any, _f: Callable[..., Any] = inner, _n: str = f"{cls_name}.{method}", **k: Any
        ) -> Any:
            start = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                parts[(current[0], _n)] += time.perf_counter() - start

        setattr(cls, method, wrapper)


def _measure(
    arms: list[Arm], asks: list[Any], queries: int, timed_parts: bool
) -> tuple[dict[str, list[float]], dict[tuple[str, str], float], list[Any]]:
    """Warm ``arms`` with 300 questions, then time each of the next ``queries`` once per
    arm, in a shuffled order, every cache emptied first."""
    parts: dict[tuple[str, str], float] = defaultdict(float)
    current = ["-"]
    if timed_parts:
        timed(parts, current)
    random.Random(5).shuffle(asks)
    for ask in asks[:300]:
        for arm in arms:
            arm.recall(ask)
    parts.clear()
    times: dict[str, list[float]] = {arm.name: [] for arm in arms}
    questions = asks[300 : 300 + queries]
    for index, ask in enumerate(questions):
        order = list(arms)
        random.Random(index).shuffle(order)
        for arm in order:
            arm.reset()
            current[0] = arm.name
            times[arm.name].append(arm.recall(ask))
    return times, parts, questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="baseline,sequential,adaptive")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--store", default="locomo")
    parser.add_argument("--embedder", default="static")
    parser.add_argument("--pools", default="off", choices=POOLS, help="the arms' worker pools")
    parser.add_argument("--parts", action="store_true", help="time the engine's steps")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    store = build_store(args.store, args.embedder, resolve_data(None), args.out)
    path = working_copy(store, args.out / "engine-overhead")
    with open_arms(path, args.embedder, args.arms.split(","), pools=args.pools) as arms:
        times, parts, questions = _measure(arms, list(store.asks), args.queries, args.parts)
    first = statistics.median(times[arms[0].name])
    print(f"{args.store}, {args.embedder}, {len(questions)} cold recalls per arm")
    for arm in arms:
        ms = times[arm.name]
        p50 = statistics.median(ms)
        print(
            f"{arm.name:11s} p50 {p50 * 1000:7.0f} µs  mean {statistics.fmean(ms) * 1000:7.0f}"
            f"  over {arms[0].name}: {(p50 - first) * 1000:+5.0f} µs"
        )
        steps = sorted(((v, k[1]) for k, v in parts.items() if k[0] == arm.name), reverse=True)
        for total, step in steps:
            print(f"    {step:28s} {total / len(questions) * 1e6:7.1f} µs per recall")


if __name__ == "__main__":
    main()
