"""The static model's query embedding: model2vec's ``encode`` against the direct path, and
what that does to a cold recall; arms interleaved query by query.

``python benchmarks/static_embed.py [--store locomo] [--queries 1986] [--out DIR]`` builds
(or reuses, under ``DIR/stores``) the static-embedder store, then:

* embeds every LoCoMo question alone through both paths, in a random order per question
  (``StaticEmbedder`` with its direct path, and the same model through ``encode``);
* asks each question twice more as a cold forced-SEQUENTIAL recall, once per path, on two
  ``Memory`` objects over one working copy (their indexes shared, no query-embedding cache,
  no result cache in the way).

It prints the median and mean µs of an embed, and the p50 and mean ms of a recall, per path.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.embedding import StaticEmbedder
from athena.memory import Memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="locomo")
    parser.add_argument("--queries", type=int, default=1986)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, help="LoCoMo file (default: as athena bench)")
    args = parser.parse_args()
    store = build_store(args.store, "static", resolve_data(args.data), args.out)
    db = working_copy(store, args.out / "work-static-embed")
    direct, encode = StaticEmbedder(), StaticEmbedder()
    encode._direct = False  # the model2vec path, as before
    paths = {"encode": encode, "direct": direct}
    arms = {name: Memory(db, embedder=e, pool="off") for name, e in paths.items()}
    shared = arms["encode"].pipeline.ctx
    arms["direct"].pipeline.ctx.indexes = shared.indexes
    arms["direct"].pipeline.ctx.lexicon = shared.lexicon
    asks = list(store.asks)[: args.queries]
    rng = random.Random(7)
    for mem in arms.values():  # every tenant's indexes built, off the clock
        for ask in {a.tenant: a for a in asks}.values():
            mem.recall(ask.text, tenant=ask.tenant, strategy="sequential")
    embeds: dict[str, list[float]] = {name: [] for name in paths}
    recalls: dict[str, list[float]] = {name: [] for name in paths}
    for ask in asks:
        order = list(paths)
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            paths[name].embed([ask.text])
            embeds[name].append((time.perf_counter() - start) * 1e6)
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            arms[name].recall(ask.text, tenant=ask.tenant, strategy="sequential")
            recalls[name].append((time.perf_counter() - start) * 1000.0)
    for mem in arms.values():
        mem.close()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{store.name}, {len(asks)} questions, {started}\n")
    print("| path | embed µs (median) | embed µs (mean) | recall ms (p50) | recall ms (mean) |")
    print("|---|---|---|---|---|")
    for name in paths:
        e, r = embeds[name], recalls[name]
        print(
            f"| {name} | {statistics.median(e):.1f} | {statistics.fmean(e):.1f} "
            f"| {statistics.median(r):.3f} | {statistics.fmean(r):.3f} |"
        )


if __name__ == "__main__":
    main()
