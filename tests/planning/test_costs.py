"""A cost cell's median and spread are those of its last WINDOW values, however they came."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from athena.planning.costs import IQR_PER_SD, WINDOW, Cell

values = st.one_of(
    st.floats(0.0, 1e4),
    st.sampled_from([1.0, 2.0, 2.0, float("nan"), float("inf"), -float("inf")]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=WINDOW + 2, max_size=80))  # checked after each add
def test_a_cell_holds_the_median_and_spread_of_its_last_window(added: list[float]) -> None:
    cell = Cell()
    kept: list[float] = []
    for value in added:
        cell.add(value)
        if value == value and abs(value) != float("inf"):  # the finite ones count
            kept = [*kept, value][-WINDOW:]
        if not kept:
            assert cell.n == 0
            continue
        ordered, size = sorted(kept), len(kept)
        half = size // 2
        median = ordered[half] if size % 2 else (ordered[half - 1] + ordered[half]) / 2.0
        spread = (ordered[(3 * size) // 4] - ordered[size // 4]) / IQR_PER_SD
        assert (cell.mean, cell.var) == (median, spread * spread)
        assert sorted(cell.recent) == cell.ordered == ordered
    assert cell.n == sum(1 for v in added if v == v and abs(v) != float("inf"))
