"""A kept adaptive plan always runs the layers the dependency graph chooses now."""

from __future__ import annotations

from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from athena.execution.cache import ResultCache
from athena.execution.plans import RecallPlans
from athena.planning import dependency_graph
from athena.planning.analysis import classify
from athena.planning.dependency_graph import DependencyGraph
from athena.records import LAYERS, make_query

QUESTIONS = ("Where does Alice live?", "When did Bob move to Paris?", "How do I bake bread?")

event = st.one_of(
    st.tuples(
        st.just("observe"),
        st.sampled_from(QUESTIONS),
        st.sets(st.sampled_from(LAYERS), min_size=1),
        st.sets(st.sampled_from(LAYERS), max_size=1),  # few contribute: choices narrow
    ),
    st.tuples(st.just("hit"), st.sampled_from(QUESTIONS), st.just(set()), st.just(set())),
    st.tuples(st.just("load"), st.just(""), st.just(set()), st.just(set())),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(event, min_size=20, max_size=60))
def test_kept_adaptive_plans_follow_every_move_of_the_layer_choice(
    events: list[tuple[str, str, set[str], set[str]]],
) -> None:
    with mock.patch.object(dependency_graph, "MIN_OBSERVATIONS", 3):
        graph = DependencyGraph(cores=2)
        plans = RecallPlans(graph, ResultCache(), "static")
        queries = {text: make_query(text, "t", 5) for text in QUESTIONS}
        for what, text, used, contributed in events:
            if what == "observe":
                layer_ms = dict.fromkeys(used, 1.0)
                graph.observe(classify(text), layer_ms, contributed & used, False, 5, 1.0)
            elif what == "hit":
                graph.observe_hit(classify(text), 5, 0.02)
            elif what == "load":
                graph.load_json(graph.to_json())
            for query in queries.values():  # a kept plan against the choice made now
                query_type, asked, run, _ = plans.plan(query, "adaptive")
                assert asked == LAYERS
                assert run.layers == graph.select_layers(query_type, LAYERS)
                assert plans.plan(query, "hybrid")[2] is query  # a fixed strategy never narrows
