"""LoCoMo evidence recall, as the LoCoMo paper defines it.

For a question with evidence turns E and a ranked list of hits, R@k is the share of E found
among the source ids of the top-k hits; it is averaged over the questions that have
(well-formed) evidence. Reported overall and per category: 1 multi-hop, 2 temporal,
3 open-domain, 4 single-hop, 5 adversarial.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from athena.locomo.data import load_locomo
from athena.memory import Memory

KS = (5, 10, 25, 50)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
DRAGON = {5: 56.7, 10: 66.2, 25: 76.7, 50: 82.7}
# Session summaries and event items cite no turns, so they can never count as evidence;
# the evaluation retrieves over what can (turns and the observations that cite turns).
EVIDENCE_KINDS = ("turn", "observation")


@dataclass(slots=True)
class EvalReport:
    recall_at: dict[int, float]
    by_category: dict[int, dict[int, float]]
    counts: dict[int, int]
    latencies_ms: list[float] = field(repr=False)
    questions: int
    evaluated: int

    def latency(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "recall_at": {str(k): round(v, 2) for k, v in self.recall_at.items()},
            "by_category": {
                str(cat): {
                    "name": CATEGORIES.get(cat, str(cat)),
                    "questions": self.counts[cat],
                    "recall_at": {str(k): round(v, 2) for k, v in scores.items()},
                }
                for cat, scores in sorted(self.by_category.items())
            },
            "latency_ms": {
                "p50": round(self.latency(0.50), 3),
                "p95": round(self.latency(0.95), 3),
            },
            "questions": self.questions,
            "evaluated": self.evaluated,
        }


def evidence_recall(evidence: Sequence[str], sources: Sequence[Sequence[str]], k: int) -> float:
    """Share of ``evidence`` among the sources of the first ``k`` hits.

    >>> evidence_recall(["D1:1", "D1:2"], [["D1:2"], ["D9:9"], ["D1:1"]], 2)
    0.5
    """
    found = {source for hit in sources[:k] for source in hit}
    return sum(1 for e in evidence if e in found) / len(evidence)


def evaluate_locomo(
    memory: Memory,
    path: str | Path,
    *,
    ks: Sequence[int] = KS,
    layers: Sequence[str] | None = None,
    kinds: Sequence[str] | None = EVIDENCE_KINDS,
    strategy: str = "sequential",
    tenant_prefix: str = "",
    progress: Callable[[int], None] | None = None,
) -> EvalReport:
    """Run every LoCoMo question as a recall in its conversation's tenant and score it."""
    conversations = load_locomo(path)
    depth = max(ks)
    totals: dict[int, float] = defaultdict(float)
    per_cat: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[int, int] = defaultdict(int)
    latencies: list[float] = []
    asked = evaluated = 0
    for conv in conversations:
        tenant = tenant_prefix + conv.sample_id
        for question in conv.questions:
            asked += 1
            start = time.perf_counter()
            hits = memory.recall(
                question.question,
                tenant=tenant,
                k=depth,
                layers=layers,
                kinds=kinds,
                strategy=strategy,
            ).hits
            latencies.append((time.perf_counter() - start) * 1000.0)
            if progress:
                progress(1)
            if not question.evidence:
                continue
            evaluated += 1
            counts[question.category] += 1
            sources = [hit.sources for hit in hits]
            for k in ks:
                score = evidence_recall(question.evidence, sources, k)
                totals[k] += score
                per_cat[question.category][k] += score
    return EvalReport(
        recall_at={k: 100.0 * totals[k] / max(evaluated, 1) for k in ks},
        by_category={
            cat: {k: 100.0 * v / counts[cat] for k, v in scores.items()}
            for cat, scores in per_cat.items()
        },
        counts=dict(counts),
        latencies_ms=latencies,
        questions=asked,
        evaluated=evaluated,
    )
