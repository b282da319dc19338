"""Turning free text into a safe FTS5 query.

Every term is quoted, so FTS5 syntax in user text (``NEAR``, ``col:``, ``*``, quotes,
parentheses) matches as plain words and can never change the query's structure. Very
common words are dropped: bm25 scores every row that matches a term, and a stopword
matches most of the corpus.
"""

from __future__ import annotations

import re
from typing import Final

MAX_TERMS: Final = 32
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)

STOPWORDS: Final = frozenset(
    """a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can could did didn't do does doesn't doing don't
    down during each few for from further had has have having he he'd he'll he's her here
    here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it
    it's its itself let's me more most my myself no nor not of off on once only or other
    ought our ours ourselves out over own same she she'd she'll she's should so some such
    than that that's the their theirs them themselves then there there's these they they'd
    they'll they're they've this those through to too under until up very was we we'd we'll
    we're we've were what what's when when's where where's which while who who's whom why
    why's will with would you you'd you'll you're you've your yours yourself yourselves
    s t just also yes ok oh hey hi""".split()
)


def terms(text: str) -> list[str]:
    """Content words of ``text``, lower-cased, de-duplicated, in order.

    >>> terms("What did Caroline do at the LGBTQ support group?")
    ['caroline', 'lgbtq', 'support', 'group']
    """
    seen: dict[str, None] = {}
    words = [w.lower().replace("'", "") for w in _WORD.findall(text)]
    for word in words:
        if word not in STOPWORDS and word not in seen:
            seen[word] = None
    if not seen:  # a query of stopwords only still deserves an answer
        for word in words:
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


def match_expression(text: str) -> str | None:
    """An FTS5 MATCH expression ORing the quoted terms of ``text``; None if it has no words.

    >>> match_expression('NEAR(x y) OR "z*"')
    '"near" OR "x" OR "y" OR "z"'
    """
    found = terms(text)
    if not found:
        return None
    return " OR ".join(f'"{term}"' for term in found)
