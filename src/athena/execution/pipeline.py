"""The steps every recall shares, whatever the strategy: embed, search, fuse, build hits."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from athena.embedding.protocol import Embedder
from athena.execution.aggregate import fuse
from athena.execution.runner import run_layer
from athena.layers.protocol import LayerContext, LayerResult, MemoryLayer, SearchRequest
from athena.records import Hit, RecallQuery
from athena.store.protocol import MemoryRow, Store


@dataclass(frozen=True, slots=True)
class Recall:
    """The answer to a recall: hits best first, and, when asked, how it was produced."""

    hits: tuple[Hit, ...]
    explain: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hits": [hit.to_dict() for hit in self.hits]}
        if self.explain is not None:
            out["explain"] = dict(self.explain)
        return out


HITS_SLACK: Final = 5  # candidates read beyond k at first, for ids gone and repeats


def candidate_depth(k: int) -> int:
    """How many candidates each ranked list contributes: enough for fusion to matter."""
    return max(50, 2 * k)


@dataclass(slots=True)
class Pipeline:
    """Per-process recall machinery shared by every strategy."""

    layers: Mapping[str, MemoryLayer]
    ctx: LayerContext
    embedder: Embedder
    diversify: bool = True

    def request(self, query: RecallQuery, generations: dict[str, int]) -> SearchRequest:
        vector = self.embedder.embed([query.text])[0]
        return SearchRequest(
            query=query,
            vector=vector,
            generations=generations,
            depth=candidate_depth(query.k),
            now=time.time(),
        )

    def request_depth(self, query: RecallQuery) -> int:
        return candidate_depth(query.k)

    def run(self, name: str, request: SearchRequest, source: str) -> LayerResult:
        return run_layer(self.layers, self.ctx, name, request, source)

    def hits(self, query: RecallQuery, results: Mapping[str, LayerResult]) -> tuple[Hit, ...]:
        """:func:`build_hits` from this process's store."""
        return build_hits(self.ctx.store, query, results, self.diversify)


def build_hits(
    store: Store,
    query: RecallQuery,
    results: Mapping[str, LayerResult],
    diversify: bool = True,
) -> tuple[Hit, ...]:
    """Fuse per-layer results and turn the top ``k`` ids into hits, reading their rows from
    ``store`` (this process's, or a worker's when it runs a whole recall).

    Ids whose rows are gone (deleted since an index was built) are skipped. A memory
    whose sources are all cited by better-ranked hits (a fact restating a turn already
    returned) moves behind the memories that bring new evidence, so the ``k`` slots
    cover as many distinct episodes as the ranking allows.

    >>> # build_hits(ctx.store, query, {"semantic": ranking})
    """
    fused = fuse(results, query.layers)
    window = fused[: max(query.k * 3, query.k + 20)]
    # Rows are read in chunks as the walk needs them: most recalls fill k slots from
    # the first k + a few candidates, and reading a row costs more than ranking it.
    rows: dict[int, MemoryRow] = {}
    fresh: list[Hit] = []
    repeats: list[Hit] = []
    covered: set[str] = set()
    read_to = 0
    for position, (memory_id, score) in enumerate(window):
        if position == read_to:
            read_to += chunk_size(query.k, position, len(fresh))
            ids = [i for i, _ in window[position:read_to]]
            rows.update((r.id, r) for r in store.get(query.tenant, ids))
        row = rows.get(memory_id)
        if row is None:
            continue
        hit = _hit(row, score)
        if diversify and row.sources and covered.issuperset(row.sources):
            repeats.append(hit)
        else:
            fresh.append(hit)
            covered.update(row.sources)
        if len(fresh) == query.k:
            break
    return tuple((fresh + repeats)[: query.k])


def chunk_size(k: int, read: int, fresh: int) -> int:
    """How many candidates' rows to read next, after ``read`` of them gave ``fresh`` hits:
    ``k`` and the slack at first; then enough for the empty slots at the rate the walk has
    found fresh hits so far (a candidate may be gone or a repeat), plus the slack; the
    rest of the window when none was fresh. A second chunk of k + 5 was read to fill the
    last few of 50 slots on LoCoMo (110 rows a recall; 62 now), while on one tenant of
    LoCoMo copied 11 times most candidates are repeats and small chunks only added reads.

    >>> chunk_size(10, 0, 0), chunk_size(50, 55, 45), chunk_size(50, 55, 11), chunk_size(5, 10, 0)
    (15, 12, 200, 1000000)
    """
    if read == 0:
        return k + HITS_SLACK
    if fresh == 0:
        return 1_000_000  # the rest of the window
    return -(-(k - fresh) * read // fresh) + HITS_SLACK


NO_METADATA: Final[Mapping[str, Any]] = MappingProxyType({})


def _hit(row: MemoryRow, score: float) -> Hit:
    return Hit(
        id=row.id,
        layer=row.layer,
        text=row.text,
        score=score,
        tenant=row.tenant,
        key=row.key,
        kind=row.kind,
        session=row.session,
        actor=row.actor,
        event_time=row.event_time,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sources=row.sources,
        # Read-only: cached hits are shared by every caller that is served them. Most
        # memories have none, and they share one empty view: a view per hit was one more
        # object for the garbage collector to walk per cached hit.
        metadata=MappingProxyType({**row.metadata, **row.attributes})
        if row.metadata or row.attributes
        else NO_METADATA,
    )


def pack_hits(hits: tuple[Hit, ...]) -> tuple[tuple[Any, ...], ...]:
    """Hits as plain tuples, to cross a process boundary (a hit's metadata is a read-only
    view, which pickle refuses); :func:`unpack_hits` makes the same hits again.

    >>> from athena.records import Hit
    >>> hit = Hit(1, "semantic", "Bob plays the cello.", 0.5, "t", "k", "fact", None, None,
    ...           None, 1.0, 1.0, ("k",), MappingProxyType({"a": 1}))
    >>> unpack_hits(pack_hits((hit,))) == (hit,)
    True
    """
    return tuple(
        (
            h.id,
            h.layer,
            h.text,
            h.score,
            h.tenant,
            h.key,
            h.kind,
            h.session,
            h.actor,
            h.event_time,
            h.created_at,
            h.updated_at,
            h.sources,
            dict(h.metadata) if h.metadata else None,
        )
        for h in hits
    )


def unpack_hits(packed: tuple[tuple[Any, ...], ...]) -> tuple[Hit, ...]:
    """The hits :func:`pack_hits` packed."""
    return tuple(_unpacked(*fields) for fields in packed)


def _unpacked(*f: Any) -> Hit:
    meta = NO_METADATA if f[13] is None else MappingProxyType(f[13])
    return Hit(
        f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], meta
    )
