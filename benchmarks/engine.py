"""Engine benchmark: import rate, LoCoMo evidence recall, cold recall latency at LoCoMo and 100k
scale, peak RSS per phase, exact-vs-HNSW crossover. ``python benchmarks/engine.py [--quick]
[--out DIR]`` writes engine.json, engine.md, latency.png and hnsw.png. Each (embedder, phase) runs
in its own subprocess so ru_maxrss is that phase's own peak. LoCoMo is read in place."""

from __future__ import annotations

import argparse
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
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import matplotlib
import numpy as np
from rich import progress as rp
from rich.console import Console
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped, unused-ignore]

from athena.bench.runner import resolve_data
from athena.embedding import load_embedder
from athena.locomo.data import load_locomo
from athena.locomo.evaluation import DRAGON, evaluate_locomo
from athena.locomo.importer import conversation_memories, import_locomo
from athena.memory import Memory
from athena.retrieval.vector import DEFAULT_HNSW_CUTOFF, ExactBackend, HnswBackend

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it
EMBEDDERS = ("static", "transformer")
PHASES = ("import", "locomo", "many_tenants", "one_tenant")
IMPORT_RUNS = {"static": 3, "transformer": 1}
GOAL_P50_MS = 10.0
NOISE = 0.01  # std per dimension of the noise on replicated vectors in the HNSW sweep
KS = ("5", "10", "25", "50")
matplotlib.use("Agg")
Result = dict[str, Any]
# Large-store n and queries, HNSW sizes and queries, large-store build budget s (orchestrate)
FULL = (100_000, 500, (2_000, 5_000, 10_000, 20_000, 50_000, 100_000), 200, 600.0)
QUICK = (10_000, 100, (1_000, 2_000, 5_000, 10_000), 50, 60.0)


@contextmanager
def bar(desc: str, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr; yields a function that advances it by one."""
    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn())
    with rp.Progress(*columns, rp.TimeElapsedColumn(), console=Console(stderr=True)) as bars:
        task = bars.add_task(desc, total=total)
        yield lambda: bars.advance(task)


def timed(fn: Callable[[], object]) -> float:  # milliseconds
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def percentiles(ms: list[float]) -> dict[str, float]:
    p50, p95 = (round(float(np.percentile(ms, q)), 3) for q in (50, 95))
    return {"queries": len(ms), "p50": p50, "p95": p95, "mean": round(statistics.fmean(ms), 3)}


def open_memory(path: Path, embedder: str) -> Any:
    """A Memory whose model is already loaded (the transformer loads lazily), cache empty."""
    memory: Any = Memory(path, embedder=embedder)  # Any: its embedder is a CachingEmbedder
    memory.embedder.embed(["load the model before any timing"])
    memory.embedder.clear()
    return memory


def questions(path: Path) -> list[tuple[str, str]]:
    return [(c.sample_id, q.question) for c in load_locomo(path) for q in c.questions]


def timed_recalls(memory: Any, asks: list[tuple[str, str]], desc: str) -> list[float]:
    """Each (tenant, question) as one recall (k=10, default layers), timed on its own."""
    out: list[float] = []
    with bar(desc, len(asks)) as advance:
        for tenant, text in asks:
            memory.embedder.clear()  # no recall is served a cached query vector
            out.append(timed(partial(memory.recall, text, tenant=tenant, k=10)))
            advance()
    return out


def warm_up(memory: Any, tenants: list[str]) -> Result:
    """One recall per tenant, so every index is built before anything is timed."""
    times = [timed(partial(memory.recall, "warm-up", tenant=t, k=10)) / 1e3 for t in tenants]
    return {"tenants": len(tenants), "total_s": round(sum(times), 3), "max_s": round(max(times), 3)}


def bench_import(embedder: str, path: Path, work: Path, runs: int) -> Result:
    """(a) Import LoCoMo into a fresh file ``runs`` times; the last file serves (b) and (c)."""
    rates: list[float] = []
    for run in range(runs):
        name = f"locomo-{embedder}.db" if run == runs - 1 else f"locomo-{embedder}-{run}.db"
        memory = open_memory(work / name, embedder)
        report = import_locomo(memory, path)
        memory.close()
        rates.append(report.per_second)
    runs_s = [round(r, 1) for r in rates]
    return {"runs": runs, "memories": report.memories, "per_second_runs": runs_s,
            "per_second": round(statistics.median(rates), 1)}  # fmt: skip


def bench_locomo(embedder: str, db: Path, path: Path) -> Result:
    """(c) cold recall latency over every question, then (b) evidence recall (defaults)."""
    memory = open_memory(db, embedder)
    asks = questions(path)
    warm = warm_up(memory, sorted({tenant for tenant, _ in asks}))
    latency = percentiles(timed_recalls(memory, asks, f"{embedder}: LoCoMo recalls"))
    memory.embedder.clear()
    with bar(f"{embedder}: evaluate_locomo", len(asks)) as advance:
        report = evaluate_locomo(memory, path, progress=lambda _n: advance())
    memory.close()
    return {"warm_up": warm, "latency_ms": latency, "evaluation": report.to_dict()}


def bench_scale(e: str, shape: str, path: Path, work: Path, target: int, queries: int) -> Result:
    """(d) Build >= ``target`` memories in ``shape``, reopen, warm up, time sampled recalls."""
    db = work / f"scale-{shape}-{e}.db"
    memory = open_memory(db, e)
    per_conv = [conversation_memories(c) for c in load_locomo(path)]
    copies = -(-target // sum(map(len, per_conv)))
    total, start = 0, time.perf_counter()
    with bar(f"{e}: build {shape}", copies) as advance:
        for copy in range(copies):
            if shape == "many_tenants":
                total += import_locomo(memory, path, tenant_prefix=f"copy{copy}/").memories
            else:
                for items in per_conv:  # one tenant; keys made distinct per copy
                    b = [replace(i, tenant="one", key=f"{copy}/{i.tenant}/{i.key}") for i in items]
                    total += len(memory.remember_many(b))
            advance()
    build_s = time.perf_counter() - start
    hits, misses = memory.embedder.hits, memory.embedder.misses
    memory.close()
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))  # with -wal and -shm
    out: Result = {"shape": shape, "memories": total, "build_s": round(build_s, 2),
                   "per_second": round(total / build_s, 1), "db_mib": round(size / 2**20, 1),
                   "embed_cache_hit_share": round(hits / max(hits + misses, 1), 3)}  # fmt: skip
    memory = open_memory(db, e)
    out["tenants"] = len(memory.tenants())
    out["warm_up"] = warm_up(memory, memory.tenants())
    rng, pool = random.Random(0), questions(path)
    many = shape == "many_tenants"  # there, each question goes to one copy of its conversation
    asks = [(f"copy{rng.randrange(copies)}/{t}" if many else "one", q)
            for t, q in rng.sample(pool, min(queries, len(pool)))]  # fmt: skip
    out["latency_ms"] = percentiles(timed_recalls(memory, asks, f"{e}: {shape} recalls"))
    indexes = memory.pipeline.ctx.indexes._indexes  # benchmark-only peek at the live indexes
    (tenant, layer), big = max(indexes.items(), key=lambda kv: len(kv[1]))
    largest = {"tenant": tenant, "layer": layer, "backend": big.kind, "vectors": len(big)}
    kinds = dict(Counter(index.kind for index in indexes.values()))
    out["vector_index"] = {"indexes": len(indexes), "by_backend": kinds, "largest": largest}
    out["goal_p50_met"] = out["latency_ms"]["p50"] <= GOAL_P50_MS
    memory.close()
    return out


def bench_hnsw(path: Path, sizes: tuple[int, ...], queries: int) -> Result:
    """(f) Exact (BLAS as is; exact_1t: one BLAS thread) vs HNSW on static LoCoMo vectors."""
    embedder = load_embedder("static")
    texts = sorted({i.text for c in load_locomo(path) for i in conversation_memories(c)})
    base = embedder.embed(texts)
    rng, asks = np.random.default_rng(0), [q for _, q in questions(path)]
    picked = rng.choice(len(asks), min(queries, len(asks)), replace=False)
    qv = embedder.embed([asks[i] for i in picked])
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
            exact, hnsw = ExactBackend(x.shape[1]), HnswBackend(x.shape[1])
            exact.add(x)
            row: Result = {"n": n, "hnsw_build_s": round(timed(partial(hnsw.add, x)) / 1e3, 3)}
            for name, backend in (("exact", exact), ("hnsw", hnsw), ("exact_1t", exact)):
                with threadpool_limits(1) if name == "exact_1t" else nullcontext():
                    for q in qv[:5]:
                        backend.search(q, limit)  # warm-up
                    times = [timed(partial(backend.search, q, limit)) for q in qv]
                row[f"{name}_ms"] = round(statistics.median(times), 4)
            tops = [(exact.search(q, limit)[1][:10], hnsw.search(q, limit)[1][:10]) for q in qv]
            found = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in tops)
            row["hnsw_recall_at_10"] = round(found / (10 * len(qv)), 4)
            gap = row["exact_ms"] - row["hnsw_ms"]  # queries until the build has paid for itself:
            row["break_even_queries"] = round(row["hnsw_build_s"] * 1e3 / gap) if gap > 0 else None
            rows.append(row)
            advance()
    return {"distinct_vectors": len(base), "dim": int(base.shape[1]), "queries": len(qv),
            "limit": limit, "noise_std": NOISE, "default_cutoff": DEFAULT_HNSW_CUTOFF,
            "sizes": rows, "crossover_n": crossover(rows),
            "crossover_n_blas_1_thread": crossover(rows, "exact_1t_ms")}  # fmt: skip


def crossover(rows: list[Result], exact: str = "exact_ms") -> int | None:
    """The size from which HNSW is faster than exact (log-interpolated); None if never."""
    gaps = [(r["n"], r[exact] - r["hnsw_ms"]) for r in rows]
    for (n0, g0), (n, gap) in zip([(0, -1.0), *gaps], gaps, strict=False):
        if gap > 0:  # interpolate in log n between the last slower and the first faster size
            return int(n) if n0 == 0 else round(float(n0 * (n / n0) ** (g0 / (g0 - gap))))
    return None


def run_phase(args: argparse.Namespace) -> Result:
    target, queries, sizes, hnsw_queries, _ = QUICK if args.quick else FULL
    work = Path(args.work)
    path = work / "locomo-one-conversation.json" if args.quick else DATA
    if args.quick:  # a temporary slice: conv-30, the fewest questions; the data stays in place
        path.write_text(json.dumps(json.loads(DATA.read_text(encoding="utf-8"))[1:2]))
    if args.phase == "import":
        out = bench_import(args.embedder, path, work, IMPORT_RUNS[args.embedder])
    elif args.phase == "locomo":
        out = bench_locomo(args.embedder, work / f"locomo-{args.embedder}.db", path)
    elif args.phase in PHASES[2:]:
        out = bench_scale(args.embedder, args.phase, path, work, target, queries)
    else:
        out = bench_hnsw(path, sizes, hnsw_queries)
    rss_mib = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
    return {**out, "peak_rss_mib": rss_mib, "load_avg_end": os.getloadavg()}


def machine() -> Result:
    cpu = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in cpu if ln.startswith("model name")), "?")
    ram_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gib": round(ram_kib / 2**20, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "faiss": faiss.__version__, "numpy": np.__version__}  # fmt: skip


def orchestrate(quick: bool, out: Path) -> Result:
    start, (target, *_, budget) = time.perf_counter(), QUICK if quick else FULL
    meta: Result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick,
                    "command": "python benchmarks/engine.py" + (" --quick" if quick else ""),
                    "machine": machine(), "load_avg_start": os.getloadavg(), "data": str(DATA),
                    "import_runs": IMPORT_RUNS, "build_budget_s": budget}  # fmt: skip
    dragon = {str(k): v for k, v in DRAGON.items()}  # the LoCoMo paper's row, for comparison
    results: Result = {"meta": meta, "dragon": dragon, "embedders": {e: {} for e in EMBEDDERS}}
    plan = [(e, p) for e in EMBEDDERS for p in PHASES] + [("static", "hnsw")]
    with tempfile.TemporaryDirectory(prefix="athena-engine-bench-") as work:
        for embedder, phase in plan:
            print(f"== {embedder} / {phase}", file=sys.stderr, flush=True)
            rate = dig(results, f"embedders.{embedder}.import.per_second")
            # No large store whose import would take longer than the budget at (a)'s rate.
            if phase in PHASES[2:] and rate and target / rate > budget:
                why = f"importing {target} at the measured {rate}/s takes {target / rate:.0f} s"
                results["embedders"][embedder][phase] = {"skipped": f"skipped: {why}"}
                continue
            result = Path(work) / f"{embedder}-{phase}.json"
            cmd = [sys.executable, __file__, "--phase", phase, "--embedder", embedder]
            cmd += ["--work", work, "--result", str(result)] + (["--quick"] if quick else [])
            wall_s = timed(partial(subprocess.run, cmd, check=False)) / 1e3
            got = json.loads(result.read_text()) if result.exists() else {"error": "see stderr"}
            got["wall_s"] = round(wall_s, 1)
            (results if phase == "hnsw" else results["embedders"][embedder])[phase] = got
    meta["total_s"], meta["load_avg_end"] = round(time.perf_counter() - start, 1), os.getloadavg()
    write_outputs(results, out)
    return results


def write_outputs(results: Result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "engine.md").write_text(markdown(results), encoding="utf-8")
    plot(results, out)


def table(title: str, head: list[str], rows: list[list[Any]]) -> str:
    lines = [f"\n#### {title}\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def dig(d: Any, path: str) -> Any:  # d["a"]["b"] for "a.b"; None where a step is missing
    for part in path.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def markdown(r: Result) -> str:
    emb: dict[str, Result] = r["embedders"]
    ks, loc, h = [f"R@{k}" for k in KS], "latency_ms", r.get("hnsw", {})

    def rows(keys: str, prefix: str = "") -> list[list[Any]]:
        return [[e, *(dig(p, prefix + k) for k in keys.split())] for e, p in emb.items()]

    rec = rows(" ".join(KS), "locomo.evaluation.recall_at.")
    rec.append(["DRAGON (LoCoMo paper, not run here)", *(DRAGON[int(k)] for k in KS)])
    cats = [[e, f"{c} {v['name']}", v["questions"], *(v["recall_at"][k] for k in KS)]
            for e, p in emb.items()
            for c, v in (dig(p, "locomo.evaluation.by_category") or {}).items()]  # fmt: skip
    scale_keys = ("memories tenants build_s embed_cache_hit_share db_mib warm_up.total_s "
                  "latency_ms.p50 latency_ms.p95 goal_p50_met vector_index.largest.backend "
                  "vector_index.largest.vectors peak_rss_mib skipped")  # fmt: skip
    scale = [[e, shape, *(dig(p, f"{shape}.{k}") for k in scale_keys.split())]
             for e, p in emb.items() for shape in ("many_tenants", "one_tenant")]  # fmt: skip
    parts = [
        table("Import throughput (LoCoMo into a fresh file)", ["embedder", "runs", "memories",
              "memories/s (median)", "per run", "peak RSS MiB"],
              rows("runs memories per_second per_second_runs peak_rss_mib", "import.")),
        table("LoCoMo evidence recall (evaluate_locomo defaults)", ["retriever", *ks], rec),
        table("LoCoMo evidence recall per category",
              ["embedder", "category", "questions", *ks], cats),
        table("Cold recall latency on LoCoMo (every question, k=10, default layers)",
              ["embedder", "queries", "warm-up s", "p50 ms", "p95 ms", "peak RSS MiB"],
              rows(f"{loc}.queries warm_up.total_s {loc}.p50 {loc}.p95 peak_rss_mib", "locomo.")),
        table(f"Large stores (goal: static p50 <= {GOAL_P50_MS:g} ms)",
              ["embedder", "shape", "memories", "tenants", "build s", "embed cache hit share",
               "DB MiB", "warm-up s", "p50 ms", "p95 ms", "p50 goal met", "largest index backend",
               "its vectors", "peak RSS MiB", "note"], scale),
    ]  # fmt: skip
    if "sizes" in h:
        head = ["n", "exact ms", "exact ms, 1 BLAS thread", "HNSW ms", "HNSW recall@10",
                "HNSW build s", "queries to repay build"]  # fmt: skip
        keys = "n exact_ms exact_1t_ms hnsw_ms hnsw_recall_at_10 hnsw_build_s break_even_queries"
        title = (f"Exact vs HNSW: {h['dim']}-dim static vectors, {h['distinct_vectors']} distinct, "
                 f"limit {h['limit']}, median of {h['queries']} queries")  # fmt: skip
        parts.append(table(title, head, [[s[k] for k in keys.split()] for s in h["sizes"]]))
        parts.append(f"\nHNSW is faster per query from about n = {h['crossover_n']} "
                     f"({h['crossover_n_blas_1_thread']} against exact on 1 BLAS thread; "
                     f"DEFAULT_HNSW_CUTOFF = {h['default_cutoff']}).\n")  # fmt: skip
    failed = [(f"{e}/{ph}", v) for e, p in emb.items() for ph, v in p.items()] + [("hnsw", h)]
    errors = [f"{name}: {v['error']}" for name, v in failed if "error" in v]
    parts += [f"\nFailed phases: {'; '.join(errors)}\n"] if errors else []
    return "".join(parts) + "\n![latency](latency.png)\n\n![exact vs HNSW](hnsw.png)\n"


def plot(r: Result, out: Path) -> None:
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg") above

    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = {"locomo": "LoCoMo", "many_tenants": "many tenants", "one_tenant": "one tenant"}
    for i, (e, p) in enumerate(r["embedders"].items()):
        xs = np.arange(len(names)) + i * 0.4
        ms = [p.get(key, {}).get("latency_ms", {}) for key in names]
        ax.bar(xs, [m.get("p50", np.nan) for m in ms], 0.38, label=f"{e} p50")
        ax.scatter(xs, [m.get("p95", np.nan) for m in ms], marker="_", s=400, color="black",
                   label="p95" if i == 0 else None)  # fmt: skip
    sizes = [dig(r, f"embedders.static.{k}.memories") for k in ("import", *PHASES[2:])]
    labels = [f"{n}\n{s} memories" for n, s in zip(names.values(), sizes, strict=True)]
    ax.set_xticks(np.arange(3) + 0.2, labels)
    ax.axhline(GOAL_P50_MS, ls="--", color="red", label=f"{GOAL_P50_MS:g} ms goal")
    ax.set(yscale="log", ylabel="ms per recall (k=10)", title="Cold recall latency by store shape")
    ax.legend(fontsize=8)
    fig2, ax = plt.subplots(figsize=(7, 4.5))
    rows = r.get("hnsw", {}).get("sizes", [])
    if rows:
        ns = [s["n"] for s in rows]
        ax.plot(ns, [s["exact_ms"] for s in rows], "o-", label="exact (numpy, default BLAS)")
        ax.plot(ns, [s["exact_1t_ms"] for s in rows], "o--", label="exact, 1 BLAS thread")
        ax.plot(ns, [s["hnsw_ms"] for s in rows], "s-", label="HNSW (faiss, efSearch 128)")
        ax.axvline(r["hnsw"]["default_cutoff"], ls="--", color="grey", label="DEFAULT_HNSW_CUTOFF")
        twin = ax.twinx()
        twin.plot(ns, [s["hnsw_recall_at_10"] for s in rows], "x:", color="green")
        twin.set(ylim=(0, 1.02), ylabel="HNSW recall@10 vs exact (green)")
    ax.set(xscale="log", yscale="log", xlabel="vectors in one index", ylabel="ms per query",
           title="Exact vs HNSW vector search (median per query)")  # fmt: skip
    ax.legend(loc="upper left", fontsize=8)
    for figure, name in ((fig, "latency.png"), (fig2, "hnsw.png")):
        figure.tight_layout()
        figure.savefig(out / name, dpi=110)
        plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Athena engine benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, under 2 minutes")
    parser.add_argument("--out", default="bench-out/engine", help="output directory")
    for internal in ("--phase", "--embedder", "--work", "--result"):
        parser.add_argument(internal, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        Path(args.result).write_text(json.dumps(run_phase(args)), encoding="utf-8")
        return 0
    total = orchestrate(args.quick, Path(args.out))["meta"]["total_s"]
    print(f"wrote {args.out}/engine.json, engine.md and plots in {total} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
