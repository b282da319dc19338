"""The embedder seam: every embedding model sits behind :class:`Embedder`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of shape ``(len(texts), dim)``.

    ``name`` identifies the model and its version; it is part of every cache key and is
    stored with each vector, so vectors of two models are never compared.

    >>> from athena.embedding import load_embedder
    >>> e = load_embedder("static")
    >>> e.embed(["hello"]).shape == (1, e.dim)
    True
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors: ...
