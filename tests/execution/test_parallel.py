"""PARALLEL's fan-out: which layers the calling thread keeps, and what a failure or a spent
deadline does, over a real Memory's pipeline (its layer runs watched, not replaced)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from athena import Memory, RecallTimeout
from athena.execution.adaptive import AdaptiveEngine
from athena.execution.parallel import INLINE_MS, LEARN, UNSEEN_MS, ParallelExecutor, fan_out
from athena.execution.pipeline import Pipeline
from athena.layers.protocol import LayerResult, SearchRequest
from athena.planning.dependency_graph import DependencyGraph
from athena.records import LAYERS, MemoryInput, make_query

COSTS = {"episodic": 0.4, "semantic": 0.3, "graph": 0.2, "procedural": 0.003, "prospective": 0.002}


class Watched(Pipeline):
    """The memory's own pipeline, noting the thread each layer ran on; ``stall`` makes
    one layer sleep, ``fail`` one raise."""

    def __init__(self, inner: Pipeline) -> None:
        super().__init__(inner.layers, inner.ctx, inner.embedder, inner.diversify)
        self.threads: dict[str, str] = {}
        self.finished: set[str] = set()
        self.stall: tuple[str, float] | None = None
        self.fail: str | None = None

    def run(self, name: str, request: SearchRequest, source: str) -> LayerResult:
        self.threads[name] = threading.current_thread().name
        if self.stall and self.stall[0] == name:
            time.sleep(self.stall[1])
        if self.fail == name:
            raise RuntimeError(f"{name} failed")
        result = super().run(name, request, source)
        self.finished.add(name)
        return result


@pytest.fixture
def mem(memory: Memory) -> Memory:
    memory.remember("Alice moved to Lisbon in May.", tenant="t", layer="episodic")
    memory.remember("Alice lives in Lisbon.", tenant="t", layer="semantic")
    memory.remember("To renew a passport, book online.", tenant="t", layer="procedural")
    memory.remember("Call Alice on Friday.", tenant="t", layer="prospective")
    return memory


@pytest.fixture
def watched(mem: Memory) -> Iterator[tuple[Watched, SearchRequest]]:
    pipeline = Watched(mem.engine.pipeline)  # type: ignore[attr-defined]
    query = make_query("Where does Alice live?", "t", 10, LAYERS)
    request = pipeline.request(query, mem.generations.get("t"))
    yield pipeline, request


def test_fan_out_keeps_cheap_layers_and_balances_the_rest_in_one_task_per_core() -> None:
    tasks, inline = fan_out(LAYERS, COSTS.__getitem__)
    assert tasks == [["semantic", "graph"]]  # one hand-off: 0.5 ms against the caller's 0.4
    assert inline == ["episodic", "procedural", "prospective"]
    dominant = {**COSTS, "graph": 0.7}  # as long as episodic and semantic together
    assert fan_out(LAYERS, dominant.__getitem__) == (
        [["episodic", "semantic"]],
        ["graph", "procedural", "prospective"],
    )
    alone = {name: INLINE_MS / 2 for name in LAYERS}  # nothing worth a hand-off
    assert fan_out(LAYERS, alone.__getitem__)[0] == []
    assert fan_out(["graph"], dominant.__getitem__) == ([], ["graph"])  # one layer: no hop
    tasks, inline = fan_out(LAYERS, dominant.__getitem__, keep_costliest=False, slots=2)
    assert tasks == [["graph"], ["episodic", "semantic"]]  # a recall with a timeout
    assert inline == ["procedural", "prospective"]
    four = fan_out(LAYERS, COSTS.__getitem__, slots=3)[0]  # more cores: a layer each
    assert four == [["semantic"], ["graph"]]


@pytest.mark.parametrize("cores", [1, 2, 8])
def test_every_layer_is_searched_once_whatever_the_cores(
    watched: tuple[Watched, SearchRequest], cores: int
) -> None:
    pipeline, request = watched
    executor = ParallelExecutor(pipeline, 4, COSTS, cores=cores)
    try:
        got = executor.run(request, LAYERS)
        timed = executor.run(request, LAYERS, timeout=5.0)
    finally:
        executor.close()
    for name in LAYERS:
        alone = pipeline.run(name, request, "sequential").ids
        assert got[name].ids == alone and timed[name].ids == alone


def test_results_equal_each_layer_alone_in_the_order_asked(
    watched: tuple[Watched, SearchRequest],
) -> None:
    pipeline, request = watched
    executor = ParallelExecutor(pipeline, 2, COSTS, cores=2)
    try:
        got = executor.run(request, LAYERS)
    finally:
        executor.close()
    ran_on, caller = dict(pipeline.threads), threading.current_thread().name
    assert ran_on["procedural"] == caller and ran_on["prospective"] == caller
    assert ran_on["episodic"] == caller  # the costliest: the caller's share
    assert ran_on["semantic"] == ran_on["graph"] and ran_on["graph"].startswith("athena-reader")
    assert list(got) == list(LAYERS)
    for name in LAYERS:
        assert got[name].ids == pipeline.run(name, request, "sequential").ids


def test_expected_times_are_learnt_from_the_fan_outs(
    watched: tuple[Watched, SearchRequest],
) -> None:
    pipeline, request = watched
    executor = ParallelExecutor(pipeline, 2, {"graph": 5.0})
    try:
        assert executor.expected_ms("semantic") == UNSEEN_MS  # not run yet: handed off
        got = executor.run(request, LAYERS)
    finally:
        executor.close()
    assert executor.expected_ms("semantic") == got["semantic"].elapsed_ms
    assert executor.expected_ms("graph") == pytest.approx(
        5.0 + LEARN * (got["graph"].elapsed_ms - 5.0)
    )


def test_times_known_from_layers_run_alone_come_first(
    watched: tuple[Watched, SearchRequest],
) -> None:
    pipeline, request = watched
    alone = {"graph": 5.0}  # the dependency graph's: graph outlasts the others together
    executor = ParallelExecutor(pipeline, 2, COSTS, known=alone.get)
    try:
        assert executor.expected_ms("graph") == 5.0 and executor.expected_ms("semantic") == 0.3
        executor.run(request, LAYERS)
    finally:
        executor.close()
    assert pipeline.threads["graph"] == threading.current_thread().name


def test_the_dominant_layer_runs_on_the_calling_thread(
    watched: tuple[Watched, SearchRequest],
) -> None:
    pipeline, request = watched
    executor = ParallelExecutor(pipeline, 2, {**COSTS, "graph": 5.0})
    try:
        executor.run(request, LAYERS)
    finally:
        executor.close()
    assert pipeline.threads["graph"] == threading.current_thread().name
    assert pipeline.threads["semantic"].startswith("athena-reader")


def test_a_search_that_built_an_index_teaches_nothing(mem: Memory) -> None:
    pipeline = Watched(mem.engine.pipeline)  # type: ignore[attr-defined]
    many = [MemoryInput("episodic", f"Note {i} about the garden.", "big") for i in range(300)]
    mem.remember_many(many)
    query = make_query("What about the garden?", "big", 10, ("episodic", "semantic"))
    request = pipeline.request(query, mem.generations.get("big"))
    executor = ParallelExecutor(pipeline, 2)
    try:
        first = executor.run(request, query.layers)  # the tenant's first: builds its index
        assert first["episodic"].loaded > 256
        assert executor.expected_ms("episodic") == UNSEEN_MS
        again = executor.run(request, query.layers)
    finally:
        executor.close()
    assert executor.expected_ms("episodic") == again["episodic"].elapsed_ms


@pytest.mark.parametrize("failing", ["procedural", "semantic"])  # the caller's, handed off
def test_a_failing_layer_fails_the_fan_out(
    watched: tuple[Watched, SearchRequest], failing: str
) -> None:
    pipeline, request = watched
    pipeline.fail = failing
    executor = ParallelExecutor(pipeline, 2, COSTS)
    try:
        with pytest.raises(RuntimeError, match=f"{failing} failed"):
            executor.run(request, LAYERS)
    finally:
        executor.close()


@pytest.mark.parametrize("stalled", ["graph", "semantic"])  # the critical path, another
def test_a_spent_deadline_is_a_recall_timeout_at_the_deadline(
    watched: tuple[Watched, SearchRequest], stalled: str
) -> None:
    pipeline, request = watched
    pipeline.stall = (stalled, 1.0)
    executor = ParallelExecutor(pipeline, 2, {**COSTS, "graph": 5.0})
    try:
        start = time.monotonic()
        with pytest.raises(RecallTimeout, match="deadline"):
            executor.run(request, LAYERS, timeout=0.05)
        assert time.monotonic() - start < 0.9  # the stalled layer was not waited for
        assert pipeline.threads["graph"].startswith("athena-reader")  # a timeout: handed
    finally:
        executor.close()


def test_close_waits_for_a_layer_still_running_after_a_timeout(
    watched: tuple[Watched, SearchRequest],
) -> None:
    pipeline, request = watched
    pipeline.stall = ("semantic", 0.3)
    executor = ParallelExecutor(pipeline, 2, COSTS)
    with pytest.raises(RecallTimeout):
        executor.run(request, LAYERS, timeout=0.05)
    assert "semantic" not in pipeline.finished
    executor.close()  # the store closes next: nothing may still be reading through it
    assert "semantic" in pipeline.finished


def test_the_engine_deals_shares_for_the_cores_its_graph_assumes(mem: Memory) -> None:
    inner = mem.engine  # type: ignore[attr-defined]
    engine = AdaptiveEngine(inner.pipeline, inner.store, graph=DependencyGraph(cores=7))
    try:
        assert engine.parallel._cores == 7  # not this machine's count
    finally:
        engine.parallel.close()
        engine.pools.close()
