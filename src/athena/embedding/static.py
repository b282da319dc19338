"""The default embedder: a static (model2vec) distillation of all-MiniLM-L6-v2.

A static model is a token-embedding table plus a tokenizer: a sentence vector is the mean of
its tokens' vectors. It needs numpy and ``model2vec`` only (no torch) and embeds thousands of
sentences per second on one core. The model files ship inside the package, under
``athena/embedding/models/``; ``scripts/distill_static_model.py`` makes them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from athena.embedding.protocol import Vectors
from athena.errors import EmbedderError

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "minilm-static-256"


def l2_normalise(vectors: Vectors) -> Vectors:
    """Return ``vectors`` as float32 with unit-length rows; all-zero rows stay zero.

    >>> l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    safe = np.where(norms > 0.0, norms, np.float32(1.0)).astype(np.float32)
    return np.ascontiguousarray(out / safe, dtype=np.float32)


class StaticEmbedder:
    """Embeds texts with a packaged model2vec model; loads once, safe to share across threads.

    >>> e = StaticEmbedder()
    >>> e.name, e.dim
    ('static:minilm-static-256', 256)
    >>> e.embed(["a dog barks"]).shape
    (1, 256)
    """

    def __init__(self, model_dir: Path | str | None = None) -> None:
        path = Path(model_dir) if model_dir is not None else MODELS_DIR / DEFAULT_MODEL
        if not (path / "model.safetensors").is_file():
            raise EmbedderError(
                f"static embedding model not found at {path}; "
                "run scripts/distill_static_model.py or reinstall athena-memory"
            )
        try:
            from model2vec import StaticModel
        except ImportError as exc:  # pragma: no cover - model2vec is a core dependency
            raise EmbedderError(f"model2vec is missing ({exc}): pip install model2vec") from exc
        try:
            # float16 on disk (15 MB); float32 in memory (31 MB) embeds ~1.6x faster in numpy.
            self._model: Any = StaticModel.from_pretrained(str(path), quantize_to="float32")
        except Exception as exc:
            raise EmbedderError(f"cannot load static embedding model at {path}: {exc}") from exc
        self._name = f"static:{path.name}"
        self._dim = int(self._model.dim)
        # model2vec reconfigures its tokenizer on every encode() call, and the Rust tokenizer
        # refuses concurrent mutation ("Already borrowed"): serialise calls.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """Model id, e.g. ``"static:minilm-static-256"``."""
        return self._name

    @property
    def dim(self) -> int:
        """Vector dimension (256 for the packaged model)."""
        return self._dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` into float32 L2-normalised rows of shape ``(len(texts), dim)``.

        Texts with no known token (e.g. ``""``) get the zero vector.

        >>> StaticEmbedder().embed([]).shape
        (0, 256)
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str")
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            raw = self._model.encode(list(texts), normalize=False, use_multiprocessing=False)
        return l2_normalise(np.asarray(raw, dtype=np.float32).reshape(len(texts), self._dim))
