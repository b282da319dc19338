"""Worker faults under load: SIGKILL a pool worker every second, SIGSTOP others, keep answering.

``python benchmarks/reliability/pool_faults.py [--qps 100] [--duration 60] [--kill-every 1]
[--stop-every 5] [--conversations 10] [--db PATH] [--json OUT]``

- Builds (or reuses, with ``--db``) a LoCoMo database with ``import_locomo``.
- Runs an open-loop recall load: arrivals at a fixed rate (``--qps``), each a LoCoMo
  question of its conversation's tenant with ``strategy="distributed"`` and ``explain``
  on; latency runs from the scheduled arrival, so queueing counts. Forced strategies
  neither read nor fill the result cache, so every recall really goes to the pool.
- Meanwhile a fault thread SIGKILLs a random live worker every ``--kill-every`` seconds
  (pids from ``execution_stats()["pool"]["pids"]``) and SIGSTOPs another one every
  ``--stop-every`` seconds: a stopped worker holds its task past the pool's 5 s task
  timeout, so the pool must kill and replace it and retry the task.
- A recall is *answered* when it returns hits (straight from the pool, after a retry, or
  after the documented fallback to the parallel strategy, ``explain["fallback"]``).
- After the load it waits for the pool to be back to full health (state running, every
  worker ready, at least ``min_workers``) and reports how long that took.

Prints a Markdown summary; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path("/work/shared/data/locomo/locomo10.json")
if not DATA.exists():  # a clean clone sits beside ../shared
    DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "locomo" / "locomo10.json"


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    fallback_reasons: Counter[str] = field(default_factory=Counter)
    executed: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    began: float = 0.0
    timeline: dict[int, int] = field(default_factory=dict)  # answered, by arrival second
    fallback_seconds: dict[int, int] = field(default_factory=dict)
    latency_by_second: dict[int, list[float]] = field(default_factory=dict)


def build_db(db: Path, conversations: int) -> Path:
    """A LoCoMo database of the first ``conversations`` conversations (reused if present)."""
    from athena import Memory
    from athena.locomo.importer import import_locomo

    if db.exists():
        return db
    source = DATA
    if conversations < 10:
        source = db.with_suffix(".json")
        data = json.loads(DATA.read_text(encoding="utf-8"))[:conversations]
        source.write_text(json.dumps(data), encoding="utf-8")
    with Memory(db, pool="off") as memory:
        import_locomo(memory, source)
    return db


def questions(conversations: int) -> list[tuple[str, str]]:
    from athena.locomo.data import load_locomo

    out = []
    for conv in load_locomo(DATA)[:conversations]:
        out += [(conv.sample_id, q.question) for q in conv.questions if q.question.strip()]
    return out


POOL_FIGURES = (
    "state",
    "workers",
    "ready",
    "restarts",
    "crashes",
    "timeouts",
    "retries",
    "min_workers",
    "max_workers",
    "scale_ups",
    "scale_downs",
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Faults:
    """SIGKILLs a random worker every ``kill_every`` s, SIGSTOPs one every ``stop_every`` s."""

    def __init__(self, memory: Any, kill_every: float, stop_every: float, seed: int) -> None:
        self.memory, self.kill_every, self.stop_every = memory, kill_every, stop_every
        self.rng = random.Random(seed)
        self.killed: list[int] = []
        self.stopped: list[int] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="faults", daemon=True)

    def _pids(self) -> list[int]:
        # The backend's own health() (what execution_stats()["pool"] reports), read
        # directly: the full execution_stats() also summarises telemetry, which is slow
        # under load and would throttle the faults.
        backend = self.memory.engine.pools.backend
        pool = backend.health() if backend is not None else {}
        return [int(p) for p in pool.get("pids", []) if p not in self.stopped]

    def _loop(self) -> None:
        began = time.monotonic()
        next_kill, next_stop = began + self.kill_every, began + self.stop_every / 2
        while not self.stop_event.wait(0.05):
            now = time.monotonic()
            if now >= next_kill:
                next_kill += self.kill_every
                self._signal(signal.SIGKILL, self.killed)
            if self.stop_every > 0 and now >= next_stop:
                next_stop += self.stop_every
                self._signal(signal.SIGSTOP, self.stopped)

    def _signal(self, sig: signal.Signals, into: list[int]) -> None:
        pids = self._pids()
        if not pids:
            return
        pid = self.rng.choice(pids)
        try:
            os.kill(pid, sig)
            into.append(pid)
        except ProcessLookupError:
            pass

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()
        for pid in self.stopped:  # any the pool has not reaped yet: let them go
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def recall_once(memory: Any, tenant: str, question: str, due: float, out: Outcome) -> None:
    try:
        result = memory.recall(question, tenant=tenant, k=10, strategy="distributed", explain=True)
    except Exception as exc:  # counted: the figure is how many were answered
        with out.lock:
            out.errors[type(exc).__name__] += 1
        return
    latency = (time.perf_counter() - due) * 1000.0
    explain = result.explain or {}
    with out.lock:
        out.answered += 1
        out.latencies_ms.append(latency)
        out.latency_by_second.setdefault(int(due - out.began), []).append(latency)
        out.executed[str(explain.get("executed"))] += 1
        second = int(due - out.began)
        out.timeline[second] = out.timeline.get(second, 0) + 1
        if explain.get("fallback"):
            out.fallbacks += 1
            reason = re.sub(r"\d+(\.\d+)?", "N", str(explain["fallback"]))[:120]
            out.fallback_reasons[reason] += 1
            out.fallback_seconds[second] = out.fallback_seconds.get(second, 0) + 1


def wait_healthy(memory: Any, timeout: float) -> tuple[bool, float, dict[str, Any]]:
    began = time.monotonic()
    pool: dict[str, Any] = {}
    while time.monotonic() - began < timeout:
        pool = memory.execution_stats()["pool"]
        workers, ready = int(pool.get("workers", 0)), int(pool.get("ready", 0))
        if (
            pool.get("state") == "running"
            and workers >= int(pool.get("min_workers", 1))
            and ready == workers
            and not pool.get("busy_pids")
        ):
            return True, time.monotonic() - began, pool
        time.sleep(0.2)
    return False, time.monotonic() - began, pool


def run(
    db: Path,
    conversations: int,
    qps: float,
    duration: float,
    kill_every: float,
    stop_every: float,
    seed: int,
    threads: int = 64,
) -> dict[str, Any]:
    from athena import Memory

    asked = questions(conversations)
    rng = random.Random(seed)
    out = Outcome()
    with Memory(db) as memory:
        warm_tenant, warm_question = asked[0]
        memory.recall(warm_question, tenant=warm_tenant, strategy="distributed")  # starts the pool
        pool_before = memory.execution_stats()["pool"]
        faults = Faults(memory, kill_every, stop_every, seed)
        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="load")
        total = int(qps * duration)
        began = out.began = time.perf_counter()
        faults.start()
        for i in range(total):
            due = began + i / qps
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            tenant, question = rng.choice(asked)
            executor.submit(recall_once, memory, tenant, question, due, out)
        offered_s = time.perf_counter() - began
        faults.stop()
        executor.shutdown(wait=True)
        load_s = time.perf_counter() - began
        healthy, recovery_s, pool_after = wait_healthy(memory, 120.0)
        after = memory.recall(
            warm_question, tenant=warm_tenant, strategy="distributed", explain=True
        )
    lat = out.latencies_ms
    return {
        "qps_target": qps,
        "duration_s": duration,
        "recalls_offered": total,
        "offered_rate": round(total / offered_s, 1),
        "answered": out.answered,
        "answered_pct": round(100.0 * out.answered / total, 3) if total else 0.0,
        "errors": dict(out.errors),
        "fallbacks": out.fallbacks,
        "fallback_reasons": dict(out.fallback_reasons),
        "executed": dict(out.executed),
        "latency_ms": {
            "p50": round(percentile(lat, 0.50), 1),
            "p95": round(percentile(lat, 0.95), 1),
            "p99": round(percentile(lat, 0.99), 1),
            "max": round(max(lat), 1) if lat else None,
            "mean": round(statistics.fmean(lat), 1) if lat else None,
        },
        "p99_ms_by_second": {
            str(k): round(percentile(v, 0.99), 1) for k, v in sorted(out.latency_by_second.items())
        },
        "fallbacks_by_second": {str(k): v for k, v in sorted(out.fallback_seconds.items())},
        "load_s": round(load_s, 1),
        "sigkills": len(faults.killed),
        "sigstops": len(faults.stopped),
        "pool_before": {k: pool_before.get(k) for k in ("workers", "min_workers", "max_workers")},
        "pool_after": {k: pool_after.get(k) for k in POOL_FIGURES},
        "healthy_after": healthy,
        "recovery_s": round(recovery_s, 1),
        "after_recall_executed": (after.explain or {}).get("executed"),
        "after_recall_fallback": (after.explain or {}).get("fallback"),
        "conversations": conversations,
        "seed": seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qps", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--kill-every", type=float, default=1.0)
    parser.add_argument("--stop-every", type=float, default=5.0, help="0: never")
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", type=Path, default=None, help="LoCoMo DB (built if missing)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="athena-pool-") as tmp:
        db = build_db(args.db or Path(tmp) / "locomo.db", args.conversations)
        summary = run(
            db,
            args.conversations,
            args.qps,
            args.duration,
            args.kill_every,
            args.stop_every,
            args.seed,
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    lat = summary["latency_ms"]
    print("| offered | answered | errors | fallbacks | p50 ms | p99 ms | kills | stops | healthy |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {summary['recalls_offered']} @ {summary['offered_rate']}/s | "
        f"{summary['answered']} ({summary['answered_pct']}%) | {sum(summary['errors'].values())} "
        f"| {summary['fallbacks']} | {lat['p50']} | {lat['p99']} | {summary['sigkills']} | "
        f"{summary['sigstops']} | {summary['healthy_after']} in {summary['recovery_s']} s |"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
