"""Concurrent query embeddings, one model call each vs batched: bursts, arms interleaved.

``python benchmarks/embed_batching.py [--bursts 20] [--sizes 10,100]`` loads the packaged
transformer once and sends bursts of N simultaneous ``embed([question])`` calls (distinct
LoCoMo questions, no cache in front) through two arms on that one model: ``plain`` (the
model's own lock, one call at a time, as before) and ``batched`` (:class:`BatchingEmbedder`).
Arms alternate burst by burst (A B A B). Latency runs from the burst's start to each
caller's return; the report gives p50, p99 and the model calls per burst.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import threading
import time
from pathlib import Path

from athena.embedding import BatchingEmbedder, TransformerEmbedder
from athena.embedding.protocol import Embedder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=20, help="bursts per arm and size")
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    model = TransformerEmbedder()
    model.embed(["warm up"])
    batched = BatchingEmbedder(model)
    arms: dict[str, Embedder] = {"plain": model, "batched": batched}
    pool_texts = questions(args.data)
    cursor = 0
    for size in (int(s) for s in args.sizes.split(",")):
        ms: dict[str, list[float]] = {name: [] for name in arms}
        calls_before = batched.calls
        with cf.ThreadPoolExecutor(size) as pool:
            for i in range(args.bursts):
                for name in list(arms)[:: 1 if i % 2 == 0 else -1]:  # A B, then B A
                    texts = [pool_texts[(cursor + j) % len(pool_texts)] for j in range(size)]
                    cursor += size
                    ms[name] += burst(arms[name], texts, pool)
        per_burst = (batched.calls - calls_before) / args.bursts
        for name, values in ms.items():
            values.sort()
            p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
            calls = f"{per_burst:.1f}" if name == "batched" else str(size)
            print(
                f"{size:4d} concurrent  {name:8s} p50 {statistics.median(values):8.1f} ms"
                f"  p99 {p99:8.1f} ms  model calls per burst {calls}"
            )
        ratio = statistics.median(ms["plain"]) / statistics.median(ms["batched"])
        print(f"{size:4d} concurrent  batched is {ratio:.2f}x faster at p50")


if __name__ == "__main__":
    main()
