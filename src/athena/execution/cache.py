"""The cross-layer result cache: whole recalls and single layers' rankings, never stale.

Every entry remembers the write generations its recall read *before it started*; a write
bumps its (tenant, layer) generation in the same transaction. An entry is served only while
what it depends on is unchanged: the tenant's whole mapping for a full recall (its hits
carry rows of every layer) and for the graph layer (its answers move with every layer's
writes), the layer's own generation otherwise. Reading generations *before* running makes
racing writes safe: a write committing mid-recall may or may not be seen, but it bumps a
generation past the entry's tag, so every reader starting after the commit refuses the
entry. Tagging with generations read *after* could label a pre-write answer as current.

Keys are tuples of every input (:mod:`athena.execution.cache_keys`), so different queries,
tenants, filters, ``k`` or models never share an entry. Entries also expire after their
layers' TTL (volatile layers sooner), with a confidence that halves every half TTL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast
from weakref import WeakKeyDictionary

from athena.execution import cache_keys as ck
from athena.execution.cache_keys import Entry, full_key, layer_keys, normalize_text, trust
from athena.layers.protocol import LayerResult
from athena.records import Hit, RecallQuery

T = TypeVar("T")

DEFAULT_TTLS: Final[Mapping[str, float]] = MappingProxyType(
    {"prospective": 30.0, "episodic": 60.0, "graph": 120.0, "semantic": 300.0, "procedural": 600.0}
)
# Layers whose answers depend on every layer's writes, not only their own.
WHOLE_TENANT_LAYERS: Final = frozenset({"graph"})


@dataclass(frozen=True, slots=True)
class CachedHits:
    """A served full recall: its hits, their age, how much to trust them, what they cost."""

    value: tuple[Hit, ...]
    age_s: float
    confidence: float
    cost_ms: float


@dataclass(frozen=True, slots=True)
class CachedLayer:
    """A served ranking of one layer (its ``value.source`` is ``"cache"``)."""

    value: LayerResult
    age_s: float
    confidence: float
    cost_ms: float


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """What :meth:`ResultCache.lookup` found: a full answer, some layers, or nothing."""

    full: CachedHits | None
    layers: dict[str, CachedLayer] = field(default_factory=dict)


class _Flight:
    __slots__ = ("done", "error", "owner", "value", "waiters")

    def __init__(self) -> None:
        # Made by the first waiter (most flights have none, and an Event costs microseconds).
        self.done: threading.Event | None = None
        self.value: Any = None
        self.error: BaseException | None = None
        self.owner = threading.get_ident()
        self.waiters = 0


class _SingleFlight:
    """Concurrent callers of one key share one execution (threads, or tasks of one loop)."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._flights: dict[Hashable, _Flight] = {}
        self._tasks: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Any]]
        self._tasks = WeakKeyDictionary()

    def run(self, key: Hashable, fn: Callable[[], T], timeout: float | None) -> T:
        me = threading.get_ident()
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
            elif flight.owner == me:
                raise RuntimeError("single_flight re-entered for a key this thread computes")
            else:
                flight.waiters += 1
                if flight.done is None:
                    flight.done = threading.Event()
            done = flight.done
        if flight.owner == me:  # the leader
            try:
                flight.value = fn()
                return cast(T, flight.value)
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                with self._lock:  # after this no waiter can join, so `done` is final
                    del self._flights[key]
                    done = flight.done
                if done is not None:
                    done.set()
        assert done is not None
        finished = done.wait(timeout)
        with self._lock:
            flight.waiters -= 1
        if not finished:
            raise TimeoutError(f"gave up after {timeout} s waiting for a shared execution")
        if flight.error is not None:
            raise flight.error
        return cast(T, flight.value)

    async def arun(self, key: Hashable, coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:  # after this, only the loop's own thread touches its dict
            tasks = self._tasks.get(loop)
            if tasks is None:
                tasks = self._tasks[loop] = {}
        task: asyncio.Task[T] | None = tasks.get(key)
        if task is None:
            task = tasks[key] = loop.create_task(coro_fn())
            task.add_done_callback(functools.partial(_landed, tasks, key))
        elif task is asyncio.current_task():
            raise RuntimeError("asingle_flight re-entered for a key this task computes")
        # Shielded: a cancelled caller leaves the shared execution running for the others.
        return await asyncio.shield(task)

    def waiters(self, key: Hashable) -> int:
        with self._lock:
            flight = self._flights.get(key)
            return 0 if flight is None else flight.waiters


def _landed(tasks: dict[Hashable, Any], key: Hashable, task: asyncio.Task[Any]) -> None:
    if tasks.get(key) is task:
        del tasks[key]
    if not task.cancelled():
        task.exception()  # mark it retrieved: every caller may have been cancelled


class _CacheCore:
    """Storage, validity, counting and single flight; :class:`_LayerRankings` adds layers'
    rankings and :class:`ResultCache` full recalls and lookups.

    ``ttl_seconds`` overrides :data:`DEFAULT_TTLS` per layer; ``clock`` is injectable.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 2**20,
        ttl_seconds: Mapping[str, float] = DEFAULT_TTLS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("max_entries and max_bytes must not be negative")
        self._ttls = {**DEFAULT_TTLS, **ttl_seconds}
        if any(math.isnan(ttl) or ttl < 0 for ttl in self._ttls.values()):
            raise ValueError("TTLs must be seconds >= 0 (0 disables caching a layer)")
        self._clock = clock
        self._lock = threading.Lock()
        self._lru = ck.Lru(max_entries, max_bytes)
        self._counts = ck.Counts()
        self._flights = _SingleFlight(self._lock)

    def _ttl(self, layers: Collection[str]) -> float:
        return min((self._ttls.get(layer, 0.0) for layer in layers), default=0.0)

    def _store(self, key: Hashable, entry: Entry) -> None:
        lru = self._lru
        if entry.ttl <= 0 or entry.size > lru.max_bytes or lru.max_entries == 0:
            return
        with self._lock:
            self._add([(key, entry)])

    def _add(self, entries: Collection[tuple[Hashable, Entry]]) -> None:
        """Add entries unless a newer one holds the key: a slow, older recall loses (lock held)."""
        lru = self._lru
        for key, entry in entries:
            old = lru.data.get(key)
            if old is None or not ck.supersedes(old, entry):
                lru.add(key, entry)

    def _valid(self, key: Hashable, generations: Mapping[str, int], now: float) -> Entry | None:
        """The entry under ``key`` if servable; drops it if it never will be (lock held)."""
        entry = self._lru.data.get(key)
        if entry is None:
            return None
        state = ck.check(entry, generations, now)
        if state == ck.VALID:
            return entry
        if state != ck.AHEAD:  # stale or expired: it can never be served again
            self._lru.drop(key)
            self._counts.stale_dropped += state == ck.STALE
            self._counts.expired_dropped += state == ck.EXPIRED
        return None  # AHEAD: the caller read older generations than the entry: keep it

    def record_miss(self) -> None:
        """Count a recall the cache could not help (after :meth:`get_full` missed)."""
        with self._lock:
            self._counts.misses += 1

    def record_partial(self, served: Collection[CachedLayer]) -> None:
        """Count a recall answered partly from the ``served`` layers (none: a miss).

        >>> # cache.record_partial(cache.get_layers(query, "m", 50, gens).values())
        """
        saved = sum(layer.cost_ms for layer in served)
        with self._lock:
            counts = self._counts
            counts.misses += not served
            counts.partial_hits += bool(served)
            counts.queries_avoided += len(served)
            counts.latency_saved_ms += saved

    def stats(self) -> dict[str, float]:
        """Counts since creation (or :meth:`clear`) and the current size.

        >>> ResultCache().stats()["hit_rate"]
        0.0
        """
        with self._lock:
            out: dict[str, float] = dataclasses.asdict(self._counts)
            lru = self._lru
            out.update(entries=len(lru.data), bytes=lru.nbytes, evictions=lru.evictions)
        lookups = out["hits"] + out["partial_hits"] + out["misses"]
        out["hit_rate"] = out["hits"] / lookups if lookups else 0.0
        return out

    def clear(self) -> None:
        """Drop every entry and reset the counts."""
        with self._lock:
            self._lru = ck.Lru(self._lru.max_entries, self._lru.max_bytes)
            self._counts = ck.Counts()

    def invalidate_tenant(self, tenant: str) -> int:
        """Eagerly drop a tenant's entries; optional, generations already guard them."""
        with self._lock:
            doomed = [key for key in self._lru.data if cast(tuple[Any, ...], key)[2] == tenant]
            for key in doomed:
                self._lru.drop(key)
        return len(doomed)

    def single_flight(self, key: Hashable, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` once for concurrent callers of ``key``; all get its result or error.

        Key it with :meth:`ResultCache.flight_key`: callers that read different
        generations must not share. ``timeout`` bounds a waiter's wait (TimeoutError).

        >>> ResultCache().single_flight("k", lambda: 42)
        42
        """
        return self._flights.run(key, fn, timeout)

    async def asingle_flight(
        self, key: Hashable, coro_fn: Callable[[], Coroutine[Any, Any, T]]
    ) -> T:
        """The asyncio form of :meth:`single_flight`, shared among one loop's tasks.

        >>> # hits = await cache.asingle_flight(cache.flight_key(q, "m", gens), run_recall)
        """
        return await self._flights.arun(key, coro_fn)

    def waiters(self, key: Hashable) -> int:
        """How many threads wait on an execution of ``key`` in flight."""
        return self._flights.waiters(key)


class _LayerRankings(_CacheCore):
    """Single layers' rankings, one entry per (query, layer, depth): what completes a recall
    the full entry cannot answer. :class:`ResultCache` adds full recalls and lookups.
    """

    def get_layers(
        self, query: RecallQuery, model: str, depth: int, generations: Mapping[str, int]
    ) -> dict[str, CachedLayer]:
        """The valid cached rankings among the query's layers (counts nothing).

        >>> # cached = cache.get_layers(query, embedder.name, 50, generations)
        """
        text, now = normalize_text(query.text), self._clock()
        keys = layer_keys(query, model, query.layers, depth, text)
        found: list[Entry] = []
        with self._lock:
            for key in keys:
                entry = self._valid(key, generations, now)
                if entry is not None:
                    self._lru.data.move_to_end(key)
                    found.append(entry)
        return {e.layer: CachedLayer(_as_cached(e.value), *trust(e, now), e.cost_ms) for e in found}

    def put_layer(
        self,
        query: RecallQuery,
        model: str,
        depth: int,
        result: LayerResult,
        generations_read: Mapping[str, int],
        cost_ms: float,
    ) -> None:
        """Store one layer's ranking, tagged with the generations read *before* it ran.

        >>> # cache.put_layer(query, embedder.name, 50, result, generations_before, 3.2)
        """
        self.put_layers(query, model, depth, [(result, cost_ms)], generations_read)

    def put_layers(
        self,
        query: RecallQuery,
        model: str,
        depth: int,
        results: Collection[tuple[LayerResult, float]],
        generations_read: Mapping[str, int],
    ) -> None:
        """:meth:`put_layer` for each (ranking, cost in ms) of one recall, under one lock.

        >>> # cache.put_layers(query, embedder.name, 50, [(result, 3.2)], generations_before)
        """
        for result, _ in results:
            if result.layer not in query.layers:
                raise ValueError(f"layer {result.layer!r} is not one of the query's layers")
        lru = self._lru
        if lru.max_entries == 0 or not results:
            return
        text, now, whole = normalize_text(query.text), self._clock(), dict(generations_read)
        base = ck.key_size(("layer", model, query.tenant, text))  # the same for every layer
        layers = tuple(result.layer for result, _ in results)
        keys = layer_keys(query, model, layers, depth, text)
        entries: list[tuple[Hashable, Entry]] = []
        for key, (result, cost_ms) in zip(keys, results, strict=True):
            layer = result.layer
            ttl = self._ttls.get(layer, 0.0)
            if ttl <= 0:
                continue
            # Kept as computed: marked as the cache's (:func:`_as_cached`) only when served.
            size = base + len(layer) + ck.layer_size(result)
            if size > lru.max_bytes:
                continue
            gen = generations_read.get(layer, 0)
            depends = whole if layer in WHOLE_TENANT_LAYERS else None
            entry = Entry(result, now, ttl, depends, layer, gen, size, max(0.0, cost_ms), 1)
            entries.append((key, entry))
        with self._lock:
            self._add(entries)


def _as_cached(result: LayerResult) -> LayerResult:
    """A stored ranking as served: its source is the cache (built on a hit, not on a fill)."""
    return LayerResult(
        result.layer, result.ids, result.scores, result.elapsed_ms, result.generation, "cache"
    )


class ResultCache(_LayerRankings):
    """Full recalls and per-layer rankings, keyed exactly and checked against generations.

    >>> from athena.records import make_query
    >>> cache, q = ResultCache(), make_query("where is the key?", "t", layers=["semantic"])
    >>> cache.put_full(q, "m", {"semantic": 3}, (), cost_ms=12.0)
    >>> cache.get_full(q, "m", {"semantic": 3}) is not None, cache.get_full(q, "m", {"semantic": 4})
    (True, None)
    """

    full_key = staticmethod(full_key)
    flight_key = staticmethod(ck.flight_key)

    def get_full(
        self,
        query: RecallQuery,
        model: str,
        generations: Mapping[str, int],
        key: Hashable | None = None,
    ) -> CachedHits | None:
        """The recall's hits if a valid entry holds them; counts a hit (a miss: nothing).
        ``key``: ``full_key(query, model)`` if the caller kept it.

        >>> # cached = cache.get_full(query, embedder.name, tracker.get(query.tenant))
        """
        if key is None:
            key = full_key(query, model)
        now = self._clock()
        with self._lock:
            entry = self._valid(key, generations, now)
            if entry is None:
                return None
            self._lru.data.move_to_end(key)
            counts = self._counts
            counts.hits += 1
            counts.queries_avoided += entry.width
            counts.latency_saved_ms += entry.cost_ms
        return CachedHits(entry.value, *trust(entry, now), entry.cost_ms)

    def put_full(
        self,
        query: RecallQuery,
        model: str,
        generations_read: Mapping[str, int],
        hits: tuple[Hit, ...],
        cost_ms: float,
        key: Hashable | None = None,
    ) -> None:
        """Store a recall's hits, tagged with the generations read *before* it ran.
        ``key``: ``full_key(query, model)`` if the caller kept it.

        >>> # cache.put_full(query, embedder.name, generations_before, hits, cost_ms=8.5)
        """
        tenant = query.tenant
        for hit in hits:
            if hit.tenant != tenant:
                raise ValueError("a recall's hits must belong to the query's tenant")
        if key is None:
            key = full_key(query, model)
        ttl = self._ttl(query.layers)
        size = ck.key_size(cast(tuple[Any, ...], key)) + ck.hits_size(hits)
        whole, width = dict(generations_read), len(query.layers)
        entry = Entry(hits, self._clock(), ttl, whole, "", 0, size, max(0.0, cost_ms), width)
        self._store(key, entry)

    def lookup(
        self, query: RecallQuery, model: str, depth: int, generations: Mapping[str, int]
    ) -> CacheLookup:
        """:meth:`get_full`, else :meth:`get_layers`; counts exactly one hit, partial or miss.

        >>> # found = cache.lookup(query, embedder.name, 50, generations)
        """
        full = self.get_full(query, model, generations)
        if full is not None:
            return CacheLookup(full)
        layers = self.get_layers(query, model, depth, generations)
        self.record_partial(layers.values())
        return CacheLookup(None, layers)

    def availability(
        self, query: RecallQuery, model: str, depth: int, generations: Mapping[str, int]
    ) -> float:
        """1.0 with a valid full entry, else the share of the query's layers cached.

        Moves neither recency nor counts; copies nothing.

        >>> # cache.availability(query, "m", 50, generations)  # e.g. 0.4: 2 of 5 layers
        """
        text, now = normalize_text(query.text), self._clock()
        full = full_key(query, model, text)
        keys = layer_keys(query, model, query.layers, depth, text)
        with self._lock:
            if self._valid(full, generations, now) is not None:
                return 1.0
            found = sum(self._valid(key, generations, now) is not None for key in keys)
        return found / len(keys) if keys else 0.0
