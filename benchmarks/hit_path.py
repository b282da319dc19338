"""One engine's cached and cold recall in one ``Memory``, nothing else in the process.

``python benchmarks/hit_path.py [--store locomo] [--questions 300] [--rounds 5] [--out DIR]``
builds (or reuses, under ``DIR/stores``) the static-embedder store, fills the result cache
with ``--questions`` questions, then times ``--rounds`` passes of cached recalls, one pass of
cached recalls each right after a cold recall by a second ``Memory`` (as in the harness,
where other arms run between two hits: the hit then finds the CPU's caches holding someone
else's work), and one pass of cold ones (the cache emptied before each), forced SEQUENTIAL
and ADAPTIVE in turn.
To compare two engines, run it from each one's checkout in alternating processes
(``PYTHONPATH=<checkout>/src python benchmarks/hit_path.py``), swapping which goes first.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.memory import Memory

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="locomo")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    store = build_store(args.store, "static", DATA, args.out)
    db = working_copy(store, args.out / "work-hit-path")
    asks = list(store.asks)[: args.questions]
    with Memory(db, embedder="static", pool="off") as mem:
        for ask in asks:
            mem.recall(ask.text, tenant=ask.tenant)
        gc.collect()
        gc.freeze()  # as athena serve does once warmed
        cached: list[float] = []
        for _ in range(args.rounds):
            for ask in asks:
                start = time.perf_counter()
                mem.recall(ask.text, tenant=ask.tenant)
                cached.append(time.perf_counter() - start)
        after_cold: list[float] = []
        with Memory(db, embedder="static", pool="off") as other:
            for ask in asks:
                other.engine.cache.clear()  # type: ignore[attr-defined]
                other.recall(ask.text, tenant=ask.tenant, strategy="sequential")
                start = time.perf_counter()
                mem.recall(ask.text, tenant=ask.tenant)
                after_cold.append(time.perf_counter() - start)
        cold: dict[str, list[float]] = {"sequential": [], "adaptive": []}
        for ask in asks:
            for strategy, times in cold.items():
                mem.engine.cache.clear()  # type: ignore[attr-defined]
                start = time.perf_counter()
                mem.recall(ask.text, tenant=ask.tenant, strategy=strategy)
                times.append(time.perf_counter() - start)
        gc.unfreeze()

    def p50(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.4f} ms"

    print(
        f"{args.store}: cached p50 {p50(cached)}, after a cold recall {p50(after_cold)} "
        f"| cold p50 sequential "
        f"{p50(cold['sequential'])}, adaptive {p50(cold['adaptive'])}"
    )


if __name__ == "__main__":
    main()
