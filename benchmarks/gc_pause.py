"""How long a full garbage collection stalls a process that holds a warmed ``Memory``.

``python benchmarks/gc_pause.py [--store 100k-tenants] [--out DIR] [--embedder static]
[--strategy sequential]`` builds (or reuses, under ``DIR/stores``) the store, recalls one
question in every tenant (which builds each tenant's indexes) and 500 more, then reports
the objects the cyclic collector tracks, the most common of them, and the time of five
full collections. Any recall can land in such a collection, so it bounds the tail of every
strategy. LoCoMo is read in place. ``--strategy adaptive`` recalls as ``Memory.recall``
does by default: its fan-outs search on reader threads, each with its own stemmer.
"""

from __future__ import annotations

import argparse
import collections
import gc
import random
import statistics
import time
from pathlib import Path

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.execution.adaptive import STRATEGIES
from athena.memory import Memory

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="100k-tenants")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--embedder", default="static")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--strategy", default="sequential", choices=STRATEGIES)
    args = parser.parse_args()
    store = build_store(args.store, args.embedder, args.data, args.out)
    memory = Memory(working_copy(store, args.out / "gc-pause"), embedder=args.embedder, pool="off")
    asks = list(store.asks)
    random.Random(1).shuffle(asks)
    first = {ask.tenant: ask for ask in reversed(asks)}
    for ask in [*first.values(), *asks[:500]]:
        memory.recall(ask.text, tenant=ask.tenant, strategy=args.strategy)
    tracked = gc.get_objects()
    kinds = collections.Counter(type(o).__name__ for o in tracked).most_common(5)
    print(f"{store.name}: {len(first)} tenants, {len(tracked):,} tracked objects; most: {kinds}")
    del tracked
    pauses = []
    for _ in range(5):
        start = time.perf_counter()
        gc.collect()
        pauses.append((time.perf_counter() - start) * 1e3)
    print("full collections, ms:", [round(p, 1) for p in pauses])
    print(f"median {statistics.median(pauses):.1f} ms")
    memory.close()


if __name__ == "__main__":
    main()
