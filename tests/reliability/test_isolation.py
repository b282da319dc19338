"""Tenant isolation through every face (Python API, CLI, HTTP with tenant-bound tokens, MCP),
and the documented limits, each tested at one boundary.

The tenants are chosen to collide if anything normalised them: case (``acme``/``Acme``),
whitespace (`` acme``), a zero-width space (``acme\\u200b``), full-width letters, NFC vs NFD
(``café``), ``t`` vs ``t\\u200b``. Each holds a secret only it may see. Every attempt to
reach another tenant's memory (recall of its secret, get/update/forget of its id, crafted
ids in a batch, the same query text in two tenants recalled alternately with writes in
between so that a cache keyed too loosely would serve one tenant's answer to the other)
must come back empty or NotFound (404 / exit 3 / ``not_found``), and leave the other
tenant's memory untouched. ``ATTEMPTS`` counts them; set ``ATHENA_RELIABILITY_OUT`` to a
directory to have the counts written to ``isolation.json`` there.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import TextContent
from reliability_support import assert_sound, serving
from typer.testing import CliRunner

from athena import Memory
from athena.embedding import Embedder
from athena.errors import NotFound
from athena.interfaces.cli import app as cli_app
from athena.interfaces.http import create_app
from athena.records import MAX_K, MAX_QUERY_CHARS

TENANTS = (
    "acme",
    "Acme",
    "ACME",
    " acme",
    "acme ",
    "acme\u200b",
    "ａｃｍｅ",
    unicodedata.normalize("NFC", "café"),
    unicodedata.normalize("NFD", "café"),
    "t",
    "t\u200b",
)
ATTEMPTS: Counter[str] = Counter()


def _secret(index: int) -> str:
    return f"secretword{index}x"


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[Memory, dict[str, int]]]:
    memory = Memory(tmp_path_factory.mktemp("iso") / "iso.db", embedder=embedder, pool="off")
    ids = {}
    for index, tenant in enumerate(TENANTS):
        ids[tenant] = memory.remember(
            f"The vault code is {_secret(index)}.", tenant=tenant, layer="semantic"
        )
        memory.remember("Alice moved to Lisbon in May.", tenant=tenant, key="shared-key")
    assert len(set(memory.tenants())) == len(TENANTS)  # no two names were merged
    yield memory, ids
    memory.close()


def _no_leak(text: str, own: int) -> None:
    for index in range(len(TENANTS)):
        if index != own:
            assert _secret(index) not in text


def _report() -> None:
    out = os.environ.get("ATHENA_RELIABILITY_OUT")
    if out:
        path = Path(out) / "isolation.json"
        path.write_text(json.dumps({**ATTEMPTS, "total": sum(ATTEMPTS.values())}, indent=2))


# -- the Python API ---------------------------------------------------------------------------


def test_api_cross_tenant_attempts(seeded: tuple[Memory, dict[str, int]]) -> None:
    memory, ids = seeded
    for a_index, a in enumerate(TENANTS):
        for b_index, b in enumerate(TENANTS):
            if a == b:
                continue
            victim = ids[b]
            hits = memory.recall(f"vault code {_secret(b_index)}", tenant=a, k=50).hits
            assert {hit.tenant for hit in hits} == {a}
            _no_leak(" ".join(hit.text for hit in hits), a_index)
            for attempt in (
                partial(memory.get, victim, tenant=a),
                partial(memory.update, victim, tenant=a, text="hijacked"),
                partial(memory.update, victim, tenant=a, metadata={"owner": a}),
                partial(memory.forget, victim, tenant=a),
                partial(memory.forget, [ids[a], victim], tenant=a),  # all or none
            ):
                with pytest.raises(NotFound):
                    attempt()
            ATTEMPTS["api"] += 6
    for index, tenant in enumerate(TENANTS):  # every victim is untouched
        row = memory.get(ids[tenant], tenant=tenant)
        assert row["text"] == f"The vault code is {_secret(index)}." and row["metadata"] == {}
        assert memory.stats(tenant)["memories"] == 2


def test_cache_keys_do_not_collide(seeded: tuple[Memory, dict[str, int]]) -> None:
    """The same query in colliding tenants, alternately, with writes between (cache on)."""
    memory, _ = seeded
    pairs = [("acme", "acme\u200b"), ("t", "t\u200b"), ("acme", "Acme"), TENANTS[7:9]]
    query = "Where did Alice move?"
    for a, b in pairs:
        for round_ in range(12):
            writer = (a, b)[round_ % 2]
            new = memory.remember(f"Alice moved on, round {round_} ({writer!r})", tenant=writer)
            for tenant in (a, b, a, b):  # twice each: the second may come from the cache
                result = memory.recall(query, tenant=tenant, k=50, explain=True)
                assert {hit.tenant for hit in result.hits} == {tenant}
                assert (new in {hit.id for hit in result.hits}) == (tenant == writer)
                ATTEMPTS["cache"] += 1
            memory.forget(new, tenant=writer)
    stats = memory.execution_stats()["cache"]
    assert stats["hits"] + stats.get("partial_hits", 0) > 0  # the cache was in play


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_cross_tenant_attempts(seeded: tuple[Memory, dict[str, int]]) -> None:
    memory, ids = seeded
    db = str(memory.store.path)
    runner = CliRunner()
    pairs = [("acme", "Acme"), ("acme", "acme\u200b"), ("t", "t\u200b"), ("Acme", " acme")]
    for a, b in pairs:
        victim = str(ids[b])
        for args in (
            ["get", victim, "-t", a],
            ["update", victim, "-t", a, "--text", "hijacked"],
            ["forget", victim, "-t", a],
        ):
            result = runner.invoke(cli_app, ["--db", db, *args])
            assert result.exit_code == 3, result.output
            assert result.stderr.startswith("error: no memor")
            ATTEMPTS["cli"] += 1
        b_index = TENANTS.index(b)
        result = runner.invoke(
            cli_app, ["--db", db, "recall", f"vault {_secret(b_index)}", "-t", a, "--json"]
        )
        assert result.exit_code == 0, result.output
        hits = json.loads(result.stdout)["hits"]
        assert {hit["tenant"] for hit in hits} == {a}
        _no_leak(result.stdout, TENANTS.index(a))
        ATTEMPTS["cli"] += 1
    assert memory.get(ids["Acme"], tenant="Acme")["text"].startswith("The vault code")


# -- HTTP with tenant-bound tokens ---------------------------------------------------------------

TOKENS = {"tok-acme": ["acme"], "tok-zwsp": ["acme\u200b"], "tok-admin": None}


@pytest.fixture(scope="module")
def api(seeded: tuple[Memory, dict[str, int]]) -> Iterator[httpx.Client]:
    memory, _ = seeded
    with serving(create_app(memory, tokens=TOKENS)) as client:
        yield client


def _path_tenant(tenant: str) -> str:
    return httpx.URL("http://x/").copy_with(path=f"/{tenant}").raw_path.decode()[1:]


def test_http_cross_tenant_attempts(
    seeded: tuple[Memory, dict[str, int]], api: httpx.Client
) -> None:
    memory, ids = seeded
    for token, own in (("tok-acme", "acme"), ("tok-zwsp", "acme\u200b")):
        auth = {"Authorization": f"Bearer {token}"}
        own_index = TENANTS.index(own)
        for other in TENANTS:
            if other == own:
                continue
            path = _path_tenant(other)
            victim = ids[other]
            # Another tenant in the path: 403 before anything is looked up.
            for method, url, body in (
                ("GET", f"/v1/tenants/{path}/memories/{victim}", None),
                ("PATCH", f"/v1/tenants/{path}/memories/{victim}", {"text": "hijacked"}),
                ("DELETE", f"/v1/tenants/{path}/memories/{victim}", None),
                ("POST", f"/v1/tenants/{path}/recall", {"query": "vault code"}),
                ("POST", f"/v1/tenants/{path}/memories", {"text": "planted"}),
                ("GET", f"/v1/tenants/{path}/stats", None),
            ):
                response = api.request(method, url, json=body, headers=auth)
                assert response.status_code == 403, (method, url, response.text)
                ATTEMPTS["http"] += 1
            # Own tenant in the path, another tenant's id: 404, like an id that never existed.
            own_path = _path_tenant(own)
            for method, body in (("GET", None), ("PATCH", {"text": "x"}), ("DELETE", None)):
                url = f"/v1/tenants/{own_path}/memories/{victim}"
                response = api.request(method, url, json=body, headers=auth)
                assert response.status_code == 404, (method, url, response.text)
                _no_leak(response.text, own_index)
                ATTEMPTS["http"] += 1
            response = api.post(
                f"/v1/tenants/{own_path}/recall",
                json={"query": f"vault {_secret(TENANTS.index(other))}", "k": 50},
                headers=auth,
            )
            assert response.status_code == 200, response.text
            assert {hit["tenant"] for hit in response.json()["hits"]} == {own}
            _no_leak(response.text, own_index)
            ATTEMPTS["http"] += 1
        # Crafted paths: encodings and traversal never reach another tenant.
        for crafted in (
            "ACME",
            "acme%20",
            "%20acme",
            "acme%E2%80%8B",
            "%61cme",
            "acme%2F..%2FAcme",
        ):
            response = api.get(f"/v1/tenants/{crafted}/stats", headers=auth)
            if unquote(crafted) == own:  # the same name, only spelled with escapes
                assert response.status_code == 200, (crafted, response.text)
            else:
                assert response.status_code in (403, 404), (crafted, response.text)
            ATTEMPTS["http"] += 1
        response = api.get("/v1/tenants/acme/../Acme/stats", headers=auth)
        assert response.status_code in (403, 404), response.text
        for url in ("/v1/cache", "/v1/pool", "/v1/telemetry", "/metrics"):
            assert api.get(url, headers=auth).status_code == 403
            ATTEMPTS["http"] += 1
    for url in ("/v1/tenants/acme/stats", f"/v1/tenants/acme/memories/{ids['acme']}"):
        assert api.get(url).status_code == 401
        assert api.get(url, headers={"Authorization": "Bearer TOK-ACME"}).status_code == 401
        ATTEMPTS["http"] += 2
    assert memory.get(ids["Acme"], tenant="Acme")["text"].startswith("The vault code")


# -- MCP over stdio --------------------------------------------------------------------------------


async def test_mcp_cross_tenant_attempts(tmp_path: Path) -> None:
    db = tmp_path / "mcp.db"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "athena.interfaces.mcp_server", "--db", str(db)]
    )
    tenants = ("t", "t\u200b", "T", "acme", "Acme")
    with (tmp_path / "stderr.txt").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()

            async def call(tool: str, **arguments: Any) -> tuple[bool, Any]:
                result = await session.call_tool(tool, arguments)
                if result.is_error:
                    content = result.content[0]
                    assert isinstance(content, TextContent)
                    return False, content.text
                return True, result.structured_content

            ids = {}
            for index, tenant in enumerate(tenants):
                ok, value = await call(
                    "remember", text=f"The vault code is {_secret(index)}.", tenant=tenant
                )
                assert ok, value
                ids[tenant] = value["id"]
            for a_index, a in enumerate(tenants):
                for b_index, b in enumerate(tenants):
                    if a == b:
                        continue
                    ok, value = await call("forget", ids=[ids[b]], tenant=a)
                    assert not ok and "not_found: " in value, value
                    ok, value = await call("forget", ids=[ids[a], ids[b]], tenant=a)
                    assert not ok and "not_found: " in value, value
                    ok, value = await call("recall", query=f"vault {_secret(b_index)}", tenant=a)
                    assert ok and {hit["tenant"] for hit in value["hits"]} == {a}
                    _no_leak(json.dumps(value, ensure_ascii=False), a_index)
                    ok, value = await call("list_memories", tenant=a, layer="episodic")
                    assert ok and [m["id"] for m in value["memories"]] == [ids[a]]
                    ATTEMPTS["mcp"] += 4
            for tenant in tenants:  # nothing was deleted by the failed attempts
                ok, value = await call("stats", tenant=tenant)
                assert ok and value["memories"] == 1, value
    assert_sound(db)


# -- limits: documented, and enforced at one boundary each -----------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "interfaces.md"


def test_limits_are_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for needle in (
        "| query length | 4,000 characters",
        "| `k` | 1 to 1,000 |",
        "| request body | `max_body_bytes`, default 1,000,000 bytes (413) |",
        "rate_limit_per_minute",
        "429",
    ):
        assert needle in text, needle
    assert MAX_QUERY_CHARS == 4_000 and MAX_K == 1_000


def test_limits_are_enforced_at_their_boundary(seeded: tuple[Memory, dict[str, int]]) -> None:
    memory, _ = seeded
    app = create_app(memory, tokens=TOKENS, max_body_bytes=4096, rate_limit_per_minute=6)
    auth = {"Authorization": "Bearer tok-acme", "Content-Type": "application/json"}
    with serving(app) as client:
        url = "/v1/tenants/acme/recall"
        # query length: 4,000 answers, 4,001 is query_too_long (this body stays < 4096 bytes)
        ok = client.post(url, json={"query": "a" * MAX_QUERY_CHARS}, headers=auth)
        assert ok.status_code == 200, ok.text
        long = client.post(url, json={"query": "a" * (MAX_QUERY_CHARS + 1)}, headers=auth)
        assert long.status_code == 422 and long.json()["error"]["code"] == "query_too_long"
        # k: 1,000 answers, 1,001 is invalid
        assert client.post(url, json={"query": "a", "k": MAX_K}, headers=auth).status_code == 200
        assert (
            client.post(url, json={"query": "a", "k": MAX_K + 1}, headers=auth).status_code == 422
        )
        # 4 requests so far: the 5th and 6th pass, the 7th is rate limited (Retry-After)
        body = json.dumps({"query": "a"})
        for _ in range(2):
            assert client.post(url, content=body, headers=auth).status_code == 200
        limited = client.post(url, content=body, headers=auth)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # another token has its own bucket
        zwsp = {**auth, "Authorization": "Bearer tok-zwsp"}
        other = client.get(f"/v1/tenants/{_path_tenant('acme' + chr(0x200B))}/stats", headers=zwsp)
        assert other.status_code == 200, other.text
        # body size: one byte over max_body_bytes is 413 (before auth-free parsing)
        padded = json.dumps({"query": "a", "session": "x" * 5000})
        too_big = client.post(url, content=padded, headers=zwsp)
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    ATTEMPTS["limits"] += 8
    _report()
