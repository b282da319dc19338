"""Reciprocal rank fusion: the same order as the plain definition, ties on the smaller id."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from athena.retrieval.fusion import RRF_K, rrf


def reference(rankings: Sequence[tuple[list[int], float]]) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for ids, weight in rankings:
        for rank, memory_id in enumerate(ids):
            scores[memory_id] = scores.get(memory_id, 0.0) + weight / (RRF_K + rank + 1)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


rankings = st.lists(
    st.tuples(
        st.lists(st.integers(1, 40), unique=True, max_size=30),  # small ids: many shared
        st.sampled_from([1.0, 0.5, 0.25]),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(rankings, st.none() | st.integers(0, 50))
def test_fusion_matches_the_definition(
    given_rankings: list[tuple[list[int], float]], limit: int | None
) -> None:
    expected = reference(given_rankings)
    assert rrf(given_rankings, limit=limit) == expected[:limit]


def test_equal_scores_rank_the_smaller_id_first() -> None:
    assert [i for i, _ in rrf([([5, 9], 1.0), ([9, 5], 1.0)])] == [5, 9]
