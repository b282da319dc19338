"""A recall after a write with the catch-up thread and without, interleaved in one process.

``python benchmarks/catch_up.py [--stores locomo,100k-one-tenant] [--turns 300]
[--gap-ms 0,50] [--seed 7] [--first on] [--out bench-out]`` builds (or reuses, under
``--out/stores``) each static-embedder store and opens two working copies: in one the
:class:`~athena.catch_up.CatchUp` thread follows each write (the engine's default since
stop 35), in the other it is closed at once, so the next recall catches its indexes up
itself. Both are warmed; then for each of ``--turns`` questions, in each copy (in a
shuffled order each turn), it remembers a new turn in the question's tenant, waits
``--gap-ms`` (an agent's model call between its write and its next recall; 0 is a recall
right after the write), and recalls the question, timing the remember and the recall.
Several gaps (the default ``0,50``) take turns. It prints p50, p90 and mean per arm for
each gap, and the ratio of the p50s (on over off).

``--writer other`` writes each turn through a second ``Memory`` on the same copy (another
process, as SQLite and the engine see it: no listener of the recalling one hears of the
write); the recalling ``Memory`` of the ``on`` arm then watches the file for other
writers' commits (:meth:`~athena.catch_up.CatchUp.watch`, as the servers do), the ``off``
arm's does not; after its rest, the ``on`` arm waits until its thread has found the write
(within a second), so none of its work spills into the next turn.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from recall_after_write import FORGOTTEN, made_up

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.memory import Memory

ON, OFF = "on", "off"
REST_S = 0.02  # after each recall, longer than the writer's quiet spell


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in samples)
    return {
        "p50": round(statistics.median(ms), 4),
        "p90": round(ms[int(0.9 * len(ms))], 4),
        "mean": round(statistics.fmean(ms), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="locomo,100k-one-tenant")
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--gap-ms", default="0,50", help="waits between write and recall")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--first", choices=(ON, OFF), default=ON)
    parser.add_argument("--writer", choices=("self", "other"), default="self")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    gaps = [float(g) / 1000.0 for g in args.gap_ms.split(",")]
    if args.turns < 1 or any(g < 0 for g in gaps):
        parser.error("--turns must be at least 1 and every gap at least 0")
    arms = (ON, OFF) if args.first == ON else (OFF, ON)
    rng = random.Random(args.seed)
    result: dict[str, Any] = {"first": args.first}
    for name in args.stores.split(","):
        store = build_store(name, "static", resolve_data(None), args.out)
        asks = list(store.asks)
        random.Random(3).shuffle(asks)
        timed = asks[30 : 30 + args.turns]
        paths = {arm: working_copy(store, args.out / "catch-up" / arm) for arm in arms}
        mems = {arm: Memory(paths[arm], embedder="static", pool="off") for arm in arms}
        writers = dict(mems)
        try:
            mems[OFF].catch_up.close()  # its commits now go unfollowed
            if args.writer == "other":
                writers = {arm: Memory(paths[arm], embedder="static", pool="off") for arm in arms}
                mems[ON].catch_up.watch()
            for mem in mems.values():
                for ask in asks[:30] + list({a.tenant: a for a in timed}.values()):
                    mem.recall(ask.text, tenant=ask.tenant, strategy="sequential")
            recalls: dict[tuple[float, str], list[float]] = {}
            remembers: dict[tuple[float, str], list[float]] = {}
            for turn, ask in enumerate(timed):
                gap = gaps[turn % len(gaps)]
                text = f"turn {turn}: I met Caroline and {made_up(FORGOTTEN + turn)} at the lake"
                for arm in rng.sample(arms, len(arms)):
                    mem = mems[arm]
                    found = mem.catch_up.watched
                    start = time.perf_counter()
                    writers[arm].remember(text, tenant=ask.tenant, layer="episodic")
                    remembers.setdefault((gap, arm), []).append(time.perf_counter() - start)
                    if gap:
                        time.sleep(gap)
                    start = time.perf_counter()
                    mem.recall(ask.text, tenant=ask.tenant)
                    recalls.setdefault((gap, arm), []).append(time.perf_counter() - start)
                    # Both arms rest alike before the next write (a recall after a rest
                    # is slower), and nothing is left over for the next turn.
                    time.sleep(REST_S)
                    if args.writer == "other" and arm == ON:  # settle() cannot see it
                        deadline = time.monotonic() + 1.0
                        while mem.catch_up.watched == found and time.monotonic() < deadline:
                            time.sleep(0.002)
                    mem.catch_up.settle(5.0)
        finally:
            for mem in {*mems.values(), *writers.values()}:
                mem.close()
        for gap in gaps:
            row: dict[str, Any] = {arm: summary(recalls[(gap, arm)]) for arm in arms}
            row["ratio"] = round(row[ON]["p50"] / row[OFF]["p50"], 3)
            row["remember"] = {arm: summary(remembers[(gap, arm)])["p50"] for arm in arms}
            by = "another process's write" if args.writer == "other" else "a write"
            result[f"{name}, recall {gap * 1000:g} ms after {by}"] = row
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
