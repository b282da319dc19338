"""The int8 transformer's one-text tokenizer call, ``encode`` against ``encode_batch``, under
open-loop cold recalls: arms alternating step by step in one process.

``python benchmarks/tokenizer_gil.py [--store 100k-tenants] [--rates 500,540] [--step 2]
[--reps 8] [--strategy sequential] [--out bench-out]`` builds (or reuses) the benchmark store
under ``--out/stores`` with the transformer, opens one ``AsyncMemory`` on a working copy (no
query-embedding cache), warms every tenant, settles the heap as ``athena bench`` does, then
for each rate, rep by rep in a rotating order, empties the result cache and sends ``rate x
step`` distinct questions at that fixed rate (latency from the intended send time). The arm
``encode`` is the engine as it is; ``encode_batch`` swaps the model's tokenizer for one
whose ``encode`` goes through ``encode_batch([text])`` (which releases the GIL while it
tokenizes, as the engine's one-text path did before stop 41). Per (rate, arm): recalls/s
done, p50 and p99 (median and range over reps), the steps whose p99 stayed under 100 ms
(the ramp's pass mark) and the process CPU a recall.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from recall_threads import Cell, cold_step, print_cells  # the same steps and table

from athena.bench import loadgen
from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.embedding import load_embedder
from athena.embedding.cache import CachingEmbedder
from athena.embedding.onnx_runtime import OnnxMiniLM
from athena.heap import release_heap, settle_heap
from athena.memory import AsyncMemory


class BatchCall:
    """A tokenizer whose one-text ``encode`` is a one-text ``encode_batch``."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def encode(self, text: str) -> Any:
        return self._tokenizer.encode_batch([text])[0]


def _model(embedder: Any) -> OnnxMiniLM:
    """The ONNX Runtime model under the embedder's wrappers."""
    seen = embedder
    for _ in range(8):
        model = getattr(seen, "_model", None)
        if isinstance(model, OnnxMiniLM):
            return model
        seen = getattr(seen, "inner", None)
    raise SystemExit("not the int8 transformer on ONNX Runtime")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="100k-tenants")
    parser.add_argument("--rates", default="500,540")
    parser.add_argument("--step", type=float, default=2.0, help="seconds per step")
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--strategy", default="sequential")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, help="LoCoMo file (default: as athena bench)")
    args = parser.parse_args()
    store = build_store(args.store, "transformer", resolve_data(args.data), args.out)
    db = working_copy(store, args.out / "work-tokenizer-gil")
    embedder = load_embedder("transformer")
    embedder = embedder.inner if isinstance(embedder, CachingEmbedder) else embedder
    mem = AsyncMemory(db, embedder=embedder, pool="off")
    asks = list(store.asks)
    for ask in {a.tenant: a for a in asks}.values():  # indexes built, the model loaded
        mem.core.recall(ask.text, tenant=ask.tenant, strategy=args.strategy)
    model = _model(mem.core.embedder)
    tokenizers = {"encode": model._tokenizer, "encode_batch": BatchCall(model._tokenizer)}
    arms = list(tokenizers)
    settle_heap()
    feed = loadgen.cycle(asks[len(asks) // 3 :])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cells: dict[tuple[float, str], list[Cell]] = {}
    try:
        for rep in range(args.reps):
            for rate in [float(r) for r in args.rates.split(",")]:
                for arm in arms[rep % len(arms) :] + arms[: rep % len(arms)]:
                    model._tokenizer = tokenizers[arm]
                    cell = cold_step(mem, args.strategy, feed, rate, args.step)
                    cells.setdefault((rate, arm), []).append(cell)
    finally:
        model._tokenizer = tokenizers["encode"]
        release_heap()
        asyncio.run(mem.close())
    print(
        f"{store.name}, {mem.core.embedder.name}, {args.strategy}, {args.step:g} s steps, {started}"
    )
    print_cells(cells, "tokenizer call")


if __name__ == "__main__":
    main()
