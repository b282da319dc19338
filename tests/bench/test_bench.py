"""The bench harness on a tiny slice (one conversation, a handful of queries, very short load
phases): bench.json's shape, the Markdown and the plots, and the regret maths by hand.

Nothing here asserts on a timing.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from athena.bench import oracle
from athena.bench.arms import ARMS, parallel_limit, percentile, recall_limit
from athena.bench.runner import QUICK, plan_for, run, with_sizes
from athena.bench.workloads import Ask, build_store, recall_ops, with_writes, zipf_stream
from athena.embedding import load_embedder

ROW_KEYS = {"scenario": str, "strategy": str, "embedder": str, "store": str}
NUMBERS = ("p50_ms", "p95_ms", "p99_ms", "qps", "hit_rate", "ratio_vs_baseline")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory, locomo_path: Path) -> Path:
    work = tmp_path_factory.mktemp("bench")
    data = work / "one-conversation.json"
    raw = json.loads(locomo_path.read_text(encoding="utf-8"))[:1]
    raw[0]["qa"] = raw[0]["qa"][:40]
    data.write_text(json.dumps(raw), encoding="utf-8")
    quick = replace(plan_for("quick", data, work / "out", ("static",)), pools="off")
    plan = with_sizes(
        quick,
        cached=6, cold=5, complex=4, learn=4, oracle=3, oracle_repeats=2, oracle_learn=3,
        zipf_limit=20, c10=(1, 1, 0.05), c100=(1, 1, 0.1), ramp_step_s=0.1,
        ramp=(100.0, 200.0, 400.0), ramp_factor=2.0, budget_s=2.0, warm_rounds=1,
    )  # fmt: skip
    run(plan, "pytest tiny slice")
    return work / "out"


@pytest.fixture(scope="module")
def doc(out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    return loaded


def test_bench_json_shape(doc: dict[str, Any]) -> None:
    assert {"rows", "regret", "machine", "date", "command", "mode"} <= doc.keys()
    assert doc["mode"] == "quick" and doc["command"] == "pytest tiny slice"
    assert doc["machine"]["nproc"] >= 1
    scenarios = {r["scenario"] for r in doc["rows"]}
    assert {"simple cached query", "mixed workload 50% cache", "mixed + writes",
            "complex multi-layer", "10 concurrent", "100 concurrent", "throughput cold",
            "throughput cached"} <= scenarios  # fmt: skip
    strategies = {r["strategy"] for r in doc["rows"]}
    assert strategies == {"baseline", "sequential", "parallel", "distributed", "cache",
                          "hybrid", "adaptive"}  # fmt: skip
    for row in doc["rows"]:
        for key, kind in ROW_KEYS.items():
            assert isinstance(row[key], kind)
        assert row["embedder"] == "static" and row["store"] == "locomo"
        assert isinstance(row["errors"], int)
        for key in NUMBERS:
            assert key in row
            assert row[key] is None or isinstance(row[key], int | float)
    for key in ("vs_oracle", "share_over_10pct", "vs_best_fixed"):
        assert isinstance(doc["regret"][key], float)
    decision = doc["regret"]["decision"]
    assert decision["queries"] >= 1 and decision["vs_oracle"] >= 0.0  # priced picks >= best
    assert set(decision["picks"]) <= {"sequential", "parallel", "distributed"}
    assert {g["met"] for g in doc["goals"]} <= {True, False, None}


def test_the_complex_limit_counts_what_does_not_fan_out(doc: dict[str, Any]) -> None:
    complex_ = doc["sessions"]["locomo/static"]["complex"]
    assert complex_["hand_off_us"] > 0
    layers, cores = complex_["layer_ms_p50"], complex_["cores"]
    whole = recall_limit(complex_["sequential_p50_ms"], layers, cores)
    assert complex_["limit"] == pytest.approx(whole, abs=1e-4)
    assert 1.0 <= complex_["limit"] <= complex_["layers_limit"]
    goal = next(g for g in doc["goals"] if g["goal"].startswith("complex multi-layer"))
    assert f"the layers alone: {complex_['layers_limit']:.3g}×" in goal["measured"]


def test_each_session_opened_every_arm_once(doc: dict[str, Any]) -> None:
    for name, session in doc["sessions"].items():
        assert sorted(session["opened"]) == sorted(ARMS), name  # each opened once, recorded


def test_baseline_ratio_is_one(doc: dict[str, Any]) -> None:
    for row in doc["rows"]:
        if row["strategy"] == "baseline" and row["ratio_vs_baseline"] is not None:
            assert row["ratio_vs_baseline"] == pytest.approx(1.0)


def test_markdown_and_plots(out: Path) -> None:
    text = (out / "bench.md").read_text(encoding="utf-8")
    assert "seed current" in text and "### Goals" in text and "Regret" in text
    for name in ("latency.png", "throughput.png", "regret.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_markdown_regret_table_has_a_row_per_session_and_one_for_all(
    out: Path, doc: dict[str, Any]
) -> None:
    text = (out / "bench.md").read_text(encoding="utf-8")
    regret = doc["regret"]
    for name, r in [*regret["by_session"].items(), ("**all**", regret)]:
        row = next(
            line for line in text.splitlines() if line.startswith(f"| {name.replace('/', ', ')} |")
        )
        assert f"{r['vs_oracle'] * 100:.1f}% ({r['share_over_10pct'] * 100:.1f}%)" in row
        assert f"{r['decision']['vs_oracle'] * 100:.1f}%" in row
        held = r["held_out"]
        assert f"{held['vs_oracle'] * 100:.1f}% ({held['share_over_10pct'] * 100:.1f}%)" in row
        assert f"({r['best_fixed']})" in row


def test_oracle_and_regret_by_hand() -> None:
    costs = [
        {"sequential": 4.0, "parallel": 2.0, "distributed": 5.0},  # oracle: parallel 2
        {"sequential": 1.0, "parallel": 2.0, "distributed": 3.0},  # oracle: sequential 1
        {"sequential": 3.0, "parallel": 3.0, "distributed": 1.5},  # oracle: distributed 1.5
    ]
    adaptive = [2.0, 1.05, 3.0]  # regret 0, 0.05, 1.0
    r = oracle.regret(costs, adaptive)
    assert r.vs_oracle == pytest.approx((0.0 + 0.05 + 1.0) / 3)
    assert r.share_over_10pct == pytest.approx(1 / 3)  # 5% is not over 10%; 100% is
    # totals: sequential 8, parallel 7, distributed 9.5: parallel is the best fixed
    assert r.best_fixed == "parallel"
    assert r.vs_best_fixed == pytest.approx((6.05 - 7.0) / 7.0)
    assert r.oracle_picks == {"parallel": 1, "sequential": 1, "distributed": 1}
    assert oracle.oracle({"a": 2.0, "b": 1.0}) == ("b", 1.0)


def test_decision_regret_prices_each_pick_at_the_oracle_costs() -> None:
    costs = [
        {"sequential": 4.0, "parallel": 2.0},  # picks: parallel twice -> 0
        {"sequential": 1.0, "parallel": 2.0},  # picks: sequential, parallel -> 1.5 vs 1
        {"sequential": 3.0},  # a pick with no cost (infeasible) is left out -> 0
    ]
    picks = [["parallel", "parallel"], ["sequential", "parallel"], ["sequential", "distributed"]]
    d = oracle.decision_regret(costs, picks)
    assert d["vs_oracle"] == pytest.approx(round(0.5 / 3, 4))
    assert d["share_over_10pct"] == pytest.approx(round(1 / 3, 4)) and d["queries"] == 3
    assert d["picks"] == {"parallel": 3, "sequential": 2}
    assert oracle.decision_regret([{"s": 1.0}], [["x"]]) == {}
    with pytest.raises(ValueError):
        oracle.decision_regret(costs, picks[:2])


def test_held_out_oracle_is_priced_on_the_run_it_did_not_choose_by() -> None:
    nan = float("nan")
    runs = {
        # Two strategies that tie: the in-sample oracle takes the least median (1.0, p)
        # and calls an arm that always runs s (median 1.1) 10% slower.
        "s": [[1.0, 1.1, 1.2], [2.0, 2.0], [1.0, 1.0]],
        "p": [[1.3, 1.0, 0.9], [nan, 1.0], [1.0, 1.0]],
        "adaptive": [[1.0, 1.1, 1.2], [2.0, 2.2], [1.0, nan]],
    }
    held = oracle.held_out([runs])
    # Query 1: run 0 is priced at p's 1.3 (p's other runs 1.0, 0.9 beat s's 1.1, 1.2),
    # run 1 at s's 1.1 (1.1 against p's 1.1: a tie keeps the first named), run 2 at s's
    # 1.2 (1.05 against 1.15). Query 2: p failed once, so only s is feasible: 2.1 against
    # 2.0. Query 3: the arm failed once, left out.
    first = 1.1 / ((1.3 + 1.1 + 1.2) / 3) - 1.0
    assert held["vs_oracle"] == pytest.approx(round((first + 0.05) / 2, 4))
    assert held["queries"] == 2 and held["share_over_10pct"] == 0.0
    assert held["oracle_picks"] == {"p": 1, "s": 4}
    assert held["per_query"] == [round(first, 4), 0.05]
    assert oracle.regret([{"s": 1.1, "p": 1.0}], [1.1]).vs_oracle == pytest.approx(0.1)
    assert oracle.held_out([{"s": [[1.0]], "adaptive": [[1.0]]}]) == {}  # nothing held out


def test_regret_ignores_strategies_missing_somewhere() -> None:
    costs = [{"sequential": 2.0, "distributed": 1.0}, {"sequential": 2.0}]
    r = oracle.regret(costs, [1.0, 2.0])
    assert r.best_fixed == "sequential" and r.vs_oracle == 0.0
    with pytest.raises(ValueError):
        oracle.regret(costs, [1.0])


def test_workload_maths() -> None:
    stream = zipf_stream(500, random.Random(3))
    assert abs((len(stream) - len(set(stream))) / len(stream) - 0.5) < 0.02
    ops = with_writes(recall_ops([Ask("t", "q")], [0] * 180), random.Random(0))
    assert sum(op.kind == "write" for op in ops) / len(ops) == pytest.approx(0.1)
    assert parallel_limit({"a": 2.0, "b": 2.0, "c": 2.0}, 2) == pytest.approx(2.0)
    assert parallel_limit({"a": 5.0, "b": 1.0}, 2) == pytest.approx(1.2)
    # Only the layers fan out: 3 ms of them in a 5 ms recall, 2x faster, give 5 / 3.5.
    assert recall_limit(5.0, {"a": 1.5, "b": 1.5}, 2) == pytest.approx(5.0 / 3.5)
    assert recall_limit(1.0, {}, 2) == 1.0 and recall_limit(math.nan, {"a": 1.0}, 2) == 1.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and math.isnan(percentile([], 50))
    assert QUICK.budget_s > 0


def test_redraw_from_saved_sessions_gives_the_same_rows(out: Path, doc: dict[str, Any]) -> None:
    from athena.bench.runner import redraw

    again_dir = out.parent / "redrawn"
    again_dir.mkdir()
    (again_dir / "sessions").mkdir()
    for kept in (out / "sessions").glob("*.pickle"):
        (again_dir / "sessions" / kept.name).write_bytes(kept.read_bytes())
    again = redraw(again_dir, "pytest redraw")
    assert again["rows"] == doc["rows"]
    assert again["regret"] == doc["regret"]
    assert (again_dir / "bench.md").read_text(encoding="utf-8").count("|") > 50


def test_store_builds_share_the_given_embedder_cache(tmp_path: Path, locomo_path: Path) -> None:
    """A regression: ``model or embedder`` dropped an empty (len 0, so falsy) cache, and every
    bulk build embedded each of its 103k texts again (13 minutes with the transformer)."""
    data = tmp_path / "two-conversations.json"
    data.write_text(json.dumps(json.loads(locomo_path.read_text(encoding="utf-8"))[:2]))
    model = load_embedder("static", cache_size=16_384)
    small = build_store("locomo", "static", data, tmp_path, model=model)
    distinct = model.misses
    assert distinct > 0 and model.hits < distinct / 10
    build_store("100k-tenants", "static", data, tmp_path, target=3 * small.memories, model=model)
    assert model.misses == distinct  # every copy's texts came from the cache
    assert model.hits >= 3 * small.memories


def test_a_working_copy_brings_the_stores_index_snapshots(tmp_path: Path) -> None:
    from athena import Memory
    from athena.bench.workloads import Store, working_copy

    pristine = tmp_path / "pristine.db"
    with Memory(pristine, hnsw_cutoff=30, pool="off") as memory:
        for i in range(50):
            memory.remember(f"note {i} on the lisbon trip", tenant="t", layer="semantic")
        assert memory.prepare_indexes() == 1
    store = Store("locomo", "static", pristine, 50, 1, (), 0.0)
    stale = tmp_path / "work" / "locomo-static.db.indexes" / "stale.snapshot"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")
    copy = working_copy(store, tmp_path / "work")
    assert not stale.exists()
    with Memory(copy, hnsw_cutoff=30, pool="off") as memory:
        assert memory.recall("lisbon", tenant="t", k=2).hits
        memory.remember("a write into the copy", tenant="t", layer="semantic")
        snaps = memory.pipeline.ctx.indexes.snapshots
        assert snaps is not None and snaps.loaded == 1  # same identity: the copy loads them
    (original,) = Path(f"{pristine}.indexes").glob("*.snapshot")
    (copied,) = Path(f"{copy}.indexes").glob("*.snapshot")
    assert original.read_bytes() == copied.read_bytes()


def test_the_arms_open_in_a_shuffled_order_and_come_back_as_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from athena.bench import arms as arms_module
    from athena.bench.arms import ARMS, Arm, open_arms, opening_order
    from athena.bench.workloads import STORES
    from athena.memory import Memory

    seeds = [f"{store}/{embedder}" for store in STORES for embedder in ("static", "transformer")]
    assert len({opening_order(ARMS, seed)[-1] for seed in seeds}) > 1  # not one arm last
    assert opening_order(ARMS, "s") == opening_order(ARMS, "s")  # one seed, one order
    db = tmp_path / "arms.db"
    with Memory(db) as memory:
        memory.remember("Ann plays the cello.", tenant="t")
    opened: list[str] = []

    class Counted(Arm):
        def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
            opened.append(name)
            super().__init__(name, *args, **kwargs)

    monkeypatch.setattr(arms_module, "Arm", Counted)
    names = ["baseline", "sequential", "cache", "hybrid", "adaptive"]
    with open_arms(db, "static", names, pools="off", shuffle="session") as arms:
        assert [arm.name for arm in arms] == names
        assert [arm.name for arm in sorted(arms, key=lambda arm: arm.opened)] == opened
    assert opened == opening_order(names, "session") != names
