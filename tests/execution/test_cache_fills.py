"""The adaptive strategy's cache fills (:mod:`athena.execution.cache_fills`): kept while
repeats pay for them, skipped on a stream of new questions, a repeated question kept on its
second ask, and never a different answer or a stale one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.execution.cache_fills import FillPolicy

FILL_MS, MISS_MS = 0.02, 1.0


def _stop_keeping(policy: FillPolicy, window: int, start: int = 0, fill_ms: float = FILL_MS) -> int:
    """Feed ``policy`` one window of new questions after a measured fill; returns the next
    question number."""
    policy.filled(fill_ms)
    for i in range(start, start + window):
        policy.admit(("t", f"new {i}"), MISS_MS)
    return start + window


def test_keeps_everything_until_a_fill_is_measured() -> None:
    policy = FillPolicy(lambda: 0, window=4)
    assert all(policy.admit(("t", f"q{i}"), MISS_MS) for i in range(40))
    assert policy.keeping and policy.skipped == 0


def test_a_window_without_repeats_stops_the_fills_and_one_that_pays_restarts_them() -> None:
    hits = [0]
    policy = FillPolicy(lambda: hits[0], window=8)
    n = _stop_keeping(policy, 8)
    assert not policy.keeping and policy.switches == 1
    assert not any(policy.admit(("t", f"new {i}"), MISS_MS) for i in range(n, n + 7))
    hits[0] += 1  # one hit saves 1 ms against 8 fills' 0.16 ms: keeping pays again
    assert policy.admit(("t", "one more"), MISS_MS)  # the window's end: keeping pays again
    assert policy.keeping and policy.switches == 2
    assert policy.admit(("t", "next"), MISS_MS)
    assert policy.skipped == 8


def test_repeats_that_pay_for_a_window_restart_the_fills_at_once() -> None:
    hits = [0]
    policy = FillPolicy(lambda: hits[0], window=64)
    _stop_keeping(policy, 64)  # a window of fills costs 1.28 ms
    assert not policy.admit(("t", "a"), MISS_MS)
    assert policy.admit(("t", "a"), MISS_MS)  # asked again: kept, 1 ms saved
    assert not policy.keeping
    hits[0] += 1  # the kept one served: 2 ms saved, more than a window's fills
    assert policy.admit(("t", "b"), MISS_MS) and policy.keeping


def test_below_break_even_stays_off() -> None:
    hits = [0]
    policy = FillPolicy(lambda: hits[0], window=100)
    _stop_keeping(policy, 100)
    hits[0] += 1  # 1 ms saved against 100 fills of 0.02 ms: 2 ms
    for i in range(100):
        policy.admit(("t", f"other {i}"), MISS_MS)
    assert not policy.keeping


def test_a_question_asked_again_is_kept_on_its_second_ask() -> None:
    policy = FillPolicy(lambda: 0, window=10)
    _stop_keeping(policy, 10, fill_ms=0.5)  # one repeat saves 1 ms of a window's 5
    assert policy.admit(("t", "again"), MISS_MS) is False
    assert policy.admit(("u", "again"), MISS_MS) is False  # another tenant's question
    assert policy.admit(("t", "again"), MISS_MS) is True
    assert policy.admit(("t", "again"), MISS_MS) is False  # kept once: now it is the cache's


def test_ghosts_are_bounded() -> None:
    policy = FillPolicy(lambda: 0, window=10_000, ghosts=3)
    policy.filled(FILL_MS)
    policy.keeping = False
    for name in ("a", "b", "c", "d"):
        policy.admit(("t", name), MISS_MS)
    assert policy.admit(("t", "a"), MISS_MS) is False  # the oldest was forgotten
    assert policy.admit(("t", "d"), MISS_MS) is True


def test_a_cleared_cache_counts_its_hits_from_zero() -> None:
    hits = [500]
    policy = FillPolicy(lambda: hits[0], window=4)
    _stop_keeping(policy, 4)
    hits[0] = 0  # cleared: the counts restart
    for i in range(4):
        policy.admit(("t", f"x{i}"), MISS_MS)
    assert not policy.keeping  # no hit since the clear, not -500 of them
    hits[0] = 2
    for i in range(4):
        policy.admit(("t", f"y{i}"), MISS_MS)
    assert policy.keeping


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"ghosts": -1}])
def test_bad_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FillPolicy(lambda: 0, **kwargs)


@settings(max_examples=200, deadline=None)
@given(
    asks=st.lists(
        st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 12), st.integers(0, 2)),
        max_size=200,
    ),
    window=st.integers(1, 16),
)
def test_counts_and_second_asks_hold_for_any_stream(
    asks: list[tuple[str, int, int]], window: int
) -> None:
    hits = [0]
    policy = FillPolicy(lambda: hits[0], window=window, ghosts=8)
    policy.filled(FILL_MS)
    refused, waiting, switches = 0, set(), 0
    for tenant, question, new_hits in asks:
        hits[0] += new_hits
        scope = (tenant, str(question))
        kept = policy.admit(scope, MISS_MS)
        if policy.switches != switches:  # a window's end: the ghosts start over
            switches, waiting = policy.switches, set()
        refused += not kept
        if not kept:
            assert not policy.keeping  # refused only while the fills are off
            waiting.add(scope)
        elif not policy.keeping:  # kept while off: a second ask of a refused question
            assert scope in waiting
            waiting.discard(scope)
    assert policy.skipped == refused
    assert len(policy._ghosts) <= 8


def _ask_new(memory: Memory, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        memory.recall(f"What did Caroline paint on day {i}?", tenant="t")


def test_a_stream_of_new_questions_stops_filling_the_cache(memory: Memory) -> None:
    for i in range(6):
        memory.remember(f"Caroline painted a lake on day {i}.", tenant="t")
    engine = memory.engine
    window = engine.fills._window
    _ask_new(memory, 2 * window)  # one window to measure, one with no repeat
    fills = memory.execution_stats()["cache"]["fills"]
    assert fills["keeping"] is False and fills["fill_ms"] > 0
    entries = memory.execution_stats()["cache"]["entries"]
    _ask_new(memory, 10, 2 * window)
    assert memory.execution_stats()["cache"]["entries"] == entries  # nothing more kept
    question = "Which lake did Caroline paint?"
    first = memory.recall(question, tenant="t", explain=True)
    second = memory.recall(question, tenant="t", explain=True)
    third = memory.recall(question, tenant="t", explain=True)
    assert first.explain is not None and second.explain is not None
    assert third.explain is not None
    assert (first.explain["cache"], first.explain["kept"]) == ("miss", False)
    assert (second.explain["cache"], second.explain["kept"]) == ("miss", True)
    assert third.explain["cache"] == "hit"
    reference = memory.recall(question, tenant="t", strategy="sequential")
    assert first.hits == second.hits == third.hits == reference.hits


def test_forced_caching_strategies_keep_every_result(memory: Memory) -> None:
    memory.remember("Caroline painted a lake.", tenant="t")
    _ask_new(memory, 2 * memory.engine.fills._window)
    assert memory.execution_stats()["cache"]["fills"]["keeping"] is False
    for strategy in ("cache", "hybrid"):
        question = f"What did Caroline paint, asked by {strategy}?"
        first = memory.recall(question, tenant="t", strategy=strategy, explain=True)
        again = memory.recall(question, tenant="t", strategy=strategy, explain=True)
        assert first.explain is not None and first.explain["kept"] is True
        assert again.explain is not None and again.explain["cache"] == "hit"


def test_a_kept_second_ask_is_never_served_after_a_write(memory: Memory) -> None:
    memory.remember("Caroline painted a lake.", tenant="t")
    _ask_new(memory, 2 * memory.engine.fills._window)
    question = "What did Caroline paint?"
    memory.recall(question, tenant="t")
    memory.recall(question, tenant="t")  # kept now
    new = memory.remember("Caroline painted a sunflower field.", tenant="t")
    after = memory.recall(question, tenant="t", explain=True)
    assert after.explain is not None and after.explain["cache"] != "hit"
    assert new in [hit.id for hit in after.hits]
