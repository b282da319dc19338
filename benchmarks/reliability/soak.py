"""Soak: mixed recall and remember at a fixed rate; RSS, fds, threads and p99 per window.

``python benchmarks/reliability/soak.py [--duration 1800] [--rate 50] [--write-fraction 0.2]
[--window 10] [--warmup 300] [--plot docs/img/soak.png] [--json OUT] [--trace N]``

One process holds a Memory (static embedder, default adaptive engine with its result
cache; the worker pool is left lazy, as a library user gets it) over a database seeded with
``--seed-memories`` memories in 5 tenants and all five layers. Operations arrive at a
fixed rate (open loop, 8 threads): recalls drawn from 300 queries of 2-6 corpus words
(repeats are frequent, so the cache hits, and writes keep invalidating it), and writes
that are keyed upserts over a bounded key space (new text, same key): the data volume is
constant, so memory that grows is a leak, not data. Every ``--window`` seconds it samples
RSS (``/proc/self/status``), open fds (``/proc/self/fd``), threads (the kernel's count,
native ones included) and the window's p99 latency.

Figures: RSS growth after warm-up (last window against the first after ``--warmup``,
by default 5 minutes: the time the bounded structures, above all the 10,000-row telemetry
ring, take to fill at 50 operations/s; goal < 10%), anonymous RSS (the heap) likewise, the
largest RSS seen after warm-up, fd and thread growth (goal 0), p99 per window. ``--plot``
draws the five series (PNG). ``--trace N`` adds the N call sites whose Python heap grew
most between the end of warm-up and the end (tracemalloc; slows the run about 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

QUERIES = 300
CLIENTS = 8  # client threads
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
LAYERS = ("episodic", "semantic", "procedural", "prospective", "graph")
VOCAB = (
    "alice bob carol dave erin frank grace heidi ivan judy moved baked hiked painted wrote "
    "repaired visited called booked cooked lisbon porto oslo tokyo paris garden bicycle "
    "piano kitchen river mountain report budget dentist passport flight concert meeting "
    "birthday holiday project deadline invoice recipe guitar marathon museum library "
    "coffee train ticket doctor school vacation weekend monday friday summer winter"
).split()


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def prime(memory: Any, executor: ThreadPoolExecutor, queries: list[tuple[str, str]]) -> None:
    """Bring every bounded thread pool to its size before measuring: each client thread at
    once (a barrier) runs a parallel recall, which also fills the engine's reader threads.
    Each of those threads opens its own read connection (a file descriptor or two) on first
    use; without this, a burst late in the run would open one and look like a leak."""
    barrier = threading.Barrier(CLIENTS)

    def one(i: int) -> None:
        barrier.wait(timeout=30)
        text, tenant = queries[i % len(queries)]
        memory.recall(text, tenant=tenant, k=10, strategy="parallel")
        memory.recall(text, tenant=tenant, k=10, strategy="sequential")

    for future in [executor.submit(one, i) for i in range(CLIENTS)]:
        future.result()


def sample() -> dict[str, float]:
    return {
        "rss_mb": _status("VmRSS") / 1024.0,
        "rss_anon_mb": _status("RssAnon") / 1024.0,  # heap: RSS less mapped file pages
        "fds": float(len(os.listdir("/proc/self/fd"))),
        "threads": float(_status("Threads")),
    }


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words)).capitalize() + "."


def _attributes(layer: str, rng: random.Random) -> dict[str, Any]:
    if layer == "prospective":
        return {"priority": rng.randint(0, 10), "due_at": 1.7e9 + rng.randint(0, 10**7)}
    if layer == "graph":
        a, b = rng.sample(VOCAB[:10], 2)
        return {"relations": [[a.title(), "knows", b.title()]]}
    return {}


def seed(memory: Any, count: int, rng: random.Random) -> list[tuple[str, str, str]]:
    from athena import MemoryInput

    keys = []
    batch = []
    for i in range(count):
        tenant, layer = TENANTS[i % len(TENANTS)], LAYERS[(i // len(TENANTS)) % len(LAYERS)]
        key = f"k{i}"
        keys.append((tenant, layer, key))
        batch.append(
            MemoryInput(
                layer=layer,
                text=_text(rng, 12),
                tenant=tenant,
                key=key,
                actor=rng.choice(VOCAB[:10]).title(),
                event_time=1.7e9 + i,
                attributes=_attributes(layer, rng),
            )
        )
        if len(batch) == 500:
            memory.remember_many(batch)
            batch = []
    if batch:
        memory.remember_many(batch)
    return keys


class Window:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors = 0
        self.recalls = 0
        self.writes = 0

    def take(self) -> tuple[list[float], int, int, int]:
        with self.lock:
            out = (self.latencies, self.errors, self.recalls, self.writes)
            self.latencies, self.errors, self.recalls, self.writes = [], 0, 0, 0
        return out


def run(
    duration: float,
    rate: float,
    write_fraction: float,
    window_s: float,
    warmup: float,
    seed_memories: int,
    workdir: Path,
    seed_value: int = 1,
    trace: int = 0,
) -> dict[str, Any]:
    from athena import Memory

    rng = random.Random(seed_value)
    window = Window()
    samples: list[dict[str, float]] = []
    with Memory(workdir / "soak.db") as memory:
        keys = seed(memory, seed_memories, rng)
        queries = [  # a finite set: repeats are frequent, so the result cache has work
            (" ".join(rng.choice(VOCAB) for _ in range(rng.randint(2, 6))), rng.choice(TENANTS))
            for _ in range(QUERIES)
        ]

        def op(kind: str, due: float, args: tuple[Any, ...]) -> None:
            try:
                if kind == "recall":
                    memory.recall(args[0], tenant=args[1], k=10)
                else:
                    tenant, layer, key, text, attrs = args
                    memory.remember(text, tenant=tenant, layer=layer, key=key, attributes=attrs)
            except Exception:  # counted per window
                with window.lock:
                    window.errors += 1
                return
            latency = (time.perf_counter() - due) * 1000.0
            with window.lock:
                window.latencies.append(latency)
                if kind == "recall":
                    window.recalls += 1
                else:
                    window.writes += 1

        executor = ThreadPoolExecutor(max_workers=CLIENTS, thread_name_prefix="soak")
        prime(memory, executor, queries)
        tracer = Tracer(trace, warmup) if trace else None
        began = time.perf_counter()
        next_sample = began + window_s
        base = sample()
        samples.append({"t": 0.0, **base, "p99_ms": 0.0, "ops": 0, "errors": 0})
        i = 0
        while True:
            due = began + i / rate
            now = time.perf_counter()
            if due - began >= duration:
                break
            if now >= next_sample:
                lat, errors, recalls, writes = window.take()
                traced = tracer.tick(now - began) if tracer is not None else {}
                point = {**sample(), **traced}  # a first snapshot is taken before sampling
                p99 = sorted(lat)[int(0.99 * (len(lat) - 1))] if lat else 0.0
                samples.append(
                    {
                        "t": round(now - began, 1),
                        **point,
                        "p99_ms": round(p99, 2),
                        "ops": recalls + writes,
                        "recalls": recalls,
                        "writes": writes,
                        "errors": errors,
                    }
                )
                next_sample += window_s
                continue
            if due > now:
                time.sleep(min(due - now, max(0.0, next_sample - now)))
                continue
            if rng.random() < write_fraction:
                tenant, layer, key = rng.choice(keys)
                args: tuple[Any, ...] = (
                    tenant,
                    layer,
                    key,
                    _text(rng, 12),
                    _attributes(layer, rng),
                )
                executor.submit(op, "remember", due, args)
            else:
                executor.submit(op, "recall", due, rng.choice(queries))
            i += 1
        executor.shutdown(wait=True)
        lat, errors, recalls, writes = window.take()  # the last, partial window
        p99 = sorted(lat)[int(0.99 * (len(lat) - 1))] if lat else 0.0
        samples.append(
            {
                "t": round(time.perf_counter() - began, 1),
                **sample(),
                "p99_ms": round(p99, 2),
                "ops": recalls + writes,
                "recalls": recalls,
                "writes": writes,
                "errors": errors,
            }
        )
        cache = memory.execution_stats()["cache"]
    summary = summarise(samples, warmup, duration, rate, write_fraction, seed_memories, cache)
    if tracer is not None:
        summary["traced_growth"] = tracer.report()
    return summary


class Tracer:
    """``--trace N``: tracemalloc from the start of the run; a snapshot when warm-up ends
    and at the end, and the N call sites (4 frames deep) whose Python-side allocations
    grew most between them. Allocations made by C libraries (SQLite's page cache) are not
    traced: the gap between traced memory and anonymous RSS is theirs."""

    def __init__(self, top: int, warmup: float) -> None:
        import tracemalloc

        self.top, self.warmup = top, warmup
        self.first: Any = None
        tracemalloc.start(4)

    def tick(self, elapsed: float) -> dict[str, float]:
        import tracemalloc

        if self.first is None and elapsed >= self.warmup:
            self.first = tracemalloc.take_snapshot()
        return {"traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2)}

    def report(self) -> list[dict[str, Any]]:
        import tracemalloc

        if self.first is None:  # the run ended before warm-up did
            return []
        last = tracemalloc.take_snapshot()
        keep = (tracemalloc.Filter(False, tracemalloc.__file__),)
        diff = last.filter_traces(keep).compare_to(self.first.filter_traces(keep), "traceback")
        out = []
        for stat in diff[: self.top]:
            out.append(
                {
                    "kb": round(stat.size_diff / 1024, 1),
                    "count": stat.count_diff,
                    "where": [f"{f.filename}:{f.lineno}" for f in stat.traceback][::-1],
                }
            )
        return out


def summarise(
    samples: list[dict[str, float]],
    warmup: float,
    duration: float,
    rate: float,
    write_fraction: float,
    seed_memories: int,
    cache: dict[str, Any],
) -> dict[str, Any]:
    after = [s for s in samples if s["t"] >= warmup] or samples[-1:]
    first, last = after[0], samples[-1]
    p99s = [s["p99_ms"] for s in samples[1:]]
    return {
        "duration_s": duration,
        "rate": rate,
        "write_fraction": write_fraction,
        "seed_memories": seed_memories,
        "warmup_s": warmup,
        "ops": int(sum(s.get("ops", 0) for s in samples)),
        "errors": int(sum(s.get("errors", 0) for s in samples)),
        "rss_mb_start": round(samples[0]["rss_mb"], 1),
        "rss_mb_after_warmup": round(first["rss_mb"], 1),
        "rss_mb_end": round(last["rss_mb"], 1),
        "rss_mb_max_after_warmup": round(max(s["rss_mb"] for s in after), 1),
        "rss_growth_pct_after_warmup": round(100.0 * (last["rss_mb"] / first["rss_mb"] - 1), 2),
        "rss_anon_mb_after_warmup": round(first["rss_anon_mb"], 1),
        "rss_anon_mb_end": round(last["rss_anon_mb"], 1),
        "rss_anon_growth_pct_after_warmup": round(
            100.0 * (last["rss_anon_mb"] / first["rss_anon_mb"] - 1), 2
        ),
        "rss_max_growth_pct_after_warmup": round(
            100.0 * (max(s["rss_mb"] for s in after) / first["rss_mb"] - 1), 2
        ),
        "fds_after_warmup": int(first["fds"]),
        "fds_end": int(last["fds"]),
        "fds_max": int(max(s["fds"] for s in after)),
        "threads_after_warmup": int(first["threads"]),
        "threads_end": int(last["threads"]),
        "threads_max": int(max(s["threads"] for s in after)),
        "p99_ms_median_window": round(statistics.median(p99s), 2) if p99s else None,
        "p99_ms_worst_window": round(max(p99s), 2) if p99s else None,
        "cache_hit_rate": cache.get("hit_rate"),
        "samples": samples,
    }


def plot(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = summary["samples"]
    t = [s["t"] / 60.0 for s in samples]
    fig, axes = plt.subplots(5, 1, figsize=(8, 11), sharex=True)
    series = (
        ("rss_mb", "RSS (MB)"),
        ("rss_anon_mb", "anonymous RSS (MB)"),
        ("fds", "open fds"),
        ("threads", "threads"),
        ("p99_ms", "p99 per window (ms)"),
    )
    for ax, (name, label) in zip(axes, series, strict=True):
        start = 1 if name == "p99_ms" else 0  # no latency before the first window
        ax.plot(t[start:], [s[name] for s in samples[start:]], marker=".", linewidth=1)
        ax.set_ylabel(label)
        ax.axvline(summary["warmup_s"] / 60.0, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(
        f"Soak: {summary['rate']:g} ops/s ({summary['write_fraction']:.0%} writes), "
        f"{summary['duration_s'] / 60:.0f} min; RSS growth after warm-up "
        f"{summary['rss_growth_pct_after_warmup']}%"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds")
    parser.add_argument("--rate", type=float, default=50.0, help="operations per second")
    parser.add_argument("--write-fraction", type=float, default=0.2)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per sample")
    parser.add_argument(
        "--warmup",
        type=float,
        default=300.0,
        help="seconds: until the bounded structures are full (the telemetry ring's 10,000 "
        "rows take 250 s at 40 recalls/s)",
    )
    parser.add_argument("--seed-memories", type=int, default=5_000)
    parser.add_argument("--plot", type=Path, default=None, help="PNG to draw")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--trace", type=int, default=0, help="report the N call sites whose heap grew most"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="athena-soak-") as tmp:
        summary = run(
            args.duration,
            args.rate,
            args.write_fraction,
            args.window,
            args.warmup,
            args.seed_memories,
            Path(tmp),
            trace=args.trace,
        )
    if args.plot:
        plot(summary, args.plot)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    brief = {k: v for k, v in summary.items() if k not in ("samples", "traced_growth")}
    for stat in summary.get("traced_growth", []):
        print(f"{stat['kb']:>10.1f} KB {stat['count']:>+8} blocks")
        for frame in stat["where"]:
            print(f"    {frame}")
    print(
        "| minutes | ops | errors | RSS after warm-up → end (MB) | growth | fds | threads | p99 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {brief['duration_s'] / 60:.0f} | {brief['ops']} | {brief['errors']} | "
        f"{brief['rss_mb_after_warmup']} → {brief['rss_mb_end']} | "
        f"{brief['rss_growth_pct_after_warmup']}% | {brief['fds_after_warmup']} → "
        f"{brief['fds_end']} | {brief['threads_after_warmup']} → {brief['threads_end']} | "
        f"{brief['p99_ms_median_window']} ms (worst {brief['p99_ms_worst_window']}) |"
    )
    print(json.dumps(brief))


if __name__ == "__main__":
    sys.exit(main())
