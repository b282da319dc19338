"""Turning free text into terms: stemmed tokens for the lexical index, and a safe FTS5 query.

Every FTS5 term is quoted, so FTS5 syntax in user text (``NEAR``, ``col:``, ``*``, quotes,
parentheses) matches as plain words and can never change the query's structure. Very
common words are dropped from queries: bm25 scores every row that matches a term, and a
stopword matches most of the corpus.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from typing import Final

import Stemmer

MAX_TERMS: Final = 32
STEMS_VERSION: Final = 1  # bump whenever stems() changes: saved lexical snapshots then rebuild
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


_STEMMERS = threading.local()  # a PyStemmer object is not safe to share between threads


def _stem(words: list[str]) -> list[str]:
    stemmer = getattr(_STEMMERS, "porter", None)
    if stemmer is None:
        stemmer = _STEMMERS.porter = Stemmer.Stemmer("porter")
        # PyStemmer's own cache keeps up to 10,000 words per stemmer, each a two-item list
        # the garbage collector tracks: a third of a warmed 100k-memory process's tracked
        # objects, and of every full collection's time (72-76 ms with it, 46-48 without:
        # benchmarks/gc_pause.py --strategy adaptive). Stemming a word afresh costs about
        # 50 ns more than finding it there.
        stemmer.maxCacheSize = 0
    return list(stemmer.stemWords(words))


def _fold(text: str) -> str:
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# Words already stemmed, for index builds: a str -> str dict, which the garbage collector
# never tracks (unlike PyStemmer's own cache, off above), keyed by the token as the pattern
# found it (an apostrophe still in it). A 662-document BM25 build spent 15.5 µs a document
# in stems() without it, 9.8 with it (the words seen before).
_STEMMED: dict[str, str] = {}
STEMMED_MAX: Final = 50_000  # words kept (a few MB), emptied when full
STEMMED_LONGEST: Final = 32  # longer tokens (ids, hashes) are rarely seen twice: not kept
# The tokens _WORD finds in folded ASCII text (its letters and digits are A-Z, a-z and 0-9:
# folding lower-cases before NFKD, which turns "™" into "TM"), found about a fifth faster
# than through the Unicode classes.
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z0-9]+)?")


def stems(text: str) -> list[str]:
    """Every token of ``text``: case and diacritics folded, Porter-stemmed (what a document
    is indexed as; its length is the number of tokens).

    >>> stems("Caroline's groups were running")
    ['carolin', 'group', 'were', 'run']
    """
    folded = _fold(text)
    words = (_ASCII_WORD if folded.isascii() else _WORD).findall(folded)
    known = _STEMMED
    out = list(map(known.get, words))
    if None not in out:
        return out  # type: ignore[return-value]  # no None in it
    missing = list(dict.fromkeys(w for w, s in zip(words, out, strict=True) if s is None))
    found = dict(zip(missing, _stem([w.replace("'", "") for w in missing]), strict=True))
    kept = {w: s for w, s in found.items() if len(w) <= STEMMED_LONGEST}
    if len(known) + len(kept) > STEMMED_MAX:
        known.clear()
    known.update(kept)
    return [s if s is not None else found[w] for w, s in zip(words, out, strict=True)]


@functools.lru_cache(maxsize=4096)  # each text layer of a recall asks for the same text's
def query_stems(text: str) -> tuple[str, ...]:
    """The stemmed content words of a query, de-duplicated, in order.

    >>> query_stems("What did Caroline do at the support groups?")
    ('carolin', 'support', 'group')
    """
    return tuple(dict.fromkeys(_stem([_fold(t) for t in terms(text)])))
