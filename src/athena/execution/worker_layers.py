"""The layers a worker process searches with: the same as its ``Memory``'s.

A ``Memory(layers=...)`` with a layer of its own (or a default one configured, such as
``EpisodicLayer(recency_weight=0.5)``) must have the workers search with those layers too,
or a DISTRIBUTED recall would answer from other code than the in-process strategies. The
layers are sent pickled: a layer pickles as its configuration (the graph layer's names are
per-process state and stay behind), and its class must be importable in a fresh process,
as ``spawn`` requires. Layers that cannot be pickled make the pool unavailable, with the
reason, and DISTRIBUTED recalls then fall back in process; so do layers that pickle but
cannot be rebuilt in a worker (a class it cannot import, such as one defined in a
notebook): the worker's start fails with its reason. A ``Memory`` pickles its layers once,
as they are configured when it is built.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping

from athena.errors import WorkerPoolUnavailable
from athena.layers import default_layers
from athena.layers.protocol import MemoryLayer


def portable_layers(layers: Mapping[str, MemoryLayer] | bytes | None) -> bytes | None:
    """``layers`` pickled for the workers; None (the default five) when not given; bytes
    this made already are passed through.

    Raises WorkerPoolUnavailable when a layer cannot be pickled.

    >>> from athena.layers import EpisodicLayer
    >>> portable_layers(None) is None
    True
    >>> sent = {**default_layers(), "episodic": EpisodicLayer(recency_weight=0.5)}
    >>> layers_from(portable_layers(sent))["episodic"].recency_weight
    0.5
    """
    if layers is None or isinstance(layers, bytes):
        return layers
    try:
        return pickle.dumps(tuple(layers.items()))
    except Exception as exc:
        raise WorkerPoolUnavailable(
            f"the layers cannot be sent to worker processes ({type(exc).__name__}: {exc}); "
            "a layer of your own must pickle, its class importable by module path"
        ) from exc


def layers_from(portable: bytes | None) -> dict[str, MemoryLayer]:
    """The layers :func:`portable_layers` pickled, rebuilt (in a worker)."""
    if portable is None:
        return default_layers()
    entries: tuple[tuple[str, MemoryLayer], ...] = pickle.loads(portable)
    return dict(entries)
