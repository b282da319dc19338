"""The result cache: exact keys, generation and TTL validity, LRU bounds, single flight.

Time is a fake clock that the tests tick; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from athena.execution.cache import DEFAULT_TTLS, ResultCache
from athena.execution.cache_keys import CachedLayer, full_key, layer_key, normalize_text
from athena.layers.protocol import LayerResult
from athena.records import LAYERS, MAX_K, Hit, RecallQuery, check_layers, make_query

MODEL = "static-v1"


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def query(text: str = "where is the key?", tenant: str = "t1", **kw: Any) -> RecallQuery:
    return make_query(text, tenant, **kw)


def hit(memory_id: int, tenant: str = "t1", text: str = "memory") -> Hit:
    return Hit(
        memory_id,
        "episodic",
        text,
        1.0,
        tenant,
        f"k{memory_id}",
        "turn",
        None,
        None,
        None,
        0.0,
        0.0,
        (),
    )


def ranking(layer: str, ids: tuple[int, ...] = (1, 2, 3)) -> LayerResult:
    return LayerResult(layer, ids, tuple(1.0 / (i + 1) for i in range(len(ids))), 2.0, 1)


def cache_with_clock(**kw: Any) -> tuple[ResultCache, FakeClock]:
    clock = FakeClock()
    return ResultCache(clock=clock, **kw), clock


# --- full entries: generations, TTL, confidence --------------------------------------------


def test_full_entry_served_until_any_write_to_the_tenant() -> None:
    cache, _ = cache_with_clock()
    q = query(layers=["episodic"])
    gens = {"episodic": 1, "semantic": 1}
    cache.put_full(q, MODEL, gens, (hit(1),), cost_ms=9.0)
    served = cache.get_full(q, MODEL, gens)
    assert served is not None and served.value == (hit(1),) and served.cost_ms == 9.0
    # A write to a layer the query does not even search still makes the entry unservable.
    assert cache.get_full(q, MODEL, {"episodic": 1, "semantic": 2}) is None
    assert cache.stats()["stale_dropped"] == 1 and cache.stats()["entries"] == 0
    assert cache.get_full(q, MODEL, gens) is None  # dropped when seen, not just hidden
    assert cache.get_full(q, MODEL, {"episodic": 1}) is None  # a layer vanishing is a change


def test_generations_read_before_a_racing_write_never_serve_it() -> None:
    cache, _ = cache_with_clock()
    q = query()
    before = {"episodic": 4}  # read before the recall ran
    after = {"episodic": 5}  # a write committed while it ran
    cache.put_full(q, MODEL, before, (hit(1),), cost_ms=1.0)
    cache.put_layer(q, MODEL, 50, ranking("episodic"), before, cost_ms=1.0)
    assert cache.get_full(q, MODEL, after) is None
    assert cache.get_layers(q, MODEL, 50, after) == {}


def test_an_entry_newer_than_the_reader_is_kept_but_not_served() -> None:
    cache, _ = cache_with_clock()
    q = query(layers=["semantic", "graph"])
    cache.put_full(q, MODEL, {"semantic": 2}, (hit(1),), cost_ms=1.0)
    cache.put_layer(q, MODEL, 50, ranking("semantic"), {"semantic": 2}, cost_ms=1.0)
    assert cache.get_full(q, MODEL, {"semantic": 1}) is None
    assert cache.get_layers(q, MODEL, 50, {"semantic": 1}) == {}
    assert cache.get_full(q, MODEL, {"semantic": 2}) is not None
    assert set(cache.get_layers(q, MODEL, 50, {"semantic": 2})) == {"semantic"}
    assert cache.stats()["stale_dropped"] == 0


def test_a_slow_older_recall_does_not_replace_a_newer_entry() -> None:
    cache, _ = cache_with_clock()
    q = query(layers=["semantic", "graph"])
    cache.put_full(q, MODEL, {"semantic": 2}, (hit(2),), cost_ms=1.0)
    cache.put_full(q, MODEL, {"semantic": 1}, (hit(1),), cost_ms=1.0)
    cache.put_layer(q, MODEL, 50, ranking("semantic", (2,)), {"semantic": 2}, cost_ms=1.0)
    cache.put_layer(q, MODEL, 50, ranking("semantic", (1,)), {"semantic": 1}, cost_ms=1.0)
    served = cache.get_full(q, MODEL, {"semantic": 2})
    assert served is not None and served.value == (hit(2),)
    assert cache.get_layers(q, MODEL, 50, {"semantic": 2})["semantic"].value.ids == (2,)


def test_full_ttl_is_the_shortest_ttl_of_its_layers() -> None:
    cache, clock = cache_with_clock()
    q = query(layers=["episodic", "procedural"])  # 60 s and 600 s
    cache.put_full(q, MODEL, {}, (hit(1),), cost_ms=1.0)
    clock.now = 1_000.0 + 59.999
    assert cache.get_full(q, MODEL, {}) is not None
    clock.now = 1_000.0 + 60.0
    assert cache.get_full(q, MODEL, {}) is None
    assert cache.stats()["expired_dropped"] == 1 and cache.stats()["entries"] == 0


@pytest.mark.parametrize("layer", LAYERS)
def test_per_layer_ttl(layer: str) -> None:
    cache, clock = cache_with_clock()
    q = query()
    gens = {name: 1 for name in LAYERS}
    for name in LAYERS:
        cache.put_layer(q, MODEL, 50, ranking(name), gens, cost_ms=1.0)
    clock.now = 1_000.0 + DEFAULT_TTLS[layer] - 0.01
    assert layer in cache.get_layers(q, MODEL, 50, gens)
    clock.now = 1_000.0 + DEFAULT_TTLS[layer]
    left = cache.get_layers(q, MODEL, 50, gens)
    assert layer not in left
    assert set(left) == {name for name in LAYERS if DEFAULT_TTLS[name] > DEFAULT_TTLS[layer]}


def test_ttls_reflect_volatility() -> None:
    ttl = DEFAULT_TTLS
    assert ttl["prospective"] < ttl["episodic"] < ttl["graph"] < ttl["semantic"]
    assert ttl["semantic"] < ttl["procedural"]


def test_custom_ttls_override_defaults_and_zero_disables() -> None:
    cache, clock = cache_with_clock(ttl_seconds={"episodic": 5.0, "semantic": 0.0})
    q = query(layers=["episodic", "procedural", "semantic"])
    gens = {"episodic": 1}
    cache.put_layer(q, MODEL, 50, ranking("episodic"), gens, cost_ms=1.0)
    cache.put_layer(q, MODEL, 50, ranking("procedural"), gens, cost_ms=1.0)
    cache.put_layer(q, MODEL, 50, ranking("semantic"), gens, cost_ms=1.0)
    cache.put_full(q, MODEL, gens, (), cost_ms=1.0)  # its min TTL is 0: not stored
    assert set(cache.get_layers(q, MODEL, 50, gens)) == {"episodic", "procedural"}
    assert cache.get_full(q, MODEL, gens) is None
    clock.tick(5.0)
    assert set(cache.get_layers(q, MODEL, 50, gens)) == {"procedural"}


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ResultCache(max_entries=-1)
    with pytest.raises(ValueError):
        ResultCache(ttl_seconds={"episodic": float("nan")})
    with pytest.raises(ValueError):
        ResultCache(ttl_seconds={"episodic": -1.0})


def test_confidence_halves_every_half_ttl() -> None:
    cache, clock = cache_with_clock()
    q = query(layers=["semantic"])  # 300 s: half-life 150 s
    cache.put_full(q, MODEL, {}, (hit(1),), cost_ms=1.0)
    cache.put_layer(q, MODEL, 50, ranking("semantic"), {}, cost_ms=1.0)
    for age, confidence in ((0.0, 1.0), (75.0, 0.5**0.5), (150.0, 0.5), (225.0, 0.5**1.5)):
        clock.now = 1_000.0 + age
        full = cache.get_full(q, MODEL, {})
        layer = cache.get_layers(q, MODEL, 50, {})["semantic"]
        assert full is not None
        assert full.age_s == pytest.approx(age) and layer.age_s == pytest.approx(age)
        assert full.confidence == pytest.approx(confidence)
        assert layer.confidence == pytest.approx(confidence)


def test_served_layers_are_marked_as_cached() -> None:
    cache, _ = cache_with_clock()
    q = query(layers=["semantic"])
    cache.put_layer(q, MODEL, 50, ranking("semantic"), {}, cost_ms=4.0)
    served = cache.get_layers(q, MODEL, 50, {})["semantic"]
    assert served.value.source == "cache" and served.value.ids == (1, 2, 3)
    assert served.cost_ms == 4.0


@settings(max_examples=60, deadline=None)
@given(
    layers=st.lists(st.sampled_from(LAYERS), min_size=1, max_size=5, unique=True),
    gens=st.dictionaries(st.sampled_from(LAYERS), st.integers(1, 5)),
    zero=st.sets(st.sampled_from(LAYERS)),
)
def test_put_layers_stores_what_one_put_layer_per_layer_stores(
    layers: list[str], gens: dict[str, int], zero: set[str]
) -> None:
    ttls = {layer: 0.0 for layer in zero}
    one, _ = cache_with_clock(ttl_seconds=ttls)
    batch, _ = cache_with_clock(ttl_seconds=ttls)
    q = query(layers=layers)
    results = [ranking(layer, (len(layer), 7)) for layer in layers]
    for result in results:
        one.put_layer(q, MODEL, 50, result, gens, cost_ms=3.0)
    batch.put_layers(q, MODEL, 50, [(r, 3.0) for r in results], gens)
    for probe in (gens, {**gens, "graph": gens.get("graph", 0) + 1}, {}):
        a, b = one.get_layers(q, MODEL, 50, probe), batch.get_layers(q, MODEL, 50, probe)
        assert a == b
        assert set(a) <= set(layers) - zero
    assert one.stats()["bytes"] == batch.stats()["bytes"]
    foreign = [name for name in LAYERS if name not in layers]
    if foreign:  # a foreign layer refuses the whole batch: nothing of it is stored
        fresh, _ = cache_with_clock()
        with pytest.raises(ValueError):
            fresh.put_layers(q, MODEL, 50, [(results[0], 1.0), (ranking(foreign[0]), 1.0)], gens)
        assert fresh.stats()["entries"] == 0


def test_puts_refuse_other_tenants_and_foreign_layers() -> None:
    cache, _ = cache_with_clock()
    q = query(tenant="t1", layers=["semantic"])
    with pytest.raises(ValueError):
        cache.put_full(q, MODEL, {}, (hit(1, tenant="t2"),), cost_ms=1.0)
    with pytest.raises(ValueError):
        cache.put_layer(q, MODEL, 50, ranking("episodic"), {}, cost_ms=1.0)


# --- the graph layer depends on every layer's writes ---------------------------------------


def test_graph_entry_needs_the_whole_mapping_other_layers_only_their_own() -> None:
    cache, _ = cache_with_clock()
    q = query(layers=["episodic", "semantic", "graph"])
    gens = {"episodic": 3, "semantic": 2, "graph": 1}
    for layer in q.layers:
        cache.put_layer(q, MODEL, 50, ranking(layer), gens, cost_ms=1.0)
    assert set(cache.get_layers(q, MODEL, 50, gens)) == {"episodic", "semantic", "graph"}
    moved = {**gens, "episodic": 4}
    assert set(cache.get_layers(q, MODEL, 50, moved)) == {"semantic"}
    assert cache.stats()["stale_dropped"] == 2 and cache.stats()["entries"] == 1
    # A layer the tenant had never written appearing also changes the graph's answers.
    cache.put_layer(q, MODEL, 50, ranking("graph"), moved, cost_ms=1.0)
    assert "graph" not in cache.get_layers(q, MODEL, 50, {**moved, "procedural": 1})


# --- availability --------------------------------------------------------------------------


def test_availability_values() -> None:
    cache, clock = cache_with_clock()
    q = query()  # all five layers
    gens = {name: 1 for name in LAYERS}
    assert cache.availability(q, MODEL, 50, gens) == 0.0
    cache.put_layer(q, MODEL, 50, ranking("semantic"), gens, cost_ms=1.0)
    cache.put_layer(q, MODEL, 50, ranking("graph"), gens, cost_ms=1.0)
    assert cache.availability(q, MODEL, 50, gens) == pytest.approx(0.4)
    assert cache.availability(q, MODEL, 100, gens) == 0.0  # another depth
    cache.put_full(q, MODEL, gens, (hit(1),), cost_ms=1.0)
    assert cache.availability(q, MODEL, 50, gens) == 1.0
    clock.tick(DEFAULT_TTLS["prospective"])  # the full entry's TTL (its shortest layer's)
    assert cache.availability(q, MODEL, 50, gens) == pytest.approx(0.4)
    # A reader that saw an episodic write: the graph entry is stale for good, and dropped.
    assert cache.availability(q, MODEL, 50, {**gens, "episodic": 2}) == pytest.approx(0.2)
    assert cache.availability(q, MODEL, 50, gens) == pytest.approx(0.2)
    stats = cache.stats()
    assert stats["hits"] == stats["partial_hits"] == stats["misses"] == 0


def test_availability_does_not_touch_recency() -> None:
    cache, _ = cache_with_clock(max_entries=2)
    a, b, c = query("a", layers=["semantic"]), query("b", layers=["semantic"]), query("c")
    cache.put_full(a, MODEL, {}, (), cost_ms=1.0)
    cache.put_full(b, MODEL, {}, (), cost_ms=1.0)
    assert cache.availability(a, MODEL, 50, {}) == 1.0
    cache.put_full(c, MODEL, {}, (), cost_ms=1.0)  # evicts a: availability did not touch it
    assert cache.availability(a, MODEL, 50, {}) == 0.0
    assert cache.availability(b, MODEL, 50, {}) == 1.0


# --- LRU bounds ----------------------------------------------------------------------------


def test_lru_eviction_by_count() -> None:
    cache, _ = cache_with_clock(max_entries=3)
    qs = [query(f"question {i}", layers=["semantic"]) for i in range(4)]
    for q in qs[:3]:
        cache.put_full(q, MODEL, {}, (hit(1),), cost_ms=1.0)
    assert cache.get_full(qs[0], MODEL, {}) is not None  # qs[1] is now the oldest
    cache.put_full(qs[3], MODEL, {}, (hit(1),), cost_ms=1.0)
    assert cache.get_full(qs[1], MODEL, {}) is None
    assert all(cache.get_full(q, MODEL, {}) is not None for q in (qs[0], qs[2], qs[3]))
    stats = cache.stats()
    assert stats["entries"] == 3 and stats["evictions"] == 1
    assert cache._lru.texts == {("t1", f"question {i}"): 1 for i in (0, 2, 3)}  # evicted: gone


def test_lru_eviction_by_bytes() -> None:
    probe, _ = cache_with_clock()
    qs = [query(f"question {i}", layers=["semantic"]) for i in range(4)]
    probe.put_layer(qs[0], MODEL, 50, ranking("semantic", tuple(range(100))), {}, cost_ms=1.0)
    size = int(probe.stats()["bytes"])
    assert size > 1600  # 100 ids and 100 scores at 8 bytes each, plus overhead

    cache, _ = cache_with_clock(max_bytes=2 * size + size // 2)
    for q in qs:
        cache.put_layer(q, MODEL, 50, ranking("semantic", tuple(range(100))), {}, cost_ms=1.0)
    stats = cache.stats()
    assert stats["entries"] == 2 and stats["bytes"] == 2 * size and stats["evictions"] == 2
    assert cache._lru.texts == {("t1", "question 2"): 1, ("t1", "question 3"): 1}
    assert [bool(cache.get_layers(q, MODEL, 50, {})) for q in qs] == [False, False, True, True]


def test_replacing_an_entry_keeps_byte_count_exact_and_oversized_entries_are_skipped() -> None:
    cache, _ = cache_with_clock(max_bytes=5_000)
    q = query(layers=["semantic"])
    cache.put_full(q, MODEL, {}, (hit(1, text="x" * 100),), cost_ms=1.0)
    cache.put_full(q, MODEL, {}, (hit(1, text="x" * 10),), cost_ms=1.0)
    small = cache.stats()["bytes"]
    cache.clear()
    cache.put_full(q, MODEL, {}, (hit(1, text="x" * 10),), cost_ms=1.0)
    assert cache.stats()["bytes"] == small and cache.stats()["entries"] == 1
    cache.put_full(query("other", layers=["semantic"]), MODEL, {}, (hit(2, text="y" * 9_000),), 1.0)
    assert cache.stats()["entries"] == 1 and cache.stats()["evictions"] == 0


def test_invalidate_tenant_and_clear() -> None:
    cache, _ = cache_with_clock()
    for tenant in ("t1", "t2"):
        q = query(tenant=tenant, layers=["semantic"])
        cache.put_full(q, MODEL, {}, (hit(1, tenant=tenant),), cost_ms=1.0)
        cache.put_layer(q, MODEL, 50, ranking("semantic"), {}, cost_ms=1.0)
    assert cache.invalidate_tenant("t1") == 2
    assert cache.get_full(query(tenant="t1", layers=["semantic"]), MODEL, {}) is None
    assert cache.get_full(query(tenant="t2", layers=["semantic"]), MODEL, {}) is not None
    cache.clear()
    assert cache.stats()["entries"] == 0 and cache.stats()["hits"] == 0


# --- keys ----------------------------------------------------------------------------------

texts = st.text(min_size=1, max_size=30)
names = st.none() | st.text(min_size=1, max_size=6)
bounds = st.none() | st.floats(allow_nan=False, width=32)
kind_sets = st.none() | st.lists(
    st.text(min_size=1, max_size=4), min_size=1, max_size=3, unique=True
).map(lambda xs: tuple(sorted(xs)))
layer_sets = st.lists(st.sampled_from(LAYERS), min_size=1, unique=True).map(check_layers)
queries = st.builds(
    RecallQuery,
    text=texts,
    tenant=st.text(min_size=1, max_size=6),
    k=st.integers(1, MAX_K),
    layers=layer_sets,
    since=bounds,
    until=bounds,
    session=names,
    actor=names,
    kinds=kind_sets,
)
models = st.sampled_from(["static-v1", "static-v2", "minilm-l6"])
FIELDS = {
    "text": texts,
    "tenant": st.text(min_size=1, max_size=6),
    "k": st.integers(1, MAX_K),
    "layers": layer_sets,
    "since": bounds,
    "until": bounds,
    "session": names,
    "actor": names,
    "kinds": kind_sets,
}


def identity(q: RecallQuery, model: str) -> tuple[Any, ...]:
    return (model, q.tenant, normalize_text(q.text), q.layers, q.k, q.filters())


@given(queries, models, queries, models)
def test_full_keys_are_equal_exactly_when_every_input_is(
    q1: RecallQuery, m1: str, q2: RecallQuery, m2: str
) -> None:
    assert (full_key(q1, m1) == full_key(q2, m2)) == (identity(q1, m1) == identity(q2, m2))
    one_layer: object = layer_key(q1, m1, "semantic", 50)
    assert one_layer != full_key(q2, m2)


@given(queries, models, st.data())
def test_changing_any_one_field_changes_the_keys(q: RecallQuery, model: str, data: Any) -> None:
    name = data.draw(st.sampled_from([*FIELDS, "model"]))
    if name == "model":
        other_model = data.draw(models.filter(lambda m: m != model))
        assert full_key(q, model) != full_key(q, other_model)
        assert layer_key(q, model, "graph", 50) != layer_key(q, other_model, "graph", 50)
        return
    old = getattr(q, name)
    new = data.draw(FIELDS[name])
    if name == "text":
        assume(normalize_text(new) != normalize_text(old))
    assume(new != old)
    changed = RecallQuery(**{**{f: getattr(q, f) for f in FIELDS}, name: new})
    assert full_key(q, model) != full_key(changed, model)
    if name not in ("k", "layers"):  # a layer's ranking does not depend on k or the others
        assert layer_key(q, model, "graph", 50) != layer_key(changed, model, "graph", 50)


@given(queries, models, queries, models)
@settings(max_examples=50)
def test_the_cache_serves_an_entry_only_for_its_own_key(
    q1: RecallQuery, m1: str, q2: RecallQuery, m2: str
) -> None:
    cache = ResultCache(clock=FakeClock())
    cache.put_full(q1, m1, {}, (hit(7, tenant=q1.tenant),), cost_ms=1.0)
    cache.put_layer(q1, m1, 50, ranking(q1.layers[0]), {}, cost_ms=1.0)
    same = identity(q1, m1) == identity(q2, m2)
    assert (cache.get_full(q2, m2, {}) is not None) == same
    same_layer = (m1, q1.tenant, normalize_text(q1.text), q1.filters()) == (
        m2,
        q2.tenant,
        normalize_text(q2.text),
        q2.filters(),
    )
    assert (q1.layers[0] in cache.get_layers(q2, m2, 50, {})) == (
        same_layer and q1.layers[0] in q2.layers
    )


@given(queries, models, queries, models)
@settings(max_examples=50)
def test_may_hold_is_false_only_where_no_lookup_can_hit(
    q1: RecallQuery, m1: str, q2: RecallQuery, m2: str
) -> None:
    """``may_hold`` lets the event loop skip planning a question: it must never say no
    where a full or a layer lookup would hit."""
    cache = ResultCache(clock=FakeClock())
    assert not cache.may_hold(q1)
    cache.put_full(q1, m1, {}, (hit(7, tenant=q1.tenant),), cost_ms=1.0)
    cache.put_layer(q1, m1, 50, ranking(q1.layers[0]), {}, cost_ms=1.0)
    same_text = (q1.tenant, normalize_text(q1.text)) == (q2.tenant, normalize_text(q2.text))
    assert cache.may_hold(q2) == same_text
    if not same_text:
        assert cache.get_full(q2, m2, {}) is None and not cache.get_layers(q2, m2, 50, {})
    cache.clear()
    assert not cache.may_hold(q1)


def test_may_hold_forgets_a_text_once_its_last_entry_is_evicted() -> None:
    cache = ResultCache(max_entries=1, clock=FakeClock())
    first, second = make_query("Where is the key?", "t1"), make_query("Who has it?", "t1")
    cache.put_full(first, "m", {}, (hit(1),), cost_ms=1.0)
    assert cache.may_hold(make_query("  where IS the key? ", "t1"))
    assert not cache.may_hold(make_query("Where is the key?", "t2"))
    cache.put_full(second, "m", {}, (hit(2),), cost_ms=1.0)  # evicts the first
    assert not cache.may_hold(first) and cache.may_hold(second)


# Texts whose every case and unicode spelling must normalise alike (no Turkish dotless i
# and the like, whose case mappings are not round trips).
words = st.text(alphabet="abcXYZ019?!'éüßÅﬁＫ①\u0301\u212b", min_size=1, max_size=6)


FORMS: tuple[Literal["NFC", "NFD", "NFKC", "NFKD"], ...] = ("NFC", "NFD", "NFKC", "NFKD")


@st.composite
def spellings(draw: st.DrawFn, parts: list[str]) -> str:
    """The same ASCII words with other case and ASCII spacing."""
    cased = [draw(st.sampled_from([w, w.upper(), w.lower(), w.title()])) for w in parts]
    gaps = [draw(st.sampled_from([" ", "  ", "\t", "\n "])) for _ in parts]
    joined = "".join(w + g for w, g in zip(cased, gaps, strict=True))
    return draw(st.sampled_from(["", " ", "\t"])) + joined


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_normalisation_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip() and "  " not in once


ascii_words = st.text(alphabet="abcXYZ019?!'", min_size=1, max_size=6)


@given(st.lists(ascii_words, min_size=1, max_size=5), st.data())
def test_differently_spelled_texts_share_a_key(parts: list[str], data: Any) -> None:
    a, b = " ".join(parts), data.draw(spellings(parts))
    assert normalize_text(a) == normalize_text(b)
    assert full_key(query(a), MODEL) == full_key(query(b), MODEL)
    assert layer_key(query(a), MODEL, "graph", 50) == layer_key(query(b), MODEL, "graph", 50)


def test_normalised_spellings_examples() -> None:
    base = full_key(query("where is the key?"), MODEL)
    assert full_key(query("  WHERE is\tthe   Key? "), MODEL) == base
    # Folds the embedders' tokenizers would not make stay apart (they could embed apart).
    assert full_key(query("Ｗｈｅｒｅ ｉｓ ｔｈｅ ｋｅｙ？"), MODEL) != base
    assert full_key(query("STRASSE"), MODEL) != full_key(query("straße"), MODEL)
    assert full_key(query("cafe\u0301"), MODEL) != full_key(query("café"), MODEL)


# --- generated interleavings: never stale, never another tenant's, always when valid -------

TENANTS = ("a", "b", "c")
TEXTS = (("Where is the key?", " where IS the   key? "), ("Who met Caroline", "who met caroline"))
SHAPES = (("episodic", "semantic"), ("semantic", "graph"), LAYERS)
TTLS = {
    "prospective": 30.0,
    "episodic": 60.0,
    "graph": 120.0,
    "semantic": 300.0,
    "procedural": 600.0,
}
Ident = tuple[str, int, int, int, str | None]  # tenant, text, shape, k, session
query_idents = st.tuples(
    st.sampled_from(TENANTS),
    st.integers(0, 1),
    st.integers(0, 2),
    st.sampled_from([5, 10]),
    st.sampled_from([None, "s1"]),
)


@dataclass
class Modelled:
    token: int
    version: int  # position of what it read in the tenant's (or layer's) write history
    snapshot: dict[str, int]
    stamp: float


class Interleavings(RuleBasedStateMachine):
    """Puts, gets and writes over several tenants; the model says what must be served."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.cache = ResultCache(clock=self.clock, ttl_seconds=TTLS)
        self.gens: dict[str, dict[str, int]] = {t: {} for t in TENANTS}
        self.writes = dict.fromkeys(TENANTS, 0)
        self.full: dict[Ident, Modelled] = {}
        self.layers: dict[tuple[Ident, str], Modelled] = {}
        self.owner: dict[int, tuple[str, Ident]] = {}  # token -> (kind, ident)
        self.pending: list[tuple[Ident, int, dict[str, int], int]] = []
        self.tokens = 0
        self.hits = 0

    def make(self, ident: Ident, spelling: int) -> RecallQuery:
        tenant, text, shape, k, session = ident
        return make_query(TEXTS[text][spelling], tenant, k, SHAPES[shape], session=session)

    def depth(self, ident: Ident) -> int:
        return 10 * ident[3]

    def valid(self, entry: Modelled | None, tenant: str, layer: str | None, ttl: float) -> bool:
        if entry is None or self.clock.now - entry.stamp >= ttl:
            return False
        current = self.gens[tenant]
        if layer is None or layer == "graph":
            return entry.snapshot == current
        return entry.snapshot.get(layer, 0) == current.get(layer, 0)

    @rule(tenant=st.sampled_from(TENANTS), layer=st.sampled_from(LAYERS))
    def write(self, tenant: str, layer: str) -> None:
        self.gens[tenant] = {**self.gens[tenant], layer: self.gens[tenant].get(layer, 0) + 1}
        self.writes[tenant] += 1

    @rule(seconds=st.sampled_from([0.5, 1.0, 10.0, 29.0, 45.0, 100.0, 250.0]))
    def tick(self, seconds: float) -> None:
        self.clock.tick(seconds)

    started = Bundle("started")

    @rule(target=started, ident=query_idents)
    def start_recall(self, ident: Ident) -> Ident:
        """A recall reads its tenant's generations before it runs."""
        self.tokens += 1
        snapshot = dict(self.gens[ident[0]])
        self.pending = [*self.pending[-7:], (ident, self.tokens, snapshot, self.writes[ident[0]])]
        return ident

    @precondition(lambda self: self.pending)
    @rule(pick=st.integers(0, 7), spelling=st.integers(0, 1))
    def finish_full(self, pick: int, spelling: int) -> None:
        ident, token, snapshot, version = self.pending.pop(pick % len(self.pending))
        q = self.make(ident, spelling)
        self.owner[token] = ("full", ident)
        self.cache.put_full(q, MODEL, snapshot, (hit(token, tenant=ident[0]),), cost_ms=3.0)
        old = self.full.get(ident)
        if old is None or old.version <= version:
            self.full[ident] = Modelled(token, version, snapshot, self.clock.now)

    @precondition(lambda self: self.pending)
    @rule(pick=st.integers(0, 7), which=st.integers(0, 4), spelling=st.integers(0, 1))
    def finish_layer(self, pick: int, which: int, spelling: int) -> None:
        ident, _, snapshot, writes = self.pending[pick % len(self.pending)]
        q = self.make(ident, spelling)
        layer = q.layers[which % len(q.layers)]
        self.tokens += 1
        self.owner[self.tokens] = (layer, ident)
        result = ranking(layer, (self.tokens,))
        self.cache.put_layer(q, MODEL, self.depth(ident), result, snapshot, cost_ms=2.0)
        version = writes if layer == "graph" else snapshot.get(layer, 0)
        key = self.layer_key(ident, layer)
        old = self.layers.get(key)
        if old is None or old.version <= version:
            self.layers[key] = Modelled(self.tokens, version, snapshot, self.clock.now)

    def layer_key(self, ident: Ident, layer: str) -> tuple[Ident, str]:
        """A layer's ranking is keyed by depth, not by k or the query's other layers."""
        return ((ident[0], ident[1], 0, self.depth(ident), ident[4]), layer)

    def expected_full(self, ident: Ident) -> int | None:
        entry = self.full.get(ident)
        ttl = min(TTLS[layer] for layer in SHAPES[ident[2]])
        return entry.token if entry and self.valid(entry, ident[0], None, ttl) else None

    def expected_layers(self, ident: Ident) -> dict[str, int]:
        out = {}
        for layer in SHAPES[ident[2]]:
            entry = self.layers.get(self.layer_key(ident, layer))
            if entry and self.valid(entry, ident[0], layer, TTLS[layer]):
                out[layer] = entry.token
        return out

    @rule(ident=started, spelling=st.integers(0, 1))
    def get_full(self, ident: Ident, spelling: int) -> None:
        served = self.cache.get_full(self.make(ident, spelling), MODEL, self.gens[ident[0]])
        expected = self.expected_full(ident)
        event("full served" if served else "full not served")
        if served is None:
            assert expected is None
            return
        self.hits += 1
        (got,) = served.value
        assert got.tenant == ident[0] and self.owner[got.id] == ("full", ident)
        assert got.id == expected
        assert served.age_s == self.clock.now - self.full[ident].stamp

    @rule(ident=started, spelling=st.integers(0, 1))
    def get_layers(self, ident: Ident, spelling: int) -> None:
        q = self.make(ident, spelling)
        served = self.cache.get_layers(q, MODEL, self.depth(ident), self.gens[ident[0]])
        event(f"{len(served)} layers served")
        for layer, cached in served.items():
            owner_layer, owner_ident = self.owner[cached.value.ids[0]]
            assert owner_layer == layer and owner_ident[0] == ident[0]
            assert (owner_ident[1], owner_ident[4]) == (ident[1], ident[4])
        assert {layer: c.value.ids[0] for layer, c in served.items()} == self.expected_layers(ident)

    @rule(ident=started, spelling=st.integers(0, 1))
    def availability(self, ident: Ident, spelling: int) -> None:
        q = self.make(ident, spelling)
        got = self.cache.availability(q, MODEL, self.depth(ident), self.gens[ident[0]])
        if self.expected_full(ident) is not None:
            assert got == 1.0
        else:
            assert got == pytest.approx(len(self.expected_layers(ident)) / len(q.layers))

    @rule(tenant=st.sampled_from(TENANTS))
    def invalidate(self, tenant: str) -> None:
        self.cache.invalidate_tenant(tenant)
        self.full = {i: e for i, e in self.full.items() if i[0] != tenant}
        self.layers = {k: e for k, e in self.layers.items() if k[0][0] != tenant}

    @invariant()
    def hits_are_counted_exactly(self) -> None:
        assert self.cache.stats()["hits"] == self.hits

    @invariant()
    def texts_are_counted_exactly(self) -> None:
        lru = self.cache._lru
        assert lru.texts == dict(Counter((key[2], key[3]) for key in lru.data))


Interleavings.TestCase.settings = settings(max_examples=200, stateful_step_count=80, deadline=None)
TestInterleavings = Interleavings.TestCase


# --- stats ---------------------------------------------------------------------------------


def test_stats_count_exactly_one_outcome_per_recall() -> None:
    cache, _ = cache_with_clock()
    gens = {"episodic": 1, "semantic": 1, "graph": 1}
    full = query("full", layers=["episodic", "semantic", "graph"])
    part = query("part", layers=["episodic", "semantic", "graph"])
    none = query("none", layers=["episodic", "semantic", "graph"])
    cache.put_full(full, MODEL, gens, (hit(1),), cost_ms=10.0)
    cache.put_layer(part, MODEL, 50, ranking("episodic"), gens, cost_ms=2.0)
    cache.put_layer(part, MODEL, 50, ranking("graph"), gens, cost_ms=3.0)

    assert cache.lookup(full, MODEL, 50, gens).full is not None  # hit
    found = cache.lookup(part, MODEL, 50, gens)  # partial
    assert found.full is None and set(found.layers) == {"episodic", "graph"}
    assert cache.lookup(none, MODEL, 50, gens).layers == {}  # miss
    assert cache.get_full(none, MODEL, gens) is None  # the two-step protocol: a miss ...
    cache.record_partial(cache.get_layers(none, MODEL, 50, gens).values())
    assert cache.get_full(part, MODEL, gens) is None  # ... and a partial ...
    served: dict[str, CachedLayer] = cache.get_layers(part, MODEL, 50, gens)
    cache.record_partial([served["graph"]])  # ... of which the caller used one layer
    cache.record_miss()

    stats = cache.stats()
    assert (stats["hits"], stats["partial_hits"], stats["misses"]) == (1, 2, 3)
    assert stats["hit_rate"] == pytest.approx(1 / 6)
    assert stats["queries_avoided"] == 3 + 2 + 1
    assert stats["latency_saved_ms"] == pytest.approx(10.0 + 5.0 + 3.0)
    assert stats["entries"] == 3 and stats["bytes"] > 0
    assert stats["evictions"] == stats["stale_dropped"] == stats["expired_dropped"] == 0
    assert set(stats) >= {
        "hits",
        "partial_hits",
        "misses",
        "hit_rate",
        "entries",
        "bytes",
        "evictions",
        "stale_dropped",
        "queries_avoided",
        "latency_saved_ms",
    }


# --- single flight -------------------------------------------------------------------------


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        pause.wait(0.001)


def run_threads(
    cache: ResultCache, key: Any, fn: Any, count: int = 20
) -> tuple[list[threading.Thread], list[Any]]:
    outcomes: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = cache.single_flight(key, fn)
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, outcomes


def test_single_flight_shares_one_execution_among_threads() -> None:
    cache = ResultCache()
    key = cache.flight_key(query(), MODEL, {"episodic": 1})
    calls, release, answer = [], threading.Event(), (hit(1),)

    def fn() -> tuple[Hit, ...]:
        calls.append(1)
        assert release.wait(10)
        return answer

    threads, outcomes = run_threads(cache, key, fn)
    wait_until(lambda: cache.waiters(key) == 19)
    release.set()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and all(outcome is answer for outcome in outcomes)
    assert cache.waiters(key) == 0
    assert cache.single_flight(key, lambda: "again") == "again"  # nothing lingers


def test_single_flight_exception_reaches_every_waiter() -> None:
    cache = ResultCache()
    calls, release = [], threading.Event()

    def fn() -> None:
        calls.append(1)
        assert release.wait(10)
        raise ValueError("boom")

    threads, outcomes = run_threads(cache, "k", fn)
    wait_until(lambda: cache.waiters("k") == 19)
    release.set()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert all(isinstance(o, ValueError) and str(o) == "boom" for o in outcomes)


def test_single_flight_waiter_timeout_and_reentry() -> None:
    cache = ResultCache()
    release, started = threading.Event(), threading.Event()

    def slow() -> int:
        started.set()
        assert release.wait(10)
        return 1

    leader = threading.Thread(target=cache.single_flight, args=("k", slow))
    leader.start()
    assert started.wait(10)
    with pytest.raises(TimeoutError):
        cache.single_flight("k", slow, timeout=0.01)
    release.set()
    leader.join()
    with pytest.raises(RuntimeError):
        cache.single_flight("r", lambda: cache.single_flight("r", lambda: 1))


def test_flight_keys_separate_callers_that_read_other_generations() -> None:
    q = query()
    assert ResultCache.flight_key(q, MODEL, {"a": 1}) == ResultCache.flight_key(q, MODEL, {"a": 1})
    assert ResultCache.flight_key(q, MODEL, {"a": 1}) != ResultCache.flight_key(q, MODEL, {"a": 2})
    assert ResultCache.full_key(q, MODEL) == full_key(q, MODEL)


async def test_async_single_flight_shares_one_execution() -> None:
    cache, calls = ResultCache(), []

    async def fn() -> str:
        calls.append(1)
        for _ in range(5):
            await asyncio.sleep(0)
        return "answer"

    out = await asyncio.gather(*(cache.asingle_flight("k", fn) for _ in range(20)))
    assert out == ["answer"] * 20 and len(calls) == 1
    assert await cache.asingle_flight("k", fn) == "answer" and len(calls) == 2


async def test_async_single_flight_exception_reaches_every_waiter() -> None:
    cache, calls = ResultCache(), []

    async def fn() -> str:
        calls.append(1)
        await asyncio.sleep(0)
        raise ValueError("boom")

    out = await asyncio.gather(
        *(cache.asingle_flight("k", fn) for _ in range(20)), return_exceptions=True
    )
    assert len(calls) == 1 and all(isinstance(o, ValueError) for o in out)


async def test_async_cancelled_caller_leaves_the_others_their_answer() -> None:
    cache, calls, gate = ResultCache(), [], asyncio.Event()

    async def fn() -> str:
        calls.append(1)
        await gate.wait()
        return "answer"

    first = asyncio.ensure_future(cache.asingle_flight("k", fn))
    second = asyncio.ensure_future(cache.asingle_flight("k", fn))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await second == "answer" and len(calls) == 1
    with pytest.raises(asyncio.CancelledError):
        await first
