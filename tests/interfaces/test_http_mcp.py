"""The MCP tools over streamable HTTP, driven by the MCP SDK's own client: inside the HTTP
API (``/mcp`` beside the REST routes, one process, one Memory, the same tokens and limits)
and as the standalone ``serve mcp --transport streamable-http`` server."""

from __future__ import annotations

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


def recalls_counted(api: httpx.Client) -> float:
    """The recalls the API's /metrics has timed so far."""
    lines = api.get("/metrics").text.splitlines()
    return sum(
        float(line.split()[-1]) for line in lines if line.startswith("athena_recall_seconds_count")
    )


@pytest.fixture
def open_api(memory: Memory) -> Iterator[httpx.Client]:
    with serving(create_app(memory)) as client:
        yield client


@pytest.fixture
def secured(memory: Memory) -> Iterator[httpx.Client]:
    with serving(create_app(memory, tokens=TOKENS, rate_limit_per_minute=12)) as client:
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
        assert explained["explain"]["cache"] == "hit"  # the API's cache answered the MCP call
        assert recalls_counted(open_api) == before + 3  # run as the API runs its recalls
        assert (await ok(session, "forget", ids=[by_mcp], tenant="t"))["deleted"] == [by_mcp]
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
        assert (await ok(session, "stats"))["memories"] >= 1
        assert (await ok(session, "list_memories", tenant="a"))["memories"][0]["id"] == memory_id


async def test_the_rate_limit_counts_tool_calls(secured: httpx.Client) -> None:
    url = str(secured.base_url).rstrip("/")
    async with connect(url, "tok-admin") as session:
        refused = []
        for _ in range(14):  # a bucket of 12
            result = await session.call_tool("stats", {"tenant": "a"})
            if result.is_error:
                assert isinstance(result.content[0], TextContent)
                refused.append(result.content[0].text)
        assert refused and all("rate_limited" in text for text in refused)
    assert (
        secured.get(
            "/v1/tenants/a/stats", headers={"Authorization": "Bearer tok-admin"}
        ).status_code
        == 429
    )


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


def test_a_foreign_host_or_origin_is_refused_on_loopback(open_api: httpx.Client) -> None:
    """On a loopback server a web page cannot reach /mcp through a rebound domain name."""
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({"Host": "evil.example"}, {"Origin": "http://evil.example"}):
        answer = open_api.post("/mcp", json=hello, headers={**accept, **headers})
        assert answer.status_code in (403, 421), (headers, answer.status_code, answer.text)
