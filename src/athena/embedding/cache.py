"""A content-addressed LRU cache in front of any :class:`Embedder`."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from athena.embedding.protocol import Embedder, Vectors
from athena.errors import EmbedderError


def text_key(text: str) -> str | bytes:
    """The cache key of ``text``: the text itself when it is short (its hash is kept by the
    string object, so the lookup of a query text already hashed costs nothing more), else
    the SHA-1 digest of its UTF-8 bytes (a long remembered text is not kept twice). The two
    kinds never compare equal.

    >>> text_key("hello")
    'hello'
    >>> text_key("x" * 1000).hex()
    'c3efa690fa3fdd2e2526853eed670538ea127638'
    """
    if len(text) <= KEY_CHARS:
        return text
    return hashlib.sha1(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()


# About 5 MB of 256-dim vectors (estimated from entry sizes) and their keys (texts of up to
# 512 characters: 2.3 MB more if all 4,096 are that long, in ASCII): room for the queries an agent
# repeats. Every remember brings a new text too, so a larger cache only fills: at the soak's
# 10 writes/s a 16,384-entry one needs about 27 minutes and 20 MB to fill. Bulk imports of
# repeated text pass their own.
DEFAULT_MAX_ENTRIES = 4_096
KEY_CHARS = 512  # texts up to this long are their own key


class CachingEmbedder:
    """Wraps ``inner`` with a bounded, thread-safe LRU cache keyed by text content.

    Only the texts not in the cache are sent to ``inner``, in one ``embed`` call. ``name`` and
    ``dim`` are the inner embedder's: cached vectors are exactly the ones it returned.

    >>> from athena.embedding import StaticEmbedder
    >>> e = CachingEmbedder(StaticEmbedder(), max_entries=1000)
    >>> _ = e.embed(["hi", "there"]); _ = e.embed(["hi"])
    >>> e.hits, e.misses
    (1, 2)
    """

    def __init__(self, inner: Embedder, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._inner = inner
        self._cache: OrderedDict[str | bytes, Vectors] = OrderedDict()  # oldest first
        self._max = max_entries
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def inner(self) -> Embedder:
        """The wrapped embedder."""
        return self._inner

    @property
    def name(self) -> str:
        """The inner embedder's name."""
        return self._inner.name

    @property
    def dim(self) -> int:
        """The inner embedder's dimension."""
        return self._inner.dim

    def __len__(self) -> int:
        """Number of cached vectors."""
        with self._lock:
            return len(self._cache)

    def clear(self) -> None:
        """Drop every cached vector and reset the counters."""
        with self._lock:
            self._cache.clear()
            self.hits = 0
            self.misses = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts``, reusing cached vectors; returns a fresh ``(len(texts), dim)`` array.

        A text repeated within one call is embedded once: one miss, then hits.

        >>> from athena.embedding import StaticEmbedder
        >>> CachingEmbedder(StaticEmbedder()).embed(["a", "a"]).shape
        (2, 256)
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single str")
        if len(texts) == 1:
            return self._one(texts[0])
        dim = self._inner.dim
        out = np.empty((len(texts), dim), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        missing: dict[str | bytes, list[int]] = {}
        with self._lock:
            cache = self._cache
            for i, key in enumerate(keys):
                vec = cache.get(key)
                if vec is not None:
                    cache.move_to_end(key)
                    out[i] = vec
                    self.hits += 1
                elif key in missing:
                    missing[key].append(i)
                    self.hits += 1
                else:
                    missing[key] = [i]
                    self.misses += 1
        if not missing:
            return out
        # Embed outside the lock: a slow model must not block cache hits in other threads.
        fresh = self._embed([texts[rows[0]] for rows in missing.values()])
        with self._lock:
            for (key, rows), vec in zip(missing.items(), fresh, strict=True):
                out[rows] = self._keep(key, vec)
        return out

    def _one(self, text: str) -> Vectors:
        """:meth:`embed` of one text (a recall's query): one lookup, and on a miss the inner
        embedder's own fresh array is returned as it is (the cache keeps a copy). The
        general path (keys, an output array, a dict of misses, copies, the LRU library's
        Python-level bookkeeping) cost a cold recall 37 µs over the bare model, measured
        between other recalls (`benchmarks/engine_overhead.py --parts`)."""
        key = text_key(text)
        with self._lock:
            vec = self._cache.get(key)
            if vec is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return vec.reshape(1, -1).copy()
            self.misses += 1
        fresh = self._embed([text])
        with self._lock:
            self._keep(key, fresh[0])
        return fresh if fresh.dtype == np.float32 else fresh.astype(np.float32)

    def _embed(self, texts: list[str]) -> Vectors:
        fresh = self._inner.embed(texts)
        if fresh.shape != (len(texts), self._inner.dim):
            raise EmbedderError(
                f"{self._inner.name} returned shape {fresh.shape}, "
                f"expected {(len(texts), self._inner.dim)}"
            )
        return fresh

    def _keep(self, key: str | bytes, vec: Vectors) -> Vectors:
        """Store a read-only copy of ``vec`` under ``key``, the oldest past the bound
        dropped (lock held); returns the copy."""
        stored = np.array(vec, dtype=np.float32)  # own copy, not a view of the caller's
        stored.setflags(write=False)
        cache = self._cache
        cache[key] = stored
        cache.move_to_end(key)
        while len(cache) > self._max:
            cache.popitem(last=False)
        return stored
