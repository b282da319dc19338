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
