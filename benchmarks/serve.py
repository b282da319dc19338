"""Serving benchmark: recalls/s and latency over HTTP, and MCP per-call round trips.

``python benchmarks/serve.py [--duration 5] [--clients 10,100] [--db PATH] [--client raw|httpx]
[--workers 1,2 --rounds 2] [--mcp-calls 0] [--embedder static|transformer] [--heap huge|4k]``

- Builds a LoCoMo database (``import_locomo``) unless ``--db`` names one already built.
- Starts ``serve_http`` in a subprocess (the load generator must not share its GIL), with
  each of ``--workers`` server process counts in turn, alternating their order round by
  round (A B, B A) so the machine's noise falls on each alike; a summary gives each cell's
  median over the rounds.
- For each client count N and each workload:
  * **cached**: the same question over and over (the result cache answers);
  * **cold**: distinct LoCoMo questions (and reworded copies of them), each asked once, on
    a freshly started server;
  runs a closed loop (N clients back to back, for the saturated throughput), then an open
  loop (Poisson arrivals at 70% of that throughput, at most N in flight; latency is taken
  from each request's scheduled time, so queueing in the client counts).
- Times per-call round trips with the MCP SDK's client, one call at a time: MCP over stdio
  (``serve mcp``), MCP over the HTTP API's ``/mcp`` and the API's REST route, taking turns.
- ``--heap huge`` (the default) starts the servers with the interpreter's heap on huge pages,
  as ``athena serve`` starts itself (:mod:`athena.large_pages`); ``4k`` with CPython's own
  allocator (``ATHENA_LARGE_PAGES=0``). To compare the two, run the script once per value,
  alternating, on one ``--db``.

The load generator is asyncio. By default it speaks HTTP/1.1 over N raw keep-alive
connections (``--client raw``): httpx's AsyncClient with 100 connections tops out near 100
requests/s on a shared 2-core machine even against ``/healthz``, so it would measure
itself; ``--client httpx`` is kept to compare.

Prints a Markdown table. Client and server share the machine: on 2 cores the figures are
a floor for what a dedicated server does.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import contextlib
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from athena.large_pages import heap_env

DATA = Path("/work/shared/data/locomo/locomo10.json")
OPEN_LOOP_LOAD = 0.7


@dataclass
class Cell:
    transport: str
    workload: str
    clients: int
    mode: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    workers: int = 1  # server processes

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_db(path: Path, embedder: str = "static") -> None:
    from athena.locomo.importer import import_locomo
    from athena.memory import Memory

    start = time.perf_counter()
    with Memory(path, embedder=embedder) as memory:
        report = import_locomo(memory, str(DATA))
    print(
        f"imported {report.memories} memories in {time.perf_counter() - start:.1f}s",
        file=sys.stderr,
    )


def questions(variants: int = 1) -> list[tuple[str, str]]:
    """LoCoMo's questions in their tenants, shuffled; ``variants`` > 1 adds reworded copies
    ("tell me: ...") so a fast server's cold cell does not run out of distinct texts."""
    from athena.locomo.data import load_locomo

    base = [(conv.sample_id, q.question) for conv in load_locomo(DATA) for q in conv.questions]
    out = list(base)
    for v in range(1, variants):
        out += [(t, f"{PREFIXES[v % len(PREFIXES)]}{q}") for t, q in base]
    random.Random(7).shuffle(out)
    return out


PREFIXES = ("", "tell me: ", "I wonder, ", "quick question: ")


HEAP = {"value": "huge"}  # set by --heap


def server_env() -> dict[str, str]:
    """The environment a server process starts with: ``--heap`` decides its allocator."""
    env = heap_env(HEAP["value"] == "huge")
    if env is None:  # no huge pages here: CPython's own allocator
        env = heap_env(False)
    assert env is not None
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def http_server(db: Path, workers: int = 1, embedder: str = "static") -> Iterator[str]:
    port = free_port()
    code = (
        "from athena.interfaces.http_serve import serve_http;"
        f"serve_http({str(db)!r}, '127.0.0.1', {port}, {embedder!r}, None, max_inflight=256,"
        f" workers={workers})"
    )
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=log, env=server_env()
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"the HTTP server did not start:\n{log.read()[-3000:]}")
                time.sleep(0.1)
            while (answering := len(pids(url))) < workers:  # /readyz: one process only
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"only {answering} of {workers} processes answer")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def pids(url: str, tries: int = 32) -> set[int]:
    """The server processes that answered ``tries`` /healthz calls made at once, each on a
    fresh connection (the kernel hands each to a process that is accepting)."""
    with cf.ThreadPoolExecutor(tries) as pool:
        return set(
            pool.map(lambda _: httpx.get(f"{url}/healthz", timeout=10).json()["pid"], range(tries))
        )


Item = tuple[str, str]  # (tenant, question)
Send = Callable[[Item], Awaitable[bool]]


def _payload(item: Item) -> bytes:
    body = json.dumps({"query": item[1], "k": 10}).encode()
    head = (
        f"POST /v1/tenants/{item[0]}/recall HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class RawClients:
    """N keep-alive HTTP/1.1 connections and nothing else: a generator this thin measures
    the server, where httpx with 100 connections saturates a core on its own."""

    def __init__(self, url: str, n: int) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.n = n
        self.free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        self.free = asyncio.Queue()

    async def __aenter__(self) -> RawClients:
        for _ in range(self.n):
            self.free.put_nowait(await asyncio.open_connection(self.host, int(self.port)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        while not self.free.empty():
            self.free.get_nowait()[1].close()

    async def send(self, item: Item) -> bool:
        reader, writer = await self.free.get()
        try:
            writer.write(_payload(item))
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            return head[9:12] == b"200"
        finally:
            self.free.put_nowait((reader, writer))


@contextlib.asynccontextmanager
async def sender(kind: str, url: str, n: int) -> AsyncIterator[Send]:
    if kind == "raw":
        async with RawClients(url, n) as raw:
            yield raw.send
        return
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def send(item: Item) -> bool:
            path = f"/v1/tenants/{item[0]}/recall"
            response = await client.post(path, json={"query": item[1], "k": 10})
            return response.status_code == 200

        yield send


async def closed_loop(
    url: str, kind: str, clients: int, workload: list[Item], duration: float, name: str
) -> Cell:
    """N clients, each sending its next request as soon as the last one answered."""
    queue = iter(workload)
    latencies: list[float] = []
    errors = 0
    async with sender(kind, url, clients) as send:
        stop = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                item = next(queue, None)
                if item is None:
                    return
                sent = time.perf_counter()
                ok = await send(item)
                latencies.append((time.perf_counter() - sent) * 1000)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        seconds = time.perf_counter() - start
    return Cell("HTTP", name, clients, "closed", len(latencies), errors, seconds, latencies)


async def open_loop(
    url: str, kind: str, clients: int, workload: list[Item], duration: float, rate: float,
    name: str,
) -> Cell:  # fmt: skip
    """Poisson arrivals at ``rate``/s over ``clients`` connections; latency from schedule."""
    rng = random.Random(11)
    latencies: list[float] = []
    errors = 0
    async with sender(kind, url, clients) as send:

        async def one(item: Item, scheduled: float) -> None:
            nonlocal errors
            ok = await send(item)  # waits for a free connection: that queueing counts
            latencies.append((time.perf_counter() - scheduled) * 1000)
            errors += not ok

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        at = start
        for item in workload:
            at += rng.expovariate(rate)
            if at - start > duration:
                break
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(item, at)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - start
    return Cell("HTTP", name, clients, f"open @{rate:.0f}/s", len(latencies), errors, seconds,
                latencies)  # fmt: skip


def warm_up(url: str, kind: str, workers: int, tenants: list[str]) -> None:
    """One recall per tenant in every server process first: loading a tenant's indexes is
    start-up, not a recall. A keep-alive connection stays with the process that accepted
    it (and at rest one process may accept them all), so with several processes each
    warm-up goes on a fresh connection, 8 per process and tenant: a process misses a given
    tenant with odds of 2^-8 or less if the kernel hands fresh connections out evenly (as
    it did here: 209 and 191 of 400)."""
    if workers == 1:
        asyncio.run(closed_loop(url, kind, 1, [(t, "warm-up") for t in tenants], 60, "warm-up"))
        return

    def one(tenant: str) -> None:
        body = {"query": "warm-up", "k": 10}
        httpx.post(f"{url}/v1/tenants/{tenant}/recall", json=body, timeout=60).raise_for_status()

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, tenants * (8 * workers)))


def http_cells(
    db: Path,
    clients: Sequence[int],
    duration: float,
    kind: str,
    workers: int = 1,
    cold_rate: float | None = None,
    embedder: str = "static",
) -> list[Cell]:
    """Every HTTP cell for one server process count; ``cold_rate``: the cold open loop's
    arrival rate (default 70% of the closed loop's throughput), fixed so that process
    counts can be compared at the same load."""
    asked = questions(variants=len(PREFIXES))
    tenants = sorted({tenant for tenant, _ in asked})
    cells: list[Cell] = []
    same = [asked[0]] * 1_000_000
    with http_server(db, workers, embedder) as url:
        warm_up(url, kind, workers, tenants)
        for n in clients:
            closed = asyncio.run(closed_loop(url, kind, n, same, duration, "cached"))
            rate = max(1.0, closed.rate * OPEN_LOOP_LOAD)
            opened = asyncio.run(open_loop(url, kind, n, same, duration, rate, "cached"))
            cells += [closed, opened]
    for n in clients:
        with http_server(db, workers, embedder) as url:  # a fresh server: an empty cache
            warm_up(url, kind, workers, tenants)
            closed = asyncio.run(closed_loop(url, kind, n, asked, duration, "cold"))
        with http_server(db, workers, embedder) as url:
            warm_up(url, kind, workers, tenants)
            rate = cold_rate or max(1.0, closed.rate * OPEN_LOOP_LOAD)
            opened = asyncio.run(open_loop(url, kind, n, asked, duration, rate, "cold"))
        cells += [closed, opened]
    for cell in cells:
        cell.workers = workers
    return cells


@contextlib.asynccontextmanager
async def mcp_session(db: Path, embedder: str = "static") -> AsyncIterator[Any]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "athena.interfaces.mcp_server", "--db", str(db), "--embedder", embedder],
        env=server_env(),  # the HTTP servers' environment: the same heap for every arm
    )
    with open(os.devnull, "w") as devnull:
        async with (
            stdio_client(params, errlog=devnull) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@contextlib.asynccontextmanager
async def mcp_http_session(url: str) -> AsyncIterator[Any]:
    """The SDK's streamable HTTP client on the HTTP API's ``/mcp`` (one keep-alive client)."""
    import httpx2
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(timeout=60) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


MCP_ARMS = ("MCP stdio", "MCP /mcp", "REST")


async def mcp_cells(db: Path, calls: int, embedder: str = "static") -> tuple[float, list[Cell]]:
    """Per-call round trips, one call at a time, three arms taking turns call by call (in
    an order rotated each call): MCP over stdio (a server process of its own), MCP over the
    HTTP API's ``/mcp`` and the API's REST recall (both on one HTTP server process). Cached:
    one question again and again, asked once in both servers before timing. Cold: each
    question once per arm; of the two HTTP arms, which share a cache, one asks a reworded
    copy, the REST arm on even calls and the /mcp arm on odd ones."""
    asked = list(dict.fromkeys(questions()))  # distinct (tenant, question) pairs
    tenants = sorted({t for t, _ in asked})
    start = time.perf_counter()
    with http_server(db, 1, embedder) as url:
        async with (
            mcp_session(db, embedder) as stdio,
            mcp_http_session(url) as over_http,
            httpx.AsyncClient(base_url=url, timeout=60) as rest,
        ):
            connect_ms = (time.perf_counter() - start) * 1000
            for tenant, query in [(t, "warm-up") for t in tenants] + [asked[0]]:
                # a tenant's indexes loaded is start-up, in both servers; the cached question
                await rest.post(f"/v1/tenants/{tenant}/recall", json={"query": query})
                await stdio.call_tool("recall", {"query": query, "tenant": tenant})

            async def call(arm: str, tenant: str, query: str | None) -> bool:
                if arm == "REST":
                    path = f"/v1/tenants/{tenant}/" + ("recall" if query else "stats")
                    answer = await (
                        rest.post(path, json={"query": query}) if query else rest.get(path)
                    )
                    return answer.status_code != 200
                session = stdio if arm == "MCP stdio" else over_http
                if query is None:
                    result = await session.call_tool("stats", {"tenant": tenant})
                else:
                    result = await session.call_tool("recall", {"query": query, "tenant": tenant})
                return bool(result.is_error)

            cells = []
            for name in ("stats (no recall)", "cached", "cold"):
                latencies: dict[str, list[float]] = {arm: [] for arm in MCP_ARMS}
                errors = dict.fromkeys(MCP_ARMS, 0)
                for i in range(calls):
                    tenant, question = asked[0] if name != "cold" else asked[1 + i]
                    for turn in range(len(MCP_ARMS)):
                        arm = MCP_ARMS[(i + turn) % len(MCP_ARMS)]
                        query: str | None = question
                        reworded = "REST" if i % 2 == 0 else "MCP /mcp"
                        if name == "cold" and arm == reworded:
                            query = f"{PREFIXES[1]}{question}"
                        elif name.startswith("stats"):
                            query = None
                        sent = time.perf_counter()
                        errors[arm] += await call(arm, tenant, query)
                        latencies[arm].append((time.perf_counter() - sent) * 1000)
                for arm in MCP_ARMS:
                    cells.append(Cell(arm, name, 1, "sequential calls", calls, errors[arm],
                                      sum(latencies[arm]) / 1000, latencies[arm]))  # fmt: skip
    return connect_ms, cells


def table(cells: list[Cell]) -> str:
    head = "| transport | processes | workload | clients | load | requests | errors | req/s |"
    rows = [head + " p50 ms | p99 ms |", "|" + "---|" * 10]
    for c in cells:
        rows.append(
            f"| {c.transport} | {c.workers} | {c.workload} | {c.clients} | {c.mode} | "
            f"{c.requests} | {c.errors} | {c.rate:.0f} | {c.pct(0.5):.2f} | {c.pct(0.99):.2f} |"
        )
    return "\n".join(rows)


def summary(cells: list[Cell], cold_rate: float | None = None) -> str:
    """Per (workers, workload, clients, load): the median req/s and p99 over the rounds."""
    groups: dict[tuple[int, str, int, str], list[Cell]] = {}
    for c in cells:
        if c.transport == "HTTP":
            fixed = c.workload == "cold" and cold_rate is not None
            mode = c.mode if c.mode == "closed" or fixed else "open @70%"
            groups.setdefault((c.workers, c.workload, c.clients, mode), []).append(c)
    rows = [
        "| processes | workload | clients | load | rounds | req/s (median) | req/s (each) |"
        " p99 ms (median) |",
        "|" + "---|" * 8,
    ]
    for (workers, workload, clients, mode), group in sorted(
        groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][3], kv[0][0])
    ):
        rates = [c.rate for c in group]
        p99 = statistics.median(c.pct(0.99) for c in group)
        rows.append(
            f"| {workers} | {workload} | {clients} | {mode} | {len(group)} | "
            f"{statistics.median(rates):.0f} | {', '.join(f'{r:.0f}' for r in rates)} | "
            f"{p99:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="Seconds per HTTP cell.")
    parser.add_argument("--clients", default="10,100", help="Comma-separated client counts.")
    parser.add_argument("--db", type=Path, help="A LoCoMo database built before (else built).")
    parser.add_argument("--mcp-calls", type=int, default=300, help="MCP calls per workload.")
    parser.add_argument(
        "--client", choices=("raw", "httpx"), default="raw", help="HTTP load generator."
    )
    parser.add_argument(
        "--workers", default="1", help="Comma-separated server process counts, e.g. 1,2."
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="Rounds; the process counts alternate (A B, B A)."
    )
    parser.add_argument(
        "--cold-rate", type=float, help="Cold open-loop arrivals/s (default: 70%% of closed)."
    )
    parser.add_argument(
        "--embedder", default="static", help="The servers' (and a built --db's) embedder."
    )
    parser.add_argument("--heap", default="huge", choices=("huge", "4k"), help="See above.")
    args = parser.parse_args()
    HEAP["value"] = args.heap
    if args.rounds < 1 or (args.cold_rate is not None and args.cold_rate <= 0):
        parser.error("--rounds must be at least 1 and --cold-rate positive")
    clients = [int(n) for n in args.clients.split(",")]
    counts = [int(n) for n in args.workers.split(",")]
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "locomo.db"
        if not db.exists():
            build_db(db, args.embedder)
        for r in range(args.rounds):
            for workers in counts if r % 2 == 0 else counts[::-1]:
                cells += http_cells(
                    db, clients, args.duration, args.client, workers, args.cold_rate, args.embedder
                )
        connect_ms, mcp = (
            asyncio.run(mcp_cells(db, args.mcp_calls, args.embedder)) if args.mcp_calls else (0, [])
        )
    load = os.getloadavg()[0]
    print(
        f"\nServing benchmark ({args.heap} heap): {os.cpu_count()} CPUs shared by client and "
        f"server, load average {load:.1f} at the end, {args.client} client, "
        f"{args.duration:.0f}s cells\n"
    )
    print(table(cells + mcp))
    if args.rounds > 1 or len(counts) > 1:
        print("\n" + summary(cells, args.cold_rate))
    if mcp:
        print(f"\nMCP arms connected (two servers started, sessions opened): {connect_ms:.0f} ms")


if __name__ == "__main__":
    main()
