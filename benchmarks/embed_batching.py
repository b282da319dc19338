"""Concurrent query embeddings, one model call each vs batched: bursts, arms interleaved.

``python benchmarks/embed_batching.py [--bursts 20] [--sizes 10,100] [--max-batch 64,16]
[--lanes 1] [--throughput]``
loads the packaged transformer once and sends bursts of N simultaneous ``embed([question])``
calls (distinct LoCoMo questions, no cache in front) through arms on that one model:
``plain`` (the model's own lock, one call at a time) and one :class:`BatchingEmbedder` per
cap on the texts of one model call (``batched-64``, ``batched-16``) and per number of lanes a
batch is split over (``batched-16x2``: two model calls at once). Arms alternate burst by
burst, the order turning and reversing. Latency runs from the burst's start to each
caller's return; the report gives p50, p99 and the model calls per burst.

``--throughput`` measures a closed loop instead: T threads (each of ``--sizes``) send
single-question calls back to back, 1,200 in all per cell, through ``plain`` and each
batched arm, arms alternating rep by rep (``--reps``, default 3); it reports calls/s and the
process CPU per call, median and range.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from athena.bench.loadgen import closed_loop
from athena.bench.runner import resolve_data
from athena.embedding import BatchingEmbedder, TransformerEmbedder
from athena.embedding.protocol import Embedder

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it


def questions(path: Path) -> list[str]:
    return [qa["question"] for conv in json.loads(path.read_text()) for qa in conv["qa"]]


def burst(embedder: Embedder, texts: list[str], pool: cf.ThreadPoolExecutor) -> list[float]:
    gate = threading.Barrier(len(texts) + 1)

    def call(text: str) -> float:
        gate.wait()
        embedder.embed([text])
        return time.perf_counter()

    futures = [pool.submit(call, text) for text in texts]
    gate.wait()
    start = time.perf_counter()
    return [(f.result() - start) * 1000.0 for f in futures]


def single(embedder: Embedder) -> Callable[[str], object]:
    """A call embedding one text."""
    return lambda text: embedder.embed([text])


def throughput(arms: dict[str, Embedder], texts: list[str], sizes: list[int], reps: int) -> None:
    """The ``--throughput`` report (see the module docstring)."""
    got: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for rep in range(reps):
        for threads in sizes:
            names = list(arms)[rep % len(arms) :] + list(arms)[: rep % len(arms)]
            for name in names:
                sample = texts[(rep * 1200) % len(texts) :][:1200]
                run = closed_loop(single(arms[name]), sample, threads)
                got.setdefault((threads, name), []).append(run)
    print("| threads | arm | calls/s (median, range) | CPU per call |")
    print("|---|---|---|---|")
    for (threads, name), runs in got.items():
        rates = [r[0] for r in runs]
        cpu = statistics.median(r[1] for r in runs)
        print(
            f"| {threads} | {name} | {statistics.median(rates):.0f} "
            f"({min(rates):.0f}-{max(rates):.0f}) | {cpu:.2f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=20, help="bursts per arm and size")
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--max-batch", default="64,16", help="one batched arm per cap on texts per model call"
    )
    parser.add_argument("--lanes", default="1", help="one batched arm per number of lanes")
    parser.add_argument("--throughput", action="store_true", help="closed loop, calls/s")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    model = TransformerEmbedder()
    model.embed(["warm up"])
    batched = {
        f"batched-{cap}" + (f"x{lanes}" if lanes != "1" else ""): BatchingEmbedder(
            model, max_batch=int(cap), lanes=int(lanes), coalesce=True
        )
        for cap in args.max_batch.split(",")
        for lanes in args.lanes.split(",")
    }
    arms: dict[str, Embedder] = {"plain": model, **batched}
    pool_texts = questions(args.data)
    print(f"runtime {model.runtime}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.throughput:
        throughput(arms, pool_texts, [int(n) for n in args.sizes.split(",")], args.reps)
        return
    cursor = 0
    for size in (int(s) for s in args.sizes.split(",")):
        ms: dict[str, list[float]] = {name: [] for name in arms}
        calls_before = {name: arm.calls for name, arm in batched.items()}
        with cf.ThreadPoolExecutor(size) as pool:
            for i in range(args.bursts):
                order = list(arms)[i % len(arms) :] + list(arms)[: i % len(arms)]
                for name in order if i % 2 == 0 else order[::-1]:
                    texts = [pool_texts[(cursor + j) % len(pool_texts)] for j in range(size)]
                    cursor += size
                    ms[name] += burst(arms[name], texts, pool)
        for name, values in ms.items():
            values.sort()
            p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
            if name in batched:
                calls = f"{(batched[name].calls - calls_before[name]) / args.bursts:.1f}"
            else:
                calls = str(size)
            print(
                f"{size:4d} concurrent  {name:11s} p50 {statistics.median(values):8.1f} ms"
                f"  p99 {p99:8.1f} ms  model calls per burst {calls}"
            )


if __name__ == "__main__":
    main()
