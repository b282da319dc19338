"""Recalls across many tenants under an index budget, in alternating processes.

``python benchmarks/index_budget.py [--store 100k-tenants] [--embedder static]
[--budgets all,1/2,1/4] [--rounds 2] [--recalls 1500] [--zipf 1.1] [--out bench-out]``
builds (or reuses, under ``--out/stores``) the store and one working copy of it. Then,
``--rounds`` times, it starts one process per budget, in an order rotated each round; each
opens the copy with ``ATHENA_INDEX_MEMORIES`` set to that share of the store's memories
(``all``: no tenant is ever dropped), pool off, recalls once in every tenant (untimed:
every arm starts with all of them built once), then ``--recalls`` times: the tenant drawn
from a Zipf law over the tenants (rank order shuffled by a fixed seed, the same stream in
every process), the question the tenant's next one (its conversation's, in a fixed shuffled
order, again from the start once all were asked), the result cache emptied before each
(untimed), so every recall searches the tenant's indexes. A process reports its timed
recalls' p50/p95/p99/mean, how many built an index (the process's indexes moved by more
than a build's worth of rows), its resident and peak memory (``VmRSS``, ``VmHWM``) and the
residency's counts. This prints each budget's medians over rounds and their ranges, and
writes them to ``--out/index-budget-<store>-<embedder>.json`` with a plot beside it
(``.png``: resident memory against mean and p95 latency, one point per budget and round).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.execution.pool_warmth import BUILD_ROWS
from athena.memory import Memory

KEYS = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "built", "rss_mb", "peak_mb", "held", "evicted")


def stream(asks: list[Any], count: int, s: float, seed: int = 5) -> list[Any]:
    """``count`` asks: tenants by a Zipf law of exponent ``s``, each tenant's questions in turn."""
    by: dict[str, list[Any]] = {}
    for ask in asks:
        by.setdefault(ask.tenant, []).append(ask)
    tenants = sorted(by)
    rng = random.Random(seed)
    rng.shuffle(tenants)
    for questions in by.values():
        rng.shuffle(questions)
    weights = [1.0 / (rank + 1) ** s for rank in range(len(tenants))]
    drawn = rng.choices(tenants, weights, k=count)
    asked: dict[str, int] = {}
    out = []
    for tenant in drawn:
        n = asked.get(tenant, 0)
        asked[tenant] = n + 1
        out.append(by[tenant][n % len(by[tenant])])
    return out


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def child(db: Path, store_name: str, embedder: str, recalls: int, s: float) -> None:
    """One budget's process; prints one JSON line."""
    store = build_store(store_name, embedder, resolve_data(None), Path(os.environ["IB_OUT"]))
    asks = stream(list(store.asks), recalls, s)
    times, built = [], 0
    with Memory(db, embedder=embedder, pool="off") as mem:
        ctx = mem.pipeline.ctx
        # Each tenant's first question, the tenants in the order of their last one, latest
        # first: the budget arms start the stream holding the tenants it leaves soonest.
        first = {ask.tenant: ask for ask in reversed(asks)}
        for ask in first.values():
            mem.recall(ask.text, tenant=ask.tenant)
        for ask in asks:
            mem.engine.cache.clear()
            loaded = ctx.loaded()
            start = time.perf_counter()
            mem.recall(ask.text, tenant=ask.tenant)
            times.append((time.perf_counter() - start) * 1000.0)
            built += ctx.loaded() - loaded > BUILD_ROWS
        residency = ctx.residency.stats()
        cuts = statistics.quantiles(times, n=100)
        row = {
            "p50_ms": statistics.median(times),
            "p95_ms": cuts[94],
            "p99_ms": cuts[98],
            "mean_ms": statistics.fmean(times),
            "built": built,
            "rss_mb": _status_mb("VmRSS"),
            "peak_mb": _status_mb("VmHWM"),
            "held": residency["memories"],
            "evicted": residency["evicted"],
        }
    print(json.dumps(row))


def budget_of(name: str, memories: int) -> int:
    """``all`` -> more than the store holds; ``1/4`` -> a quarter of its memories."""
    if name == "all":
        return memories * 10
    top, _, bottom = name.partition("/")
    return max(memories * int(top) // int(bottom or 1), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="100k-tenants")
    parser.add_argument("--embedder", default="static", choices=("static", "transformer"))
    parser.add_argument("--budgets", default="all,1/2,1/4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--recalls", type=int, default=1500)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--child", metavar="DB")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.store, args.embedder, args.recalls, args.zipf)
        return
    if args.rounds < 1 or args.recalls < 100 or args.zipf <= 0:
        parser.error("--rounds at least 1, --recalls at least 100, --zipf above 0")
    store = build_store(args.store, args.embedder, resolve_data(None), args.out)
    db = working_copy(store, args.out / "index-budget")
    budgets = args.budgets.split(",")
    memories = store.memories
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in budgets}
    for round_ in range(args.rounds):
        shift = round_ % len(budgets)
        for name in budgets[shift:] + budgets[:shift]:
            env = {**os.environ, "IB_OUT": str(args.out)}
            env["ATHENA_INDEX_MEMORIES"] = str(budget_of(name, memories))
            command = [sys.executable, __file__, "--store", args.store]
            command += ["--embedder", args.embedder, "--recalls", str(args.recalls)]
            command += ["--zipf", str(args.zipf), "--child", str(db)]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
            rows[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(round_, name, rows[name][-1], file=sys.stderr, flush=True)
    table = {
        name: {
            "budget": budget_of(name, memories),
            **{
                key: {
                    "median": round(statistics.median(r[key] for r in got), 3),
                    "range": [
                        round(min(r[key] for r in got), 3),
                        round(max(r[key] for r in got), 3),
                    ],
                }
                for key in KEYS
            },
        }
        for name, got in rows.items()
    }
    print(f"{args.store}, {args.embedder}, {memories} memories")
    for name, cells in table.items():
        print(name, json.dumps(cells))
    stem = args.out / f"index-budget-{args.store}-{args.embedder}"
    meta = {"store": args.store, "embedder": args.embedder, "memories": memories}
    meta.update(zipf=args.zipf, recalls=args.recalls, rounds=args.rounds)
    document = {**meta, "table": table, "runs": rows}
    stem.with_suffix(".json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    plot(rows, f"{args.store}, {args.embedder}", stem.with_suffix(".png"))


def plot(rows: dict[str, list[dict[str, float]]], title: str, path: Path) -> None:
    """Resident MB against mean and p95 ms, one point per budget and round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for name, got in rows.items():
        for ax, key in zip(axes, ("mean_ms", "p95_ms"), strict=True):
            ax.scatter([r["rss_mb"] for r in got], [r[key] for r in got], label=f"budget {name}")
    for ax, what in zip(axes, ("mean", "p95"), strict=True):
        ax.set_xlabel("resident memory at the end (MB)")
        ax.set_ylabel(f"recall {what} (ms)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Index budget: memory against recall latency ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
