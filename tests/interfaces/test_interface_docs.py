"""docs/interfaces.md documents every HTTP route and every MCP tool (and its parameters)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.routing import APIRoute
from starlette.routing import Route

from athena.interfaces.http import create_app
from athena.interfaces.mcp_server import build_server
from athena.memory import Memory

DOCS = Path(__file__).resolve().parents[2] / "docs" / "interfaces.md"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = re.search(r"^#{1,3} ", text[start + len(heading) :], flags=re.MULTILINE)
    return text[start : start + len(heading) + (following.start() if following else len(text))]


def test_every_http_route_is_documented(memory: Memory) -> None:
    docs = DOCS.read_text(encoding="utf-8")
    app = create_app(memory)
    seen = 0
    for route in app.routes:
        if isinstance(route, APIRoute):
            for method in sorted(route.methods or ()):
                assert f"### `{method} {route.path}`" in docs or (
                    f"`{method} {route.path}`" in docs
                ), f"docs/interfaces.md misses {method} {route.path}"
                seen += 1
        elif isinstance(route, Route):  # the docs' own pages, and /mcp (any method)
            method = "GET" if route.methods else "POST"
            assert f"`{method} {route.path}`" in docs, f"docs/interfaces.md misses {route.path}"
            seen += 1
    assert seen >= 17


async def test_every_mcp_tool_and_parameter_is_documented(memory: Memory) -> None:
    docs = DOCS.read_text(encoding="utf-8")
    tools = await build_server(memory).list_tools()
    assert len(tools) == 5
    for tool in tools:
        heading = f"### `{tool.name}`"
        assert heading in docs, f"docs/interfaces.md misses MCP tool {tool.name}"
        section = _section(docs, heading)
        for parameter in tool.input_schema.get("properties", {}):
            assert f"`{parameter}`" in section, f"{tool.name}: parameter {parameter} undocumented"


def test_serve_options_are_documented() -> None:
    import typer.main

    from athena.interfaces.cli_serve import serve_app

    docs = DOCS.read_text(encoding="utf-8")
    group = typer.main.get_command(serve_app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert f"athena serve {name}" in docs
        for param in command.params:
            for opt in param.opts:
                assert f"`{opt}" in docs, f"docs/interfaces.md misses {opt} of serve {name}"
