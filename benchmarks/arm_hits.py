"""One question asked again and again by the bench's arms in turn: each arm's hit p50.

``python benchmarks/arm_hits.py [--arms baseline,sequential,...,adaptive] [--pools full]
[--adaptive-as hybrid] [--no-skip] [--hits 600] [--embedder static] [--out bench-out]``
builds (or reuses, under ``--out/stores``) the LoCoMo store, opens the arms in the order given (as
``athena bench`` does, each its own ``Memory`` with its own pool), warms them with 300
questions, then has every arm ask one question ``--hits`` times, the arms taking turns in a
balanced order (``turn_order``). ``--adaptive-as`` asks the adaptive arm with another
strategy (the same arm, its own state); ``--no-skip`` turns the dependency graph's layer
skipping off in every arm (no narrowed queries). It prints each arm's p50 and how many
plans were made again during the hits.
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path
from typing import Any

import athena.execution.plans as plans
from athena.bench.arms import ARMS, open_arms
from athena.bench.runner import resolve_data
from athena.bench.turns import turn_order
from athena.bench.workloads import build_store, working_copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--pools", default="full", help="full, distributed or off")
    parser.add_argument("--adaptive-as", default="", help="a strategy for the adaptive arm")
    parser.add_argument("--no-skip", action="store_true", help="no layer skipping")
    parser.add_argument("--hits", type=int, default=600)
    parser.add_argument("--embedder", default="static", help="static or transformer")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, help="LoCoMo file (default: as athena bench)")
    args = parser.parse_args()
    store = build_store("locomo", args.embedder, resolve_data(args.data), args.out)
    path = working_copy(store, args.out / "arm-hits")
    asks = list(store.asks)
    random.Random(3).shuffle(asks)
    with open_arms(path, args.embedder, args.arms.split(","), pools=args.pools) as arms:
        for arm in arms:
            graph = getattr(arm.memory.engine, "graph", None)
            if args.no_skip and graph is not None:
                graph.skip_layers = False
        for ask in asks[:300]:
            for arm in arms:
                arm.recall(ask)
        hot = asks[400]
        for arm in arms:
            if arm.name == "adaptive" and args.adaptive_as:
                arm.strategy = args.adaptive_as
            arm.reset()
            arm.recall(hot)
        made = [0]
        classify = plans.classify

        def counted(text: str) -> str:
            made[0] += 1
            return classify(text)

        plans.classify = counted  # type: ignore[assignment]
        times: dict[str, list[float]] = {arm.name: [] for arm in arms}
        for index in range(args.hits):
            for arm in turn_order(arms, index):
                times[arm.name].append(arm.recall(hot))
        plans.classify = classify  # type: ignore[assignment]
        narrowed = []
        for arm in (a for a in arms if a.name == "adaptive"):
            engine: Any = arm.memory.engine
            request = arm.memory._requests.make(hot.text, hot.tenant, 10, None)
            narrowed.append(engine.plans.plan(request, "adaptive")[2].layers)
    print(f"the adaptive arm runs the question over: {narrowed}")
    print(
        f"locomo, {args.embedder}, one question {args.hits} times per arm; "
        f"plans made again: {made[0]}"
    )
    for name, ms in times.items():
        print(f"{name:12s} p50 {statistics.median(ms) * 1000:9.2f} µs")


if __name__ == "__main__":
    main()
