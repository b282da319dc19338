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


hit_args = st.tuples(
    st.text(max_size=8),
    st.sampled_from(["factual", "temporal"]),
    st.lists(names, unique=True, min_size=1).map(tuple),
    floats,
    floats,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(hit_args, max_size=20))
def test_a_hit_built_packed_is_the_row_record_keeps_for_it(
    hits: list[tuple[str, str, tuple[str, ...], float, float]],
) -> None:
    fast, slow = Telemetry(None, memory_rows=50), Telemetry(None, memory_rows=50)
    for tenant, query_type, layers, confidence, actual_ms in hits:
        fast.record_hit(tenant, query_type, layers, confidence, actual_ms)
        made = TelemetryRow(0.0, tenant, query_type, "cache", confidence, 0.0, actual_ms,
                            "hit", {}, layers, (), 0.0, 0.0, None, True)  # fmt: skip
        slow.record(made)
    kept = [r._replace(at=0.0) for r in fast.rows()]
    assert kept == slow.rows()
    assert fast.recorded == slow.recorded == len(hits)


class Saved:
    """The store's telemetry seam: what a flush writes."""

    def __init__(self) -> None:
        self.rows: list[TelemetryRow] = []

    def append_telemetry(self, rows: list[tuple[object, ...]], keep: int) -> None:
        self.rows.extend(TelemetryRow.from_json(str(r[-1])) for r in rows)


def test_hits_are_flushed_as_one_weighted_row_per_tenant_and_type() -> None:
    saved = Saved()
    ring = Telemetry(saved, flush_every=1_000)  # type: ignore[arg-type]
    for ms in (0.02, 0.04, 0.06):
        ring.record_hit("t", "factual", ("semantic",), 1.0, ms)
    ring.record_hit("u", "factual", ("semantic",), 1.0, 0.5)
    ring.flush()
    by_tenant = {r.tenant: r for r in saved.rows}
    assert by_tenant["t"].weight == 3 and abs(by_tenant["t"].actual_ms - 0.04) < 1e-12
    assert by_tenant["u"].weight == 1 and by_tenant["u"].cache == "hit"
