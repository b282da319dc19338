"""Write generations per (tenant, layer), read cheaply and never stale.

The store bumps a generation in the same transaction as every write. This tracker caches
them per tenant and drops a tenant when a write to it commits in this process (the store's
commit listener). When any other connection commits (another process, or this process's
telemetry: ``PRAGMA data_version`` moves), it reads the store's write clock, one row that
every generation bump moves: only if it moved are all cached generations dropped.
Before asking SQLite it reads the WAL-index header through a mapping (no system call): while
that reads as it did when this thread last asked, nobody has committed since.
"""

from __future__ import annotations

import threading
from typing import Final

from athena.store.sqlite import SQLiteStore

# Tenants whose generations are kept: past it the cache is emptied (a server that millions
# of tenants reach would otherwise keep a small dict for each, for good; re-reading one is
# a single indexed read).
TENANTS_KEPT: Final = 65_536


class GenerationTracker:
    """Current generations of a tenant's layers.

    >>> import tempfile, os
    >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "g.db"))
    >>> GenerationTracker(store).get("t")
    {}
    >>> store.close()
    """

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._cache: dict[str, dict[str, int]] = {}
        self.kept = TENANTS_KEPT
        self._epoch = 0
        self._clock = store.write_clock()
        self._lock = threading.Lock()
        self._local = threading.local()
        store.on_commit(self._committed)

    def _committed(self, touched: set[tuple[str, str]]) -> None:
        with self._lock:
            self._epoch += 1
            for tenant, _ in touched:
                self._cache.pop(tenant, None)

    def get(self, tenant: str) -> dict[str, int]:
        """The generation of each layer of ``tenant`` (absent layers were never written)."""
        local = self._local
        header = self._store.wal_header()  # before data_version: a commit between moves it
        if header is None or header != getattr(local, "header", None):
            self._check(local)
            local.header = header
        cached = self._cache.get(tenant)
        if cached is not None:
            return dict(cached)  # a copy: callers may keep or change theirs
        epoch = self._epoch
        fresh = self._store.generations(tenant)
        with self._lock:
            if epoch == self._epoch:  # no commit landed while we read
                if len(self._cache) >= self.kept:
                    self._cache.clear()
                self._cache[tenant] = dict(fresh)
        return fresh

    def _check(self, local: threading.local) -> None:
        version = self._store.data_version()
        if getattr(local, "version", None) != version:
            # Another connection committed since this thread last looked: it may have been
            # another process, whose writes our commit listener never heard of. Read the
            # clock after the version: a bump it misses moves the version again.
            local.version = version
            clock = self._store.write_clock()
            with self._lock:
                if clock != self._clock:
                    self._clock = clock
                    self._epoch += 1
                    self._cache.clear()
