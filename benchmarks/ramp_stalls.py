"""Cold open-loop steps at one arrival rate, arms alternating, with every garbage collection
timed: which slow steps are collector pauses.

``python benchmarks/ramp_stalls.py [--arms sequential,adaptive] [--rate 168.75] [--step-s 3]
[--reps 6] [--embedder static] [--out bench-out]`` opens the harness's arms (each its own
``Memory`` with its pools, indexes shared, as ``athena bench`` does) on a working copy of
``100k-tenants`` with the embedder (static unless asked), warms them up, then runs
``--reps`` steps per arm of ``--rate`` recalls/s for ``--step-s`` seconds (distinct
questions, caches emptied before each step, first arm rotating), through the harness's
open-loop generator. ``gc.callbacks`` times every collection. Per step: p50/p99/max
latency, the recalls/s achieved, the full collections (start offset and pause) and the
young ones counted, the strategies run.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from pathlib import Path
from typing import Any

from athena.bench.arms import open_arms, percentile, warm_up
from athena.bench.loadgen import P99_BOUND_MS, arm_call, cycle, run_phase
from athena.bench.runner import resolve_data, share_indexes
from athena.bench.turns import turn_order
from athena.bench.workloads import build_store, working_copy
from athena.heap import settle_heap

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it


class Collections:
    """Every collection's generation, start and end (perf_counter seconds)."""

    def __init__(self) -> None:
        self.seen: list[list[Any]] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.seen.append([info["generation"], time.perf_counter(), None])
        elif self.seen:
            self.seen[-1][2] = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="sequential,adaptive")
    parser.add_argument("--rate", type=float, default=168.75)
    parser.add_argument("--step-s", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--embedder", default="static", choices=("static", "transformer"))
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="do not freeze the warmed heap (settle_heap), as athena bench does",
    )
    args = parser.parse_args()
    store = build_store("100k-tenants", args.embedder, args.data, args.out)
    db = working_copy(store, args.out / "work-stalls")
    asks = list(store.asks)
    random.Random("stalls").shuffle(asks)
    collections = Collections()
    summary: dict[str, list[tuple[float, bool, list[float]]]] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open_arms(db, args.embedder, args.arms.split(",")) as arms:
        share_indexes(arms)
        tenants = sorted({a.tenant for a in asks})
        warm_up(arms, tenants, asks[:300], rounds=2, learn_budget_s=60)
        if not args.no_settle:
            settle_heap()
        gc.callbacks.append(collections)
        feed = cycle(asks[300:])
        count = max(1, round(args.rate * args.step_s))
        offsets = [i / args.rate for i in range(count)]
        for rep in range(args.reps):
            for arm in turn_order(arms, rep):
                arm.reset()
                picked = [next(feed) for _ in range(count)]
                seen = arm.recorded()
                collections.seen.clear()
                begun = time.perf_counter()
                phase = run_phase(arm_call(arm, 30.0), picked, offsets, 64)
                fresh = arm.recorded() - seen
                rows = arm.telemetry()[-fresh:] if fresh > 0 else []
                ok = [m for m in phase.ms if m == m]
                full = [(s - begun, e - s) for g, s, e in collections.seen if g == 2 and e]
                young = sum(1 for g, _, _ in collections.seen if g < 2)
                ran: dict[str, int] = {}
                for row in rows:
                    ran[row.strategy] = ran.get(row.strategy, 0) + 1
                p99 = percentile(ok, 99)
                summary.setdefault(arm.name, []).append(
                    (p99, p99 > P99_BOUND_MS, [p * 1000 for _, p in full])
                )
                gcs = ", ".join(f"at {s * 1000:.0f} ms: {p * 1000:.1f} ms" for s, p in full)
                print(
                    f"{arm.name:10s} step {rep}: p50 {percentile(ok, 50):.1f} p99 {p99:.1f} "
                    f"max {max(ok):.1f} ms, {phase.qps:.1f}/s; full collections [{gcs}], "
                    f"{young} young; ran {ran}",
                    flush=True,
                )
        gc.callbacks.remove(collections)
    settled = "not settled" if args.no_settle else "heap settled"
    print(
        f"\n100k-tenants, {args.embedder}, {args.rate}/s, {args.step_s} s steps, {settled},"
        f" {started}\n"
    )
    print("| arm | steps | p99 > 100 ms | steps with a full collection | p99 median | pauses |")
    print("|---|---|---|---|---|---|")
    for name, steps in summary.items():
        pauses = [p for _, _, ps in steps for p in ps]
        spread = f"{min(pauses):.0f}-{max(pauses):.0f} ms" if pauses else "-"
        print(
            f"| {name} | {len(steps)} | {sum(1 for _, bad, _ in steps if bad)} | "
            f"{sum(1 for _, _, ps in steps if ps)} | "
            f"{statistics.median(p for p, _, _ in steps):.1f} ms | {spread} |"
        )


if __name__ == "__main__":
    main()
