"""A full entry carries its recall's layer rankings and releases them when it is dropped.

A recall stores its hits and the layers it searched in one entry
(:meth:`ResultCache.put_recall`); the layers become entries of their own only when that entry
is found stale or expired (or loses its key), and until then are served from it. Driven
through the recall protocol (``get_full``, then on a miss ``get_layers``, then the fill),
such a cache must answer in full exactly when one filled entry by entry (``put_layers`` and
``put_full``) does, serve the same layers on a miss, and never serve a ranking that the
reader's generations or its layer's TTL rule out, whatever the writes, the clock and the
races between recalls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from athena import Memory
from athena.execution.cache import DEFAULT_TTLS, ResultCache
from athena.layers.protocol import LayerResult
from athena.records import LAYERS, Hit, RecallQuery, make_query

MODEL = "static-v1"
TENANTS = ("a", "b")
TEXTS = ("Where is the key?", "Who met Caroline")
# Each shape has its own k, so its own depth: one query's layer keys are its own (a layer
# ranking shared between two queries of one text is the one thing the two fillings differ
# in: see put_recall).
SHAPES = ((("episodic", "semantic"), 5), (("semantic", "graph"), 30), (LAYERS, 40))
TTLS = dict(DEFAULT_TTLS)  # every layer's, so the model knows each one
Ident = tuple[str, int, int]  # tenant, text, shape


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _hit(token: int, tenant: str) -> Hit:
    return Hit(token, "episodic", "m", 1.0, tenant, f"k{token}", "turn", None, None, None, 0, 0, ())


class Release(RuleBasedStateMachine):
    """The same recalls against both caches (the same rankings, numbered by recall)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.whole = ResultCache(clock=self.clock, ttl_seconds=TTLS)  # put_recall
        self.split = ResultCache(clock=self.clock, ttl_seconds=TTLS)  # put_layers + put_full
        self.gens: dict[str, dict[str, int]] = {t: {} for t in TENANTS}
        self.pending: list[tuple[Ident, dict[str, int]]] = []
        self.token = 0
        self.made: dict[int, tuple[Ident, dict[str, int], float]] = {}  # token: who, read, when

    def query(self, ident: Ident) -> tuple[RecallQuery, int]:
        tenant, text, shape = ident
        layers, k = SHAPES[shape]
        return make_query(TEXTS[text], tenant, k, layers), max(50, 2 * k)

    @rule(tenant=st.sampled_from(TENANTS), layer=st.sampled_from(LAYERS))
    def write(self, tenant: str, layer: str) -> None:
        self.gens[tenant] = {**self.gens[tenant], layer: self.gens[tenant].get(layer, 0) + 1}

    @rule(seconds=st.sampled_from([1.0, 29.0, 45.0, 100.0, 250.0]))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(tenant=st.sampled_from(TENANTS), text=st.integers(0, 1), shape=st.integers(0, 2))
    def start(self, tenant: str, text: int, shape: int) -> None:
        """A recall reads its tenant's generations before anything else."""
        self.pending = [*self.pending[-5:], ((tenant, text, shape), dict(self.gens[tenant]))]

    @precondition(lambda self: self.pending)
    @rule(pick=st.integers(0, 5))
    def finish(self, pick: int) -> None:
        ident, read = self.pending.pop(pick % len(self.pending))
        query, depth = self.query(ident)
        self.token += 1
        self.made[self.token] = (ident, read, self.clock.now)
        (kind, got), (split_kind, split_got) = (
            self._recall(cache, query, depth, read) for cache in (self.whole, self.split)
        )
        event(split_kind)
        assert (kind, set(got)) == (split_kind, set(split_got))
        if kind == "full":
            assert got == split_got
            return
        for layer, (token, source, age) in got.items():  # never stale, never another's
            who, when_read, made_at = self.made[token]
            assert who == ident and source == "cache" and age == self.clock.now - made_at
            assert age < TTLS[layer]
            if layer == "graph":
                assert when_read == read
            else:
                assert when_read.get(layer, 0) == read.get(layer, 0)

    def _recall(
        self, cache: ResultCache, query: RecallQuery, depth: int, read: dict[str, int]
    ) -> tuple[str, Any]:
        full = cache.get_full(query, MODEL, read)
        if full is not None:
            return "full", {hit.id: None for hit in full.value}
        cached = cache.get_layers(query, MODEL, depth, read)
        fresh = [
            (LayerResult(name, (self.token,), (1.0,), 2.0, read.get(name, 0)), 2.0)
            for name in query.layers
            if name not in cached
        ]
        hits = (_hit(self.token, query.tenant),)
        if cache is self.whole:
            cache.put_recall(query, MODEL, depth, fresh, read, hits, 4.0)
        else:
            cache.put_layers(query, MODEL, depth, fresh, read)
            cache.put_full(query, MODEL, read, hits, 4.0)
        served = {name: (c.value.ids[0], c.value.source, c.age_s) for name, c in cached.items()}
        return ("partial" if served else "miss"), served

    @invariant()
    def texts_are_counted_exactly(self) -> None:
        for cache in (self.whole, self.split):
            lru = cache._lru
            assert lru.texts == dict(Counter((key[2], key[3]) for key in lru.data))

    @invariant()
    def counted_alike(self) -> None:
        # (Dropped entries are counted apart: a stale layer the full entry still carried
        # was never stored, so never dropped.)
        assert self.whole.stats()["hits"] == self.split.stats()["hits"]


Release.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestRelease = Release.TestCase


def test_a_write_to_one_layer_leaves_the_others_served(memory: Memory) -> None:
    for i in range(6):
        memory.remember(f"Caroline went hiking in the Alps, trip {i}.", tenant="t")
        memory.remember(f"Caroline prefers mountain trails {i}.", tenant="t", layer="semantic")
    question = "Where did Caroline go hiking?"
    layers = ["episodic", "semantic"]
    first = memory.recall(question, tenant="t", layers=layers, explain=True)
    assert first.explain is not None and first.explain["cache"] == "miss"
    memory.remember("Caroline went hiking in Peru.", tenant="t")  # episodic only
    again = memory.recall(question, tenant="t", layers=layers, explain=True)
    assert again.explain is not None
    assert again.explain["cache"] == "partial" and again.explain["cached_layers"] == ["semantic"]
    fresh = memory.recall(question, tenant="t", layers=layers, strategy="sequential")
    assert again.hits == fresh.hits
    assert any("Peru" in hit.text for hit in again.hits)
