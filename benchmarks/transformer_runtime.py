"""The transformer embedder's runtimes, torch, ONNX Runtime and its int8 graph, side by side.

``python benchmarks/transformer_runtime.py [--queries 300] [--rounds 2] [--out DIR]`` loads
the runtimes of the packaged all-MiniLM-L6-v2 in one process and embeds LoCoMo questions
one at a time (a recall's query), then in batches of 10 and 64 (a burst; an import), the
arms alternating call by call (A B C A B C) so machine noise hits them alike. Each runtime
is also started in a fresh process of its own, twice, alternating, for its load time and
peak memory. Agreement: the largest difference of ONNX Runtime's vectors from torch's, and
the least and median cosine of the int8 vectors to torch's. Writes
``transformer_runtime.json`` and ``.md`` under ``DIR`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from athena.bench.runner import resolve_data
from athena.embedding.transformer import TransformerEmbedder

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it
ARMS = ("torch", "onnx", "int8")
START = """
import sys, time
start = time.perf_counter()
from athena.embedding.transformer import TransformerEmbedder
e = TransformerEmbedder(runtime=sys.argv[1])
e.embed(["hello"])
took = time.perf_counter() - start
# VmHWM, not ru_maxrss: ru_maxrss carries over the parent's peak across exec on Linux.
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(took, int(peak) / 1024, "torch" in sys.modules)
"""


def questions(path: Path) -> list[str]:
    return [qa["question"] for conv in json.loads(path.read_text()) for qa in conv["qa"]]


def timed(embedder: TransformerEmbedder, texts: list[str]) -> float:
    start = time.perf_counter()
    embedder.embed(texts)
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    asks = questions(DATA)[: args.queries]
    arms = {name: TransformerEmbedder(runtime=name) for name in ARMS}
    for arm in arms.values():
        arm.load()
    reference = arms["torch"].embed(asks)
    agree = float(np.abs(arms["onnx"].embed(asks) - reference).max())
    cosines = (arms["int8"].embed(asks) * reference).sum(axis=1)
    cells: dict[str, dict[str, list[float]]] = {
        shape: {name: [] for name in ARMS} for shape in ("1", "10", "64")
    }
    for round_ in range(args.rounds):
        order = ARMS if round_ % 2 == 0 else ARMS[::-1]
        for size in (1, 10, 64):
            for start in range(0, len(asks) - size + 1, size):
                for name in order:
                    cells[str(size)][name].append(timed(arms[name], asks[start : start + size]))
    starts: dict[str, list[list[float]]] = {name: [] for name in ARMS}
    for _ in range(2):
        for name in ARMS:
            out = subprocess.run(
                [sys.executable, "-c", START, name], capture_output=True, text=True, check=True
            )
            took, rss, torch = out.stdout.split()
            starts[name].append([float(took), float(rss), float(torch == "True")])
    rows = []
    for name in ARMS:
        row: dict[str, object] = {"runtime": name}
        for size, by_arm in cells.items():
            values = sorted(by_arm[name])
            row[f"batch_{size}_p50_ms"] = round(statistics.median(values), 2)
            row[f"batch_{size}_p95_ms"] = round(values[int(0.95 * (len(values) - 1))], 2)
        row["start_s"] = [round(s[0], 2) for s in starts[name]]
        row["peak_rss_mib"] = [round(s[1]) for s in starts[name]]
        row["imports_torch"] = bool(starts[name][0][2])
        rows.append(row)
    p50 = {str(row["runtime"]): row for row in rows}

    def ratio(slow: str, fast: str, size: str) -> float:
        key = f"batch_{size}_p50_ms"
        return round(float(p50[slow][key]) / float(p50[fast][key]), 2)  # type: ignore[arg-type]

    pairs = (("torch", "onnx"), ("onnx", "int8"))
    ratios = {f"{a}/{b}": {size: ratio(a, b, size) for size in cells} for a, b in pairs}
    int8_cosine = {
        "min": round(float(cosines.min()), 4),
        "median": round(float(np.median(cosines)), 4),
    }
    result = {"queries": len(asks), "rounds": args.rounds, "max_abs_diff": agree, "rows": rows,
              "p50_ratios": ratios, "int8_cosine_to_torch": int8_cosine}  # fmt: skip
    lines = [
        "| runtime | 1 query p50 / p95 ms | 10 p50 ms | 64 p50 ms | start s (2 processes) "
        "| peak RSS MiB | imports torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['runtime']} | {row['batch_1_p50_ms']} / {row['batch_1_p95_ms']} "
            f"| {row['batch_10_p50_ms']} | {row['batch_64_p50_ms']} | {row['start_s']} "
            f"| {row['peak_rss_mib']} | {row['imports_torch']} |"
        )
    lines.append(
        f"\np50 ratios: {ratios}; onnx's largest difference from torch {agree:.2e}; "
        f"int8's cosine to torch {int8_cosine}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transformer_runtime.json").write_text(json.dumps(result, indent=1))
    (args.out / "transformer_runtime.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
