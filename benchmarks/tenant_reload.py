"""A tenant's first recall in a process: its indexes loaded from snapshots, or built.

``python benchmarks/tenant_reload.py [--store 100k-tenants] [--embedder static]
[--rounds 3] [--out bench-out]`` builds (or reuses, under ``--out/stores``) the store and
one working copy of it, and lets one untimed process recall once in every tenant, which
saves the BM25 snapshots of every scope from 256 memories (and the graphs of any past the
HNSW cutoff). Then, ``--rounds`` times, two processes in an order alternated each round:
``snapshots`` (the default, ``index_snapshots=True``) and ``build`` (``False``: every index
built from the store, as a tenant's indexes were before stop 39 when the index budget had
dropped it). Each, pool off, recalls once in the last tenant (untimed: the process's own
first-call costs), then asks every other tenant its first question once
(sequential, so the same work in both) and reports the p50, p95 and mean of those first
recalls and how many indexes came from snapshots. This prints each arm's medians over
rounds with their ranges, the ratio of the medians, and the snapshot directory's size.

Meant for stores of many small tenants (``100k-tenants``, ``locomo``): on
``100k-one-tenant`` the build arm would also build the graph and BM25 index that scopes
past 20,000 memories had snapshots of before stop 39. The build arm is favoured on
``100k-tenants`` (LoCoMo eleven times over): a process keeps the words it has stemmed, so
after ten tenants most of its stemming is found, not done.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from athena.bench.runner import resolve_data
from athena.bench.workloads import build_store, working_copy
from athena.memory import Memory
from athena.retrieval.snapshots import SUFFIX

ARMS = ("snapshots", "build")


def child(db: Path, store_name: str, embedder: str, arm: str) -> None:
    """One arm's process: every tenant's first recall, timed; prints one JSON line."""
    store = build_store(store_name, embedder, resolve_data(None), Path(os.environ["TR_OUT"]))
    first = {}
    for ask in store.asks:
        first.setdefault(ask.tenant, ask)
    with Memory(db, embedder=embedder, pool="off", index_snapshots=arm != "build") as mem:
        *timed, warm = first.values()  # the last tenant warms the process up, untimed
        mem.recall(warm.text, tenant=warm.tenant, strategy="sequential")
        times = []
        for ask in timed:
            start = time.perf_counter()
            mem.recall(ask.text, tenant=ask.tenant, strategy="sequential")
            times.append((time.perf_counter() - start) * 1000.0)
        snaps = mem.pipeline.ctx.lexicon.snapshots
        loaded = 0 if snaps is None else snaps.loaded
    cuts = statistics.quantiles(times, n=20)
    row = {"p50_ms": statistics.median(times), "p95_ms": cuts[18]}
    row |= {"mean_ms": statistics.fmean(times), "tenants": len(times), "loaded": loaded}
    print(json.dumps(row))


def _run(db: Path, args: argparse.Namespace, arm: str) -> dict[str, float]:
    command = [sys.executable, __file__, "--store", args.store, "--embedder", args.embedder]
    command += ["--child", str(db), "--arm", arm]
    env = {**os.environ, "TR_OUT": str(args.out)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{arm} failed:\n{done.stderr[-2000:]}")
    row: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="100k-tenants")
    parser.add_argument("--embedder", default="static", choices=("static", "transformer"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--child", metavar="DB")
    parser.add_argument("--arm", choices=ARMS, default="snapshots")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.store, args.embedder, args.arm)
        return
    if args.rounds < 1:
        parser.error("--rounds at least 1")
    store = build_store(args.store, args.embedder, resolve_data(None), args.out)
    db = working_copy(store, args.out / "tenant-reload")
    saving = _run(db, args, "snapshots")  # untimed: saves what the snapshot arm loads
    print("saving process", saving, file=sys.stderr, flush=True)
    rows: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for round_ in range(args.rounds):
        for arm in ARMS if round_ % 2 == 0 else ARMS[::-1]:
            rows[arm].append(_run(db, args, arm))
            print(round_, arm, rows[arm][-1], file=sys.stderr, flush=True)
    folder = Path(f"{db}.indexes")
    files = list(folder.glob(f"*{SUFFIX}"))
    print(f"{args.store}, {args.embedder}, {store.memories} memories, {store.tenants} tenants")
    medians = {}
    for arm in ARMS:
        got = rows[arm]
        parts = []
        for key in ("p50_ms", "p95_ms", "mean_ms"):
            values = [r[key] for r in got]
            medians[(arm, key)] = statistics.median(values)
            parts.append(f"{key} {medians[(arm, key)]:.2f} [{min(values):.2f}-{max(values):.2f}]")
        print(f"{arm:9s} " + ", ".join(parts) + f", loaded {got[-1]['loaded']}")
    ratio = medians[("build", "p50_ms")] / medians[("snapshots", "p50_ms")]
    size = sum(f.stat().st_size for f in files) / 1e6
    print(f"build / snapshots p50: {ratio:.2f}x; {len(files)} snapshot files, {size:.1f} MB")


if __name__ == "__main__":
    main()
