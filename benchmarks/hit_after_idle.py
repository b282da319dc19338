"""What a cache hit costs after the process did something else for a while, and why.

``python benchmarks/hit_after_idle.py [--samples 200] [--gaps 0,0.5,2,10] [--out DIR]``
times, after a gap of ``--gaps`` milliseconds (a busy Python loop, as other work would be),
one of: a cached recall (one ``Memory``, LoCoMo static store), ``PRAGMA data_version`` on
the store's connection, a tiny Python function, and a ``getppid`` system call. The gaps
alternate sample by sample, so noise falls on all of them alike.

On this project's 2-core VM everything small is many times slower after a gap than in a
tight loop (the caches and TLB the gap evicted must be refilled, and a system call pays
for it most): this is why a hit inside the harness, where each follows another arm's
recall, costs several times what it does in a loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.memory import Memory

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it


def spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


def tiny() -> int:
    total = 0
    for i in range(20):
        total += i
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--gaps", default="0,0.5,2,10", help="milliseconds of other work")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    gaps = [float(g) for g in args.gaps.split(",")]
    store = build_store("locomo", "static", DATA, args.out)
    db = working_copy(store, args.out / "work-hit-after-idle")
    ask = store.asks[5]
    with Memory(db, embedder="static", pool="off") as mem:
        mem.recall(ask.text, tenant=ask.tenant)
        conn = mem.store._readers.get()  # type: ignore[attr-defined]
        probes = {
            "cached recall": lambda: mem.recall(ask.text, tenant=ask.tenant),
            "PRAGMA data_version": lambda: conn.execute("PRAGMA data_version").fetchone(),
            "20-step Python loop": tiny,
            "getppid system call": os.getppid,
        }
        took: dict[tuple[str, float], list[float]] = {}
        for i in range(args.samples):
            for gap in gaps if i % 2 == 0 else gaps[::-1]:
                for name, probe in probes.items():
                    spin(gap)
                    start = time.perf_counter()
                    probe()
                    took.setdefault((name, gap), []).append(time.perf_counter() - start)
    print("µs at p50 after a gap of (ms):  " + "  ".join(f"{g:>7g}" for g in gaps))
    for name in probes:
        cells = "  ".join(f"{statistics.median(took[(name, g)]) * 1e6:7.2f}" for g in gaps)
        print(f"{name:30s} {cells}")


if __name__ == "__main__":
    main()
