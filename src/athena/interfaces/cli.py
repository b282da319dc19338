"""The ``athena`` command line.

Commands: remember, recall, forget, update, get, stats, tenants, ``import locomo|jsonl``
and ``eval locomo``. Global options ``--db`` (env ATHENA_DB) and ``--embedder`` (env
ATHENA_EMBEDDER). JSON goes to stdout; progress bars and errors go to stderr. Errors exit
with 2 (invalid input), 3 (not found), 4 (import format), 5 (store), 1 (other).

Adding a command group is one line: ``app.add_typer(other_app, name="telemetry")``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from athena.errors import InvalidInput, NotFound
from athena.importers.jsonl import check_item, check_items, read_numbered, write_batches
from athena.interfaces.cli_support import (
    DEFAULT_DB,
    STRATEGIES,
    AthenaGroup,
    check_strategy,
    console,
    emit_json,
    get_state,
    pairs,
    parse_object,
    parse_time,
    progress_bar,
    table,
)
from athena.large_pages import relaunch_on_large_pages
from athena.records import LAYERS, MemoryInput, make_query

if TYPE_CHECKING:
    from athena.locomo.data import Conversation
    from athena.locomo.evaluation import EvalReport
    from athena.memory import Memory

app = typer.Typer(
    cls=AthenaGroup,
    name="athena",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
import_app = typer.Typer(help="Import memories from a file.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure recall on a benchmark.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(eval_app, name="eval")


def _register_groups() -> None:
    from athena.interfaces.cli_bench import bench_app
    from athena.interfaces.cli_serve import serve_app
    from athena.interfaces.cli_telemetry import telemetry_app

    app.add_typer(telemetry_app, name="telemetry")
    app.add_typer(serve_app, name="serve")
    app.add_typer(bench_app, name="bench")


_register_groups()

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant (agent or user) id.")]
OptTenant = Annotated[
    str | None, typer.Option("--tenant", "-t", help="Only this tenant (default: all).")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
Metadata = Annotated[str | None, typer.Option(help="Metadata as a JSON object, e.g. '{\"a\": 1}'.")]
Attributes = Annotated[
    str | None, typer.Option(help="Layer attributes as a JSON object (e.g. priority, steps).")
]
Stamp = Annotated[
    str | None, typer.Option(help="Event time: epoch seconds or ISO-8601 (naive means UTC).")
]
File = Annotated[Path, typer.Argument(help="The file to read.", show_default=False)]
LAYER_NAMES = ", ".join(LAYERS)


def _version(value: bool) -> None:
    if value:
        from athena import __version__

        typer.echo(f"athena {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    db: Annotated[
        Path, typer.Option("--db", envvar="ATHENA_DB", help="SQLite database file.")
    ] = Path(DEFAULT_DB),
    embedder: Annotated[
        str,
        typer.Option(envvar="ATHENA_EMBEDDER", help="Embedding model: static or transformer."),
    ] = "static",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Athena: a memory engine for AI agents, in one SQLite file."""
    get_state(ctx).configure(db, embedder)


def _memory(ctx: typer.Context, *, create: bool = False) -> Memory:
    return get_state(ctx).memory(create=create)


def _sources(sources: tuple[str, ...], shown: int = 5) -> str:
    more = f" (+{len(sources) - shown})" if len(sources) > shown else ""
    return ", ".join(sources[:shown]) + more


@app.command()
def remember(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="The text to remember.", show_default=False)],
    tenant: Tenant,
    layer: Annotated[str, typer.Option(help=f"Memory layer: {LAYER_NAMES}.")] = "episodic",
    key: Annotated[str | None, typer.Option(help="Idempotency key (same key updates).")] = None,
    kind: Annotated[str | None, typer.Option(help="Kind within the layer.")] = None,
    session: Annotated[str | None, typer.Option(help="Session id.")] = None,
    actor: Annotated[str | None, typer.Option(help="Who said or did it.")] = None,
    timestamp: Stamp = None,
    metadata: Metadata = None,
    attributes: Attributes = None,
    json_out: Json = False,
) -> None:
    """Store one memory and print its id."""
    item = MemoryInput(
        layer=layer,
        text=text,
        tenant=tenant,
        key=key,
        kind=kind,
        session=session,
        actor=actor,
        event_time=parse_time(timestamp, "--timestamp"),
        metadata=parse_object(metadata, "--metadata") or {},
        attributes=parse_object(attributes, "--attributes") or {},
    )
    check_item(item)  # fail before the database is opened (or created)
    memory_id = _memory(ctx, create=True).remember_many([item])[0]
    if json_out:
        emit_json({"id": memory_id})
    else:
        typer.echo(memory_id)


@app.command()
def recall(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to recall.", show_default=False)],
    tenant: Tenant,
    k: Annotated[int, typer.Option("-k", help="How many memories to return (1-1000).")] = 10,
    layer: Annotated[
        list[str] | None, typer.Option(help=f"Search only this layer (repeatable): {LAYER_NAMES}.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Not before: epoch or ISO-8601.")] = None,
    until: Annotated[str | None, typer.Option(help="Not after: epoch or ISO-8601.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    strategy: Annotated[str, typer.Option(help="|".join(STRATEGIES))] = "adaptive",
    explain: Annotated[bool, typer.Option(help="Show how the recall was executed.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Give up after SECONDS.")] = None,
    json_out: Json = False,
) -> None:
    """Recall the memories that best answer QUERY."""
    layers = layer or None
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    make_query(query, tenant, k, layers, start, end, session, actor)  # validate before opening
    check_strategy(strategy)
    if timeout is not None and timeout <= 0:
        raise InvalidInput("--timeout must be a positive number of seconds")
    result = _memory(ctx).recall(
        query,
        tenant=tenant,
        k=k,
        layers=layers,
        since=start,
        until=end,
        session=session,
        actor=actor,
        strategy=strategy,
        explain=explain,
        timeout=timeout,
    )
    if json_out:
        emit_json(result.to_dict())
        return
    rows = [
        [rank, hit.id, hit.layer, f"{hit.score:.4f}", hit.text, _sources(hit.sources)]
        for rank, hit in enumerate(result.hits, start=1)
    ]
    out = console()
    if rows:
        out.print(table(None, ["#", "id", "layer", "score", "text", "sources"], rows))
    else:
        out.print("no memories found")
    if result.explain is not None:
        out.print(pairs("explain", dict(result.explain)))


@app.command()
def forget(
    ctx: typer.Context,
    ids: Annotated[list[int], typer.Argument(help="Memory ids to delete.", show_default=False)],
    tenant: Tenant,
    json_out: Json = False,
) -> None:
    """Delete memories by id (all or none: any unknown id fails the command)."""
    deleted = _memory(ctx).forget(ids, tenant=tenant)
    if json_out:
        emit_json({"deleted": deleted})
    else:
        typer.echo(f"forgot {len(deleted)} memories: {', '.join(map(str, deleted))}")


@app.command()
def update(
    ctx: typer.Context,
    memory_id: Annotated[int, typer.Argument(metavar="ID", help="Memory id.", show_default=False)],
    tenant: Tenant,
    text: Annotated[str | None, typer.Option(help="New text (re-embedded).")] = None,
    metadata: Metadata = None,
    attributes: Attributes = None,
    timestamp: Stamp = None,
    json_out: Json = False,
) -> None:
    """Change a memory's text, time, metadata or attributes (merged into what is stored)."""
    meta, attrs = parse_object(metadata, "--metadata"), parse_object(attributes, "--attributes")
    stamp = parse_time(timestamp, "--timestamp")
    if text is None and meta is None and attrs is None and stamp is None:
        raise InvalidInput("update needs --text, --timestamp, --metadata or --attributes")
    updated = _memory(ctx).update(
        memory_id, tenant=tenant, text=text, timestamp=stamp, metadata=meta, attributes=attrs
    )
    if json_out:
        emit_json({"id": updated})
    else:
        typer.echo(updated)


@app.command()
def get(
    ctx: typer.Context,
    memory_id: Annotated[int, typer.Argument(metavar="ID", help="Memory id.", show_default=False)],
    tenant: Tenant,
    json_out: Json = False,
) -> None:
    """Show one memory."""
    row = _memory(ctx).get(memory_id, tenant=tenant)
    if json_out:
        emit_json(row)
    else:
        console().print(pairs(f"memory {memory_id}", row))


@app.command()
def stats(ctx: typer.Context, tenant: OptTenant = None, json_out: Json = False) -> None:
    """Count memories per layer, tenants and entities."""
    data = _memory(ctx).stats(tenant)
    if json_out:
        emit_json(data)
        return
    flat = {k: v for k, v in data.items() if k != "layers"}
    flat.update({f"layer {name}": data["layers"].get(name, 0) for name in LAYERS})
    console().print(pairs("athena stats" + (f" (tenant {tenant})" if tenant else ""), flat))


@app.command()
def tenants(ctx: typer.Context, json_out: Json = False) -> None:
    """List the tenants that have memories."""
    names = _memory(ctx).tenants()
    if json_out:
        emit_json({"tenants": names})
    else:
        typer.echo("\n".join(names))


# -- import -------------------------------------------------------------------------------


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


@import_app.command("jsonl")
def import_jsonl_command(ctx: typer.Context, file: File, json_out: Json = False) -> None:
    """Import a JSON Lines file: one memory per line (layer, text, tenant, ...).

    The whole file is validated first; if any line is bad nothing is written.
    """
    numbered = read_numbered(file)  # a bad line fails before the database is opened
    memory = _memory(ctx, create=True)
    check_items(numbered, memory.layers, file)  # the layer-specific rules
    start = time.perf_counter()
    with progress_bar("memories", len(numbered)) as bar:
        count = write_batches(memory, [item for _, item in numbered], bar)
    seconds = time.perf_counter() - start
    prepared = _prepare_indexes(memory)
    if json_out:
        emit_json(
            {
                "memories": count,
                "seconds": round(seconds, 3),
                "per_second": _rate(count, seconds),
                "prepared_scopes": prepared,
            }
        )
    else:
        typer.echo(
            f"imported {count} memories in {seconds:.2f} s ({_rate(count, seconds)} memories/s)"
        )


def _prepare_indexes(memory: Memory) -> int:
    """After an import: build and save the indexes of scopes past 20,000 memories (tens of
    seconds each), so no first recall on them has to."""
    scopes = memory.large_scopes()
    if not scopes:
        return 0
    with progress_bar("indexes of large scopes", len(scopes)) as bar:
        return memory.prepare_indexes(advance=bar)


def _check_locomo(memory: Memory, conversations: list[Conversation], file: Path) -> None:
    from athena.locomo.importer import conversation_memories

    for conv in conversations:
        numbered = enumerate(conversation_memories(conv), start=1)
        check_items(numbered, memory.layers, f"{file}: conversation {conv.sample_id}", "memory")


@import_app.command("locomo")
def import_locomo_command(ctx: typer.Context, file: File, json_out: Json = False) -> None:
    """Import a LoCoMo benchmark file: one tenant per conversation (its sample_id)."""
    from athena.locomo.data import load_locomo
    from athena.locomo.importer import import_locomo

    conversations = load_locomo(file)  # fails on a malformed file before anything is opened
    memory = _memory(ctx, create=True)
    _check_locomo(memory, conversations, file)
    with progress_bar("conversations", len(conversations)) as bar:
        report = import_locomo(memory, file, progress=bar)
    rate = round(report.per_second, 1)
    prepared = _prepare_indexes(memory)
    if json_out:
        emit_json(
            {
                "conversations": report.conversations,
                "memories": report.memories,
                "seconds": round(report.seconds, 3),
                "per_second": rate,
                "prepared_scopes": prepared,
            }
        )
    else:
        typer.echo(
            f"imported {report.memories} memories from {report.conversations} conversations "
            f"in {report.seconds:.2f} s ({rate} memories/s)"
        )


# -- eval ---------------------------------------------------------------------------------


@eval_app.command("locomo")
def eval_locomo_command(
    ctx: typer.Context,
    file: File,
    strategy: Annotated[str, typer.Option(help="|".join(STRATEGIES))] = "sequential",
    json_out: Json = False,
) -> None:
    """Recall@k on LoCoMo questions, overall and per category, next to DRAGON.

    Import the same file first with ``athena import locomo FILE``.
    """
    from athena.locomo.data import load_locomo
    from athena.locomo.evaluation import evaluate_locomo

    check_strategy(strategy)
    conversations = load_locomo(file)
    memory = _memory(ctx)
    missing = sorted({c.sample_id for c in conversations} - set(memory.tenants()))
    if missing:
        raise NotFound(
            f"conversations not imported: {', '.join(missing)}; run `athena import locomo {file}`"
        )
    with progress_bar("questions", sum(len(c.questions) for c in conversations)) as bar:
        report = evaluate_locomo(memory, file, strategy=strategy, progress=bar)
    if json_out:
        emit_json(report.to_dict())
    else:
        _print_eval(report)


def _print_eval(report: EvalReport) -> None:
    from athena.locomo.evaluation import CATEGORIES, DRAGON, KS

    def cells(scores: dict[int, float]) -> list[str]:
        return [f"{scores[k]:.1f}" if k in scores else "-" for k in KS]

    rows = [["Athena (all)", report.evaluated, *cells(report.recall_at)]]
    rows.append(["DRAGON (paper)", "", *cells({k: float(v) for k, v in DRAGON.items()})])
    for cat, scores in sorted(report.by_category.items()):
        rows.append([f"  {CATEGORIES.get(cat, cat)}", report.counts[cat], *cells(scores)])
    latency = report.to_dict()["latency_ms"]
    out = console()
    out.print(table("LoCoMo evidence recall (%)", ["", "questions", *[f"R@{k}" for k in KS]], rows))
    out.print(
        f"latency p50 {latency['p50']} ms, p95 {latency['p95']} ms; "
        f"{report.questions} questions, {report.evaluated} with evidence"
    )


LONG_RUNNING = frozenset({"serve", "bench"})  # started on huge pages (athena.large_pages)
VALUED_OPTIONS = frozenset({"--db", "--embedder"})  # global options that take a value


def command_of(args: Sequence[str]) -> str | None:
    """The command ``args`` name, past the global options (None: none named).

    >>> command_of(["--db", "a.db", "serve", "http"]), command_of(["--version"])
    ('serve', None)
    """
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in VALUED_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main() -> None:
    """Console-script entry point. A long-running command (``serve``, ``bench``) first
    restarts the process with its heap on huge pages where it can (``ATHENA_LARGE_PAGES=0``
    keeps it as started; see :mod:`athena.large_pages`)."""
    if command_of(sys.argv[1:]) in LONG_RUNNING:
        relaunch_on_large_pages()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
