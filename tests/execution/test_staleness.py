"""Hypothesis interleavings of writes, updates, forgets and recalls across tenants.

After every step, a recall that may be served by the cache (adaptive, cache, hybrid) must
equal a recall that reads the store afresh (sequential): zero stale results, zero results
from another tenant.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.embedding import Embedder

WORDS = ["apple", "river", "piano", "rocket", "garden", "violet", "tiger", "cloud"]
TENANTS = ["t1", "t2", "t3"]
LAYERS = ["episodic", "semantic", "prospective"]

op = st.one_of(
    st.tuples(
        st.just("remember"),
        st.sampled_from(TENANTS),
        st.sampled_from(LAYERS),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
    ),
    st.tuples(
        st.just("update"),
        st.sampled_from(TENANTS),
        st.integers(0, 50),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
    ),
    st.tuples(st.just("forget"), st.sampled_from(TENANTS), st.integers(0, 50), st.just([])),
    st.tuples(
        st.just("recall"),
        st.sampled_from(TENANTS),
        st.sampled_from(["adaptive", "cache", "hybrid"]),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=2),
    ),
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Memory:
    mem = Memory(tmp_path_factory.mktemp("stale") / "m.db", embedder=embedder, pool="off")
    for tenant in TENANTS:
        mem.remember("seed memory", tenant=tenant)
    yield mem  # type: ignore[misc]
    mem.close()


def fingerprint(
    mem: Memory, tenant: str, words: list[str], strategy: str, layers: list[str] | None
) -> list[tuple[int, str, str]]:
    recall = mem.recall(
        " ".join(words), tenant=tenant, k=5, layers=layers, strategy=strategy, explain=True
    )
    hits = recall.hits
    assert all(h.tenant == tenant for h in hits), (
        recall.explain,
        [(h.id, h.tenant, h.layer, h.text) for h in hits],
    )
    return [(h.id, h.text, h.tenant) for h in hits]


# Random seeds on purpose: this property once failed one run in four (FTS5 bm25 ranked with
# corpus-wide statistics, so another tenant's write reordered a near-tie here without
# bumping this tenant's generations). Lexical ranking is now tenant-local, and the
# property holds for every seed tried (148 of 148, see the issue 3 note).
@settings(
    max_examples=40,
    deadline=None,
    stateful_step_count=30,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, min_size=5, max_size=30))
def test_no_stale_or_foreign_results(
    shared: Memory, ops: list[tuple[str, str, object, list[str]]]
) -> None:
    mem = shared
    owned: dict[str, list[int]] = {t: [] for t in TENANTS}
    probes: list[tuple[str, list[str]]] = []
    for kind, tenant, arg, words in ops:
        if kind == "remember":
            owned[tenant].append(mem.remember(" ".join(words), tenant=tenant, layer=str(arg)))
        elif kind == "update" and owned[tenant]:
            target = owned[tenant][int(arg) % len(owned[tenant])]
            mem.update(target, tenant=tenant, text=" ".join(words) + " updated")
        elif kind == "forget" and owned[tenant]:
            mem.forget(owned[tenant].pop(int(arg) % len(owned[tenant])), tenant=tenant)
        elif kind == "recall":
            probes.append((tenant, words))
            for layers in (None, ["episodic", "semantic"]):
                fresh = fingerprint(mem, tenant, words, "sequential", layers)
                # Twice: the second is served from what the first cached.
                assert fingerprint(mem, tenant, words, str(arg), layers) == fresh
                assert fingerprint(mem, tenant, words, str(arg), layers) == fresh
        # Earlier probes must also stay fresh after every write.
        for p_tenant, p_words in probes[-3:]:
            assert fingerprint(
                mem, p_tenant, p_words, "adaptive", ["episodic", "semantic"]
            ) == fingerprint(mem, p_tenant, p_words, "sequential", ["episodic", "semantic"])
