"""A/B: FTS5's bm25 (corpus-wide statistics) against the tenant-local BM25 index.

``python benchmarks/lexical_ranking.py [--out bench-out/lexical] [--questions 200]``

Arms, interleaved question by question (A B A B) in one process:
- ``fts5``: the engine before the tenant-local index: ``Store.lexical`` (FTS5 bm25, whose
  document count, average length and document frequencies span every tenant);
- ``local``: :mod:`athena.retrieval.lexical_index` (every statistic is the scope's own).

Measures LoCoMo evidence recall (static embedder, sequential path), lexical search time and
whole-recall time on LoCoMo and on the 103k-memory one-tenant store of
benchmarks/lexical_pruning.py, and cross-tenant sensitivity: how often a tenant's top 10
changes when only *another* tenant is written to. Writes lexical.json and lexical.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from athena import Memory
from athena.layers import hybrid
from athena.layers.protocol import LayerContext, SearchRequest
from athena.locomo.data import load_locomo
from athena.locomo.evaluation import evaluate_locomo
from athena.locomo.importer import import_locomo
from athena.records import make_query
from athena.retrieval.lexical import match_expression, query_stems

sys.path.insert(0, str(Path(__file__).parent))
from lexical_pruning import DATA, build

LOCAL = hybrid.lexical_ids
SEQ = "sequential"  # the reference path: no cache between the two recalls compared


def fts5_ids(ctx: LayerContext, layer: str, request: SearchRequest, limit: int) -> list[int]:
    """The lexical step as it was: FTS5 MATCH ranked by bm25 over the whole table."""
    if request.generations.get(layer, 0) == 0:
        return []
    match = match_expression(request.query.text)
    if match is None:
        return []
    found = ctx.store.lexical(request.query.tenant, layer, match, limit, request.where)
    return [memory_id for memory_id, _ in found]


ARMS: dict[str, Callable[..., list[int]]] = {"fts5": fts5_ids, "local": LOCAL}


def use(arm: str) -> None:
    hybrid.lexical_ids = ARMS[arm]  # type: ignore[assignment]


def pct(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else ms * 99
    return {"p50": round(q[49], 3), "p95": round(q[94], 3), "n": len(ms)}


def timings(memory: Memory, asks: list[tuple[str, str]]) -> dict[str, Any]:
    """Per arm: lexical-only search ms (episodic) and whole sequential recall ms, A B A B."""
    lexical: dict[str, list[float]] = {a: [] for a in ARMS}
    recall: dict[str, list[float]] = {a: [] for a in ARMS}
    pipeline = memory.pipeline
    for i, (tenant, question) in enumerate(asks):
        for arm in ARMS if i % 2 == 0 else reversed(list(ARMS)):
            use(arm)
            query = make_query(question, tenant, 10, None, None, None, None, None, None)
            request = pipeline.request(query, memory.store.generations(tenant))
            start = time.perf_counter()
            ARMS[arm](pipeline.ctx, "episodic", request, request.depth)
            lexical[arm].append((time.perf_counter() - start) * 1000.0)
            start = time.perf_counter()
            memory.recall(question, tenant=tenant, k=10, strategy="sequential")
            recall[arm].append((time.perf_counter() - start) * 1000.0)
    out = {arm: {"lexical_ms": pct(lexical[arm]), "recall_ms": pct(recall[arm])} for arm in ARMS}
    ratios = [f / max(loc, 1e-6) for f, loc in zip(lexical["fts5"], lexical["local"], strict=True)]
    out["lexical_speedup_p50"] = round(statistics.median(ratios), 2)
    return out


def sensitivity(memory: Memory, tenants: list[str], asks: list[tuple[str, str]]) -> dict[str, Any]:
    """Share of (tenant, question) top-10s that change after writes to another tenant only."""
    out: dict[str, Any] = {}
    rng = random.Random(1)
    for arm in ARMS:
        use(arm)
        changed = 0
        for tenant, question in asks:
            before = [h.id for h in memory.recall(question, tenant=tenant, strategy=SEQ).hits]
            other = rng.choice([t for t in tenants if t != tenant])
            words = question.split()[:4]
            written = memory.remember(" ".join(words) + " noted", tenant=other, layer="episodic")
            after = [h.id for h in memory.recall(question, tenant=tenant, strategy=SEQ).hits]
            memory.forget(written, tenant=other)
            changed += before != after
        out[arm] = {"changed": changed, "of": len(asks)}
    return out


def locomo(work: Path, questions: int) -> dict[str, Any]:
    db = work / "locomo.db"
    with Memory(db, embedder="static", pool="off") as memory:
        import_locomo(memory, DATA)
        recall = {}
        for arm in ARMS:
            use(arm)
            report = evaluate_locomo(memory, DATA)
            recall[arm] = {f"R@{k}": round(v, 1) for k, v in report.recall_at.items()}
        pool = [(c.sample_id, q.question) for c in load_locomo(DATA) for q in c.questions]
        asks = random.Random(0).sample(pool, min(questions, len(pool)))
        tenants = sorted({t for t, _ in pool})
        return {
            "recall": recall,
            "timing": timings(memory, asks),
            "cross_tenant": sensitivity(memory, tenants, asks[:100]),
        }


def one_tenant(db: Path, questions: int) -> dict[str, Any]:
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        build(db)
    with Memory(db, embedder="static", pool="off") as memory:
        pool = [q.question for c in load_locomo(DATA) for q in c.questions]
        asks = [("one", q) for q in random.Random(0).sample(pool, min(questions, len(pool)))]
        use("local")
        start = time.perf_counter()
        for layer in ("episodic", "semantic"):
            memory.pipeline.ctx.lexicon.search(
                "one", layer, memory.store.generations("one")[layer], query_stems("x"), 1
            )
        build_s = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        memory.recall("warm up", tenant="one", strategy="sequential")
        return {"index_build_s": round(build_s, 2), "peak_rss_mib": round(rss, 1),
                "timing": timings(memory, asks)}  # fmt: skip


def markdown(r: dict[str, Any]) -> str:
    m = r["meta"]
    lines = [f"Measured {m['date']} on {m['machine']}; `{m['command']}`.", "",
             "| arm | R@5 | R@10 | R@25 | R@50 |", "|---|---|---|---|---|"]  # fmt: skip
    for arm, rec in r["locomo"]["recall"].items():
        lines.append(f"| {arm} | " + " | ".join(str(rec[f"R@{k}"]) for k in (5, 10, 25, 50)) + " |")
    lines += [
        "",
        "| store | arm | lexical p50 / p95 ms | recall p50 / p95 ms |",
        "|---|---|---|---|",
    ]
    for store in ("locomo", "one_tenant"):
        t = r[store]["timing"]
        for arm in ARMS:
            lx, rc = t[arm]["lexical_ms"], t[arm]["recall_ms"]
            lines.append(
                f"| {store} | {arm} | {lx['p50']} / {lx['p95']} | {rc['p50']} / {rc['p95']} |"
            )
    one, loc = r["one_tenant"], r["locomo"]
    cross = ", ".join(f"{a} {v['changed']}/{v['of']}" for a, v in loc["cross_tenant"].items())
    lines += [
        "",
        "Lexical speed-up (median of per-question fts5/local ratios): LoCoMo "
        f"{loc['timing']['lexical_speedup_p50']}×, one tenant "
        f"{one['timing']['lexical_speedup_p50']}×. Local index build at 103k: "
        f"{one['index_build_s']} s (peak RSS {one['peak_rss_mib']} MiB).",
        "",
        f"Cross-tenant sensitivity (top 10 changed by a write to another tenant): {cross}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/lexical"))
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument(
        "--one-tenant-db", type=Path, default=Path("bench-out/lexical-one-tenant.db")
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"meta": {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, 2 cores",
        "command": "python benchmarks/lexical_ranking.py " + " ".join(sys.argv[1:]),
    }}  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        result["locomo"] = locomo(Path(work), args.questions)
    result["one_tenant"] = one_tenant(args.one_tenant_db, args.questions)
    (args.out / "lexical.json").write_text(json.dumps(result, indent=2))
    (args.out / "lexical.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
