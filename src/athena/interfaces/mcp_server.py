"""The MCP server: Athena's memory as tools an agent can call.

Tools: ``remember``, ``recall``, ``forget``, ``list_memories`` and ``stats``. Each parses
its typed arguments, makes one Memory call and returns JSON; an Athena error comes back as
an MCP error result (``isError``) carrying ``<code>: <message>``, never a crashed server.
Over stdio, stdout carries protocol messages only: logs go to stderr.

Run it with ``athena serve mcp --db PATH`` or ``python -m athena.interfaces.mcp_server``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from athena import Recall, __version__
from athena.errors import AthenaError, InvalidInput
from athena.heap import settle_heap
from athena.importers.jsonl import parse_timestamp
from athena.large_pages import relaunch_on_large_pages
from athena.memory import Memory
from athena.records import LAYERS, MAX_K, MAX_QUERY_CHARS, MAX_TEXT_CHARS, check_tenant

Transport = Literal["stdio", "streamable-http"]
# Who may do what, when the tools are served inside the HTTP API: given the HTTP request
# that carried a tool call (None over stdio), the tool and the tenant it names (None: the
# whole store), None to let it through, or the refusal as "<code>: <message>".
Access = Callable[[Any, str, str | None], str | None]
# What a host counts: the writes a tool made, (operation, how many).
Wrote = Callable[[str, int], None]
# How the recall tool runs one recall: the query and Memory.recall's keyword options in, the
# answer out. The HTTP API passes its own, so MCP recalls share its bounded recall threads.
Recaller = Callable[[str, dict[str, Any]], Awaitable[Recall]]
Layer = Literal["episodic", "semantic", "procedural", "prospective", "graph"]
MAX_LIST = 1_000
INSTRUCTIONS = (
    "Athena is a long-term memory. Call `recall` before answering questions about the user "
    "or past conversations, `remember` to store facts, events, tasks and procedures worth "
    "keeping, `forget` to delete memories by id. Memories are scoped by `tenant` (one per "
    "agent or user; default 'default'). Layers: episodic (events, turns), semantic (facts), "
    "procedural (how-tos), prospective (tasks, reminders), graph (entities, relations)."
)

TenantArg = Annotated[
    str, Field(description="Whose memory: an agent or user id. Memories never cross tenants.")
]
Stamp = Annotated[
    float | str | None,
    Field(description="Time as epoch seconds or ISO-8601 text (naive means UTC)."),
]
logger = logging.getLogger("athena.mcp")


@contextlib.contextmanager
def _tool_errors() -> Iterator[None]:
    """Athena errors become MCP error results with their code; nothing else leaks."""
    try:
        yield
    except AthenaError as exc:
        message = " ".join(str(exc).split()) or exc.code
        raise ToolError(f"{exc.code}: {message}") from exc


def _stamp(value: float | str | None, what: str) -> float | None:
    return None if value is None else parse_timestamp(value, what)


def _row(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__dataclass_fields__}


def _checked(ctx: Context | None, access: Access | None, tool: str, tenant: str | None) -> None:
    """Raise the tool error ``access`` answers for this call, if it refuses it (without a
    context it sees no request, and refuses whatever needs one)."""
    if access is None:
        return
    refused = access(None if ctx is None else ctx.request_context.request, tool, tenant)
    if refused is not None:
        raise ToolError(refused)


def threaded(memory: Memory) -> Recaller:
    """The default :data:`Recaller`: a valid cache hit answered at once (microseconds, on the
    event loop), a miss on a thread (Memory calls block).

    >>> # hits = await threaded(memory)("where is the key?", {"tenant": "t"})
    """

    async def recall(query: str, options: dict[str, Any]) -> Recall:
        hit = memory.recall_cached(query, **options)
        if hit is not None:
            return hit
        return await anyio.to_thread.run_sync(functools.partial(memory.recall, query, **options))

    return recall


def build_server(
    memory: Memory,
    access: Access | None = None,
    recaller: Recaller | None = None,
    wrote: Wrote | None = None,
) -> MCPServer:
    """An MCP server whose tools call ``memory`` (which the caller keeps and closes);
    ``access`` checks each call's tenant (see :data:`Access`; None: every call passes),
    ``recaller`` runs the recall tool's recalls (default :func:`threaded`), and ``wrote``
    hears of each write the tools made.

    >>> # build_server(Memory("athena.db")).run("stdio")
    """
    run_recall = recaller or threaded(memory)
    count = wrote or (lambda op, n: None)
    server: MCPServer = MCPServer(
        "athena",
        title="Athena memory",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level="WARNING",
    )
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True)

    def tool(description: str, annotations: ToolAnnotations | None = None) -> Callable[..., Any]:
        return server.tool(description=description, annotations=annotations)

    @tool(
        "Store one memory and return its id. Use layer 'semantic' for lasting facts, "
        "'episodic' for events and conversation turns, 'prospective' for tasks (attributes: "
        "due_at, priority 0-10, status), 'procedural' for how-tos (attributes: steps), "
        "'graph' for relations (attributes: relations [[subject, relation, object]]). "
        "Writing the same key again updates that memory instead of adding one."
    )
    def remember(
        text: Annotated[str, Field(description=f"What to remember (≤{MAX_TEXT_CHARS} chars).")],
        tenant: TenantArg = "default",
        layer: Annotated[Layer, Field(description="Memory layer.")] = "episodic",
        key: Annotated[str | None, Field(description="Idempotency key.")] = None,
        kind: Annotated[str | None, Field(description="Kind within the layer.")] = None,
        session: Annotated[str | None, Field(description="Session id.")] = None,
        actor: Annotated[str | None, Field(description="Who said or did it.")] = None,
        timestamp: Stamp = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="JSON object.")] = None,
        attributes: Annotated[
            dict[str, Any] | None, Field(description="Layer-specific attributes.")
        ] = None,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        _checked(ctx, access, "remember", tenant)
        with _tool_errors():
            memory_id = memory.remember(
                text,
                tenant=tenant,
                layer=layer,
                key=key,
                kind=kind,
                session=session,
                actor=actor,
                timestamp=_stamp(timestamp, "timestamp"),
                metadata=metadata,
                attributes=attributes,
            )
        count("remember", 1)
        return {"id": memory_id}

    @tool(
        "Recall the memories that best answer a question, best first, across memory layers "
        "(hybrid lexical + vector + graph search). Each hit has id, layer, text, score, "
        "event_time and sources. Set explain=true to see how the recall was executed.",
        read_only,
    )
    async def recall(
        query: Annotated[str, Field(description=f"The question (≤{MAX_QUERY_CHARS} chars).")],
        tenant: TenantArg = "default",
        k: Annotated[int, Field(ge=1, le=MAX_K, description="How many memories.")] = 10,
        layers: Annotated[
            list[Layer] | None, Field(description="Only these layers (default: all).")
        ] = None,
        since: Stamp = None,
        until: Stamp = None,
        session: Annotated[str | None, Field(description="Only this session.")] = None,
        actor: Annotated[str | None, Field(description="Only this actor.")] = None,
        kinds: Annotated[list[str] | None, Field(description="Only these kinds.")] = None,
        explain: Annotated[bool, Field(description="Include the execution plan.")] = False,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        _checked(ctx, access, "recall", tenant)  # async: on the event loop, as the API's checks run
        with _tool_errors():
            options = {
                "tenant": tenant,
                "k": k,
                "layers": layers,
                "since": _stamp(since, "since"),
                "until": _stamp(until, "until"),
                "session": session,
                "actor": actor,
                "kinds": kinds,
                "explain": explain,
            }
            result = await run_recall(query, options)
        return result.to_dict()

    @tool(
        "Delete memories by id (all or none: an id that is not this tenant's fails the call "
        "and nothing is deleted). Returns the deleted ids.",
        ToolAnnotations(destructive_hint=True, idempotent_hint=False),
    )
    def forget(
        ids: Annotated[list[int], Field(min_length=1, description="Memory ids to delete.")],
        tenant: TenantArg = "default",
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        _checked(ctx, access, "forget", tenant)
        with _tool_errors():
            deleted = memory.forget(ids, tenant=tenant)
        count("forget", len(deleted))
        return {"deleted": deleted}

    @tool(
        "List the newest memories of one layer (most recently created first), e.g. the open "
        "tasks in 'prospective' or the latest facts in 'semantic'.",
        read_only,
    )
    def list_memories(
        tenant: TenantArg = "default",
        layer: Annotated[Layer, Field(description="Memory layer.")] = "episodic",
        limit: Annotated[int, Field(ge=1, le=MAX_LIST, description="How many.")] = 20,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        _checked(ctx, access, "list_memories", tenant)
        with _tool_errors():
            return {"memories": newest(memory, tenant, layer, limit)}

    @tool(
        "Count memories per layer, and entities, for one tenant (or the whole store when "
        "tenant is omitted).",
        read_only,
    )
    def stats(
        tenant: Annotated[
            str | None, Field(description="Only this tenant (default: the whole store).")
        ] = None,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        _checked(ctx, access, "stats", tenant)
        with _tool_errors():
            counts = memory.stats(tenant)
        counts.pop("path", None)  # where the file lives is the host's business, not a caller's
        return counts

    return server


def newest(memory: Memory, tenant: str, layer: str, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` newest memories of one layer of ``tenant``, newest first.

    The core has no list-by-layer query; this reads the layer's ids from the vector table
    (every memory has a vector for the current embedder), then the rows. Ids grow with
    creation, so the highest ids are the newest.
    """
    if layer not in LAYERS:
        raise InvalidInput(f"unknown layer {layer!r}; layers are: {', '.join(LAYERS)}")
    if isinstance(limit, bool) or not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST}")
    check_tenant(tenant)
    batch = memory.store.vectors_after(tenant, layer, memory.embedder.name, 0)
    ids = sorted({int(i) for i in batch.ids}, reverse=True)[:limit]
    return [_row(row) for row in memory.store.get(tenant, ids)]


def serve_mcp(
    db: str | Path,
    embedder: str = "static",
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
) -> None:
    """Serve the tools over stdio (default) or streamable HTTP at ``http://host:port/mcp``."""
    if transport not in ("stdio", "streamable-http"):
        raise InvalidInput("transport must be 'stdio' or 'streamable-http'")
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    with contextlib.redirect_stdout(sys.stderr):  # nothing but the protocol on stdout
        memory = Memory(db, embedder=embedder)
    try:
        memory.catch_up.watch()  # another process may write to the file too
        server = build_server(memory)
        settle_heap()  # start-up's objects out of every later full collection's walk
        if transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=host, port=port)
    finally:
        memory.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m athena.interfaces.mcp_server", description="Athena MCP server."
    )
    parser.add_argument("--db", default="athena.db", help="SQLite database file.")
    parser.add_argument("--embedder", default="static", help="static or transformer.")
    parser.add_argument("--transport", default="stdio", choices=("stdio", "streamable-http"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    try:
        serve_mcp(args.db, args.embedder, args.transport, args.host, args.port)
    except AthenaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    relaunch_on_large_pages()  # as `athena serve mcp` does: the heap on huge pages
    sys.exit(main())
