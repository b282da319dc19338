"""The one-at-a-time latency scenarios, each over every arm, interleaved op by op.

* simple cached query: one question asked again and again (each arm asks it once first);
* cold recall: distinct questions, caches emptied first: nothing repeats;
* mixed workload 50% cache: the Zipf stream, about half of it repeats;
* mixed + writes: the same stream with a write before about a tenth of the operations;
* complex multi-layer: distinct questions over all five layers with k=50, plus the parallel
  limit from the sequential arm's measured per-layer times on this machine's cores.

Each scenario's size is shrunk to fit ``budget_s`` given the cold-recall cost the oracle
measured, and an arm that overruns its share of the budget several times over is stopped
for the rest of that scenario; both are written into the session's details.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from athena.bench.arms import (
    Arm,
    Outcome,
    layer_medians,
    parallel_limit,
    percentile,
    recall_limit,
    run_ops,
    summarise,
)
from athena.bench.workloads import Ask, Op, recall_ops, with_writes, zipf_stream
from athena.records import LAYERS

if TYPE_CHECKING:
    from athena.bench.report import Session
    from athena.bench.runner import Plan

MIN_SAMPLES: Final = 10
COMPLEX_K: Final = 50
OVERRUN: Final = 3.0  # an arm may spend this many times its share of the budget

Bars = Callable[[str, int], Any]


def fit(wanted: int, per_recall_ms: float, arms: int, budget_s: float) -> int:
    """How many operations fit ``budget_s`` when each costs every arm ``per_recall_ms``.

    >>> fit(300, 3.0, 7, 60.0), fit(300, 400.0, 7, 60.0)
    (300, 21)
    """
    affordable = int(budget_s * 1000.0 / max(per_recall_ms * arms, 1e-6))
    return max(min(wanted, affordable), min(wanted, MIN_SAMPLES))


def zipf_ops(pool: Sequence[Ask], limit: int, rng_seed: str, cap: int | None) -> list[Op]:
    """A Zipf stream (about half repeats) no longer than ``limit``: over fewer questions
    when the whole pool would make it longer."""
    size = len(pool)
    bound = limit if cap is None else min(cap, limit)
    while True:
        stream = zipf_stream(size, random.Random(rng_seed), limit=cap)
        if len(stream) <= limit or size <= MIN_SAMPLES:
            # Never past the budget, even when the smallest pool still ran long.
            return recall_ops(pool, stream[: max(bound, MIN_SAMPLES)])
        size = max(MIN_SAMPLES, int(size * 0.8))


def caps(session: Session, arms: Sequence[Arm], plan: Plan) -> dict[str, float]:
    """Seconds each arm may spend in one scenario: a few times its share of the budget, or
    half its share for a forced-distributed arm whose pool fell back or failed while warming
    up (one slow sample shows the failure; more would only burn the budget)."""
    share = plan.sizes.budget_s / max(len(arms), 1)
    troubled = session.details.get("warm_up", {}).get("fell_back_or_failed", {})
    return {
        a.name: share / 2 if a.name in troubled and a.strategy == "distributed" else OVERRUN * share
        for a in arms
    }


def _run(
    session: Session,
    label: str,
    arms: Sequence[Arm],
    ops: Sequence[Op],
    plan: Plan,
    bars: Bars,
    prime: Ask | None = None,
    **kw: Any,
) -> Outcome:
    for arm in arms:
        arm.reset()
        if prime is not None:
            arm.recall(prime)  # the query is now cached for every arm that caches
    with bars(f"{session.store}/{session.embedder}: {label}", len(ops)) as bar:
        outcome = run_ops(arms, ops, advance=bar, cap_s=caps(session, arms, plan), **kw)
    session.scenarios[label] = outcome.arms
    info: dict[str, Any] = {
        "operations": len(ops),
        "telemetry": {name: summarise(s.rows) for name, s in outcome.arms.items() if s.rows},
    }
    stopped = {
        n: s.extra["stopped_after"] for n, s in outcome.arms.items() if "stopped_after" in s.extra
    }
    if stopped:
        info["stopped_over_budget"] = stopped
    if outcome.writes_ms:
        info["writes"] = len(outcome.writes_ms)
        info["write_p50_ms"] = round(percentile(outcome.writes_ms, 50), 3)
    session.details.setdefault("scenarios", {})[label] = info
    return outcome


def latency_scenarios(
    session: Session,
    arms: list[Arm],
    rest: Sequence[Ask],
    plan: Plan,
    per_recall_ms: float,
    bars: Bars,
) -> None:
    """Run the five latency scenarios into ``session``."""
    sizes, budget, n_arms = plan.sizes, plan.sizes.budget_s, len(arms)
    shrunk: dict[str, str] = {}

    def size(label: str, wanted: int, cost: float = per_recall_ms) -> int:
        got = fit(wanted, cost, n_arms, budget)
        if got < wanted:
            shrunk[label] = f"{got} of {wanted}"
        return got

    hot = rest[0]
    # Only the arms that cannot cache pay a full recall per repeat.
    uncached = sum(1 for a in arms if a.strategy not in ("cache", "hybrid", "adaptive"))
    count = size("simple cached query", sizes.cached, per_recall_ms * uncached / n_arms)
    ops = [Op("recall", hot)] * count
    _run(session, "simple cached query", arms, ops, plan, bars, prime=hot)
    cold = list(rest[1 : 1 + size("cold recall", sizes.cold)])
    _run(session, "cold recall", arms, recall_ops(cold, range(len(cold))), plan, bars)
    # A recall in the stream costs about half a cold one on average for the caching arms.
    limit = size("mixed workload 50% cache", 100_000, per_recall_ms * 0.8)
    mixed = zipf_ops(rest, limit, f"zipf/{session.store}", sizes.zipf_limit)
    if limit < 100_000:
        shrunk["mixed workload 50% cache"] = f"stream of {len(mixed)} over fewer questions"
    _run(session, "mixed workload 50% cache", arms, mixed, plan, bars)
    session.details["scenarios"]["mixed workload 50% cache"]["repeat_share"] = round(
        1 - len({(op.ask.tenant, op.ask.text) for op in mixed}) / max(len(mixed), 1), 3
    )
    writes = with_writes(mixed, random.Random(f"writes/{session.store}"))
    _run(session, "mixed + writes", arms, writes, plan, bars)
    complex_asks = list(rest[-size("complex multi-layer", sizes.complex, per_recall_ms * 2) :])
    out = _run(
        session,
        "complex multi-layer",
        arms,
        recall_ops(complex_asks, range(len(complex_asks))),
        plan,
        bars,
        k=COMPLEX_K,
        layers=LAYERS,
    )
    session.details["complex"] = complex_limit(out)
    session.details["shrunk"] = shrunk


def complex_limit(outcome: Outcome) -> dict[str, Any]:
    """The parallel limit from the sequential arm's per-layer medians, and what parallel got.

    ``limit`` is the whole recall's (the layers fan out, the rest of the recall does not:
    :func:`recall_limit`), the one PARALLEL's speedup over SEQUENTIAL is judged against;
    ``layers_limit`` the layers' own, were they the whole recall. ``hand_off_us`` is what
    handing one task to a reader thread and back costs on this machine.
    """
    seq, par = outcome.arms.get("sequential"), outcome.arms.get("parallel")
    if seq is None or par is None:
        return {}
    layers = layer_medians(seq.rows)
    cores = os.cpu_count() or 1
    p50s, p50p = percentile(seq.ok(), 50), percentile(par.ok(), 50)
    limit = recall_limit(p50s, layers, cores)
    achieved = p50s / p50p if p50p and p50p == p50p else float("nan")
    out: dict[str, Any] = {
        "cores": cores,
        "layer_ms_p50": layers,
        "layers_limit": round(parallel_limit(layers, cores), 4),
        "outside_layers_ms": round(max(p50s - sum(layers.values()), 0.0), 4),
        "hand_off_us": round(hand_off_us(), 1),
        "limit": round(limit, 4),
        "sequential_p50_ms": round(p50s, 4),
        "parallel_p50_ms": round(p50p, 4),
        "achieved": round(achieved, 4),
        "share_of_limit": round(achieved / limit, 4) if limit else None,
    }
    return out


def hand_off_us(times: int = 2000) -> float:
    """Median µs to hand a no-op to a thread pool's thread and get its answer back.

    >>> hand_off_us(50) > 0
    True
    """
    with cf.ThreadPoolExecutor(2) as pool:
        for _ in range(100):
            pool.submit(int).result()
        spent = []
        for _ in range(times):
            start = time.perf_counter()
            pool.submit(int).result()
            spent.append(time.perf_counter() - start)
    return statistics.median(spent) * 1e6
