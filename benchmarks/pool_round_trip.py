"""What a trip to the worker pool costs: one layer and a whole recall's layers, against the
same searches in process.

``python benchmarks/pool_round_trip.py [--queries 600] [--out DIR] [--store 100k-tenants]
[--embedder static]`` builds (or reuses, under ``DIR/stores``) the store, starts a
``Memory`` with an eager pool (a worker per core: two here), has every tenant searched once
in process and once by the pool (each worker then holds the indexes it is sent to), and
then, for each question, in a random order: the episodic layer searched in process, the same
layer by the pool (``ProcessWorkerPool.run``), every layer by the pool, and a forced
DISTRIBUTED and a forced SEQUENTIAL recall. Prints the p50 and p95 of each, in ms. The
difference between the pool's one-layer trip and the same search in process is the trip
itself: pickling, the hand-off to a worker, two process wake-ups and the answer's way back.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from athena.bench.runner import resolve_data
from athena.bench.workloads import STORES, build_store, working_copy
from athena.memory import Memory
from athena.records import make_query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--store", default="100k-tenants", choices=STORES)
    parser.add_argument("--embedder", default="static")
    args = parser.parse_args()
    store = build_store(args.store, args.embedder, resolve_data(None), args.out)
    memory = Memory(
        working_copy(store, args.out / "pool-trip"), embedder=args.embedder, pool="eager"
    )
    asks = list(store.asks)
    random.Random(3).shuffle(asks)
    for ask in {a.tenant: a for a in asks}.values():
        for strategy in ("sequential", "distributed"):
            memory.recall(ask.text, tenant=ask.tenant, strategy=strategy)
    pool = memory.engine.pools.get()
    assert pool is not None, "the pool did not start"
    pipeline = memory.pipeline
    times: dict[str, list[float]] = {}
    for n, ask in enumerate(asks[: args.queries]):
        query = make_query(ask.text, ask.tenant, 10)
        request = pipeline.request(query, memory.generations.get(ask.tenant))
        words = f"{ask.text} ({n})"  # new to the cache: each recall runs
        recall = memory.recall
        arms: dict[str, tuple[Callable[..., object], tuple[object, ...], dict[str, str]]] = {
            "episodic, in process": (pipeline.run, ("episodic", request, "sequential"), {}),
            "episodic, pool": (pool.run, (request, ["episodic"]), {}),
            "five layers, pool": (pool.run, (request, list(query.layers)), {}),
            "recall, SEQUENTIAL": (
                recall,
                (words,),
                {"tenant": ask.tenant, "strategy": "sequential"},
            ),
            "recall, DISTRIBUTED": (
                recall,
                (words,),
                {"tenant": ask.tenant, "strategy": "distributed"},
            ),
        }
        order = list(arms)
        random.Random(n).shuffle(order)
        for name in order:
            fn, positional, keywords = arms[name]
            start = time.perf_counter()
            fn(*positional, **keywords)
            times.setdefault(name, []).append((time.perf_counter() - start) * 1000.0)
    health = pool.health()
    memory.close()
    print(
        f"{args.store}, {args.embedder}, {args.queries} questions; pool: {health['workers']}"
        f" workers, {health['tasks_done']} tasks, {health['messages']} messages; whole"
        f" recalls whose worker read the hits {health.get('hits_read', '-')}, whose caller"
        f" did {health.get('hits_left', '-')}"
    )
    print("| call | p50 ms | p95 ms |\n|---|---|---|")
    for name, values in sorted(times.items()):
        p95 = statistics.quantiles(values, n=20)[-1]
        print(f"| {name} | {statistics.median(values):.3f} | {p95:.3f} |")


if __name__ == "__main__":
    main()
