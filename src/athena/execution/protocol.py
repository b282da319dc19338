"""The execution seam: the facade hands a validated query to a :class:`RecallEngine`."""

from __future__ import annotations

from typing import Any, Protocol

from athena.execution.pipeline import Recall
from athena.records import RecallQuery


class RecallEngine(Protocol):
    """Answers validated recalls. The sequential engine is the reference; the adaptive
    engine plans, caches and parallelises, and must return the same hits."""

    def recall(
        self,
        query: RecallQuery,
        generations: dict[str, int],
        *,
        strategy: str = "adaptive",
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recall: ...

    def cached(
        self,
        query: RecallQuery,
        generations: dict[str, int],
        *,
        strategy: str = "adaptive",
        explain: bool = False,
    ) -> Recall | None:
        """The recall if a valid cache entry answers it at once, else None (no cache: None)."""

    def stats(self) -> dict[str, Any]:
        """Execution state: ``cache``, ``pool``, ``telemetry`` and ``selector`` sections."""

    def gauges(self) -> dict[str, Any]:
        """The ``pool`` and ``admission`` sections alone: cheap enough for every scrape."""

    def pool_ready(self) -> bool:
        """Whether a DISTRIBUTED recall would be sent to a worker pool now: one is
        configured, has not failed to start, and has a worker ready (or is yet to start)."""

    def close(self) -> None: ...
