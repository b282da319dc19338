"""A content-addressed LRU cache in front of any :class:`Embedder`."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np
from cachetools import LRUCache

from athena.embedding.protocol import Embedder, Vectors
from athena.errors import EmbedderError


def text_key(text: str) -> bytes:
    """The cache key of ``text``: the SHA-1 digest of its UTF-8 bytes.

    >>> text_key("hello").hex()
    'aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d'
    """
    return hashlib.sha1(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()


# About 5 MB of 256-dim vectors (estimated from entry sizes): room for the queries an agent
# repeats. Every remember brings a new text too, so a larger cache only fills: at the soak's
# 10 writes/s a 16,384-entry one needs about 27 minutes and 20 MB to fill. Bulk imports of
# repeated text pass their own.
DEFAULT_MAX_ENTRIES = 4_096


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
        self._cache: LRUCache[bytes, Vectors] = LRUCache(maxsize=max_entries)
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
        dim = self._inner.dim
        out = np.empty((len(texts), dim), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        missing: dict[bytes, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                vec = self._cache.get(key)
                if vec is not None:
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
        fresh = self._inner.embed([texts[rows[0]] for rows in missing.values()])
        if fresh.shape != (len(missing), dim):
            raise EmbedderError(
                f"{self._inner.name} returned shape {fresh.shape}, expected {(len(missing), dim)}"
            )
        with self._lock:
            for (key, rows), vec in zip(missing.items(), fresh, strict=True):
                stored = np.array(vec, dtype=np.float32)  # own copy, not a view of `fresh`
                stored.setflags(write=False)
                self._cache[key] = stored
                out[rows] = stored
        return out
