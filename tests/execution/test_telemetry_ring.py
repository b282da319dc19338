"""The in-memory telemetry ring: rows come back exactly, and the collector stops tracking
them (one engine's 10,000 rows were 10,000 objects every full collection walked)."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from athena.execution.telemetry import Telemetry, TelemetryRow
from athena.records import LAYERS

names = st.sampled_from(LAYERS)
floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
rows = st.builds(
    TelemetryRow,
    at=floats,
    tenant=st.text(max_size=8),
    query_type=st.sampled_from(["factual", "temporal"]),
    strategy=st.sampled_from(["sequential", "parallel", "cache"]),
    confidence=floats,
    estimated_ms=floats,
    actual_ms=floats,
    cache=st.sampled_from(["hit", "partial", "miss"]),
    layers_ms=st.dictionaries(names, floats),
    layers=st.lists(names, unique=True).map(tuple),
    contributed=st.lists(names, unique=True).map(tuple),
    speedup_estimated=floats,
    speedup_actual=floats,
    fallback=st.none() | st.text(max_size=10),
    success=st.booleans(),
    features=st.lists(floats, max_size=4).map(tuple),
    forced=st.booleans(),
    weight=st.integers(min_value=1, max_value=5),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(rows, max_size=20))
def test_rows_come_back_exactly_and_in_order(batch: list[TelemetryRow]) -> None:
    ring = Telemetry(None, memory_rows=50)
    for row in batch:
        ring.record(row)
    assert ring.rows() == batch


def row(i: int, layers_ms: dict[str, float], contributed: tuple[str, ...] = ()) -> TelemetryRow:
    return TelemetryRow(
        at=float(i),
        tenant="t",
        query_type="factual",
        strategy="sequential",
        confidence=1.0,
        estimated_ms=1.0,
        actual_ms=1.0,
        cache="miss",
        layers_ms=layers_ms,
        layers=tuple(layers_ms),
        contributed=contributed,
        speedup_estimated=1.0,
        speedup_actual=1.0,
        fallback=None,
        success=True,
        features=(1.0, 2.0),
    )


def test_the_ring_is_bounded_and_keeps_the_newest() -> None:
    ring = Telemetry(None, memory_rows=3)
    made = [row(i, {"episodic": float(i)}) for i in range(5)]
    for made_row in made:
        ring.record(made_row)
    assert ring.rows() == made[2:]


def test_kept_rows_are_not_tracked_by_the_collector() -> None:
    ring = Telemetry(None)
    for i in range(200):
        ring.record(row(i, {"episodic": 0.5, "graph": 0.25}, ("graph",)))
    # A tuple is untracked once all it holds is; its new inner tuple goes at the same pass,
    # so the row at the next (in a live process, young passes run long before a full one).
    gc.collect()
    gc.collect()
    kept = list(ring._rows)
    assert len(kept) == 200 and not any(gc.is_tracked(packed) for packed in kept)
