"""Recall arguments: the request memo answers exactly as make_query does, errors included."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from athena.errors import AthenaError
from athena.records import RequestMemo, make_query

texts = st.sampled_from(["where is the key?", " ", "", "a\x00b", "Where IS the key?"]) | st.text(
    max_size=12
)
tenants = st.sampled_from(["t", "u", "", " "]) | st.integers() | st.none()
ks = st.sampled_from([1, 5, 10, 0, -1, True, False, 10.0, "10", 10**6])
layer_lists = st.none() | st.sampled_from(
    [("semantic",), ["episodic", "semantic"], ("nope",), (), ["graph", 3], "semantic"]
)
bounds = st.none() | st.sampled_from([0, 1.5, float("nan"), True, "x"])


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except AthenaError as exc:
        return (type(exc), str(exc))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(texts, tenants, ks, layer_lists, bounds), min_size=1, max_size=8))
def test_the_memo_answers_as_make_query_does(calls: list[tuple[Any, ...]]) -> None:
    memo = RequestMemo(limit=3)  # small, so filling and emptying it is exercised too
    for _ in range(2):  # the second pass asks again: remembered answers must still agree
        for text, tenant, k, layers, since in calls:
            args = (text, tenant, k, layers, since)
            assert outcome(memo.make, *args) == outcome(make_query, *args)


def test_plain_requests_are_remembered_and_others_are_not() -> None:
    memo = RequestMemo()
    first = memo.make("where is the key?", "t", 5, None)
    assert memo.make("where is the key?", "t", 5, None) is first
    assert memo.make("where is the key?", "t", 5, ["semantic"]).layers == ("semantic",)
    assert memo.make("where is the key?", "t", 5, None, since=1.0) is not first
    assert outcome(memo.make, "where is the key?", "t", True, None)[0].__name__ == "InvalidInput"
