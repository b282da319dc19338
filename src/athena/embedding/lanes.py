"""One batch split over several model calls run at once (see :mod:`athena.embedding.batching`).

A model that runs calls from several threads at once (``concurrent``, ONNX Runtime) holds
one core per call and releases the GIL, so a batch split in two lanes uses both cores; a
model that takes turns gets the batch whole.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np

from athena.embedding.protocol import Embedder, Vectors


class Lanes:
    """Runs ``inner`` on up to ``count`` parts of a batch at once: this thread runs the
    first part, ``count - 1`` helper threads (started on first use) the others.

    >>> from athena.embedding import StaticEmbedder
    >>> vectors, calls = Lanes(StaticEmbedder(), 2).embed(["a dog", "a cat"])
    >>> vectors.shape, calls  # the static model takes turns: one call, never split
    ((2, 256), 1)
    """

    def __init__(
        self, inner: Embedder, count: int, gate: threading.Semaphore | None = None
    ) -> None:
        if count < 1:
            raise ValueError("lanes must be positive")
        self._inner = inner
        self._count = count
        self._gate = gate  # if given, every model call holds one of its permits
        self._helpers: ThreadPoolExecutor | None = None
        self._helpers_pid = 0  # a forked child starts its own: the parent's thread is gone
        self._lock = threading.Lock()

    @property
    def lanes(self) -> int:
        """The most model calls run at once."""
        return self._count

    def embed(self, texts: list[str]) -> tuple[Vectors, int]:
        """``texts`` in one model call, or split into up to ``count`` calls run at once when
        the inner embedder allows it (the rows come back in order either way); with the
        number of calls made.

        >>> from athena.embedding import StaticEmbedder
        >>> Lanes(StaticEmbedder(), 1).embed(["one"])[1]
        1
        """
        lanes = min(self._count, len(texts))
        if lanes < 2 or not getattr(self._inner, "concurrent", False):
            return self._call(texts), 1
        size = -(-len(texts) // lanes)
        parts = [texts[i : i + size] for i in range(0, len(texts), size)]
        helpers = self._executor()
        others: list[Future[Vectors]] = [helpers.submit(self._call, p) for p in parts[1:]]
        try:
            first = self._call(parts[0])  # this thread runs a share too
        finally:
            wait(others)  # never more than ``count`` model calls, even when this one failed
        return np.concatenate([first, *(f.result() for f in others)]), len(parts)

    def _call(self, texts: list[str]) -> Vectors:
        """One model call, holding a permit of the gate if there is one."""
        if self._gate is None:
            return self._inner.embed(texts)
        with self._gate:
            return self._inner.embed(texts)

    def _executor(self) -> ThreadPoolExecutor:
        """The helper threads of this process, started on first use."""
        helpers = self._helpers
        if helpers is None or self._helpers_pid != os.getpid():
            with self._lock:
                if self._helpers is None or self._helpers_pid != os.getpid():
                    self._helpers = ThreadPoolExecutor(
                        self._count - 1, thread_name_prefix="athena-embed"
                    )
                    self._helpers_pid = os.getpid()
                helpers = self._helpers
        return helpers
