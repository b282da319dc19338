"""The issue's goals, checked against what was measured: met, missed, or not measured.

The thresholds are the goals themselves (the issue's numbers); everything they are compared
with comes from the rows of this run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from athena.bench.report import Session

CACHED_P50_MS: Final = 0.05
COLD_P50_MS: Final = 10.0
COLD_P95_MS: Final = 25.0
MIXED_VS_BASELINE: Final = 5.0
PARALLEL_SHARE: Final = 0.90
TEN_P99_MS: Final = 100.0
HUNDRED_P99_MS: Final = 1000.0
COLD_QPS: Final = 500.0
CACHED_QPS: Final = 20_000.0
MIXED_VS_BEST: Final = 1.2
REGRET: Final = 0.05


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    scope: str
    measured: str
    met: bool | None  # None: not measured in this run

    def to_dict(self) -> dict[str, Any]:
        return {"goal": self.name, "scope": self.scope, "measured": self.measured, "met": self.met}


def _fmt(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{value:.3g}{unit}" if value < 100 else f"{value:,.0f}{unit}"


def _than(verdict: dict[str, Any]) -> str:
    """The arms a "never slower" verdict found ADAPTIVE slower than, with the ratios.

    >>> _than({"best_fixed": "hybrid", "adaptive_over_best": 1.2, "slower_than": {"cache": 1.1}})
    'cache ×1.1'
    >>> _than({"best_fixed": "sequential", "adaptive_over_best": 0.5})  # a ramp's verdict
    'sequential ×0.5'
    """
    than = verdict.get("slower_than") or {verdict["best_fixed"]: verdict["adaptive_over_best"]}
    return ", ".join(f"{name} ×{ratio}" for name, ratio in than.items())


def evaluate(
    rows: Sequence[dict[str, Any]],
    comparisons: dict[str, dict[str, dict[str, Any]]],
    regret: dict[str, Any],
    sessions: Sequence[Session],
) -> list[Goal]:
    """Every goal, once per store and embedder it applies to."""

    def pick(scenario: str, strategy: str = "adaptive", **where: str) -> list[dict[str, Any]]:
        return [
            r
            for r in rows
            if r["scenario"] == scenario
            and r["strategy"] == strategy
            and all(r[k] == v for k, v in where.items())
        ]

    goals: list[Goal] = []

    def add(name: str, found: list[dict[str, Any]], test: Any, show: Any) -> None:
        if not found:
            goals.append(Goal(name, "not measured in this run", "–", None))
        for r in found:
            goals.append(Goal(name, f"{r['store']}, {r['embedder']}", show(r), bool(test(r))))

    def ok(value: float | None, limit: float, above: bool = False) -> bool:
        return value is not None and (value >= limit if above else value <= limit)

    add(
        f"cached recall p50 ≤ {CACHED_P50_MS} ms (adaptive, in-process)",
        pick("simple cached query"),
        lambda r: ok(r["p50_ms"], CACHED_P50_MS),
        lambda r: f"p50 {_fmt(r['p50_ms'], ' ms')}",
    )
    cold = [r for r in pick("cold recall", embedder="static") if r["store"].startswith("100k")]
    add(
        f"cold recall, static, 100k: p50 ≤ {COLD_P50_MS:g} ms, p95 ≤ {COLD_P95_MS:g} ms",
        cold,
        lambda r: ok(r["p50_ms"], COLD_P50_MS) and ok(r["p95_ms"], COLD_P95_MS),
        lambda r: f"p50 {_fmt(r['p50_ms'], ' ms')}, p95 {_fmt(r['p95_ms'], ' ms')}",
    )
    mixed = pick("mixed workload 50% cache")
    base = {(r["store"], r["embedder"]): r for r in pick("mixed workload 50% cache", "baseline")}

    def mixed_ratio(r: dict[str, Any]) -> float | None:
        b = base.get((r["store"], r["embedder"]))
        return b["mean_ms"] / r["mean_ms"] if b and b["mean_ms"] and r["mean_ms"] else None

    add(
        f"mixed workload ≥ {MIXED_VS_BASELINE:g}× baseline (mean latency)",
        mixed,
        lambda r: ok(mixed_ratio(r), MIXED_VS_BASELINE, above=True),
        lambda r: (
            f"{_fmt(mixed_ratio(r), '×')} by mean, {_fmt(r['ratio_vs_baseline'], '×')} by p50"
        ),
    )
    for s in sessions:
        complex_ = s.details.get("complex")
        if complex_:
            share = complex_.get("share_of_limit")
            goals.append(
                Goal(
                    f"complex multi-layer: parallel ≥ {PARALLEL_SHARE:.0%} of the limit",
                    f"{s.store}, {s.embedder}",
                    f"{_fmt(complex_.get('achieved'), '×')} of a "
                    f"{_fmt(complex_.get('limit'), '×')} limit = "
                    f"{_fmt(None if share is None else 100 * share, '%')} "
                    f"(the layers alone: {_fmt(complex_.get('layers_limit'), '×')})",
                    ok(share, PARALLEL_SHARE, above=True),
                )
            )
    add(
        f"10 concurrent: p99 ≤ {TEN_P99_MS:g} ms",
        pick("10 concurrent"),
        lambda r: ok(r["p99_ms"], TEN_P99_MS),
        lambda r: f"p99 {_fmt(r['p99_ms'], ' ms')}",
    )
    add(
        f"100 concurrent: all answered, p99 ≤ {HUNDRED_P99_MS:g} ms",
        pick("100 concurrent"),
        lambda r: r["errors"] == 0 and ok(r["p99_ms"], HUNDRED_P99_MS),
        lambda r: f"p99 {_fmt(r['p99_ms'], ' ms')}, {r['errors']} unanswered",
    )
    add(
        f"throughput cold ≥ {COLD_QPS:g} qps",
        pick("throughput cold"),
        lambda r: ok(r["qps"], COLD_QPS, above=True),
        lambda r: _fmt(r["qps"], " qps"),
    )
    add(
        f"throughput cached ≥ {CACHED_QPS:,.0f} qps",
        pick("throughput cached"),
        lambda r: ok(r["qps"], CACHED_QPS, above=True),
        lambda r: _fmt(r["qps"], " qps"),
    )
    for where, scenarios in comparisons.items():
        slower = [f"{sc} ({_than(c)})" for sc, c in scenarios.items() if c["slower"]]
        unsure = [sc for sc, c in scenarios.items() if c["slower"] is None]
        measured = "slower in: " + "; ".join(slower) if slower else "never slower"
        if unsure:  # too few bursts to tell: not judged, and not met on their account
            measured += "; too few bursts to judge: " + ", ".join(unsure)
        goals.append(
            Goal(
                "adaptive never slower than the best fixed strategy (p50, mean on the mixed "
                "workloads; 95% bootstrap intervals, simultaneous over the fixed arms)",
                where.replace("/", ", "),
                measured,
                False if slower else (None if unsure else True),
            )
        )
    for r in mixed:
        fixed = [
            f
            for f in rows
            if f["scenario"] == r["scenario"]
            and f["store"] == r["store"]
            and f["embedder"] == r["embedder"]
            and f["strategy"] not in ("baseline", "adaptive")
            and f["mean_ms"]
        ]
        if not fixed or not r["mean_ms"]:
            continue
        best = min(fixed, key=lambda f: f["mean_ms"])
        gain = best["mean_ms"] / r["mean_ms"]
        goals.append(
            Goal(
                f"mixed workload: adaptive ≥ {MIXED_VS_BEST:g}× the best fixed (mean)",
                f"{r['store']}, {r['embedder']}",
                f"{_fmt(gain, '×')} vs {best['strategy']}",
                gain >= MIXED_VS_BEST,
            )
        )
    choices = (regret or {}).get("decision", {}).get("vs_oracle")
    held = (regret or {}).get("held_out", {}).get("vs_oracle")
    for what, value, aside in (
        (
            "selector regret ≤ {:.0%} vs the oracle (its choices, at the oracle's costs)",
            choices,
            "",
        ),
        (
            "adaptive arm ≤ {:.0%} over the oracle (end to end: choices and its own path)",
            regret.get("vs_oracle") if regret else None,
            "" if held is None else f" (against the held-out oracle {100 * held:.1f}%)",
        ),
    ):
        goals.append(
            Goal(
                what.format(REGRET),
                "all sampled queries",
                "–" if value is None else f"{100 * value:.1f}%{aside}",
                None if value is None else value <= REGRET,
            )
        )
    return goals
