"""``athena serve http --workers 2`` for real: two server processes on one port and one
SQLite file, driven by httpx over fresh connections (the kernel hands each to either)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

START_S = 90.0  # two processes each load the model and open the store; CI machines are slow
ASK = {"query": "Where does Alice live?", "k": 3, "explain": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    work = tmp_path_factory.mktemp("workers")
    port = free_port()
    command = [sys.executable, "-m", "athena.interfaces.cli", "serve", "http"]
    command += ["--db", str(work / "a.db"), "--port", str(port), "--workers", "2"]
    log = (work / "server.log").open("w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, (work / "server.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        while len(pids(url)) < 2:  # /readyz answered from the first process to be ready
            assert time.monotonic() < deadline, "the second process did not start"
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # the supervisor stops its processes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def base(server: tuple[str, int]) -> str:
    return server[0]


def pids(url: str) -> set[int]:
    """The processes that answered 32 /healthz calls made at once on fresh connections."""
    return set(many(lambda _: httpx.get(f"{url}/healthz", timeout=30).json()["pid"], 32))


def many(fn: Any, count: int) -> list[Any]:
    """``fn(i)`` for ``i`` in ``range(count)``, 16 at a time, each on its own connection."""
    with cf.ThreadPoolExecutor(16) as pool:
        return list(pool.map(fn, range(count)))


def test_two_processes_answer_on_one_port(server: tuple[str, int]) -> None:
    url, supervisor = server
    answered: set[int] = set()
    deadline = time.monotonic() + 30  # a busy CI machine may leave one process idle a while
    while len(answered) < 2 and time.monotonic() < deadline:
        answered |= pids(url)
    assert len(answered) == 2 and supervisor not in answered  # two servers, not the parent


def pinned_recalls(base: str, count: int) -> dict[int, list[dict[str, Any]]]:
    """``count`` recalls, each on its own single connection whose process is asked first
    (/healthz names it): the answers grouped by the process that gave them."""

    def one(_: int) -> tuple[int, dict[str, Any]]:
        with httpx.Client(base_url=base, limits=httpx.Limits(max_connections=1), timeout=30) as c:
            pid = int(c.get("/healthz").json()["pid"])
            response = c.post("/v1/tenants/w/recall", json=ASK)
            assert response.status_code == 200, response.text
            return pid, dict(response.json())

    out: dict[int, list[dict[str, Any]]] = {}
    for pid, answer in many(one, count):
        out.setdefault(pid, []).append(answer)
    return out


def test_no_process_serves_a_recall_that_a_write_in_another_made_stale(base: str) -> None:
    first = httpx.post(
        f"{base}/v1/tenants/w/memories",
        json={"text": "Alice moved to Lisbon in May 2023.", "layer": "semantic"},
    )
    assert first.status_code == 201, first.text
    lisbon = first.json()["id"]

    before: dict[int, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        len(before) == 2
        and all(any(r["explain"]["cache"] == "hit" for r in rs) for rs in before.values())
    ):
        for pid, answers in pinned_recalls(base, 32).items():
            before.setdefault(pid, []).extend(answers)
    # Both processes answered, and each served the Lisbon answer from its own cache.
    assert len(before) == 2, before.keys()
    for answers in before.values():
        assert any(r["explain"]["cache"] == "hit" for r in answers)
        assert all(lisbon in [h["id"] for h in r["hits"]] for r in answers)
    moved = httpx.post(
        f"{base}/v1/tenants/w/memories",
        json={"text": "Alice moved to Porto in 2024.", "layer": "semantic"},
    )
    assert moved.status_code == 201, moved.text
    porto = moved.json()["id"]
    after = pinned_recalls(base, 64)
    for answers in after.values():  # neither process serves its cached, stale answer
        assert all(porto in [h["id"] for h in r["hits"]] for r in answers), answers
    forgotten = httpx.delete(f"{base}/v1/tenants/w/memories/{porto}")
    assert forgotten.status_code == 200, forgotten.text
    for answers in pinned_recalls(base, 64).values():
        assert all(porto not in [h["id"] for h in r["hits"]] for r in answers)


def test_writes_from_many_connections_all_land(base: str) -> None:
    def write(i: int) -> int:
        body = {"text": f"note number {i} about the garden", "layer": "episodic"}
        response = httpx.post(f"{base}/v1/tenants/many/memories", json=body, timeout=60)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    ids = many(write, 48)
    assert len(set(ids)) == 48
    stats = httpx.get(f"{base}/v1/tenants/many/stats", timeout=30).json()
    assert stats["memories"] == 48, stats


def test_a_process_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    """The tokens file is read by every process as it starts: gone by then, the server
    stops with an error instead of restarting its processes forever."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"t": ["a"]}')
    command = [sys.executable, "-m", "athena.interfaces.cli", "serve", "http", "--db"]
    command += [str(tmp_path / "a.db"), "--port", str(free_port()), "--workers", "2"]
    command += ["--tokens", str(tokens)]
    # The parent checks the file, then prepares the database; the processes start after.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + START_S
    while not (tmp_path / "a.db").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    tokens.unlink()
    try:
        out, _ = proc.communicate(timeout=START_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the server kept running:\n{out[-2000:]}")
    assert proc.returncode != 0
    assert "failed to start" in out, out[-2000:]


def test_workers_must_be_positive(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from athena.interfaces.cli_serve import serve_app

    result = CliRunner().invoke(
        serve_app, ["http", "--db", str(tmp_path / "x.db"), "--workers", "0"]
    )
    assert result.exit_code != 0 and "workers" in result.output.lower()
    assert not (tmp_path / "x.db").exists()


def test_the_server_processes_share_one_index_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any process may serve any tenant: with N processes each holds an N-th of the budget."""
    import json

    from athena.heap import release_heap
    from athena.interfaces import http_serve

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(http_serve, "_serve_processes", lambda s, *_: started.append(s))
    monkeypatch.setenv("ATHENA_INDEX_MEMORIES", "1000")
    http_serve.serve_http(tmp_path / "b.db", workers=4)
    assert started[0]["index_memories"] == 250
    monkeypatch.setenv(http_serve.CONFIG_ENV, json.dumps(started[0]))
    app = http_serve.app_from_env()  # settles the heap, as a server process does
    memory = app.state.memory
    try:
        assert memory.execution_stats()["indexes"]["budget"] == 250
    finally:
        memory.close()
        release_heap()  # not for the rest of this test process: its heap and thresholds


async def test_mcp_calls_are_served_by_either_process(base: str) -> None:
    """The MCP endpoint is stateless: a session's calls may land in either process (each
    request below on a new connection, which the kernel hands to either; a session kept in
    one process would be unknown to the other), and what one writes the other recalls."""
    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def call(tool: str, **arguments: Any) -> dict[str, Any]:
        fresh = httpx2.Limits(max_keepalive_connections=0)  # each request a new connection
        async with (
            httpx2.AsyncClient(timeout=30, limits=fresh) as http,
            streamable_http_client(f"{base}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool(tool, arguments)
            assert not result.is_error, result.content
            assert result.structured_content is not None
            return dict(result.structured_content)

    things = ["kite", "drum", "lamp", "vase", "bell", "rope", "fork", "harp", "sled", "wand"]
    for n, thing in enumerate(things):
        text = f"Visitor {n} brought a {thing}."
        memory_id = (await call("remember", text=text, tenant="mcp"))["id"]
        hits = (await call("recall", query=text, tenant="mcp", k=1))["hits"]
        assert [hit["id"] for hit in hits] == [memory_id]
        rest = httpx.post(f"{base}/v1/tenants/mcp/recall", json={"query": text, "k": 1})
        assert [hit["id"] for hit in rest.json()["hits"]] == [memory_id]

    def counted(_: int) -> tuple[int, float]:  # one connection: one process answers both
        with httpx.Client(base_url=base, timeout=30) as client:
            pid = client.get("/healthz").json()["pid"]
            lines = client.get("/metrics").text.splitlines()
        mark = 'athena_mcp_calls_total{tool="remember"} '
        return pid, next(float(line[len(mark) :]) for line in lines if line.startswith(mark))

    by_pid = dict(many(counted, 32))
    assert len(by_pid) == 2 and sum(by_pid.values()) == len(things), by_pid
    assert min(by_pid.values()) > 0, by_pid  # both processes served MCP calls
