"""The benchmark harness: build the stores, then per store and embedder run every scenario
over every arm, the oracle, and write the report. ``quick`` is a smoke run (LoCoMo store,
static embedder, small samples, under two minutes); ``full`` runs all three stores with
both embedders. Progress bars go to stderr.
"""

from __future__ import annotations

import os
import pickle
import platform
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from athena.bench import loadgen, oracle
from athena.bench.arms import ARMS, EXECUTING, Arm, open_arms, summarise, wait_for_pools, warm_up
from athena.bench.report import Session, write
from athena.bench.scenarios import fit, latency_scenarios
from athena.bench.turns import TURNS
from athena.bench.workloads import STORES, Store, build_store, working_copy
from athena.embedding import load_embedder
from athena.errors import InvalidInput
from athena.heap import release_heap, settle_heap
from athena.large_pages import on_large_pages

DATA_DEFAULT: Final = Path("../shared/data/locomo/locomo10.json")
DATA_FALLBACK: Final = Path("/work/shared/data/locomo/locomo10.json")
BUILD_CACHE_ENTRIES: Final = 16_384

Bar = Callable[[int], None]
Bars = Callable[[str, int], Any]  # (label, total) -> context manager yielding a Bar


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much of everything to run; ``budget_s`` bounds each latency scenario's time."""

    cached: int = 300  # repeats of one query
    cold: int = 300  # distinct questions
    complex: int = 150
    learn: int = 120  # warm-up learning pass (distinct questions, every arm)
    # 40 queries of 3 runs took 1-3 s a session; a median of three noisy runs, and the
    # least of several such medians, made most of the oracle's regret on stores where two
    # strategies tie (the held-out oracle in the report).
    oracle: int = 100
    oracle_repeats: int = 5
    oracle_learn: int = 60
    zipf_limit: int | None = None
    # (turns, bursts a turn, interval s): one burst a turn, so an arm's bursts do not share
    # a moment of the machine; twelve and eight an arm (see bench.verdicts)
    c10: tuple[int, int, float] = (12, 1, 0.25)
    c100: tuple[int, int, float] = (8, 1, 1.5)
    ramp_step_s: float = 1.0
    ramp: tuple[float, float, float] = (50.0, 1_200.0, 80_000.0)  # start, cold max, cached max
    ramp_factor: float = 1.5
    ramp_refine: int = 2  # bisecting steps between each arm's last pass and its failure
    budget_s: float = 45.0
    warm_rounds: int = 2


FULL: Final = Sizes()
QUICK: Final = Sizes(
    cached=150,
    cold=60,
    complex=40,
    learn=30,
    oracle=10,
    oracle_repeats=3,
    oracle_learn=20,
    zipf_limit=160,
    c10=(2, 2, 0.2),
    c100=(1, 1, 0.8),
    ramp_step_s=0.5,
    ramp=(100.0, 1_000.0, 40_000.0),
    ramp_factor=2.0,
    ramp_refine=1,
    budget_s=8.0,
)


@dataclass(frozen=True, slots=True)
class Plan:
    mode: str
    data: Path
    out: Path
    embedders: tuple[str, ...]
    stores: tuple[str, ...]
    load_stores: tuple[str, ...]  # where the concurrency and throughput scenarios run
    sizes: Sizes
    target: int = 100_000
    arms: tuple[str, ...] = ARMS
    pools: str = "full"  # see arms.open_arms
    notes: tuple[str, ...] = field(default_factory=tuple)


def plan_for(mode: str, data: Path, out: Path, embedders: Sequence[str]) -> Plan:
    """The plan of ``quick`` or ``full`` mode."""
    if mode == "quick":
        return Plan("quick", data, out, ("static",), ("locomo",), ("locomo",), QUICK)
    note = (
        "the concurrency and throughput scenarios run on the 100k-tenants store only; "
        "each latency scenario is sized to about budget_s seconds for all arms together, "
        "so on slow stores it asks fewer questions (details.shrunk says how many)"
    )
    return Plan("full", data, out, tuple(embedders), STORES, ("100k-tenants",), FULL, notes=(note,))


def resolve_data(given: Path | None) -> Path:
    """``given``, else ../shared/data/locomo/locomo10.json, else the /work/shared copy."""
    if given is not None:
        return given
    return DATA_DEFAULT if DATA_DEFAULT.exists() else DATA_FALLBACK


def machine() -> dict[str, Any]:
    cpu = Path("/proc/cpuinfo")
    model = "?"
    if cpu.exists():
        lines = cpu.read_text().splitlines()
        model = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?"
        )
    ram = Path("/proc/meminfo")
    gib = round(int(ram.read_text().split()[1]) / 2**20, 1) if ram.exists() else None
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": gib,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "load_avg_start": os.getloadavg(),
    }


@contextmanager
def no_bars(label: str, total: int) -> Iterator[Bar]:
    yield lambda n: None


def share_indexes(arms: Sequence[Arm]) -> bool:
    """Let every arm search the first arm's vector and lexical indexes (same file, same model).

    In one process a store builds its indexes once; seven private copies would only be a
    benchmark artefact (seven 100k HNSW builds and seven BM25 indexes). A write's catch-up
    then falls on whichever arm searches first, and the rotation spreads that over the arms.
    """
    first = arms[0].memory
    for arm in arms[1:]:  # text only: the model does not matter
        arm.memory.pipeline.ctx.lexicon = first.pipeline.ctx.lexicon
    if any(arm.memory.embedder.name != first.embedder.name for arm in arms[1:]):
        return False
    for arm in arms[1:]:
        arm.memory.pipeline.ctx.indexes = first.pipeline.ctx.indexes
    return True


def run_session(
    store: Store, plan: Plan, bars: Bars, ceiling: dict[str, float]
) -> tuple[Session, Any]:
    """Every scenario and the oracle on one store with one embedder."""
    sizes, embedder = plan.sizes, store.embedder
    session = Session(store.name, embedder, store.memories, store.tenants)
    details = session.details
    db = working_copy(store, plan.out / "work")
    rng = random.Random(f"{store.name}/{embedder}")
    asks = list(store.asks)
    rng.shuffle(asks)
    learn, rest = asks[: sizes.learn], asks[sizes.learn :]
    tenants = sorted({a.tenant for a in asks})
    # The arms open in an order shuffled afresh for each session of each run (a seed per
    # session alone kept one order run after run; see opening_order), kept in the details.
    seed = f"{store.name}/{embedder}/{random.SystemRandom().getrandbits(64)}"
    with open_arms(db, embedder, plan.arms, pools=plan.pools, shuffle=seed) as arms:
        details["opened"] = [arm.name for arm in sorted(arms, key=lambda arm: arm.opened)]
        details["turns"] = TURNS  # how the arms took turns (benchmarks/neighbours.py reads it)
        details["shared_indexes"] = share_indexes(arms)
        started = time.perf_counter()
        details["pools"] = wait_for_pools(arms)
        details["pool_start_s"] = round(time.perf_counter() - started, 2)
        total = len(tenants) * sizes.warm_rounds + len(learn)
        with bars(f"{store.name}/{embedder}: warm-up", total) as bar:
            warm = warm_up(
                arms,
                tenants,
                learn,
                advance=bar,
                rounds=sizes.warm_rounds,
                learn_budget_s=sizes.budget_s / 2,
            )
        details["warm_up"] = warm
        # A long-running process, as `athena serve` is: what start-up and warm-up made is kept
        # out of the collector's full walks (run() releases it when the session ends).
        details["heap_frozen"] = settle_heap()
        per_recall = float(warm["cold_recall_ms"] or 5.0)
        by = {arm.name: arm for arm in arms}
        # A strategy is feasible if its pool is up and it did not fall back while warming up.
        forced = [by[n] for n in EXECUTING if n in by and _feasible(by[n], details)]
        count = fit(
            sizes.oracle, per_recall * sizes.oracle_repeats, len(forced) + 1, sizes.budget_s
        )
        sample, oracle_learn = rest[:count], rest[-sizes.oracle_learn :]
        with bars(f"{store.name}/{embedder}: oracle", len(sample)) as bar:
            measured = oracle.measure(
                forced,
                by["adaptive"],
                sample,
                oracle_learn,
                repeats=sizes.oracle_repeats,
                advance=bar,
                learn_budget_s=sizes.budget_s / 2,
            )
        details["oracle"] = {
            "queries": len(measured.costs),
            "wanted": sizes.oracle,
            "feasible": [a.name for a in forced],
            "adaptive_picks": dict(measured.adaptive_picks),
        }
        for arm in arms:
            arm.reset()
        latency_scenarios(session, arms, rest, plan, per_recall, bars)
        if store.name in plan.load_stores:
            _load(session, arms, rest, plan, bars, ceiling)
        details["pool_end"] = {a.name: _pool_summary(a) for a in arms if a.spec.pool != "off"}
        details["selector"] = by["adaptive"].memory.execution_stats().get("selector", {})
        details["errors"] = {a.name: a.errors[:3] for a in arms if a.errors}
    return session, measured


def _feasible(arm: Arm, details: dict[str, Any]) -> bool:
    if arm.name in details["warm_up"]["fell_back_or_failed"]:
        return False
    return arm.spec.pool == "off" or str(details["pools"].get(arm.name, "")).startswith("up")


def _pool_summary(arm: Arm) -> dict[str, Any]:
    pool = arm.pool()
    keys = (
        "workers",
        "startup_ms",
        "tasks_done",
        "tasks_failed",
        "retries",
        "restarts",
        "crashes",
        "timeouts",
        "avg_latency_ms",
        "p95_latency_ms",
        "scale_ups",
        "error",
    )
    return {k: pool[k] for k in keys if k in pool}


def _load(
    session: Session,
    arms: list[Arm],
    rest: list[Any],
    plan: Plan,
    bars: Bars,
    ceiling: dict[str, float],
) -> None:
    sizes, where = plan.sizes, f"{session.store}/{session.embedder}"
    for label, (blocks, per, interval), conc in (
        ("10 concurrent", sizes.c10, 10),
        ("100 concurrent", sizes.c100, 100),
    ):
        for arm in arms:
            arm.reset()
        with bars(f"{where}: {label}", blocks * len(arms)) as bar:
            bursts = loadgen.bursts(
                arms,
                rest,
                concurrency=conc,
                per_block=per,
                blocks=blocks,
                interval=interval,
                advance=bar,
            )
        session.scenarios[label] = bursts
        session.details.setdefault("scenarios", {})[label] = {
            "bursts": blocks * per,
            "concurrency": conc,
            "interval_s": interval,
            "telemetry": {n: summarise(b.rows) for n, b in bursts.items() if b.rows},
        }
    start, cold_max, cached_max = sizes.ramp
    for label, cached, stop in (
        ("throughput cold", False, cold_max),
        ("throughput cached", True, cached_max),
    ):
        ladder = loadgen.rates(start, stop, sizes.ramp_factor)
        total = (len(ladder) + sizes.ramp_refine) * len(arms)  # at most; a bar may end early
        with bars(f"{where}: {label}", total) as bar:
            session.ramps[label] = loadgen.ramp(
                arms,
                rest,
                cached=cached,
                ladder=ladder,
                step_s=sizes.ramp_step_s,
                refine=sizes.ramp_refine,
                advance=bar,
            )
    session.details["ramps"] = {
        label: {arm: [asdict(step) for step in steps] for arm, steps in ramp.items()}
        for label, ramp in session.ramps.items()
    }
    session.details.update(
        p99_bound_ms=loadgen.P99_BOUND_MS,
        ramp_factor=sizes.ramp_factor,
        ramp_refine=sizes.ramp_refine,
        harness_ceiling_qps=ceiling["throughput cold"],
        harness_ceiling_cached_qps=ceiling["throughput cached"],
    )


def run(plan: Plan, command: str, bars: Bars = no_bars) -> dict[str, Any]:
    """Run ``plan``; write bench.json, bench.md and the plots into ``plan.out``."""
    began = time.perf_counter()
    meta: dict[str, Any] = {
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "mode": plan.mode,
        "data": str(plan.data),
        "notes": list(plan.notes),
        "sizes": {k: getattr(plan.sizes, k) for k in plan.sizes.__dataclass_fields__},
        "arms": list(plan.arms),
        "pools": plan.pools,
        "heap": "each session freezes its warmed heap out of full collections (settle_heap)",
        "large_pages": on_large_pages(),  # glibc's heap on huge pages (athena.large_pages)
        "indexes": "each store's vector graphs are built once, when the store is built, and"
        " saved as snapshots that every session's processes load (Memory.prepare_indexes)",
    }
    ladder = loadgen.rates(plan.sizes.ramp[0], plan.sizes.ramp[2], plan.sizes.ramp_factor)
    step_s = plan.sizes.ramp_step_s
    ceiling = {  # what the generator itself can send: through a thread, and inline
        "throughput cold": loadgen.ceiling(ladder, step_s),
        "throughput cached": loadgen.ceiling(ladder, step_s, pacer=True),
    }
    meta["harness_ceiling_qps"] = ceiling["throughput cold"]
    meta["harness_ceiling_cached_qps"] = ceiling["throughput cached"]
    sessions: list[Session] = []
    parts: list[tuple[str, Any]] = []
    stores: dict[str, Any] = {}
    for embedder in plan.embedders:
        # A bulk build repeats each LoCoMo text in every copy: a cache that holds all ~9.4k
        # distinct texts embeds each once (the default cache is sized for queries).
        model = load_embedder(embedder, cache_size=BUILD_CACHE_ENTRIES)
        for name in plan.stores:
            copies = 1 if name == "locomo" else -(-plan.target // 9_000)
            with bars(f"build {name}/{embedder}", copies) as bar:
                store = build_store(
                    name,
                    embedder,
                    plan.data,
                    plan.out,
                    target=plan.target,
                    model=model,
                    advance=bar,
                )
            stores[f"{name}/{embedder}"] = {
                "memories": store.memories,
                "tenants": store.tenants,
                "build_s": store.build_s,
                "graphs_s": store.graphs_s,
            }
            print(f"== {name}/{embedder}: {store.memories} memories", file=sys.stderr, flush=True)
            try:
                session, measured = run_session(store, plan, bars, ceiling)
            finally:
                release_heap()  # a closed session's objects are collectable again
            sessions.append(session)
            parts.append((f"{name}/{embedder}", measured))
            keep = plan.out / "sessions"  # raw results, so a report can be redrawn later
            keep.mkdir(parents=True, exist_ok=True)
            with (keep / f"{name}-{embedder}.pickle").open("wb") as fh:
                pickle.dump((session, measured), fh)
    meta["stores"] = stores
    regret = _regret(parts)
    meta["load_avg_end"] = os.getloadavg()
    meta["total_s"] = round(time.perf_counter() - began, 1)
    return write(plan.out, sessions, meta, regret)


def redraw(out: Path, command: str) -> dict[str, Any]:
    """Write the report again from the sessions a run kept in ``out/sessions`` (each is
    saved as soon as it ends, so an interrupted full run still reports what it measured).

    >>> # redraw(Path("bench-out"), "athena bench --redraw --out bench-out")
    """
    kept = sorted((out / "sessions").glob("*.pickle"), key=lambda p: p.stat().st_mtime)
    if not kept:
        raise FileNotFoundError(f"no saved sessions in {out / 'sessions'}")
    parts: list[tuple[str, Any]] = []
    sessions: list[Session] = []
    for path in kept:
        try:
            with path.open("rb") as fh:
                session, measured = pickle.load(fh)  # our own files, written by run()
        except (pickle.UnpicklingError, TypeError, AttributeError, ValueError, EOFError) as exc:
            raise InvalidInput(
                f"{path} was saved by another version of Athena or is damaged ({exc}); "
                "run that session again (--store) or remove it"
            ) from exc
        sessions.append(session)
        parts.append((f"{session.store}/{session.embedder}", measured))
    began = datetime.fromtimestamp(min(p.stat().st_mtime for p in kept), UTC)
    meta: dict[str, Any] = {
        "machine": machine(),
        "date": began.isoformat(timespec="seconds"),
        "command": command,
        "mode": "full" if len(sessions) > 1 else "quick",
        "redrawn_from": [p.name for p in kept],
        "load_avg_end": os.getloadavg(),
    }
    return write(out, sessions, meta, _regret(parts))


def _regret(parts: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    usable = [(name, m) for name, m in parts if m.costs]
    if not usable:
        return {}
    total = oracle.merge([(m.costs, m.adaptive) for _, m in usable])
    out = total.to_dict()
    out["per_query"] = [round(v, 4) for v in total.per_query]
    out["by_session"] = {name: oracle.regret(m.costs, m.adaptive).to_dict() for name, m in usable}
    # Against an oracle priced on runs it did not choose by (older sessions kept no runs).
    runs = [(name, getattr(m, "runs", None) or {}) for name, m in usable]
    out["held_out"] = oracle.held_out([r for _, r in runs])
    for name, r in runs:
        session = oracle.held_out([r])
        session.pop("per_query", None)  # the plot draws all queries' together
        out["by_session"][name]["held_out"] = session
    # The choices alone (older saved sessions kept no per-query picks: none then).
    picked = [(name, m) for name, m in usable if len(getattr(m, "picks", ())) == len(m.costs)]
    if picked:
        costs = [c for _, m in picked for c in m.costs]
        out["decision"] = oracle.decision_regret(costs, [p for _, m in picked for p in m.picks])
        for name, m in picked:
            out["by_session"][name]["decision"] = oracle.decision_regret(m.costs, m.picks)
    return out


def with_sizes(plan: Plan, **changes: Any) -> Plan:
    """``plan`` with some sizes changed (the tests' tiny runs)."""
    return replace(plan, sizes=replace(plan.sizes, **changes))
