"""A ``Memory(layers=...)``'s own layers reach its worker processes: a DISTRIBUTED recall
searches with the same layers as the in-process strategies (real workers, a real file)."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from athena import Memory
from athena.errors import WorkerPoolUnavailable
from athena.execution.pool import ProcessWorkerPool
from athena.execution.pool_keeper import PoolKeeper, _replace
from athena.execution.worker_layers import layers_from, portable_layers
from athena.layers import EpisodicLayer, GraphLayer, MemoryLayer, default_layers
from athena.layers.protocol import LayerContext, SearchRequest
from athena.records import MemoryInput

QUESTIONS = ("who went hiking in the Alps?", "what did Zed cook?", "where does Maya swim?")


class ReversedEpisodic(EpisodicLayer):
    """The episodic ranking upside down: a layer whose answers no default layer gives."""

    def search(self, ctx: LayerContext, request: SearchRequest) -> list[tuple[int, float]]:
        return list(reversed(super().search(ctx, request)))


class WeightedGraph(GraphLayer):
    """A configured graph layer: its configuration must reach the workers, its names not."""

    def __init__(self, weight: float = 0.5) -> None:
        super().__init__()
        self.weight = weight


class LockedEpisodic(EpisodicLayer):
    """A layer that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def _fill(path: Path) -> None:
    people = ["Caroline", "Melanie", "Zed", "Maya", "Ravi", "Ines", "Tom", "Ada"]
    items = [
        MemoryInput(
            layer="episodic",
            text=f"{p} went hiking in the Alps, cooked pasta and swam in the lake, day {i}.",
            tenant="t",
            event_time=1_700_000_000.0 + 3600.0 * i,
        )
        for i, p in enumerate(people)
    ]
    items += [
        MemoryInput(layer="semantic", text=f"{p} likes hiking and pasta.", tenant="t")
        for p in people
    ]
    with Memory(path, pool="off") as mem:
        mem.remember_many(items)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("layers") / "athena.db"
    _fill(path)
    return path


def _ids(mem: Memory, question: str, strategy: str) -> tuple[list[int], dict[str, object]]:
    recall = mem.recall(question, tenant="t", k=8, strategy=strategy, explain=True)
    assert recall.explain is not None
    return [hit.id for hit in recall.hits], recall.explain


@pytest.fixture(
    params=[
        pytest.param(lambda: ReversedEpisodic(), id="a-layer-of-its-own"),
        pytest.param(lambda: EpisodicLayer(recency_weight=1.0), id="a-default-layer-configured"),
    ]
)
def custom(request: pytest.FixtureRequest, stored: Path) -> Iterator[Memory]:
    layers: dict[str, MemoryLayer] = {**default_layers(), "episodic": request.param()}
    with Memory(stored, layers=layers, pool="eager") as mem:
        yield mem


def test_a_distributed_recall_searches_with_the_memorys_own_layers(
    custom: Memory, stored: Path
) -> None:
    with Memory(stored, pool="off") as plain:
        defaults = [_ids(plain, q, "sequential")[0] for q in QUESTIONS]
    ours = [_ids(custom, q, "sequential")[0] for q in QUESTIONS]
    assert ours != defaults  # the layer changes the answers, so the check below can fail
    for question, expected in zip(QUESTIONS, ours, strict=True):
        ids, explain = _ids(custom, question, "distributed")
        assert explain["executed"] == "distributed", explain
        assert explain["fallback"] is None, explain
        assert ids == expected


def test_layers_that_cannot_be_sent_leave_distributed_recalls_in_process(stored: Path) -> None:
    layers: dict[str, MemoryLayer] = {**default_layers(), "episodic": LockedEpisodic()}
    with Memory(stored, layers=layers, pool="lazy") as mem:
        expected, _ = _ids(mem, QUESTIONS[0], "sequential")
        ids, explain = _ids(mem, QUESTIONS[0], "distributed")
        error = mem.execution_stats()["pool"]["error"]
    assert ids == expected
    assert explain["executed"] == "parallel"
    assert "cannot be sent to worker processes" in str(explain["fallback"])
    assert "cannot be sent to worker processes" in error


def test_a_pool_refuses_layers_it_cannot_send(stored: Path) -> None:
    with pytest.raises(WorkerPoolUnavailable, match="cannot pickle"):
        ProcessWorkerPool(stored, layers={"episodic": LockedEpisodic()})


def test_a_graph_layer_pickles_without_the_names_it_holds(stored: Path) -> None:
    graph = GraphLayer()
    with Memory(stored, layers={**default_layers(), "graph": graph}, pool="off") as mem:
        mem.recall("who is Zed?", tenant="t", strategy="sequential")
        assert graph._held  # it read the tenant's names
        copy = pickle.loads(pickle.dumps(graph))
    assert isinstance(copy, GraphLayer) and copy._held == {}


def test_a_configured_graph_layer_keeps_its_configuration_when_pickled() -> None:
    copy = pickle.loads(pickle.dumps(WeightedGraph(2.0)))
    assert isinstance(copy, WeightedGraph) and copy.weight == 2.0 and copy._held == {}


def test_no_layers_and_an_empty_mapping_both_mean_the_defaults(stored: Path) -> None:
    with Memory(stored, layers={}, pool="eager") as mem:
        expected, _ = _ids(mem, QUESTIONS[0], "sequential")
        ids, explain = _ids(mem, QUESTIONS[0], "distributed")
    assert explain["executed"] == "distributed" and explain["fallback"] is None, explain
    assert ids == expected


def test_the_workers_get_the_layers_as_the_memory_was_built(stored: Path) -> None:
    given: dict[str, MemoryLayer] = dict(default_layers())
    with Memory(stored, layers=given, pool="lazy") as mem:
        given["episodic"] = ReversedEpisodic()  # the caller's dict, changed afterwards
        expected, _ = _ids(mem, QUESTIONS[0], "sequential")
        ids, explain = _ids(mem, QUESTIONS[0], "distributed")
    assert explain["executed"] == "distributed", explain
    assert ids == expected


def test_a_rebuild_whose_factory_refuses_leaves_the_broken_pool(stored: Path) -> None:
    def refuse() -> ProcessWorkerPool:
        raise WorkerPoolUnavailable("the layers cannot be sent to worker processes")

    keeper = PoolKeeper(refuse)
    keeper._rebuilding = True
    broken = object()
    keeper.backend = broken  # type: ignore[assignment]
    _replace(keeper, broken)  # type: ignore[arg-type]
    assert keeper.backend is broken and not keeper._rebuilding


def test_the_default_layers_are_not_sent() -> None:
    assert portable_layers(None) is None
    assert list(layers_from(None)) == list(default_layers())
