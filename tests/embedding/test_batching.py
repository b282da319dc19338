"""BatchingEmbedder: concurrent calls share model calls, each caller gets its own rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from athena.embedding import BatchingEmbedder, StaticEmbedder, load_embedder
from athena.embedding.protocol import Vectors
from athena.errors import EmbedderError


class _Slow:
    """The real static model, held busy for a while per call (as a transformer is)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.model = StaticEmbedder()
        self.sizes: list[int] = []
        self.fail_on = fail_on
        self.name, self.dim = self.model.name, self.model.dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.sizes.append(len(texts))
        time.sleep(0.03)
        if self.fail_on in texts:
            raise EmbedderError("the model failed")
        return self.model.embed(texts)


def _concurrently(embedder: BatchingEmbedder, batches: list[list[str]]) -> list[object]:
    out: list[object] = [None] * len(batches)
    gate = threading.Barrier(len(batches))

    def call(i: int) -> None:
        gate.wait()
        try:
            out[i] = embedder.embed(batches[i])
        except EmbedderError as exc:
            out[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_concurrent_calls_share_model_calls_and_get_their_own_rows() -> None:
    inner = _Slow()
    embedder = BatchingEmbedder(inner)
    batches = [[f"question {i}", f"another {i}"][: 1 + i % 2] for i in range(10)]
    out = _concurrently(embedder, batches)
    for texts, vectors in zip(batches, out, strict=True):
        assert isinstance(vectors, np.ndarray)
        np.testing.assert_allclose(vectors, inner.model.embed(texts), rtol=1e-6, atol=1e-6)
    assert len(inner.sizes) < len(batches)  # the ten calls went as fewer model calls
    assert sum(inner.sizes) == sum(len(b) for b in batches)
    assert embedder.requests == len(batches) and embedder.calls == len(inner.sizes)


def test_a_batch_never_exceeds_max_batch_unless_one_call_does() -> None:
    inner = _Slow()
    embedder = BatchingEmbedder(inner, max_batch=3)
    out = _concurrently(embedder, [["a", "b"], ["c", "d"], ["e"], ["f", "g", "h", "i"]])
    assert all(isinstance(v, np.ndarray) for v in out)
    assert max(inner.sizes) <= 4 and all(s <= 3 or s == 4 for s in inner.sizes)


def test_a_failed_model_call_fails_its_callers_only() -> None:
    inner = _Slow(fail_on="poison")
    embedder = BatchingEmbedder(inner)
    out = _concurrently(embedder, [["poison"], ["fine"], ["also fine"]])
    assert isinstance(out[0], EmbedderError)
    for texts, vectors in zip([["fine"], ["also fine"]], out[1:], strict=True):
        assert isinstance(vectors, np.ndarray)  # batched with the poison, answered alone
        np.testing.assert_allclose(vectors, inner.model.embed(texts), rtol=1e-6, atol=1e-6)
    after = embedder.embed(["fine"])  # the embedder still works, and is not stuck busy
    np.testing.assert_allclose(after, inner.model.embed(["fine"]), rtol=1e-6, atol=1e-6)


def test_single_calls_run_at_once_and_bad_input_is_refused() -> None:
    inner = _Slow()
    embedder = BatchingEmbedder(inner)
    assert embedder.embed(["one"]).shape == (1, inner.dim)
    assert embedder.embed([]).shape == (0, inner.dim)
    assert inner.sizes == [1]
    with pytest.raises(TypeError):
        embedder.embed("one")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BatchingEmbedder(inner, max_batch=0)


def test_the_transformer_is_batched_behind_the_cache() -> None:
    embedder = load_embedder("transformer")
    assert isinstance(embedder.inner, BatchingEmbedder)  # type: ignore[attr-defined]
    assert embedder.name == "transformer:all-MiniLM-L6-v2"
