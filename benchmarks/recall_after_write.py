"""An agent's loop on one tenant: remember a turn, then recall, so every recall follows a write.

``python benchmarks/recall_after_write.py [--store 100k-one-tenant] [--turns 300] [--out DIR]``
builds (or reuses, under ``DIR/stores``) the static-embedder store, works on a copy, builds
the indexes of every tenant it will ask (a recall each), then for each of ``--turns``
questions remembers one new episodic turn in the question's tenant and recalls the question
(the default strategy).
``--names N`` first gives each asked tenant N more distinct entity names (N/2 turns, each
naming two made-up people, embedded and indexed as any turn), for the cost of a tenant
whose history names many people and places: LoCoMo's replicas repeat its 1,150 names.
Each turn names Caroline and one new made-up person. The write moves the tenant's
generations, so the recall cannot be a cache hit, and every index it reads (vectors, BM25
postings, the graph's entity names and memory count) first catches up with the write. It
prints p50, mean and p90 of the recalls and the remembers, then of forgetting those turns
one at a time, each forget followed by its question again (a forget removes the entities
no memory mentions any more, here the turn's new person; until schema 8 the graph layer
then read all of the tenant's names again, now it applies the logged change). That recall
asks a question asked before, so its query embedding is cached, unlike most recalls after
a write (with the static model, tens of µs). Until the recall after a forget was added,
the turns named only Caroline.
To compare two engines, run it from each one's checkout in alternating processes
(``PYTHONPATH=<checkout>/src python benchmarks/recall_after_write.py --out DIR``, a separate
``DIR`` each, with ``DIR/stores`` a link to the same stores), swapping which goes first.
Let the older engine build the stores: it cannot open a store a newer schema has touched
(each run migrates only its own copy).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from athena.bench.runner import resolve_data
from athena.bench.workloads import STORES, build_store, working_copy
from athena.memory import Memory
from athena.records import MemoryInput

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="100k-one-tenant", choices=STORES)
    parser.add_argument("--turns", type=int, default=300, help="remember-recall pairs (>= 1)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--names", type=int, default=0, help="extra entity names per tenant")
    args = parser.parse_args()
    if args.turns < 1 or args.names < 0:
        parser.error("--turns must be at least 1 and --names at least 0")
    if args.names > FORGOTTEN or FORGOTTEN + args.turns > NAMES:
        parser.error(f"--names at most {FORGOTTEN}, --turns at most {NAMES - FORGOTTEN}")
    store = build_store(args.store, "static", DATA, args.out)
    db = working_copy(store, args.out / "recall-after-write")
    asks = list(store.asks)
    random.Random(3).shuffle(asks)
    recalls: list[float] = []
    remembers: list[float] = []
    forgets: list[float] = []
    after_forgets: list[float] = []
    written: list[tuple[int, str]] = []
    with Memory(db, embedder="static", pool="off") as mem:
        timed = asks[30 : 30 + args.turns]
        for tenant in sorted({ask.tenant for ask in timed}):
            add_names(mem, tenant, args.names)
        for ask in asks[:30] + list({ask.tenant: ask for ask in timed}.values()):
            mem.recall(ask.text, tenant=ask.tenant, strategy="sequential")  # indexes built
        for turn, ask in enumerate(timed):
            start = time.perf_counter()
            text = f"turn {turn}: I met Caroline and {made_up(FORGOTTEN + turn)} at the lake"
            written.append((mem.remember(text, tenant=ask.tenant, layer="episodic"), ask.tenant))
            remembers.append((time.perf_counter() - start) * 1000.0)
            start = time.perf_counter()
            mem.recall(ask.text, tenant=ask.tenant)
            recalls.append((time.perf_counter() - start) * 1000.0)
        for (memory_id, tenant), ask in zip(written, timed, strict=True):
            start = time.perf_counter()
            mem.forget(memory_id, tenant=tenant)
            forgets.append((time.perf_counter() - start) * 1000.0)
            start = time.perf_counter()
            mem.recall(ask.text, tenant=ask.tenant)
            after_forgets.append((time.perf_counter() - start) * 1000.0)
    for name, ms in (
        ("recall after a write", recalls),
        ("remember", remembers),
        ("forget", forgets),
        ("recall after forget", after_forgets),
    ):
        ms.sort()
        print(
            f"{name:20s} p50 {statistics.median(ms):.3f} ms  mean {statistics.fmean(ms):.3f}"
            f"  p90 {ms[int(0.9 * len(ms))]:.3f}  ({len(ms)})"
        )


SYLLABLES = "ka lo ve rin ta mo su zer an el dri pho qua nix bel tor".split()
NAMES = 16**5  # distinct made-up names
FORGOTTEN = 900_000  # the made-up people of the timed turns: past any --names


def made_up(index: int) -> str:
    """A distinct capitalised two-word name for ``index`` (16^3 first x 16^2 last parts)."""
    first = "".join(SYLLABLES[(index >> shift) & 15] for shift in (0, 4, 8))
    last = "".join(SYLLABLES[(index >> shift) & 15] for shift in (12, 16))
    return f"{first.capitalize()} {last.capitalize()}"


def add_names(mem: Memory, tenant: str, names: int) -> None:
    """Remember ``names // 2`` turns in ``tenant``, each naming two new people."""
    items = [
        MemoryInput(
            layer="episodic",
            text=f"today I talked with {made_up(2 * i)} and {made_up(2 * i + 1)} about the trip",
            tenant=tenant,
        )
        for i in range(names // 2)
    ]
    for start in range(0, len(items), 1000):
        mem.remember_many(items[start : start + 1000])


if __name__ == "__main__":
    main()
