"""The MCP server as a subprocess, driven by the MCP SDK's own stdio client."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult, TextContent
from mcp_types.version import LATEST_HANDSHAKE_VERSION

from athena.interfaces.mcp_server import build_server
from athena.memory import Memory

TOOLS = {"remember", "recall", "forget", "list_memories", "stats"}
SERVER = [sys.executable, "-m", "athena.interfaces.mcp_server"]


class Session:
    def __init__(self, session: ClientSession, faults: list[Any]) -> None:
        self.session, self.faults = session, faults

    async def call(self, tool: str, **arguments: Any) -> CallToolResult:
        return await self.session.call_tool(tool, arguments)

    async def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.call(tool, **arguments)
        assert not result.is_error, result.content
        assert result.structured_content is not None
        return dict(result.structured_content)

    async def fails(self, tool: str, **arguments: Any) -> str:
        result = await self.call(tool, **arguments)
        assert result.is_error, result
        assert isinstance(result.content[0], TextContent)
        return result.content[0].text


@asynccontextmanager
async def connect(db: Path, errlog: TextIO) -> AsyncIterator[Session]:
    faults: list[Any] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):  # e.g. a stdout line that is not JSON-RPC
            faults.append(message)

    params = StdioServerParameters(command=SERVER[0], args=[*SERVER[1:], "--db", str(db)])
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        yield Session(session, faults)
    assert faults == [], faults  # stdout carried protocol messages only


@pytest.fixture
def errlog(tmp_path: Path) -> TextIO:
    return (tmp_path / "stderr.txt").open("w+")


async def test_tools_are_listed_with_schemas(tmp_path: Path, errlog: TextIO) -> None:
    async with connect(tmp_path / "m.db", errlog) as client:
        listed = {tool.name: tool for tool in (await client.session.list_tools()).tools}
    assert set(listed) == TOOLS
    for tool in listed.values():
        assert tool.description and len(tool.description) > 40, tool.name
        assert tool.input_schema["type"] == "object"
    recall = listed["recall"].input_schema
    assert recall["required"] == ["query"]
    assert recall["properties"]["k"]["type"] == "integer"
    assert recall["properties"]["k"]["maximum"] == 1000
    assert "episodic" in json.dumps(recall["properties"]["layers"])
    assert listed["forget"].input_schema["properties"]["ids"]["type"] == "array"
    assert "layer" in listed["list_memories"].input_schema["properties"]


async def test_remember_recall_list_forget(tmp_path: Path, errlog: TextIO) -> None:
    async with connect(tmp_path / "m.db", errlog) as client:
        fact = await client.ok(
            "remember", text="Alice moved to Lisbon in May 2023.", tenant="t1", layer="semantic"
        )
        task = await client.ok(
            "remember",
            text="Call the dentist",
            tenant="t1",
            layer="prospective",
            attributes={"priority": 8},
            timestamp="2024-05-01T09:00:00Z",
        )
        await client.ok("remember", text="Alice's other self", tenant="t2", layer="semantic")
        hits = (await client.ok("recall", query="Where does Alice live?", tenant="t1"))["hits"]
        assert hits[0]["id"] == fact["id"] and {h["tenant"] for h in hits} == {"t1"}
        explained = await client.ok("recall", query="dentist", tenant="t1", explain=True)
        assert explained["explain"]["strategy"]
        listed = (await client.ok("list_memories", tenant="t1", layer="prospective"))["memories"]
        assert [m["id"] for m in listed] == [task["id"]]
        assert listed[0]["attributes"]["priority"] == 8
        stats = await client.ok("stats", tenant="t1")
        assert stats["layers"] == {"semantic": 1, "prospective": 1}
        assert (await client.ok("forget", ids=[fact["id"]], tenant="t1")) == {
            "deleted": [fact["id"]]
        }
        assert "not_found" in await client.fails("forget", ids=[fact["id"]], tenant="t1")
        hits = (await client.ok("recall", query="Where does Alice live?", tenant="t1"))["hits"]
        assert fact["id"] not in {h["id"] for h in hits}


async def test_bad_input_comes_back_as_error_results(tmp_path: Path, errlog: TextIO) -> None:
    async with connect(tmp_path / "m.db", errlog) as client:
        await client.ok("remember", text="something", tenant="t")
        assert "invalid_input" in await client.fails("recall", query="", tenant="t")
        assert "query_too_long" in await client.fails("recall", query="x" * 4001, tenant="t")
        assert "episodic" in await client.fails("recall", query="x", tenant="t", layers=["nope"])
        for k in (0, 1001, "many"):
            await client.fails("recall", query="x", tenant="t", k=k)
        assert "not_found" in await client.fails("recall", query="x", tenant="nobody")
        await client.fails("remember", text="", tenant="t")
        await client.fails("remember", text="x", tenant="t", layer="dreams")
        await client.fails("forget", ids=[], tenant="t")
        await client.fails("list_memories", tenant="t", limit=0)
        await client.fails("no_such_tool")
        # the server survived every one of them
        assert (await client.ok("stats", tenant="t"))["memories"] == 1


def test_stdout_is_protocol_only(tmp_path: Path) -> None:
    """Raw bytes on the server's stdout, start to exit: every line is a JSON-RPC message."""
    requests: list[dict[str, Any]] = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": LATEST_HANDSHAKE_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "remember", "arguments": {"text": "hello", "tenant": "t"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "recall", "arguments": {"query": "", "tenant": "t"}},
        },
    ]
    proc = subprocess.Popen(
        [*SERVER, "--db", str(tmp_path / "raw.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines: list[bytes] = []
    try:
        for request in requests:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            if "id" in request:  # wait for its answer before the next request
                while True:
                    lines.append(proc.stdout.readline())
                    assert lines[-1], "server closed stdout"
                    if json.loads(lines[-1]).get("id") == request["id"]:
                        break
        proc.stdin.close()
        lines.extend(proc.stdout.read().splitlines())  # everything until the server exits
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.stdout.close()
    messages = [json.loads(line) for line in lines if line.strip()]
    assert all(m.get("jsonrpc") == "2.0" for m in messages), lines
    by_id = {m["id"]: m for m in messages if "id" in m}
    assert set(by_id) >= {1, 2, 3, 4}, messages
    assert by_id[3]["result"]["isError"] is False
    assert by_id[4]["result"]["isError"] is True


async def test_build_server_in_process(memory: Memory) -> None:
    server = build_server(memory)
    assert {tool.name for tool in await server.list_tools()} == TOOLS
