"""Worker pools on a store with one large tenant: building each worker's vector graphs at
start, or loading their snapshots. Arms interleaved.

``python benchmarks/pool_start.py [--store 100k-one-tenant] [--embedder transformer]
[--pools 4] [--reps 2] [--recalls 12] [--out bench-out]`` builds (or reuses) the benchmark
store under ``--out/stores`` (its graphs' snapshots are made once, with it), and per rep and
arm opens ``--pools`` ``Memory`` objects on one working copy, sharing one loaded embedder,
each with an eager pool of two workers, as ``athena bench`` does for its four pooled arms:

* ``build``: ``index_snapshots=False``: each worker builds its graphs while it starts;
* ``load``: the default: each worker loads them.

It times until every pool has one worker ready and until all have both, then runs
``--recalls`` DISTRIBUTED recalls per pool and counts those that fell back or failed, and the
pools' worker restarts and task timeouts. It also times a fresh process's first recall on
the tenant (``Memory`` opened, pool off, first SEQUENTIAL recall), both ways. Markdown out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.embedding import Embedder, load_embedder
from athena.memory import Memory

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it
READY_WAIT_S = 240.0


def pools_arm(
    db: Path, model: Embedder, snapshots: bool, pools: int, questions: list[tuple[str, str]]
) -> dict[str, Any]:
    """Open ``pools`` eager-pool memories; time readiness, then run distributed recalls."""
    start = time.perf_counter()
    mems = [
        Memory(db, embedder=model, pool="eager", index_snapshots=snapshots) for _ in range(pools)
    ]
    try:
        first = all_ready = None
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            health = [m.execution_stats()["pool"] for m in mems]
            if first is None and all(h.get("available") for h in health):
                first = time.perf_counter() - start
            if all(h.get("ready", 0) >= h.get("min_workers", 2) for h in health):
                all_ready = time.perf_counter() - start
                break
            if all(h.get("ready", 0) >= 2 or _broken(h) for h in health):
                break  # a pool that failed to start never will
            time.sleep(0.1)
        fell_back = failed = 0
        latencies: list[float] = []
        for tenant, text in questions:
            for mem in mems:
                t = time.perf_counter()
                try:
                    got = mem.recall(text, tenant=tenant, strategy="distributed", explain=True)
                except Exception:
                    failed += 1
                    continue
                latencies.append((time.perf_counter() - t) * 1000)
                fell_back += bool(got.explain and got.explain.get("fallback"))
        health = [m.execution_stats()["pool"] for m in mems]
        return {
            "broken": sum(_broken(h) for h in health),
            "errors": sorted({str(h["error"]) for h in health if h.get("error")}),
            "first_ready_s": first,
            "all_ready_s": all_ready,
            "recalls": len(questions) * pools,
            "fell_back": fell_back,
            "failed": failed,
            "recall_ms_p50": statistics.median(latencies) if latencies else None,
            "restarts": sum(int(h.get("restarts", 0)) for h in health),
            "timeouts": sum(int(h.get("timeouts", 0)) for h in health),
        }
    finally:
        for mem in mems:
            mem.close()


def _broken(health: dict[str, Any]) -> bool:
    return health.get("state") == "broken" or bool(health.get("error"))


def first_recall_arm(db: Path, model: Embedder, snapshots: bool, tenant: str, text: str) -> float:
    """Seconds from opening a Memory (no pool) to its first answer on the large tenant."""
    start = time.perf_counter()
    with Memory(db, embedder=model, pool="off", index_snapshots=snapshots) as mem:
        mem.recall(text, tenant=tenant, strategy="sequential")
    return time.perf_counter() - start


def interleaved(reps: int, arms: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """A B A B, the first arm rotating rep by rep."""
    names = list(arms)
    out: dict[str, list[Any]] = {name: [] for name in arms}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            out[name].append(arms[name]())
    return out


def spread(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "never"
    missing = f" ({len(values) - len(got)} never)" if len(got) < len(values) else ""
    return f"{statistics.median(got):.2f} ({min(got):.2f}-{max(got):.2f}){missing}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="100k-one-tenant")
    parser.add_argument("--embedder", default="transformer")
    parser.add_argument("--pools", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--recalls", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    model = load_embedder(args.embedder)
    store = build_store(args.store, args.embedder, DATA, args.out, model=model)
    print(f"store {store.path.name}: {store.memories} memories; graphs saved in {store.graphs_s} s")
    db = working_copy(store, args.out / "work-pool-start")
    asks = [(a.tenant, a.text) for a in store.asks[: args.recalls]]
    results = interleaved(
        args.reps,
        {
            "build": lambda: pools_arm(db, model, False, args.pools, asks),
            "load": lambda: pools_arm(db, model, True, args.pools, asks),
        },
    )
    print(f"\n{args.pools} pools of 2 workers, {args.store}/{args.embedder}, {args.reps} reps")
    print(
        "\n| arm | one worker per pool ready, s | all workers ready, s | recalls | fell back "
        "| failed | distributed p50 ms | restarts | task timeouts | pools broken |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        p50s = [r["recall_ms_p50"] for r in runs]
        print(
            f"| {name} | {spread([r['first_ready_s'] for r in runs])} "
            f"| {spread([r['all_ready_s'] for r in runs])} | {sum(r['recalls'] for r in runs)} "
            f"| {sum(r['fell_back'] for r in runs)} | {sum(r['failed'] for r in runs)} "
            f"| {spread(p50s)} | {sum(r['restarts'] for r in runs)} "
            f"| {sum(r['timeouts'] for r in runs)} | {sum(r['broken'] for r in runs)} |"
        )
    for name, runs in results.items():
        for error in sorted({e for r in runs for e in r["errors"]}):
            print(f"\n{name}: {error}")
    tenant, text = asks[0]
    firsts = interleaved(
        args.reps,
        {
            "build": lambda: first_recall_arm(db, model, False, tenant, text),
            "load": lambda: first_recall_arm(db, model, True, tenant, text),
        },
    )
    print("\n| arm | open + first recall, s |\n|---|---|")
    for name, values in firsts.items():
        print(f"| {name} | {spread(values)} |")


if __name__ == "__main__":
    main()
