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
    answered = many(lambda _: httpx.get(f"{url}/healthz", timeout=30).json()["pid"], 200)
    assert len(set(answered)) == 2 and supervisor not in answered  # two servers, not the parent


def test_no_process_serves_a_recall_that_a_write_in_another_made_stale(base: str) -> None:
    first = httpx.post(
        f"{base}/v1/tenants/w/memories",
        json={"text": "Alice moved to Lisbon in May 2023.", "layer": "semantic"},
    )
    assert first.status_code == 201, first.text
    lisbon = first.json()["id"]

    def recall(_: int) -> dict[str, Any]:
        response = httpx.post(f"{base}/v1/tenants/w/recall", json=ASK, timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())

    before = many(recall, 64)  # both processes answer, then serve it from their caches
    assert all(lisbon in [h["id"] for h in r["hits"]] for r in before)
    assert sum(r["explain"]["cache"] == "hit" for r in before) >= 2
    moved = httpx.post(
        f"{base}/v1/tenants/w/memories",
        json={"text": "Alice moved to Porto in 2024.", "layer": "semantic"},
    )
    assert moved.status_code == 201, moved.text
    porto = moved.json()["id"]
    after = many(recall, 64)
    assert all(porto in [h["id"] for h in r["hits"]] for r in after), after
    forgotten = httpx.delete(f"{base}/v1/tenants/w/memories/{porto}")
    assert forgotten.status_code == 200, forgotten.text
    gone = many(recall, 64)
    assert all(porto not in [h["id"] for h in r["hits"]] for r in gone)


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


def test_workers_must_be_positive(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from athena.interfaces.cli_serve import serve_app

    result = CliRunner().invoke(
        serve_app, ["http", "--db", str(tmp_path / "x.db"), "--workers", "0"]
    )
    assert result.exit_code != 0 and "workers" in result.output.lower()
    assert not (tmp_path / "x.db").exists()
