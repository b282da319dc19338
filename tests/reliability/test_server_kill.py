"""SIGKILL of the HTTP server process mid-request, while clients write and read.

The server is the real ``athena serve http`` in its own process, driven by real HTTP
clients on several threads. A write counts as acknowledged only when its 201 arrived. At a
random moment the server is killed with SIGKILL; it is started again on the same file and
must serve every acknowledged write, complete; a write whose answer never came is all there
or not there at all; the file passes its integrity checks. ``CYCLES`` kills in a row.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from athena import Memory

CYCLES = int(os.environ.get("ATHENA_SERVER_KILLS", "5"))
CLIENTS = 4
SERVER = [sys.executable, "-c", "from athena.interfaces.cli import main; main()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    args = ["serve", "http", "--db", str(db), "--port", str(port), "--rate-limit", "1000000"]
    with log.open("ab") as out:
        server = subprocess.Popen([*SERVER, *args], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the server did not come up")


def _text(cycle: int, client: int, n: int) -> str:
    return f"cycle {cycle} client {client} write {n}: Carol booked a flight to Oslo"


class Clients:
    """Writers (and a reader) hammering the server until it dies under them."""

    def __init__(self, url: str, cycle: int) -> None:
        self.url, self.cycle = url, cycle
        self.acked: dict[int, str] = {}  # id -> text, only from a 201
        self.sent: set[str] = set()  # every text whose request was sent
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(c,)) for c in range(CLIENTS)]
        self.threads.append(threading.Thread(target=self._read))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            if thread.ident is not None:  # started
                thread.join(timeout=30)

    def _write(self, client: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            n = 0
            while not self.stop.is_set():
                text = _text(self.cycle, client, n)
                with self.lock:
                    self.sent.add(text)
                try:
                    answer = http.post("/v1/tenants/t/memories", json={"text": text})
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if answer.status_code == 201:
                    with self.lock:
                        self.acked[int(answer.json()["id"])] = text
                n += 1

    def _read(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set():
                try:
                    http.post("/v1/tenants/t/recall", json={"query": "Carol flight Oslo", "k": 5})
                except httpx.HTTPError:
                    return


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill_of_the_server(tmp_path: Path) -> None:
    db, log = tmp_path / "served.db", tmp_path / "server.log"
    rng = random.Random(11)
    acked: dict[int, str] = {}
    sent: set[str] = set()
    for cycle in range(CYCLES):
        port = _free_port()
        server = _start(db, port, log)
        url = f"http://127.0.0.1:{port}"
        clients = Clients(url, cycle)
        try:
            # Everything acknowledged in earlier cycles is served by the restarted server.
            with httpx.Client(base_url=url, timeout=10) as http:
                for memory_id, text in acked.items():
                    answer = http.get(f"/v1/tenants/t/memories/{memory_id}")
                    assert answer.status_code == 200, (memory_id, answer.text)
                    assert answer.json()["text"] == text
            clients.start()
            time.sleep(rng.uniform(0.5, 2.0))
        finally:
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=60)
            clients.join()
        assert clients.acked, "no write was acknowledged before the kill"
        acked.update(clients.acked)
        sent |= clients.sent
    with Memory(db) as memory:
        assert memory.store.integrity_check() == "ok"
    conn = sqlite3.connect(db)
    try:
        stored = dict(conn.execute("SELECT id, text FROM memories WHERE tenant = 't'"))
    finally:
        conn.close()
    for memory_id, text in acked.items():
        assert stored.get(memory_id) == text  # 0 acknowledged writes lost
    assert set(stored.values()) <= sent  # nothing half-written or invented
    assert len(stored) == len(set(stored.values()))  # no write landed twice
    assert "Traceback" not in log.read_text()
    unanswered = len(sent) - len(acked)
    print(
        f"kills {CYCLES}: {len(acked)} acknowledged, {unanswered} unanswered, {len(stored)} stored"
    )
