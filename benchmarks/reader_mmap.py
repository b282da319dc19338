"""Readers that map the database file against readers that do not, interleaved in one process.

``python benchmarks/reader_mmap.py [--stores locomo,100k-one-tenant] [--turns 400]
[--cold 600] [--seed 7] [--out bench-out]`` builds (or reuses, under ``--out/stores``) each
static-embedder store, opens two working copies, one whose read connections map the file
(``PRAGMA mmap_size = 256 MiB``, the setting of every connection until stop 35) and one
whose readers do not (the engine's setting since), warms both, then for each of
``--turns`` questions remembers a new turn in the question's tenant and recalls the
question, in each copy, the copies in a shuffled order each turn (an agent's loop: every
recall follows a write); then asks ``--cold`` further questions once in each copy (no write
between). It prints each arm's p50 for both and the ratio of the unmapped arm's p50 to the
mapped one's. Run it twice with ``--first`` swapped to see the opening order's share.

Why it matters: when another connection commits, a WAL reader drops its page cache at its
next read; a reader that maps the file also unmaps all of it, and every page it touches
afterwards faults in again.
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

import athena.store.connection as connection
from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.memory import Memory

MAPPED = "mapped"
UNMAPPED = "unmapped"


def map_readers_under(folder: str) -> None:
    """Make read connections to files under ``folder`` map the file, as before stop 35."""
    plain = connection.open_connection

    def opened(path: Path | str, *, readonly: bool = False, immutable: bool = False) -> Any:
        conn = plain(path, readonly=readonly, immutable=immutable)
        if readonly and folder in str(path):
            conn.execute(connection.WRITER_MMAP_PRAGMA)
        return conn

    connection.open_connection = opened  # type: ignore[assignment]


def p50(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000.0, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="locomo,100k-one-tenant")
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--cold", type=int, default=600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--first", choices=(MAPPED, UNMAPPED), default=MAPPED)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    if args.turns < 1 or args.cold < 1:
        parser.error("--turns and --cold must be at least 1")
    arms = (MAPPED, UNMAPPED) if args.first == MAPPED else (UNMAPPED, MAPPED)
    work = args.out / "reader-mmap"
    map_readers_under(str(work / MAPPED))
    rng = random.Random(args.seed)
    result: dict[str, Any] = {"first": args.first}
    for name in args.stores.split(","):
        store = build_store(name, "static", resolve_data(None), args.out)
        asks = list(store.asks)
        random.Random(3).shuffle(asks)
        if len(asks) < 30 + args.turns + args.cold:
            parser.error(f"{name} has {len(asks)} questions: lower --turns or --cold")
        timed = asks[30 : 30 + args.turns]
        cold_asks = asks[30 + args.turns : 30 + args.turns + args.cold]
        mems = {
            arm: Memory(working_copy(store, work / arm), embedder="static", pool="off")
            for arm in arms
        }
        try:
            for mem in mems.values():
                for ask in asks[:30] + list({a.tenant: a for a in timed}.values()):
                    mem.recall(ask.text, tenant=ask.tenant, strategy="sequential")
            loop: dict[str, list[float]] = {arm: [] for arm in arms}
            cold: dict[str, list[float]] = {arm: [] for arm in arms}
            for turn, ask in enumerate(timed):
                text = f"turn {turn}: I met Caroline and {made_up(FORGOTTEN + turn)} at the lake"
                for arm in rng.sample(arms, len(arms)):
                    mems[arm].remember(text, tenant=ask.tenant, layer="episodic")
                    start = time.perf_counter()
                    mems[arm].recall(ask.text, tenant=ask.tenant)
                    loop[arm].append(time.perf_counter() - start)
            for ask in cold_asks:
                for arm in rng.sample(arms, len(arms)):
                    start = time.perf_counter()
                    mems[arm].recall(ask.text, tenant=ask.tenant)
                    cold[arm].append(time.perf_counter() - start)
        finally:
            for mem in mems.values():
                mem.close()
        for kind, samples in (("after a write", loop), ("cold, no write", cold)):
            row = {arm: p50(samples[arm]) for arm in arms}
            row["ratio"] = round(row[UNMAPPED] / row[MAPPED], 3)
            result[f"{name}, {kind}"] = row
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
