"""``athena serve http|mcp``: run the HTTP API or the MCP server.

Mounted on the main CLI with ``app.add_typer(serve_app, name="serve")``. ``--db`` and
``--embedder`` default to the global options (``athena --db PATH serve ...``), so both
spellings work. The servers themselves live in :mod:`athena.interfaces.http_serve` (HTTP) and
:mod:`athena.interfaces.mcp_server`; nothing is imported until a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from athena.interfaces.cli_support import get_state

serve_app = typer.Typer(
    help="Serve Athena over HTTP or MCP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

Db = Annotated[
    Path | None,
    typer.Option("--db", help="SQLite database file (default: the global --db / ATHENA_DB)."),
]
EmbedderName = Annotated[
    str | None, typer.Option(help="Embedding model: static or transformer (default: global).")
]
Host = Annotated[str, typer.Option(help="Interface to listen on.")]


def _target(ctx: typer.Context, db: Path | None, embedder: str | None) -> tuple[Path, str]:
    state = get_state(ctx)
    if embedder is not None:
        state.configure(db or state.db, embedder)  # validates the embedder name
    return db or state.db, state.embedder


@serve_app.command("http")
def http_command(
    ctx: typer.Context,
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    db: Db = None,
    embedder: EmbedderName = None,
    tokens: Annotated[
        Path | None,
        typer.Option(
            "--tokens",
            help='Bearer tokens file: JSON {"token": ["tenant", ...] or null}. Enables auth.',
        ),
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option(min=1, help="Requests per minute per token (or client).")
    ] = None,
    max_inflight: Annotated[
        int, typer.Option(min=1, help="Requests running at once; more get 503.")
    ] = 64,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes sharing the port, each with its own engine on the same"
            " file (one per core uses every core for recalls; the worker pool is then off).",
        ),
    ] = 1,
    mcp: Annotated[
        bool,
        typer.Option(
            "--mcp/--no-mcp",
            help="Also serve the MCP tools at /mcp (streamable HTTP, same tokens and limits).",
        ),
    ] = True,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs) and the MCP tools at /mcp."""
    from athena.interfaces.http_serve import serve_http

    path, model = _target(ctx, db, embedder)
    serve_http(
        path,
        host,
        port,
        model,
        tokens,
        rate_limit_per_minute=rate_limit,
        max_inflight=max_inflight,
        workers=workers,
        mcp=mcp,
    )


@serve_app.command("mcp")
def mcp_command(
    ctx: typer.Context,
    db: Db = None,
    embedder: EmbedderName = None,
    transport: Annotated[
        str, typer.Option(help="stdio (for local agents) or streamable-http.")
    ] = "stdio",
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (streamable-http).")] = 8765,
) -> None:
    """Serve the MCP tools (remember, recall, forget, list_memories, stats)."""
    from athena.errors import InvalidInput
    from athena.interfaces.mcp_server import serve_mcp

    if transport not in ("stdio", "streamable-http"):
        raise InvalidInput("--transport must be stdio or streamable-http")
    path, model = _target(ctx, db, embedder)
    serve_mcp(path, model, "stdio" if transport == "stdio" else "streamable-http", host, port)
