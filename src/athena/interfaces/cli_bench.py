"""``athena bench``: the execution-strategy benchmark (the seed's performance table, measured).

Register with ``app.add_typer(bench_app, name="bench")``. Writes bench.json, bench.md and
PNG plots into ``--out``; progress bars go to stderr, a one-line summary to stdout.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from athena.errors import InvalidInput, NotFound
from athena.interfaces.cli_support import emit_json, progress_bar

bench_app = typer.Typer(help="Benchmark the execution strategies against each other.")
EMBEDDER_CHOICES = {
    "static": ("static",),
    "transformer": ("transformer",),
    "both": ("static", "transformer"),
}


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    quick: Annotated[
        bool, typer.Option("--quick", help="Smoke run: LoCoMo store, static, small samples.")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("bench-out"),
    embedder: Annotated[
        str, typer.Option("--embedder", help="static, transformer or both (full mode).")
    ] = "both",
    redraw: Annotated[
        bool,
        typer.Option(
            "--redraw",
            help="Rewrite the report from the sessions a run (even an interrupted one) "
            "saved in --out; measures nothing.",
        ),
    ] = False,
    store: Annotated[
        str,
        typer.Option(
            "--store",
            help="Full mode: only these stores, comma-separated (locomo, 100k-tenants, "
            "100k-one-tenant); the sessions of earlier runs in --out stay for --redraw.",
        ),
    ] = "all",
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="LoCoMo file (default ../shared/data/locomo/locomo10.json, "
            "else /work/shared/data/locomo/locomo10.json).",
        ),
    ] = None,
) -> None:
    """Every strategy on every scenario, interleaved; the oracle's regret; goals met or missed."""
    from athena.bench.runner import plan_for, resolve_data, run
    from athena.bench.runner import redraw as redraw_report
    from athena.bench.workloads import STORES

    if redraw:
        try:
            doc = redraw_report(out, f"{ctx.command_path} --redraw --out {out}")
        except FileNotFoundError as exc:
            raise NotFound(str(exc)) from exc
        emit_json({"out": str(out), "rows": len(doc["rows"]), "redrawn": True})
        return

    chosen = EMBEDDER_CHOICES.get(embedder.strip().lower())
    if chosen is None:
        raise InvalidInput(f"unknown embedder {embedder!r}; choose static, transformer or both")
    wanted = tuple(name.strip() for name in store.split(",") if name.strip())
    if store != "all" and (not wanted or any(name not in STORES for name in wanted)):
        raise InvalidInput(f"unknown store {store!r}; choose from {', '.join(STORES)}")
    if store != "all" and quick:
        raise InvalidInput("--store is for full mode; --quick always runs the locomo store")
    path = resolve_data(data)
    if not path.is_file():
        raise NotFound(f"no LoCoMo file at {path}; pass --data")
    command = ctx.command_path + (" --quick" if quick else "") + f" --out {out}"
    command += f" --embedder {embedder}" if not quick else ""
    command += f" --data {data}" if data is not None else ""
    plan = plan_for("quick" if quick else "full", path, out, chosen)
    if store != "all":
        plan = replace(
            plan,
            stores=wanted,
            load_stores=tuple(n for n in plan.load_stores if n in wanted),
        )
        command += f" --store {store}"
    doc = run(plan, command, bars=progress_bar)
    met = [g for g in doc["goals"] if g["met"] is True]
    missed = [g for g in doc["goals"] if g["met"] is False]
    emit_json(
        {
            "out": str(out),
            "rows": len(doc["rows"]),
            "goals_met": len(met),
            "goals_missed": len(missed),
            "regret": {
                k: doc["regret"].get(k) for k in ("vs_oracle", "share_over_10pct", "vs_best_fixed")
            }
            if doc["regret"]
            else {},
            "seconds": doc["meta"].get("total_s"),
        }
    )
