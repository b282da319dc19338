"""BatchingEmbedder: concurrent calls share model calls, each caller gets its own rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from athena.embedding import (
    BatchingEmbedder,
    CachingEmbedder,
    StaticEmbedder,
    batch_width,
    embed_lanes,
    load_embedder,
)
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


def test_the_transformer_is_batched_behind_the_cache_unless_it_runs_int8() -> None:
    embedder = load_embedder("transformer")
    batching = embedder.inner  # type: ignore[attr-defined]
    assert isinstance(batching, BatchingEmbedder)
    assert embedder.name.startswith("transformer:all-MiniLM-L6-v2")  # -int8 by default
    assert batching.coalescing is not embedder.name.endswith("-int8")


class _Concurrent(_Slow):
    """A model that runs calls from several threads at once; records where each ran."""

    concurrent = True

    def __init__(self, fail_on: str | None = None) -> None:
        super().__init__(fail_on)
        self.threads: list[str] = []
        self.ran: list[tuple[str, tuple[str, ...]]] = []  # (thread, texts) of each call

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.threads.append(threading.current_thread().name)
        self.ran.append((threading.current_thread().name, tuple(texts)))
        return super().embed(texts)


def test_a_batch_is_split_over_the_lanes_when_the_model_runs_calls_at_once() -> None:
    inner = _Concurrent()
    embedder = BatchingEmbedder(inner, lanes=2)
    texts = [f"question number {i}" for i in range(9)]
    out = embedder.embed(texts)
    np.testing.assert_allclose(out, inner.model.embed(texts), rtol=1e-6, atol=1e-6)  # in order
    assert sorted(inner.sizes) == [4, 5]
    assert sum(name.startswith("athena-embed") for name in inner.threads) == 1
    assert embedder.calls == 2  # two model calls made
    inner.sizes.clear()
    assert embedder.embed(["one"]).shape == (1, inner.dim)
    assert inner.sizes == [1]  # one text: one call


def test_a_model_that_takes_turns_is_never_split() -> None:
    inner = _Slow()  # no ``concurrent``: calls must take turns
    embedder = BatchingEmbedder(inner, lanes=2)
    embedder.embed([f"q {i}" for i in range(8)])
    assert inner.sizes == [8]
    with pytest.raises(ValueError):
        BatchingEmbedder(inner, lanes=0)


def test_a_split_batch_that_fails_in_a_helper_fails_its_callers_only() -> None:
    inner = _Concurrent(fail_on="poison")
    embedder = BatchingEmbedder(inner, lanes=2)
    with pytest.raises(EmbedderError):
        embedder.embed(["fine", "x", "y", "poison"])  # "y", "poison" go to the helper
    assert next(name for name, texts in inner.ran if "poison" in texts).startswith("athena-embed")
    out = _concurrently(embedder, [["fine"], ["also fine", "more"], ["x", "poison"]])
    assert isinstance(out[2], EmbedderError)
    for texts, vectors in zip([["fine"], ["also fine", "more"]], out[:2], strict=True):
        assert isinstance(vectors, np.ndarray)
        np.testing.assert_allclose(vectors, inner.model.embed(texts), rtol=1e-6, atol=1e-6)


@pytest.mark.transformer
def test_the_transformer_split_over_threads_gives_the_vectors_of_one_call() -> None:
    """The real model on ONNX Runtime: concurrent calls, split over two lanes, return what
    one unsplit call does (the session and its tokenizer are shared by the threads)."""
    from athena.embedding.transformer import TransformerEmbedder

    model = TransformerEmbedder()
    model.load()
    if not model.concurrent:
        pytest.skip("the torch runtime takes turns; nothing is split")
    batches = [[f"When did Caroline go to the support group, time {i}?"] * (1 + i % 3)
               for i in range(12)]  # fmt: skip
    out = _concurrently(BatchingEmbedder(model, lanes=2), batches)
    for texts, vectors in zip(batches, out, strict=True):
        assert isinstance(vectors, np.ndarray)
        np.testing.assert_allclose(vectors, model.embed(texts), rtol=1e-5, atol=1e-5)


def test_batch_width_is_found_through_wrappers() -> None:
    assert batch_width(load_embedder("static")) == 1
    wrapped = CachingEmbedder(BatchingEmbedder(StaticEmbedder(), max_batch=8))
    assert batch_width(wrapped) == 8


class _PerText(_Concurrent):
    """A model that embeds one text per call whatever it gets (as the int8 transformer
    does): counts the calls running at once."""

    per_text = True

    def __init__(self) -> None:
        super().__init__()
        self.active = self.most = 0
        self.count = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        with self.count:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            return super().embed(texts)
        finally:
            with self.count:
                self.active -= 1


def test_a_model_that_embeds_one_text_per_call_is_called_at_once_not_batched() -> None:
    """Coalescing gains a per-text model nothing, and made each batch wait for the one
    before: each caller calls it on its own thread, at most ``lanes`` calls at once."""
    inner = _PerText()
    embedder = BatchingEmbedder(inner, lanes=2)
    assert not embedder.coalescing and batch_width(embedder) == 1
    batches = [[f"question {i}"] for i in range(6)]
    out = _concurrently(embedder, batches)
    assert inner.sizes == [1] * 6 and embedder.calls == 6 and embedder.requests == 6
    assert inner.most == 2  # never more calls than lanes, though six callers came at once
    assert sum(name.startswith("athena-embed") for name in inner.threads) == 0  # callers' own
    for texts, vectors in zip(batches, out, strict=True):
        assert isinstance(vectors, np.ndarray)
        np.testing.assert_allclose(vectors, inner.model.embed(texts), rtol=1e-6, atol=1e-6)
    inner.sizes.clear()
    embedder.embed([f"import row {i}" for i in range(8)])  # one call of many: both lanes
    assert sorted(inner.sizes) == [4, 4]


def test_coalescing_can_be_asked_for_and_a_failure_still_fails_its_caller_only() -> None:
    inner = _PerText()
    forced = BatchingEmbedder(inner, lanes=2, coalesce=True)
    assert forced.coalescing and batch_width(forced) == forced.max_batch
    out = _concurrently(forced, [["a"], ["b"], ["c"], ["d"]])
    assert all(isinstance(v, np.ndarray) for v in out)
    assert forced.calls < 4  # some callers shared a model call
    poisoned = _PerText()
    poisoned.fail_on = "poison"
    direct = BatchingEmbedder(poisoned, lanes=2)
    out = _concurrently(direct, [["fine"], ["poison"], ["also fine"]])
    assert isinstance(out[1], EmbedderError)
    assert isinstance(out[0], np.ndarray) and isinstance(out[2], np.ndarray)


def test_embed_lanes_counts_a_per_text_models_lanes_only() -> None:
    class PerText(StaticEmbedder):
        per_text = True
        concurrent = True

    assert embed_lanes(CachingEmbedder(BatchingEmbedder(PerText(), lanes=2))) == 2
    assert embed_lanes(BatchingEmbedder(PerText(), lanes=2, coalesce=True)) == 0
    assert embed_lanes(BatchingEmbedder(StaticEmbedder())) == 0  # coalesces: a batch
    assert embed_lanes(StaticEmbedder()) == 0
