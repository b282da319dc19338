"""A whole recall on one worker (``ProcessWorkerPool.recall``): its layers, its fusion and its
hits read there, the same as in process; real worker processes over a real SQLite file."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest

from athena import Memory
from athena.execution.backend import HITS
from athena.execution.pool import ProcessWorkerPool, fits_whole
from athena.execution.recall_run import pool_results
from athena.execution.runner import run_layer
from athena.layers.protocol import SearchRequest
from athena.records import MemoryInput, make_query

WAIT = 60.0
QUERIES = ("who went hiking in the Alps?", "how do I deploy the service?", "what is Zed doing?")
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def _memories(tenant: str) -> list[MemoryInput]:
    people = ["Caroline", "Melanie", "Zed", "Maya", "Ravi", "Ines", "Tom"]
    texts = [("episodic", f"{p} went hiking in the Alps, trip {i}.") for i, p in enumerate(people)]
    texts += [("semantic", f"{p} deploys the service on Fridays.") for p in people]
    texts += [("episodic", f"{p} met Zed at the {tenant} fair.") for p in people]
    items = [MemoryInput(layer=layer, text=text, tenant=tenant) for layer, text in texts]
    meta = {"source": "diary", "mood": ["calm", 3]}
    return [
        *items,
        MemoryInput(layer="semantic", text="Zed hikes the Alps", tenant=tenant, metadata=meta),
    ]


def _long(tenant: str) -> list[MemoryInput]:
    """Twelve memories of about 3,000 characters: ten such hits outgrow one answer."""
    return [
        MemoryInput(
            layer="semantic",
            text=f"Zed note {i}: " + " ".join(f"{w}{i}{j}" for j in range(40) for w in WORDS[:6]),
            tenant=tenant,
        )
        for i in range(12)
    ]


@pytest.fixture(scope="module")
def mem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Memory]:
    memory = Memory(tmp_path_factory.mktemp("whole") / "athena.db", pool="off")
    for tenant in ("acme", "globex"):
        memory.remember_many(_memories(tenant))
    memory.remember_many(_long("long"))
    yield memory
    memory.close()


@pytest.fixture(scope="module")
def pool(mem: Memory) -> Iterator[ProcessWorkerPool]:
    with ProcessWorkerPool(mem.store.path, min_workers=2, max_workers=2, task_timeout=WAIT) as p:
        p.start()
        yield p


def request(mem: Memory, text: str, tenant: str, k: int = 5) -> SearchRequest:
    return mem.pipeline.request(make_query(text, tenant, k), mem.generations.get(tenant))


def in_process(mem: Memory, req: SearchRequest) -> tuple[dict[str, Any], tuple[Any, ...]]:
    local = {
        name: run_layer(mem.layers, mem.pipeline.ctx, name, req, "sequential")
        for name in req.query.layers
    }
    return local, mem.pipeline.hits(req.query, local)


def test_a_whole_recall_is_the_recall_in_process(mem: Memory, pool: ProcessWorkerPool) -> None:
    before, seen_metadata = pool.health(), set()
    for tenant in ("acme", "globex"):
        for text in QUERIES:
            req = request(mem, text, tenant)
            results, hits = pool.recall(req, req.query.layers, timeout=WAIT)
            local, local_hits = in_process(mem, req)
            assert hits == local_hits and hits  # every field, the metadata view included
            assert all(isinstance(h.metadata, type(MappingProxyType({}))) for h in hits)
            seen_metadata |= {h.metadata.get("source") for h in hits}
            assert {n: r.ids for n, r in results.items()} == {n: r.ids for n, r in local.items()}
            assert all(r.source == "distributed" for r in results.values())
    assert "diary" in seen_metadata  # a hit with metadata crossed too
    after = pool.health()
    assert after["hits_read"] == before["hits_read"] + 6  # one task, one message each
    assert after["messages"] == before["messages"] + 6


def test_hits_too_large_for_one_answer_are_left_to_the_caller(
    mem: Memory, pool: ProcessWorkerPool
) -> None:
    req = request(mem, "Zed note", "long", k=10)
    before = pool.health()["hits_left"]
    results, hits = pool.recall(req, req.query.layers, timeout=WAIT)
    assert hits is None and pool.health()["hits_left"] == before + 1
    local, local_hits = in_process(mem, req)
    assert {n: r.ids for n, r in results.items()} == {n: r.ids for n, r in local.items()}
    assert len(local_hits) == 10 and mem.pipeline.hits(req.query, results) == local_hits


def test_a_deep_recall_or_a_part_of_one_goes_layer_by_layer(
    mem: Memory, pool: ProcessWorkerPool
) -> None:
    deep = request(mem, QUERIES[0], "acme", k=40)  # 5 rankings 80 deep: no room for hits
    assert not fits_whole(len(deep.query.layers), deep.depth)
    before = pool.health()
    results, hits = pool.recall(deep, deep.query.layers, timeout=WAIT)
    assert hits is None and set(results) == set(deep.query.layers)
    req = request(mem, QUERIES[0], "acme")
    part, none = pool.recall(req, ["semantic", "episodic"], timeout=WAIT)
    assert none is None and set(part) == {"semantic", "episodic"}
    after = pool.health()
    assert after["hits_read"] == before["hits_read"] and after["hits_left"] == before["hits_left"]


def test_forced_distributed_recalls_are_whole_and_answer_as_sequential(mem: Memory) -> None:
    with Memory(mem.store.path, pool="eager") as engine:
        for tenant in ("acme", "globex", "long"):
            for text in (*QUERIES, "Zed note"):
                ours = engine.recall(text, tenant=tenant, strategy="distributed", explain=True)
                reference = engine.recall(text, tenant=tenant, strategy="sequential")
                assert ours.hits == reference.hits
                assert ours.explain is not None and ours.explain["executed"] == "distributed"
        health = engine.execution_stats()["pool"]
        assert health["hits_read"] >= 8 and health["hits_left"] >= 1  # the long tenant's


def test_a_whole_recall_on_a_worker_that_dies_is_retried(mem: Memory) -> None:
    with ProcessWorkerPool(mem.store.path, min_workers=2, max_workers=2, task_timeout=WAIT) as p:
        p.start()
        pids = p.health()["pids"]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)  # frozen: the task given to one stays in flight
        req, answers = request(mem, QUERIES[2], "globex"), []
        caller = threading.Thread(
            target=lambda: answers.append(p.recall(req, req.query.layers, timeout=WAIT))
        )
        try:
            caller.start()
            deadline = time.monotonic() + WAIT
            while not p.health()["busy_pids"]:
                assert time.monotonic() < deadline and caller.is_alive()
                time.sleep(0.02)
            (victim,) = p.health()["busy_pids"]
            os.kill(victim, signal.SIGKILL)  # dies in the middle of the whole recall
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)  # the task is retried on the other one
        caller.join(WAIT)
        (results, hits), (local, local_hits) = answers[0], in_process(mem, req)
        assert hits == local_hits and set(results) == set(local) and HITS not in results
        health = p.health()
        assert health["crashes"] == 1 and health["retries"] == 1 and victim not in health["pids"]


def test_a_whole_recall_goes_to_the_worker_holding_its_tenant_and_then_holds_each_layer(
    mem: Memory,
) -> None:
    """The worker that holds a tenant's episodic index (here the second: the first was
    busy) is sent that tenant's whole recall, though the first is free and comes first on
    a tie; it is then known to hold every layer of it."""
    with ProcessWorkerPool(mem.store.path, min_workers=2, max_workers=2, task_timeout=WAIT) as p:
        p.start()
        first, second = sorted(p._core.fleet.workers.values(), key=lambda w: w.id)
        os.kill(first.process.pid, signal.SIGSTOP)  # what it is sent stays in flight
        try:
            busy = p.submit(request(mem, QUERIES[0], "globex"), ["semantic"])
            eventually(lambda: bool(first.inflight))
            p.run(request(mem, QUERIES[1], "acme"), ["episodic"], timeout=WAIT)  # to second
        finally:
            os.kill(first.process.pid, signal.SIGCONT)
        busy["semantic"].result(timeout=WAIT)
        assert ("acme", "episodic") in second.holds and ("acme", "episodic") not in first.holds
        req = request(mem, QUERIES[1], "acme")
        p.recall(req, req.query.layers, timeout=WAIT)
        assert all(("acme", name) in second.holds for name in req.query.layers)
        assert not any(key[0] == "acme" for key in first.holds)


def eventually(check: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


class _RunOnly:
    """A backend written against the protocol before ``recall`` (a cluster backend, say)."""

    available, broken, saturated = True, False, False

    def __init__(self, pool: ProcessWorkerPool) -> None:
        self.pool = pool

    def run(self, request: SearchRequest, layers: Any, **options: Any) -> Any:
        return self.pool.run(request, layers, **options)


class _Keeper:
    def __init__(self, backend: Any) -> None:
        self.backend, self.error = backend, None

    def get(self) -> Any:
        return self.backend

    def served(self, *args: Any) -> None:
        pass


def test_a_backend_without_whole_recalls_is_sent_layer_tasks(
    mem: Memory, pool: ProcessWorkerPool
) -> None:
    req = request(mem, QUERIES[0], "acme")
    layers = req.query.layers
    results, hits, why = pool_results(
        _Keeper(_RunOnly(pool)), req, layers, lambda: None, None, True
    )  # type: ignore[arg-type]
    assert hits is None and why is None and set(results or {}) == set(layers)


def test_pool_ready_says_whether_a_distributed_recall_would_reach_a_pool(mem: Memory) -> None:
    with Memory(mem.store.path, pool="off") as off, Memory(mem.store.path) as lazy:
        assert not off.engine.pool_ready() and lazy.engine.pool_ready()  # lazy: yet to start
    with Memory(mem.store.path, execution="sequential") as reference:
        assert not reference.engine.pool_ready()
