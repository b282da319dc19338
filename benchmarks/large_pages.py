"""Recalls with the interpreter's heap on 4 KiB pages and on huge pages, in alternating processes.

``python benchmarks/large_pages.py [--stores locomo,100k-one-tenant] [--rounds 4]
[--turns 120] [--gap-ms 50] [--embedder static] [--out bench-out]`` builds (or reuses,
under ``--out/stores``) each store for the embedder and makes one working copy of it.
Then, ``--rounds`` times, it starts one process per arm, in an order swapped each round:
``4k`` (the interpreter's own allocator, ``ATHENA_LARGE_PAGES=0``) and ``huge`` (the environment
:func:`athena.large_pages.large_page_env` gives: glibc's allocator with its heap on
transparent huge pages). Each process opens the copy, warms it (60 recalls), then takes
``--turns`` turns; each turn runs these in a shuffled order, each recall a question not
asked before in the process:

- ``after a write``: remember a turn, wait ``--gap-ms`` (an agent's model call), recall;
- ``after a pause``: wait ``--gap-ms``, recall;
- ``back to back``: recall one question, then at once the timed one;
- ``hit after a pause``: recall a question, wait ``--gap-ms``, recall it again (a cache hit).

Every step rests 20 ms after its timed call. A process prints its p50s (and the remember's)
and the huge pages its heap held; this prints each arm's median over rounds of those p50s,
their range, and the ratio of the medians (huge over 4k).
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

from recall_after_write import FORGOTTEN, made_up

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.large_pages import heap_env
from athena.memory import Memory

STEPS = ("after a write", "after a pause", "back to back", "hit after a pause")
REST_S = 0.02
WARM = 60


def child(
    db: Path, store_name: str, embedder: str, turns: int, gap: float, seed: int, tag: str
) -> None:
    """One arm's process: the four steps, turn by turn; prints one JSON line."""
    store = build_store(store_name, embedder, resolve_data(None), Path(os.environ["LP_OUT"]))
    asks = list(store.asks)
    random.Random(3).shuffle(asks)
    fresh = iter(asks[WARM:] * 2)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    remembers: list[float] = []
    with Memory(db, embedder=embedder, pool="off") as mem:
        for ask in asks[:WARM]:
            mem.recall(ask.text, tenant=ask.tenant)
        for turn in range(turns):
            for step in rng.sample(STEPS, len(STEPS)):
                ask = next(fresh)
                if step == "after a write":
                    text = f"{tag} turn {turn}: I met Caroline and {made_up(FORGOTTEN + turn)}"
                    start = time.perf_counter()
                    mem.remember(text, tenant=ask.tenant, layer="episodic")
                    remembers.append(time.perf_counter() - start)
                    time.sleep(gap)
                elif step == "after a pause":
                    time.sleep(gap)
                elif step == "back to back":
                    other = next(fresh)
                    mem.recall(other.text, tenant=other.tenant)
                else:
                    mem.recall(ask.text, tenant=ask.tenant)
                    time.sleep(gap)
                start = time.perf_counter()
                mem.recall(ask.text, tenant=ask.tenant)
                times[step].append(time.perf_counter() - start)
                time.sleep(REST_S)
                mem.catch_up.settle(5.0)
    row = {step: statistics.median(v) * 1000.0 for step, v in times.items()}
    row["remember"] = statistics.median(remembers) * 1000.0
    row["huge_mb"] = _anon_huge_mb()
    print(json.dumps(row))


def _anon_huge_mb() -> float:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def arm_env(arm: str, out: Path) -> dict[str, str]:
    env = heap_env(arm == "huge")
    if env is None:
        raise SystemExit("huge pages are not available here (see athena.large_pages)")
    return {**env, "LP_OUT": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="locomo,100k-one-tenant")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--turns", type=int, default=120)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--embedder", default="static", choices=("static", "transformer"))
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--child", nargs=4, metavar=("DB", "STORE", "SEED", "TAG"))
    args = parser.parse_args()
    if args.child:
        db, name, seed, tag = args.child
        gap = args.gap_ms / 1000.0
        child(Path(db), name, args.embedder, args.turns, gap, int(seed), tag)
        return
    if args.rounds < 1 or args.turns < 1 or args.gap_ms < 0:
        parser.error("--rounds and --turns must be at least 1, --gap-ms at least 0")
    result: dict[str, Any] = {}
    for name in args.stores.split(","):
        store = build_store(name, args.embedder, resolve_data(None), args.out)
        db = working_copy(store, args.out / "large-pages")
        rows: dict[str, list[dict[str, float]]] = {"4k": [], "huge": []}
        for round_ in range(args.rounds):
            arms = ("4k", "huge") if round_ % 2 == 0 else ("huge", "4k")
            for arm in arms:
                tag = f"r{round_}-{arm}"
                command = [sys.executable, __file__, "--turns", str(args.turns)]
                command += ["--gap-ms", str(args.gap_ms), "--embedder", args.embedder]
                command += ["--child", str(db), name]
                command += [str(round_), tag]
                done = subprocess.run(
                    command, env=arm_env(arm, args.out), capture_output=True, text=True
                )
                if done.returncode != 0:
                    raise SystemExit(f"{arm} failed:\n{done.stderr[-2000:]}")
                rows[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(name, tag, rows[arm][-1], file=sys.stderr, flush=True)
        table: dict[str, Any] = {}
        for key in (*STEPS, "remember", "huge_mb"):
            cells = {arm: [row[key] for row in rows[arm]] for arm in rows}
            table[key] = {
                arm: {
                    "median": round(statistics.median(v), 3),
                    "range": [round(min(v), 3), round(max(v), 3)],
                }
                for arm, v in cells.items()
            }
            if key != "huge_mb":
                table[key]["ratio"] = round(
                    statistics.median(cells["huge"]) / statistics.median(cells["4k"]), 3
                )
        result[f"{name}, {args.embedder}"] = table
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
