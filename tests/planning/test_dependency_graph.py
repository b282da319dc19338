"""The dependency graph's remembered layer choices never go stale."""

from __future__ import annotations

from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from athena.planning import dependency_graph
from athena.planning.dependency_graph import DependencyGraph

LAYERS = ("episodic", "semantic", "procedural")
observation = st.tuples(
    st.sampled_from(["factual", "temporal"]),
    st.sets(st.sampled_from(LAYERS), min_size=1),
    st.sets(st.sampled_from(LAYERS)),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(observation, max_size=40))
def test_remembered_layer_choices_match_a_fresh_computation(
    observations: list[tuple[str, set[str], set[str], bool]],
) -> None:
    with mock.patch.object(dependency_graph, "MIN_OBSERVATIONS", 3):
        graph = DependencyGraph(cores=2)
        for query_type, used, contributed, hit in observations:
            graph.observe(query_type, dict.fromkeys(used, 1.0), contributed & used, hit, 5, 1.0)
            fresh = DependencyGraph(cores=2)
            fresh.load_json(graph.to_json())  # the same counts, nothing remembered
            for asked_type in ("factual", "temporal"):
                assert graph.select_layers(asked_type, LAYERS) == fresh.select_layers(
                    asked_type, LAYERS
                )


def test_a_layer_that_starts_contributing_is_searched_again() -> None:
    graph = DependencyGraph(cores=2)
    for _ in range(dependency_graph.MIN_OBSERVATIONS):
        graph.observe("factual", {"episodic": 1.0, "procedural": 1.0}, {"episodic"}, False, 5, 2.0)
    assert graph.select_layers("factual", ("episodic", "procedural")) == ("episodic",)
    graph.observe("factual", {"episodic": 1.0, "procedural": 1.0}, {"procedural"}, False, 5, 2.0)
    assert graph.select_layers("factual", ("episodic", "procedural")) == ("episodic", "procedural")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["factual", "temporal"]),
            st.booleans(),
            st.integers(0, 50),
            st.floats(0, 100),
        ),
        max_size=40,
    )
)
def test_a_hit_observed_on_its_own_path_counts_as_observe_counts_it(
    events: list[tuple[str, bool, int, float]],
) -> None:
    slow, fast = DependencyGraph(), DependencyGraph()
    for query_type, hit, size, ms in events:
        if hit:
            slow.observe(query_type, {}, set(), True, size, ms)
            fast.observe_hit(query_type, size, ms)
        else:
            for graph in (slow, fast):
                graph.observe(query_type, {"episodic": ms}, {"episodic"}, False, size, ms)
        asked = ("episodic", "semantic")
        assert fast.select_layers(query_type, asked) == slow.select_layers(query_type, asked)
    assert fast.snapshot() == slow.snapshot()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.permutations(LAYERS), st.integers(0, 3)), max_size=30), st.integers(0, 30)
)
def test_layers_used_together_are_counted_in_pairs_across_a_save(
    recalls: list[tuple[list[str], int]], saved_at: int
) -> None:
    """Layer sets counted as they come (in any order), told apart in pairs when saved: the
    same pairs as counting each pair on every recall, a reload between them included."""
    graph, expected = DependencyGraph(), {}
    for index, (order, drop) in enumerate(recalls):
        if index == saved_at:
            reloaded = DependencyGraph()
            reloaded.load_json(graph.to_json())
            graph = reloaded
        names = order[drop:]
        graph.observe("factual", dict.fromkeys(names, 1.0), set(names[:1]), False, 5, 1.0)
        ordered = sorted(names)
        for i, name in enumerate(ordered):
            for other in ordered[i + 1 :]:
                expected[f"{name}+{other}"] = expected.get(f"{name}+{other}", 0) + 1
    together = graph.snapshot()["types"].get("factual", {}).get("together", {})
    assert together == expected
