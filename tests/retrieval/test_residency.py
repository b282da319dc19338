"""The index budget: which tenants' indexes a process keeps, and that dropping them changes
no recall's answer (a dropped tenant's indexes are built again from the store)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.errors import InvalidInput
from athena.execution import worker as wk
from athena.layers import default_layers
from athena.layers.graph import GraphLayer
from athena.layers.protocol import LayerContext
from athena.records import MemoryInput, make_query
from athena.retrieval import lexical_index
from athena.retrieval.residency import (
    LOW_WATER,
    Residency,
    check_budget,
    default_budget,
    memory_limit,
)

TENANTS = ("acme", "globex", "initech")
PER_TENANT = 12  # episodic turns; each tenant also has a few semantic facts


def _fill(memory: Memory) -> None:
    items = []
    for t, tenant in enumerate(TENANTS):
        for i in range(PER_TENANT):
            text = f"{tenant} meeting {i}: Alice{t} talked with Bob about the Lisbon office {i}."
            items.append(MemoryInput(tenant=tenant, layer="episodic", text=text))
        for i in range(3):
            fact = f"Alice{t} works at {tenant} on project {i} in Lisbon."
            items.append(MemoryInput(tenant=tenant, layer="semantic", text=fact))
    memory.remember_many(items)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Memory, Memory]]:
    """The same file opened twice: no bound, and a budget under two tenants' memories."""
    path = tmp_path / "r.db"
    with Memory(path, pool="off") as writer:
        _fill(writer)
    with (
        Memory(path, pool="off", index_memories=10**9) as free,
        Memory(path, pool="off", index_memories=PER_TENANT + 6) as tight,
    ):
        yield free, tight


QUESTIONS = ("Where is the office?", "Who did Alice talk with?", "Which project in Lisbon?")


def _ids(memory: Memory, text: str, tenant: str) -> list[int]:
    return [hit.id for hit in memory.recall(text, tenant=tenant, k=5, strategy="sequential").hits]


def test_a_tight_budget_drops_tenants_and_answers_the_same(stores: tuple[Memory, Memory]) -> None:
    free, tight = stores
    for _ in range(2):  # the second round finds every tenant dropped once already
        for tenant in TENANTS:
            for text in QUESTIONS:
                assert _ids(tight, text, tenant) == _ids(free, text, tenant)
    residency = tight.pipeline.ctx.residency
    stats = residency.stats()
    assert stats["evicted"] >= 2 * len(TENANTS) - 1
    assert stats["tenants"] == 1 and stats["memories"] <= PER_TENANT + 6
    held = {key[0] for key in tight.pipeline.ctx.indexes._indexes}
    held |= {key[0] for key in tight.pipeline.ctx.lexicon._indexes}
    assert held == {TENANTS[-1]}  # only the tenant searched last
    assert free.pipeline.ctx.residency.stats()["evicted"] == 0
    assert tight.execution_stats()["indexes"] == tight.execution_gauges()["indexes"] == stats
    graph = tight.layers["graph"]
    assert isinstance(graph, GraphLayer)
    assert {tenant for _, tenant in graph._held} <= {TENANTS[-1]}


def test_a_dropped_tenant_sees_writes_made_while_it_was_dropped(
    stores: tuple[Memory, Memory],
) -> None:
    free, tight = stores
    _ids(tight, QUESTIONS[0], "acme")
    _ids(tight, QUESTIONS[0], "globex")  # acme dropped
    new = tight.remember("Alice0 moved the acme office to Porto.", tenant="acme", layer="semantic")
    _ids(tight, QUESTIONS[0], "initech")
    assert new in _ids(tight, "Where did the acme office move to Porto?", "acme")
    assert _ids(tight, "office Porto", "acme") == _ids(free, "office Porto", "acme")


def test_a_closed_memory_leaves_no_store_in_a_shared_graph_layer(tmp_path: Path) -> None:
    layers = default_layers()
    with Memory(tmp_path / "a.db", pool="off", layers=layers) as keep:
        _fill(keep)
        other = Memory(tmp_path / "b.db", pool="off", layers=layers)
        _fill(other)
        _ids(keep, "Who did Alice talk with?", "acme")
        _ids(other, "Who did Alice talk with?", "acme")
        graph = layers["graph"]
        assert isinstance(graph, GraphLayer)
        gone = weakref.ref(other.store)
        other.close()
        del other
        gc.collect()
        assert gone() is None  # the layer held it until now
        assert {store for store, *_ in graph._held.values()} == {keep.store}


def test_a_worker_keeps_to_its_budget_and_answers_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    opened: list[LayerContext] = []

    def open_context(*args: Any) -> LayerContext:
        opened.append(real(*args))
        return opened[-1]

    real = wk.open_context
    monkeypatch.setattr(wk, "open_context", open_context)
    with Memory(tmp_path / "w.db", pool="off") as mem:
        _fill(mem)
        config = wk.WorkerConfig(str(mem.store.path), mem.embedder.name, 0, True, PER_TENANT)
        store, serve, _ = wk._initialise(config)
        try:
            for tenant in (*TENANTS, *TENANTS):
                query = make_query("Who did Alice talk with?", tenant, 5)
                request = mem.pipeline.request(query, mem.generations.get(tenant))
                kind, answers = pickle.loads(
                    serve(((1, "episodic"),), pickle.dumps((request, False)))
                )
                assert kind == "done" and answers[0][1] == "ok"
                local = mem.pipeline.run("episodic", request, "sequential")
                assert tuple(answers[0][2].ids) == tuple(local.ids)
        finally:
            store.close()
    stats = opened[0].residency.stats()
    assert stats["budget"] == PER_TENANT and stats["evicted"] >= 2 * len(TENANTS) - 1


def test_the_least_recently_searched_tenant_goes_first() -> None:
    dropped: list[str] = []
    r = Residency(100)
    r.on_evict(dropped.extend)
    r.grew("a", "vector", "episodic", 40)
    r.grew("b", "vector", "episodic", 40)
    r.touch("a")  # a was searched after b
    r.grew("c", "lexical", "episodic", 40)
    assert dropped == ["b"]
    assert r.stats() == {"memories": 80, "budget": 100, "tenants": 2, "evicted": 1}


def test_a_layer_counts_its_larger_index_and_a_drop_goes_below_the_low_water() -> None:
    dropped: list[str] = []
    r = Residency(100)
    r.on_evict(dropped.extend)
    for tenant in "abcde":
        r.grew(tenant, "vector", "episodic", 18)
        r.grew(tenant, "lexical", "episodic", 20)  # the layer holds 20, not 38
    assert r.memories == 100 and not dropped
    r.grew("f", "vector", "semantic", 5)
    assert dropped == ["a"] and r.memories == 85 <= LOW_WATER * 100


def test_one_tenant_past_the_budget_stays_alone() -> None:
    r = Residency(10)
    r.grew("a", "vector", "episodic", 5)
    r.grew("big", "vector", "episodic", 50)
    assert r.stats()["tenants"] == 1 and r.memories == 50


def test_budgets_must_be_positive_counts() -> None:
    for bad in (0, -3, 1.5, True, "10"):
        with pytest.raises(InvalidInput):
            check_budget(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        default_budget({"ATHENA_INDEX_MEMORIES": "lots"})
    with pytest.raises(InvalidInput):
        default_budget({"ATHENA_INDEX_MEMORIES": "0"})
    assert default_budget({"ATHENA_INDEX_MEMORIES": "7"}) == 7
    assert (default_budget({}) or 0) > 100_000  # a quarter of this machine's memory


def test_a_container_limit_lowers_the_default(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("max\n")
    v1.write_text("9223372036854771712\n")  # cgroup v1's "no limit"
    physical = memory_limit(())
    assert physical and memory_limit((v2, v1)) == physical
    v2.write_text(f"{512 * 2**20}\n")
    assert memory_limit((v2, v1)) == 512 * 2**20 < physical
    v2.write_text("garbage")
    assert memory_limit((v2, tmp_path / "absent")) == physical


def test_a_bad_budget_opens_no_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput):
        Memory(tmp_path / "x.db", pool="off", index_memories=0)
    monkeypatch.setenv("ATHENA_INDEX_MEMORIES", "-1")
    with pytest.raises(InvalidInput):
        Memory(tmp_path / "x.db", pool="off")
    assert not list(tmp_path.iterdir())  # refused before the file was created


_OPS = st.lists(
    st.tuples(
        st.sampled_from("abcdef"),
        st.sampled_from(("vector", "lexical")),
        st.sampled_from(("episodic", "semantic")),
        st.integers(0, 40),
        st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(budget=st.integers(1, 120), ops=_OPS)
def test_the_count_and_the_drops_match_a_reference(
    budget: int, ops: list[tuple[str, str, str, int, bool]]
) -> None:
    r = Residency(budget)
    dropped: list[str] = []
    r.on_evict(dropped.extend)
    sizes: dict[str, dict[tuple[str, str], int]] = {}
    order: list[str] = []  # least recently searched first

    def held(tenant: str) -> int:
        per: dict[str, int] = {}
        for (_, layer), rows in sizes[tenant].items():
            per[layer] = max(per.get(layer, 0), rows)
        return sum(per.values())

    for tenant, kind, layer, rows, searched in ops:
        if searched:
            r.touch(tenant)
            if tenant in order:
                order.remove(tenant)
            order.append(tenant)
        dropped.clear()
        r.grew(tenant, kind, layer, rows)
        sizes.setdefault(tenant, {})[(kind, layer)] = rows
        if tenant not in order:
            order.append(tenant)
        expected: list[str] = []
        total = sum(held(t) for t in sizes)
        if total > budget:
            for victim in [t for t in order if t != tenant]:
                if total <= int(budget * LOW_WATER):
                    break
                total -= held(victim)
                expected.append(victim)
                del sizes[victim]
                order.remove(victim)
        assert dropped == expected
        assert r.memories == sum(held(t) for t in sizes) == total
        assert r.stats()["tenants"] == len(sizes)
        assert r.memories <= budget or list(sizes) == [tenant]


_WRITES = st.lists(
    st.tuples(
        st.sampled_from(["remember", "update", "forget", "recall"]),
        st.sampled_from(["acme", "globex"]),
        st.sampled_from(["episodic", "semantic"]),
        st.sampled_from(["Lisbon", "Porto", "Alice", "train"]),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_WRITES)
def test_dropping_tenants_between_writes_never_changes_an_answer(
    ops: list[tuple[str, str, str, str]],
) -> None:
    """Writes, updates and forgets in two tenants, a Memory that can hold one tenant's
    indexes at a time (each recall of the other drops them): every recall answers as a
    Memory that never drops, on the same file."""
    _drops_answer_the_same(ops)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_WRITES)
def test_a_dropped_tenant_loaded_from_its_snapshots_answers_the_same(
    ops: list[tuple[str, str, str, str]],
) -> None:
    """As above with every lexical index saved once built: a dropped tenant's next recall
    loads a snapshot that may be older than the writes since, and catches up from it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lexical_index, "SAVE_MIN", 1)
        loaded = _drops_answer_the_same(ops)
    assert loaded >= 1 or len(ops) == 1  # the second op's recalls reload a dropped tenant


def _drops_answer_the_same(ops: list[tuple[str, str, str, str]]) -> int:
    """Run ``ops``; the lexical snapshots the tight Memory loaded."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "h.db"
        with (
            Memory(path, pool="off", index_memories=10**9) as ref,
            Memory(path, pool="off", index_memories=1) as tight,
        ):
            ids: dict[str, list[int]] = {"acme": [], "globex": []}
            for tenant in ids:
                ids[tenant].append(ref.remember(f"{tenant} starts in Lisbon", tenant=tenant))
            for n, (op, tenant, layer, word) in enumerate(ops):
                text = f"{word} note {n} in {tenant}"
                mine = ids[tenant]
                if op == "remember":
                    mine.append(ref.remember(text, tenant=tenant, layer=layer))
                elif op == "update" and mine:
                    ref.update(mine[n % len(mine)], tenant=tenant, text=text)
                elif op == "forget" and len(mine) > 1:
                    ref.forget(mine.pop(n % len(mine)), tenant=tenant)
                for who in (tenant, "globex" if tenant == "acme" else "acme"):
                    asked = f"{word} {n}?"  # never a cached answer: each recall searches
                    want = ref.recall(asked, tenant=who, k=10, strategy="sequential")
                    got = tight.recall(asked, tenant=who, k=10, strategy="sequential")
                    assert [(h.id, h.score) for h in got.hits] == [
                        (h.id, h.score) for h in want.hits
                    ]
            assert tight.pipeline.ctx.residency.stats()["evicted"] >= 1
            snapshots = tight.pipeline.ctx.lexicon.snapshots
            return 0 if snapshots is None else snapshots.loaded


def test_the_pool_workers_share_one_budget(tmp_path: Path) -> None:
    from athena.execution.pool import ProcessWorkerPool

    pool = ProcessWorkerPool(tmp_path / "p.db", max_workers=4, index_memories=100)
    try:
        assert pool._core.fleet.config.index_memories == 25  # never started: no process
    finally:
        pool.close()
    with pytest.raises(InvalidInput):
        ProcessWorkerPool(tmp_path / "p.db", index_memories=0)


def test_an_index_dropped_while_it_synced_is_not_counted(
    stores: tuple[Memory, Memory], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread's eviction can land between a sync and its count: the count then
    skips the detached index instead of holding a tenant no collection holds."""
    from athena.retrieval import vector

    _, tight = stores
    ctx = tight.pipeline.ctx
    real = vector.VectorIndex.sync

    def sync_then_dropped(index: vector.VectorIndex, store: Any, generation: int) -> int:
        applied = real(index, store, generation)
        ctx.indexes.drop([index.tenant])  # as a concurrent eviction would, mid-warm
        return applied

    monkeypatch.setattr(vector.VectorIndex, "sync", sync_then_dropped)
    generation = tight.generations.get("acme")["episodic"]
    ctx.indexes.warm("acme", "episodic", generation)
    assert ctx.residency.stats()["memories"] == 0 and not ctx.residency.holds("acme")


def test_a_failing_drop_leaves_the_others_dropping_and_the_recall_answering() -> None:
    dropped: list[str] = []

    def broken(tenants: object) -> None:
        raise RuntimeError("a drop that fails")

    r = Residency(10)
    r.on_evict(broken)
    r.on_evict(dropped.extend)
    r.grew("a", "vector", "episodic", 8)
    r.grew("b", "vector", "episodic", 8)  # raises nothing
    assert dropped == ["a"] and r.stats()["tenants"] == 1


def test_a_dropped_tenant_is_not_touched_back() -> None:
    r = Residency(10)
    r.touch("gone")
    assert r.stats()["tenants"] == 0 and "gone" not in r._last


def test_a_worker_warms_only_what_its_share_holds(tmp_path: Path) -> None:
    from athena.layers.protocol import open_context

    with Memory(tmp_path / "w.db", pool="off") as mem:
        _fill(mem)
        ctx = open_context(mem.store, mem.embedder.name, 0, None, default_layers().values(), 20)
        warmed = wk.warm_indexes(ctx, at_least=5, budget_s=60.0)
    assert len(warmed) == 1 and warmed[0][1] == "episodic"  # a second would pass 20
    assert ctx.residency.stats()["evicted"] == 0 and ctx.residency.memories <= 20


def test_names_read_across_a_drop_are_held_only_if_counted(
    stores: tuple[Memory, Memory], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop between the graph layer's read of a tenant's names and its store of them: the
    names stored afterwards are counted, so a later drop takes them too."""
    from athena.layers import graph as graph_module

    _, tight = stores
    ctx, graph = tight.pipeline.ctx, tight.layers["graph"]
    assert isinstance(graph, GraphLayer)
    _ids(tight, QUESTIONS[1], "acme")
    real = graph_module.read_names

    def read_then_dropped(store: Any, tenant: str, names: Any) -> Any:
        out = real(store, tenant, names)
        ctx.residency.grew("another", "vector", "episodic", 10**6)  # an eviction, in between
        return out

    monkeypatch.setattr(graph_module, "read_names", read_then_dropped)
    tight.remember("Alice0 met Carol in Faro.", tenant="acme", layer="semantic")
    assert tight.catch_up.settle(5.0)
    graph._known(ctx, "acme", tight.generations.get("acme"))
    assert graph.holds(ctx, "acme") and ctx.residency.holds("acme")


def test_threads_recalling_and_writing_under_a_tight_budget_keep_it_consistent(
    tmp_path: Path,
) -> None:
    """Four threads recall six tenants in a Memory that holds about one of them, while a
    fifth writes and the catch-up thread follows: nothing raises, and once they stop every
    index held is counted, the count is the sum of the tenants', the budget holds, and every
    recall answers as a Memory that never drops."""
    import random
    import threading

    tenants = [f"t{i}" for i in range(6)]
    path = tmp_path / "c.db"
    with Memory(path, pool="off") as writer:
        writer.remember_many(
            [
                MemoryInput(
                    tenant=t, layer=layer, text=f"{t} note {i}: Alice met Bob in Lisbon {i}"
                )
                for t in tenants
                for i in range(10)
                for layer in ("episodic", "semantic")
            ]
        )
    errors: list[BaseException] = []
    with (
        Memory(path, pool="off", index_memories=25) as tight,
        Memory(path, pool="off", index_memories=10**9) as ref,
    ):

        def recalls(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(60):
                    tight.recall("Who met Bob?", tenant=rng.choice(tenants), strategy="sequential")
            except BaseException as exc:  # reported below
                errors.append(exc)

        def writes() -> None:
            try:
                for i in range(30):
                    tight.remember(f"later {i}: Carol in Porto", tenant=tenants[i % 6])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=recalls, args=(n,)) for n in range(4)]
        threads.append(threading.Thread(target=writes))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert tight.catch_up.settle(10.0)
        residency = tight.pipeline.ctx.residency
        ctx = tight.pipeline.ctx
        with residency._lock:
            held = dict(residency._held)
            indexed = {key[0] for key in ctx.indexes._indexes} | {
                key[0] for key in ctx.lexicon._indexes
            }
            assert indexed <= set(held)
            assert residency.memories == sum(held.values())
            assert residency.memories <= 25 or len(held) == 1
        assert residency.stats()["evicted"] > 0
        for tenant in tenants:
            for text in ("Who met Bob?", "Carol in Porto", "Lisbon"):
                got = tight.recall(text, tenant=tenant, k=8, strategy="sequential").hits
                want = ref.recall(text, tenant=tenant, k=8, strategy="sequential").hits
                assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in want]


def test_tenants_recalled_only_through_the_graph_are_bounded_too(tmp_path: Path) -> None:
    """Their entity names count (26 names as one memory, at least one a tenant), so a
    process recalling many tenants through the graph layer alone drops the oldest; they
    counted nothing before, and every tenant's names stayed."""
    path = tmp_path / "g.db"
    tenants = [f"t{i}" for i in range(8)]
    with Memory(path, pool="off") as writer:
        for tenant in tenants:
            writer.remember(f"Alice met Bob in Lisbon ({tenant}).", tenant=tenant, layer="semantic")
    with Memory(path, pool="off", index_memories=3) as tight:
        graph = tight.layers["graph"]
        assert isinstance(graph, GraphLayer)
        for tenant in tenants:
            tight.recall("Where did Alice meet Bob?", tenant=tenant, layers=["graph"])
        stats = tight.pipeline.ctx.residency.stats()
        assert 0 < stats["memories"] <= 3 and stats["evicted"] >= len(tenants) - 3
        held = {tenant for _, tenant in graph._held}
        assert held and held <= set(tenants[-3:])  # the most recently recalled
