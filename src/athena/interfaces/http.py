"""The HTTP API: a thin FastAPI layer over :class:`~athena.memory.Memory`.

Every handler parses its request, runs one Memory call on a worker thread (Memory calls
block) and maps errors (see :mod:`athena.interfaces.http_errors`). Auth, rate limits and
admission live in :mod:`athena.interfaces.http_auth`. Documented in ``docs/interfaces.md``.

No ``from __future__ import annotations`` here: FastAPI resolves the handlers' annotations at
runtime, and they name types local to :func:`create_app`.
"""

import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Annotated, Any, ParamSpec, TypeVar

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from athena import Recall, __version__
from athena.errors import InvalidInput, StoreError
from athena.importers.jsonl import parse_timestamp
from athena.interfaces.http_auth import Admission, Gate, Principal, client_address
from athena.interfaces.http_errors import ApiError, ApiJSON, install_error_handlers
from athena.interfaces.http_mcp import mcp_endpoint
from athena.interfaces.http_metrics import Metrics
from athena.memory import Memory
from athena.records import LAYERS, MAX_K, MAX_QUERY_CHARS, MAX_TEXT_CHARS

P = ParamSpec("P")
T = TypeVar("T")
EXEMPT_FROM_INFLIGHT = ("/healthz", "/readyz", "/metrics")
# Reachable without a token even when auth is on: probes and the API's own description.
PUBLIC_PATHS = ("/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
Stamp = float | str | None


def _lifespan(
    memory: Memory | None,
    serving: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that runs ``serving()`` (the MCP endpoint's task group) while the server
    serves and closes ``memory`` (if given: the server owns it) when it shuts down."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with serving() if serving else contextlib.nullcontext():
                yield
        finally:
            if memory is not None:
                memory.close()

    return lifespan


async def run(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking Memory call on a worker thread."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


class RecallThreads:
    """At most ``limit`` recalls on threads at once; the others wait on the event loop
    (an anyio limiter of this app's own, made on its first recall, inside the server)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, memory: Memory, query: str, options: dict[str, Any]) -> Recall:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.limit)
        call = functools.partial(memory.recall_queued, query, time.perf_counter(), **options)
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)


def _stamp(value: Stamp, what: str) -> float | None:
    return None if value is None else parse_timestamp(value, what)


# -- request and response bodies --------------------------------------------------------


class Body(BaseModel):
    """Strict JSON bodies: no type coercion, no unknown fields, no NaN or Infinity."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class RememberIn(Body):
    text: str = Field(description=f"What to remember (at most {MAX_TEXT_CHARS} characters).")
    layer: str = Field("episodic", description=f"Memory layer: {', '.join(LAYERS)}.")
    key: str | None = Field(None, description="Idempotency key: the same key updates.")
    kind: str | None = Field(None, description="Kind within the layer, e.g. turn or fact.")
    session: str | None = Field(None, description="Session id.")
    actor: str | None = Field(None, description="Who said or did it.")
    timestamp: Stamp = Field(None, description="Event time: epoch seconds or ISO-8601.")
    sources: list[str] = Field(default_factory=list, description="Keys this derives from.")
    metadata: dict[str, Any] | None = Field(None, description="Free-form JSON object.")
    attributes: dict[str, Any] | None = Field(
        None, description="Layer attributes (priority, due_at, steps, relations, ...)."
    )


class RecallIn(Body):
    query: str = Field(description=f"What to recall (1-{MAX_QUERY_CHARS} characters).")
    k: int = Field(10, description=f"How many memories to return (1-{MAX_K}).")
    layers: list[str] | None = Field(None, description="Layers to search (default: all).")
    since: Stamp = Field(None, description="Event time not before (epoch or ISO-8601).")
    until: Stamp = Field(None, description="Event time not after (epoch or ISO-8601).")
    session: str | None = Field(None, description="Only this session.")
    actor: str | None = Field(None, description="Only this actor.")
    kinds: list[str] | None = Field(None, description="Only these kinds.")
    strategy: str = Field("adaptive", description="Execution strategy (default: planner).")
    explain: bool = Field(False, description="Attach how the recall was executed.")
    timeout: float | None = Field(None, description="Give up after this many seconds (504).")


class UpdateIn(Body):
    text: str | None = Field(None, description="New text (re-embedded).")
    timestamp: Stamp = Field(None, description="New event time.")
    metadata: dict[str, Any] | None = Field(None, description="Merged into stored metadata.")
    attributes: dict[str, Any] | None = Field(None, description="Merged into attributes.")


class IdOut(BaseModel):
    id: int


class DeletedOut(BaseModel):
    deleted: list[int]


class HitOut(BaseModel):
    id: int
    layer: str
    text: str
    score: float
    tenant: str
    key: str
    kind: str
    session: str | None
    actor: str | None
    event_time: float | None
    created_at: float
    updated_at: float
    sources: list[str]
    metadata: dict[str, Any]


class RecallOut(BaseModel):
    hits: list[HitOut]
    explain: dict[str, Any] | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (400, "Malformed JSON"),
        (401, "Missing or invalid bearer token"),
        (403, "Token not valid for this tenant"),
        (404, "Unknown memory id or tenant"),
        (413, "Body too large"),
        (422, "Invalid input"),
        (429, "Rate limited (see Retry-After)"),
        (503, "Overloaded or store busy (see Retry-After)"),
    )
}


# -- the app ------------------------------------------------------------------------------


def create_app(
    memory: Memory,
    *,
    tokens: Mapping[str, Sequence[str] | None] | None = None,
    max_body_bytes: int = 1_000_000,
    max_inflight: int = 64,
    rate_limit_per_minute: int | None = None,
    concurrency: int | None = None,
    owns_memory: bool = False,
    mcp: bool = True,
    host: str = "127.0.0.1",
) -> FastAPI:
    """The HTTP API over ``memory``. ``tokens`` turns bearer auth on (token -> tenants,
    ``None`` = all tenants). At most ``concurrency`` recalls (default
    ``memory.concurrency``) run on threads at once; the rest wait on the event loop. The
    caller keeps ownership of ``memory``, unless ``owns_memory``: then the server closes it
    when it shuts down. ``mcp`` also serves the MCP tools at ``/mcp`` (streamable HTTP,
    under the same tokens and limits; see :mod:`athena.interfaces.http_mcp`), which needs
    the app's lifespan run; ``host``: the address the server binds.

    >>> # uvicorn.run(create_app(Memory("athena.db"), tokens={"s3cret": ["acme"]}))
    """
    threads = memory.concurrency if concurrency is None else concurrency
    for name, value in (
        ("max_body_bytes", max_body_bytes),
        ("max_inflight", max_inflight),
        ("concurrency", threads),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be a positive integer")
    recall_threads = RecallThreads(threads)
    gate = Gate(tokens, rate_limit_per_minute)
    metrics = Metrics(memory)

    async def answer(query: str, options: dict[str, Any]) -> Recall:
        """One recall as the API runs it, for its route and the MCP tool: a valid cache hit
        answered here on the event loop, only a miss takes one of the bounded threads;
        timed and counted in the metrics (``explain`` kept only if asked)."""
        start, asked = time.perf_counter(), options.get("explain", False)
        options = {**options, "explain": True}  # the metrics read how it ran
        result = memory.recall_cached(query, **options)
        if result is None:
            result = await recall_threads.run(memory, query, options)
        metrics.recall(result.explain, time.perf_counter() - start)
        return result if asked else Recall(result.hits)

    routes, serving = mcp_endpoint(memory, gate, host, answer, metrics) if mcp else ([], None)
    app = FastAPI(
        title="Athena",
        version=__version__,
        description="Memory engine for AI agents: remember, recall, forget, per tenant.",
        default_response_class=ApiJSON,
        lifespan=_lifespan(memory if owns_memory else None, serving),
    )
    app.router.routes.extend(routes)
    install_error_handlers(app)
    app.add_middleware(
        Admission,
        max_body_bytes=max_body_bytes,
        max_inflight=max_inflight,
        exempt=EXEMPT_FROM_INFLIGHT,
        on_reject=lambda reason: metrics.rejected.labels(reason).inc(),
        gate=gate,
        public=PUBLIC_PATHS,
    )
    app.state.memory, app.state.gate, app.state.metrics = memory, gate, metrics
    bearer = HTTPBearer(auto_error=False, description="Bearer token (when auth is on).")
    Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

    # async: dependencies run on the event loop (no thread hop)
    async def principal(request: Request, credentials: Credentials) -> Principal:
        token = None if credentials is None else credentials.credentials
        return gate.identify(token, client_address(request.scope))

    async def tenant_access(tenant: str, who: Annotated[Principal, Depends(principal)]) -> str:
        gate.allow_tenant(who, tenant)
        gate.throttle(who)
        return tenant

    async def global_access(who: Annotated[Principal, Depends(principal)]) -> None:
        gate.allow_global(who)
        gate.throttle(who)

    Tenant = Annotated[str, Depends(tenant_access)]
    MemoryId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="Memory id.")]
    tenant_routes: dict[str, Any] = {"responses": ERRORS, "tags": ["memories"]}
    global_routes: dict[str, Any] = {"responses": ERRORS, "tags": ["operations"]}

    @app.post(
        "/v1/tenants/{tenant}/memories", status_code=201, response_model=IdOut, **tenant_routes
    )
    async def remember(tenant: Tenant, body: RememberIn) -> Response:
        """Store one memory; the same (layer, key) updates it in place."""
        memory_id = await run(
            memory.remember,
            body.text,
            tenant=tenant,
            layer=body.layer,
            key=body.key,
            kind=body.kind,
            session=body.session,
            actor=body.actor,
            timestamp=_stamp(body.timestamp, "timestamp"),
            sources=body.sources,
            metadata=body.metadata,
            attributes=body.attributes,
        )
        metrics.writes.labels("remember").inc()
        return ApiJSON({"id": memory_id}, status_code=201)

    @app.post("/v1/tenants/{tenant}/recall", response_model=RecallOut, **tenant_routes)
    async def recall(tenant: Tenant, body: RecallIn) -> Response:
        """The ``k`` memories that best answer ``query``, best first."""
        options: dict[str, Any] = {
            "tenant": tenant,
            "k": body.k,
            "layers": body.layers,
            "since": _stamp(body.since, "since"),
            "until": _stamp(body.until, "until"),
            "session": body.session,
            "actor": body.actor,
            "kinds": body.kinds,
            "strategy": body.strategy,
            "explain": body.explain,
            "timeout": body.timeout,
        }
        return ApiJSON((await answer(body.query, options)).to_dict())

    @app.get("/v1/tenants/{tenant}/memories/{memory_id}", **tenant_routes)
    async def get_memory(tenant: Tenant, memory_id: MemoryId) -> Response:
        """One memory of the tenant (404 if it is not theirs)."""
        return ApiJSON(await run(memory.get, memory_id, tenant=tenant))

    @app.patch("/v1/tenants/{tenant}/memories/{memory_id}", response_model=IdOut, **tenant_routes)
    async def update_memory(tenant: Tenant, memory_id: MemoryId, body: UpdateIn) -> Response:
        """Change text (re-embedded), time, metadata or attributes (merged)."""
        updated = await run(
            memory.update,
            memory_id,
            tenant=tenant,
            text=body.text,
            timestamp=_stamp(body.timestamp, "timestamp"),
            metadata=body.metadata,
            attributes=body.attributes,
        )
        metrics.writes.labels("update").inc()
        return ApiJSON({"id": updated})

    @app.delete(
        "/v1/tenants/{tenant}/memories/{memory_id}", response_model=DeletedOut, **tenant_routes
    )
    async def forget(tenant: Tenant, memory_id: MemoryId) -> Response:
        """Delete one memory of the tenant."""
        deleted = await run(memory.forget, memory_id, tenant=tenant)
        metrics.writes.labels("forget").inc(len(deleted))
        return ApiJSON({"deleted": deleted})

    @app.get("/v1/tenants/{tenant}/stats", **tenant_routes)
    async def stats(tenant: Tenant) -> Response:
        """Memory counts per layer and entities of the tenant."""
        data = await run(memory.stats, tenant)
        data.pop("path", None)  # the server's filesystem is none of the client's business
        return ApiJSON(data)

    async def section(name: str) -> Response:
        cheap = name in ("pool", "admission")  # no telemetry summary needed for these
        data = await run(memory.execution_gauges if cheap else memory.execution_stats)
        return ApiJSON(data.get(name) or {})

    @app.get("/v1/telemetry", dependencies=[Depends(global_access)], **global_routes)
    async def telemetry() -> Response:
        """The execution layer's telemetry (``execution_stats()["telemetry"]``)."""
        return await section("telemetry")

    @app.get("/v1/cache", dependencies=[Depends(global_access)], **global_routes)
    async def cache() -> Response:
        """The recall cache's state (``execution_stats()["cache"]``)."""
        return await section("cache")

    @app.get("/v1/pool", dependencies=[Depends(global_access)], **global_routes)
    async def pool() -> Response:
        """The worker pool's state (``execution_stats()["pool"]``)."""
        return await section("pool")

    @app.get("/metrics", dependencies=[Depends(global_access)], **global_routes)
    async def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(await run(metrics.render), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return ApiJSON({"status": "ok", "pid": os.getpid()})

    @app.get("/readyz", tags=["operations"], responses={503: {"model": ErrorOut}})
    async def readyz() -> Response:
        """Readiness: the store answers a read."""
        try:
            await run(memory.store.data_version)
        except StoreError as exc:
            raise ApiError(503, "not_ready", f"store unavailable: {exc.code}") from exc
        return ApiJSON({"status": "ready"})

    return app
