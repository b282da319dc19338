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
        # One encode() leaves the tokenizer set for the model's own max_length, as every
        # later call finds it; the direct path below then only reads it.
        self._model.encode(["warm up"], use_multiprocessing=False)
        model = self._model
        self._direct = (  # else (token weights, a mapping, an older model2vec): encode()
            getattr(model, "token_mapping", None) is None
            and getattr(model, "weights", None) is None
            and all(hasattr(model, a) for a in ("tokenize", "median_token_length", "max_length"))
        )

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
            if self._direct:
                raw = self._mean_of_tokens(list(texts))
            else:
                raw = self._model.encode(list(texts), normalize=False, use_multiprocessing=False)
        return l2_normalise(np.asarray(raw, dtype=np.float32).reshape(len(texts), self._dim))

    def _mean_of_tokens(self, texts: list[str]) -> Vectors:
        """What ``StaticModel.encode(texts, normalize=False)`` returns, computed as it does
        (the same truncation, tokens and per-length means: equal bits, checked by the tests)
        without its per-call progress bar, batching and tokenizer reconfiguration: a LoCoMo
        question in 102 µs instead of 146 between recalls, and a cold recall 4% sooner
        (``benchmarks/static_embed.py``).
        """
        model = self._model
        if model.max_length is not None:
            cut = model.max_length * model.median_token_length
            texts = [text[:cut] for text in texts]
        ids = model.tokenize(texts)
        out = np.zeros((len(ids), self._dim), dtype=np.float32)
        lengths: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            if row:
                lengths.setdefault(len(row), []).append(i)
        for rows in lengths.values():
            matrix = np.array([ids[i] for i in rows], dtype=np.int64)
            out[rows] = model.embedding[matrix].mean(axis=1)
        return out
