"""The five memory layers, each behind :class:`MemoryLayer`."""

from athena.layers.episodic import EpisodicLayer
from athena.layers.graph import GraphLayer
from athena.layers.procedural import ProceduralLayer
from athena.layers.prospective import ProspectiveLayer
from athena.layers.protocol import LayerContext, LayerResult, MemoryLayer, Prepared, SearchRequest
from athena.layers.semantic import SemanticLayer


def default_layers() -> dict[str, MemoryLayer]:
    """One instance of each layer, by name."""
    layers: list[MemoryLayer] = [
        EpisodicLayer(),
        SemanticLayer(),
        ProceduralLayer(),
        ProspectiveLayer(),
        GraphLayer(),
    ]
    return {layer.name: layer for layer in layers}


__all__ = [
    "EpisodicLayer",
    "GraphLayer",
    "LayerContext",
    "LayerResult",
    "MemoryLayer",
    "Prepared",
    "ProceduralLayer",
    "ProspectiveLayer",
    "SearchRequest",
    "SemanticLayer",
    "default_layers",
]
