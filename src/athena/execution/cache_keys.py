"""Keys and size estimates for the result cache.

Keys are plain tuples of every input that can change an answer, compared by equality, so
two different queries can never share an entry (there is no digest to collide). The query
text is normalised first, so queries that differ only in case, spacing or unicode form
share one entry.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Hashable, Mapping
from typing import Any, Final

from athena.layers.protocol import LayerResult
from athena.records import Hit, RecallQuery

Filters = tuple[tuple[str, Any], ...]
FullKey = tuple[str, str, str, str, tuple[str, ...], int, Filters]
LayerKey = tuple[str, str, str, str, str, int, Filters]

# Rough per-object overheads (bytes) for the size estimate: an entry, a hit, a key.
ENTRY_OVERHEAD: Final = 256
HIT_OVERHEAD: Final = 200
KEY_OVERHEAD: Final = 160


def normalize_text(text: str) -> str:
    """The query text as keys see it: NFKC, casefolded, whitespace collapsed and stripped.

    >>> normalize_text("  Where IS\\tthe  ＫＥＹ? ")
    'where is the key?'
    """
    if text.isascii():  # ASCII is already NFKC, and casefold is lower for it
        return " ".join(text.lower().split())
    out = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    # Casefolding can leave text that NFKC changes again; settle on the fixed point so
    # that normalising a normalised text is a no-op.
    for _ in range(4):
        again = " ".join(unicodedata.normalize("NFKC", out).casefold().split())
        if again == out:
            break
        out = again
    return out


def full_key(query: RecallQuery, model: str) -> FullKey:
    """The key of a whole recall's answer.

    >>> from athena.records import make_query
    >>> full_key(make_query("Hi  there", "t", k=3, layers=["semantic"]), "m")[:6]
    ('full', 'm', 't', 'hi there', ('semantic',), 3)
    """
    return (
        "full",
        model,
        query.tenant,
        normalize_text(query.text),
        query.layers,
        query.k,
        query.filters(),
    )


def layer_key(query: RecallQuery, model: str, layer: str, depth: int) -> LayerKey:
    """The key of one layer's ranking for the query, searched ``depth`` deep.

    >>> from athena.records import make_query
    >>> layer_key(make_query("Hi", "t"), "m", "graph", 50)[:6]
    ('layer', 'm', 't', 'hi', 'graph', 50)
    """
    return ("layer", model, query.tenant, normalize_text(query.text), layer, depth, query.filters())


def flight_key(query: RecallQuery, model: str, generations: Mapping[str, int]) -> Hashable:
    """A single-flight key: the full key plus the generations the caller read.

    Callers that read different generations must not share an execution: one that started
    after a write would otherwise receive an answer computed before it.

    >>> from athena.records import make_query
    >>> q = make_query("hi", "t")
    >>> flight_key(q, "m", {"episodic": 1}) == flight_key(q, "m", {"episodic": 2})
    False
    """
    return (full_key(query, model), tuple(sorted(generations.items())))


def key_size(key: tuple[Any, ...]) -> int:
    """Estimated bytes of a key: its strings plus a fixed overhead."""
    return KEY_OVERHEAD + sum(len(part) for part in key if isinstance(part, str))


def hits_size(hits: tuple[Hit, ...]) -> int:
    """Estimated bytes of a recall's hits (computed once, when the entry is stored)."""
    total = ENTRY_OVERHEAD
    for hit in hits:
        total += HIT_OVERHEAD + 16 + len(hit.text) + len(hit.key) + len(hit.kind)
        total += len(hit.session or "") + len(hit.actor or "")
        total += sum(len(source) + 8 for source in hit.sources)
        for name, value in hit.metadata.items():
            total += len(str(name)) + (len(value) if isinstance(value, str) else 16)
    return total


def layer_size(result: LayerResult) -> int:
    """Estimated bytes of one layer's ranking: 8 per id, 8 per score, plus overhead."""
    return ENTRY_OVERHEAD + 8 * (len(result.ids) + len(result.scores)) + len(result.source)
