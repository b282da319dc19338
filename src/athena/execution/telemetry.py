"""Execution telemetry: one row per recall, kept bounded in memory and in SQLite.

Rows are buffered and written in batches by the store's writer (rotated to the newest
``keep`` rows), and reloaded at start so the dependency graph and the selector resume
learning where they left off.

Every recall keeps its own row in memory. On disk, the full cache hits of one batch are
coalesced: one row per (tenant, query type, strategy) with their mean latency and a
``weight`` saying how many hits it stands for (expanded again on load). A hit costs about
18 µs in-process; writing a JSON row and an INSERT for each one added 10 µs to it, and a
hit teaches the selector nothing when replayed.
"""

from __future__ import annotations

import itertools
import json
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from athena.errors import AthenaError
from athena.store.protocol import Store


class TelemetryRow(NamedTuple):
    """What one recall did and cost (a named tuple: one is built on every recall, cache hits
    included, and a frozen dataclass of 17 fields cost 3 µs more to build).

    Rows are stored as JSON arrays in field order: add new fields at the end, with defaults.
    """

    at: float
    tenant: str
    query_type: str
    strategy: str
    confidence: float
    estimated_ms: float
    actual_ms: float
    cache: str  # "hit" | "partial" | "miss"
    layers_ms: Mapping[str, float]
    layers: tuple[str, ...]
    contributed: tuple[str, ...]
    speedup_estimated: float
    speedup_actual: float
    fallback: str | None
    success: bool
    features: tuple[float, ...] = ()
    forced: bool = False
    weight: int = 1  # recalls this stored row stands for (cache hits are stored coalesced)

    def to_json(self) -> str:
        """The row as a JSON array of its fields in order (half the cost of an object)."""
        return json.dumps(self)

    @classmethod
    def from_json(cls, text: str) -> TelemetryRow:
        """A row from :meth:`to_json`, or from the JSON object older versions wrote."""
        raw = json.loads(text)
        if isinstance(raw, list):
            raw = dict(zip(cls._fields, raw, strict=False))
        raw["layers"] = tuple(raw["layers"])
        raw["contributed"] = tuple(raw["contributed"])
        raw["features"] = tuple(raw.get("features", ()))
        weight = raw.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ValueError(f"a telemetry row's weight must be a positive integer: {weight!r}")
        return cls(**{name: raw[name] for name in cls._fields if name in raw})


class Telemetry:
    """A bounded ring of recent rows, flushed to the store in batches.

    >>> t = Telemetry(None, memory_rows=2)
    >>> len(t.rows())
    0
    """

    def __init__(
        self,
        store: Store | None,
        *,
        memory_rows: int = 10_000,
        keep: int = 20_000,  # twice what a restart reloads; the file stays small
        flush_every: int = 64,
    ) -> None:
        self._store = store
        # Kept packed (see _pack): plain tuples of atoms, which the collector stops tracking.
        self._rows: deque[tuple[Any, ...]] = deque(maxlen=memory_rows)
        self._pending: list[TelemetryRow] = []
        # Full cache hits waiting to be written: (tenant, query type, strategy) ->
        # [first row (packed), count, summed latency].
        self._hits: dict[tuple[str, str, str], list[Any]] = {}
        self._lock = threading.Lock()
        self.keep = keep
        self.flush_every = flush_every
        self._recorded = 0
        # Called before the rows are read or written: the Feedback that owns this telemetry
        # counts there the cache hits it noted but has not recorded yet.
        self.settle: Callable[[], None] = _nothing
        self._due = threading.Event()
        self._flusher: threading.Thread | None = None

    def load(self, limit: int = 10_000) -> list[TelemetryRow]:
        """Reload the newest saved rows (oldest first) into memory and return them."""
        if self._store is None:
            return []
        rows = _saved_rows(self._store, limit)
        with self._lock:
            self._rows.extend(map(_pack, rows))
        return rows

    def record(self, row: TelemetryRow) -> None:
        """Keep ``row``; a background thread writes full batches, off the recall's path."""
        if row.cache == "hit":
            self._hit(_pack(row))
            return
        packed = _pack(row)
        with self._lock:
            self._rows.append(packed)
            self._pending.append(row)
            self._recorded += 1
            due = len(self._pending) + len(self._hits) == self.flush_every
        if due:
            self._wake()

    @property
    def recorded(self) -> int:
        """Rows recorded since creation (the noted hits counted first)."""
        self.settle()
        return self._recorded

    def record_hit(
        self,
        tenant: str,
        query_type: str,
        layers: tuple[str, ...],
        confidence: float,
        actual_ms: float,
        at: float | None = None,
    ) -> None:
        """Keep the row of a full cache hit (served at ``at``, default now), built packed:
        what :meth:`record` keeps for a ``cache="hit"`` row with no estimate (a hit is
        served, not planned), at a third of the cost.

        >>> t = Telemetry(None)
        >>> t.record_hit("t", "factual", ("semantic",), 1.0, 0.02)
        >>> t.rows()[0].cache, t.rows()[0].strategy
        ('hit', 'cache')
        """
        when = time.time() if at is None else at
        packed = (when, tenant, query_type, "cache", confidence, 0.0, actual_ms, "hit")
        self._hit((*packed, (), layers, (), 0.0, 0.0, None, True, (), False, 1))

    def _hit(self, packed: tuple[Any, ...]) -> None:
        key = (packed[1], packed[2], packed[3])  # tenant, query type, strategy
        with self._lock:
            self._rows.append(packed)
            group = self._hits.get(key)
            if group is None:
                self._hits[key] = [packed, 1, packed[6]]
            else:
                group[1] += 1
                group[2] += packed[6]
            self._recorded += 1
            due = len(self._pending) + len(self._hits) == self.flush_every
        if due:
            self._wake()

    def _wake(self) -> None:
        """Wake the flusher once per batch of rows to write (a second passing also does)."""
        with self._lock:
            if self._flusher is None and self._store is not None:
                self._flusher = threading.Thread(
                    target=_flush_forever, args=(self,), name="athena-telemetry", daemon=True
                )
                self._flusher.start()
        self._due.set()

    def flush(self) -> None:
        """Write pending rows now (also called on close)."""
        self.settle()
        with self._lock:
            batch, self._pending = self._pending, []
            hits, self._hits = self._hits, {}
        for first, count, total_ms in hits.values():
            batch.append(_unpack(first)._replace(actual_ms=total_ms / count, weight=count))
        if batch and self._store is not None:
            try:
                self._store.append_telemetry(
                    [(r.at, r.tenant, r.query_type, r.strategy, r.to_json()) for r in batch],
                    self.keep,
                )
            except BaseException:
                with self._lock:
                    self._pending[:0] = batch  # coalesced hits go back as their weighted rows
                raise

    def rows(self) -> list[TelemetryRow]:
        """The rows kept in memory, oldest first."""
        self.settle()
        with self._lock:
            packed = list(self._rows)
        return [_unpack(p) for p in packed]

    def summary(self) -> dict[str, Any]:
        """Per-strategy latency, estimation accuracy, cache hit rates and fallbacks."""
        return summarise(self.rows())


LAYERS_MS: Final = TelemetryRow._fields.index("layers_ms")


def _nothing() -> None:
    return None


def _flush_forever(telemetry: Telemetry) -> None:
    """The flusher thread: write a batch when one is full, or a second passed."""
    while True:
        telemetry._due.wait(timeout=1.0)
        telemetry._due.clear()
        try:
            telemetry.flush()
        except AthenaError:
            # The store is closing or failing; rows stay in memory, and the next
            # flush (or close) tries again. A recall never fails for telemetry.
            time.sleep(1.0)


def _saved_rows(store: Store, limit: int) -> list[TelemetryRow]:
    """The newest ``limit`` rows ``store`` holds, oldest first, coalesced hits expanded."""
    rows: list[TelemetryRow] = []
    for text in store.read_telemetry(limit):
        try:
            row = TelemetryRow.from_json(text)
        except (ValueError, KeyError, TypeError):
            continue  # a row this version cannot read teaches nothing; never fail to open
        if row.weight > 1:  # coalesced hits: one row per recall again
            rows.extend([row._replace(weight=1)] * min(row.weight, limit))
        else:
            rows.append(row)
    return rows[-limit:]


def _pack(row: TelemetryRow) -> tuple[Any, ...]:
    """``row`` as a plain tuple whose ``layers_ms`` is a flat tuple (layer, ms, layer, ms…).

    Every field is then a number, a string, None or a plain tuple of those, so the garbage
    collector untracks the tuple within its first young collections (the new inner tuple at
    one pass, the row at the next), long before a full collection would walk it. Held as
    named tuples (a tuple subclass, never untracked) with a dict inside, one engine's 10,000
    rows were 10,000 tracked objects that every full collection walked.

    >>> row = TelemetryRow(0.0, "t", "factual", "sequential", 1.0, 2.0, 2.5, "miss",
    ...                    {"episodic": 2.4}, ("episodic",), (), 1.0, 0.8, None, True)
    >>> _unpack(_pack(row)) == row
    True
    """
    flat = tuple(itertools.chain.from_iterable(row.layers_ms.items()))
    return (*row[:LAYERS_MS], flat, *row[LAYERS_MS + 1 :])


def _unpack(packed: tuple[Any, ...]) -> TelemetryRow:
    return TelemetryRow._make(
        (*packed[:LAYERS_MS], _pairs(packed[LAYERS_MS]), *packed[LAYERS_MS + 1 :])
    )


def _pairs(flat: tuple[Any, ...]) -> dict[str, float]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def summarise(rows: list[TelemetryRow]) -> dict[str, Any]:
    by_strategy: dict[str, list[TelemetryRow]] = {}
    for row in rows:
        by_strategy.setdefault(row.strategy, []).append(row)
    out: dict[str, Any] = {"recalls": len(rows), "strategies": {}}
    for name, group in sorted(by_strategy.items()):
        lat = sorted(r.actual_ms for r in group)
        errors = [abs(r.estimated_ms - r.actual_ms) / max(r.actual_ms, 1e-3) for r in group]
        out["strategies"][name] = {
            "count": len(group),
            "p50_ms": statistics.median(lat),
            "p95_ms": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "estimate_error_median": statistics.median(errors),
            "fallbacks": sum(1 for r in group if r.fallback),
            "failures": sum(1 for r in group if not r.success),
        }
    if rows:
        cache = [r.cache for r in rows]
        out["cache"] = {
            "hit_rate": cache.count("hit") / len(rows),
            "partial_rate": cache.count("partial") / len(rows),
            "miss_rate": cache.count("miss") / len(rows),
        }
        out["fallbacks"] = sum(1 for r in rows if r.fallback)
        out["since"] = rows[0].at
        out["until"] = rows[-1].at
    out["generated_at"] = time.time()
    return out
