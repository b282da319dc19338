"""A recall's plan before anything runs: its query type, the layers asked for, the query over
the layers to run (the dependency graph may narrow an adaptive one), and its cache key.

Kept per query object while the graph's layer choices stand, because a cache hit pays for
the plan on every repeat.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

from athena.execution.cache import ResultCache
from athena.planning.analysis import classify
from athena.planning.dependency_graph import DependencyGraph
from athena.records import LAYERS, RecallQuery

PLANS_KEPT: Final = 4096  # plans of recent query objects, per kind (adaptive or not)

# A query object's plan: its type, the layers asked, the query to run, its full cache key;
# kept beside the query it was made for, its type's layer-choice version cell and the
# version it was made at.
Made = tuple[str, tuple[str, ...], RecallQuery, Hashable]
Plan = tuple[RecallQuery, list[int], int, Made]


class RecallPlans:
    """Plans recalls for one engine (its graph, cache and embedder's model name).

    >>> from athena.records import make_query
    >>> plans = RecallPlans(DependencyGraph(cores=2), ResultCache(), "static")
    >>> query = make_query("Where does Alice live?", "t", 5)
    >>> plans.plan(query, "sequential")[:2] == (classify(query.text), query.layers)
    True
    """

    def __init__(self, graph: DependencyGraph, cache: ResultCache, model: str) -> None:
        self.graph, self.cache, self.model = graph, cache, model
        self._plans: tuple[dict[int, Plan], dict[int, Plan]] = ({}, {})  # other, adaptive
        self._keys: dict[Hashable, Hashable] = {}  # full keys of recent plans, one object each

    def plan(self, query: RecallQuery, strategy: str) -> Made:
        """The query type, the layers asked for, the query over the layers to run, and its
        full cache key.

        Kept per query object (``Memory`` hands out one object per repeated plain request)
        while the dependency graph's layer choices stand: the adaptive arm's hit paid for
        the choice and the key on every repeat, 5-20% over the other caching arms' hit in
        run 16. The kept plan holds its query, so an id is never mistaken for another's.
        """
        adaptive = strategy == "adaptive"
        plans = self._plans[adaptive]
        plan = plans.get(id(query))
        if (
            plan is not None and plan[0] is query and (not adaptive or plan[1][0] == plan[2])
        ):  # only an adaptive plan reads the graph's layer choice
            return plan[3]
        query_type, asked, run = classify(query.text), query.layers, query
        cell = self.graph.choice_version(query_type)
        version = cell[0]  # read before the choice: a change meanwhile makes the plan stale
        if adaptive and asked == LAYERS:
            chosen = self.graph.select_layers(query_type, asked)
            if chosen != asked:
                run = narrowed(query, chosen)
        made = (query_type, asked, run, self._interned(self.cache.full_key(run, self.model)))
        if len(plans) >= PLANS_KEPT:
            plans.clear()
        plans[id(query)] = (query, cell, version, made)
        return made

    def _interned(self, key: Hashable) -> Hashable:
        """The one key object of its value. A plan made again (the graph's layer choice
        moved, or the kept plans were cleared) then finds its cache entry by identity: with
        an equal key of its own, each dictionary lookup compared two tuples element by
        element, and that plan's hits cost about 1 µs more (`benchmarks/arm_hits.py`, every
        arm taking turns: the adaptive arm's hit 1.13-1.16x the CACHE arm's, whose plans
        are never made again; 1.01-1.07x with the keys interned). Bounded: cleared past
        twice :data:`PLANS_KEPT`, when keys merely compare equal again.

        >>> plans = RecallPlans(DependencyGraph(cores=2), ResultCache(), "static")
        >>> first = plans._interned(("full", "static", "t", "hi"))
        >>> plans._interned(("full", "static", "t", "hi")) is first
        True
        """
        keys = self._keys
        kept = keys.get(key)
        if kept is not None:
            return kept
        if len(keys) >= PLANS_KEPT * 2:
            keys.clear()
        keys[key] = key
        return key


def narrowed(query: RecallQuery, layers: tuple[str, ...]) -> RecallQuery:
    """``query`` over ``layers`` only. Built once per kept plan, on a cold recall's path:
    directly, 1.1 µs, where ``dataclasses.replace`` walks the fields (2.6 µs).

    >>> from athena.records import make_query
    >>> narrowed(make_query("Hi", "t", 5), ("semantic",)).layers
    ('semantic',)
    """
    q = query
    return RecallQuery(q.text, q.tenant, q.k, layers, q.since, q.until, q.session, q.actor, q.kinds)
