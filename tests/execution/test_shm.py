"""The shared-memory tree walk: what it swaps out, what it leaves alone, and round trips."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from athena.execution import shm
from athena.layers.protocol import LayerResult

leaves = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans(), st.none()
)
arrays = st.builds(
    lambda n, big: np.arange(n, dtype=np.float32) if not big else np.ones(20_000, np.float32),
    st.integers(0, 8),
    st.booleans(),
)
trees = st.recursive(
    st.one_of(leaves, arrays),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b) and type(a) is type(b)


def _shared(tree: Any) -> int:
    if isinstance(tree, shm.ShmArray):
        return 1
    if isinstance(tree, tuple | list):
        return sum(map(_shared, tree))
    if isinstance(tree, dict):
        return sum(map(_shared, tree.values()))
    return 0


def _big(tree: Any) -> int:
    if isinstance(tree, np.ndarray):
        return int(tree.nbytes > shm.SHM_THRESHOLD)
    if isinstance(tree, tuple | list):
        return sum(map(_big, tree))
    if isinstance(tree, dict):
        return sum(map(_big, tree.values()))
    return 0


@settings(max_examples=60, deadline=None)
@given(trees)
def test_any_tree_round_trips_with_exactly_its_large_arrays_shared(tree: Any) -> None:
    packed, blocks = shm.pack_tree(tree)
    try:
        assert _shared(packed) == len(blocks) == _big(tree)
        assert _same(shm.unpack_tree(packed, unlink=False), tree)
    finally:
        shm.release(blocks)


@given(st.lists(leaves, max_size=60).map(tuple))
def test_a_tuple_of_leaves_is_passed_through_not_walked(items: tuple[Any, ...]) -> None:
    walked: list[object] = []
    real = shm._pack

    def counting(obj: object, threshold: int, blocks: list[Any]) -> Any:
        walked.append(obj)
        return real(obj, threshold, blocks)

    shm._pack = counting  # type: ignore[assignment]
    try:
        assert shm.pack_tree(items)[0] is items
    finally:
        shm._pack = real  # type: ignore[assignment]
    assert walked == [items]  # the tuple itself, none of its items
    assert shm.unpack_tree(items, unlink=False) is items


def test_a_layer_result_crosses_untouched() -> None:
    result = LayerResult("semantic", tuple(range(50)), tuple(0.5 for _ in range(50)), 1.2, 3)
    packed, blocks = shm.pack_tree(result)
    assert packed is result and blocks == []
    assert shm.unpack_tree(result, unlink=False) is result
