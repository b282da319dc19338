"""Feedback: what a recall teaches the selector, including a recall the pool failed."""

from __future__ import annotations

import json
import random
from pathlib import Path

from athena.execution.feedback import Feedback
from athena.execution.telemetry import Telemetry, TelemetryRow
from athena.planning.dependency_graph import DependencyGraph
from athena.planning.selector import Decision, Situation, Strategy, StrategySelector
from athena.records import make_query
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
