"""Query analysis: what kind of question this is, and what it will likely cost."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

QUERY_TYPES: Final = ("temporal", "procedural", "prospective", "relational", "factual")

_CUES: Final = (
    ("procedural", r"how (do|to|can|should)|steps?|procedure|workflow|recipe|instructions?"),
    (
        "prospective",
        r"todo|to-do|remind(er)?|task|due|deadline|upcoming|plan(ned|s)?|goal|next week"
        r"|tomorrow|schedule",
    ),
    (
        "temporal",
        r"when|what (time|date|year|month|day)|how long|before|after|since|ago"
        r"|last (week|month|year)|yesterday|during",
    ),
    (
        "relational",
        r"who|whom|whose|relationship|related|friend|family|partner|colleague|together|with",
    ),
)
_RULES: Final = tuple((name, re.compile(rf"\b({cues})\b", re.I)) for name, cues in _CUES)


@dataclass(frozen=True, slots=True)
class QueryAnalysis:
    """What the planner knows about a query before running it."""

    query_type: str
    layers: tuple[str, ...]
    estimated_ms: float
    cached_fraction: float
    length: int


@functools.lru_cache(maxsize=1024)  # agents repeat queries; a cache hit must not pay 4 µs here
def classify(text: str) -> str:
    """The query type from cue words; ``factual`` when nothing more specific matches.

    >>> classify("When did Caroline go to the support group?")
    'temporal'
    >>> classify("How do I deploy the service?")
    'procedural'
    """
    for name, pattern in _RULES:
        if pattern.search(text):
            return name
    return "factual"
