"""Which tenants a worker pool's workers hold warm, and warming one in the background.

A worker new to a tenant builds its indexes before it answers (21-54 ms for a 4 ms recall
on 100k-tenants): the selector reads whether the pool is warm for a tenant before it
explores DISTRIBUTED there, and an exploring recall warms it in the background instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from athena.errors import AthenaError
from athena.execution.backend import WorkerBackend
from athena.layers.protocol import LayerResult, SearchRequest

# Index rows a recall may apply (a catch-up after a few writes) and still teach its cost.
BUILD_ROWS: Final = 256
WARM_KEPT: Final = 4096  # tenants remembered as warm in the pool
WARM_TIMEOUT_S: Final = 30.0


class WarmTenants:
    """The tenants whose last run on the pool ``current()`` returns built nothing.

    >>> tenants = WarmTenants(lambda: None)
    >>> tenants.served("t", {}), "t" in tenants.warm_set
    (False, True)
    """

    def __init__(self, current: Callable[[], WorkerBackend | None]) -> None:
        self._current = current
        self.warm_set: dict[str, None] = {}  # cleared in place, never rebound
        self.warming = False  # a warm-up run is under way (one at a time)
        self._lock = threading.Lock()

    def served(
        self,
        tenant: str,
        results: Mapping[str, LayerResult],
        backend: WorkerBackend | None = None,
    ) -> bool:
        """Note a run of ``backend`` (the current pool, if None) for ``tenant``: warm if
        its workers built nothing, and ignored if that pool has since been replaced.
        Returns whether they built (loaded more than ``BUILD_ROWS`` index rows)."""
        built = sum(r.loaded for r in results.values()) > BUILD_ROWS
        with self._lock:
            if backend is not None and backend is not self._current():
                return built  # a run on a pool replaced since: its workers are gone
            if built:
                self.warm_set.pop(tenant, None)
            else:
                if len(self.warm_set) >= WARM_KEPT:
                    self.warm_set.clear()
                self.warm_set[tenant] = None
        return built

    def forget(self) -> None:
        """Forget every tenant: call after swapping the pool in (new workers hold none)."""
        with self._lock:
            self.warm_set.clear()

    def warm(self, tenant: str, request: SearchRequest, layers: Sequence[str]) -> bool:
        """Run ``request`` on the current pool in the background, at the lowest priority
        and with its answer dropped, so the workers it lands on load ``tenant``'s indexes;
        one such run at a time. Returns whether one started.

        >>> WarmTenants(lambda: None).warm("t", None, ["episodic"])  # type: ignore[arg-type]
        False
        """
        backend = self._current()
        if backend is None or not backend.available:
            return False
        with self._lock:
            if self.warming:
                return False
            self.warming = True
        try:
            threading.Thread(
                target=self._run,
                args=(backend, tenant, request, tuple(layers)),
                name="athena-pool-warm",
                daemon=True,
            ).start()
        except RuntimeError:  # no thread to be had: a warm-up is never worth a recall
            with self._lock:
                self.warming = False
            return False
        return True

    def _run(
        self, backend: WorkerBackend, tenant: str, request: SearchRequest, layers: Sequence[str]
    ) -> None:
        try:
            results = backend.run(request, layers, priority=0, timeout=WARM_TIMEOUT_S)
            self.served(tenant, results, backend)
        except AthenaError:
            pass  # a warm-up that failed leaves the tenant cold; a later one may succeed
        finally:
            with self._lock:
                self.warming = False
