"""Cold recalls at a fixed arrival rate, by how many threads an async face runs them on:
open loop, arms interleaved.

``python benchmarks/recall_threads.py [--embedder transformer] [--store 100k-tenants]
[--threads 2,4] [--rates 420,480,540] [--step 2] [--reps 3] [--strategy sequential] [--pool off]
[--out bench-out]`` builds (or reuses) the benchmark store under ``--out/stores`` and opens
one ``AsyncMemory`` per thread count on one working copy (their indexes shared, no
query-embedding cache). For each rate, rep by rep in a rotating order, each arm empties its
result cache and is sent ``rate x step`` distinct questions at that fixed rate, as the
harness's cold ramp sends them (latency from the intended send time). It reports, per
(rate, threads), the completed recalls/s, p50 and p99 (median and range over reps), the
share of steps whose p99 stayed under 100 ms (the ramp's pass mark) and the process CPU per
recall.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from athena.bench import loadgen
from athena.bench.arms import percentile
from athena.bench.runner import resolve_data
from athena.bench.workloads import Ask, build_store, working_copy
from athena.embedding import load_embedder
from athena.embedding.cache import CachingEmbedder
from athena.memory import AsyncMemory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="transformer")
    parser.add_argument("--store", default="100k-tenants")
    parser.add_argument("--threads", default="2,4")
    parser.add_argument("--rates", default="420,480,540")
    parser.add_argument("--step", type=float, default=2.0, help="seconds per step")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--strategy", default="sequential")
    parser.add_argument("--pool", default="off", help="off, lazy or eager (each arm its own)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, help="LoCoMo file (default: as athena bench)")
    args = parser.parse_args()
    store = build_store(args.store, args.embedder, resolve_data(args.data), args.out)
    db = working_copy(store, args.out / "work-recall-threads")
    model = load_embedder(args.embedder)
    model = model.inner if isinstance(model, CachingEmbedder) else model
    counts = [int(n) for n in args.threads.split(",")]
    arms = {n: AsyncMemory(db, embedder=model, pool=args.pool, concurrency=n) for n in counts}
    first = arms[counts[0]].core.pipeline.ctx
    for mem in list(arms.values())[1:]:
        mem.core.pipeline.ctx.indexes, mem.core.pipeline.ctx.lexicon = first.indexes, first.lexicon
    asks = list(store.asks)
    for mem in arms.values():  # every tenant's indexes built, the selector warm, off the clock
        for ask in {a.tenant: a for a in asks}.values():
            mem.core.recall(ask.text, tenant=ask.tenant, strategy=args.strategy)
    feed = loadgen.cycle(asks[len(asks) // 3 :])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cells: dict[tuple[float, int], list[Cell]] = {}
    rates = [float(r) for r in args.rates.split(",")]
    for rep in range(args.reps):
        for rate in rates:
            for n in counts[rep % len(counts) :] + counts[: rep % len(counts)]:
                cell = cold_step(arms[n], args.strategy, feed, rate, args.step)
                cells.setdefault((rate, n), []).append(cell)
    for mem in arms.values():
        asyncio.run(mem.close())
    print(
        f"{store.name}, {model.name}, {args.strategy}, pool {args.pool}, {args.step:g} s steps,"
        f" {started}"
    )
    print_cells(cells, "threads")


Cell = tuple[float, float, float, float]  # done/s, p50 ms, p99 ms, CPU ms a recall


def cold_step(
    mem: AsyncMemory, strategy: str, feed: Iterator[Ask], rate: float, step: float
) -> Cell:
    """One open-loop step: the result cache emptied, ``rate x step`` questions from ``feed``
    sent at ``rate`` (latency from the intended send time)."""
    mem.core.engine.cache.clear()
    count = max(1, round(rate * step))
    picked = list(itertools.islice(feed, count))
    offsets = [i / rate for i in range(count)]
    cpu = time.process_time()
    phase = loadgen.run_phase(_caller(mem, strategy), picked, offsets, 64)
    cpu = (time.process_time() - cpu) / count * 1000.0
    ok = [m for m in phase.ms if m == m]
    return (phase.qps, percentile(ok, 50), percentile(ok, 99), cpu)


def print_cells(cells: Mapping[tuple[float, Any], list[Cell]], arm: str) -> None:
    """The table of (rate, arm) cells: medians and ranges over the reps, and the passes."""
    print(f"\n| rate/s | {arm} | done/s | p50 ms | p99 ms | p99 ≤ 100 ms | CPU/recall |")
    print("|---|---|---|---|---|---|---|")
    for (rate, name), runs in sorted(cells.items()):
        col = list(zip(*runs, strict=True))
        passed = sum(p99 <= loadgen.P99_BOUND_MS for p99 in col[2])
        print(
            f"| {rate:g} | {name} | {_spread(col[0], '.0f')} | {_spread(col[1], '.1f')} "
            f"| {_spread(col[2], '.0f')} | {passed} of {len(runs)} "
            f"| {statistics.median(col[3]):.2f} ms |"
        )


def _caller(mem: AsyncMemory, strategy: str) -> loadgen.Call:
    async def call(ask: Ask) -> None:
        await mem.recall(ask.text, tenant=ask.tenant, strategy=strategy)

    return call


def _spread(values: tuple[float, ...], fmt: str) -> str:
    """Median (min-max)."""
    return (
        f"{format(statistics.median(values), fmt)} "
        f"({format(min(values), fmt)}-{format(max(values), fmt)})"
    )


if __name__ == "__main__":
    main()
