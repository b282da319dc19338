"""The execution contract: every strategy returns exactly the sequential hits.

Runs over real LoCoMo questions on a real SQLite file, with real worker processes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from athena import AsyncMemory, InvalidInput, Memory
from athena.locomo.data import load_locomo
from athena.locomo.importer import import_locomo

STRATEGIES = ("parallel", "distributed", "cache", "hybrid", "adaptive")


@pytest.fixture(scope="module")
def locomo_memory(tmp_path_factory: pytest.TempPathFactory, locomo_path: Path) -> Iterator[Memory]:
    path = tmp_path_factory.mktemp("contract") / "m.db"
    sample = json.loads(locomo_path.read_text())[:2]
    small = path.parent / "two.json"
    small.write_text(json.dumps(sample))
    mem = Memory(path)
    import_locomo(mem, small)
    mem.locomo_file = small  # type: ignore[attr-defined]
    yield mem
    mem.close()


def questions(mem: Memory, limit: int) -> list[tuple[str, str]]:
    convs = load_locomo(mem.locomo_file)  # type: ignore[attr-defined]
    out = [(c.sample_id, q.question) for c in convs for q in c.questions[: limit // len(convs)]]
    return out


def as_list(
    mem: Memory, tenant: str, question: str, strategy: str, layers: tuple[str, ...] | None
) -> list[tuple[int, float, str]]:
    hits = mem.recall(question, tenant=tenant, k=10, layers=layers, strategy=strategy).hits
    return [(h.id, round(h.score, 12), h.text) for h in hits]


@pytest.mark.parametrize("layers", [None, ("episodic", "semantic"), ("graph",)])
def test_every_strategy_equals_sequential(
    locomo_memory: Memory, layers: tuple[str, ...] | None
) -> None:
    mem = locomo_memory
    for tenant, question in questions(mem, 24):
        expected = as_list(mem, tenant, question, "sequential", layers)
        for strategy in STRATEGIES:
            # Adaptive may skip layers it learned never help: a separate, measured decision.
            chosen = layers or (tuple(mem.layers) if strategy != "adaptive" else None)
            if strategy == "adaptive" and layers is None:
                continue
            got = as_list(mem, tenant, question, strategy, chosen)
            assert got == expected, (strategy, question)
            # Second time round the cache serves it: still identical.
            assert as_list(mem, tenant, question, strategy, chosen) == expected


def test_explain_reports_the_decision(locomo_memory: Memory) -> None:
    tenant, question = questions(locomo_memory, 2)[0]
    first = locomo_memory.recall(question + " (explain)", tenant=tenant, explain=True)
    second = locomo_memory.recall(question + " (explain)", tenant=tenant, explain=True)
    for recall in (first, second):
        assert recall.explain is not None
        for key in ("strategy", "reasoning", "estimated_ms", "actual_ms", "cache", "layers"):
            assert key in recall.explain
    assert first.explain and first.explain["cache"] == "miss"
    assert (
        second.explain
        and second.explain["cache"] == "hit"
        and second.explain["strategy"] == "cache"
    )


def test_write_invalidates_cached_recall(locomo_memory: Memory) -> None:
    mem = locomo_memory
    tenant = "conv-26"
    before = mem.recall("zebra migration documentary", tenant=tenant, k=5).hits
    new = mem.remember("Caroline watched a zebra migration documentary.", tenant=tenant)
    after = mem.recall("zebra migration documentary", tenant=tenant, k=5).hits
    assert new in [h.id for h in after] and new not in [h.id for h in before]
    mem.forget(new, tenant=tenant)
    again = mem.recall("zebra migration documentary", tenant=tenant, k=5).hits
    assert new not in [h.id for h in again]


def test_bad_strategy_and_timeout(locomo_memory: Memory) -> None:
    with pytest.raises(InvalidInput):
        locomo_memory.recall("x", tenant="conv-26", strategy="warp")
    with pytest.raises(InvalidInput):
        locomo_memory.recall("x", tenant="conv-26", timeout=0)


def test_pool_that_cannot_start_falls_back_and_records_it(tmp_path: Path) -> None:
    with Memory(tmp_path / "m.db") as mem:
        mem.remember("the red fox", tenant="t")
        mem.remember("the red fox jumps", tenant="t", layer="semantic")
        engine = mem.engine
        engine.pools._factory = lambda: __import__(  # type: ignore[attr-defined]
            "athena.execution.pool", fromlist=["ProcessWorkerPool"]
        ).ProcessWorkerPool(tmp_path / "does-not-exist.db", "static")
        expected = mem.recall("red fox", tenant="t", strategy="sequential").hits
        got = mem.recall("red fox", tenant="t", strategy="distributed", explain=True)
        assert got.hits == expected
        assert got.explain and got.explain["fallback"] and got.explain["executed"] == "parallel"
        rows = engine.telemetry.rows()  # type: ignore[attr-defined]
        assert rows[-1].fallback


async def test_hundred_concurrent_async_recalls(tmp_path: Path, locomo_path: Path) -> None:
    sample = json.loads(locomo_path.read_text())[:1]
    small = tmp_path / "one.json"
    small.write_text(json.dumps(sample))
    async with AsyncMemory(tmp_path / "a.db") as mem:
        await asyncio.to_thread(import_locomo, mem.core, small)
        qs = [q.question for q in load_locomo(small)[0].questions[:100]]
        results = await asyncio.gather(*(mem.recall(q, tenant="conv-26", k=5) for q in qs))
        assert len(results) == 100 and all(len(r.hits) == 5 for r in results)


def test_telemetry_and_graph_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with Memory(path) as mem:
        mem.remember("alpha beta", tenant="t")
        for i in range(5):
            mem.recall(f"alpha {i}", tenant="t")
        summary = mem.execution_stats()["telemetry"]
        assert summary["recalls"] == 5
    with Memory(path) as mem:
        assert mem.execution_stats()["telemetry"]["recalls"] == 5
        assert mem.execution_stats()["graph"]["types"]


def test_a_failed_recall_is_recorded(tmp_path: Path) -> None:
    from athena import RecallTimeout

    with Memory(tmp_path / "m.db", pool="off") as mem:
        mem.remember("timing out on purpose", tenant="t")
        mem.remember("another memory", tenant="t", layer="semantic")
        with pytest.raises(RecallTimeout):
            mem.recall("timing", tenant="t", strategy="sequential", timeout=1e-9)
        row = mem.engine.telemetry.rows()[-1]  # type: ignore[attr-defined]
        assert not row.success and row.fallback and "RecallTimeout" in row.fallback
