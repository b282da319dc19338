"""Query analysis: what kind of question this is, and what it will likely cost."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

QUERY_TYPES: Final = ("temporal", "procedural", "prospective", "relational", "factual")

_RULES: Final = (
    ("procedural", re.compile(r"\b(how (do|to|can|should)|steps?|procedure|workflow|recipe|instructions?)\b", re.I)),
    ("prospective", re.compile(r"\b(todo|to-do|remind(er)?|task|due|deadline|upcoming|plan(ned|s)?|goal|next week|tomorrow|schedule)\b", re.I)),
    ("temporal", re.compile(r"\b(when|what (time|date|year|month|day)|how long|before|after|since|ago|last (week|month|year)|yesterday|during)\b", re.I)),
    ("relational", re.compile(r"\b(who|whom|whose|relationship|related|friend|family|partner|colleague|together|with)\b", re.I)),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class QueryAnalysis:
    """What the planner knows about a query before running it."""

    query_type: str
    layers: tuple[str, ...]
    estimated_ms: float
    cached_fraction: float
    length: int


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
