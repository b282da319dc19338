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

A recall's fill is one entry (:meth:`ResultCache.put_recall`): its hits, carrying the
rankings of the layers it searched. Those become entries of their own, under the same
rules, when the full entry is dropped: a write to one layer then leaves the others' rankings
to serve the query's next recall (a partial hit), and a recall that is answered whole or not
at all, as most are, never pays for storing them.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Hashable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast

from athena.execution import cache_keys as ck
from athena.execution.cache_keys import (
    CachedHits,
    CachedLayer,
    CacheLookup,
    Entry,
    full_key,
    layer_keys,
    normalize_text,
    trust,
)
from athena.execution.single_flight import SingleFlight
from athena.layers.protocol import LayerResult
from athena.records import Hit, RecallQuery

T = TypeVar("T")

DEFAULT_TTLS: Final[Mapping[str, float]] = MappingProxyType(
    {"prospective": 30.0, "episodic": 60.0, "graph": 120.0, "semantic": 300.0, "procedural": 600.0}
)
KEPT: Final = frozenset({ck.VALID, ck.AHEAD})  # entry states a cache keeps


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
        self._full_ttls: dict[tuple[str, ...], float] = {}
        if any(math.isnan(ttl) or ttl < 0 for ttl in self._ttls.values()):
            raise ValueError("TTLs must be seconds >= 0 (0 disables caching a layer)")
        self._clock = clock
        self._lock = threading.Lock()
        self._lru = ck.Lru(max_entries, max_bytes)
        self._counts = ck.Counts()
        self._flights = SingleFlight(self._lock)

    def _ttl(self, layers: tuple[str, ...]) -> float:
        """The shortest TTL of ``layers`` (kept per layer set: asked on every fill)."""
        ttl = self._full_ttls.get(layers)
        if ttl is None:
            ttl = min((self._ttls.get(layer, 0.0) for layer in layers), default=0.0)
            if len(self._full_ttls) < 64:  # bounded: a few layer sets are asked for
                self._full_ttls[layers] = ttl
        return ttl

    def _add(self, entries: Collection[tuple[Hashable, Entry]]) -> None:
        """Add entries unless a newer one holds the key: a slow, older recall loses (lock
        held). A full entry that loses its key, or is refused it, releases the layer
        rankings it carries (as a dropped one does)."""
        lru = self._lru
        for key, entry in entries:
            old = lru.data.get(key)
            if old is None or not ck.supersedes(old, entry):
                if old is not None and old.carried:  # filled before entry: entry's win
                    self._release(cast(ck.FullKey, key), old, None, entry.stamp, entry, True)
                lru.add(key, entry)
            elif entry.carried:  # filled after old: theirs win only if strictly newer
                self._release(cast(ck.FullKey, key), entry, None, entry.stamp, old, False)

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
            if entry.carried:
                self._release(cast(ck.FullKey, key), entry, generations, now)
        return None  # AHEAD: the caller read older generations than the entry: keep it

    def _release(
        self,
        key: ck.FullKey,
        entry: Entry,
        generations: Mapping[str, int] | None,
        now: float,
        rival: Entry | None = None,
        rival_later: bool = False,
    ) -> None:
        """Store the layer rankings a dropped full entry carried (:class:`_LayerRankings`)."""

    def record_miss(self) -> None:
        """Count a recall the cache could not help (after :meth:`get_full` missed)."""
        with self._lock:
            self._counts.misses += 1

    def record_partial(self, served: Collection[CachedLayer]) -> None:
        """Count a recall answered partly from the ``served`` layers (none: a miss).

        >>> # cache.record_partial(cache.get_layers(query, "m", 50, gens).values())
        """
        if not served:  # a miss, as most are: counted without summing an empty collection
            self.record_miss()
            return
        saved = sum(layer.cost_ms for layer in served)
        with self._lock:
            counts = self._counts
            counts.partial_hits += 1
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

    def may_hold(self, query: RecallQuery) -> bool:
        """Whether any entry, full or layer, is kept under the query's tenant and text:
        when not, no lookup of it can hit. No key is built: 2.2 µs a question seen for the
        first time, 0.16 µs again (the 1,986 LoCoMo questions, a loop of each, stop 43)."""
        return (query.tenant, normalize_text(query.text)) in self._lru.texts

    def get_layers(
        self,
        query: RecallQuery,
        model: str,
        depth: int,
        generations: Mapping[str, int],
        full: Hashable | None = None,
    ) -> dict[str, CachedLayer]:
        """The valid cached rankings among the query's layers (counts nothing); ``full``:
        ``full_key(query, model)`` if the caller kept it.

        >>> # cached = cache.get_layers(query, embedder.name, 50, generations)
        """
        text = normalize_text(query.text)
        if (query.tenant, text) not in self._lru.texts:  # no entry, full or layer, under this
            return {}  # text: a new question's lookup builds and probes no keys (about 5 µs)
        now = self._clock()
        keys = layer_keys(query, model, query.layers, depth, text)
        found: list[Entry] = []
        with self._lock:
            for key in keys:
                entry = self._valid(key, generations, now)
                if entry is not None:
                    self._lru.data.move_to_end(key)
                    found.append(entry)
            if len(found) < len(keys):
                if full is None:
                    full = full_key(query, model, text)
                if full in self._lru.data:  # kept while a newer one or valid: it may carry some
                    missing = set(query.layers).difference(e.layer for e in found)
                    found += self._carried(query, model, full, depth, generations, now, missing)
        return {
            e.layer: CachedLayer(ck.as_cached(e.value), *trust(e, now), e.cost_ms) for e in found
        }

    def _carried(
        self,
        query: RecallQuery,
        model: str,
        full: Hashable,
        depth: int,
        generations: Mapping[str, int],
        now: float,
        layers: Collection[str],
    ) -> list[Entry]:
        """The rankings of ``layers`` that the query's own full entry (under ``full``) still
        carries (it is kept: valid, or newer than this reader) and this reader may be
        served, as the entries :meth:`_release` would store (lock held)."""
        entry = self._lru.data.get(full)
        if entry is None or not entry.carried or entry.depth != depth:
            return []
        wanted = [(result, cost) for result, cost in entry.carried if result.layer in layers]
        _, _, tenant, text, _, _, filters = cast(ck.FullKey, full)
        scope, whole = (model, tenant, text, filters), entry.whole or {}
        made = ck.layer_entries(
            scope, depth, wanted, whole, entry.stamp, self._ttls, self._lru.max_bytes
        )
        return [e for _, e in made if ck.check(e, generations, now) == ck.VALID]

    def _release(
        self,
        key: ck.FullKey,
        entry: Entry,
        generations: Mapping[str, int] | None,
        now: float,
        rival: Entry | None = None,
        rival_later: bool = False,
    ) -> None:
        """Store the layer rankings a full entry carried, now that it is dropped: the
        entries :meth:`put_layers` would have stored when it was filled (its time, its
        generations), those a reader of ``generations`` (None: any) could still be served
        (lock held). ``rival``: the full entry that took the key from it or kept it, whose
        carried rankings ``put_layers`` would have stored too, after it if ``rival_later``:
        a ranking of ``entry`` that one would have replaced is not stored."""
        _, model, tenant, text, _, _, filters = key
        scope = (model, tenant, text, filters)
        released = self._entries_of(scope, entry)
        rivals = {e.layer: e for _, e in self._entries_of(scope, rival)} if rival else {}
        kept: list[tuple[Hashable, Entry]] = []
        for layer_key, mine in released:
            other = rivals.get(mine.layer)
            if other is not None and (
                not ck.supersedes(mine, other) if rival_later else ck.supersedes(other, mine)
            ):
                continue  # put_layers would have kept the rival's ranking instead
            if generations is None:  # as put_layers at its fill: only the expired go
                fresh = now - mine.stamp < mine.ttl
            else:
                fresh = ck.check(mine, generations, now) in KEPT
            if fresh:
                kept.append((layer_key, mine))
        self._add(kept)

    def _entries_of(self, scope: ck.Scope, entry: Entry) -> list[tuple[ck.LayerKey, Entry]]:
        """The layer entries of the rankings ``entry`` carries."""
        whole = entry.whole if entry.whole is not None else {}
        limits = self._ttls, self._lru.max_bytes
        return ck.layer_entries(scope, entry.depth, entry.carried, whole, entry.stamp, *limits)

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
        ck.check_layers(query, results)
        if self._lru.max_entries == 0 or not results:
            return
        text, stamp = normalize_text(query.text), self._clock()
        scope = (model, query.tenant, text, query.filters())
        whole, limits = dict(generations_read), (self._ttls, self._lru.max_bytes)
        entries = ck.layer_entries(scope, depth, results, whole, stamp, *limits)
        with self._lock:
            self._add(entries)


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
        self.put_recall(query, model, 0, (), generations_read, hits, cost_ms, key)

    def put_recall(
        self,
        query: RecallQuery,
        model: str,
        depth: int,
        fresh: Collection[tuple[LayerResult, float]],
        generations_read: Mapping[str, int],
        hits: tuple[Hit, ...],
        cost_ms: float,
        key: Hashable | None = None,
    ) -> None:
        """:meth:`put_full`, the entry carrying the layers the recall searched (``fresh``:
        (ranking, cost ms), searched ``depth`` deep). They become entries of their own, as
        :meth:`put_layers` would have stored them, when the full entry is dropped (a lookup
        finds it stale or expired, or a newer recall's entry takes its key), or at once if
        a newer entry already holds the key; meanwhile :meth:`get_layers` serves them from
        it. Five layer entries took a cold recall 15 µs to store, and most are never
        read. What is given up: a query of the same text with another ``k`` or layer set
        does not borrow these rankings before they are stored on their own.

        >>> # cache.put_recall(query, "m", 50, [(ranking, 3.2)], generations_before, hits, 8.5)
        """
        tenant = query.tenant
        for hit in hits:
            if hit.tenant != tenant:
                raise ValueError("a recall's hits must belong to the query's tenant")
        ck.check_layers(query, fresh)
        if key is None:
            key = full_key(query, model)
        ttl, lru = self._ttl(query.layers), self._lru
        size = ck.key_size(cast(tuple[Any, ...], key)) + ck.hits_size(hits)
        carried = tuple(fresh)
        size += sum(ck.KEY_OVERHEAD + ck.layer_size(result) for result, _ in carried)
        if ttl <= 0 or size > lru.max_bytes or lru.max_entries == 0:
            if carried:  # not kept whole: the layers that can be are kept on their own
                self.put_layers(query, model, depth, carried, generations_read)
            return
        whole, width, cost = dict(generations_read), len(query.layers), max(0.0, cost_ms)
        entry = Entry(hits, self._clock(), ttl, whole, "", 0, size, cost, width, depth, carried)
        with self._lock:
            self._add([(key, entry)])

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
            found = [self._valid(key, generations, now) is not None for key in keys]
            missing = [name for name, hit in zip(query.layers, found, strict=True) if not hit]
            if missing:
                found += [True] * len(
                    self._carried(query, model, full, depth, generations, now, missing)
                )
        return sum(found) / len(keys) if keys else 0.0
