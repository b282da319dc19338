"""Cold recalls from many threads, behind the admission gate or not: closed loop, arms
interleaved.

``python benchmarks/admission.py [--store 100k-tenants] [--threads 1,4,16,64] [--recalls 800]
[--reps 3] [--out bench-out]`` builds (or reuses) the benchmark store with the static
embedder under ``--out/stores``, opens two ``Memory`` objects on one working copy, their
indexes shared: ``gated`` (the default engine: one execution slot under the GIL) and
``ungated`` (1,024 slots, so no recall ever waits). For each thread count, each arm runs
``--recalls`` forced-SEQUENTIAL recalls (no result cache) from that many threads in a closed
loop, arms alternating and the first arm rotating rep by rep. It reports recalls/s and the
CPU per recall (process CPU time over recalls), median and range over reps, as Markdown,
and draws ``--out/admission.png``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from athena.bench.workloads import Ask, build_store, working_copy
from athena.execution.adaptive import AdaptiveEngine
from athena.execution.admission import AdmissionGate
from athena.memory import Memory

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"
if not DATA.exists():
    DATA = Path("/work/shared/data/locomo/locomo10.json")
UNGATED = 1024


def engine(slots: int | None) -> Callable[[Any, Any], AdaptiveEngine]:
    def build(pipeline: Any, store: Any) -> AdaptiveEngine:
        gate = AdmissionGate(slots) if slots else None  # None: the engine's default
        return AdaptiveEngine(pipeline, store, admission=gate)

    return build


def closed_loop(mem: Memory, asks: list[Ask], threads: int, recalls: int) -> tuple[float, float]:
    """``recalls`` recalls from ``threads`` threads; (recalls/s, CPU ms per recall)."""
    feed, lock, left = itertools.cycle(asks), threading.Lock(), [recalls]

    def work() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
                ask = next(feed)
            mem.recall(ask.text, tenant=ask.tenant, strategy="sequential")

    workers = [threading.Thread(target=work) for _ in range(threads)]
    cpu, wall = time.process_time(), time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return recalls / wall, cpu / recalls * 1000.0


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
    args = parser.parse_args()
    store = build_store(args.store, "static", args.data, args.out)
    db = working_copy(store, args.out / "work-admission")
    arms = {
        "gated": Memory(db, engine=engine(None), pool="off"),
        "ungated": Memory(db, engine=engine(UNGATED), pool="off"),
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
    print(f"{store.name}, static, {args.recalls} recalls per cell, {args.reps} reps, {started}")
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
    plot(results, args.out / "admission.png")
    print(f"\nplot: {args.out / 'admission.png'}")


if __name__ == "__main__":
    main()
