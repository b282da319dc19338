"""Schemathesis against the live HTTP API (uvicorn on loopback), a bounded run.

Every operation of ``/openapi.json`` gets a few schema-conforming and schema-violating
requests; none may answer 500 (skipped without schemathesis). The bigger run is
``benchmarks/reliability/http_fuzz.py``. Hand-written requests schemathesis never generates
(lone-surrogate escapes) run everywhere.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest
from reliability_support import SCRIPTS, Server

from athena import Memory
from athena.embedding import Embedder
from athena.interfaces.http import create_app


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("http_fuzz", SCRIPTS / "http_fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


http_fuzz = _load()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[str]:
    db = tmp_path_factory.mktemp("schemathesis") / "fuzz.db"
    http_fuzz.seed_db(db)
    memory = Memory(db, embedder=embedder, pool="off")
    server = Server(create_app(memory))
    try:
        yield server.url
    finally:
        server.close()
        memory.close()


def test_no_response_is_a_500(live: str) -> None:
    pytest.importorskip("schemathesis")  # the hand-written cases below run without it
    summary = http_fuzz.fuzz(live, examples=12, seed=3)
    assert summary["operations"] >= 12
    assert summary["requests"] >= 100
    assert summary["responses_500"] == 0, summary["server_errors"]


# Regression of bug 3 (docs/reliability.md, fixed): a lone-surrogate JSON escape in sources,
# kind or the recall filters is valid JSON, and was a 500 internal_error.
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("memories", '{"text": "x", "sources": ["\\ud800"]}'),
        ("memories", '{"text": "x", "layer": "graph", "kind": "\\ud800"}'),
        ("recall", '{"query": "alice", "actor": "\\ud800"}'),
        ("recall", '{"query": "alice", "session": "\\ud800"}'),
        ("recall", '{"query": "alice", "kinds": ["\\ud800"]}'),
        ("recall", '{"query": "alice", "session": "a\\u0000b"}'),
        ("recall", '{"query": "alice", "since": 1e400}'),
    ],
)
def test_lone_surrogate_escape_is_422(live: str, path: str, body: str) -> None:
    response = httpx.post(
        f"{live}/v1/tenants/acme/{path}",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
