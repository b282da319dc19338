"""Cold recalls from many threads, behind the admission gate or not: closed loop, arms
interleaved.

``python benchmarks/admission.py [--store 100k-tenants] [--embedder static] [--threads
1,4,16,64] [--recalls 800] [--reps 3] [--out bench-out]`` builds (or reuses) the benchmark
store with ``--embedder`` under ``--out/stores``, opens two ``Memory`` objects on one
working copy (with no query-embedding cache, so every recall embeds its query), their
indexes shared: ``gated`` (the default engine: one execution slot under the GIL) and
``ungated`` (1,024 slots, so no recall ever waits). For each thread count, each arm runs
``--recalls`` forced-SEQUENTIAL recalls (no result cache) from that many threads in a closed
loop, arms alternating and the first arm rotating rep by rep. It reports recalls/s and the
CPU per recall (process CPU time over recalls), median and range over reps, as Markdown,
and draws ``--out/admission.png`` (``admission-<embedder>.png`` for another embedder).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from athena.bench import loadgen
from athena.bench.runner import resolve_data
from athena.bench.workloads import Ask, build_store, working_copy
from athena.embedding import CachingEmbedder, load_embedder
from athena.execution.adaptive import AdaptiveEngine
from athena.execution.admission import AdmissionGate
from athena.memory import Memory

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it
UNGATED = 1024


def engine(slots: int | None) -> Callable[[Any, Any], AdaptiveEngine]:
    def build(pipeline: Any, store: Any) -> AdaptiveEngine:
        gate = AdmissionGate(slots) if slots else None  # None: the engine's default
        return AdaptiveEngine(pipeline, store, admission=gate)

    return build


def uncached(name: str) -> Any:
    """The embedder ``name`` without its query-embedding cache: the warm-up recalls every
    question, and a cached query would skip the model."""
    model = load_embedder(name)
    return model.inner if isinstance(model, CachingEmbedder) else model


def closed_loop(mem: Memory, asks: list[Ask], threads: int, recalls: int) -> tuple[float, float]:
    """``recalls`` recalls from ``threads`` threads; (recalls/s, CPU ms per recall)."""
    feed = list(itertools.islice(itertools.cycle(asks), recalls))
    return loadgen.closed_loop(
        lambda a: mem.recall(a.text, tenant=a.tenant, strategy="sequential"), feed, threads
    )


def plot(results: dict[tuple[str, int], list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for arm in ("gated", "ungated"):
        xs = sorted(n for a, n in results if a == arm)
        ys = [statistics.median(q for q, _ in results[(arm, n)]) for n in xs]
        lo = [min(q for q, _ in results[(arm, n)]) for n in xs]
        hi = [max(q for q, _ in results[(arm, n)]) for n in xs]
        ax.plot(xs, ys, marker="o", label=arm)
        ax.fill_between(xs, lo, hi, alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("threads recalling at once (closed loop)")
    ax.set_ylabel("cold recalls / s")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("One execution slot vs none: cold SEQUENTIAL recalls")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="100k-tenants")
    parser.add_argument("--threads", default="1,4,16,64")
    parser.add_argument("--recalls", type=int, default=800)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--embedder", default="static")
    args = parser.parse_args()
    store = build_store(args.store, args.embedder, args.data, args.out)
    db = working_copy(store, args.out / "work-admission")
    arms = {
        "gated": Memory(db, embedder=uncached(args.embedder), engine=engine(None), pool="off"),
        "ungated": Memory(db, embedder=uncached(args.embedder), engine=engine(UNGATED), pool="off"),
    }
    first = arms["gated"].pipeline.ctx
    arms["ungated"].pipeline.ctx.indexes, arms["ungated"].pipeline.ctx.lexicon = (
        first.indexes,
        first.lexicon,
    )
    asks = list(store.asks)
    for mem in arms.values():  # build every tenant's indexes, off the clock
        for ask in asks:
            mem.recall(ask.text, tenant=ask.tenant, strategy="sequential")
    counts = [int(n) for n in args.threads.split(",")]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    names = list(arms)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for rep in range(args.reps):
        for n in counts:
            order = names[rep % 2 :] + names[: rep % 2]
            for name in order:
                got = closed_loop(arms[name], asks[rep * 97 :], n, args.recalls)
                results.setdefault((name, n), []).append(got)
    slots = {name: mem.execution_stats()["admission"]["slots"] for name, mem in arms.items()}
    for mem in arms.values():
        mem.close()
    cells = f"{args.recalls} recalls per cell, {args.reps} reps"
    print(f"{store.name}, {args.embedder}, {cells}, {started}")
    print("\n| threads | arm | slots | recalls/s (median, range) | CPU per recall |")
    print("|---|---|---|---|---|")
    for n in counts:
        for name in names:
            runs = results[(name, n)]
            q = [r[0] for r in runs]
            cpu = statistics.median(r[1] for r in runs)
            print(
                f"| {n} | {name} | {slots[name]} | {statistics.median(q):.0f} "
                f"({min(q):.0f}-{max(q):.0f}) | {cpu:.2f} ms |"
            )
    name = "admission.png" if args.embedder == "static" else f"admission-{args.embedder}.png"
    plot(results, args.out / name)
    print(f"\nplot: {args.out / name}")


if __name__ == "__main__":
    main()
