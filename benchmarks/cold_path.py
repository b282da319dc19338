"""What two cheaper reads save a cold recall: BM25 scored in one pass of array arithmetic
(it was a dozen NumPy calls per query term), and entity counts that stop at the ubiquity cap
(they walked every mention of a speaker named in hundreds of turns). Interleaved.

``python benchmarks/cold_path.py [--store locomo] [--embedder static] [--queries 1000]
[--out bench-out]`` builds (or reuses, under ``--out/stores``) the store, then asks each
question once per arm in a random order, forced SEQUENTIAL with no query-embedding cache:

* ``before``: both reads as they were (their code is kept below);
* ``lexical``: only the BM25 scoring new;
* ``now``: both new.

It reports each arm's cold recall p50 and mean, and the p50 of the two reads it changes.
"""

from __future__ import annotations

import argparse
import math
import random
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.embedding import CachingEmbedder, load_embedder
from athena.memory import Memory
from athena.retrieval import lexical_index
from athena.retrieval.lexical_index import K1, B, LexicalPostings
from athena.store import sql_reads


def scores_before(self: Any, query: Sequence[str]) -> tuple[Any, Any]:
    """``LexicalPostings._scores`` as it was: weights computed term by term."""
    documents = len(self._position)
    empty = np.zeros(0, np.int64), np.zeros(0, np.float64)
    if documents == 0:
        return empty
    live = np.frombuffer(self._live, np.bool_)
    lengths = np.frombuffer(self._lengths, np.uint32)
    average = self._total_length / documents or 1.0
    positions, weights = [], []
    for term in dict.fromkeys(query):
        held = self._positions.get(term)
        if held is None:
            continue
        p = np.frombuffer(held, np.uint32)
        keep = live[p]
        p = p[keep]
        if not len(p):
            continue
        tf = np.frombuffer(self._tfs[term], np.uint16)[keep].astype(np.float64)
        df = len(p)
        idf = math.log(1.0 + (documents - df + 0.5) / (df + 0.5))
        positions.append(p)
        norm = K1 * (1.0 - B + B * lengths[p] / average)
        weights.append(idf * tf * (K1 + 1.0) / (tf + norm))
    if not positions:
        return empty
    totals = np.bincount(
        np.concatenate(positions), weights=np.concatenate(weights), minlength=len(live)
    )
    hit = np.nonzero(totals > 0.0)[0]
    return np.frombuffer(self._ids, np.int64)[hit].copy(), totals[hit]


def entities_before(
    conn: sqlite3.Connection, tenant: str, norms: Sequence[str], cap: int | None = None
) -> dict[str, tuple[int, int]]:
    """``sql_reads.entities`` as it was: every mention counted (``cap`` ignored)."""
    if not norms:
        return {}
    marks = ",".join("?" * len(norms))
    rows = conn.execute(
        "SELECT e.norm, e.id, (SELECT count(*) FROM mentions WHERE entity_id = e.id)"
        f" FROM entities e WHERE e.tenant = ? AND e.norm IN ({marks})",
        (tenant, *norms),
    ).fetchall()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


ARMS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "before": (scores_before, entities_before),
    "lexical": (LexicalPostings._scores, entities_before),
    "now": (LexicalPostings._scores, sql_reads.entities),
}


def timed(fn: Callable[..., Any], into: Callable[[], list[float]]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            into().append((time.perf_counter() - start) * 1e6)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="locomo")
    parser.add_argument("--embedder", default="static")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--data", type=Path, help="LoCoMo file (default: as athena bench)")
    args = parser.parse_args()
    store = build_store(args.store, args.embedder, resolve_data(args.data), args.out)
    model = load_embedder(args.embedder)
    model = model.inner if isinstance(model, CachingEmbedder) else model
    memory = Memory(working_copy(store, args.out / "cold-path"), embedder=model, pool="off")
    arm = ["now"]
    parts: dict[str, dict[str, list[float]]] = {n: {"bm25": [], "entities": []} for n in ARMS}
    for name, (scores, entities) in list(ARMS.items()):
        ARMS[name] = (
            timed(scores, lambda: parts[arm[0]]["bm25"]),
            timed(entities, lambda: parts[arm[0]]["entities"]),
        )
    asks = list(store.asks)
    rng = random.Random(1)
    rng.shuffle(asks)
    for ask in {a.tenant: a for a in asks}.values():  # every tenant's indexes built
        memory.recall(ask.text, tenant=ask.tenant, strategy="sequential")
    times: dict[str, list[float]] = {name: [] for name in ARMS}
    for ask in asks[: args.queries]:
        order = list(ARMS)
        rng.shuffle(order)
        for name in order:
            arm[0] = name
            LexicalPostings._scores, sql_reads.entities = ARMS[name]  # type: ignore[method-assign]
            start = time.perf_counter()
            memory.recall(ask.text, tenant=ask.tenant, strategy="sequential")
            times[name].append((time.perf_counter() - start) * 1000.0)
    memory.close()
    print(f"{store.name}, {args.embedder}, forced SEQUENTIAL, {args.queries} questions per arm")
    print(f"({lexical_index.__name__}._scores and sql_reads.entities switched per arm)")
    print("\n| arm | cold recall p50 ms | mean ms | BM25 scoring p50 µs | entity lookup p50 µs |")
    print("|---|---|---|---|---|")
    for name in ARMS:
        ms, part = times[name], parts[name]
        print(
            f"| {name} | {statistics.median(ms):.3f} | {statistics.fmean(ms):.3f} "
            f"| {statistics.median(part['bm25']):.1f} "
            f"| {statistics.median(part['entities']) if part['entities'] else 0.0:.1f} |"
        )


if __name__ == "__main__":
    main()
