"""The data side of the result cache: keys, size estimates, entries, what a lookup serves,
validity and the LRU.

Nothing here locks; :mod:`athena.execution.cache` adds the lock, counting and the API.

Keys are plain tuples of every input that can change an answer, compared by equality, so
two different queries can never share an entry (there is no digest to collide). The query
text is normalised first, so queries that differ only in case, spacing or unicode form
share one entry.
"""

from __future__ import annotations

import functools
import string
from collections import OrderedDict
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from athena.layers.protocol import LayerResult
from athena.records import Hit, RecallQuery

Filters = tuple[tuple[str, Any], ...]
FullKey = tuple[str, str, str, str, tuple[str, ...], int, Filters]
LayerKey = tuple[str, str, str, str, str, int, Filters]
Scope = tuple[str, str, str, Filters]  # what a query's layer keys share: model, tenant, text…

# Layers whose answers depend on every layer's writes, not only their own.
WHOLE_TENANT_LAYERS: Final = frozenset({"graph"})

# Rough per-object overheads (bytes) for the size estimate: an entry, a hit, a key.
ENTRY_OVERHEAD: Final = 256
HIT_OVERHEAD: Final = 200
KEY_OVERHEAD: Final = 160
SOURCE_OVERHEAD: Final = 40  # a short id string and its slot
METADATA_OVERHEAD: Final = 96  # a key, a short value and a dict slot


_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@functools.lru_cache(maxsize=4096)  # a recall keys its text 3 to 7 times; repeats are common
def normalize_text(text: str) -> str:
    """The query text as keys see it: whitespace collapsed and stripped; ASCII lower-cased.

    Only changes that no part of a recall can see are folded together: FTS5 and both
    embedders' (uncased) tokenizers ignore ASCII case and runs of whitespace. Unicode case
    folding or NFKC would merge queries that the embedders tokenize differently
    ("straße"/"STRASSE"), so that one's answer could be served for the other.

    >>> normalize_text("  Where IS\tthe  KEY? ")
    'where is the key?'
    >>> normalize_text("STRASSE") == normalize_text("straße")
    False
    """
    return " ".join(text.split()).translate(_ASCII_LOWER)


def full_key(query: RecallQuery, model: str, text: str | None = None) -> FullKey:
    """The key of a whole recall's answer (``text``: the query text, already normalised).

    >>> from athena.records import make_query
    >>> full_key(make_query("Hi  there", "t", k=3, layers=["semantic"]), "m")[:6]
    ('full', 'm', 't', 'hi there', ('semantic',), 3)
    """
    return (
        "full",
        model,
        query.tenant,
        normalize_text(query.text) if text is None else text,
        query.layers,
        query.k,
        query.filters(),
    )


def layer_key(
    query: RecallQuery, model: str, layer: str, depth: int, text: str | None = None
) -> LayerKey:
    """The key of one layer's ranking for the query, searched ``depth`` deep.

    >>> from athena.records import make_query
    >>> layer_key(make_query("Hi", "t"), "m", "graph", 50)[:6]
    ('layer', 'm', 't', 'hi', 'graph', 50)
    """
    norm = normalize_text(query.text) if text is None else text
    return scoped_layer_key((model, query.tenant, norm, query.filters()), layer, depth)


def layer_keys(
    query: RecallQuery, model: str, layers: Sequence[str], depth: int, text: str
) -> list[LayerKey]:
    """:func:`layer_key` of each of ``layers``, the query's filters read once (``text``:
    the query text, already normalised).

    >>> from athena.records import make_query
    >>> q = make_query("Hi", "t")
    >>> layer_keys(q, "m", ["graph"], 50, "hi") == [layer_key(q, "m", "graph", 50)]
    True
    """
    scope = (model, query.tenant, text, query.filters())
    return [scoped_layer_key(scope, layer, depth) for layer in layers]


def scoped_layer_key(scope: Scope, layer: str, depth: int) -> LayerKey:
    """A layer key from what every layer key of one query shares (model, tenant, normalised
    text, filters): a full key holds all of them, so a full entry can name its layers'.

    >>> scoped_layer_key(("m", "t", "hi", ()), "graph", 50)
    ('layer', 'm', 't', 'hi', 'graph', 50, ())
    """
    model, tenant, text, filters = scope
    return ("layer", model, tenant, text, layer, depth, filters)


def flight_key(
    query: RecallQuery, model: str, generations: Mapping[str, int], key: Hashable | None = None
) -> Hashable:
    """A single-flight key: the full key (``key``, if the caller kept it) plus the
    generations the caller read.

    Callers that read different generations must not share an execution: one that started
    after a write would otherwise receive an answer computed before it.

    >>> from athena.records import make_query
    >>> q = make_query("hi", "t")
    >>> flight_key(q, "m", {"episodic": 1}) == flight_key(q, "m", {"episodic": 2})
    False
    """
    return (full_key(query, model) if key is None else key, tuple(sorted(generations.items())))


def key_size(key: tuple[Any, ...]) -> int:
    """Estimated bytes of a key: its strings plus a fixed overhead."""
    return KEY_OVERHEAD + sum(len(part) for part in key if isinstance(part, str))


def hits_size(hits: tuple[Hit, ...]) -> int:
    """Estimated bytes of a recall's hits (computed once, when the entry is stored): the
    strings that vary, plus fixed overheads per hit, per source and per metadata item.

    An estimate that walks no metadata values: it runs on every cache fill.
    """
    total = ENTRY_OVERHEAD + len(hits) * (HIT_OVERHEAD + 16)
    for hit in hits:
        total += len(hit.text) + len(hit.key) + len(hit.session or "")
        total += SOURCE_OVERHEAD * len(hit.sources) + METADATA_OVERHEAD * len(hit.metadata)
    return total


def layer_size(result: LayerResult) -> int:
    """Estimated bytes of one layer's ranking: 8 per id, 8 per score, plus overhead."""
    return ENTRY_OVERHEAD + 8 * (len(result.ids) + len(result.scores)) + len(result.source)


# --- validity: what an entry depends on, and whether it may still be served -------------

VALID, STALE, EXPIRED, AHEAD = 0, 1, 2, 3


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


@dataclass(slots=True)
class Entry:
    """A stored value and what it depends on: generations read, age, TTL.

    ``whole`` is the tenant's generations mapping for entries that depend on every layer
    (full recalls, the graph layer); otherwise ``gen`` is ``layer``'s own generation.
    """

    value: Any
    stamp: float
    ttl: float
    whole: dict[str, int] | None
    layer: str
    gen: int
    size: int
    cost_ms: float
    width: int  # layer searches it saves when served
    # A full recall's freshly searched layers, (ranking, cost in ms) searched ``depth``
    # deep: stored as entries of their own only once this one can no longer be served.
    depth: int = 0
    carried: tuple[tuple[LayerResult, float], ...] = ()


def layer_entries(
    scope: Scope,
    depth: int,
    results: Collection[tuple[LayerResult, float]],
    whole: dict[str, int],
    stamp: float,
    ttls: Mapping[str, float],
    max_bytes: int,
) -> list[tuple[LayerKey, Entry]]:
    """The entries of layer rankings ``(ranking, cost ms)`` of one recall that read the
    generations ``whole`` before it ran, at time ``stamp``: layers with no TTL, or larger
    than ``max_bytes``, are not cached.

    >>> r = LayerResult("semantic", (1,), (1.0,))
    >>> [(k[4], e.gen) for k, e in layer_entries(("m", "t", "hi", ()), 50, [(r, 2.0)],
    ...                                          {"semantic": 3}, 0.0, {"semantic": 60.0}, 10**6)]
    [('semantic', 3)]
    """
    base = key_size(("layer", *scope[:3]))  # the same for every layer
    entries: list[tuple[LayerKey, Entry]] = []
    for result, cost_ms in results:
        layer = result.layer
        ttl = ttls.get(layer, 0.0)
        size = base + len(layer) + layer_size(result)
        if ttl <= 0 or size > max_bytes:
            continue
        depends = whole if layer in WHOLE_TENANT_LAYERS else None
        cost = max(0.0, cost_ms)  # kept as computed: marked as the cache's when served
        entry = Entry(result, stamp, ttl, depends, layer, whole.get(layer, 0), size, cost, 1)
        entries.append((scoped_layer_key(scope, layer, depth), entry))
    return entries


def check_layers(query: RecallQuery, results: Collection[tuple[LayerResult, float]]) -> None:
    """ValueError unless every ranking is of one of the query's layers."""
    for result, _ in results:
        if result.layer not in query.layers:
            raise ValueError(f"layer {result.layer!r} is not one of the query's layers")


def as_cached(result: LayerResult) -> LayerResult:
    """A stored ranking as served: its source is the cache (built on a hit, not on a fill).

    >>> as_cached(LayerResult("semantic", (1,), (1.0,))).source
    'cache'
    """
    return LayerResult(
        result.layer, result.ids, result.scores, result.elapsed_ms, result.generation, "cache"
    )


def behind(read: Mapping[str, int], current: Mapping[str, int]) -> bool:
    """Whether some layer of ``current`` moved past what ``read`` saw (absent: never written).

    >>> behind({"episodic": 1}, {"episodic": 2}), behind({"episodic": 2}, {"episodic": 1})
    (True, False)
    """
    return any(gen > read.get(layer, 0) for layer, gen in current.items())


def check(entry: Entry, generations: Mapping[str, int], now: float) -> int:
    """VALID; STALE (it read an older generation: never servable again); EXPIRED; or AHEAD
    (the caller read older generations than the entry did: keep it, but do not serve it)."""
    whole = entry.whole
    if whole is not None:
        if whole != generations:
            return STALE if behind(whole, generations) else AHEAD
    else:
        current = generations.get(entry.layer, 0)  # generations start at 1 when written
        if current != entry.gen:
            return STALE if current > entry.gen else AHEAD
    return EXPIRED if now - entry.stamp >= entry.ttl else VALID


def supersedes(old: Entry, new: Entry) -> bool:
    """Whether ``old`` read strictly newer generations than ``new`` (so keep ``old``)."""
    if old.whole is not None and new.whole is not None:
        return behind(new.whole, old.whole)
    return old.gen > new.gen


def trust(entry: Entry, now: float) -> tuple[float, float]:
    """(age in seconds, confidence): confidence halves every half TTL."""
    age = max(0.0, now - entry.stamp)
    return age, 0.5 ** (2.0 * age / entry.ttl)


# --- storage: a recency-ordered, size-bounded map (the cache holds the lock) ----------


class Lru:
    """Entries in recency order, bounded by count and estimated bytes; not locked.

    ``texts`` counts the entries under each tenant and normalised query text (a full or a
    layer key's third and fourth parts): a lookup of a text with none, a new question's,
    skips building and probing its keys. Per tenant, so one tenant's entries never change
    what another's lookup does.

    >>> lru, entry = Lru(1, 10**6), Entry((), 0.0, 60.0, {}, "", 0, 10, 1.0, 1)
    >>> lru.add(("full", "m", "t", "hi", (), 5, ()), entry)
    >>> lru.add(("layer", "m", "t", "yo", "graph", 50, ()), entry)
    >>> lru.texts, lru.evictions
    ({('t', 'yo'): 1}, 1)
    """

    __slots__ = ("data", "evictions", "max_bytes", "max_entries", "nbytes", "texts")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.data: OrderedDict[Hashable, Entry] = OrderedDict()
        self.texts: dict[tuple[str, str], int] = {}
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.nbytes = self.evictions = 0

    def add(self, key: Hashable, entry: Entry) -> None:
        self.drop(key)
        self.data[key] = entry
        self.nbytes += entry.size
        text = _scope(key)
        self.texts[text] = self.texts.get(text, 0) + 1
        while len(self.data) > self.max_entries or self.nbytes > self.max_bytes:
            old, gone = self.data.popitem(last=False)
            self._gone(old, gone)
            self.evictions += 1

    def drop(self, key: Hashable) -> None:
        gone = self.data.pop(key, None)
        if gone is not None:
            self._gone(key, gone)

    def _gone(self, key: Hashable, entry: Entry) -> None:
        self.nbytes -= entry.size
        text = _scope(key)
        left = self.texts[text] - 1
        if left:
            self.texts[text] = left
        else:
            del self.texts[text]


def _scope(key: Hashable) -> tuple[str, str]:
    """(tenant, normalised text) of a full or a layer key."""
    parts = cast(tuple[Any, ...], key)
    return parts[2], parts[3]


@dataclass(slots=True)
class Counts:
    """What the cache counts; see :meth:`ResultCache.stats`."""

    hits: int = 0
    partial_hits: int = 0
    misses: int = 0
    stale_dropped: int = 0
    expired_dropped: int = 0
    queries_avoided: int = 0
    latency_saved_ms: float = 0.0
