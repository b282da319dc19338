"""Engine benchmark: import throughput, LoCoMo evidence recall, recall latency at LoCoMo and
100k scale, peak memory, and the exact-vs-HNSW crossover of the vector index.

    python benchmarks/engine.py [--quick] [--out DIR]

Each (embedder, phase) runs in its own subprocess so ru_maxrss is that phase's own peak.
Writes DIR/engine.json, DIR/engine.md and PNG plots. LoCoMo (CC BY-NC 4.0) is read in place.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path("/work/shared/data/locomo/locomo10.json")
EMBEDDERS = ("static", "transformer")
BUILD_BUDGET_S = 600.0  # a 100k build that runs longer than this is abandoned
GOAL_P50_MS = 10.0
NOISE = 0.01  # std of the per-dimension noise on replicated vectors (HNSW sweep)
Result = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    quick: bool
    import_runs: dict[str, int]
    scale_target: int
    scale_queries: int
    hnsw_sizes: tuple[int, ...]
    hnsw_queries: int


def config(quick: bool) -> Config:
    if quick:
        return Config(True, {"static": 3, "transformer": 1}, 10_000, 100, (1_000, 2_000, 5_000, 10_000), 50)
    return Config(False, {"static": 3, "transformer": 1}, 100_000, 500,
                  (2_000, 5_000, 10_000, 20_000, 50_000, 100_000), 200)  # fmt: skip


@contextmanager
def bar(desc: str, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr; yields a function that advances it by one."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(desc, total=total)
        yield lambda: progress.advance(task)


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # KiB on Linux


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"queries": len(ms), "p50": round(float(np.percentile(ms, 50)), 3),
            "p95": round(float(np.percentile(ms, 95)), 3), "mean": round(statistics.fmean(ms), 3)}  # fmt: skip


def open_memory(path: Path, embedder: str) -> Any:
    from athena.memory import Memory

    memory = Memory(path, embedder=embedder)
    memory.embedder.embed(["load the model before any timing"])  # the transformer loads lazily
    clear_cache(memory)
    return memory


def clear_cache(memory: Any) -> None:
    """Empty the query-embedding cache, so no recall is served a cached vector."""
    if hasattr(memory.embedder, "clear"):
        memory.embedder.clear()


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def locomo_subset(path: Path, conversations: int | None, work: Path) -> Path:
    """``path`` itself, or a temporary file holding its first ``conversations``."""
    if conversations is None:
        return path
    raw = json.loads(path.read_text(encoding="utf-8"))
    subset = work / f"locomo-first{conversations}.json"
    subset.write_text(json.dumps(raw[:conversations]), encoding="utf-8")
    return subset


def questions(path: Path) -> list[tuple[str, str]]:
    from athena.locomo.data import load_locomo

    return [(c.sample_id, q.question) for c in load_locomo(path) for q in c.questions]


def timed_recalls(memory: Any, asks: list[tuple[str, str]], desc: str) -> list[float]:
    """Each (tenant, question) as one recall (k=10, default layers), timed alone, no cache."""
    out: list[float] = []
    with bar(desc, len(asks)) as advance:
        for tenant, text in asks:
            clear_cache(memory)
            start = time.perf_counter()
            memory.recall(text, tenant=tenant, k=10)
            out.append((time.perf_counter() - start) * 1000.0)
            advance()
    return out


def warm_up(memory: Any, tenants: list[str]) -> Result:
    """One recall per tenant, so every index is built before anything is timed."""
    times = []
    for tenant in tenants:
        start = time.perf_counter()
        memory.recall("warm-up query", tenant=tenant, k=10)
        times.append(time.perf_counter() - start)
    return {"tenants": len(tenants), "total_s": round(sum(times), 3), "max_s": round(max(times), 3)}


def index_summary(memory: Any) -> Result:
    indexes = memory.pipeline.ctx.indexes._indexes  # benchmark-only peek at the live indexes
    if not indexes:
        return {"indexes": 0}
    (tenant, layer), big = max(indexes.items(), key=lambda kv: len(kv[1]))
    return {"indexes": len(indexes), "by_backend": dict(Counter(i.kind for i in indexes.values())),
            "largest": {"tenant": tenant, "layer": layer, "backend": big.kind, "vectors": len(big)}}  # fmt: skip


# -- phases --------------------------------------------------------------------------------


def bench_import(embedder: str, path: Path, work: Path, runs: int) -> Result:
    """(a) Import LoCoMo into a fresh file ``runs`` times; keeps the last file for (b)/(c)."""
    from athena.locomo.importer import import_locomo

    rates, memories = [], 0
    for run in range(runs):
        db = work / f"locomo-{embedder}-{run}.db"
        memory = open_memory(db, embedder)
        report = import_locomo(memory, path)
        memory.close()
        rates.append(report.per_second)
        memories = report.memories
        db.replace(work / f"locomo-{embedder}.db")
    return {"runs": runs, "memories": memories, "per_second_runs": [round(r, 1) for r in rates],
            "per_second": round(statistics.median(rates), 1)}  # fmt: skip


def bench_locomo(embedder: str, db: Path, path: Path) -> Result:
    """(c) cold recall latency over every question, then (b) evidence recall (defaults)."""
    from athena.locomo.evaluation import DRAGON, evaluate_locomo

    memory = open_memory(db, embedder)
    asks = questions(path)
    warm = warm_up(memory, sorted({t for t, _ in asks}))
    latency = percentiles(timed_recalls(memory, asks, f"{embedder}: LoCoMo recalls"))
    clear_cache(memory)
    with bar(f"{embedder}: evaluate_locomo", len(asks)) as advance:
        report = evaluate_locomo(memory, path, progress=lambda _n: advance())
    memory.close()
    return {"warm_up": warm, "latency_ms": latency, "evaluation": report.to_dict(),
            "dragon": {str(k): v for k, v in DRAGON.items()}}  # fmt: skip


def bench_scale(embedder: str, shape: str, path: Path, work: Path, target: int, queries: int) -> Result:
    """(d) Build a store of >= ``target`` memories in ``shape``, then time sampled recalls."""
    from athena.locomo.data import load_locomo
    from athena.locomo.importer import conversation_memories, import_locomo

    db = work / f"scale-{shape}-{embedder}.db"
    memory = open_memory(db, embedder)
    convs = load_locomo(path)
    per_copy = [conversation_memories(c) for c in convs]
    copies = -(-target // sum(map(len, per_copy)))
    total, start, skipped = 0, time.perf_counter(), None
    with bar(f"{embedder}: build {shape}", copies) as advance:
        for copy in range(copies):
            if shape == "many_tenants":
                total += import_locomo(memory, path, tenant_prefix=f"copy{copy}/").memories
            else:
                for items in per_copy:
                    memory.remember_many([dataclasses.replace(
                        i, tenant="one", key=f"copy{copy}/{i.tenant}/{i.key}") for i in items])  # fmt: skip
                    total += len(items)
            advance()
            if time.perf_counter() - start > BUILD_BUDGET_S and copy + 1 < copies:
                skipped = f"build passed {BUILD_BUDGET_S:.0f} s after {total} memories"
                break
    build_s = time.perf_counter() - start
    cache = memory.embedder
    hits, misses = getattr(cache, "hits", 0), getattr(cache, "misses", 0)
    memory.close()  # checkpoints the WAL: the size below is the settled file
    out: Result = {"shape": shape, "memories": total, "copies": copies, "build_s": round(build_s, 2),
                   "per_second": round(total / build_s, 1), "db_mib": round(db_bytes(db) / 2**20, 1),
                   "embed_cache_hit_share": round(hits / max(hits + misses, 1), 3)}  # fmt: skip
    if skipped:
        return {**out, "skipped": skipped}
    start = time.perf_counter()
    memory = open_memory(db, embedder)
    out["open_s"] = round(time.perf_counter() - start, 2)
    out["tenants"] = len(memory.tenants())
    out["warm_up"] = warm_up(memory, memory.tenants())
    rng = random.Random(0)
    sample = rng.sample(questions(path), min(queries, len(questions(path))))
    if shape == "many_tenants":
        asks = [(f"copy{rng.randrange(copies)}/{t}", q) for t, q in sample]
    else:
        asks = [("one", q) for _, q in sample]
    out["latency_ms"] = percentiles(timed_recalls(memory, asks, f"{embedder}: {shape} recalls"))
    out["vector_index"] = index_summary(memory)
    out["goal_p50_met"] = out["latency_ms"]["p50"] <= GOAL_P50_MS
    memory.close()
    return out


def bench_hnsw(path: Path, sizes: tuple[int, ...], queries: int) -> Result:
    """(f) ExactBackend vs HnswBackend on real static vectors of LoCoMo texts."""
    from athena.embedding import load_embedder
    from athena.locomo.data import load_locomo
    from athena.locomo.importer import conversation_memories
    from athena.retrieval.vector import DEFAULT_HNSW_CUTOFF, ExactBackend, HnswBackend

    embedder = load_embedder("static")
    convs = load_locomo(path)
    texts = sorted({i.text for c in convs for i in conversation_memories(c)})
    base = embedder.embed(texts)
    rng = np.random.default_rng(0)
    asks = [q for _, q in questions(path)]
    qv = embedder.embed([asks[i] for i in rng.choice(len(asks), min(queries, len(asks)), replace=False)])
    limit = 50  # what a k=10 recall asks each vector index for (candidate_depth)
    rows = []
    with bar("exact vs HNSW", len(sizes)) as advance:
        for n in sizes:
            if n <= len(base):
                x = base[rng.choice(len(base), n, replace=False)]
            else:  # every distinct vector, plus noisy replicas
                extra = base[rng.integers(0, len(base), n - len(base))]
                extra = extra + rng.normal(0.0, NOISE, extra.shape).astype(np.float32)
                x = np.vstack([base, extra / np.linalg.norm(extra, axis=1, keepdims=True)])
            x = np.ascontiguousarray(x, np.float32)
            exact = ExactBackend(x.shape[1])
            exact.add(x)
            hnsw = HnswBackend(x.shape[1])
            start = time.perf_counter()
            hnsw.add(x)
            build_s = time.perf_counter() - start
            row: Result = {"n": n, "hnsw_build_s": round(build_s, 3)}
            for name, backend in (("exact", exact), ("hnsw", hnsw)):
                for q in qv[:5]:
                    backend.search(q, limit)  # warm-up
                times = []
                for q in qv:
                    start = time.perf_counter()
                    backend.search(q, limit)
                    times.append((time.perf_counter() - start) * 1000.0)
                row[f"{name}_ms"] = round(statistics.median(times), 4)
            found = [len(set(exact.search(q, limit)[1][:10]) & set(hnsw.search(q, limit)[1][:10])) for q in qv]
            row["hnsw_recall_at_10"] = round(sum(found) / (10 * len(qv)), 4)
            saved = row["exact_ms"] - row["hnsw_ms"]
            row["break_even_queries"] = round(build_s * 1000.0 / saved) if saved > 0 else None
            rows.append(row)
            advance()
    return {"distinct_vectors": len(base), "dim": int(base.shape[1]), "queries": len(qv), "limit": limit,
            "noise_std": NOISE, "default_cutoff": DEFAULT_HNSW_CUTOFF, "sizes": rows,
            "crossover_n": crossover(rows)}  # fmt: skip


def crossover(rows: list[Result]) -> int | None:
    """The size where HNSW becomes faster than exact (log-interpolated), None if never."""
    for before, after in zip([None, *rows], rows, strict=False):
        if after["hnsw_ms"] < after["exact_ms"]:
            if before is None:
                return int(after["n"])
            d0, d1 = before["exact_ms"] - before["hnsw_ms"], after["exact_ms"] - after["hnsw_ms"]
            frac = d0 / (d0 - d1)
            return int(round(np.exp(np.log(before["n"]) + frac * np.log(after["n"] / before["n"]))))
    return None


def run_phase(args: argparse.Namespace) -> Result:
    cfg, work = config(args.quick), Path(args.work)
    path = locomo_subset(DATA, 1 if args.quick else None, work)
    e = args.embedder
    if args.phase == "import":
        out = bench_import(e, path, work, cfg.import_runs[e])
    elif args.phase == "locomo":
        out = bench_locomo(e, work / f"locomo-{e}.db", path)
    elif args.phase in ("many_tenants", "one_tenant"):
        out = bench_scale(e, args.phase, path, work, cfg.scale_target, cfg.scale_queries)
    else:
        out = bench_hnsw(path, cfg.hnsw_sizes, cfg.hnsw_queries)
    return {**out, "peak_rss_mib": peak_rss_mib()}


# -- orchestration and output ----------------------------------------------------------------


def machine() -> Result:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    mem = Path("/proc/meminfo").read_text().split()[1] if Path("/proc/meminfo").exists() else "0"
    import faiss

    return {"nproc": os.cpu_count(), "cpu": model, "ram_gib": round(int(mem) / 2**20, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "numpy": np.__version__, "faiss": faiss.__version__, "os": platform.platform()}  # fmt: skip


def orchestrate(quick: bool, out: Path) -> Result:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: Result = {"meta": {"date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick,
                       "command": "python benchmarks/engine.py" + (" --quick" if quick else ""),
                       "machine": machine(), "load_avg_start": os.getloadavg(), "data": str(DATA),
                       "build_budget_s": BUILD_BUDGET_S, "goal_p50_ms": GOAL_P50_MS}}  # fmt: skip
    plan = [(e, p) for e in EMBEDDERS for p in ("import", "locomo", "many_tenants", "one_tenant")]
    with tempfile.TemporaryDirectory(prefix="athena-engine-bench-") as work:
        for embedder, phase in [*plan, ("static", "hnsw")]:
            print(f"== {embedder} / {phase}", file=sys.stderr)
            result_file = Path(work) / f"{embedder}-{phase}.json"
            cmd = [sys.executable, __file__, "--phase", phase, "--embedder", embedder,
                   "--work", work, "--result", str(result_file)] + (["--quick"] if quick else [])  # fmt: skip
            t0 = time.perf_counter()
            code = subprocess.run(cmd, check=False).returncode
            phase_result: Result = (json.loads(result_file.read_text()) if code == 0
                                    else {"error": f"phase exited with code {code}; see stderr"})  # fmt: skip
            phase_result["wall_s"] = round(time.perf_counter() - t0, 1)
            if phase == "hnsw":
                results["hnsw"] = phase_result
            else:
                results.setdefault("embedders", {}).setdefault(embedder, {})[phase] = phase_result
    results["meta"]["total_s"] = round(time.perf_counter() - started, 1)
    results["meta"]["load_avg_end"] = os.getloadavg()
    write_outputs(results, out)
    return results


def write_outputs(results: Result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot(results, out)
    (out / "engine.md").write_text(markdown(results), encoding="utf-8")


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]) + "\n"


def markdown(r: Result) -> str:
    emb: dict[str, Result] = r.get("embedders", {})
    ks = ("5", "10", "25", "50")
    parts = ["### Import throughput (LoCoMo into a fresh file)\n", _table(
        ["embedder", "runs", "memories", "memories/s (median)", "per run", "peak RSS MiB"],
        [[e, p["import"].get("runs"), p["import"].get("memories"), p["import"].get("per_second"),
          p["import"].get("per_second_runs", p["import"].get("error")), p["import"].get("peak_rss_mib")]
         for e, p in emb.items()])]  # fmt: skip
    rec, cats, lat = [], [], []
    for e, p in emb.items():
        loc = p.get("locomo", {})
        if "evaluation" not in loc:
            rec.append([e, loc.get("error", "not measured"), "", "", ""])
            continue
        ev = loc["evaluation"]
        rec.append([e, *(ev["recall_at"][k] for k in ks)])
        cats += [[e, f"{c} {v['name']}", v["questions"], *(v["recall_at"][k] for k in ks)]
                 for c, v in ev["by_category"].items()]  # fmt: skip
        lat.append([e, loc["latency_ms"]["queries"], loc["warm_up"]["total_s"], loc["latency_ms"]["p50"],
                    loc["latency_ms"]["p95"], loc["peak_rss_mib"]])  # fmt: skip
        dragon = loc["dragon"]
    if any(len(row) == 5 and row[2] != "" for row in rec):
        rec.append(["DRAGON (LoCoMo paper)", *(dragon[k] for k in ks)])
    parts += ["\n### LoCoMo evidence recall (evaluate_locomo defaults)\n",
              _table(["retriever", "R@5", "R@10", "R@25", "R@50"], rec),
              "\n### Per category\n", _table(["embedder", "category", "questions", "R@5", "R@10", "R@25", "R@50"], cats),
              "\n### Cold recall latency on LoCoMo (k=10, default layers)\n",
              _table(["embedder", "queries", "warm-up s (1 recall/tenant)", "p50 ms", "p95 ms", "peak RSS MiB"], lat)]  # fmt: skip
    scale = []
    for e, p in emb.items():
        for shape in ("many_tenants", "one_tenant"):
            s = p.get(shape, {})
            if "latency_ms" not in s:
                scale.append([e, shape, s.get("memories", ""), "", s.get("build_s", ""), "", "", "", "", "",
                              s.get("skipped") or s.get("error"), "", s.get("peak_rss_mib", "")])  # fmt: skip
                continue
            big = s["vector_index"].get("largest", {})
            scale.append([e, shape, s["memories"], s["tenants"], s["build_s"], s["embed_cache_hit_share"],
                          s["db_mib"], s["warm_up"]["total_s"], s["latency_ms"]["p50"], s["latency_ms"]["p95"],
                          "met" if s["goal_p50_met"] else "missed",
                          f"{big.get('backend')} n={big.get('vectors')}", s["peak_rss_mib"]])  # fmt: skip
    parts += [f"\n### Large stores ({r['meta'].get('goal_p50_ms')} ms p50 goal; {max(1, len(scale))} builds)\n",
              _table(["embedder", "shape", "memories", "tenants", "build s", "embed cache hits", "DB MiB",
                      "warm-up s", "p50 ms", "p95 ms", "p50 goal", "largest vector index", "peak RSS MiB"], scale)]  # fmt: skip
    h = r.get("hnsw", {})
    if "sizes" in h:
        parts += [f"\n### Exact vs HNSW ({h['dim']}-dim static vectors, {h['distinct_vectors']} distinct, "
                  f"limit {h['limit']}, median of {h['queries']} queries)\n",
                  _table(["n", "exact ms", "HNSW ms", "HNSW recall@10", "HNSW build s", "queries to repay build"],
                         [[s["n"], s["exact_ms"], s["hnsw_ms"], s["hnsw_recall_at_10"], s["hnsw_build_s"],
                           s["break_even_queries"]] for s in h["sizes"]]),
                  f"\nHNSW is faster per query from about n = {h['crossover_n']} "
                  f"(DEFAULT_HNSW_CUTOFF = {h['default_cutoff']}).\n"]  # fmt: skip
    parts.append("\n![latency](latency.png)\n\n![exact vs HNSW](hnsw.png)\n")
    return "".join(parts)


def plot(r: Result, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = ["LoCoMo", "many tenants", "one tenant"]
    for i, (e, p) in enumerate(r.get("embedders", {}).items()):
        stats = [p.get(key, {}).get("latency_ms", {}) for key in ("locomo", "many_tenants", "one_tenant")]
        xs = np.arange(len(labels)) + i * 0.4
        ax.bar(xs, [s.get("p50", 0) for s in stats], 0.38, label=f"{e} p50")
        ax.scatter(xs, [s.get("p95", np.nan) for s in stats], marker="_", s=300, color="black",
                   label="p95" if i == 0 else None)  # fmt: skip
    ax.axhline(GOAL_P50_MS, ls="--", color="red", label=f"{GOAL_P50_MS:.0f} ms goal")
    sizes = {s.get("memories") for p in r.get("embedders", {}).values() for s in p.values() if "memories" in s}
    ax.set_xticks(np.arange(len(labels)) + 0.2, [f"{lab}" for lab in labels])
    ax.set(yscale="log", ylabel="recall latency ms (k=10)", title=f"Cold recall latency; store sizes {sorted(sizes)}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = r.get("hnsw", {}).get("sizes", [])
    if rows:
        ns = [s["n"] for s in rows]
        ax.plot(ns, [s["exact_ms"] for s in rows], "o-", label="exact (numpy)")
        ax.plot(ns, [s["hnsw_ms"] for s in rows], "s-", label="HNSW (faiss, ef=128)")
        ax.axvline(r["hnsw"]["default_cutoff"], ls="--", color="grey", label="DEFAULT_HNSW_CUTOFF")
        twin = ax.twinx()
        twin.plot(ns, [s["hnsw_recall_at_10"] for s in rows], "x:", color="green", label="HNSW recall@10")
        twin.set(ylim=(0, 1.02), ylabel="HNSW recall@10 vs exact")
        twin.legend(loc="lower right", fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="vectors in one index", ylabel="ms per query (median)",
           title="Exact vs HNSW vector search")  # fmt: skip
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hnsw.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, under 2 minutes")
    parser.add_argument("--out", default="bench-out/engine", help="output directory")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--embedder", default="static", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        Path(args.result).write_text(json.dumps(run_phase(args)), encoding="utf-8")
        return 0
    results = orchestrate(args.quick, Path(args.out))
    print(f"wrote {args.out}/engine.json, engine.md, latency.png, hnsw.png "
          f"in {results['meta']['total_s']} s", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
