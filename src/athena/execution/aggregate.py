"""Fusing per-layer rankings into one ranking, keyed by memory id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from athena.layers.protocol import LayerResult
from athena.retrieval.fusion import rrf

LAYER_WEIGHTS: Final[Mapping[str, float]] = {
    "episodic": 1.0,
    "semantic": 1.0,
    "procedural": 1.0,
    "prospective": 1.0,
    "graph": 0.25,
}


def fuse(results: Mapping[str, LayerResult], layers: tuple[str, ...]) -> list[tuple[int, float]]:
    """RRF over the layers' rankings, in canonical layer order so the result never depends on
    which source (cache, thread, worker process) delivered each layer.

    >>> r = {"semantic": LayerResult("semantic", (2, 1), (0.9, 0.8))}
    >>> fuse(r, ("semantic",))[0][0]
    2
    """
    return rrf(
        (results[name].ids, LAYER_WEIGHTS.get(name, 1.0)) for name in layers if name in results
    )


class ResultAggregator:
    """Merges per-layer results from the cache, the reader threads and the worker pool.

    Two results for the same layer conflict; the one that read the newer generation wins,
    then the more confident one (a fresh search is fully confident; a cached one decays
    with age). Overall confidence is the mean over layers.
    """

    def merge(
        self, sources: list[tuple[Mapping[str, LayerResult], Mapping[str, float]]]
    ) -> tuple[dict[str, LayerResult], float]:
        """``sources``: (results by layer, confidence by layer) from each source.

        >>> fresh = {"semantic": LayerResult("semantic", (1,), (1.0,), generation=3)}
        >>> old = {"semantic": LayerResult("semantic", (2,), (1.0,), generation=2)}
        >>> merged, _ = ResultAggregator().merge([(old, {"semantic": 0.9}), (fresh, {})])
        >>> merged["semantic"].ids
        (1,)
        """
        chosen: dict[str, tuple[LayerResult, float]] = {}
        for results, confidences in sources:
            for name, result in results.items():
                confidence = confidences.get(name, 1.0)
                current = chosen.get(name)
                if current is None or (result.generation, confidence) > (
                    current[0].generation,
                    current[1],
                ):
                    chosen[name] = (result, confidence)
        merged = {name: result for name, (result, _) in chosen.items()}
        overall = sum(c for _, c in chosen.values()) / len(chosen) if chosen else 1.0
        return merged, overall
