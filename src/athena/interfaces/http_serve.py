"""Serving the HTTP API: one process, or several sharing one port.

One Python process runs Python code one thread at a time, so a single server uses one core
for recalls however many it has. ``workers=N`` starts N server processes (uvicorn's
supervisor; they share the listening socket and the kernel hands each new connection to
one of them), each with its own :class:`~athena.memory.Memory` on the same SQLite file:

* a write in any process is seen by every other: the (tenant, layer) generations live in
  the file, and each process checks them before serving a cached answer, so no process
  serves a recall that a committed write elsewhere made stale;
* writers in different processes take turns on SQLite's write lock (``busy_timeout``);
* each process keeps its own caches, telemetry and rate limits (a limit of R per minute
  allows up to N x R across the server); its learned planner state is saved to the same
  file, the last save winning;
* the worker pool is off (``pool="off"``): the processes already spread recalls over the
  cores, and pool workers would only contend with them;
* the processes share one index budget (:mod:`athena.retrieval.residency`): each holds at
  most its N-th of the memories one process would (any process serves any tenant);
* before they start, the parent binds the port and prepares the file once (migration,
  vectors for another embedder, the saved indexes of large scopes), so the processes do
  not race to do it;
* a process that cannot start (a tokens file removed, a database it cannot open) stops the
  server with an error instead of being restarted forever; every process (a restarted one
  too) reads the tokens file when it starts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI

from athena.errors import AthenaError, InvalidInput
from athena.heap import settle_heap
from athena.interfaces.http import create_app
from athena.interfaces.http_auth import load_tokens
from athena.memory import Memory
from athena.retrieval.residency import default_budget

STARTUP_FAILURE: Final = 3  # uvicorn's exit code for a process that cannot start
CONFIG_ENV: Final = "ATHENA_HTTP_SERVER"  # the settings each server process reads
FACTORY: Final = "athena.interfaces.http_serve:app_from_env"


def serve_http(
    db: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    embedder: str = "static",
    tokens_file: str | Path | None = None,
    *,
    rate_limit_per_minute: int | None = None,
    max_inflight: int = 64,
    workers: int = 1,
    mcp: bool = True,
) -> None:
    """Serve the HTTP API on ``host:port`` over the database ``db`` until interrupted, in
    ``workers`` processes; ``mcp``: the MCP tools at ``/mcp`` too.

    >>> # serve_http("athena.db", port=8080, workers=2)
    """
    import uvicorn

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInput("workers must be a positive integer")
    tokens = None if tokens_file is None else load_tokens(tokens_file)  # refused before start
    settings = {
        "db": str(db),
        "embedder": embedder,
        "tokens_file": None if tokens_file is None else str(tokens_file),
        "rate_limit_per_minute": rate_limit_per_minute,
        "max_inflight": max_inflight,
        "host": host,
        "mcp": mcp,
    }
    if workers > 1:
        budget = default_budget()
        settings["index_memories"] = None if budget is None else max(budget // workers, 1)
        _serve_processes(settings, host, port, workers)
        return
    memory = Memory(db, embedder=embedder)
    try:
        memory.catch_up.watch()  # an import or another process may write to the file too
        app = _app(memory, tokens, settings, owns_memory=False)
        settle_heap()  # start-up's objects out of every later full collection's walk
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
    finally:
        memory.close()


def _serve_processes(settings: dict[str, Any], host: str, port: int, workers: int) -> None:
    """uvicorn's supervisor over ``workers`` processes; raises AthenaError when one failed
    to start (uvicorn then stops them all rather than restart it forever)."""
    from uvicorn import Config
    from uvicorn.supervisors import Multiprocess

    config = Config(FACTORY, factory=True, workers=workers, host=host, port=port,
                    log_level="info", access_log=False)  # fmt: skip
    sock = config.bind_socket()  # first: a port in use fails before the file is prepared
    saved_env = os.environ.get(CONFIG_ENV)
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Once, here, before the processes start: create or migrate the file, give memories
        # written under another embedder their vectors, and build and save the indexes of
        # large scopes (tens of seconds each), which every process then loads.
        with Memory(settings["db"], embedder=settings["embedder"], pool="off") as memory:
            memory.prepare_indexes()
        os.environ[CONFIG_ENV] = json.dumps(settings)
        supervisor = Multiprocess(config, sockets=[sock])
        supervisor.run()
    finally:
        sock.close()
        if saved_env is None:
            os.environ.pop(CONFIG_ENV, None)
        else:
            os.environ[CONFIG_ENV] = saved_env
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise AthenaError("a server process failed to start (its error is logged above)")


def app_from_env() -> FastAPI:
    """The app of one of :func:`serve_http`'s processes, from the settings it left in
    ``ATHENA_HTTP_SERVER`` (uvicorn calls this in each process it starts).

    >>> # uvicorn.run("athena.interfaces.http_serve:app_from_env", factory=True, workers=2)
    """
    try:
        settings: dict[str, Any] = json.loads(os.environ[CONFIG_ENV])
        tokens_file = settings["tokens_file"]
        tokens = None if tokens_file is None else load_tokens(tokens_file)
        budget = settings.get("index_memories")
        memory = Memory(
            settings["db"], embedder=settings["embedder"], pool="off", index_memories=budget
        )
    except Exception as exc:  # the supervisor stops on this code instead of restarting
        print(f"error: the server process cannot start: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    try:
        memory.catch_up.watch()  # the other server processes write to the file too
        app = _app(memory, tokens, settings, owns_memory=True)
    except BaseException:
        memory.close()
        raise
    settle_heap()
    return app


def _app(
    memory: Memory,
    tokens: dict[str, list[str] | None] | None,
    settings: dict[str, Any],
    *,
    owns_memory: bool,
) -> FastAPI:
    return create_app(
        memory,
        tokens=tokens,
        max_inflight=settings["max_inflight"],
        rate_limit_per_minute=settings["rate_limit_per_minute"],
        owns_memory=owns_memory,
        host=settings["host"],
        mcp=settings["mcp"],
    )
