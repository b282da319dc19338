"""The HTTP API for real: uvicorn on a loopback port, a SQLite file, httpx as the client."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from athena.embedding import Embedder
from athena.errors import InvalidInput, NotFound, RecallTimeout, StoreError, StoreLocked
from athena.interfaces.http import create_app
from athena.memory import Memory
from athena.records import MAX_K, MAX_QUERY_CHARS
from loopback import serving

TOKENS = {"tok-a": ["a"], "tok-b": ["b"], "tok-admin": None}
ADMIN = {"Authorization": "Bearer tok-admin"}
A = {"Authorization": "Bearer tok-a"}
METRIC_NAMES = (
    "athena_recall_seconds_bucket",
    "athena_recall_cache_total",
    "athena_recall_fallbacks_total",
    "athena_writes_total",
    "athena_pool_workers",
    "athena_pool_queue_depth",
    "athena_execution_slots",
    "athena_recalls_waiting",
    "athena_recall_queued_seconds_total",
    "athena_http_rejected_total",
    "athena_index_memories",
    "athena_index_evictions_total",
    "athena_mcp_calls_total",
)


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Memory]:
    mem = Memory(tmp_path_factory.mktemp("http") / "athena.db", embedder=embedder)
    yield mem
    mem.close()


@pytest.fixture(scope="module")
def api(memory: Memory) -> Iterator[httpx.Client]:
    with serving(create_app(memory)) as client:
        yield client


@pytest.fixture(scope="module")
def secured(memory: Memory) -> Iterator[httpx.Client]:
    with serving(create_app(memory, tokens=TOKENS)) as client:
        yield client


@pytest.fixture(scope="module")
def limited(memory: Memory) -> Iterator[httpx.Client]:
    with serving(create_app(memory, max_body_bytes=4096, max_inflight=1)) as client:
        yield client


def remember(client: httpx.Client, tenant: str, text: str, **extra: Any) -> int:
    response = client.post(f"/v1/tenants/{tenant}/memories", json={"text": text, **extra})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


# -- the happy path -------------------------------------------------------------------------


def test_openapi_and_docs_are_served(api: httpx.Client) -> None:
    schema = api.get("/openapi.json").json()
    assert schema["info"]["title"] == "Athena"
    for path in ("/v1/tenants/{tenant}/memories", "/v1/tenants/{tenant}/recall", "/metrics"):
        assert path in schema["paths"]
    recall = schema["paths"]["/v1/tenants/{tenant}/recall"]["post"]
    assert {"200", "404", "422"} <= set(recall["responses"])
    assert api.get("/docs").status_code == 200


def test_health_and_readiness(api: httpx.Client) -> None:
    health = api.get("/healthz").json()
    assert health == {"status": "ok", "pid": os.getpid()}  # served in this process
    assert api.get("/readyz").json() == {"status": "ready"}


def test_repeated_recall_is_a_cache_hit_until_a_write(api: httpx.Client) -> None:
    remember(api, "rep", "Alice moved to Lisbon in May 2023.", layer="semantic")
    ask = {"query": "Where does Alice live?", "k": 3, "explain": True}
    first = api.post("/v1/tenants/rep/recall", json=ask).json()
    again = api.post("/v1/tenants/rep/recall", json=ask).json()
    assert first["explain"]["cache"] == "miss" and again["explain"]["cache"] == "hit"
    assert again["hits"] == first["hits"]
    moved = remember(api, "rep", "Alice moved to Porto in 2024.", layer="semantic")
    fresh = api.post("/v1/tenants/rep/recall", json=ask).json()
    assert fresh["explain"]["cache"] != "hit"
    assert moved in [hit["id"] for hit in fresh["hits"]]


def test_memory_lifecycle(api: httpx.Client) -> None:
    alice = remember(api, "life", "Alice moved to Lisbon in May 2023.", layer="semantic")
    remember(api, "life", "Bob adopted a puppy named Rex.", actor="Bob", session="s1")
    got = api.post("/v1/tenants/life/recall", json={"query": "Where does Alice live?", "k": 2})
    assert got.status_code == 200, got.text
    body = got.json()
    assert set(body) == {"hits"}  # explain only when asked
    assert body["hits"][0]["id"] == alice and body["hits"][0]["tenant"] == "life"
    explained = api.post(
        "/v1/tenants/life/recall",
        json={"query": "puppy", "layers": ["episodic"], "actor": "Bob", "explain": True},
    ).json()
    assert explained["explain"]["strategy"] and [h["actor"] for h in explained["hits"]] == ["Bob"]
    one = api.get(f"/v1/tenants/life/memories/{alice}").json()
    assert one["text"].startswith("Alice moved") and one["layer"] == "semantic"
    patched = api.patch(
        f"/v1/tenants/life/memories/{alice}",
        json={"text": "Alice moved to Porto.", "metadata": {"source": "chat"}},
    )
    assert patched.json() == {"id": alice}
    one = api.get(f"/v1/tenants/life/memories/{alice}").json()
    assert one["text"] == "Alice moved to Porto." and one["metadata"] == {"source": "chat"}
    assert api.delete(f"/v1/tenants/life/memories/{alice}").json() == {"deleted": [alice]}
    error(api.get(f"/v1/tenants/life/memories/{alice}"), 404, "not_found")
    error(api.delete(f"/v1/tenants/life/memories/{alice}"), 404, "not_found")


def test_recall_filters_and_iso_times(api: httpx.Client) -> None:
    remember(api, "times", "Dentist appointment", timestamp="2024-01-05T10:00:00Z")
    remember(api, "times", "Dentist follow-up", timestamp=1_800_000_000)
    body = {"query": "dentist", "since": "2024-01-01", "until": 1_750_000_000}
    hits = api.post("/v1/tenants/times/recall", json=body).json()["hits"]
    assert [h["text"] for h in hits] == ["Dentist appointment"]


def test_stats_and_execution_sections(api: httpx.Client, memory: Memory) -> None:
    remember(api, "counted", "one fact", layer="semantic")
    stats = api.get("/v1/tenants/counted/stats").json()
    assert stats["memories"] == 1 and stats["layers"] == {"semantic": 1}
    assert "path" not in stats  # no server filesystem paths over the wire
    for name in ("telemetry", "cache", "pool"):
        got = api.get(f"/v1/{name}")
        assert got.status_code == 200 and isinstance(got.json(), dict), got.text
    cache = memory.execution_stats()["cache"]
    assert set(api.get("/v1/cache").json()) == set(cache)


def test_metrics_expose_recall_cache_pool_and_writes(api: httpx.Client) -> None:
    remember(api, "metrics", "the sky is blue", layer="semantic")
    for _ in range(2):
        assert api.post("/v1/tenants/metrics/recall", json={"query": "sky"}).status_code == 200
    got = api.get("/metrics")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
    for name in METRIC_NAMES:
        assert name in got.text, name
    assert 'athena_writes_total{op="remember"}' in got.text
    assert "unknown" not in got.text  # the strategy label comes from explain
    held = [line for line in got.text.splitlines() if line.startswith("athena_index_memories ")]
    assert held and float(held[0].split()[1]) >= 1.0  # the sky's memory is in an index


# -- bad input: 4xx with a typed body, never a 500 --------------------------------------------

BAD_RECALLS = [
    ({"query": ""}, 422, "invalid_input"),
    ({"query": "   "}, 422, "invalid_input"),
    ({"query": "x" * (MAX_QUERY_CHARS + 1)}, 422, "query_too_long"),
    ({"query": 42}, 422, "invalid_input"),
    ({"query": ["a"]}, 422, "invalid_input"),
    ({}, 422, "invalid_input"),
    ({"query": "x", "k": 0}, 422, "invalid_input"),
    ({"query": "x", "k": MAX_K + 1}, 422, "invalid_input"),
    ({"query": "x", "k": -3}, 422, "invalid_input"),
    ({"query": "x", "k": "5"}, 422, "invalid_input"),
    ({"query": "x", "k": 2.5}, 422, "invalid_input"),
    ({"query": "x", "k": True}, 422, "invalid_input"),
    ({"query": "x", "layers": ["nope"]}, 422, "unknown_layer"),
    ({"query": "x", "layers": "episodic"}, 422, "invalid_input"),
    ({"query": "x", "layers": []}, 422, "invalid_input"),
    ({"query": "x", "since": 10, "until": 5}, 422, "invalid_input"),
    ({"query": "x", "since": "last tuesday"}, 422, "invalid_input"),
    ({"query": "x", "timeout": -1}, 422, "invalid_input"),
    ({"query": "x", "strategy": "telepathy"}, 422, "invalid_input"),
    ({"query": "x", "surprise": 1}, 422, "invalid_input"),
    ({"query": "x\x00y"}, 422, "invalid_input"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_RECALLS)
def test_bad_recall_input(api: httpx.Client, body: Any, status: int, code: str) -> None:
    remember(api, "bad", "something to find")
    error(api.post("/v1/tenants/bad/recall", json=body), status, code)


@pytest.mark.parametrize(
    "raw",
    [b'{"query": ', b"{'query': 'x'}", b'{"query": "x"} trailing', b"\xff\xfe", b"[" * 50_000],
)
def test_malformed_json_is_400(api: httpx.Client, raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    error(api.post("/v1/tenants/bad/recall", content=raw, headers=headers), 400, "malformed_json")


@pytest.mark.parametrize(
    "raw", [b"[1, 2]", b'"query"', b"null", b'{"query": NaN}', b'{"query": "x", "k": Infinity}']
)
def test_json_that_is_not_a_recall_is_422(api: httpx.Client, raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    error(api.post("/v1/tenants/bad/recall", content=raw, headers=headers), 422, "invalid_input")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_input"),
        ({"text": ""}, "invalid_input"),
        ({"text": "x" * 100_001}, "invalid_input"),
        ({"text": "x", "layer": "dreams"}, "unknown_layer"),
        ({"text": "x", "metadata": [1, 2]}, "invalid_input"),
        ({"text": "x", "timestamp": "yesterday-ish"}, "invalid_input"),
        ({"text": "x", "sources": "s1"}, "invalid_input"),
        ({"text": "x", "attributes": {"priority": 99}, "layer": "prospective"}, "invalid_input"),
    ],
)
def test_bad_remember_input(api: httpx.Client, body: dict[str, Any], code: str) -> None:
    error(api.post("/v1/tenants/bad/memories", json=body), 422, code)


def test_unknown_tenant_ids_and_routes(api: httpx.Client) -> None:
    error(api.post("/v1/tenants/nobody-here/recall", json={"query": "x"}), 404, "not_found")
    error(api.get("/v1/tenants/nobody-here/memories/12345"), 404, "not_found")
    error(api.patch("/v1/tenants/nobody-here/memories/12345", json={"text": "y"}), 404)
    for bad_id in ("abc", "0", "-4", "1.5", str(2**70)):
        error(api.get(f"/v1/tenants/bad/memories/{bad_id}"), 422, "invalid_input")
    mine = remember(api, "bad", "to be patched")
    error(api.patch(f"/v1/tenants/bad/memories/{mine}", json={}), 422, "invalid_input")
    error(api.get("/v1/nothing-here"), 404, "not_found")
    error(api.put("/v1/tenants/bad/memories/1", json={}), 405, "method_not_allowed")


def test_oversized_bodies_are_413(limited: httpx.Client) -> None:
    big = json.dumps({"text": "x" * 10_000}).encode()
    got = limited.post("/v1/tenants/big/memories", content=big)  # Content-Length says too much
    error(got, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: judged on the streamed bytes
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    streamed = limited.post(
        "/v1/tenants/big/memories", content=chunks(), headers={"content-type": "application/json"}
    )
    error(streamed, 413, "payload_too_large")
    assert limited.get("/healthz").status_code == 200  # the server is fine
    metrics = limited.get("/metrics").text
    assert 'athena_http_rejected_total{reason="body_too_large"} 2.0' in metrics


# -- errors from the core map to statuses -------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (RecallTimeout("too slow"), 504, "recall_timeout"),
        (StoreLocked("database is locked"), 503, "store_locked"),
        (StoreError("disk I/O error"), 500, "store_error"),
        (NotFound("gone"), 404, "not_found"),
        (RuntimeError("secret internals"), 500, "internal_error"),
    ],
)
def test_core_errors_map_to_statuses(
    api: httpx.Client,
    memory: Memory,
    monkeypatch: pytest.MonkeyPatch,
    exc: Exception,
    status: int,
    code: str,
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(memory, "recall_cached", lambda *a, **kw: None)  # a miss: recall runs
    monkeypatch.setattr(memory, "recall", fail)
    got = api.post("/v1/tenants/any/recall", json={"query": "x"})
    body = error(got, status, code)
    assert "secret" not in body["message"]
    if status == 503:
        assert got.headers["retry-after"] == "1"


# -- auth and tenant isolation ----------------------------------------------------------------


def test_auth_requires_a_valid_token(secured: httpx.Client) -> None:
    bodies = []
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dG9rLWE="}):
        for tenant in ("a", "never-existed"):
            got = secured.post(f"/v1/tenants/{tenant}/recall", json={"query": "x"}, headers=headers)
            bodies.append(error(got, 401, "unauthorized"))
            assert got.headers["www-authenticate"] == "Bearer"
    assert all(b == bodies[0] for b in bodies)  # nothing about tenants leaks
    for path in ("/v1/telemetry", "/v1/cache", "/v1/pool", "/metrics"):
        error(secured.get(path), 401, "unauthorized")
    assert secured.get("/healthz").status_code == 200  # probes need no token


def test_no_token_gets_401_before_the_body_is_parsed(secured: httpx.Client) -> None:
    for body in (b"{not json", b"[]", b'{"query": 5}', b"x" * 500):
        got = secured.post(
            "/v1/tenants/a/recall", content=body, headers={"Content-Type": "application/json"}
        )
        error(got, 401, "unauthorized")


def test_tenant_bound_tokens_cannot_reach_other_tenants(secured: httpx.Client) -> None:
    mine = secured.post("/v1/tenants/a/memories", json={"text": "A's secret plan"}, headers=A)
    theirs = secured.post(
        "/v1/tenants/b/memories",
        json={"text": "B's secret plan"},
        headers={"Authorization": "Bearer tok-b"},
    )
    a_id, b_id = mine.json()["id"], theirs.json()["id"]
    assert secured.get(f"/v1/tenants/a/memories/{a_id}", headers=A).status_code == 200
    # B's tenant directly: 403 for every operation
    for method, path, body in [
        ("POST", "/v1/tenants/b/recall", {"query": "secret plan"}),
        ("POST", "/v1/tenants/b/memories", {"text": "planted"}),
        ("GET", f"/v1/tenants/b/memories/{b_id}", None),
        ("PATCH", f"/v1/tenants/b/memories/{b_id}", {"text": "changed"}),
        ("DELETE", f"/v1/tenants/b/memories/{b_id}", None),
        ("GET", "/v1/tenants/b/stats", None),
    ]:
        got = secured.request(method, path, json=body, headers=A)
        error(got, 403, "forbidden")
    # B's id through A's own tenant: 404, as if it did not exist
    for method, body in [("GET", None), ("PATCH", {"text": "changed"}), ("DELETE", None)]:
        got = secured.request(method, f"/v1/tenants/a/memories/{b_id}", json=body, headers=A)
        error(got, 404, "not_found")
    hits = secured.post("/v1/tenants/a/recall", json={"query": "secret plan"}, headers=A).json()
    assert {h["tenant"] for h in hits["hits"]} == {"a"}
    intact = secured.get(f"/v1/tenants/b/memories/{b_id}", headers=ADMIN).json()
    assert intact["text"] == "B's secret plan"
    for path in ("/v1/telemetry", "/v1/cache", "/v1/pool", "/metrics"):
        error(secured.get(path, headers=A), 403, "forbidden")
        assert secured.get(path, headers=ADMIN).status_code == 200


def test_rate_limit_per_token(memory: Memory) -> None:
    app = create_app(memory, tokens=TOKENS, rate_limit_per_minute=3)
    with serving(app) as client:
        for _ in range(3):
            assert client.get("/v1/tenants/a/stats", headers=A).status_code == 200
        got = client.get("/v1/tenants/a/stats", headers=A)
        error(got, 429, "rate_limited")
        assert int(got.headers["retry-after"]) >= 1
        assert client.get("/v1/tenants/b/stats", headers=ADMIN).status_code == 200


# -- overload: a bounded number in flight, the rest refused at once ------------------------------


def test_inflight_limit_refuses_with_503(
    limited: httpx.Client, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    remember(limited, "busy", "a memory to recall")
    entered, release = threading.Event(), threading.Event()
    real = memory.recall

    def slow(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(memory, "recall", slow)
    results: list[int] = []
    holder = threading.Thread(
        target=lambda: results.append(
            limited.post("/v1/tenants/busy/recall", json={"query": "memory"}).status_code
        )
    )
    holder.start()
    try:
        assert entered.wait(10)
        refused = limited.post("/v1/tenants/busy/recall", json={"query": "memory"})
        error(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "1"
        assert limited.get("/healthz").status_code == 200  # probes are not counted
    finally:
        release.set()
        holder.join(10)
    assert results == [200]
    assert limited.post("/v1/tenants/busy/recall", json={"query": "memory"}).status_code == 200
    assert 'athena_http_rejected_total{reason="overloaded"} 1.0' in limited.get("/metrics").text


def test_create_app_rejects_bad_tokens(memory: Memory, tmp_path: Path) -> None:
    from athena.errors import InvalidInput
    from athena.interfaces.http_auth import load_tokens

    with pytest.raises(InvalidInput):
        create_app(memory, tokens={"": ["a"]})
    with pytest.raises(InvalidInput):
        create_app(memory, tokens={"t": "a"})
    path = tmp_path / "tokens.json"
    path.write_text('{"t": ["a"], "admin": null}')
    assert load_tokens(path) == {"t": ["a"], "admin": None}
    path.write_text("[1]")
    with pytest.raises(InvalidInput):
        load_tokens(path)


def test_serve_http_command_refuses_a_bad_tokens_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from athena.interfaces.cli_serve import serve_app

    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"t": "not-a-list"}')
    args = ["http", "--db", str(tmp_path / "x.db"), "--tokens", str(tokens), "--port", "1"]
    result = CliRunner().invoke(serve_app, args)
    assert result.exit_code != 0
    assert not (tmp_path / "x.db").exists()  # refused before opening anything


def test_engine_gauges_follow_execution_gauges_not_the_full_stats(
    api: httpx.Client, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gauges = {
        "pool": {"workers": 3, "queue_depth": 2},
        "admission": {"slots": 1, "waiting": 4, "waited_ms": 1500.0},
    }

    def full_stats() -> dict[str, object]:
        raise AssertionError("a scrape must not summarise telemetry")

    monkeypatch.setattr(memory, "execution_gauges", lambda: gauges)
    monkeypatch.setattr(memory, "execution_stats", full_stats)
    text = api.get("/metrics").text
    assert "athena_pool_workers 3.0" in text and "athena_pool_queue_depth 2.0" in text
    assert "athena_execution_slots 1.0" in text and "athena_recalls_waiting 4.0" in text
    assert "athena_recall_queued_seconds_total 1.5" in text
    assert api.get("/v1/pool").json() == {"workers": 3, "queue_depth": 2}


@pytest.mark.parametrize("bad", [0, -3, True])
def test_bad_recall_concurrency_is_refused(memory: Memory, bad: Any) -> None:
    with pytest.raises(InvalidInput, match="concurrency"):
        create_app(memory, concurrency=bad)


def test_recalls_beyond_the_thread_bound_all_answer(memory: Memory) -> None:
    with serving(create_app(memory, concurrency=1)) as client:
        for i in range(6):
            remember(client, "bound", f"Bob packed item {i} for the trip.")
        answers: list[httpx.Response] = []

        def ask(i: int) -> None:
            body = {"query": f"what did Bob pack, item {i}?", "k": 2}
            answers.append(client.post("/v1/tenants/bound/recall", json=body))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(answers) == 8 and all(r.status_code == 200 for r in answers)
    assert all(len(r.json()["hits"]) == 2 for r in answers)
