"""The MCP tools over streamable HTTP, driven by the MCP SDK's own client: inside the HTTP
API (``/mcp`` beside the REST routes, one process, one Memory, the same tokens and limits)
and as the standalone ``serve mcp --transport streamable-http`` server."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent

from athena.interfaces.http import create_app
from athena.memory import Memory
from loopback import serving

TOKENS = {"tok-a": ["a"], "tok-admin": None}


@asynccontextmanager
async def connect(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def ok(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def fails(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    assert isinstance(result.content[0], TextContent)
    return result.content[0].text


def metric_values(api: httpx.Client) -> dict[str, float]:
    """The API's /metrics samples by name and labels."""
    lines = api.get("/metrics").text.splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line[:1] != "#"
    }


def recalls_counted(api: httpx.Client) -> float:
    """The recalls the API's /metrics has timed so far."""
    counts = metric_values(api).items()
    return sum(value for name, value in counts if name.startswith("athena_recall_seconds_count"))


@pytest.fixture
def open_api(memory: Memory) -> Iterator[httpx.Client]:
    with serving(create_app(memory)) as client:
        yield client


@pytest.fixture
def secured(memory: Memory) -> Iterator[httpx.Client]:
    with serving(create_app(memory, tokens=TOKENS)) as client:
        yield client


async def test_mcp_and_rest_share_one_memory(open_api: httpx.Client) -> None:
    url = str(open_api.base_url).rstrip("/")
    async with connect(url) as session:
        assert len((await session.list_tools()).tools) == 5
        by_mcp = (await ok(session, "remember", text="Alice keeps bees.", tenant="t"))["id"]
        found = open_api.post("/v1/tenants/t/recall", json={"query": "Who keeps bees?"})
        assert found.status_code == 200 and [h["id"] for h in found.json()["hits"]] == [by_mcp]
        answer = open_api.post(
            "/v1/tenants/t/memories", json={"text": "Bob repairs clocks.", "layer": "semantic"}
        )
        assert answer.status_code == 201
        before = recalls_counted(open_api)
        hits = (await ok(session, "recall", query="Who repairs clocks?", tenant="t"))["hits"]
        assert answer.json()["id"] in [hit["id"] for hit in hits]  # the REST write, at once
        again = await ok(session, "recall", query="Who repairs clocks?", tenant="t")
        assert again["hits"] == hits and "explain" not in again  # a hit, as asked: no plan
        explained = await ok(
            session, "recall", query="Who repairs clocks?", tenant="t", explain=True
        )
        assert explained["explain"]["cache"] == "hit"  # the API's cache, as a REST recall
        assert recalls_counted(open_api) == before + 3  # run as the API runs its recalls
        assert (await ok(session, "forget", ids=[by_mcp], tenant="t"))["deleted"] == [by_mcp]
        counted = metric_values(open_api)
        assert counted['athena_mcp_calls_total{tool="remember"}'] == 1
        assert counted['athena_mcp_calls_total{tool="recall"}'] == 3
        assert counted['athena_writes_total{op="remember"}'] == 2  # one by MCP, one by REST
        assert counted['athena_writes_total{op="forget"}'] == 1
        assert open_api.get(f"/v1/tenants/t/memories/{by_mcp}").status_code == 404
        assert "invalid_input" in await fails(session, "recall", query=" ", tenant="t")


async def test_tokens_and_tenants_hold_over_mcp(secured: httpx.Client) -> None:
    url = str(secured.base_url).rstrip("/")
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    for token in (None, "tok-unknown"):
        with pytest.raises(BaseExceptionGroup) as refused:  # the SDK client cannot connect
            async with connect(url, token):
                pass
        assert refused.group_contains(MCPError)
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        answer = httpx.post(f"{url}/mcp", json=hello, headers=headers)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    async with connect(url, "tok-a") as session:
        memory_id = (await ok(session, "remember", text="Carol sails.", tenant="a"))["id"]
        assert (await ok(session, "recall", query="Who sails?", tenant="a"))["hits"]
        for tool, arguments in (
            ("recall", {"query": "Who sails?", "tenant": "b"}),
            ("remember", {"text": "Dan skis.", "tenant": "b"}),
            ("forget", {"ids": [memory_id], "tenant": "b"}),
            ("list_memories", {"tenant": "b"}),
            ("stats", {"tenant": "b"}),
        ):
            refused = await fails(session, tool, **arguments)
            assert refused.endswith("forbidden: this token may not access this tenant"), refused
        refused = await fails(session, "stats")  # the whole store: for all-tenant tokens
        assert refused.endswith("forbidden: this endpoint needs a token valid for all tenants")
        assert (await ok(session, "stats", tenant="a"))["memories"] == 1
    async with connect(url, "tok-admin") as session:
        whole = await ok(session, "stats")
        assert whole["memories"] == 1 and "path" not in whole  # the refused writes wrote nothing
        assert (await ok(session, "list_memories", tenant="a"))["memories"][0]["id"] == memory_id


def test_each_mcp_post_takes_one_request_from_the_bucket(memory: Memory) -> None:
    """Whatever a POST carries (a tool call, one that fails validation, a listing), it
    takes one request from the caller's bucket, which REST calls share; past it, 429."""
    admin = {**ACCEPT, "Authorization": "Bearer tok-admin", "MCP-Protocol-Version": "2025-06-18"}

    def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        params = {"name": name, "arguments": arguments}
        return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}

    bodies = [
        call("stats", {"tenant": "a"}),
        call("list_memories", {"tenant": "a", "limit": 5000}),  # refused by validation
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ] * 4  # 12: the whole bucket
    with serving(create_app(memory, tokens=TOKENS, rate_limit_per_minute=12)) as api:
        answers = [api.post("/mcp", json=body, headers=admin) for body in bodies]
        assert [answer.status_code for answer in answers] == [200] * 12
        assert "error" in answers[1].json() or answers[1].json()["result"].get("isError")
        refused = api.post("/mcp", json=bodies[0], headers=admin)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        rest = api.get("/v1/tenants/a/stats", headers={"Authorization": "Bearer tok-admin"})
        assert rest.status_code == 429  # one bucket for both
        other = {**admin, "Authorization": "Bearer tok-a"}
        assert api.post("/mcp", json=bodies[0], headers=other).status_code == 200  # its own


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_standalone_streamable_http_server(tmp_path: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "athena.interfaces.mcp_server", "--db", str(tmp_path / "m.db")]
    server = subprocess.Popen(
        [*command, "--transport", "streamable-http", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the MCP server did not start"
                time.sleep(0.1)
        async with connect(f"http://127.0.0.1:{port}") as session:
            memory_id = (await ok(session, "remember", text="Eve paints.", tenant="x"))["id"]
            hits = (await ok(session, "recall", query="Who paints?", tenant="x"))["hits"]
            assert [hit["id"] for hit in hits] == [memory_id]
            assert "not_found" in await fails(session, "recall", query="Who?", tenant="nobody")
    finally:
        server.terminate()
        server.wait(timeout=30)


HELLO = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def test_a_foreign_host_or_origin_is_refused_on_loopback_without_tokens(
    open_api: httpx.Client, secured: httpx.Client
) -> None:
    """Without tokens, a web page cannot reach a loopback /mcp through a rebound domain
    name; a loopback Host without a port (a local proxy's) passes. With tokens the page
    has no token to send, and a proxy may forward any Host."""
    for headers in ({"Host": "evil.example"}, {"Origin": "http://evil.example"}):
        answer = open_api.post("/mcp", json=HELLO, headers={**ACCEPT, **headers})
        assert answer.status_code in (403, 421), (headers, answer.status_code, answer.text)
    assert open_api.post("/mcp", json=HELLO, headers={**ACCEPT, "Host": "localhost"}).is_success
    admin = {**ACCEPT, "Authorization": "Bearer tok-admin", "Host": "athena.example"}
    assert secured.post("/mcp", json=HELLO, headers=admin).is_success


def test_only_post_reaches_the_tools(open_api: httpx.Client) -> None:
    """A GET (a stream the tools never use) would hold an in-flight place for as long as
    the client keeps it open: it is refused at once, as is a DELETE."""
    for method in ("GET", "DELETE"):
        answer = open_api.request(method, "/mcp", headers=ACCEPT)
        assert answer.status_code == 405 and answer.headers["allow"] == "POST", answer.text
        assert answer.json()["error"]["code"] == "method_not_allowed"


def test_an_app_serves_mcp_each_time_its_lifespan_runs(memory: Memory) -> None:
    """The SDK's session manager runs once; the app makes a fresh one per lifespan, so an
    app can be served (or tested) again, and before its lifespan /mcp says so."""
    from fastapi.testclient import TestClient

    app = create_app(memory)
    unstarted = TestClient(app).post("/mcp", json=HELLO, headers=ACCEPT)  # no lifespan
    assert unstarted.status_code == 503 and unstarted.json()["error"]["code"] == "unavailable"
    for _ in range(2):
        with TestClient(app, base_url="http://127.0.0.1") as client:
            answer = client.post("/mcp", json=HELLO, headers=ACCEPT)
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["serverInfo"]["name"] == "athena"


async def test_the_in_flight_bound_holds_for_mcp_posts(memory: Memory) -> None:
    """Past ``max_inflight`` a POST to /mcp is refused at once with 503, as a REST call is,
    and every other call of a burst is answered."""
    memory.remember("Fay grows tomatoes.", tenant="t")
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "recall", "arguments": {"query": "Who grows tomatoes?", "tenant": "t"}},
    }
    headers = {**ACCEPT, "MCP-Protocol-Version": "2025-06-18"}
    with serving(create_app(memory, max_inflight=2)) as api:
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post("/mcp", json={**call, "id": i}, headers=headers) for i in range(40))
            )
    codes = [answer.status_code for answer in answers]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "overloaded"
        else:
            assert answer.json()["result"]["structuredContent"]["hits"], answer.text


def test_one_app_is_served_by_one_lifespan_at_a_time(memory: Memory) -> None:
    """A second lifespan of an app still being served is refused (its /mcp belongs to the
    first), and the first keeps serving."""
    from fastapi.testclient import TestClient

    app = create_app(memory)
    with TestClient(app, base_url="http://127.0.0.1") as first:
        second = TestClient(app, base_url="http://127.0.0.1")
        with pytest.raises(RuntimeError, match="already being served"):
            second.__enter__()
        assert first.post("/mcp", json=HELLO, headers=ACCEPT).status_code == 200
