"""Cold transformer recalls from many threads, by how the embedder takes concurrent calls:
closed loop, arms interleaved.

``python benchmarks/embed_recall.py [--store 100k-tenants] [--threads 2,4,16] [--recalls 600]
[--reps 3] [--out bench-out]`` builds (or reuses) the benchmark store with the transformer
under ``--out/stores`` and opens three ``Memory`` objects on one working copy, their indexes
shared, each over the same loaded model (the default runtime) with no query-embedding cache:

* ``batched``: :class:`BatchingEmbedder` coalescing concurrent calls into the next model
  call (the default until int8 ran one text per call);
* ``plain``: the model itself, every caller's call at once;
* ``direct``: the default now, ``BatchingEmbedder`` passing each call straight through when
  the model embeds one text per call, at most ``LANES`` model calls at once.

Each arm runs ``--recalls`` forced-SEQUENTIAL recalls (no result cache) per thread count,
arms in a rotating order rep by rep. It reports recalls/s and the process CPU per recall,
median and range over reps.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from athena.bench import loadgen
from athena.bench.runner import resolve_data
from athena.bench.workloads import Ask, build_store, working_copy
from athena.embedding import BatchingEmbedder, TransformerEmbedder
from athena.embedding.protocol import Embedder
from athena.memory import Memory

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it


def cold(mem: Memory) -> Callable[[Ask], object]:
    """One forced-SEQUENTIAL recall of an ask on ``mem`` (no result cache)."""
    return lambda a: mem.recall(a.text, tenant=a.tenant, strategy="sequential")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="100k-tenants")
    parser.add_argument("--threads", default="2,4,16")
    parser.add_argument("--recalls", type=int, default=600)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    store = build_store(args.store, "transformer", args.data, args.out)
    db = working_copy(store, args.out / "work-embed-recall")
    model = TransformerEmbedder()
    model.load()
    embedders: dict[str, Embedder] = {
        "batched": BatchingEmbedder(model, coalesce=True),
        "plain": model,
        "direct": BatchingEmbedder(model),
    }
    arms = {name: Memory(db, embedder=e, pool="off") for name, e in embedders.items()}
    first = arms["batched"].pipeline.ctx
    for mem in list(arms.values())[1:]:
        mem.pipeline.ctx.indexes, mem.pipeline.ctx.lexicon = first.indexes, first.lexicon
    asks = list(store.asks)
    warm = {ask.tenant: ask for ask in asks}.values()
    for mem in arms.values():  # every tenant's indexes built, off the clock
        for ask in warm:
            mem.recall(ask.text, tenant=ask.tenant, strategy="sequential")
    counts = [int(n) for n in args.threads.split(",")]
    names = list(arms)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for rep in range(args.reps):
        for n in counts:
            for name in names[rep % 3 :] + names[: rep % 3]:
                mem = arms[name]
                feed = list(itertools.islice(itertools.cycle(asks[rep * 311 :]), args.recalls))
                got = loadgen.closed_loop(cold(mem), feed, n)
                results.setdefault((n, name), []).append(got)
    for mem in arms.values():
        mem.close()
    print(
        f"{store.name}, {model.name}, {args.recalls} recalls per cell, {args.reps} reps, {started}"
    )
    print("\n| threads | arm | recalls/s (median, range) | CPU per recall |")
    print("|---|---|---|---|")
    for n in counts:
        for name in names:
            runs = results[(n, name)]
            q = [r[0] for r in runs]
            cpu = statistics.median(r[1] for r in runs)
            print(
                f"| {n} | {name} | {statistics.median(q):.0f} ({min(q):.0f}-{max(q):.0f}) "
                f"| {cpu:.2f} ms |"
            )


if __name__ == "__main__":
    main()
