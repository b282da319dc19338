"""What the row cache saves a recall that misses the result cache: on and off side by side.

``python benchmarks/row_cache.py [--store locomo] [--embedder static] [--k 10]
[--all-layers] [--strategy sequential] [--queries 1500] [--out DIR]`` builds (or reuses,
under ``DIR/stores``) the store, opens it twice, one ``Memory`` with the row cache and one
without (``RowCache(0)``: every row read from SQLite), warms both on the same 150
questions, then asks each further question once of each, in a random order per question,
the result caches emptied before every recall. Each ``Memory`` sees every question once,
so a row is served from the cache only when an *earlier* question read it, as in an
agent's life (``miss_path.py`` asks one ``Memory`` a question once per arm, so there the
second arm would find the first arm's rows).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from athena.bench.runner import resolve_data
from athena.bench.workloads import STORES, build_store, working_copy
from athena.execution.rows import RowCache
from athena.memory import Memory
from athena.records import LAYERS

WARM = 150


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="locomo", choices=STORES)
    parser.add_argument("--embedder", default="static")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--all-layers", action="store_true", help="every layer, none skipped")
    parser.add_argument("--strategy", default="sequential")
    parser.add_argument("--queries", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, default=resolve_data(None))
    args = parser.parse_args()
    store = build_store(args.store, args.embedder, args.data, args.out)
    path = working_copy(store, args.out / "row-cache")
    arms = {
        "off": Memory(path, embedder=args.embedder, pool="off"),
        "on": Memory(path, embedder=args.embedder, pool="off"),
    }
    arms["off"].pipeline.rows = RowCache(0)
    layers = LAYERS if args.all_layers else None
    asks = list(store.asks)
    rng = random.Random(1)
    rng.shuffle(asks)
    for ask in asks[:WARM]:
        for memory in arms.values():
            memory.recall(
                ask.text, tenant=ask.tenant, k=args.k, layers=layers, strategy="sequential"
            )
    times: dict[str, list[float]] = {name: [] for name in arms}
    for ask in asks[WARM : WARM + args.queries]:
        order = list(arms)
        rng.shuffle(order)
        for name in order:
            memory = arms[name]
            memory.engine.cache.clear()
            start = time.perf_counter()
            memory.recall(
                ask.text, tenant=ask.tenant, k=args.k, layers=layers, strategy=args.strategy
            )
            times[name].append((time.perf_counter() - start) * 1000.0)
    rows = arms["on"].execution_stats()["rows"]
    for memory in arms.values():
        memory.close()
    for name, ms in times.items():
        ms.sort()
        print(
            f"rows {name:3s} p50 {statistics.median(ms):.3f} ms  mean {statistics.fmean(ms):.3f}"
            f"  p90 {ms[int(0.9 * len(ms))]:.3f}  ({len(ms)} recalls)"
        )
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    share = rows["served"] / max(rows["served"] + rows["read"], 1)
    print(f"on / off at p50: {on / off:.3f}; rows served from the cache: {share:.0%}")


if __name__ == "__main__":
    main()
