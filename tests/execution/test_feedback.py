"""Feedback: what a recall teaches the selector, including a recall the pool failed."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from pathlib import Path

import pytest

from athena import Memory
from athena.embedding import Embedder
from athena.execution import feedback as feedback_module
from athena.execution.feedback import Feedback
from athena.execution.telemetry import Telemetry, TelemetryRow
from athena.planning.dependency_graph import DependencyGraph
from athena.planning.selector import Decision, Situation, Strategy, StrategySelector
from athena.records import MemoryInput, make_query
from athena.store.sqlite import SQLiteStore


def test_a_pool_fallback_teaches_distributed_its_cost(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    try:
        selector = StrategySelector(rng=random.Random(0), explore_rate=0.0)
        feedback = Feedback(store, DependencyGraph(cores=2), selector)
        s = Situation(5, 8.0, 2.0, 0.0, 0, 0.0, True, False, 1)
        selector.learn(Strategy.PARALLEL, s, 400.0)  # one slow parallel recall (a cold index)
        assert selector.decide(s).strategy is Strategy.DISTRIBUTED  # the untried pool wins
        query = make_query("where did Caroline hike?", "t")
        decision = Decision(Strategy.DISTRIBUTED, 1.0, "lowest predicted cost", 5.0, 1.6)
        feedback.executed(
            query, "factual", decision, Strategy.PARALLEL, s, "miss", {"episodic": 3.0},
            {"episodic"}, "pool failed: distributed recall took longer than 10 s", 10,
            10_050.0, False,
        )  # fmt: skip
        assert selector.decide(s).strategy is not Strategy.DISTRIBUTED
        assert selector.snapshot()["observations"] == {
            "sequential": 0, "parallel": 1, "distributed": 1
        }  # fmt: skip
    finally:
        store.close()


def test_telemetry_rows_round_trip_and_old_or_broken_rows_are_skipped(tmp_path: Path) -> None:
    """Rows are JSON arrays now; rows an earlier version stored as JSON objects still load,
    and a row no version can read is skipped instead of stopping the store from opening."""
    store = SQLiteStore(tmp_path / "t.db")
    try:
        row = TelemetryRow(
            1.0, "t", "factual", "parallel", 0.9, 2.0, 2.5, "miss", {"episodic": 1.2},
            ("episodic", "semantic"), ("episodic",), 1.5, 1.2, None, True,
            (1.0, 2.0, 3.0, 0.0, 0.0, 1.0), False,
        )  # fmt: skip
        assert TelemetryRow.from_json(row.to_json()) == row
        legacy = json.dumps(row._asdict())  # the object form earlier versions wrote
        rows = [row.to_json(), legacy, "[1.0, 2.0]", "not json", '{"at": 1}']
        store.append_telemetry([(1.0, "t", "factual", "parallel", text) for text in rows], 100)
        loaded = Telemetry(store).load()
        assert loaded == [row, row]
        selector = StrategySelector(rng=random.Random(0), explore_rate=0.0)
        Feedback(store, DependencyGraph(cores=2), selector).restore()
        assert selector.snapshot()["observations"]["parallel"] == 2
    finally:
        store.close()


def test_a_recall_that_builds_an_index_teaches_no_strategy_its_cost(
    tmp_path: Path, embedder: Embedder
) -> None:
    with Memory(tmp_path / "b.db", embedder=embedder, pool="off") as mem:
        words = ["river", "piano", "garden", "tiger", "cloud", "violet"]
        mem.remember_many(
            [MemoryInput("episodic", f"note {i} about the {words[i % 6]}", "t") for i in range(400)]
        )
        observed = lambda: sum(mem.engine.selector.snapshot()["observations"].values())  # noqa: E731
        graph_before = mem.engine.graph.layer_ms("episodic")
        mem.recall("what about the river?", tenant="t", strategy="sequential")  # builds
        assert observed() == 0  # the build's cost taught nothing
        assert mem.engine.graph.layer_ms("episodic") == graph_before
        rows = mem.engine.telemetry.rows()
        assert rows[-1].cache == "miss" and rows[-1].features == ()  # recorded, not replayed
        mem.recall("and the piano?", tenant="t", strategy="sequential")  # indexes built
        assert observed() == 1
        assert mem.engine.graph.layer_ms("episodic") != graph_before
        mem.remember("one more note about the garden", tenant="t")  # a small catch-up
        mem.recall("the garden?", tenant="t", strategy="sequential")
        assert observed() == 2  # still teaches: a few rows are the real cost of writes


def test_cache_hits_are_stored_coalesced_and_load_as_one_row_per_recall(tmp_path: Path) -> None:
    """A batch's full hits are written as one weighted row per (tenant, query type,
    strategy); a restart sees every recall again, so hit rates survive it. Misses, which
    teach the selector, keep a row each."""

    def row(tenant: str, cache: str, ms: float) -> TelemetryRow:
        return TelemetryRow(
            1.0, tenant, "factual", "cache" if cache == "hit" else "sequential", 1.0, 0.0, ms,
            cache, {}, ("episodic",), (), 1.0, 1.0, None, True,
        )  # fmt: skip

    store = SQLiteStore(tmp_path / "t.db")
    try:
        telemetry = Telemetry(store, flush_every=10_000)
        for i in range(300):
            telemetry.record(row("a" if i % 3 else "b", "hit", 0.02 + 0.01 * (i % 2)))
        for _ in range(7):
            telemetry.record(row("a", "miss", 1.5))
        telemetry.flush()
        assert len(store.read_telemetry(1000)) == 2 + 7  # two hit groups, seven misses
        loaded = Telemetry(store).load()
        assert len(loaded) == 307
        assert sum(r.cache == "hit" for r in loaded) == 300
        assert sum(r.tenant == "b" and r.cache == "hit" for r in loaded) == 100
        hits = [r.actual_ms for r in loaded if r.cache == "hit"]
        assert abs(sum(hits) / len(hits) - 0.025) < 1e-9  # the mean latency is kept
        assert all(r.weight == 1 for r in loaded)
        bad = row("a", "hit", 0.02)._replace(weight=0).to_json()
        store.append_telemetry([(1.0, "a", "factual", "cache", bad)], 1000)
        assert len(Telemetry(store).load()) == 307  # a row with a bad weight is skipped
    finally:
        store.close()


def _hits_counted(store: SQLiteStore) -> tuple[Feedback, StrategySelector]:
    selector = StrategySelector(rng=random.Random(0), explore_rate=0.0)
    return Feedback(store, DependencyGraph(cores=2), selector), selector


def test_a_noted_hit_is_counted_before_anything_reads_it(tmp_path: Path) -> None:
    """Hits are noted with one append and counted later; every reader sees them all, in
    order before a later executed recall, with the time each was served."""
    store = SQLiteStore(tmp_path / "n.db")
    try:
        feedback, selector = _hits_counted(store)
        query = make_query("where is the key?", "t", layers=["semantic"])
        for _ in range(5):
            feedback.served(query, "factual", 1.0, 3, 0.02)
        assert feedback.telemetry.recorded == 5  # reading the count settles first
        rows = feedback.telemetry.rows()
        assert [r.cache for r in rows] == ["hit"] * 5
        assert all(a.at <= b.at for a, b in itertools.pairwise(rows))
        assert feedback.graph.snapshot()["types"]["factual"]["cache_hits"] == 5
        assert sum(d.strategy is Strategy.CACHE for d in selector.history) == 5
        feedback.served(query, "factual", 1.0, 3, 0.02)
        s = Situation(1, 1.0, 1.0, 0.0, 0, 0.0, False, False, 0)
        decision = Decision(Strategy.SEQUENTIAL, 1.0, "test", 1.0, 1.0)
        feedback.executed(
            query, "factual", decision, Strategy.SEQUENTIAL, s, "miss", {"semantic": 1.0},
            set(), None, 0, 1.0, True,
        )  # fmt: skip
        assert [r.cache for r in feedback.telemetry.rows()][-2:] == ["hit", "miss"]
        feedback.served(query, "factual", 1.0, 3, 0.02)
        feedback.save()  # saved with every hit counted
        assert (
            json.loads(store.load_state("dependency_graph") or "{}")["types"]["factual"][
                "cache_hits"
            ]
            == 7
        )
    finally:
        store.close()


def test_noted_hits_are_bounded_and_each_counted_once_across_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feedback_module, "SETTLE_AT", 16)
    store = SQLiteStore(tmp_path / "b.db")
    try:
        feedback, selector = _hits_counted(store)
        query = make_query("where is the key?", "t", layers=["semantic"])

        def serve() -> None:
            for _ in range(500):
                feedback.served(query, "factual", 1.0, 3, 0.02)
                assert len(feedback._noted) <= 16 + 4  # settled on the hit's path when full

        def read() -> None:
            for _ in range(50):
                feedback.telemetry.rows()

        threads = [threading.Thread(target=serve) for _ in range(4)]
        threads.append(threading.Thread(target=read))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert feedback.telemetry.recorded == 2000
        assert feedback.graph.snapshot()["types"]["factual"]["cache_hits"] == 2000
        assert len(selector.history) == min(2000, selector.history.maxlen or 2000)
    finally:
        store.close()


def test_stats_count_the_hits_served(tmp_path: Path, embedder: Embedder) -> None:
    with Memory(tmp_path / "s.db", embedder=embedder, pool="off") as mem:
        mem.remember("the key is under the mat", tenant="t")
        for _ in range(3):
            mem.recall("where is the key?", tenant="t")
        stats = mem.engine.stats()
        assert stats["selector"]["decisions"].get("cache") == 2
        assert stats["graph"]["types"]["factual"]["cache_hits"] == 2
        assert [r.cache for r in mem.engine.telemetry.rows()] == ["miss", "hit", "hit"]


def test_a_reader_waits_for_hits_another_thread_is_counting(tmp_path: Path) -> None:
    """A hit taken by one thread's settle, and not counted yet, is not missed by a reader:
    it waits for the count in progress."""
    store = SQLiteStore(tmp_path / "w.db")
    try:
        feedback, _ = _hits_counted(store)
        slow, started = feedback.graph.observe_hit, threading.Event()

        def observe_slowly(*args: object) -> None:
            started.set()
            time.sleep(0.3)
            slow(*args)  # type: ignore[arg-type]

        feedback.graph.observe_hit = observe_slowly  # type: ignore[method-assign]
        feedback.served(make_query("where is the key?", "t"), "factual", 1.0, 3, 0.02)
        counting = threading.Thread(target=feedback.settle)
        counting.start()
        assert started.wait(10)
        assert [r.cache for r in feedback.telemetry.rows()] == ["hit"]  # waited for it
        counting.join()
    finally:
        store.close()
