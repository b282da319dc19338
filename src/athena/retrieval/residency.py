"""Which tenants' indexes stay in memory: a budget of indexed memories per process, the
tenants searched least recently dropped first.

A process keeps every (tenant, layer) vector and lexical index it has searched, and follows
their writes. Unbounded, a server that thousands of tenants reach holds all of them for
good: about 2.1 KB per memory with the static embedder and 2.6 KB with the transformer
(``100k-tenants``: 131 -> 350 and 138 -> 408 MB resident once each of its 110 tenants
was searched). A :class:`Residency` counts the memories each tenant's indexes hold (per
layer, the larger of its vector and lexical index; the graph layer's entity names under a
key of their own, 26 names as one memory) and, past its budget, drops the least recently
searched tenants down to :data:`LOW_WATER` of it: their indexes, and whatever else was
registered with :meth:`Residency.on_evict` (the graph layer's names). A dropped tenant's
next recall loads its indexes again (a BM25 index from its snapshot, for scopes from 256
memories) or builds them: a 940-memory tenant's first recall about 6 ms, static, against
14 built and about 1 once held (stop 39).

The tenant whose index grew is never the one dropped, so one tenant larger than the budget
stays whole (alone); a tenant another thread is recalling may be dropped between two of its
layers, and that recall builds the rest again. Only live memories are counted (superseded
vectors and postings awaiting compaction are not). Recency costs a recall a dictionary
lookup and store per index searched; the counting and the dropping run only when an index
grew.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final

from athena.errors import InvalidInput

BYTES_PER_MEMORY: Final = 2_600  # the transformer's measured footprint (the larger)
MEMORY_SHARE: Final = 0.25  # of physical memory, for the default budget
LOW_WATER: Final = 0.9  # a drop goes down to this share of the budget: not one per build
ENV: Final = "ATHENA_INDEX_MEMORIES"

Drop = Callable[[Collection[str]], object]
log = logging.getLogger(__name__)


CGROUP_LIMITS: Final = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def default_budget(environ: dict[str, str] | None = None) -> int | None:
    """``ATHENA_INDEX_MEMORIES`` if set, else a quarter of the memory this process may use
    (physical memory, or a container's cgroup limit if lower) at :data:`BYTES_PER_MEMORY`
    each; None (no bound) where the machine will not say.

    >>> default_budget({"ATHENA_INDEX_MEMORIES": "50000"})
    50000
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV)
    if raw:
        try:
            return check_budget(int(raw))
        except ValueError:
            raise InvalidInput(f"{ENV} must be a positive whole number, not {raw!r}") from None
    usable = memory_limit()
    return None if usable is None else max(int(usable * MEMORY_SHARE) // BYTES_PER_MEMORY, 1)


def memory_limit(cgroups: tuple[Path, ...] = CGROUP_LIMITS) -> int | None:
    """Bytes of memory this process may use: physical memory, or less under a cgroup limit
    (a container's; "max" or a huge number is no limit); None if neither can be read.

    >>> (memory_limit(()) or 0) > 0
    True
    """
    limits = []
    with contextlib.suppress(AttributeError, ValueError, OSError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for path in cgroups:
        try:
            raw = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if raw.isdigit() and 0 < int(raw) < 1 << 60:
            limits.append(int(raw))
    limits = [limit for limit in limits if limit > 0]
    return min(limits) if limits else None


def check_budget(budget: int) -> int:
    """``budget`` if it is a positive count of memories, else InvalidInput.

    >>> check_budget(10)
    10
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InvalidInput(f"the index budget must be a positive number of memories: {budget!r}")
    return budget


class Residency:
    """The tenants whose indexes this process holds, how many memories each holds, and
    which to drop past ``budget`` (None: no bound).

    >>> dropped = []
    >>> r = Residency(100)
    >>> r.on_evict(dropped.extend)
    >>> r.grew("a", "vector", "episodic", 60); r.touch("b"); r.grew("b", "vector", "episodic", 60)
    >>> dropped, r.stats()["memories"]
    (['a'], 60)
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = None if budget is None else check_budget(budget)
        self._last: dict[str, int] = {}  # tenant -> when its indexes were last searched
        self._clock = itertools.count()
        self._sizes: dict[str, dict[tuple[str, str], int]] = {}  # tenant -> (kind, layer)
        self._held: dict[str, int] = {}  # tenant -> memories its indexes hold
        self.memories = 0
        self.evicted = 0  # tenants dropped so far
        self._drops: list[Drop] = []
        self._lock = threading.Lock()

    def on_evict(self, drop: Drop) -> None:
        """Call ``drop(tenants)`` whenever tenants are dropped (under this object's lock:
        ``drop`` must not call back into it)."""
        self._drops.append(drop)

    def touch(self, tenant: str) -> None:
        """``tenant``'s index was searched now (two dictionary operations, no lock)."""
        if tenant in self._held:  # a tenant dropped meanwhile is counted again by grew()
            self._last[tenant] = next(self._clock)

    def grew(
        self,
        tenant: str,
        kind: str,
        layer: str,
        rows: int,
        current: Callable[[], bool] | None = None,
    ) -> None:
        """``tenant``'s (``kind``, ``layer``) index holds ``rows`` now, unless ``current()``
        says it is no longer held (dropped while it synced: nothing is counted); past the
        budget, drop the least recently searched other tenants down to :data:`LOW_WATER`
        of it. The drops run under this object's lock, so no index is counted after its
        drop began (the callbacks take their own locks, never this one)."""
        with self._lock:
            if current is not None and not current():
                return
            sizes = self._sizes.setdefault(tenant, {})
            sizes[(kind, layer)] = rows
            held = _held(sizes)
            self.memories += held - self._held.get(tenant, 0)
            self._held[tenant] = held
            self._last.setdefault(tenant, next(self._clock))
            victims = self._victims(tenant) if self._over() else []
            for drop in self._drops if victims else ():
                try:
                    drop(victims)
                except Exception:  # the others still drop theirs; this recall goes on
                    log.warning("dropping the indexes of %d tenants failed", len(victims),
                                exc_info=True)  # fmt: skip

    def holds(self, tenant: str) -> bool:
        """Whether an index of ``tenant`` is held (counted) now."""
        return tenant in self._held

    def stats(self) -> dict[str, int | None]:
        """Memories held in indexes, the budget, tenants held and tenants dropped so far."""
        return {
            "memories": self.memories,
            "budget": self.budget,
            "tenants": len(self._held),
            "evicted": self.evicted,
        }

    def _over(self) -> bool:
        return self.budget is not None and self.memories > self.budget

    def _victims(self, keep: str) -> list[str]:
        """Drop the least recently searched tenants but ``keep`` (lock held)."""
        assert self.budget is not None
        low = int(self.budget * LOW_WATER)
        last = self._last
        order = sorted((t for t in self._held if t != keep), key=lambda t: last.get(t, -1))
        victims = []
        for tenant in order:
            if self.memories <= low:
                break
            self._remove(tenant)
            victims.append(tenant)
        self.evicted += len(victims)
        return victims

    def _remove(self, tenant: str) -> None:
        self.memories -= self._held.pop(tenant, 0)
        self._sizes.pop(tenant, None)
        self._last.pop(tenant, None)


def _held(sizes: dict[tuple[str, str], int]) -> int:
    """Memories a tenant's indexes hold: per layer (or other key), its larger index.

    >>> _held({("vector", "episodic"): 10, ("lexical", "episodic"): 12, ("vector", "semantic"): 3})
    15
    """
    per_layer: dict[str, int] = {}
    for (_, layer), rows in sizes.items():
        per_layer[layer] = max(per_layer.get(layer, 0), rows)
    return sum(per_layer.values())
