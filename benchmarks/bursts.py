"""Bursts of cold recalls, arms taking turns block by block as ``athena bench`` sends its
"100 concurrent" rows, with the engine's own time, the event loop's cache look and every
garbage collection measured per arm.

``python benchmarks/bursts.py [--arms sequential,cache,adaptive] [--blocks 6] [--per-block 2]
[--concurrency 100] [--interval 1.5] [--embedder static] [--pools off] [--no-settle]
[--out bench-out]`` opens the harness's arms (each its own ``Memory``; pools off unless
asked) on a working copy of ``100k-tenants``, recalls once in every tenant and 300
questions more per arm (untimed), empties the caches, settles the heap as the bench does
(unless ``--no-settle``), then sends ``--blocks`` turns of ``--per-block`` bursts of
``--concurrency`` distinct questions per arm through the harness's generator
(``loadgen.bursts``). Per arm: p50/p99 from the intended send time, the engine's median time
a recall (its telemetry), the mean time of ``Memory.recall_cached`` (the look for a cached
answer that ``AsyncMemory.recall`` makes on the event loop before it hands a miss to a
thread) and of ``Memory.recall_queued`` (the recall on that thread), and the collector's
pauses and collections by generation while that arm's recalls were being sent.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from athena.bench import loadgen
from athena.bench.arms import Arm, open_arms, percentile
from athena.bench.runner import resolve_data, share_indexes
from athena.bench.workloads import build_store, working_copy
from athena.heap import settle_heap
from athena.memory import Memory

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it
TIMED = ("recall_cached", "recall_queued")


class Tally:
    """Seconds and calls of the timed ``Memory`` methods per instance, and the collector's
    pauses and counts per generation per arm (the arm whose recall was sent last)."""

    def __init__(self) -> None:
        self.calls: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0])
        self.gc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0, 0])
        self.arm = ""
        self._began = 0.0

    def wrap(self, name: str) -> None:
        method: Callable[..., Any] = getattr(Memory, name)

        def timed(memory: Memory, *args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return method(memory, *args, **kwargs)
            finally:
                spent = self.calls[(id(memory), name)]
                spent[0] += time.perf_counter() - began
                spent[1] += 1

        setattr(Memory, name, timed)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        seen = self.gc[self.arm]
        seen[0] += time.perf_counter() - self._began
        seen[1 + info["generation"]] += 1

    def mean_ms(self, memory: Memory, name: str) -> float:
        spent, calls = self.calls[(id(memory), name)]
        return spent / calls * 1000.0 if calls else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="sequential,cache,adaptive")
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--per-block", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.5)
    parser.add_argument("--embedder", default="static", choices=("static", "transformer"))
    parser.add_argument("--pools", default="off", choices=("off", "full"))
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--no-settle", action="store_true", help="do not settle the heap")
    args = parser.parse_args()
    store = build_store("100k-tenants", args.embedder, args.data, args.out)
    db = working_copy(store, args.out / "work-bursts")
    asks = list(store.asks)
    random.Random("bursts").shuffle(asks)
    first = {ask.tenant: ask for ask in reversed(asks)}  # one question in every tenant
    tally = Tally()
    for name in TIMED:
        tally.wrap(name)
    arecall = Arm.arecall

    async def noted(arm: Arm, *a: Any, **kw: Any) -> None:
        tally.arm = arm.name  # the collector's pauses go to the arm sending now
        await arecall(arm, *a, **kw)

    Arm.arecall = noted  # type: ignore[method-assign]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open_arms(db, args.embedder, args.arms.split(","), pools=args.pools) as arms:
        share_indexes(arms)
        for arm in arms:
            for ask in [*first.values(), *asks[:300]]:
                arm.recall(ask)
            arm.reset()
        if not args.no_settle:
            settle_heap()
        tally.calls.clear()
        gc.callbacks.append(tally)
        out = loadgen.bursts(
            arms,
            asks[300:],
            concurrency=args.concurrency,
            per_block=args.per_block,
            blocks=args.blocks,
            interval=args.interval,
        )
        gc.callbacks.remove(tally)
        settled = "not settled" if args.no_settle else "heap settled"
        print(
            f"100k-tenants, {args.embedder}, pools {args.pools}, {settled}, {args.blocks} x "
            f"{args.per_block} bursts of {args.concurrency} per arm, {started}\n"
        )
        print(
            "| arm | p50 ms | p99 ms | engine ms a recall | loop's look ms | thread's recall"
            " ms | collector s | collections (gen 0, 1, 2) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for arm in arms:
            samples = out[arm.name]
            ok = [m for m in samples.ms if m == m]
            engine = statistics.median(row.actual_ms for row in samples.rows)
            pause, *gens = tally.gc[arm.name]
            print(
                f"| {arm.name} | {percentile(ok, 50):.2f} | {percentile(ok, 99):.1f} | "
                f"{engine:.3f} | {tally.mean_ms(arm.memory, TIMED[0]):.4f} | "
                f"{tally.mean_ms(arm.memory, TIMED[1]):.3f} | {pause:.3f} | "
                f"{', '.join(str(int(g)) for g in gens)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
