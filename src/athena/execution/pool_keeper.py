"""The engine's worker pool, kept: started on first use, rebuilt when it breaks, closed once.

The pool itself is any :class:`~athena.execution.backend.WorkerBackend`; this holds the one
an engine uses and replaces it, so a recall never starts a pool (or waits for one to start
again) on its own path.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from athena.errors import WorkerPoolUnavailable
from athena.execution.backend import PoolLoad, WorkerBackend
from athena.execution.pool_warmth import WarmTenants
from athena.layers.protocol import LayerResult, SearchRequest

POOL_REBUILD_S: Final = 5.0  # the shortest gap between two rebuilds of a broken pool


class PoolKeeper:
    """Starts, rebuilds and closes the worker pool that ``factory`` builds.

    >>> keeper = PoolKeeper(None)  # no pool configured
    >>> keeper.get() is None, keeper.health()["started"]
    (True, False)
    """

    def __init__(self, factory: Callable[[], WorkerBackend] | None, *, eager: bool = False) -> None:
        self._factory = factory
        self.backend: WorkerBackend | None = None
        self.error: str | None = None  # why the pool could not start, if it could not
        self.rebuilds = 0
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()  # held while the pool starts (seconds)
        self._rebuilding, self._rebuilt_at, self._closed = False, float("-inf"), False
        # Warm in the pool's workers. A weak reference: a keeper dropped without close()
        # is freed at once, and its pool's finalizer stops the workers then.
        keeper = weakref.ref(self)
        self.tenants = WarmTenants(lambda: getattr(keeper(), "backend", None))
        self._warm = self.tenants.warm_set  # read on every adaptive recall: one lookup less
        if eager and factory is not None:
            threading.Thread(target=self.get, name="athena-pool-start", daemon=True).start()

    def get(self) -> WorkerBackend | None:
        """The worker pool, started on first use (never per recall); None if it cannot run.

        A pool that broke after it ran is rebuilt on a background thread, at most once per
        ``POOL_REBUILD_S``; until the new one is up, recalls fall back without waiting.
        """
        backend = self.backend
        if backend is not None and backend.broken:
            self._rebuild(backend)
        if self.backend is not None or self._factory is None:
            return self.backend
        with self._start_lock:
            if self.backend is None and self.error is None:
                try:
                    backend = self._factory()  # refused if its workers cannot be configured
                except WorkerPoolUnavailable as exc:
                    self.error = str(exc)
                    return None
                try:
                    backend.start()
                    self.backend = backend
                except WorkerPoolUnavailable as exc:
                    self.error = str(exc)
                    backend.close()
        return self.backend

    def ready(self) -> bool:
        """Configured, not failed to start, and a worker ready or the pool yet to start.

        >>> PoolKeeper(None).ready()
        False
        """
        if self._factory is None or self.error is not None:
            return False
        backend = self.backend
        return backend is None or backend.load().available

    def load(self) -> PoolLoad | None:
        """The running pool's load, without starting one (None if none runs)."""
        backend = self.backend
        return backend.load() if backend is not None else None

    def is_warm(self, tenant: str) -> bool:
        """Whether the pool's last run for ``tenant`` found its indexes loaded."""
        return tenant in self._warm

    def served(
        self,
        tenant: str,
        results: Mapping[str, LayerResult],
        backend: WorkerBackend | None = None,
    ) -> bool:
        """:meth:`WarmTenants.served`: note a run for ``tenant``; whether its workers built.

        >>> keeper = PoolKeeper(None)
        >>> keeper.served("t", {}), keeper.is_warm("t")
        (False, True)
        """
        return self.tenants.served(tenant, results, backend)

    def warm(self, tenant: str, request: SearchRequest, layers: Sequence[str]) -> bool:
        """:meth:`WarmTenants.warm`: warm ``tenant`` on the pool in the background.

        >>> # keeper.warm("t", pipeline.request(query, generations), ["episodic"])
        """
        return self.tenants.warm(tenant, request, layers)

    @property
    def warming(self) -> bool:
        return self.tenants.warming

    def _rebuild(self, broken: WorkerBackend) -> None:
        now = time.monotonic()
        with self._lock:
            if self._rebuilding or now - self._rebuilt_at < POOL_REBUILD_S:
                return
            self._rebuilding, self._rebuilt_at = True, now
        threading.Thread(
            target=_replace, args=(self, broken), name="athena-pool-rebuild", daemon=True
        ).start()

    def health(self) -> dict[str, Any]:
        """The pool's health (``started`` false if none runs), its start error, rebuilds."""
        backend = self.backend
        pool: dict[str, Any] = backend.health() if backend is not None else {"started": False}
        if self.error:
            pool["error"] = self.error
        pool["rebuilds"] = self.rebuilds
        return pool

    def close(self) -> None:
        """Close the pool; a rebuild finishing later closes its own pool instead."""
        with self._start_lock:
            self._closed = True
        if self.backend is not None:
            self.backend.close()


def _replace(keeper: PoolKeeper, broken: WorkerBackend) -> None:
    """Thread: start a fresh pool and swap it in for ``broken`` (a keeper's rebuild)."""
    assert keeper._factory is not None
    try:
        try:
            fresh = keeper._factory()
        except WorkerPoolUnavailable:
            return  # the broken one stays; the next rebuild may succeed
        try:
            fresh.start()
        except WorkerPoolUnavailable:
            fresh.close()  # the broken one stays; the next rebuild may succeed
            return
        with keeper._start_lock:
            swapped = keeper.backend is broken and not keeper._closed
            if swapped:
                keeper.backend, keeper.rebuilds = fresh, keeper.rebuilds + 1
                keeper.tenants.forget()  # new workers hold no tenant yet
        (broken if swapped else fresh).close()  # whichever pool is not in use
    finally:
        with keeper._lock:
            keeper._rebuilding = False
