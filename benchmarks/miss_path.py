"""What the cache and the adaptive path add to a cold recall: strategies side by side, interleaved.

``python benchmarks/miss_path.py [--queries 1000] [--out DIR] [--embedder static]
[--arms sequential,adaptive] [--store locomo] [--k 10] [--all-layers]`` builds (or reuses,
under ``DIR/stores``) the store (``athena bench``'s: LoCoMo by default), then asks each
question on one ``Memory`` once per arm in a random order, emptying the result cache before
every recall, so every arm runs cold. Forced SEQUENTIAL neither reads nor fills
the cache; CACHE and HYBRID pay for the cache key, single flight, the lookups and the fill;
ADAPTIVE for those and the decision. Each arm's difference of medians from the first arm's is
that overhead (for ADAPTIVE, the end-to-end part of the selector's regret). LoCoMo is read in
place. ``--k 50 --all-layers --arms sequential,parallel`` is the bench's complex recall:
PARALLEL's fan-out against the layers one after another.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from athena.bench.runner import resolve_data
from athena.bench.workloads import STORES, build_store, working_copy
from athena.execution.adaptive import STRATEGIES
from athena.memory import Memory
from athena.records import LAYERS

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--embedder", default="static")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pool", default="off", help="the worker pool: off, lazy or eager")
    parser.add_argument("--arms", default="sequential,adaptive", help="strategies; first: base")
    parser.add_argument("--store", default="locomo", choices=STORES)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--all-layers", action="store_true", help="every layer, none skipped")
    args = parser.parse_args()
    layers = LAYERS if args.all_layers else None
    store = build_store(args.store, args.embedder, args.data, args.out)
    path = working_copy(store, args.out / "miss-path")
    memory = Memory(path, embedder=args.embedder, pool=args.pool)
    asks = list(store.asks)
    rng = random.Random(1)
    rng.shuffle(asks)
    for ask in asks[:100]:  # build every tenant's indexes first
        memory.recall(ask.text, tenant=ask.tenant, k=args.k, layers=layers, strategy="sequential")
    arms = args.arms.split(",")
    if len(set(arms)) != len(arms) or not set(arms) <= set(STRATEGIES) or len(arms) < 2:
        parser.error(f"--arms: two or more of {', '.join(STRATEGIES)}, each once")
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for ask in asks[: args.queries]:
        order = list(arms)
        rng.shuffle(order)
        for arm in order:
            memory.engine.cache.clear()
            start = time.perf_counter()
            memory.recall(ask.text, tenant=ask.tenant, k=args.k, layers=layers, strategy=arm)
            times[arm].append((time.perf_counter() - start) * 1000.0)
    memory.close()
    for arm, ms in times.items():
        ms.sort()
        print(
            f"{arm:10s} p50 {statistics.median(ms):.3f} ms  mean {statistics.fmean(ms):.3f}"
            f"  p90 {ms[int(0.9 * len(ms))]:.3f}  ({len(ms)} recalls)"
        )
    base = statistics.median(times[arms[0]])
    for arm in arms[1:]:
        mine = statistics.median(times[arm])
        print(f"{arm} - {arms[0]}: {mine - base:+.3f} ms at p50 ({100 * (mine / base - 1):+.1f}%)")


if __name__ == "__main__":
    main()
