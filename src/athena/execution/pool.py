"""The DISTRIBUTED strategy's backend: a pool of real worker processes.

Callers queue one task per layer (:meth:`ProcessWorkerPool.run`), or one task for a whole
recall (:meth:`ProcessWorkerPool.recall`: every layer, fused, the hits read), on a bounded
priority queue (0-10, higher first, FIFO within a priority). Each task goes to a free
worker that holds its (tenant, layer) indexes, else to the least-loaded ready worker: sent
by the caller itself if a worker is free when it queues, else by a dispatcher thread as
workers free up; a monitor thread reads
results, notices dead workers (process sentinels) and tasks past their deadline (the
worker is killed), replaces those workers, retries their tasks once, fails the queued
tasks at once while no worker is ready (their recalls fall back), and scales the pool
between ``min_workers`` and ``max_workers`` (default: one per core). Workers are started
with ``spawn`` or ``forkserver``, never ``fork``: the parent holds threads and SQLite
handles.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Final

from athena.errors import InvalidInput
from athena.execution import backend
from athena.execution import pool_answers as answers
from athena.execution import pool_report as report
from athena.execution import worker as wk
from athena.execution.backend import PoolLimits, PoolLoad, Task
from athena.execution.pipeline import unpack_hits
from athena.execution.pool_core import ANSWER_BYTES_PER_ID, ANSWERS_BYTES, PoolCore
from athena.execution.worker_layers import portable_layers
from athena.layers.protocol import LayerResult, MemoryLayer, SearchRequest
from athena.retrieval.residency import check_budget, default_budget
from athena.retrieval.vector import DEFAULT_HNSW_CUTOFF


class PoolCalls:
    """What callers ask a pool of worker processes (:class:`ProcessWorkerPool`): one task
    per layer (:meth:`submit`, :meth:`run`, :meth:`arun`) or one task for a whole recall
    (:meth:`recall`), queued on its :class:`~athena.execution.pool_core.PoolCore` after a
    lazy :meth:`start`."""

    _core: PoolCore

    def start(self) -> None:
        """Start the workers if they are not running (see :meth:`ProcessWorkerPool.start`)."""
        raise NotImplementedError

    def submit(
        self, request: SearchRequest, layers: Sequence[str], *, priority: int = 5
    ) -> dict[str, Future[LayerResult]]:
        """Queue one task per layer; return their futures at once (beyond the Protocol).

        >>> # futures = pool.submit(request, ["semantic", "graph"], priority=9)
        """
        return {task.layer: task.future for task in self._enqueue(request, layers, priority)}

    def run(
        self,
        request: SearchRequest,
        layers: Sequence[str],
        *,
        priority: int = 5,
        timeout: float = 5.0,
    ) -> dict[str, LayerResult]:
        """Search ``layers`` on the workers; block at most ``timeout`` seconds.

        >>> # results = pool.run(request, ["episodic", "semantic"], priority=8, timeout=2.0)
        """
        backend.check_call(request, layers, priority, timeout)
        return answers.gather(self._core, self._enqueue(request, layers, priority), timeout)

    async def arun(
        self,
        request: SearchRequest,
        layers: Sequence[str],
        *,
        priority: int = 5,
        timeout: float = 5.0,
    ) -> dict[str, LayerResult]:
        """:meth:`run` for an event loop: a lazy start runs on a thread, waiting is awaited.

        >>> # results = await pool.arun(request, ["semantic"])
        """
        backend.check_call(request, layers, priority, timeout)
        if self._core.state == "new":
            await asyncio.to_thread(self.start)
        tasks = self._enqueue(request, layers, priority)
        return await answers.gather_async(self._core, tasks, timeout)

    def recall(
        self,
        request: SearchRequest,
        layers: Sequence[str],
        *,
        priority: int = 5,
        timeout: float = 5.0,
    ) -> backend.RemoteRecall:
        """:meth:`run` by one worker, which also reads the hits (see
        :meth:`~athena.execution.backend.WorkerBackend.recall`). Layers whose answers
        might not fit one message (every layer over ``k`` = 33, say) go as :meth:`run` sends
        them, and the caller reads the hits.

        >>> # results, hits = pool.recall(request, request.query.layers)
        """
        names = backend.check_call(request, layers, priority, timeout)
        if set(names) != set(request.query.layers) or not fits_whole(len(names), request.depth):
            return self.run(request, names, priority=priority, timeout=timeout), None
        self.start()
        tasks = self._core.enqueue(request, names, priority, whole=True)
        results, hits = answers.gather_whole(self._core, tasks, timeout)
        return dict(results), None if hits is None else unpack_hits(hits)

    def _enqueue(self, request: SearchRequest, layers: Sequence[str], priority: int) -> list[Task]:
        names = backend.check_call(request, layers, priority, 1.0)
        self.start()
        return self._core.enqueue(request, names, priority) if names else []


class ProcessWorkerPool(PoolCalls):
    """A :class:`~athena.execution.backend.WorkerBackend` of local worker processes.

    Each worker opens its own read-only store on ``db_path`` and answers layer searches over
    the vectors of ``embedder`` (an embedder's full name, or a ``load_embedder`` name);
    ``max_workers`` defaults to one per core
    (:func:`~athena.execution.backend.default_max_workers`). The pool starts lazily (first
    :meth:`start` or :meth:`run`);
    ``task_timeout`` bounds one attempt of one message (a recall's layers given to one
    worker), ``timeout`` of :meth:`run` the call. The workers share ``index_memories``
    (default :func:`~athena.retrieval.residency.default_budget`): each holds at most its
    ``max_workers``-th of it in its indexes. The workers search with ``layers`` (default:
    the five default layers; or the bytes :func:`~athena.execution.worker_layers.
    portable_layers` made of them): WorkerPoolUnavailable if they cannot be pickled.

    >>> # with ProcessWorkerPool("athena.db") as pool: pool.run(request, ["semantic"])
    """

    def __init__(
        self,
        db_path: str | Path,
        embedder: str = "static",
        *,
        min_workers: int = 2,
        max_workers: int | None = None,
        queue_size: int = 1000,
        task_timeout: float = 5.0,
        start_method: str = "spawn",
        hnsw_cutoff: int = DEFAULT_HNSW_CUTOFF,
        idle_seconds: float = 30.0,
        latency_target_ms: float = 250.0,
        start_timeout: float = 60.0,
        index_snapshots: bool = True,
        index_memories: int | None = None,
        layers: Mapping[str, MemoryLayer] | bytes | None = None,
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise InvalidInput("start_method must be 'spawn' or 'forkserver' (never 'fork')")
        self.start_method = start_method
        self.limits = PoolLimits(
            min_workers,
            0 if max_workers is None else max_workers,  # 0: one per core
            queue_size,
            task_timeout,
            idle_seconds,
            latency_target_ms,
            start_timeout,
        )
        self.db_path = Path(db_path)
        # The workers share one budget: each holds at most its share of the memories.
        budget = default_budget() if index_memories is None else check_budget(index_memories)
        share = None if budget is None else max(budget // self.limits.max_workers, 1)
        portable = portable_layers(layers)  # WorkerPoolUnavailable if they cannot be sent
        config = wk.WorkerConfig(
            str(db_path), embedder, hnsw_cutoff, index_snapshots, share, portable
        )
        self._core = core = PoolCore(config, start_method, self.limits)
        self._start_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, wk.halt, core.cond, core.halted, core.procs)

    def start(self) -> None:
        """Start ``min_workers`` processes and wait until they are ready (idempotent).

        A pool that failed to start stays unavailable: build a new one to try again.
        """
        with self._start_lock:
            self._core.start(self.db_path)

    def close(self) -> None:
        """Stop the workers (terminating stragglers) and fail work still pending; idempotent."""
        self._core.shutdown("closed", "worker pool is closed")
        self._finalizer()

    def __enter__(self) -> ProcessWorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def available(self) -> bool:
        """Started, not closed, and at least one worker ready to take a task now (while
        every worker is being replaced, callers fall back rather than wait for a start)."""
        return self.load().available

    @property
    def broken(self) -> bool:
        """The pool failed for good (it cannot start, or its workers die while starting)."""
        with self._core.cond:
            return self._core.state == "broken"

    @property
    def saturated(self) -> bool:
        """The queue is half full, or it is not empty with max_workers all busy."""
        return self.load().saturated

    def load(self) -> PoolLoad:
        """Workers, busy, queue depth, available and saturated, under one lock (no stats).

        >>> # pool.load().busy
        """
        return report.load(self._core)

    def health(self) -> dict[str, Any]:
        """Workers, busy, queue depth, latencies, restarts, task counters and scaling events.

        >>> # pool.health()["workers"], pool.health()["p95_latency_ms"]
        """
        return report.health(self._core, self.start_method)


HITS_ROOM: Final = 4_000  # of a one-write message, what a whole recall leaves for its hits


def fits_whole(layers: int, depth: int) -> bool:
    """Whether ``layers`` rankings ``depth`` deep leave room for the hits in one answer
    (if the hits then do not fit, the worker leaves them to the caller).

    >>> fits_whole(5, 50), fits_whole(5, 80), fits_whole(2, 160)
    (True, False, True)
    """
    return layers * depth * ANSWER_BYTES_PER_ID + HITS_ROOM <= ANSWERS_BYTES
