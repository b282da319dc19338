"""The PNGs: latency per scenario per arm, the throughput ramps, the regret distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.ticker import PercentFormatter

from athena.bench.arms import ARMS, percentile

if TYPE_CHECKING:
    from athena.bench.report import Session

matplotlib.use("Agg")
COLOURS = dict(
    zip(
        ARMS,
        ("#444444", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#d62728"),
        strict=True,
    )
)


def draw(out: Path, sessions: Sequence[Session], regret: dict[str, Any]) -> list[str]:
    """Write the plots into ``out``; return their file names."""
    import matplotlib.pyplot as plt

    names = []
    for name, fn in (
        ("latency.png", _latency),
        ("throughput.png", _throughput),
        ("regret.png", _regret),
    ):
        fig = fn(plt, sessions, regret)
        if fig is None:
            continue
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def _grid(plt: Any, count: int, width: float, height: float) -> tuple[Any, list[Any]]:
    cols = min(count, 2)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _latency(plt: Any, sessions: Sequence[Session], regret: dict[str, Any]) -> Any:
    shown = [s for s in sessions if s.scenarios]
    if not shown:
        return None
    fig, axes = _grid(plt, len(shown), 8.0, 4.2)
    for ax, s in zip(axes, shown, strict=True):
        scenarios = list(s.scenarios)
        width = 0.8 / len(ARMS)
        for i, arm in enumerate(ARMS):
            p50 = [
                percentile(s.scenarios[sc][arm].ok(), 50) if arm in s.scenarios[sc] else math.nan
                for sc in scenarios
            ]
            p99 = [
                percentile(s.scenarios[sc][arm].ok(), 99) if arm in s.scenarios[sc] else math.nan
                for sc in scenarios
            ]
            xs = [j + (i - len(ARMS) / 2 + 0.5) * width for j in range(len(scenarios))]
            ax.bar(xs, p50, width, color=COLOURS[arm], label=arm)
            ax.scatter(xs, p99, marker="_", color="black", s=30, zorder=3)
        ax.set_xticks(
            range(len(scenarios)), [sc.replace(" ", "\n", 1) for sc in scenarios], fontsize=7
        )
        ax.set(
            yscale="log",
            ylabel="ms (bar p50, tick p99)",
            title=f"{s.store}, {s.embedder}: latency per scenario",
        )
    axes[0].legend(fontsize=7, ncol=4)
    return fig


def _throughput(plt: Any, sessions: Sequence[Session], regret: dict[str, Any]) -> Any:
    panels = [(s, sc, ramp) for s in sessions for sc, ramp in s.ramps.items()]
    if not panels:
        return None
    fig, axes = _grid(plt, len(panels), 6.0, 4.0)
    for ax, (s, scenario, ramp) in zip(axes, panels, strict=True):
        for arm in ARMS:
            steps = sorted(ramp.get(arm, []), key=lambda st: st.rate)  # refining steps last
            if steps:
                ax.plot(
                    [st.rate for st in steps],
                    [st.p99_ms for st in steps],
                    "o-",
                    color=COLOURS[arm],
                    label=arm,
                    markersize=3,
                )
        bound = s.details.get("p99_bound_ms")
        if bound:
            ax.axhline(bound, ls="--", color="red", lw=1, label="p99 bound")
        cached = scenario == "throughput cached" and "harness_ceiling_cached_qps" in s.details
        ceiling = s.details.get("harness_ceiling_cached_qps" if cached else "harness_ceiling_qps")
        if ceiling:
            ax.axvline(ceiling, ls=":", color="grey", lw=1, label="harness ceiling")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="offered rate (recalls/s)",
            ylabel="p99 ms",
            title=f"{s.store}, {s.embedder}: {scenario}",
        )
    axes[0].legend(fontsize=7, ncol=2)
    return fig


def _regret(plt: Any, sessions: Sequence[Session], regret: dict[str, Any]) -> Any:
    values = [float(v) for v in regret.get("per_query", [])] if regret else []
    if not values:
        return None
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(10, 3.8))
    clipped = [max(min(v, 2.0), -1.0) for v in values]
    hist.hist(clipped, bins=30, color="#d62728")
    hist.axvline(0.10, ls="--", color="black", lw=1, label="10% over the oracle")
    hist.set(
        xlabel="(adaptive − oracle) / oracle, clipped to [−1, 2]",
        ylabel="queries",
        title=f"Regret per query ({len(values)} queries)",
    )
    hist.legend(fontsize=8)
    held = [float(v) for v in (regret.get("held_out") or {}).get("per_query", [])]
    for label, curve, colour in (("in-sample oracle", values, "#d62728"),
                                 ("held-out oracle", held, "#1f77b4")):  # fmt: skip
        if curve:
            ordered = sorted(max(min(v, 2.0), -1.0) for v in curve)
            shares = [(i + 1) / len(ordered) for i in range(len(ordered))]
            cdf.plot(ordered, shares, color=colour, label=label)
    cdf.axvline(0.0, color="grey", lw=1)
    cdf.axvline(0.10, ls="--", color="black", lw=1)
    cdf.legend(fontsize=8)
    cdf.xaxis.set_major_formatter(PercentFormatter(1.0))
    cdf.set(
        xlabel="(adaptive − oracle) / oracle, clipped to [−100%, 200%]",
        ylabel="share of queries",
        title="Cumulative regret",
    )
    return fig
