"""Concurrent embed calls coalesced into one model call (group commit, no added wait).

A transformer embeds one short query in about 10 ms but a batch at about 2.5 ms a text
(MEASURED.md: 400 sentences/s in batches of 64), and the model runs one call at a time.
Ten agents recalling at once used to queue ten single-text calls (about 100 ms for the
last); here the first caller runs at once, the callers that arrive meanwhile wait for it
and then go as one batch, led by the first of them.

A batch is split over the cores when the model runs calls from several threads at once
(``concurrent``, ONNX Runtime): a model call holds one core and releases the GIL, and under
a burst of recalls the embedding is nearly all the work (100k-tenants, 10 concurrent: the
layers took 1.7 ms of a 57 ms recall), so the other core sat idle while one ran the batch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Final

import numpy as np

from athena.embedding.lanes import Lanes
from athena.embedding.protocol import Embedder, Vectors
from athena.errors import EmbedderError

# Texts per coalesced model call. Not the model's own 64: on ONNX Runtime a text costs the
# same in a batch of 10 as of 64 (4.3 and 4.7 ms; benchmarks/transformer_runtime.py), and a
# batch answers no caller until all of it is done, while the recalls answered so far could
# run their layers on the other core (the model releases the GIL): a batch of 64 took 303
# ms, one of 10 43 ms. Measured with benchmarks/embed_batching.py, 100 concurrent embeds:
# p50 511 ms capped at 64, 350 ms at 16. One call with more texts (an import) goes whole.
MAX_BATCH: Final = 16
LANES: Final = min(2, os.cpu_count() or 1)  # model calls one batch is split into, at most


class _Request:
    __slots__ = ("done", "error", "lead", "result", "texts")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.done = threading.Event()
        self.lead = False  # woken to run the next batch, not with its result
        self.result: Vectors | None = None
        self.error: BaseException | None = None


class BatchingEmbedder:
    """Wraps ``inner`` so calls made while it is busy share its next call.

    A caller alone pays nothing extra: it runs its texts at once. ``name`` and ``dim`` are
    the inner embedder's; each caller gets exactly its own rows, in order.

    >>> from athena.embedding import StaticEmbedder
    >>> e = BatchingEmbedder(StaticEmbedder())
    >>> e.embed(["a dog", "a cat"]).shape, e.calls
    ((2, 256), 1)
    """

    def __init__(
        self,
        inner: Embedder,
        max_batch: int = MAX_BATCH,
        lanes: int = LANES,
        coalesce: bool | None = None,
    ) -> None:
        if max_batch < 1 or lanes < 1:
            raise ValueError("max_batch and lanes must be positive")
        self._inner = inner
        self._coalesce = coalesce  # None: unless the model embeds one text per call
        self._max = max_batch
        self._lanes = Lanes(inner, lanes)
        # Uncoalesced calls run on their callers' threads, at most ``lanes`` model calls at
        # once (a core each): more only queue on the cores. Without the bound, four recall
        # threads made 445 cold int8 recalls/s and two 569/s in one run (admission.py
        # --embedder transformer); with it, from four, 392/s against 363/s unbounded
        # (embed_recall.py, overlapping ranges).
        self._direct = Lanes(inner, lanes, threading.BoundedSemaphore(lanes))
        self._lock = threading.Lock()
        self._pending: list[_Request] = []
        self._busy = False
        self.calls = 0  # model calls made
        self.requests = 0  # embed calls answered

    @property
    def inner(self) -> Embedder:
        """The wrapped embedder."""
        return self._inner

    @property
    def lanes(self) -> int:
        """The most model calls made at once (a core each)."""
        return self._lanes.lanes

    @property
    def max_batch(self) -> int:
        """The most texts one model call takes."""
        return self._max

    @property
    def coalescing(self) -> bool:
        """Whether concurrent calls share model calls. By default not when the inner model
        embeds one text per call anyway (``per_text``, the int8 transformer): then each
        caller runs its texts at once on its own thread (a call of several split over the
        lanes). Two threads of single-text calls made 1,104 calls/s straight to the int8
        model and 718/s through the batches, each of which waited for the one before
        (medians of three, ``python benchmarks/embed_batching.py --throughput``)."""
        if self._coalesce is not None:
            return self._coalesce
        return not getattr(self._inner, "per_text", False)

    @property
    def name(self) -> str:
        """The inner embedder's name."""
        return self._inner.name

    @property
    def dim(self) -> int:
        """The inner embedder's dimension."""
        return self._inner.dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``, in one model call with whatever other calls are waiting.

        >>> from athena.embedding import StaticEmbedder
        >>> BatchingEmbedder(StaticEmbedder()).embed([]).shape
        (0, 256)
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not self.coalescing:
            vectors, calls = self._direct.embed(list(texts))
            with self._lock:
                self.calls += calls
                self.requests += 1
            return vectors
        request = _Request(list(texts))
        with self._lock:
            self._pending.append(request)
            lead = not self._busy
            self._busy = True
        while True:
            if lead:
                self._run_batch()
            request.done.wait()
            if request.lead:  # woken to lead the next batch, which holds this request
                request.lead = False
                request.done.clear()
                lead = True
                continue
            if request.error is not None:
                raise request.error
            assert request.result is not None
            return request.result

    def _run_batch(self) -> None:
        """Run the oldest waiting requests (up to ``max_batch`` texts) as one model call,
        then wake the next waiting request to lead the batch after it."""
        with self._lock:
            batch: list[_Request] = []
            size = 0
            while self._pending and (not batch or size + len(self._pending[0].texts) <= self._max):
                batch.append(self._pending.pop(0))
                size += len(batch[-1].texts)
        calls = 0
        try:
            calls = _answer(self._lanes, batch, self._inner)
            if any(request.error is not None for request in batch) and len(batch) > 1:
                # One caller's bad text must not fail the others: each alone, once more.
                calls += sum(_answer(self._lanes, [request], self._inner) for request in batch)
        except BaseException as exc:  # interrupted: nobody may be left waiting
            for request in batch:
                if request.result is None and request.error is None:
                    request.error = exc
            raise
        finally:
            with self._lock:
                self.calls += calls
                self.requests += len(batch)
                if self._pending:  # the next batch is led by its first waiting caller
                    self._pending[0].lead = True
                    self._pending[0].done.set()
                else:
                    self._busy = False
            for request in batch:
                request.done.set()


def _answer(lanes: Lanes, batch: list[_Request], inner: Embedder) -> int:
    """One model call of ``inner`` (split over ``lanes``) for ``batch``: each request gets
    its rows, or the error; returns the model calls made."""
    texts = [text for request in batch for text in request.texts]
    calls = 1
    try:
        expected = (len(texts), inner.dim)
        vectors, calls = lanes.embed(texts)
        if vectors.shape != expected:
            raise EmbedderError(f"{inner.name} returned shape {vectors.shape}, expected {expected}")
    except Exception as exc:
        for request in batch:
            request.result, request.error = None, exc
        return calls
    start = 0
    for request in batch:
        request.result, request.error = vectors[start : start + len(request.texts)], None
        start += len(request.texts)
    return calls
