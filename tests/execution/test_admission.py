"""The admission gate: at most ``slots`` recalls execute in-process at once, the rest queue
first come first served, a queued recall honours its timeout, and the hits are unchanged."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athena import AsyncMemory, Memory
from athena.embedding import BatchingEmbedder, StaticEmbedder
from athena.errors import ExecutionError, InvalidInput, RecallTimeout
from athena.execution.adaptive import AdaptiveEngine
from athena.execution.admission import AdmissionGate, default_concurrency, default_slots
from athena.interfaces.http import create_app
from athena.layers import LayerContext, default_layers
from athena.layers.episodic import EpisodicLayer
from athena.layers.protocol import SearchRequest
from athena.layers.semantic import SemanticLayer
from loopback import serving


class Tracking:
    """Counts how many searches of the wrapped layers are in flight at once."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def around(self, search: Any, ctx: LayerContext, request: SearchRequest) -> Any:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(self.pause_s)  # releases the GIL: ungated threads would overlap here
            return search(ctx, request)
        finally:
            with self._lock:
                self.now -= 1


def tracked_layers(tracking: Tracking) -> dict[str, Any]:
    class SlowEpisodic(EpisodicLayer):
        def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
            return tracking.around(super().search, ctx, request)  # type: ignore[no-any-return]

    class SlowSemantic(SemanticLayer):
        def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
            return tracking.around(super().search, ctx, request)  # type: ignore[no-any-return]

    layers = default_layers()
    layers["episodic"], layers["semantic"] = SlowEpisodic(), SlowSemantic()
    return layers


def gated(slots: int) -> Any:
    def build(pipeline: Any, store: Any) -> AdaptiveEngine:
        return AdaptiveEngine(pipeline, store, admission=AdmissionGate(slots))

    return build


def fill(mem: Memory) -> None:
    for i in range(12):
        mem.remember(f"Alice visited city number {i} in spring.", tenant="t", session=f"s{i}")
        mem.remember(f"Alice likes dish {i}.", tenant="t", layer="semantic", key=f"dish{i}")


QUESTIONS = [f"Which city did Alice visit, number {i}?" for i in range(16)]


def test_one_slot_runs_one_recall_at_a_time_and_hits_are_unchanged(tmp_path: Path) -> None:
    tracking = Tracking(0.01)
    mem = Memory(tmp_path / "m.db", engine=gated(1), layers=tracked_layers(tracking))
    fill(mem)
    expected = {q: mem.recall(q, tenant="t", strategy="sequential").hits for q in QUESTIONS}
    tracking.peak = 0
    got: dict[str, Any] = {}

    def ask(q: str) -> None:
        got[q] = mem.recall(q, tenant="t", strategy="sequential").hits

    threads = [threading.Thread(target=ask, args=(q,)) for q in QUESTIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admission = mem.execution_stats()["admission"]
    mem.close()
    assert got == expected
    assert tracking.peak == 1
    assert admission["slots"] == 1 and admission["queued"] > 0 and admission["waiting"] == 0


def test_more_slots_let_recalls_overlap(tmp_path: Path) -> None:
    tracking = Tracking(0.05)
    mem = Memory(tmp_path / "m.db", engine=gated(4), layers=tracked_layers(tracking))
    fill(mem)
    threads = [
        threading.Thread(
            target=mem.recall, args=(q,), kwargs={"tenant": "t", "strategy": "sequential"}
        )
        for q in QUESTIONS[:4]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mem.close()
    assert tracking.peak > 1


def test_a_parallel_recall_still_fans_out_inside_its_one_slot(tmp_path: Path) -> None:
    tracking = Tracking(0.05)
    mem = Memory(tmp_path / "m.db", engine=gated(1), layers=tracked_layers(tracking))
    fill(mem)
    mem.recall(QUESTIONS[0], tenant="t", strategy="parallel", layers=["episodic", "semantic"])
    mem.close()
    assert tracking.peak == 2


def test_a_queued_recall_times_out_typed_and_nothing_is_lost(tmp_path: Path) -> None:
    mem = Memory(tmp_path / "m.db", engine=gated(1))
    fill(mem)
    before = mem.recall(QUESTIONS[0], tenant="t", strategy="sequential").hits
    gate = mem.engine.admission  # type: ignore[attr-defined]
    gate.acquire()  # a long recall holds the only slot
    with pytest.raises(RecallTimeout, match="execution slot"):
        mem.recall(QUESTIONS[1], tenant="t", strategy="sequential", timeout=0.05)
    gate.release()
    assert gate.stats()["timeouts"] == 1 and gate.stats()["waiting"] == 0
    assert mem.recall(QUESTIONS[0], tenant="t", strategy="sequential").hits == before
    assert mem.stats()["memories"] == 24
    mem.close()


class SlowQueries:
    """The static model, taking ``pause_s`` per query embedding (a busy transformer)."""

    def __init__(self, pause_s: float) -> None:
        from athena.embedding import load_embedder

        self.inner, self.pause_s, self.slow = load_embedder("static"), pause_s, False
        self.name, self.dim = self.inner.name, self.inner.dim

    def embed(self, texts: Any) -> Any:
        if self.slow:
            time.sleep(self.pause_s)
        return self.inner.embed(texts)


def test_the_slot_wait_gets_only_what_the_embedding_left_of_the_timeout(tmp_path: Path) -> None:
    embedder = SlowQueries(0.25)
    mem = Memory(tmp_path / "m.db", embedder=embedder, engine=gated(1))  # type: ignore[arg-type]
    fill(mem)
    embedder.slow = True
    gate = mem.engine.admission  # type: ignore[attr-defined]
    gate.acquire()  # a long recall holds the only slot for 0.8 s
    threading.Timer(0.8, gate.release).start()
    start = time.monotonic()
    with pytest.raises(RecallTimeout, match="execution slot"):
        mem.recall(QUESTIONS[1], tenant="t", strategy="sequential", timeout=0.4)
    assert time.monotonic() - start < 0.6  # given the whole 0.4 s, the wait ended at 0.65 s
    time.sleep(0.5)
    assert mem.recall(QUESTIONS[1], tenant="t", strategy="sequential", timeout=5).hits
    mem.close()


def test_the_wait_is_explained_and_not_learnt_as_the_strategy_cost(tmp_path: Path) -> None:
    mem = Memory(tmp_path / "m.db", engine=gated(1))
    fill(mem)
    gate = mem.engine.admission  # type: ignore[attr-defined]
    gate.acquire()
    threading.Timer(0.2, gate.release).start()
    out = mem.recall(QUESTIONS[2], tenant="t", explain=True)
    assert out.explain is not None
    assert out.explain["queued_ms"] >= 150.0
    assert out.explain["actual_ms"] >= out.explain["queued_ms"]
    row = mem.engine.telemetry.rows()[-1]  # type: ignore[attr-defined]
    assert row.actual_ms < out.explain["actual_ms"] - 100.0
    mem.close()


def test_async_recalls_beyond_the_slots_all_answer(tmp_path: Path) -> None:
    async def main() -> list[Any]:
        async with AsyncMemory(tmp_path / "m.db", engine=gated(1)) as mem:
            fill(mem.core)
            return list(
                await asyncio.gather(*(mem.recall(q, tenant="t", k=3) for q in QUESTIONS * 2))
            )

    answers = asyncio.run(main())
    assert len(answers) == 32 and all(len(a.hits) == 3 for a in answers)


def test_handoff_is_first_come_first_served() -> None:
    gate = AdmissionGate(1)
    gate.acquire()
    order: list[int] = []

    def waiter(i: int) -> None:
        with gate.slot():
            order.append(i)

    threads = []
    for i in range(6):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        while gate.stats()["waiting"] < i + 1:  # each is in line before the next arrives
            time.sleep(0.001)
        threads.append(t)
    gate.release()
    for t in threads:
        t.join()
    assert order == list(range(6))


@pytest.mark.parametrize("bad", [0, -1, 1025, 1.5, True, "2"])
def test_bad_slot_counts_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="slots"):
        AdmissionGate(bad)


def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        AdmissionGate(2).release()


def test_default_is_one_slot_under_the_gil_and_a_core_each_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert default_slots() == 1
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert default_slots() == 6


@settings(max_examples=25, deadline=None)
@given(
    slots=st.integers(min_value=1, max_value=4),
    holds=st.lists(st.floats(min_value=0.0, max_value=0.003), min_size=1, max_size=12),
)
def test_never_more_holders_than_slots(slots: int, holds: list[float]) -> None:
    gate = AdmissionGate(slots)
    now, peak, lock = [0], [0], threading.Lock()

    def hold(seconds: float) -> None:
        with gate.slot(timeout=5.0):
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            time.sleep(seconds)
            with lock:
                now[0] -= 1

    threads = [threading.Thread(target=hold, args=(s,)) for s in holds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = gate.stats()
    assert peak[0] <= slots
    assert stats["admitted"] == len(holds) and stats["waiting"] == 0 and stats["timeouts"] == 0


def test_the_async_face_hands_at_most_its_concurrency_to_threads(tmp_path: Path) -> None:
    """Eight slots in the engine, two threads in the async face: two recalls at a time."""

    def peak(concurrency: int) -> tuple[int, list[Any]]:
        tracking = Tracking(0.03)

        async def main() -> list[Any]:
            async with AsyncMemory(
                tmp_path / f"m{concurrency}.db",
                engine=gated(8),
                layers=tracked_layers(tracking),
                concurrency=concurrency,
            ) as mem:
                fill(mem.core)
                asks = (
                    mem.recall(q, tenant="t", k=3, strategy="sequential") for q in QUESTIONS[:8]
                )
                return list(await asyncio.gather(*asks))

        answers = asyncio.run(main())
        return tracking.peak, answers

    bounded, answers = peak(2)
    assert bounded == 2  # they overlap, but never more than two
    assert len(answers) == 8 and all(len(a.hits) == 3 for a in answers)
    wider, _ = peak(6)
    assert wider > 2  # the async face's bound, not the engine, held the first run to two


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "4"])
def test_bad_async_concurrency_is_refused(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(InvalidInput, match="concurrency"):
        AsyncMemory(tmp_path / "m.db", concurrency=bad)
    assert not (tmp_path / "m.db").exists()  # refused before a file was made


def test_default_concurrency_is_one_under_the_gil_plus_lanes_or_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert default_concurrency() == 1
    assert default_concurrency(lanes=2) == 2 and default_concurrency(16, 2) == 16
    static = Memory(tmp_path / "s.db")  # Python and numpy: one thread
    per_text = Memory(tmp_path / "t.db", embedder=BatchingEmbedder(PerText(), lanes=2))
    coalescing = Memory(tmp_path / "c.db", embedder=BatchingEmbedder(StaticEmbedder()))
    try:
        assert (static.concurrency, per_text.concurrency, coalescing.concurrency) == (1, 2, 16)
    finally:
        for mem in (static, per_text, coalescing):
            mem.close()


def test_default_concurrency_without_the_gil_is_two_threads_a_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert default_concurrency() == 4 and default_concurrency(16, 2) == 16


class PerText(StaticEmbedder):
    """A model that embeds one text per call and runs calls at once (as the int8
    transformer on ONNX Runtime does)."""

    per_text = True
    concurrent = True


def test_a_queued_recall_is_served_from_what_was_cached_while_it_waited(tmp_path: Path) -> None:
    mem = Memory(tmp_path / "m.db")
    fill(mem)
    first = mem.recall(QUESTIONS[0], tenant="t", k=3)
    hits = mem.engine.cache.stats()["hits"]  # type: ignore[attr-defined]
    again = mem.recall_queued(QUESTIONS[0], time.perf_counter() - 0.5, tenant="t", k=3)
    assert again.hits == first.hits
    assert mem.engine.cache.stats()["hits"] == hits + 1  # type: ignore[attr-defined]
    mem.close()


def test_a_queued_recall_counts_its_wait_against_the_timeout(tmp_path: Path) -> None:
    mem = Memory(tmp_path / "m.db")
    fill(mem)
    before = mem.stats("t")
    with pytest.raises(RecallTimeout, match="queue"):
        mem.recall_queued(QUESTIONS[1], time.perf_counter() - 2.0, tenant="t", timeout=1.0)
    counted = mem.execution_gauges()["thread_queue"]  # it never reached the engine
    assert counted["queued"] == 1 and counted["timeouts"] == 1
    assert counted["waited_ms"] >= 2000.0
    seen: list[Any] = []
    recall = mem.recall

    def spy(query: str, **options: Any) -> Any:
        seen.append(options["timeout"])
        return recall(query, **options)

    mem.recall = spy  # type: ignore[method-assign]
    mem.recall_queued(QUESTIONS[2], time.perf_counter() - 0.4, tenant="t", timeout=5.0)
    assert 4.0 < seen[0] < 4.61  # what the wait left of it
    counted = mem.execution_stats()["thread_queue"]
    assert counted["queued"] == 2 and counted["timeouts"] == 1
    with pytest.raises(InvalidInput):  # bad input is refused as recall refuses it
        mem.recall_queued(QUESTIONS[2], time.perf_counter() - 0.4, tenant="t", timeout=-1)
    assert mem.stats("t") == before
    mem.close()


def test_closing_the_async_face_lets_queued_recalls_finish_then_refuses_typed(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[list[Any], Any]:
        mem = AsyncMemory(tmp_path / "m.db", concurrency=1)
        fill(mem.core)
        asks = [asyncio.ensure_future(mem.recall(q, tenant="t", k=2)) for q in QUESTIONS[:3]]
        await asyncio.sleep(0)  # every one handed to the face before it closes
        await mem.close()
        done = await asyncio.gather(*asks, return_exceptions=True)
        try:
            await mem.recall(QUESTIONS[5], tenant="t", k=2)
        except ExecutionError as exc:
            return done, exc
        return done, None

    done, refused = asyncio.run(main())
    assert all(len(answer.hits) == 2 for answer in done)  # none was cancelled
    assert refused is not None and "closed" in str(refused)


def test_a_queued_recall_refuses_a_bad_strategy_as_recall_does(tmp_path: Path) -> None:
    mem = Memory(tmp_path / "m.db")
    fill(mem)
    with pytest.raises(InvalidInput, match="strategy"):
        mem.recall_queued(QUESTIONS[1], time.perf_counter() - 2.0, tenant="t", strategy="bogus")
    with pytest.raises(InvalidInput, match="strategy"):
        mem.recall_cached(QUESTIONS[1], tenant="t", strategy="bogus")
    out = mem.recall_queued(QUESTIONS[1], time.perf_counter() - 0.2, tenant="t", explain=True)
    assert out.explain is not None and out.explain["thread_queue_ms"] >= 200.0
    mem.close()


def test_the_http_server_hands_at_most_its_concurrency_to_threads(tmp_path: Path) -> None:
    tracking = Tracking(0.03)
    mem = Memory(tmp_path / "m.db", engine=gated(8), layers=tracked_layers(tracking))
    fill(mem)
    with serving(create_app(mem, concurrency=1)) as client:
        answers: list[Any] = []

        def ask(question: str) -> None:
            body = {"query": question, "k": 2, "strategy": "sequential"}
            answers.append(client.post("/v1/tenants/t/recall", json=body))

        threads = [threading.Thread(target=ask, args=(q,)) for q in QUESTIONS[:6]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    mem.close()
    assert [r.status_code for r in answers] == [200] * 6
    assert tracking.peak == 1  # the engine would have let eight run


def test_the_http_server_counts_a_recall_whose_timeout_ran_out_in_its_queue(
    tmp_path: Path,
) -> None:
    tracking = Tracking(0.3)  # one recall holds the only thread for about 0.6 s
    mem = Memory(tmp_path / "m.db", layers=tracked_layers(tracking))
    fill(mem)
    with serving(create_app(mem, concurrency=1)) as client:
        slow = {"query": QUESTIONS[0], "k": 2, "strategy": "sequential"}
        first = threading.Thread(
            target=client.post, args=("/v1/tenants/t/recall",), kwargs={"json": slow}
        )
        first.start()
        deadline = time.monotonic() + 30.0
        while tracking.now == 0 and time.monotonic() < deadline:
            time.sleep(0.005)  # until the first recall is in its layers, holding the thread
        quick = {"query": QUESTIONS[1], "k": 2, "strategy": "sequential", "timeout": 0.05}
        answer = client.post("/v1/tenants/t/recall", json=quick)
        first.join()
        metrics = client.get("/metrics").text
    mem.close()
    assert answer.status_code == 504, answer.text
    assert 'athena_recall_queue_timeouts_total{queue="thread"} 1.0' in metrics
    assert 'athena_recall_queue_timeouts_total{queue="execution_slot"} 0.0' in metrics
    assert "athena_recall_thread_queue_seconds_total" in metrics


def test_a_distributed_recall_waiting_on_the_pool_holds_none_of_the_faces_threads(
    tmp_path: Path,
) -> None:
    """With one recall thread, a forced DISTRIBUTED recall whose workers are frozen must not
    keep an in-process recall waiting: it waits for the pool on a thread of its own."""

    async def run() -> None:
        async with AsyncMemory(tmp_path / "m.db", concurrency=1, pool="eager") as mem:
            fill(mem.core)
            await mem.recall(QUESTIONS[0], tenant="t", strategy="distributed")  # pool started
            pids = mem.core.execution_stats()["pool"]["pids"]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                pooled = asyncio.ensure_future(
                    mem.recall(QUESTIONS[1], tenant="t", strategy="distributed")
                )
                await asyncio.sleep(0.2)  # sent to a frozen worker by now
                here = await asyncio.wait_for(
                    mem.recall(QUESTIONS[2], tenant="t", strategy="sequential"), 20.0
                )
                assert here.hits and not pooled.done()
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            assert (await pooled).hits

    asyncio.run(run())
