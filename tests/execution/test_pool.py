"""ProcessWorkerPool: real worker processes over a real SQLite file; nothing is mocked.

Faults are injected with signals: SIGSTOP freezes a worker so a task is surely in flight
on it (then SIGKILL makes it die mid-task, or its deadline makes the pool kill it), and
SIGCONT lets it go. Assertions are about order and behaviour, never speed, and every wait
is generous: the suite runs on a small, shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from athena import LAYERS, Memory
from athena.errors import InvalidInput, RecallTimeout, UnknownLayer, WorkerPoolUnavailable
from athena.execution import shm
from athena.execution.backend import PoolLimits, WorkerBackend, default_max_workers
from athena.execution.pool import ProcessWorkerPool
from athena.execution.pool_keeper import PoolKeeper
from athena.execution.runner import run_layer
from athena.layers.protocol import LayerResult, SearchRequest
from athena.records import MemoryInput, make_query

TENANTS = ("acme", "globex")
QUERIES = ("who went hiking in the Alps?", "how do I deploy the service?", "what about Quillon?")
WAIT = 60.0  # seconds: an upper bound for anything on a loaded 2-core machine


def _memories(tenant: str) -> list[MemoryInput]:
    def item(layer: str, text: str, **attributes: Any) -> MemoryInput:
        return MemoryInput(layer=layer, text=text, tenant=tenant, attributes=attributes)

    people = ["Caroline", "Melanie", "Zed", "Maya", "Ravi"]
    items = [
        item("episodic", f"{p} went hiking in the Alps, trip {i}.") for i, p in enumerate(people)
    ]
    items += [item("episodic", f"{p} baked bread for the {tenant} fair.") for p in people]
    items += [
        item("semantic", f"{p} is allergic to {food}.")
        for p, food in zip(people, "abcde", strict=True)
    ]
    items += [
        item("semantic", "Lisbon is the capital of Portugal."),
        item("semantic", f"The {tenant} wifi password rotates monthly."),
        item(
            "procedural",
            "Deploy the web service",
            trigger="a release is tagged",
            steps=["run tests", "build image", "roll out"],
        ),
        item("procedural", "Rotate database credentials", steps=["create user"]),
        item("procedural", "Onboard a new engineer", steps=["laptop", "accounts"]),
        item("prospective", "Renew the passport", due_at=2e9, priority=9),
        item("prospective", "Water the plants", due_at=1.9e9, priority=2),
        item("prospective", "Book flights to Tokyo", priority=5),
        item(
            "graph",
            "Zed works with Quillon at Brightwater.",
            relations=[["Zed", "works_with", "Quillon"], ["Zed", "works_at", "Brightwater"]],
        ),
        item("graph", "Maya lives in Oslo.", relations=[["Maya", "lives_in", "Oslo"]]),
    ]
    return items


@pytest.fixture(scope="module")
def mem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Memory]:
    """A small real database (two tenants, every layer), kept open for reference searches."""
    memory = Memory(tmp_path_factory.mktemp("pool") / "athena.db")
    for tenant in TENANTS:
        memory.remember_many(_memories(tenant))
    yield memory
    memory.close()


def request(mem: Memory, text: str = QUERIES[0], tenant: str = "acme") -> SearchRequest:
    return mem.pipeline.request(make_query(text, tenant, 5), mem.generations.get(tenant))


def pool_of(mem: Memory, **options: Any) -> ProcessWorkerPool:
    options.setdefault("task_timeout", WAIT)
    return ProcessWorkerPool(mem.store.path, **options)


@pytest.fixture(scope="module")
def pool(mem: Memory) -> Iterator[ProcessWorkerPool]:
    with pool_of(mem, min_workers=2, max_workers=2) as shared:
        yield shared


@pytest.fixture(scope="module")
def single(mem: Memory) -> Iterator[ProcessWorkerPool]:
    """One worker, never more, and room for six queued tasks."""
    with pool_of(mem, min_workers=1, max_workers=1, queue_size=6) as one:
        one.start()
        yield one


def eventually(check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def same_as_in_process(mem: Memory, req: SearchRequest, results: dict[str, Any]) -> None:
    for name in LAYERS:
        local = run_layer(mem.layers, mem.pipeline.ctx, name, req, "sequential")
        assert results[name].ids == local.ids, name
        assert results[name].scores == pytest.approx(local.scores), name
        assert results[name].generation == local.generation
        assert results[name].source == "distributed"


# -- answers --------------------------------------------------------------------------------


def test_results_equal_run_layer_in_process(pool: ProcessWorkerPool, mem: Memory) -> None:
    assert isinstance(pool, WorkerBackend)
    for tenant in TENANTS:
        for text in QUERIES:
            req = request(mem, text, tenant)
            same_as_in_process(mem, req, pool.run(req, LAYERS, timeout=WAIT))
    health = pool.health()
    assert health["started"] and health["available"] and health["workers"] == 2
    load = pool.load()  # the planner's cheap snapshot agrees with the full one
    assert (load.workers, load.busy, load.queue_depth) == (2, 0, 0)
    assert load.available and not load.saturated
    assert health["tasks_done"] >= 30 and health["tasks_failed"] == 0
    assert health["p95_latency_ms"] > 0 and health["avg_latency_ms"] > 0


def test_forkserver_workers_answer_the_same(mem: Memory) -> None:
    with pool_of(mem, min_workers=1, max_workers=1, start_method="forkserver") as pool:
        req = request(mem, QUERIES[0], "globex")
        same_as_in_process(mem, req, pool.run(req, LAYERS, timeout=WAIT))
    with pytest.raises(InvalidInput, match="never 'fork'"):
        pool_of(mem, start_method="fork")
    with pytest.raises(InvalidInput):
        pool_of(mem, min_workers=3, max_workers=2)


async def test_arun_answers_without_blocking_the_loop(pool: ProcessWorkerPool, mem: Memory) -> None:
    req = request(mem, QUERIES[1], "globex")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    results = await pool.arun(req, LAYERS, timeout=WAIT)
    task.cancel()
    same_as_in_process(mem, req, results)
    assert ticks > 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"priority": 11}, InvalidInput),
        ({"priority": -1}, InvalidInput),
        ({"priority": True}, InvalidInput),
        ({"priority": 2.5}, InvalidInput),
        ({"timeout": 0}, InvalidInput),
        ({"layers": ["nope"]}, UnknownLayer),
    ],
)
def test_invalid_calls_are_rejected(
    pool: ProcessWorkerPool, mem: Memory, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    layers = kwargs.pop("layers", ["semantic"])
    with pytest.raises(error):
        pool.run(request(mem), layers, **kwargs)
    with pytest.raises(InvalidInput):
        pool.run("not a request", ["semantic"])  # type: ignore[arg-type]
    assert pool.run(request(mem), []) == {}


# -- faults ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty(mem: Memory) -> Iterator[ProcessWorkerPool]:
    with pool_of(mem, min_workers=2, max_workers=2, task_timeout=5.0) as two:
        two.start()
        yield two


def test_worker_killed_mid_task_is_replaced_and_task_retried(
    faulty: ProcessWorkerPool, mem: Memory
) -> None:
    before = faulty.health()
    victim = before["pids"][0]
    os.kill(victim, signal.SIGSTOP)  # frozen: whatever it is given stays in flight
    req, answers = request(mem, QUERIES[2]), {}
    caller = threading.Thread(target=lambda: answers.update(faulty.run(req, LAYERS, timeout=WAIT)))
    caller.start()
    eventually(lambda: victim in faulty.health()["busy_pids"])
    assert faulty.load().busy >= 1  # the planner's snapshot counts the frozen worker's task
    os.kill(victim, signal.SIGKILL)  # dies in the middle of its task
    caller.join(WAIT)
    same_as_in_process(mem, req, answers)
    after = faulty.health()
    assert after["crashes"] == before["crashes"] + 1
    assert after["restarts"] == before["restarts"] + 1 and after["retries"] >= before["retries"] + 1
    assert victim not in after["pids"]
    eventually(lambda: faulty.health()["ready"] == 2)


def test_stopped_worker_times_out_is_replaced_and_task_retried(
    faulty: ProcessWorkerPool, mem: Memory
) -> None:
    eventually(lambda: faulty.health()["ready"] == 2)
    before = faulty.health()
    victim = before["pids"][-1]
    os.kill(victim, signal.SIGSTOP)  # hung: its task overruns task_timeout (5 s)
    req = request(mem, QUERIES[0], "globex")
    same_as_in_process(mem, req, faulty.run(req, LAYERS, timeout=WAIT))
    after = faulty.health()
    assert after["timeouts"] == before["timeouts"] + 1
    assert after["restarts"] == before["restarts"] + 1
    assert not alive(victim)


@pytest.mark.parametrize("broken", ["missing database", "unknown embedder"])
def test_pool_that_cannot_start_is_unavailable(mem: Memory, tmp_path: Path, broken: str) -> None:
    others = {p.pid for p in mp.active_children()}  # the module's other pools
    if broken == "missing database":
        pool = ProcessWorkerPool(tmp_path / "missing.db", min_workers=1)
    else:
        pool = ProcessWorkerPool(mem.store.path, "w2v", min_workers=1)
    with pytest.raises(WorkerPoolUnavailable, match="cannot start") as failure:
        pool.start()
    assert not pool.available and pool.health()["pids"] == []
    assert (broken == "missing database") == ("no database" in str(failure.value))
    assert (broken == "unknown embedder") == ("unknown embedder" in str(failure.value))
    with pytest.raises(WorkerPoolUnavailable, match="cannot start"):
        pool.run(request(mem), ["semantic"])
    pool.close()
    assert {p.pid for p in mp.active_children()} <= others


# -- scheduling -----------------------------------------------------------------------------


def test_a_recalls_layers_go_as_one_message_per_free_worker(mem: Memory) -> None:
    """Five layers, two free workers: two messages (three layers and two; three if the
    first worker answered before the dispatcher came back), not five, and the answers are
    what each layer gives in process."""
    with pool_of(mem, min_workers=2, max_workers=2) as two:
        two.start()
        eventually(lambda: two.health()["ready"] == 2)
        before = two.health()
        req = request(mem, QUERIES[1])
        same_as_in_process(mem, req, two.run(req, LAYERS, timeout=WAIT))
        after = two.health()
        assert 2 <= after["messages"] - before["messages"] <= 3
        assert after["tasks_done"] - before["tasks_done"] == len(LAYERS)


def test_deep_answers_go_one_layer_to_a_message(mem: Memory) -> None:
    """Five layers of 400 ids each would pass the 16 KiB a pipe takes in one write, which a
    worker stopped between two writes would leave the monitor blocked on: one per message."""
    with pool_of(mem, min_workers=2, max_workers=2) as two:
        two.start()
        before = two.health()["messages"]
        req = dataclasses.replace(request(mem, QUERIES[1]), depth=400)
        same_as_in_process(mem, req, two.run(req, LAYERS, timeout=WAIT))
        assert two.health()["messages"] - before == len(LAYERS)


def test_the_default_ceiling_is_a_worker_per_core_and_never_below_the_floor() -> None:
    assert PoolLimits(min_workers=1).max_workers == default_max_workers(1) >= 1
    assert PoolLimits(min_workers=64).max_workers >= 64  # not refused on a small machine


def test_a_queue_that_drains_at_once_starts_no_worker(mem: Memory) -> None:
    """One recall queues a task per layer at once (four wait for the single worker): that
    is no reason to start a process; the old rule (depth > 2 per worker) started one."""
    with pool_of(mem, min_workers=1, max_workers=3) as pool:
        pool.start()
        for text in QUERIES:
            pool.run(request(mem, text), LAYERS, timeout=WAIT)
        health = pool.health()
        assert health["scale_ups"] == 0 and health["workers"] == 1


def test_queued_tasks_fail_at_once_when_no_worker_is_ready(mem: Memory) -> None:
    """The only worker dies with one task on it and one queued: its replacement takes
    seconds to start, so both fail now (their recalls fall back) instead of waiting."""
    with pool_of(mem, min_workers=1, max_workers=1) as pool:
        pool.start()
        (victim,) = pool.health()["pids"]
        os.kill(victim, signal.SIGSTOP)  # whatever it is given stays in flight
        outcomes: dict[str, BaseException | None] = {}

        def ask(name: str, text: str) -> None:
            try:
                pool.run(request(mem, text), ["semantic"], timeout=WAIT)
                outcomes[name] = None
            except WorkerPoolUnavailable as exc:
                outcomes[name] = exc

        first = threading.Thread(target=ask, args=("first", QUERIES[0]))
        first.start()
        eventually(lambda: victim in pool.health()["busy_pids"])
        second = threading.Thread(target=ask, args=("second", QUERIES[1]))
        second.start()
        eventually(lambda: pool.health()["queue_depth"] == 1)
        os.kill(victim, signal.SIGKILL)
        first.join(WAIT)
        second.join(WAIT)
        assert set(outcomes) == {"first", "second"}
        for error in outcomes.values():  # the retried task and the queued one
            assert error is not None and "no worker is ready" in str(error)
        assert pool.health()["restarts"] == 1
        eventually(lambda: pool.health()["ready"] == 1)  # and the pool carries on
        assert pool.run(request(mem), ["semantic"], timeout=WAIT)["semantic"].ids


def test_a_replacement_stuck_while_starting_is_killed_and_replaced(mem: Memory) -> None:
    """A worker frozen before it reports ready would hold its place for good (no task
    deadline covers it): once it has taken three times the pool's first start (at least
    10 s; here far less than the 60 s ``start_timeout``) it is killed and replaced."""
    with pool_of(mem, min_workers=1, max_workers=1) as pool:
        pool.start()
        allowance = max(10.0, 3 * pool.health()["startup_ms"] / 1000.0)  # 10 s here
        frozen_at = time.monotonic()
        (first,) = pool.health()["pids"]
        os.kill(first, signal.SIGKILL)
        eventually(lambda: pool.health()["starting"] == 1 and first not in pool.health()["pids"])
        (stuck,) = pool.health()["pids"]
        os.kill(stuck, signal.SIGSTOP)  # frozen mid start-up (imports take a second or more)
        try:
            eventually(lambda: stuck not in pool.health()["pids"], timeout=WAIT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck, signal.SIGCONT)
        assert time.monotonic() - frozen_at < min(allowance + 10.0, 50.0)  # not 60 s
        eventually(lambda: pool.health()["ready"] == 1)
        health = pool.health()
        assert health["crashes"] == 2 and health["restarts"] == 2
        assert pool.run(request(mem), ["semantic"], timeout=WAIT)["semantic"].ids


@pytest.mark.slow
def test_a_replacement_warming_a_scope_grown_large_is_left_to_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scope grown past the warm-up size after the pool started has no snapshot, so a
    replacement builds its indexes before it reports ready, for longer than the start
    allowance. It says it is warming every second, and is not killed as stuck."""
    from athena.execution import pool_core

    allowance = 2.0  # a spawned interpreter beats within ~1 s; the warm-up takes ~6 s
    monkeypatch.setattr(pool_core, "MIN_START_ALLOWANCE_S", allowance)
    with Memory(tmp_path / "g.db", pool="off") as memory:
        memory.remember("a small one", tenant="small")
        path, model = memory.store.path, memory.embedder.name
        options: dict[str, Any] = {"hnsw_cutoff": 1000, "index_snapshots": False}
        with ProcessWorkerPool(path, model, min_workers=1, max_workers=1, **options) as pool:
            pool.start()
            pool._core.startup_ms = 1.0  # the allowance is its floor, not 3x the first start
            memory.remember_many(
                [MemoryInput(tenant="big", layer="semantic", text=f"fact {i} on topic {i % 97}")
                 for i in range(40_000)]
            )  # fmt: skip
            (first,) = pool.health()["pids"]
            killed_at = time.monotonic()
            os.kill(first, signal.SIGKILL)
            eventually(lambda: first not in pool.health()["pids"] and pool.health()["ready"] == 1)
            took = time.monotonic() - killed_at
            health = pool.health()
            assert took > allowance, took  # its warm-up outlasted the allowance...
            assert health["crashes"] == 1 and health["restarts"] == 1  # ...and it was kept
            answer = pool.run(request(memory, "fact 7", "big"), ["semantic"], timeout=WAIT)
            assert answer["semantic"].ids and answer["semantic"].loaded == 0  # built at start


def test_the_planners_load_is_kept_until_a_block_under_the_pools_condition_ends(
    single: ProcessWorkerPool,
) -> None:
    core = single._core
    core.cond.acquire()  # no other thread ends a block meanwhile: nothing can change
    try:
        first = single.load()
        assert first.available and single.load() is first  # kept: read once
        with core.cond:  # a change, as the pool makes them: under the condition
            core.state = "closed"
        closed = single.load()
        assert not closed.available and single.load() is closed
        with core.cond:
            core.state = "running"
        assert single.load().available and single.load() == first
    finally:
        core.cond.release()


def test_the_planners_load_follows_what_the_pools_threads_change(mem: Memory) -> None:
    with pool_of(mem, min_workers=1, max_workers=1) as pool:
        before = pool.load()
        assert (before.workers, before.available) == (0, False) and pool.load() is before
        pool.start()  # workers spawned and marked ready by the pool's own threads
        eventually(lambda: pool.load().available)
        assert pool.load().workers == 1
        pool.run(request(mem), LAYERS, timeout=WAIT)
        after = pool.load()
        assert (after.busy, after.queue_depth) == (0, 0) and after.available


def test_scales_up_under_a_queue_and_back_down_when_idle(mem: Memory) -> None:
    with pool_of(mem, min_workers=1, max_workers=3, idle_seconds=1.0) as pool:
        pool.start()
        req, peak, stop = request(mem), [1], threading.Event()

        def caller() -> None:
            while not stop.is_set():
                pool.run(req, LAYERS, timeout=WAIT)
                peak[0] = max(peak[0], pool.health()["workers"])

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            eventually(lambda: pool.health()["scale_ups"] >= 1 and peak[0] >= 2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(WAIT)
        eventually(lambda: pool.health()["workers"] == 1)  # idle workers retire
        health = pool.health()
        assert health["scale_downs"] >= 1 and health["tasks_failed"] == 0
        actions = [event["action"] for event in health["scaling"]]
        assert actions[0] == "up" and actions[-1] == "down"
        assert all(event["reason"] for event in health["scaling"])


def test_higher_priority_runs_first_fifo_within_a_priority(
    single: ProcessWorkerPool, mem: Memory
) -> None:
    (worker,) = single.health()["pids"]
    req, order = request(mem), []
    os.kill(worker, signal.SIGSTOP)
    try:
        blocker = single.submit(req, ["semantic"], priority=0)["semantic"]
        eventually(lambda: single.health()["busy"] == 1)
        for label, priority in [
            ("p1", 1),
            ("p9", 9),
            ("p5a", 5),
            ("p10", 10),
            ("p0", 0),
            ("p5b", 5),
        ]:
            future = single.submit(req, ["episodic"], priority=priority)["episodic"]
            future.add_done_callback(lambda _, label=label: order.append(label))
        assert single.health()["queue_depth"] == 6
    finally:
        os.kill(worker, signal.SIGCONT)
    assert blocker.result(timeout=WAIT).layer == "semantic"
    eventually(lambda: len(order) == 6)
    assert order == ["p10", "p9", "p5a", "p5b", "p1", "p0"]


def test_queue_bound_is_enforced_and_a_timed_out_call_leaves_the_queue(
    single: ProcessWorkerPool, mem: Memory
) -> None:
    (worker,) = single.health()["pids"]
    req = request(mem)
    assert len(single.run(req, LAYERS * 2, timeout=WAIT)) == 5  # duplicates collapse
    os.kill(worker, signal.SIGSTOP)
    try:
        running = single.submit(req, ["graph"])
        eventually(lambda: single.health()["busy"] == 1)
        with pytest.raises(RecallTimeout):
            single.run(req, ["semantic"], timeout=0.3)
        assert single.health()["queue_depth"] == 0  # the abandoned task left the queue
        queued = [single.submit(req, [name]) for name in LAYERS]
        queued.append(single.submit(req, ["episodic"]))
        assert single.health()["queue_depth"] == 6 and single.saturated
        with pytest.raises(WorkerPoolUnavailable, match="queue is full"):
            single.submit(req, ["semantic"])
    finally:
        os.kill(worker, signal.SIGCONT)
    running["graph"].result(timeout=WAIT)
    for futures in queued:
        for future in futures.values():
            assert future.result(timeout=WAIT).source == "distributed"
    assert not single.saturated and single.health()["queue_depth"] == 0


async def test_arun_times_out_or_is_cancelled_without_leaving_work_queued(
    single: ProcessWorkerPool, mem: Memory
) -> None:
    (worker,) = single.health()["pids"]
    req = request(mem)
    os.kill(worker, signal.SIGSTOP)
    try:
        running = single.submit(req, ["graph"])
        eventually(lambda: single.health()["busy"] == 1)
        with pytest.raises(RecallTimeout):
            await single.arun(req, LAYERS, timeout=0.3)
        assert single.health()["queue_depth"] == 0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(single.arun(req, LAYERS, timeout=WAIT), 0.3)
        assert single.health()["queue_depth"] == 0
    finally:
        os.kill(worker, signal.SIGCONT)
    assert running["graph"].result(timeout=WAIT).layer == "graph"
    assert (await single.arun(req, ["semantic"], timeout=WAIT))["semantic"].ids


# -- transport and shutdown -----------------------------------------------------------------


def _double_in_child(conn: Connection, packed: bytes) -> None:
    array = shm.unpack_tree(pickle.loads(packed), unlink=False)
    reply, blocks = shm.pack_tree({"doubled": array * 2})
    shm.release(blocks, unlink=False)  # the parent unlinks after unpacking
    conn.send(pickle.dumps(reply))


def test_shared_memory_round_trip_across_a_process() -> None:
    big = np.random.default_rng(7).standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB
    packed, blocks = shm.pack_tree(big)
    payload = pickle.dumps(packed)
    assert isinstance(packed, shm.ShmArray) and len(payload) < 1024
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_double_in_child, args=(child, payload))
    process.start()
    try:
        assert parent.poll(WAIT)
        reply = pickle.loads(parent.recv())
    finally:
        process.join(WAIT)
        shm.release(blocks)
    assert isinstance(reply["doubled"], shm.ShmArray)
    result = shm.unpack_tree(reply, unlink=True)["doubled"]
    np.testing.assert_array_equal(result, big * 2)
    for name in (packed.name, reply["doubled"].name):
        with pytest.raises(FileNotFoundError):
            SharedMemory(name=name)
    small = np.zeros(8, np.float32)
    assert shm.pack_tree(small) == (small, [])


def test_large_request_arrays_go_by_shared_memory(mem: Memory) -> None:
    req = request(mem)
    wide = SearchRequest(req.query, np.ones(40_000, np.float32), req.generations, 5, req.now)
    packed, blocks = shm.pack_tree(wide)
    assert isinstance(packed.vector, shm.ShmArray) and packed.query is req.query
    back = shm.unpack_tree(packed, unlink=False)
    shm.release(blocks)
    np.testing.assert_array_equal(back.vector, wide.vector)


def test_pool_moves_request_arrays_over_the_threshold_by_shared_memory(
    pool: ProcessWorkerPool, mem: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[str] = []

    def spy(array: np.ndarray) -> tuple[shm.ShmArray, SharedMemory]:
        desc, block = real(array)
        created.append(desc.name)
        return desc, block

    real = shm.pack_array
    monkeypatch.setattr(shm, "SHM_THRESHOLD", 0)  # the 1 KiB query vector now qualifies
    monkeypatch.setattr(shm, "pack_array", spy)
    req = request(mem, QUERIES[1], "globex")
    same_as_in_process(mem, req, pool.run(req, LAYERS, timeout=WAIT))
    assert len(created) == 1  # one block per recall, read by all five tasks
    with pytest.raises(FileNotFoundError):  # unlinked once the last task finished
        SharedMemory(name=created[0])


def test_close_stops_every_worker_even_a_stopped_one(mem: Memory) -> None:
    pool = pool_of(mem, min_workers=2, max_workers=2)
    pool.start()
    pids = pool.health()["pids"]
    os.kill(pids[0], signal.SIGSTOP)
    pool.close()
    pool.close()  # idempotent
    assert not any(alive(pid) for pid in pids)
    assert not {p.pid for p in mp.active_children()} & set(pids)
    assert not pool.available and pool.health()["state"] == "closed"
    with pytest.raises(WorkerPoolUnavailable):
        pool.run(request(mem), ["semantic"])


def test_workers_warm_the_largest_scopes_within_budget(tmp_path: Path) -> None:
    from athena.embedding import load_embedder
    from athena.execution.worker import warm_indexes
    from athena.layers import LayerContext
    from athena.retrieval.lexical_index import LexicalIndexes
    from athena.retrieval.vector import VectorIndexes
    from athena.store.sqlite import SQLiteStore

    with Memory(tmp_path / "w.db", embedder=load_embedder("static"), pool="off") as memory:
        memory.remember_many([MemoryInput(tenant="big", layer="semantic", text=f"fact {i}")
                              for i in range(40)])  # fmt: skip
        memory.remember("a small one", tenant="small")
        store = SQLiteStore(tmp_path / "w.db", readonly=True)
        try:
            ctx = LayerContext(
                store, VectorIndexes(store, memory.embedder.name), LexicalIndexes(store)
            )
            assert warm_indexes(ctx, at_least=10, budget_s=30.0) == [("big", "semantic")]
            assert len(ctx.indexes._indexes[("big", "semantic")]) == 40
            assert len(ctx.lexicon._indexes[("big", "semantic")]) == 40
            assert warm_indexes(ctx, at_least=1, budget_s=-1.0) == []  # budget spent
        finally:
            store.close()


def test_a_task_goes_to_the_free_worker_that_holds_its_tenants_indexes(mem: Memory) -> None:
    """Without affinity the second globex search would go to the oldest free worker, which
    never saw globex and would build its indexes again (``loaded`` > 0)."""
    with pool_of(mem, min_workers=2, max_workers=2) as two:
        two.start()
        eventually(lambda: two.health()["ready"] == 2)
        oldest = two.health()["pids"][0]
        os.kill(oldest, signal.SIGSTOP)  # whatever it is given stays in flight
        try:
            held = threading.Thread(
                target=two.run, args=(request(mem), ["episodic"]), kwargs={"timeout": WAIT}
            )
            held.start()
            eventually(lambda: oldest in two.health()["busy_pids"])
            first = two.run(request(mem, tenant="globex"), ["semantic"], timeout=WAIT)
        finally:
            os.kill(oldest, signal.SIGCONT)
        held.join(WAIT)
        assert first["semantic"].loaded > 0  # the younger worker built globex's indexes
        before = two.health()
        again = two.run(request(mem, QUERIES[1], "globex"), ["semantic"], timeout=WAIT)
        after = two.health()
        assert again["semantic"].loaded == 0  # sent to the worker that holds them
        assert after["sent_to_holder"] == before["sent_to_holder"] + 1
        assert after["sent_elsewhere"] == before["sent_elsewhere"] == 2


def test_a_workers_index_build_is_reported_and_teaches_no_strategy_cost(tmp_path: Path) -> None:
    """A worker new to a tenant builds its indexes: that recall's cost is recorded but not
    learnt, as a build in this process is not (on 100k-tenants such a recall took 21-54 ms,
    4 ms once the worker had the tenant)."""
    items = [
        MemoryInput(layer="episodic", text=f"Note {i}: Zed filed report {i}.", tenant="big")
        for i in range(400)
    ]
    with Memory(tmp_path / "b.db") as memory:
        memory.remember_many(items)
        result = run_layer(
            memory.layers, memory.pipeline.ctx, "episodic", request(memory, tenant="big"), "x"
        )
        assert result.loaded >= 400  # this process built the tenant's episodic indexes
        again = run_layer(
            memory.layers, memory.pipeline.ctx, "episodic", request(memory, tenant="big"), "x"
        )
        assert again.loaded == 0
        rows = []
        for i in range(8):  # forced DISTRIBUTED reads no cache: every one runs on a worker
            memory.recall(f"which report did Zed file, {i}?", tenant="big", strategy="distributed")
            rows.append(memory.engine.telemetry.rows()[-1])  # type: ignore[attr-defined]
        assert all(row.strategy == "distributed" for row in rows)
        assert rows[0].features == ()  # the first worker to see the tenant built: not learnt
        assert any(row.features for row in rows)  # a worker that had them: learnt
        keeper = memory.engine.pools  # type: ignore[attr-defined]
        assert keeper.is_warm("big") == bool(rows[-1].features)  # warm after a run built nothing


def test_a_background_warm_up_makes_a_tenant_warm_in_the_pool(tmp_path: Path) -> None:
    items = [
        MemoryInput(layer="episodic", text=f"Note {i}: Ann signed form {i}.", tenant="big")
        for i in range(400)
    ]
    with Memory(tmp_path / "w.db") as memory:
        memory.remember_many(items)
        keeper = memory.engine.pools  # type: ignore[attr-defined]
        assert keeper.get() is not None and not keeper.is_warm("big")
        req = request(memory, "which form did Ann sign?", tenant="big")
        deadline = time.monotonic() + WAIT
        runs = 0
        while not keeper.is_warm("big") and time.monotonic() < deadline:
            if keeper.warm("big", req, ["episodic"]):
                runs += 1
            while keeper.warming and time.monotonic() < deadline:
                time.sleep(0.01)
        assert keeper.is_warm("big")  # a warm-up's run found the tenant's indexes loaded
        assert runs >= 2  # the first built them, so it did not count as warm
        built = LayerResult("episodic", (), (), loaded=400)
        assert keeper.served("big", {"episodic": built})  # a run that built: cold again
        assert not keeper.is_warm("big")


def test_a_run_on_a_replaced_pool_marks_no_tenant_warm() -> None:
    keeper = PoolKeeper(None)
    old, new = object(), object()
    keeper.backend = new  # type: ignore[assignment]
    assert not keeper.served("t", {}, old)  # type: ignore[arg-type]
    assert not keeper.is_warm("t")  # its workers are gone
    keeper.served("t", {}, new)  # type: ignore[arg-type]
    assert keeper.is_warm("t")


def test_a_keeper_dropped_without_close_is_freed_without_the_collector() -> None:
    """Its warm tenants reach it by a weak reference: no cycle keeps it (and its pool's
    workers) alive until a collector pass, which the settled heap makes rare."""
    import gc
    import weakref

    was = gc.isenabled()
    gc.disable()
    try:
        keeper = PoolKeeper(None)
        gone = weakref.ref(keeper)
        del keeper
        assert gone() is None
    finally:
        if was:
            gc.enable()
