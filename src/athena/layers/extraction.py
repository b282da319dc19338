"""Entity extraction on write, for the graph layer.

A light, dependency-free extractor: runs of capitalised words that are not sentence-start
function words, plus the speaker. It finds people, places, organisations and titles in
conversational text well enough to link memories; typed relations given explicitly by
the caller (``attributes["relations"]``) are stored as they are.
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Final

from athena.retrieval.lexical import STOPWORDS

_NAME = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of\s+|the\s+|de\s+)?[A-Z][\w'’-]*)*")
_NOT_NAMES: Final = frozenset(
    """i i'm i've i'll i'd im ive hey hi hello wow yes yeah yep no nope oh ok okay thanks thank
    sure great good nice cool awesome amazing congrats congratulations sorry well so and but
    or what when where who why how which that this these those it its there here they we you
    he she my your our their his her mine also just really absolutely definitely totally
    glad love lol haha omg btw anyway by the way monday tuesday wednesday thursday friday
    saturday sunday january february march april may june july august september october
    november december today tomorrow yesterday tonight""".split()
)
MAX_ENTITIES: Final = 16


def extract_entities(text: str, actor: str | None = None) -> tuple[str, ...]:
    """Names mentioned in ``text`` (and the actor), de-duplicated case-insensitively.

    >>> extract_entities("Yesterday Caroline met Melanie at the Louvre in Paris.", "Bob")
    ('Bob', 'Caroline', 'Melanie', 'Louvre', 'Paris')
    """
    found: dict[str, str] = {}
    if actor and actor.strip():
        found[actor.strip().casefold()] = actor.strip()
    for match in _NAME.finditer(text):
        words = match.group(0).replace("’", "'").split()
        # Drop leading function words ("Hey Caroline" -> "Caroline").
        while words and (words[0].casefold() in _NOT_NAMES or words[0].casefold() in STOPWORDS):
            words = words[1:]
        if not words:
            continue
        name = " ".join(words).strip("'-")
        if len(name) < 2 or name.casefold() in _NOT_NAMES:
            continue
        found.setdefault(name.casefold(), name)
        if len(found) >= MAX_ENTITIES:
            break
    return tuple(found.values())


def query_entities(text: str, known: Container[str], max_words: int = 3) -> list[str]:
    """Known entity names (normalised) that appear in ``text`` as 1- to 3-word n-grams.

    >>> query_entities("Where did caroline meet Mel?", frozenset({"caroline", "paris"}))
    ['caroline']
    """
    words = [w.strip("?!.,;:\"'()").casefold() for w in text.split()]
    words = [w.removesuffix("'s").removesuffix("’s") for w in words if w]
    found: dict[str, None] = {}
    for size in range(max_words, 0, -1):
        for start in range(len(words) - size + 1):
            gram = " ".join(words[start : start + size])
            if gram in known:
                found.setdefault(gram, None)
    return list(found)
