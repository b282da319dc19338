"""Does learned layer skipping cost recall? LoCoMo, sequential vs adaptive (after learning).

The dependency graph drops, per query type, layers that never contributed a final hit after
enough observations. This measures the evidence recall with and without that decision.

    python benchmarks/layer_skipping.py [--data PATH] [--out bench-out/layer_skipping.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from athena import Memory
from athena.bench.runner import resolve_data
from athena.locomo.evaluation import evaluate_locomo
from athena.locomo.importer import import_locomo

DEFAULT_DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("bench-out/layer_skipping.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Memory(Path(tmp) / "m.db", pool="off") as memory:
        import_locomo(memory, args.data)
        reference = evaluate_locomo(memory, args.data, strategy="sequential")
        learning = evaluate_locomo(memory, args.data, strategy="adaptive")  # learns
        memory.engine.cache.clear()  # type: ignore[attr-defined]  # measure it cold again
        skipping = evaluate_locomo(memory, args.data, strategy="adaptive")  # skips
        graph = memory.execution_stats()["graph"]["types"]
        chosen = {
            kind: sorted(n for n in stats["used"] if stats["contributed"].get(n, 0) == 0)
            for kind, stats in graph.items()
        }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/layer_skipping.py",
        "sequential_all_layers": reference.to_dict()["recall_at"],
        "adaptive_first_pass": learning.to_dict()["recall_at"],
        "adaptive_after_learning": skipping.to_dict()["recall_at"],
        "latency_ms": {
            "sequential": reference.to_dict()["latency_ms"],
            "adaptive_after_learning_cache_cleared": skipping.to_dict()["latency_ms"],
        },
        "never_contributed": chosen,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
