"""Smoke test of benchmarks/engine.py: every phase on a tiny slice, and the shape of its output.

It never asserts on a timing: only that each figure is there and has the right type.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("threadpoolctl")  # the benchmark's one extra (the transformer extra has it)
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "engine.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("engine_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


engine = _load()

pytestmark = pytest.mark.skipif(not engine.DATA.exists(), reason="LoCoMo data not present")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs every phase once (static embedder, tiny sizes) and writes the outputs."""
    work = tmp_path_factory.mktemp("engine-bench")
    path = work / "one-conversation.json"
    path.write_text(json.dumps(json.loads(engine.DATA.read_text(encoding="utf-8"))[1:2]))
    static: dict[str, Any] = {"import": engine.bench_import("static", path, work, 1)}
    static["locomo"] = engine.bench_locomo("static", work / "locomo-static.db", path)
    for shape in ("many_tenants", "one_tenant"):
        static[shape] = engine.bench_scale("static", shape, path, work, 1_500, 10)
    out: dict[str, Any] = {
        "meta": {"machine": engine.machine(), "quick": True},
        "embedders": {"static": static, "transformer": {"import": {"error": "not run"}}},
        # 1,200 is past the slice's distinct vectors, so noisy replicas are exercised too.
        "hnsw": engine.bench_hnsw(path, (300, 1_200), 10),
    }
    engine.write_outputs(out, work / "out")
    return work / "out"


@pytest.fixture(scope="module")
def results(out_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out_dir / "engine.json").read_text())
    return loaded


def test_import_and_locomo_figures(results: dict[str, Any]) -> None:
    static = results["embedders"]["static"]
    assert static["import"]["memories"] > 0
    assert {"runs", "per_second", "per_second_runs"} <= static["import"].keys()
    loc = static["locomo"]
    assert set(loc["evaluation"]["recall_at"]) == {"5", "10", "25", "50"}
    assert loc["evaluation"]["by_category"]
    assert {"p50", "p95", "queries"} <= loc["latency_ms"].keys()
    assert loc["warm_up"]["tenants"] == 1


def test_scale_figures(results: dict[str, Any]) -> None:
    static = results["embedders"]["static"]
    for shape, tenants in (("many_tenants", None), ("one_tenant", 1)):
        s = static[shape]
        assert s["memories"] >= 1_500
        assert {"build_s", "db_mib", "embed_cache_hit_share", "goal_p50_met"} <= s.keys()
        assert s["latency_ms"]["queries"] == 10
        assert s["vector_index"]["largest"]["backend"] in ("ExactBackend", "HnswBackend")
        assert tenants is None or s["tenants"] == tenants
    assert static["many_tenants"]["tenants"] > 1


def test_hnsw_sweep(results: dict[str, Any]) -> None:
    h = results["hnsw"]
    assert [row["n"] for row in h["sizes"]] == [300, 1_200]
    for row in h["sizes"]:
        assert {"exact_ms", "exact_1t_ms", "hnsw_ms", "hnsw_build_s"} <= row.keys()
        assert 0.0 <= row["hnsw_recall_at_10"] <= 1.0
    assert "crossover_n" in h and h["default_cutoff"] == 20_000


def test_outputs_written(out_dir: Path) -> None:
    for name in ("engine.json", "engine.md", "latency.png", "hnsw.png"):
        assert (out_dir / name).stat().st_size > 0
    text = (out_dir / "engine.md").read_text()
    assert "DRAGON" in text and "Exact vs HNSW" in text
    assert "Failed phases: transformer/import: not run" in text


def test_crossover_interpolates() -> None:
    rows = [
        {"n": 1_000, "exact_ms": 1.0, "hnsw_ms": 2.0},
        {"n": 4_000, "exact_ms": 3.0, "hnsw_ms": 2.0},
    ]
    assert engine.crossover(rows) == 2_000  # halfway between in log n
    assert engine.crossover(rows[:1]) is None
    assert engine.crossover(rows[1:]) == 4_000
