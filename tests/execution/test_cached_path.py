"""The inline cache-hit path (``Memory.recall_cached``, ``AsyncMemory.recall``): the same
hits as a full recall, never a stale one, the same errors for bad input, and no thread
hop for a hit on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from athena import AsyncMemory, Memory
from athena.embedding import Embedder
from athena.errors import InvalidInput, NotFound

QUESTION = "Where did Caroline go hiking?"


def _seed(memory: Memory) -> None:
    for i in range(12):
        memory.remember(f"Caroline went hiking in the Alps, trip {i}.", tenant="t")
        memory.remember(f"Melanie painted a lake at sunrise, picture {i}.", tenant="u")


@pytest.fixture
def seeded(memory: Memory) -> Iterator[Memory]:
    _seed(memory)
    yield memory


def test_a_hit_equals_the_recall_it_repeats(seeded: Memory) -> None:
    assert seeded.recall_cached(QUESTION, tenant="t") is None  # nothing cached yet
    first = seeded.recall(QUESTION, tenant="t", k=5)
    again = seeded.recall_cached(QUESTION, tenant="t", k=5, explain=True)
    assert again is not None and again.explain is not None
    assert again.hits == first.hits
    assert again.explain["cache"] == "hit" and again.explain["strategy"] == "cache"
    assert seeded.recall_cached(QUESTION, tenant="t", k=4) is None  # another key


def test_a_write_makes_the_entry_unservable(seeded: Memory) -> None:
    seeded.recall(QUESTION, tenant="t", k=5)
    seeded.recall(QUESTION, tenant="u", k=5)
    new = seeded.remember("Caroline went hiking on Mount Fuji.", tenant="t")
    assert seeded.recall_cached(QUESTION, tenant="t", k=5) is None
    assert seeded.recall_cached(QUESTION, tenant="u", k=5) is not None  # other tenant intact
    assert new in [hit.id for hit in seeded.recall(QUESTION, tenant="t", k=5).hits]


def test_forced_executing_strategies_never_read_the_cache(seeded: Memory) -> None:
    seeded.recall(QUESTION, tenant="t")
    for strategy in ("sequential", "parallel", "distributed"):
        assert seeded.recall_cached(QUESTION, tenant="t", strategy=strategy) is None
    assert seeded.recall_cached(QUESTION, tenant="t", strategy="cache") is not None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"k": 0}, InvalidInput),
        ({"timeout": 0}, InvalidInput),
        ({"layers": ["dreams"]}, InvalidInput),
        ({"tenant": "nobody"}, NotFound),
    ],
)
def test_bad_input_raises_as_recall_does(
    seeded: Memory, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    options = {"tenant": "t", **kwargs}
    with pytest.raises(error):
        seeded.recall(QUESTION, **options)
    with pytest.raises(error):
        seeded.recall_cached(QUESTION, **options)


async def test_async_hit_is_served_without_a_thread(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncMemory(tmp_path / "a.db", embedder=embedder, pool="off") as memory:
        _seed(memory.core)
        first = await memory.recall(QUESTION, tenant="t", k=5)  # a miss: on a thread

        def no_threads(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a cache hit took a thread")

        monkeypatch.setattr(asyncio, "to_thread", no_threads)
        again = await memory.recall(QUESTION, tenant="t", k=5)
        assert again.hits == first.hits
        monkeypatch.undo()
        await memory.remember("Caroline went hiking in Patagonia.", tenant="t")
        fresh = await memory.recall(QUESTION, tenant="t", k=5)  # stale entry: a new recall
        assert any("Patagonia" in hit.text for hit in fresh.hits)


def test_a_hit_over_fewer_layers_reuses_its_narrowed_query(
    seeded: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    engine: Any = seeded.engine
    narrowed = ("episodic", "semantic")
    monkeypatch.setattr(engine.graph, "select_layers", lambda query_type, layers: narrowed)
    first = seeded.recall(QUESTION, tenant="t", k=5, explain=True)
    again = seeded.recall(QUESTION, tenant="t", k=5, explain=True)
    assert first.explain is not None and again.explain is not None
    assert again.explain["cache"] == "hit" and again.hits == first.hits
    request = seeded._requests.make(QUESTION, "t", 5, None)
    made = engine.plans.plan(request, "adaptive")[2]
    assert made is engine.plans.plan(request, "adaptive")[2]  # kept: not built on every hit
    assert made == replace(request, layers=narrowed)


def test_a_narrowed_query_keeps_every_field_but_its_layers() -> None:
    from dataclasses import fields, replace

    from athena.execution.plans import narrowed
    from athena.records import RecallQuery, make_query

    names = [f.name for f in fields(RecallQuery)]  # a new field must be carried by narrowed
    assert names == ["text", "tenant", "k", "layers", "since", "until", "session", "actor", "kinds"]
    query = make_query("Who?", "t", 7, None, 1.0, 2.0, "s1", "bob", ["turn"])
    assert narrowed(query, ("graph",)) == replace(query, layers=("graph",))


def test_a_kept_plan_follows_the_graphs_layer_choice(
    seeded: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan of a repeated request is kept, and made again once the dependency graph's
    layer choices move: a hit never runs on a layer choice the graph has given up."""
    from athena.execution.cache_keys import full_key

    engine: Any = seeded.engine
    request = seeded._requests.make(QUESTION, "t", 5, None)
    plan = engine.plans.plan(request, "adaptive")
    assert plan[2] is request and plan[3] == full_key(request, engine.model)  # all layers
    chosen: list[tuple[str, ...]] = []

    def select(query_type: str, layers: tuple[str, ...]) -> tuple[str, ...]:
        chosen.append(layers)
        return ("episodic", "semantic")

    monkeypatch.setattr(engine.graph, "select_layers", select)
    assert engine.plans.plan(request, "adaptive") == plan  # kept: the graph did not move
    assert chosen == []
    with engine.graph._lock:
        engine.graph._forget_kept()  # as observe() does when a count crosses a threshold
    moved = engine.plans.plan(request, "adaptive")
    assert chosen and moved[2].layers == ("episodic", "semantic")
    assert moved[3] == full_key(moved[2], engine.model)
    assert engine.plans.plan(request, "cache")[2] is request  # only adaptive narrows
    other = seeded._requests.make("Who painted the lake?", "u", 5, None)
    assert engine.plans.plan(other, "adaptive")[2].text == "Who painted the lake?"
    seeded.recall(QUESTION, tenant="t", k=5)
    assert seeded.recall_cached(QUESTION, tenant="t", k=5) is not None  # the kept key hits


def test_a_kept_plan_is_made_again_only_when_its_own_types_choice_moves(
    seeded: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count crossing a threshold in another query type leaves a kept adaptive plan
    alone; one in its own type makes it again; a plan for a fixed strategy reads no layer
    choice and is kept through both."""
    from athena.planning.analysis import classify

    engine: Any = seeded.engine
    request = seeded._requests.make(QUESTION, "t", 5, None)
    own = classify(QUESTION)
    other = next(t for t in ("factual", "temporal", "procedural", "relational") if t != own)
    made: list[str] = []
    real = engine.graph.select_layers

    def select(query_type: str, layers: tuple[str, ...]) -> tuple[str, ...]:
        made.append(query_type)
        return real(query_type, layers)  # type: ignore[no-any-return]

    classified: list[str] = []

    def counting(text: str) -> str:
        classified.append(text)
        return classify(text)

    monkeypatch.setattr(engine.graph, "select_layers", select)
    monkeypatch.setattr("athena.execution.plans.classify", counting)
    engine.plans.plan(request, "adaptive")
    engine.plans.plan(request, "hybrid")
    assert made == [own] and len(classified) == 2
    with engine.graph._lock:
        engine.graph._forget_kept(other)
    engine.plans.plan(request, "adaptive")
    assert made == [own]  # kept: another type's choice moved
    with engine.graph._lock:
        engine.graph._forget_kept(own)
    engine.plans.plan(request, "adaptive")
    assert made == [own, own]  # made again: its own type's choice may have moved
    with engine.graph._lock:
        engine.graph._forget_kept()
    engine.plans.plan(request, "hybrid")
    assert len(classified) == 3  # the adaptive plan made again once; the hybrid one kept


def test_a_plan_made_while_the_graphs_choice_moves_is_not_kept(
    seeded: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan made while its type's layer choice moves (it read the version before the
    choice) is made again on the next repeat, and then kept."""
    from athena.planning.analysis import classify

    engine: Any = seeded.engine
    request = seeded._requests.make(QUESTION, "t", 5, None)
    real = engine.graph.select_layers
    made: list[str] = []

    def moving(query_type: str, layers: tuple[str, ...]) -> tuple[str, ...]:
        made.append(query_type)
        chosen = real(query_type, layers)
        if len(made) == 1:  # the counts cross a threshold right after this choice was read
            with engine.graph._lock:
                engine.graph._forget_kept(query_type)
        return chosen  # type: ignore[no-any-return]

    monkeypatch.setattr(engine.graph, "select_layers", moving)
    keys = [engine.plans.plan(request, "adaptive")[3] for _ in range(3)]
    assert made == [classify(QUESTION)] * 2  # made again once, then kept
    # The plan made again holds the very key object its cache entry was stored under (an
    # equal tuple of its own cost each hit an element-by-element comparison).
    assert keys[1] == keys[0] and keys[1] is keys[0] and keys[2] is keys[0]


def test_a_question_never_cached_is_not_planned_before_its_recall(
    seeded: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop's lookup of a new question stops at the cache's text index: planning
    it (its type read by regular expressions) is left to the recall on a thread."""
    plans = seeded.engine.plans  # type: ignore[attr-defined]
    made: list[str] = []
    plan = plans.plan

    def counted(query: Any, strategy: str) -> Any:
        made.append(query.text)
        return plan(query, strategy)

    monkeypatch.setattr(plans, "plan", counted)
    assert seeded.recall_cached(QUESTION, tenant="t") is None
    assert made == []
    first = seeded.recall(QUESTION, tenant="t")
    assert made == [QUESTION]
    again = seeded.recall_cached(" where did caroline go  hiking? ", tenant="t")
    assert again is not None and again.hits == first.hits
