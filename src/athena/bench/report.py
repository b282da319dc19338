"""bench.json, bench.md (the seed's table beside ours, goals met or missed) and the plots."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from athena.bench.arms import ARMS, FIXED, Samples, percentile
from athena.bench.goals import Goal, evaluate
from athena.bench.loadgen import RampStep, best_step
from athena.bench.verdicts import never_slower

LATENCY: Final = (
    "simple cached query",
    "cold recall",
    "mixed workload 50% cache",
    "mixed + writes",
    "complex multi-layer",
    "10 concurrent",
    "100 concurrent",
)
THROUGHPUT: Final = ("throughput cold", "throughput cached")
MIXED: Final = ("mixed workload 50% cache", "mixed + writes")  # half hits: judged by the mean
SCENARIOS: Final = (*LATENCY, *THROUGHPUT)
# The seed's "Performance Targets" (current, Phase 7bc target), which it never measured.
SEED: Final = {
    "simple cached query": ("50 ms", "5 ms"),
    "mixed workload 50% cache": ("150 ms", "30 ms"),
    "complex multi-layer": ("200 ms", "50 ms"),
    "10 concurrent": ("5000 ms", "500 ms"),
    "100 concurrent": ("timeout", "2000 ms"),
    "throughput cold": ("50 qps", "200+ qps"),
    "throughput cached": ("50 qps", "200+ qps"),
}


@dataclass(slots=True)
class Session:
    """Everything measured on one store with one embedder."""

    store: str
    embedder: str
    memories: int
    tenants: int
    scenarios: dict[str, dict[str, Samples]] = field(default_factory=dict)
    ramps: dict[str, dict[str, list[RampStep]]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def _num(value: float | None, digits: int = 4) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


def hit_rate(counts: dict[str, float]) -> float:
    lookups = sum(counts.get(k, 0.0) for k in ("hits", "partial_hits", "misses"))
    return counts.get("hits", 0.0) / lookups if lookups else 0.0


def rows(sessions: Sequence[Session]) -> list[dict[str, Any]]:
    """One row per (scenario, arm, embedder, store), in the order of SCENARIOS and ARMS."""
    out: list[dict[str, Any]] = []
    for s in sessions:
        for scenario in SCENARIOS:
            if scenario in s.scenarios:
                out += _latency_rows(s, scenario, s.scenarios[scenario])
            elif scenario in s.ramps:
                out += _ramp_rows(s, scenario, s.ramps[scenario])
    return out


def _latency_rows(s: Session, scenario: str, arms: dict[str, Samples]) -> list[dict[str, Any]]:
    base = arms.get("baseline")
    base_p50 = percentile(base.ok(), 50) if base else float("nan")
    out = []
    for name in ARMS:
        if name not in arms:
            continue
        sam, ok = arms[name], arms[name].ok()
        p50 = percentile(ok, 50)
        out.append(
            {
                "scenario": scenario,
                "strategy": name,
                "embedder": s.embedder,
                "store": s.store,
                "p50_ms": _num(p50),
                "p95_ms": _num(percentile(ok, 95)),
                "p99_ms": _num(percentile(ok, 99)),
                "mean_ms": _num(statistics.fmean(ok) if ok else float("nan")),
                "qps": _num(sam.qps, 1),
                "errors": max(sam.errors, len(sam.ms) - len(ok)),
                "hit_rate": round(hit_rate(sam.cache), 4),
                "ratio_vs_baseline": _num(
                    base_p50 / p50 if p50 and p50 == p50 else float("nan"), 3
                ),
                "samples": len(sam.ms),
            }
        )
    return out


def _ramp_rows(s: Session, scenario: str, arms: dict[str, list[RampStep]]) -> list[dict[str, Any]]:
    base = best_step(arms.get("baseline", []))
    base_qps = base.rate if base else 0.0
    out = []
    for name in ARMS:
        if name not in arms:
            continue
        steps = arms[name]
        best = best_step(steps)
        shown = best or (steps[0] if steps else None)
        qps = best.rate if best else 0.0
        out.append(
            {
                "scenario": scenario,
                "strategy": name,
                "embedder": s.embedder,
                "store": s.store,
                "p50_ms": _num(shown.p50_ms) if shown else None,
                "p95_ms": _num(shown.p95_ms) if shown else None,
                "p99_ms": _num(shown.p99_ms) if shown else None,
                "mean_ms": None,
                "qps": round(qps, 1),
                "errors": sum(step.errors for step in steps),
                "hit_rate": None,
                "ratio_vs_baseline": _num(qps / base_qps if base_qps else float("nan"), 3),
                "samples": len(steps),
            }
        )
    return out


def judge(
    s: Session, scenario: str, mine: Sequence[float], fixed: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """:func:`~athena.bench.verdicts.never_slower` as the report calls it for ``scenario``:
    a burst scenario's bursts resampled whole; one at a time, the arms took turns op by op
    over one stream, so sample i of every arm answered op i and the pairs are resampled
    together; the mixed workloads by their mean. (``benchmarks/never_slower_check.py``
    judges the other caching arms with it too.)

    >>> s = Session("locomo", "static", 1, 1)
    >>> judge(s, "cold recall", [2.0] * 9, {"cache": [1.0] * 9})["slower"]
    True
    """
    cluster = int(s.details.get("scenarios", {}).get(scenario, {}).get("concurrency", 1))
    statistic = "mean" if scenario in MIXED else "p50"
    return never_slower(mine, fixed, cluster=cluster, statistic=statistic, paired=cluster == 1)


def comparisons(s: Session) -> dict[str, dict[str, Any]]:
    """Per scenario: the best fixed arm and adaptive against every fixed arm (bootstrap
    intervals, simultaneous over the arms; see :mod:`athena.bench.verdicts`)."""
    out: dict[str, dict[str, Any]] = {}
    for scenario, arms in s.scenarios.items():
        fixed: dict[str, list[float]] = {n: arms[n].ms for n in FIXED if n in arms and arms[n].ok()}
        if "adaptive" not in arms or not arms["adaptive"].ok() or not fixed:
            continue
        verdict = judge(s, scenario, arms["adaptive"].ms, fixed)
        low, high = verdict["ci95"]
        out[scenario] = {
            **verdict,
            "adaptive_over_best": _num(verdict["adaptive_over_best"]),
            "ci95": [_num(low), _num(high)],
            "slower_than": {n: _num(r) for n, r in verdict["slower_than"].items()},
        }
    for scenario, ramp in s.ramps.items():
        qps: dict[str, float] = {}
        for n in (name for name in FIXED if name in ramp):
            step = best_step(ramp.get(n, []))
            qps[n] = step.rate if step else 0.0
        mine = best_step(ramp.get("adaptive", []))
        if not qps or "adaptive" not in ramp:
            continue
        top = max(qps, key=lambda n: qps[n])
        factor = s.details.get("ramp_factor", 1.5)
        ours = mine.rate if mine else 0.0
        out[scenario] = {
            "best_fixed": top,
            "adaptive_over_best": _num(ours / qps[top] if qps[top] else float("nan")),
            "ci95": None,
            "slower": bool(ours * factor < qps[top] * 0.999),
        }
    return out


def write(
    out: Path, sessions: Sequence[Session], meta: dict[str, Any], regret: dict[str, Any]
) -> dict[str, Any]:
    """Write bench.json, bench.md and the PNGs into ``out``; return the JSON document."""
    out.mkdir(parents=True, exist_ok=True)
    table = rows(sessions)
    compared = {f"{s.store}/{s.embedder}": comparisons(s) for s in sessions}
    goals = evaluate(table, compared, regret, sessions)
    doc = {
        "rows": table,
        "regret": regret,
        "machine": meta["machine"],
        "date": meta["date"],
        "command": meta["command"],
        "mode": meta["mode"],
        "goals": [g.to_dict() for g in goals],
        "comparisons": compared,
        "meta": {k: v for k, v in meta.items() if k not in ("machine", "date", "command", "mode")},
        "sessions": {f"{s.store}/{s.embedder}": s.details for s in sessions},
    }
    (out / "bench.json").write_text(json.dumps(doc, indent=1, default=str) + "\n", "utf-8")
    from athena.bench.plots import draw

    images = draw(out, sessions, regret)
    (out / "bench.md").write_text(markdown(doc, goals, images), "utf-8")
    return doc


def _cell(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) < 10:
            return f"{value:.3g}{unit}"
        return f"{value:,.0f}{unit}" if value >= 1000 else f"{value:.1f}{unit}"
    return str(value) + unit


def markdown(doc: dict[str, Any], goals: Sequence[Goal], images: Sequence[str]) -> str:
    rows_ = doc["rows"]
    lines = [f"Mode **{doc['mode']}**, {doc['date']}, `{doc['command']}`.", ""]
    lines += [
        "### The seed's table, measured",
        "",
        "| scenario | store | embedder | seed current | seed target | baseline | best fixed "
        "| adaptive | adaptive vs baseline |",
        "|" + "---|" * 9,
    ]
    index = {(r["scenario"], r["store"], r["embedder"], r["strategy"]): r for r in rows_}
    for key in sorted(
        {(r["scenario"], r["store"], r["embedder"]) for r in rows_},
        key=lambda k: (SCENARIOS.index(k[0]), k[1], k[2]),
    ):
        scenario, store, embedder = key
        seed_now, seed_goal = SEED.get(scenario, ("–", "–"))
        throughput = scenario in THROUGHPUT
        field_, unit = ("qps", " qps") if throughput else ("p50_ms", " ms")
        fixed = [index[(*key, n)] for n in FIXED if (*key, n) in index]
        valid = [r for r in fixed if r[field_] is not None]
        best = (max if throughput else min)(valid, key=lambda r: r[field_]) if valid else None
        base, mine = index.get((*key, "baseline")), index.get((*key, "adaptive"))

        def show(r: dict[str, Any] | None, key: str = field_, u: str = unit) -> str:
            return _cell(r[key], u) if r else "–"

        best_txt = f"{show(best)} ({best['strategy']})" if best else "–"
        ratio = mine["ratio_vs_baseline"] if mine else None
        lines.append(
            f"| {scenario} | {store} | {embedder} | {seed_now} | {seed_goal} | "
            f"{show(base)} | {best_txt} | {show(mine)} | {_cell(ratio, '×')} |"
        )
    lines += [
        "",
        "Latency rows show p50; throughput rows the highest arrival rate whose p99 "
        "stayed under the bound. Per-arm detail below.",
        "",
    ]
    lines += ["### Goals", "", "| goal | where | measured | met |", "|---|---|---|---|"]
    for g in goals:
        met = "n/a" if g.met is None else "**met**" if g.met else "**missed**"
        lines.append(f"| {g.name} | {g.scope} | {g.measured} | {met} |")
    lines += ["", "### Every arm", ""]
    for store, embedder in sorted({(r["store"], r["embedder"]) for r in rows_}):
        lines += [
            f"#### {store}, {embedder}",
            "",
            "| scenario | arm | p50 ms | p95 ms | p99 ms | mean ms | qps | errors | hit rate "
            "| × baseline | n |",
            "|" + "---|" * 11,
        ]
        for r in rows_:
            if (r["store"], r["embedder"]) != (store, embedder):
                continue
            lines.append(
                "| "
                + " | ".join(
                    _cell(r[k])
                    for k in (
                        "scenario",
                        "strategy",
                        "p50_ms",
                        "p95_ms",
                        "p99_ms",
                        "mean_ms",
                        "qps",
                        "errors",
                        "hit_rate",
                        "ratio_vs_baseline",
                        "samples",
                    )
                )
                + " |"
            )
        lines.append("")
    lines += regret_lines(doc["regret"])
    lines += [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _picks(picks: dict[str, int] | None) -> str:
    ordered = sorted((picks or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name} {count}" for name, count in ordered) or "–"


def regret_lines(regret: dict[str, Any]) -> list[str]:
    """The regret section: one row per session and one for all, choices and arm side by side.

    >>> regret_lines({})
    []
    """
    if not regret:
        return []
    lines = [
        "### Regret against the per-query oracle",
        "",
        "Choices alone: each of the selector's picks priced at the oracle's own median for that "
        "strategy on that query. End to end: the adaptive arm's own latency, its path included. "
        "Held out: the arm's runs against an oracle that picks each run's strategy by the "
        "query's other runs and is priced at the run it did not see (the in-sample oracle's "
        "least of several noisy medians lies below what any strategy costs when two tie).",
        "",
        "| session | choices alone vs oracle (> 10% slower) | adaptive arm end to end vs oracle "
        "(> 10% slower) | end to end vs held-out oracle (> 10% slower) | arm vs best fixed "
        "| oracle picks | selector picked |",
        "|" + "---|" * 7,
    ]
    sessions = dict(regret.get("by_session") or {})
    sessions["**all**"] = regret
    for name, r in sessions.items():
        d, h = r.get("decision") or {}, r.get("held_out") or {}
        lines.append(
            f"| {name.replace('/', ', ')} | {_pct(d.get('vs_oracle'))} "
            f"({_pct(d.get('share_over_10pct'))}) | {_pct(r.get('vs_oracle'))} "
            f"({_pct(r.get('share_over_10pct'))}) | {_pct(h.get('vs_oracle'))} "
            f"({_pct(h.get('share_over_10pct'))}) | {_pct(r.get('vs_best_fixed'))} "
            f"({r.get('best_fixed', '–')}) | {_picks(r.get('oracle_picks'))} "
            f"| {_picks(d.get('picks'))} |"
        )
    return [*lines, "", "(The selector's picks are over every run of each query.)", ""]
