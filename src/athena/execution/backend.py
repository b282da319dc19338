"""The distributed-execution seam, and the bookkeeping every backend shares.

:class:`WorkerBackend` is what the engine calls; :class:`~athena.execution.pool.ProcessWorkerPool`
implements it with local processes and a Ray (or any cluster) backend can plug in behind
it. :class:`Task`, :class:`PriorityQueue` and :class:`PoolStats` are backend-neutral, so
every backend orders, bounds and reports work the same way.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, runtime_checkable

from athena.errors import InvalidInput, RecallTimeout, UnknownLayer, WorkerPoolUnavailable
from athena.layers.protocol import LayerResult, SearchRequest
from athena.records import LAYERS, Hit

Settle = list[tuple["Future[LayerResult]", "LayerResult | BaseException"]]
RemoteRecall = tuple[dict[str, LayerResult], "tuple[Hit, ...] | None"]
HITS: Final = "hits"  # a whole recall's one task: its layers searched, fused, hits read
GROW_COOLDOWN: Final = 2.0  # seconds between two latency-driven scale-ups
DEEP_GROW_S: Final = 0.5  # how long the queue must stay deep before a worker is added


@dataclass(frozen=True, slots=True)
class PoolLoad:
    """What the planner reads from a pool on every recall (``health()`` is for people)."""

    workers: int
    busy: int
    queue_depth: int
    available: bool
    saturated: bool


class VersionedCondition(threading.Condition):
    """A condition that counts the ``with`` blocks it ends and the waits that let its lock
    go mid-block: whatever is read under it, and changes only under it, is unchanged while
    :attr:`version` is (a block that only read counts too: a version is never reused, only
    sometimes moved on for nothing).

    >>> cond = VersionedCondition(threading.RLock())
    >>> with cond:
    ...     pass
    >>> cond.version
    1
    """

    def __init__(self, lock: threading.RLock) -> None:
        super().__init__(lock)
        self.version = 0

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.version += 1  # still held: no two exits count as one
        super().__exit__(kind, error, trace)

    def wait(self, timeout: float | None = None) -> bool:
        """:meth:`threading.Condition.wait`, counting a version first: the block's changes
        so far are seen by whoever takes the lock meanwhile (``wait_for`` waits here)."""
        self.version += 1
        return super().wait(timeout)


@runtime_checkable
class WorkerBackend(Protocol):
    """Runs one task per layer on workers elsewhere and gathers their :class:`LayerResult`.

    >>> # with ProcessWorkerPool("athena.db") as pool: pool.run(request, ["semantic"])
    """

    def start(self) -> None:
        """Start the workers (idempotent); raise WorkerPoolUnavailable if they cannot start."""

    @property
    def available(self) -> bool:
        """Started, not closed, and a worker ready to take a task now."""

    @property
    def saturated(self) -> bool:
        """Too much queued work for a new recall to be answered promptly."""

    @property
    def broken(self) -> bool:
        """Failed for good: the engine builds a new backend to replace it."""

    def run(
        self,
        request: SearchRequest,
        layers: Sequence[str],
        *,
        priority: int = 5,
        timeout: float = 5.0,
    ) -> dict[str, LayerResult]:
        """Search ``layers`` concurrently on workers; block until all answered.

        ``priority`` is 0-10 (higher first; InvalidInput otherwise). Raises RecallTimeout
        when ``timeout`` seconds pass (or a task timed out twice) and WorkerPoolUnavailable
        when the pool cannot take the work or a task failed again after its one retry.
        """

    async def arun(
        self,
        request: SearchRequest,
        layers: Sequence[str],
        *,
        priority: int = 5,
        timeout: float = 5.0,
    ) -> dict[str, LayerResult]:
        """:meth:`run` without blocking the event loop."""

    def recall(
        self,
        request: SearchRequest,
        layers: Sequence[str],
        *,
        priority: int = 5,
        timeout: float = 5.0,
    ) -> RemoteRecall:
        """:meth:`run` for a whole recall: ``layers`` are every layer of ``request``'s query,
        searched by one worker, which also fuses them and reads the hits. Returns the
        results by layer and the hits, or None for the hits when the worker could not read
        them (they would not fit one answer, say): the caller then reads them itself."""

    def health(self) -> dict[str, Any]:
        """Workers, busy, queue_depth, avg/p95 latency (ms), restarts, task counters, started."""

    def load(self) -> PoolLoad:
        """Workers, busy, queue depth, available, saturated: one consistent, cheap snapshot."""

    def close(self) -> None:
        """Stop every worker; idempotent."""


def default_max_workers(min_workers: int = 2) -> int:
    """A pool's default ceiling: one worker per core (at least ``min_workers``).

    Workers are CPU-bound (the query is embedded in the caller; they search, and read a
    whole recall's hits), so more workers than cores only contend. Four callers sending
    DISTRIBUTED recalls over 110 tenants of ``100k-tenants`` on 2 cores: p50 12-13 ms and
    p90 31-35 ms with two workers, 20-24 ms and 71-125 ms with the seed's ceiling of 20
    (the pool grew to 8-9).

    >>> default_max_workers(64)
    64
    """
    return max(min_workers, _cores())


def _cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """A backend's size, queue bound, timeouts and scaling policy.

    >>> limits = PoolLimits(min_workers=1)
    >>> limits.grow_reason(depth=3, live=1, p95_ms=0.0, since_grow=9.0, deep_s=0.6)
    'queue depth 3 > 2 per worker for 0.60 s'
    >>> limits.grow_reason(depth=3, live=1, p95_ms=0.0, since_grow=9.0, deep_s=0.01)
    ''
    """

    min_workers: int = 2
    max_workers: int = 0  # 0: one per core, at least min_workers (default_max_workers)
    queue_size: int = 1000
    task_timeout: float = 5.0  # one attempt of one message (a recall's layers) on one worker
    idle_seconds: float = 30.0  # a worker idle this long (and no queue) may be retired
    latency_target_ms: float = 250.0  # p95 latency above this, with a queue, adds a worker
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.max_workers == 0:
            object.__setattr__(self, "max_workers", default_max_workers(self.min_workers))
        if not 1 <= self.min_workers <= self.max_workers:
            raise InvalidInput("need 1 <= min_workers <= max_workers")
        if (
            self.queue_size < 1
            or min(self.task_timeout, self.idle_seconds, self.start_timeout) <= 0
        ):
            raise InvalidInput("queue_size and the timeouts must be positive")

    def grow_reason(
        self, depth: int, live: int, p95_ms: float, since_grow: float, deep_s: float = math.inf
    ) -> str:
        """Why to add a worker now, or "": over 2 queued tasks per worker for ``deep_s`` >=
        :data:`DEEP_GROW_S` (one recall queues a task per layer at once: a queue that drains
        in milliseconds is no reason to start a process, which costs seconds of CPU), or a
        high p95."""
        if not depth or live >= self.max_workers:
            return ""
        if depth > 2 * live and deep_s >= DEEP_GROW_S:
            return f"queue depth {depth} > 2 per worker for {deep_s:.2f} s"
        if p95_ms > self.latency_target_ms and since_grow > GROW_COOLDOWN:
            return f"p95 latency {p95_ms:.0f} ms > {self.latency_target_ms:g} ms"
        return ""


@dataclass(eq=False, slots=True)
class TaskGroup:
    """The tasks of one recall; ``on_done`` runs once the last of them is finished.
    ``queued``: how many of them wait in a queue now (the dispatcher bundles them)."""

    open: int
    on_done: Callable[[], None] = lambda: None
    queued: int = 0


@dataclass(eq=False, slots=True)
class Task:
    """One layer search of one recall, as a backend tracks it; or, as :data:`HITS`, a whole
    recall (every layer of its query, ``covers``, fused, and its hits read), whose result
    is its layers' (name, result) pairs and its hits packed
    (:func:`~athena.execution.pipeline.pack_hits`; None when the worker left them).

    >>> Task(1, "semantic", 5, b"", TaskGroup(1)).state
    'queued'
    """

    id: int  # increasing: the FIFO order within a priority
    layer: str
    priority: int
    payload: Any  # what the worker receives
    group: TaskGroup
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[Any] = field(default_factory=Future)  # a LayerResult, or see above
    attempts: int = 0
    timeouts: int = 0
    failures: list[str] = field(default_factory=list)
    state: str = "queued"  # queued | running | done
    abandoned: bool = False  # its caller gave up: the outcome is dropped, never retried
    deadline: float = math.inf
    tenant: str = ""  # whose indexes it searches: with ``layer`` (or ``covers``), affinity
    depth: int = 50  # how many ids its answer holds at most (bounds a message's answers)
    covers: tuple[str, ...] = ()  # a whole recall's layers: whose indexes its worker holds

    def attempt_failed(self, reason: str, timed_out: bool) -> BaseException | None:
        """Record a failed attempt: None if the task may run once more, else the error.

        The error is RecallTimeout when every attempt timed out, WorkerPoolUnavailable else.
        """
        self.failures.append(reason)
        self.timeouts += timed_out
        if self.attempts < 2:
            return None
        kind = RecallTimeout if self.timeouts == self.attempts else WorkerPoolUnavailable
        return kind(f"{self.layer} search failed twice: " + "; ".join(self.failures))

    def finish(self) -> None:
        """Mark the task done (idempotent); the group's last task runs ``on_done``."""
        if self.state != "done":
            self.state = "done"
            self.group.open -= 1
            if self.group.open == 0:
                self.group.on_done()


class PriorityQueue:
    """Bounded queue of tasks: higher priority first, FIFO within a priority.

    >>> q = PriorityQueue(2); g = TaskGroup(2)
    >>> q.add([Task(q.new_id(), "a", 1, None, g), Task(q.new_id(), "b", 9, None, g)])
    >>> q.pop().layer
    'b'
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[tuple[int, int, Task]] = []
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._heap)

    def new_id(self) -> int:
        return next(self._ids)

    def add(self, tasks: Sequence[Task]) -> None:
        """Queue new tasks, all or none; WorkerPoolUnavailable when the bound is hit."""
        if len(self._heap) + len(tasks) > self.size:
            raise WorkerPoolUnavailable(f"worker queue is full ({len(self)} of {self.size} tasks)")
        for task in tasks:
            self.push(task)

    def push(self, task: Task) -> None:
        """(Re)queue a task, bound or not: a retry keeps its place in line."""
        task.state = "queued"
        task.group.queued += 1
        heapq.heappush(self._heap, (-task.priority, task.id, task))

    def pop(self) -> Task:
        task = heapq.heappop(self._heap)[2]
        task.state = "running"
        task.group.queued -= 1
        return task

    def peek(self) -> Task | None:
        """The task :meth:`pop` would return, left in the queue (None if it is empty)."""
        return self._heap[0][2] if self._heap else None

    def remove(self, task: Task) -> None:
        self._heap.remove((-task.priority, task.id, task))
        heapq.heapify(self._heap)
        task.group.queued -= 1
        task.finish()


class PoolStats:
    """Task counters, a latency window and the log of scaling decisions.

    >>> stats = PoolStats(); stats.record(4.0); stats.record(None); stats.snapshot()["tasks_done"]
    1
    """

    COUNTERS: Final = (
        "tasks_done",
        "tasks_failed",
        "retries",
        "restarts",
        "crashes",
        "timeouts",
        "sent_to_holder",  # to a worker that had searched the task's (tenant, layer) before
        "sent_elsewhere",  # to one that had not (no free worker had): it may load indexes
        "messages",  # task messages sent: a message carries one or more layers of a recall
        "hits_read",  # whole recalls whose worker read the hits
        "hits_left",  # whole recalls whose hits the caller read (too large for one answer)
    )

    def __init__(self) -> None:
        self.count = dict.fromkeys(self.COUNTERS, 0)
        self.latencies: deque[float] = deque(maxlen=512)  # enqueue to result, ms
        self.events: deque[dict[str, Any]] = deque(maxlen=32)
        self.scaled = {"up": 0, "down": 0}
        self.last_grow = -math.inf

    def record(self, latency_ms: float | None) -> None:
        """Count one finished task: done with its latency, or failed (None)."""
        self.count["tasks_failed" if latency_ms is None else "tasks_done"] += 1
        if latency_ms is not None:
            self.latencies.append(latency_ms)

    def percentile(self, q: float, last: int = 512) -> float:
        """The ``q`` quantile of the last ``last`` latencies (0 when there are none)."""
        values = sorted(itertools.islice(reversed(self.latencies), last))
        return values[max(0, math.ceil(q * len(values)) - 1)] if values else 0.0

    def scale(self, action: str, reason: str, workers: int) -> None:
        """Record one scaling decision ("up" or "down") and why."""
        self.scaled[action] += 1
        event = {"at": time.time(), "action": action, "reason": reason, "workers": workers}
        self.events.append(event)

    def snapshot(self) -> dict[str, Any]:
        avg = sum(self.latencies) / len(self.latencies) if self.latencies else 0.0
        return {
            **self.count,
            "avg_latency_ms": avg,
            "p95_latency_ms": self.percentile(0.95),
            "scale_ups": self.scaled["up"],
            "scale_downs": self.scaled["down"],
            "scaling": list(self.events),
        }


def settle(outcomes: Settle) -> None:
    """Resolve futures (outside any lock: their callbacks run here); skip cancelled ones.

    >>> f: Future[LayerResult] = Future(); _ = f.cancel(); settle([(f, RuntimeError())])
    >>> f.cancelled()
    True
    """
    for future, outcome in outcomes:
        try:
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        except InvalidStateError:
            pass


def check_call(
    request: object, layers: Sequence[str], priority: object, timeout: object
) -> list[str]:
    """Validate a backend call the same way for every backend; return the layers, deduplicated.

    >>> check_call(SearchRequest.__new__(SearchRequest), ["graph", "graph"], 5, 1.0)
    ['graph']
    """
    if not isinstance(request, SearchRequest):
        raise InvalidInput("request must be a SearchRequest")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 10:
        raise InvalidInput(f"priority must be an integer from 0 to 10, not {priority!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidInput("timeout must be a positive number of seconds")
    names = list(dict.fromkeys(layers))
    if unknown := [name for name in names if name not in LAYERS]:
        raise UnknownLayer(f"unknown layers {unknown}; valid layers: {', '.join(LAYERS)}")
    return names
