"""``athena telemetry``: what the execution layer did, per strategy, with plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from athena.interfaces.cli_support import console, emit_json, get_state, table

telemetry_app = typer.Typer(help="Summarise execution telemetry and draw plots.")


@telemetry_app.callback(invoke_without_command=True)
def telemetry(
    ctx: typer.Context,
    plots: Annotated[
        Path | None, typer.Option("--plots", help="Write PNG plots into this directory.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Per-strategy latency, estimation accuracy, cache hit rates and fallbacks."""
    memory = get_state(ctx).memory()
    from athena.execution.telemetry import summarise

    engine: Any = memory.engine
    rows = engine.telemetry.rows() if hasattr(engine, "telemetry") else []
    summary = summarise(rows)
    written = draw(rows, plots) if plots is not None else []
    if json_out:
        emit_json({**summary, "plots": [str(p) for p in written]})
        return
    out = console()
    lines = [
        [
            name,
            s["count"],
            f"{s['p50_ms']:.3f}",
            f"{s['p95_ms']:.3f}",
            f"{100 * s['estimate_error_median']:.0f}%",
            s["fallbacks"],
        ]
        for name, s in summary["strategies"].items()
    ]
    out.print(
        table(
            f"{summary['recalls']} recalls",
            ["strategy", "recalls", "p50 ms", "p95 ms", "estimate error", "fallbacks"],
            lines,
        )
    )
    if "cache" in summary:
        c = summary["cache"]
        out.print(
            f"cache: hit {c['hit_rate']:.1%}, partial {c['partial_rate']:.1%}, "
            f"miss {c['miss_rate']:.1%}"
        )
    for path in written:
        out.print(f"wrote {path}")


def draw(rows: list[Any], directory: Path) -> list[Path]:
    """Latency per strategy, estimate vs actual, and cache outcomes, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    strategies = sorted({r.strategy for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4))
    if strategies:
        ax.boxplot(
            [[r.actual_ms for r in rows if r.strategy == s] for s in strategies],
            tick_labels=strategies,
            showfliers=False,
        )
    ax.set_ylabel("recall latency (ms)")
    ax.set_title("Latency by strategy")
    written.append(_save(fig, directory / "latency_by_strategy.png"))
    fig, ax = plt.subplots(figsize=(5, 5))
    for s in strategies:
        group = [r for r in rows if r.strategy == s]
        ax.scatter([r.estimated_ms for r in group], [r.actual_ms for r in group], s=6, label=s)
    ax.set_xlabel("estimated ms")
    ax.set_ylabel("actual ms")
    ax.set_xscale("symlog")
    ax.set_yscale("symlog")
    ax.legend()
    ax.set_title("Estimate vs actual")
    written.append(_save(fig, directory / "estimate_vs_actual.png"))
    fig, ax = plt.subplots(figsize=(5, 3))
    states = ["hit", "partial", "miss"]
    ax.bar(states, [sum(1 for r in rows if r.cache == s) for s in states])
    ax.set_title("Cache outcomes")
    written.append(_save(fig, directory / "cache_outcomes.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
