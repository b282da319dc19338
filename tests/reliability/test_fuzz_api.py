"""Hypothesis over the public Python API: a typed AthenaError or a correct answer, never else.

Inputs: any unicode (NUL and lone surrogates included), texts around the 100,000-character
limit, deep and odd metadata, odd timestamps (nan, inf, huge, negative), any ``k``, ids of
any 64-bit value, unknown layers and strategies. Every call either raises an
:class:`~athena.errors.AthenaError` or answers correctly: what was remembered reads back
as written, a recall returns at most ``k`` hits, all of the asking tenant and passing its
filters. After the properties the file passes the full audit (``store_checks``).

Three classes of input were bugs that raised something else (docs/reliability.md, bugs 1
to 3, fixed): ids past 2**63 - 1, integers too large for a float as a time, and lone
surrogates in ``sources``, in ``kind`` (graph, procedural) or in the recall filters
``session``, ``actor``, ``kinds``. They are drawn by the generators now, and pinned by the
regression tests at the end of this file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import assert_sound

from athena import LAYERS, Memory, MemoryInput
from athena.embedding import Embedder
from athena.errors import AthenaError, InvalidInput
from athena.records import MAX_K, MAX_TEXT_CHARS

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
TENANTS = ("t1", "t2", "T1", " t1", "t1\u200b", "ｔ1")
INJECTIONS = (
    "'; DROP TABLE memories; --",
    '" OR 1=1 --',
    "scope:xyz OR text:*",
    "NEAR(alice bob, 2)",
    "alice AND NOT bob",
    "(((unbalanced",
    "^alice*",
    "text:lisbon",
    "{text scope}: x",
    "a\x00b",
    "\ud800lone",
    "🙂 emoji ⁉",
)
ANY_CHAR = st.characters(exclude_categories=())  # includes NUL and lone surrogates
SAFE_CHAR = st.characters(exclude_categories=("Cs",))  # no lone surrogates
any_text = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(INJECTIONS),
    st.integers(MAX_TEXT_CHARS - 3, MAX_TEXT_CHARS + 3).map(lambda n: ("ab " * n)[:n]),
)
safe_text = st.text(SAFE_CHAR, max_size=20)
tenants = st.one_of(st.sampled_from(TENANTS), st.text(ANY_CHAR, max_size=12), st.just("x" * 257))
layers = st.one_of(st.sampled_from(LAYERS), st.text(max_size=10))
# Times: finite, nan, inf, huge floats, ints that still convert to a float and some that do not.
times = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**80), 2**80),
    st.sampled_from([0, -1, 1e300, -1e300, 253_402_300_800, math.nan, math.inf]),
    st.sampled_from([10**400, -(10**400), 2**1024]),
)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(ANY_CHAR, max_size=10),
)
json_like = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(ANY_CHAR, max_size=6), inner)
    ),
    max_leaves=12,
)
metadata = st.one_of(
    st.none(),
    st.dictionaries(st.text(ANY_CHAR, max_size=6), json_like, max_size=4),
    # Depths well inside or well past the recursion limit: a depth near it would pass the
    # write and then fail the comparison below only because Hypothesis's frames add up.
    st.sampled_from([1, 10, 50, 2_000, 5_000]).map(lambda depth: _nested(depth)),
)
ks = st.one_of(st.integers(-(2**70), 2**70), st.integers(0, MAX_K + 2), st.booleans())
ids = st.one_of(
    st.integers(-(2**64), 2**64),
    st.integers(1, 200),
    st.sampled_from([2**63 - 1, 2**63]),
    st.booleans(),
)


def _nested(depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        out = {"a": out}
    return out


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Memory]:
    mem = Memory(tmp_path_factory.mktemp("fuzz") / "fuzz.db", embedder=embedder, pool="off")
    for tenant in TENANTS:
        for layer in LAYERS:
            mem.remember(f"{tenant} {layer} Alice moved to Lisbon", tenant=tenant, layer=layer)
    yield mem
    mem.close()


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The call's value, or None after an AthenaError; any other exception fails the test."""
    try:
        return fn(*args, **kwargs)
    except AthenaError:
        return None


@FUZZ
@given(
    text=any_text,
    tenant=tenants,
    layer=layers,
    key=st.one_of(st.none(), st.text(ANY_CHAR, max_size=10)),
    session=st.one_of(st.none(), st.text(ANY_CHAR, max_size=8)),
    actor=st.one_of(st.none(), st.text(ANY_CHAR, max_size=8)),
    kind=st.one_of(
        st.none(),
        st.sampled_from(["fact", "turn", "task", "procedure"]),
        st.text(ANY_CHAR, max_size=8),
    ),
    timestamp=times,
    meta=metadata,
    attributes=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_like, max_size=3)),
    sources=st.lists(st.text(ANY_CHAR, max_size=8), max_size=3),
)
def test_remember_answers_or_refuses(
    memory: Memory,
    text: str,
    tenant: str,
    layer: str,
    key: str | None,
    session: str | None,
    actor: str | None,
    kind: str | None,
    timestamp: float | None,
    meta: dict[str, Any] | None,
    attributes: dict[str, Any] | None,
    sources: list[str],
) -> None:
    memory_id = _call(
        memory.remember,
        text,
        tenant=tenant,
        layer=layer,
        key=key,
        kind=kind,
        session=session,
        actor=actor,
        timestamp=timestamp,
        sources=sources,
        metadata=meta,
        attributes=attributes,
    )
    if memory_id is None:
        return
    row = memory.get(memory_id, tenant=tenant)
    assert (row["tenant"], row["layer"]) == (tenant, layer)
    assert row["text"] == text or (layer == "procedural" and row["text"].startswith(text))
    assert row["metadata"] == (meta or {}) or meta is None
    if timestamp is not None:
        assert row["event_time"] == float(timestamp)
    for other in TENANTS:
        if other != tenant:  # a near-identical tenant name is another tenant
            assert _call(memory.get, memory_id, tenant=other) is None


@FUZZ
@given(
    query=any_text,
    tenant=tenants,
    k=ks,
    layer_list=st.one_of(st.none(), st.lists(layers, max_size=3)),
    since=times,
    until=times,
    session=st.one_of(st.none(), safe_text, st.text(ANY_CHAR, max_size=8)),
    actor=st.one_of(st.none(), safe_text, st.text(ANY_CHAR, max_size=8)),
    kinds=st.one_of(st.none(), st.lists(st.text(ANY_CHAR, max_size=8), max_size=2)),
    strategy=st.one_of(
        st.sampled_from(["adaptive", "sequential", "parallel", "distributed", "cache", "hybrid"]),
        st.text(max_size=6),
    ),
    timeout=st.one_of(st.none(), st.floats(), st.integers(-5, 5), st.just(10**400)),
)
def test_recall_answers_or_refuses(
    memory: Memory,
    query: str,
    tenant: str,
    k: int,
    layer_list: list[str] | None,
    since: float | None,
    until: float | None,
    session: str | None,
    actor: str | None,
    kinds: list[str] | None,
    strategy: str,
    timeout: float | None,
) -> None:
    result = _call(
        memory.recall,
        query,
        tenant=tenant,
        k=k,
        layers=layer_list,
        since=since,
        until=until,
        session=session,
        actor=actor,
        kinds=kinds,
        strategy=strategy,
        explain=True,
        timeout=timeout,
    )
    if result is None:
        return
    assert 1 <= k <= MAX_K and len(result.hits) <= k
    assert result.explain is not None
    for hit in result.hits:
        assert hit.tenant == tenant
        assert layer_list is None or hit.layer in layer_list
        assert session is None or hit.session == session
        assert actor is None or hit.actor == actor
        assert kinds is None or hit.kind in kinds
        if since is not None:
            assert hit.event_time is not None and hit.event_time >= since
        if until is not None:
            assert hit.event_time is not None and hit.event_time <= until


@FUZZ
@given(
    memory_id=ids,
    tenant=tenants,
    text=st.one_of(st.none(), any_text),
    timestamp=times,
    meta=metadata,
    forget=st.booleans(),
)
def test_update_get_forget_answer_or_refuse(
    memory: Memory,
    memory_id: int,
    tenant: str,
    text: str | None,
    timestamp: float | None,
    meta: dict[str, Any] | None,
    forget: bool,
) -> None:
    before = _call(memory.get, memory_id, tenant=tenant)
    if forget:
        deleted = _call(memory.forget, [memory_id], tenant=tenant)
        if deleted is not None:
            assert before is not None and deleted == [memory_id]
            assert _call(memory.get, memory_id, tenant=tenant) is None
        return
    updated = _call(
        memory.update, memory_id, tenant=tenant, text=text, timestamp=timestamp, metadata=meta
    )
    if updated is None:
        return
    assert before is not None and updated == memory_id
    after = memory.get(memory_id, tenant=tenant)
    assert after["tenant"] == tenant and after["layer"] == before["layer"]
    if text is not None:
        assert after["text"] == text or after["text"].startswith(text)


@FUZZ
@given(items=st.lists(st.tuples(layers, any_text, tenants), min_size=1, max_size=4))
def test_remember_many_is_all_or_nothing(memory: Memory, items: list[tuple[str, str, str]]) -> None:
    before = memory.stats()["memories"]
    batch = [MemoryInput(layer=layer, text=text, tenant=tenant) for layer, text, tenant in items]
    written = _call(memory.remember_many, batch)
    after = memory.stats()["memories"]
    assert after - before == (0 if written is None else len(items))


def test_the_file_is_sound_after_the_fuzzing(memory: Memory) -> None:
    assert_sound(memory.store.path)
    assert memory.recall("Alice Lisbon", tenant="t1", k=5).hits


@pytest.mark.parametrize("depth", [10, 500, 5_000, 200_000])
def test_deep_metadata(memory: Memory, depth: int) -> None:
    memory_id = _call(memory.remember, "deep", tenant="deep", metadata=_nested(depth))
    if memory_id is not None:
        assert memory.get(memory_id, tenant="deep")["metadata"] == _nested(depth)


@pytest.mark.parametrize("size", [MAX_TEXT_CHARS, MAX_TEXT_CHARS + 1, 10 * MAX_TEXT_CHARS])
def test_huge_texts(memory: Memory, size: int) -> None:
    text = ("lorem ipsum " * (size // 12 + 1))[:size]
    if size > MAX_TEXT_CHARS:
        with pytest.raises(InvalidInput):
            memory.remember(text, tenant="huge")
        return
    memory_id = memory.remember(text, tenant="huge")
    assert memory.get(memory_id, tenant="huge")["text"] == text
    assert memory.recall(text[:4000], tenant="huge", k=1).hits[0].id == memory_id


# -- regressions of the bugs found here (docs/reliability.md, bugs 1 to 3; fixed) ------------


def test_id_past_int64_is_invalid_input(memory: Memory) -> None:
    before = memory.stats()["memories"]
    for memory_id in (2**63, 2**64, 10**30):
        for call in (memory.get, memory.forget):
            with pytest.raises(InvalidInput):
                call(memory_id, tenant="t1")
        with pytest.raises(InvalidInput):
            memory.update(memory_id, tenant="t1", text="x")
    with pytest.raises(InvalidInput):
        memory.forget([1, 2**63], tenant="t1")  # one bad id: nothing is deleted
    assert memory.stats()["memories"] == before
    assert _call(memory.get, 2**63 - 1, tenant="t1") is None  # the largest id is valid


def test_time_too_large_for_a_float_is_invalid_input(memory: Memory) -> None:
    memory_id = memory.remember("a time too large", tenant="t1", timestamp=1_700_000_000)
    before = memory.stats()["memories"]
    with pytest.raises(InvalidInput):
        memory.remember("x", tenant="t1", timestamp=10**400)
    with pytest.raises(InvalidInput):
        memory.update(memory_id, tenant="t1", timestamp=10**400)
    for bound in ("since", "until"):
        with pytest.raises(InvalidInput):
            memory.recall("x", tenant="t1", **{bound: 10**400})
    assert memory.stats()["memories"] == before
    assert memory.get(memory_id, tenant="t1")["event_time"] == 1_700_000_000


@pytest.mark.parametrize("field", ["sources", "kind", "session", "actor", "kinds"])
@pytest.mark.parametrize("bad", ["\ud800", "a\x00b"])
def test_lone_surrogate_in_unchecked_fields_is_invalid_input(
    memory: Memory, field: str, bad: str
) -> None:
    before = memory.stats()["memories"]
    with pytest.raises(InvalidInput):
        if field == "sources":
            memory.remember("x", tenant="t1", sources=[bad])
        elif field == "kind":  # graph and procedural take any kind
            memory.remember("x", tenant="t1", layer="graph", kind=bad)
        else:
            value: Any = [bad] if field == "kinds" else bad
            memory.recall("alice", tenant="t1", **{field: value})
    assert memory.stats()["memories"] == before


@pytest.mark.parametrize("bound", ["since", "until"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_time_filter_is_invalid_input(memory: Memory, bound: str, value: float) -> None:
    with pytest.raises(InvalidInput):
        memory.recall("alice", tenant="t1", **{bound: value})


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 0, -1, 10**400, 1e300])
def test_bad_timeout_is_invalid_input(memory: Memory, timeout: float) -> None:
    with pytest.raises(InvalidInput):
        memory.recall("alice", tenant="t1", timeout=timeout)
