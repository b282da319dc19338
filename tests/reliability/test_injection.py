"""Injection: SQL and FTS5 syntax in every text field and filter matches as plain words only.

Hostile strings (SQL quotes and comments, FTS5 ``NEAR``, column filters ``text:`` and
``scope:``, ``*``, ``^``, unbalanced parentheses, ``AND/OR/NOT``) go into the query, the
text, tenant, session, actor, key, kind and metadata. None may raise anything but a
typed refusal (NUL is refused by design), none may change what the lexical index matches
beyond the plain words, and none may reach another tenant's memories. Afterwards every
table is still there and the file passes the full audit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from reliability_support import assert_sound

from athena import LAYERS, Memory
from athena.embedding import Embedder
from athena.errors import InvalidInput
from athena.retrieval.lexical import match_expression, terms
from athena.store.protocol import RowFilter
from athena.store.sql_reads import scope_token

HOSTILE = (
    "'; DROP TABLE memories; --",
    "x' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM vectors",
    "scope:xyz OR text:*",
    "scope:* OR scope:",
    "text:lisbon",
    "{text scope}: alice",
    "NEAR(alice lisbon, 0)",
    "alice AND NOT bob",
    "alice OR bob OR *",
    "^alice*",
    "(((unbalanced",
    "unbalanced)))",
    '"unterminated',
    "- + : * ^ ( ) \" '",
    "memories_fts MATCH '*'",
    "%_%",
    "\\' \\\" \\\\",
    "quokka",  # a plain word: the control
)
TENANTS = ("alpha", "beta")
CORPUS = (
    "Alice moved to Lisbon in May.",
    "Bob plays the piano on Sundays.",
    "The wombat ate the garden salad.",
)


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Memory]:
    mem = Memory(tmp_path_factory.mktemp("inj") / "inj.db", embedder=embedder, pool="off")
    for tenant in TENANTS:
        for layer in LAYERS:
            for text in CORPUS:
                mem.remember(f"{text} ({tenant})", tenant=tenant, layer=layer, actor="Alice")
    yield mem
    mem.close()


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[^\W_]+", text)}


def _stem_match(query_terms: list[str], text: str) -> bool:
    """Whether ``text`` holds one of the terms (prefix test: the index stems with porter)."""
    words = _words(text)
    return any(w.startswith(t[:4]) or t.startswith(w[:4]) for t in query_terms for w in words)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_query_matches_plain_words_only(memory: Memory, hostile: str) -> None:
    query_terms = terms(hostile)
    match = match_expression(hostile)
    for tenant in TENANTS:
        for layer in LAYERS:
            if match is None:
                continue
            found = memory.store.lexical(tenant, layer, match, 100, RowFilter())
            for memory_id, _ in found:
                row = memory.get(memory_id, tenant=tenant)  # NotFound if another tenant's
                assert row["layer"] == layer
                assert _stem_match(query_terms, row["text"]), (hostile, row["text"])
        result = memory.recall(hostile, tenant=tenant, k=50, explain=True)
        assert {hit.tenant for hit in result.hits} <= {tenant}


def test_column_filter_and_star_do_not_widen_the_match(memory: Memory) -> None:
    """``scope:xyz OR text:*`` is the words scope, xyz and text: nothing here contains them."""
    for tenant in TENANTS:
        for layer in LAYERS:
            expression = match_expression("scope:xyz OR text:*")
            assert expression is not None
            assert memory.store.lexical(tenant, layer, expression, 100, RowFilter()) == []
    bait = memory.remember("the xyz protocol (alpha)", tenant="alpha", layer="semantic")
    try:
        expression = match_expression("scope:xyz OR text:*")
        assert expression is not None
        found = memory.store.lexical("alpha", "semantic", expression, 100, RowFilter())
        assert [memory_id for memory_id, _ in found] == [bait]
        assert memory.store.lexical("beta", "semantic", expression, 100, RowFilter()) == []
    finally:
        memory.forget(bait, tenant="alpha")


def test_another_tenants_scope_token_matches_nothing(memory: Memory) -> None:
    for layer in LAYERS:
        other = match_expression(scope_token("beta", layer))
        assert other is not None
        assert memory.store.lexical("alpha", layer, other, 100, RowFilter()) == []
        hits = memory.recall(scope_token("beta", layer), tenant="alpha", k=50).hits
        assert {hit.tenant for hit in hits} == {"alpha"}


def test_own_scope_token_is_a_plain_word(memory: Memory) -> None:
    """Regression of bug 5 (docs/reliability.md, fixed): user terms match the text only."""
    for layer in LAYERS:
        expression = match_expression(scope_token("alpha", layer))
        assert expression is not None
        assert memory.store.lexical("alpha", layer, expression, 100, RowFilter()) == []
    # ... but the same token written in a memory's text is found, like any word.
    token = scope_token("alpha", "semantic")
    bait = memory.remember(f"the word {token} in a text", tenant="alpha", layer="semantic")
    try:
        expression = match_expression(token)
        assert expression is not None
        found = memory.store.lexical("alpha", "semantic", expression, 100, RowFilter())
        assert [memory_id for memory_id, _ in found] == [bait]
    finally:
        memory.forget(bait, tenant="alpha")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_in_every_field_are_stored_verbatim(memory: Memory, hostile: str) -> None:
    tenant = f"tenant {hostile}"
    memory_id = memory.remember(
        f"note {hostile}",
        tenant=tenant,
        layer="semantic",
        key=f"key {hostile}",
        kind=None,
        session=f"session {hostile}",
        actor=f"actor {hostile}",
        metadata={hostile: hostile, "nested": [hostile]},
    )
    row = memory.get(memory_id, tenant=tenant)
    assert row["text"] == f"note {hostile}" and row["tenant"] == tenant
    assert row["key"] == f"key {hostile}" and row["session"] == f"session {hostile}"
    assert row["actor"] == f"actor {hostile}"
    assert row["metadata"] == {hostile: hostile, "nested": [hostile]}
    # The filters take the hostile values as exact values, not syntax.
    for session, actor in (
        (f"session {hostile}", None),
        (None, f"actor {hostile}"),
        (f"session {hostile}", f"actor {hostile}"),
    ):
        hits = memory.recall(f"note {hostile}", tenant=tenant, session=session, actor=actor).hits
        assert [hit.id for hit in hits] == [memory_id]
    # The same hostile strings as filters of the other tenants match nothing there.
    for other in TENANTS:
        hits = memory.recall(hostile, tenant=other, session=hostile, actor=hostile).hits
        assert hits == ()
        hits = memory.recall("alice", tenant=other, kinds=[hostile, "fact"], k=50).hits
        assert {hit.tenant for hit in hits} == {other} and {h.kind for h in hits} <= {"fact"}
    # The key is an idempotency key like any other.
    again = memory.remember(
        f"note 2 {hostile}", tenant=tenant, layer="semantic", key=f"key {hostile}"
    )
    assert again == memory_id
    assert memory.get(memory_id, tenant=tenant)["text"] == f"note 2 {hostile}"
    assert memory.tenants().count(tenant) == 1


def test_nul_is_refused_everywhere(memory: Memory) -> None:
    for field in ("text", "tenant", "key", "session", "actor"):
        values = {"text": "x", "tenant": "alpha", field: "a\x00b"}
        text, tenant = values.pop("text"), values.pop("tenant")
        with pytest.raises(InvalidInput):
            memory.remember(text, tenant=tenant, **values)
    with pytest.raises(InvalidInput):
        memory.recall("a\x00b", tenant="alpha")


def test_nothing_was_dropped_and_the_file_is_sound(memory: Memory) -> None:
    stats = memory.stats()
    assert stats["memories"] >= len(TENANTS) * len(LAYERS) * len(CORPUS) + len(HOSTILE)
    for tenant in TENANTS:
        assert memory.stats(tenant)["memories"] == len(LAYERS) * len(CORPUS)
    assert_sound(memory.store.path)
