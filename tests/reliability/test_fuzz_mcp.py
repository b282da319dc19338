"""Fuzzing the MCP server through the MCP SDK's own client, over stdio and at the HTTP
API's ``/mcp``.

Every tool is called with arguments drawn by Hypothesis from its listed input schema: each
known argument absent, well-typed, or of any other JSON type, with hostile strings (NUL,
FTS5 syntax, SQL, very long text), out-of-range numbers and unknown extra arguments. Every
call must come back as a result or as an error result (``isError``) carrying a message,
never as a broken session; afterwards the server still answers, its stderr holds no
traceback, and the file is sound with every memory it acknowledged.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent

from athena import Memory
from athena.errors import NotFound
from athena.interfaces.http import create_app
from loopback import serving

SERVER = [sys.executable, "-m", "athena.interfaces.mcp_server"]
HOSTILE = (
    "'; DROP TABLE memories; --",
    'NEAR(alice bob) "unbalanced',
    "text: * OR scope:abc (",
    "a\x00b",
    "x" * 5000,
    "",
    " ",
    "\u202e\ufeff",
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
    | st.sampled_from(HOSTILE),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


# Each example a fresh file and a server: a handful of campaigns of 25 calls.
CAMPAIGNS = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
WORDS = st.text(st.sampled_from("abcdefghij XYZ"), min_size=1, max_size=30).filter(str.strip)


def _typed(name: str, prop: dict[str, Any], tame: bool) -> st.SearchStrategy[Any]:
    """A value of the property's own type: plain when ``tame``, else hostile or at its limits."""
    hostile = st.sampled_from(HOSTILE)
    if "enum" in prop:
        return st.sampled_from(prop["enum"]) if tame else st.sampled_from(prop["enum"]) | hostile
    kinds = [prop["type"]] if "type" in prop else [o.get("type") for o in prop.get("anyOf", ())]
    kind = next((k for k in kinds if k not in (None, "null")), None)
    if name == "tenant":
        tenants = st.sampled_from(("default", "t1", "t2"))
        return tenants if tame else tenants | hostile
    if tame and kind == "number":
        return st.floats(min_value=0, max_value=2e9)
    if tame and kind in ("string", "object"):
        return WORDS if kind == "string" else st.just({})
    if kind == "string":
        return st.text(max_size=30) | hostile
    if kind == "integer":
        return st.integers(1, 100) if tame else st.integers(min_value=-5, max_value=2_000)
    if kind == "number":
        return st.floats(min_value=-1e12, max_value=1e12) | st.integers(-(2**70), 2**70)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        items = prop.get("items", {})
        item = _typed("", items, tame) if items else JSON
        return st.lists(item | st.integers(min_value=-3, max_value=60), max_size=5)
    if kind == "object":
        return st.dictionaries(st.text(max_size=10), JSON, max_size=4)
    return JSON


def _arguments(data: st.DataObject, schema: dict[str, Any]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    tame = data.draw(st.booleans())  # half the calls keep every argument to its type
    choices = ("absent", "typed", "typed", "typed") if tame else ("absent", "typed", "any")
    for name, prop in schema.get("properties", {}).items():
        required = tame and name in schema.get("required", ())
        choice = "typed" if required else data.draw(st.sampled_from(choices))
        if choice != "absent":
            arguments[name] = data.draw(_typed(name, prop, tame) if choice == "typed" else JSON)
    if not tame and data.draw(st.integers(0, 4)) == 0:
        arguments[data.draw(st.text(min_size=1, max_size=10))] = data.draw(JSON)
    return arguments


async def _campaign(db: Path, errlog: Path, data: st.DataObject) -> list[int]:
    """25 drawn tool calls over stdio; the ids of the memories the campaign stored and kept."""
    params = StdioServerParameters(command=SERVER[0], args=[*SERVER[1:], "--db", str(db)])
    with errlog.open("a") as log:
        async with (
            stdio_client(params, errlog=log) as (read, write),
            ClientSession(read, write) as session,
        ):
            return await _calls(session, data)


async def _calls(session: ClientSession, data: st.DataObject) -> list[int]:
    """25 drawn tool calls in an open session; the memories stored and kept."""
    acknowledged: list[int] = []
    await session.initialize()
    tools = {tool.name: tool.input_schema for tool in (await session.list_tools()).tools}
    for _ in range(25):
        name = data.draw(st.sampled_from(sorted(tools)))
        arguments = _arguments(data, tools[name])
        try:
            result = await session.call_tool(name, arguments)
        except MCPError as exc:  # a JSON-RPC error response: typed, session intact
            assert exc.error.message
            continue
        if result.is_error:
            assert isinstance(result.content[0], TextContent) and result.content[0].text
        else:
            assert result.structured_content is not None
            if name == "remember":
                acknowledged.append(int(result.structured_content["id"]))
            if name == "forget":  # a drawn id may be one the campaign stored
                gone = set(result.structured_content["deleted"])
                acknowledged = [i for i in acknowledged if i not in gone]
    alive = await session.call_tool("stats", {"tenant": "default"})
    assert not alive.is_error, alive.content
    return acknowledged


@pytest.mark.slow
@CAMPAIGNS
@given(data=st.data())
def test_any_arguments_give_a_result_or_an_error_result(tmp_path: Path, data: Any) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh file for every example
    db, errlog = work / "fuzz.db", work / "stderr.txt"
    acknowledged = asyncio.run(_campaign(db, errlog, data))
    assert "Traceback" not in errlog.read_text()
    with Memory(db) as memory:
        _sound(memory, acknowledged)


def _sound(memory: Memory, acknowledged: list[int]) -> None:
    """The file passes its integrity checks and holds every memory a call acknowledged
    (under whichever tenant that call named)."""
    assert memory.store.integrity_check() == "ok"
    for memory_id in acknowledged:
        assert any(_has(memory, memory_id, t) for t in memory.tenants()), memory_id


def _has(memory: Memory, memory_id: int, tenant: str) -> bool:
    try:
        memory.get(memory_id, tenant=tenant)
    except NotFound:
        return False
    return True


@pytest.mark.slow
@CAMPAIGNS
@given(data=st.data())
def test_the_http_apis_mcp_endpoint_too(tmp_path: Path, data: Any) -> None:
    """The same campaign against ``/mcp`` of the HTTP API (a token for every tenant, so each
    call also passes the API's checks): no answer is a 5xx, and the file is sound."""
    db = Path(tempfile.mkdtemp(dir=tmp_path)) / "fuzz.db"
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async def campaign(url: str) -> list[int]:
        auth = {"Authorization": "Bearer tok"}
        async with (
            httpx2.AsyncClient(
                headers=auth, timeout=60, event_hooks={"response": [record]}
            ) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            return await _calls(session, data)

    with Memory(db) as memory:
        with serving(create_app(memory, tokens={"tok": None})) as client:
            acknowledged = asyncio.run(campaign(str(client.base_url).rstrip("/")))
        assert statuses and max(statuses) < 500, statuses
        _sound(memory, acknowledged)
