"""What building rows as frozen dataclasses cost a cold recall: the same recalls with the
store's rows built frozen (before) and unfrozen (now), interleaved.

``python benchmarks/row_type.py [--store locomo] [--queries 1000] [--out bench-out]`` builds
(or reuses, under ``--out/stores``) the static store, then asks each question once per arm
in a random order, forced SEQUENTIAL with no query-embedding cache, the arm choosing the
class ``athena.store.sql_reads`` builds rows with. It reports each arm's cold recall p50 and
mean, and the time to read a recall's rows (``store.get``).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time
from pathlib import Path
from typing import Any

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.embedding import CachingEmbedder, load_embedder
from athena.memory import Memory
from athena.store import sql_reads
from athena.store.protocol import MemoryRow

FrozenRow = dataclasses.make_dataclass(
    "FrozenRow",
    [(f.name, f.type) for f in dataclasses.fields(MemoryRow)],
    frozen=True,
    slots=True,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="locomo")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, help="LoCoMo file (default: as athena bench)")
    args = parser.parse_args()
    store = build_store(args.store, "static", resolve_data(args.data), args.out)
    model = load_embedder("static")
    model = model.inner if isinstance(model, CachingEmbedder) else model
    memory = Memory(working_copy(store, args.out / "row-type"), embedder=model, pool="off")
    reads: dict[str, list[float]] = {"frozen": [], "unfrozen": []}
    get = memory.pipeline.ctx.store.get
    arm = ["unfrozen"]

    def timed_get(tenant: str, ids: Any) -> Any:
        start = time.perf_counter()
        try:
            return get(tenant, ids)
        finally:
            reads[arm[0]].append((time.perf_counter() - start) * 1e6)

    memory.pipeline.ctx.store.get = timed_get  # type: ignore[method-assign]
    asks = list(store.asks)
    rng = random.Random(1)
    rng.shuffle(asks)
    for ask in {a.tenant: a for a in asks}.values():  # every tenant's indexes built
        memory.recall(ask.text, tenant=ask.tenant, strategy="sequential")
    times: dict[str, list[float]] = {"frozen": [], "unfrozen": []}
    for ask in asks[: args.queries]:
        order = ["frozen", "unfrozen"]
        rng.shuffle(order)
        for name in order:
            arm[0] = name
            sql_reads.MemoryRow = FrozenRow if name == "frozen" else MemoryRow  # type: ignore[misc]
            start = time.perf_counter()
            memory.recall(ask.text, tenant=ask.tenant, strategy="sequential")
            times[name].append((time.perf_counter() - start) * 1000.0)
    sql_reads.MemoryRow = MemoryRow  # type: ignore[misc]
    memory.close()
    print(f"{store.name}, static, forced SEQUENTIAL, {args.queries} questions per arm")
    print("\n| rows | cold recall p50 ms | mean ms | store.get p50 µs |")
    print("|---|---|---|---|")
    for name in ("frozen", "unfrozen"):
        ms = times[name]
        print(
            f"| {name} | {statistics.median(ms):.3f} | {statistics.fmean(ms):.3f} "
            f"| {statistics.median(reads[name]):.1f} |"
        )


if __name__ == "__main__":
    main()
