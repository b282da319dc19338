"""The MCP tools inside the HTTP API: streamable HTTP at ``/mcp``, in the same process.

An agent speaking MCP and a service calling the REST API then share one
:class:`~athena.memory.Memory` (one result cache, one set of indexes, one index budget)
instead of each running its own server on the same file, and MCP gets what the API has:

* bearer tokens: a call without a valid token is refused with 401 before its body is
  read (the API's :class:`~athena.interfaces.http_auth.Admission`), and a tool call naming
  a tenant the token may not reach, or the whole store (``stats`` without a tenant) with a
  token scoped to some tenants, comes back as an MCP error result ``forbidden: ...``;
* the per-token rate limit (each POST takes one request from the caller's bucket, 429
  past it, as a REST call), the body size limit and the in-flight bound.

The transport is stateless with JSON responses: each POST carries one request and gets its
answer, nothing is kept between them, so a server of several processes (``serve http
--workers N``) serves any call in any process. The tools need no server-to-client stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from athena.interfaces.http_auth import Gate, Principal, bearer_token, client_address
from athena.interfaces.http_errors import ApiError, error_response
from athena.interfaces.http_metrics import Metrics
from athena.interfaces.mcp_server import Access, Recaller, build_server
from athena.memory import Memory

MCP_PATH = "/mcp"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def caller(gate: Gate, scope: Scope, headers: Mapping[str, str]) -> Principal:
    """Who sent a request (its bearer token, else its address); ApiError 401 if refused."""
    return gate.identify(bearer_token(headers), client_address(scope))


def gate_access(gate: Gate) -> Access:
    """The MCP tools' :data:`~athena.interfaces.mcp_server.Access` under ``gate``'s tokens
    and tenant grants; the refusal as ``"<code>: <message>"``. (The rate limit is taken per
    POST, before the SDK sees it: :class:`PostOnly`.)

    >>> gate_access(Gate(None, None))(None, "recall", "acme") is None
    True
    """

    def access(request: Any, tool: str, tenant: str | None) -> str | None:
        if not isinstance(request, Request):  # not over HTTP: nothing to check it against
            return None if not gate.enabled else "unauthorized: a bearer token is required"
        try:
            who = caller(gate, request.scope, request.headers)
            if tenant is None:
                gate.allow_global(who)
            else:
                gate.allow_tenant(who, tenant)
        except ApiError as exc:
            return f"{exc.code}: {exc.message}"
        return None

    return access


def mcp_endpoint(
    memory: Memory, gate: Gate, host: str, recaller: Recaller, metrics: Metrics
) -> tuple[list[BaseRoute], Callable[[], contextlib.AbstractAsyncContextManager[None]]]:
    """The MCP endpoint's route, for the API app (its middleware then wraps it), and what
    the app's lifespan must run while it serves: each run a fresh session manager and its
    task group (the SDK's runs once), so an app may be served, or tested, more than once.

    ``host`` is the address the server binds: on loopback, and without tokens, the MCP
    SDK's DNS-rebinding protection is on (a browser page cannot reach the tools through a
    hostile domain name). ``recaller`` runs the recall tool's recalls as the API runs its
    own (a hit on the event loop, a miss on one of its bounded recall threads, counted in
    its metrics); ``metrics`` also counts each tool call and the writes the tools make.

    >>> # routes, running = mcp_endpoint(memory, Gate(None, None), "127.0.0.1", answer, m)
    """
    checked = gate_access(gate)

    def access(request: Any, tool: str, tenant: str | None) -> str | None:
        metrics.mcp_calls.labels(tool).inc()
        return checked(request, tool, tenant)

    def wrote(op: str, count: int) -> None:
        metrics.writes.labels(op).inc(count)

    server = build_server(memory, access=access, recaller=recaller, wrote=wrote)
    # With bearer tokens a web page cannot call the tools (it has no token to send); without
    # them, on loopback, it could through a domain name rebound to 127.0.0.1, which the
    # SDK's check of Host and Origin refuses (a proxy in front must send a loopback Host).
    guard = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    if not gate.enabled and host in LOOPBACK:
        names = ["127.0.0.1", "localhost", "[::1]"]
        guard = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[*names, *(f"{name}:*" for name in names)],
            allowed_origins=[f"http://{name}{port}" for name in names for port in ("", ":*")],
        )
    endpoint = PostOnly(gate)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        if endpoint.app is not None:  # its session manager is another lifespan's
            raise RuntimeError("this app's /mcp is already being served; make another app")
        mcp_app = server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            transport_security=guard,
        )
        (route,) = [r for r in mcp_app.routes if isinstance(r, Route)]
        transport: Any = route.endpoint  # the SDK's StreamableHTTPASGIApp
        endpoint.app = transport
        try:
            async with transport.session_manager.run():
                yield
        finally:
            endpoint.app = None

    return [Route(MCP_PATH, endpoint=endpoint)], running


class PostOnly:
    """The endpoint for POST alone: a GET would open a server-to-client stream that holds
    one of the API's in-flight places for as long as the client keeps it (and the tools
    send nothing on it), and a DELETE ends a session the stateless endpoint never keeps.
    Both get 405, which MCP clients take as "no such stream". Each POST takes one request
    from its caller's rate-limit bucket, as a REST call does (429 past it), whatever it
    carries: a tool call, one that fails validation, a listing. Before the app's lifespan
    has started the transport (``app``), a call gets 503."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.app: ASGIApp | None = None  # the SDK's transport endpoint, while a lifespan runs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST":
            message = "the MCP endpoint takes one JSON-RPC request per POST"
            response = error_response(405, "method_not_allowed", message, {"Allow": "POST"})
            await response(scope, receive, send)
            return
        try:
            self.gate.throttle(caller(self.gate, scope, Headers(scope=scope)))
        except ApiError as exc:
            await error_response(exc.status, exc.code, exc.message, exc.headers)(
                scope, receive, send
            )
            return
        app = self.app
        if app is None:
            message = "the MCP endpoint is not running (the server's lifespan has not started)"
            await error_response(503, "unavailable", message)(scope, receive, send)
            return
        await app(scope, receive, send)
