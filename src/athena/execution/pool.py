"""The DISTRIBUTED strategy's backend: a pool of real worker processes.

Callers queue one task per layer on a bounded priority queue (0-10, higher first, FIFO
within a priority). A dispatcher thread hands each task to the least-loaded ready worker; a
monitor thread reads results, notices dead workers (process sentinels) and tasks past their
deadline (the worker is killed), replaces those workers, retries their tasks once, and
scales the pool between ``min_workers`` and ``max_workers``. Workers are started with
``spawn`` or ``forkserver``, never ``fork``: the parent holds threads and SQLite handles.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import pickle
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future
from concurrent.futures import wait as wait_futures
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final

from athena.errors import InvalidInput, RecallTimeout, WorkerPoolUnavailable
from athena.execution import backend, shm
from athena.execution import worker as wk
from athena.execution.backend import PoolLimits, Settle, Task, settle
from athena.layers.protocol import LayerResult, SearchRequest
from athena.retrieval.vector import DEFAULT_HNSW_CUTOFF

MAX_STARTING: Final = 2  # processes starting at once while scaling up
MAX_START_DEATHS: Final = 8  # workers in a row that die before ready: the pool is broken
TICK: Final = 0.5  # the monitor's longest sleep: how often idle workers are looked at


class _Core:
    """What the pool's API and its two threads share; it changes only under ``cond``."""

    def __init__(self, config: wk.WorkerConfig, method: str, limits: PoolLimits) -> None:
        self.limits = limits
        self.cond = threading.Condition(threading.RLock())
        self.halted = threading.Event()
        self.procs: dict[int, BaseProcess] = {}
        self.fleet: wk.Fleet[Task] = wk.Fleet(mp.get_context(method), config, self.procs)
        self.queue = backend.PriorityQueue(limits.queue_size)
        self.stats = backend.PoolStats()
        self.state, self.error = "new", ""  # state: new | running | broken | closed
        self.threads: list[threading.Thread] = []
        self.startup_ms: float | None = None
        self.start_deaths = 0  # replacements in a row that died before they were ready

    def stopping(self) -> bool:
        return self.state in ("broken", "closed") or self.halted.is_set()

    def enqueue(self, request: SearchRequest, names: list[str], priority: int) -> list[Task]:
        """Queue one task per layer (all or none); arrays over 64 KiB go by shared memory."""
        packed, blocks = shm.pack_tree(request)
        payload = pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL)
        group = backend.TaskGroup(len(names), partial(shm.release, blocks))
        with self.cond:
            try:
                if self.state != "running":
                    raise WorkerPoolUnavailable(self.error or "worker pool is not running")
                tasks = [Task(self.queue.new_id(), n, priority, payload, group) for n in names]
                self.queue.add(tasks)
            except BaseException:
                shm.release(blocks)
                raise
            self.cond.notify_all()
            self.fleet.wake()
        for task in tasks:
            task.future.add_done_callback(partial(self._cancelled, task))
        return tasks

    def _cancelled(self, task: Task, future: Future[LayerResult]) -> None:
        if future.cancelled():
            with self.cond:
                if task.state == "queued":
                    self.queue.remove(task)

    def abandon(self, tasks: list[Task], error: BaseException) -> None:
        """The caller gave up: queued tasks leave, running ones finish unheard."""
        out: Settle = []
        with self.cond:
            for task in tasks:
                if task.state == "queued":
                    self.queue.remove(task)
                task.abandoned = True
                out.append((task.future, error))
        settle(out)

    def fail(self, task: Task, error: BaseException, out: Settle) -> None:
        if not task.abandoned and task.state != "done":
            out.append((task.future, error))
        task.finish()

    def end(self, state: str, error: str, out: Settle) -> None:
        """Enter ``state`` (broken or closed): every pending task fails with ``error``."""
        self.state, self.error = state, error
        running = [t for w in self.fleet.workers.values() for t in w.inflight.values()]
        while len(self.queue):
            running.append(self.queue.pop())
        for task in running:
            self.fail(task, WorkerPoolUnavailable(error), out)
        self.cond.notify_all()
        self.fleet.wake()

    def start(self, db_path: Path) -> None:
        with self.cond:
            if self.state == "running":
                return
            if self.state != "new":
                raise WorkerPoolUnavailable(self.error)
            began = time.monotonic()
            error = "" if db_path.is_file() else f"no database at {db_path}"
            error = error or self._launch()
            if not error:
                self.startup_ms = (time.monotonic() - began) * 1000.0
                self.state = "running"
                return
        self.shutdown("broken", f"worker pool cannot start: {error}")
        raise WorkerPoolUnavailable(self.error)

    def _launch(self) -> str:
        """Spawn min_workers and the two threads; wait for the workers' start-up reports."""
        fleet = self.fleet
        fleet.open()
        try:
            for _ in range(self.limits.min_workers):
                fleet.spawn()
        except WorkerPoolUnavailable as exc:
            return str(exc)
        for body in (self.dispatch_loop, _Monitor(self).loop):
            self.threads.append(threading.Thread(target=body, daemon=True, name="athena-pool"))
            self.threads[-1].start()
        done = self.cond.wait_for(
            lambda: fleet.init_error or self.state != "new" or not fleet.of("starting"),
            self.limits.start_timeout,
        )
        if done and not fleet.init_error and self.state == "new" and fleet.of("ready"):
            return ""
        return fleet.init_error or self.error or "the workers did not start in time"

    def shutdown(self, state: str, error: str) -> None:
        """Fail pending work, join the threads, stop the workers (idempotent once closed)."""
        out: Settle = []
        with self.cond:
            if self.state == "closed":
                return
            self.end(state, error, out)
            threads, self.threads = self.threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()
        with self.cond:
            self.fleet.stop_all()
        settle(out)

    def dispatch_loop(self) -> None:
        """Thread: hand the best queued task to the least-loaded ready worker."""
        while True:
            with self.cond:
                while not self.stopping() and not (len(self.queue) and self.fleet.pick()):
                    self.cond.wait()
                worker = self.fleet.pick()
                if self.stopping() or worker is None:
                    return
                task = self.queue.pop()
                first = task.attempts == 0
                if task.abandoned or (first and not task.future.set_running_or_notify_cancel()):
                    task.finish()
                    continue
                task.attempts += 1
                task.deadline = time.monotonic() + self.limits.task_timeout
                worker.inflight[task.id] = task
            # Outside the lock; messages stay far below a pipe's buffer, so it cannot block.
            wk.send_quietly(worker.conn, (task.id, task.layer, task.payload))


class _Monitor:
    """The monitor thread: results, dead or hung workers, retries and scaling."""

    def __init__(self, core: _Core) -> None:
        self.core = core

    def loop(self) -> None:
        core = self.core
        try:
            while self.step():
                pass
        except Exception as exc:  # a bug here must not leave every caller waiting
            out: Settle = []
            with core.cond:
                if not core.stopping():
                    core.end("broken", f"worker pool monitor failed: {exc!r}", out)
            settle(out)

    def step(self) -> bool:
        core = self.core
        with core.cond:
            if core.stopping():
                return False
            workers = list(core.fleet.workers.values())
            now = time.monotonic()
            pause = min([TICK, *(t.deadline - now for w in workers for t in w.inflight.values())])
        ready = core.fleet.wait(workers, pause)
        out: Settle = []
        with core.cond:
            if core.stopping():
                return False
            for worker in workers:
                if worker.conn in ready:
                    was_starting = worker.state == "starting"
                    for message in core.fleet.receive(worker):
                        self.handle(worker, message, out)
                    if was_starting and worker.state == "ready":
                        core.start_deaths = 0
            for worker in workers:
                if worker.process.sentinel in ready and worker.id in core.fleet.workers:
                    self.reap(worker, "died", out)
            self.expire(out)
            self.scale()
            core.cond.notify_all()
        settle(out)
        return True

    def handle(self, worker: wk.WorkerHandle[Task], message: tuple[Any, ...], out: Settle) -> None:
        core, now, kind = self.core, time.monotonic(), message[0]
        outcome: LayerResult | BaseException
        try:  # unpack even an unexpected result, so its shared blocks are unlinked
            if kind == "ok":
                outcome = shm.unpack_tree(message[2], unlink=True)
            else:
                outcome = wk.rebuild_error(*message[2:])
        except Exception as exc:
            outcome = WorkerPoolUnavailable(f"a worker's result was lost: {exc!r}")
        task = worker.inflight.pop(message[1], None)
        if task is None:
            return
        worker.last_active = now
        failed = isinstance(outcome, BaseException)
        core.stats.record(None if failed else (now - task.enqueued) * 1000.0)
        if not task.abandoned:
            out.append((task.future, outcome))
        task.finish()

    def reap(
        self, worker: wk.WorkerHandle[Task], how: str, out: Settle, late: Task | None = None
    ) -> None:
        """Forget a dead worker; retry its tasks once and start a replacement."""
        core, state = self.core, worker.state
        tasks, code = core.fleet.remove(worker), worker.process.exitcode
        if state == "starting" and core.state == "new":  # start() fails with this reason
            core.fleet.init_error = core.fleet.init_error or f"a worker exited ({code}) at start"
        elif state != "retiring":
            core.stats.count["crashes" if late is None else "timeouts"] += 1
            for task in tasks:
                why = f"worker {worker.process.pid} {how} (exit code {code})"
                error = task.attempt_failed(why, task is late)
                if task.abandoned:
                    task.finish()
                elif error is None:  # retried once, on whichever worker is free first
                    core.stats.count["retries"] += 1
                    core.queue.push(task)
                else:
                    core.stats.record(None)
                    core.fail(task, error, out)
            core.start_deaths += state == "starting"
            if core.state == "running" and self._may_replace():
                core.stats.count["restarts"] += 1
                core.fleet.spawn()
        if core.state == "running" and not core.fleet.live():
            why = core.fleet.init_error or how
            if core.start_deaths > MAX_START_DEATHS:
                why = f"{core.start_deaths} workers in a row died while starting ({how})"
            core.end("broken", f"no worker left: {why}", out)

    def _may_replace(self) -> bool:
        """A dead worker is replaced unless workers fail their start-up (an init error, or
        too many deaths in a row before ready): then the pool would only crash-loop."""
        core = self.core
        return not core.fleet.init_error and core.start_deaths <= MAX_START_DEATHS

    def expire(self, out: Settle) -> None:
        """Kill each worker whose task overran its deadline (hung, stopped or too slow)."""
        now = time.monotonic()
        for worker in self.core.fleet.of("ready"):
            late = next((t for t in worker.inflight.values() if t.deadline <= now), None)
            if late is not None:
                worker.process.kill()
                how = f"timed out after {self.core.limits.task_timeout:g} s"
                self.reap(worker, how, out, late)

    def scale(self) -> None:
        """Grow on a deep queue or a high p95 latency; retire workers idle for idle_seconds."""
        core, limits = self.core, self.core.limits
        fleet, stats, depth, now = core.fleet, core.stats, len(core.queue), time.monotonic()
        live = fleet.live()
        if core.state != "running" or fleet.init_error:
            return
        p95, since = stats.percentile(0.95, last=32), now - stats.last_grow
        reason = limits.grow_reason(depth, live, p95, since)
        if live < limits.min_workers and self._may_replace():
            reason = f"{live} live workers < min_workers {limits.min_workers}"
        if reason and len(fleet.of("starting")) < MAX_STARTING:
            fleet.spawn()
            stats.last_grow = now
            stats.scale("up", reason, live + 1)
        elif not depth and live > limits.min_workers:
            idle = [w for w in fleet.of("ready") if not w.inflight]
            idle = [w for w in idle if now - w.last_active >= limits.idle_seconds]
            for worker in sorted(idle, key=lambda w: -w.id)[: live - limits.min_workers]:
                worker.state = "retiring"
                wk.send_quietly(worker.conn, None)
                live -= 1
                stats.scale("down", f"idle for {limits.idle_seconds:g} s", live)


class ProcessWorkerPool:
    """A :class:`~athena.execution.backend.WorkerBackend` of local worker processes.

    Each worker opens its own read-only store on ``db_path``, loads ``embedder`` once and
    answers layer searches. The pool starts lazily (first :meth:`start` or :meth:`run`);
    ``task_timeout`` bounds one attempt on one worker, ``timeout`` of :meth:`run` the call.

    >>> # with ProcessWorkerPool("athena.db") as pool: pool.run(request, ["semantic"])
    """

    def __init__(
        self,
        db_path: str | Path,
        embedder: str = "static",
        *,
        min_workers: int = 2,
        max_workers: int = 20,
        queue_size: int = 1000,
        task_timeout: float = 5.0,
        start_method: str = "spawn",
        hnsw_cutoff: int = DEFAULT_HNSW_CUTOFF,
        idle_seconds: float = 30.0,
        latency_target_ms: float = 250.0,
        start_timeout: float = 60.0,
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise InvalidInput("start_method must be 'spawn' or 'forkserver' (never 'fork')")
        self.start_method = start_method
        self.limits = PoolLimits(
            min_workers,
            max_workers,
            queue_size,
            task_timeout,
            idle_seconds,
            latency_target_ms,
            start_timeout,
        )
        self.db_path = Path(db_path)
        config = wk.WorkerConfig(str(db_path), embedder, hnsw_cutoff)
        self._core = core = _Core(config, start_method, self.limits)
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
        with self._core.cond:
            return self._core.state == "running" and bool(self._core.fleet.of("ready"))

    @property
    def broken(self) -> bool:
        """The pool failed for good (it cannot start, or its workers die while starting)."""
        with self._core.cond:
            return self._core.state == "broken"

    @property
    def saturated(self) -> bool:
        """The queue is half full, or it is not empty with max_workers all busy."""
        core = self._core
        with core.cond:
            depth, fleet = len(core.queue), core.fleet
            at_max = fleet.live() >= self.limits.max_workers and fleet.pick() is None
            return depth >= max(1, core.queue.size // 2) or (depth > 0 and at_max)

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
        tasks = self._enqueue(request, layers, priority)
        wait_futures([t.future for t in tasks], timeout, return_when=FIRST_EXCEPTION)
        return self._outcome(tasks, timeout)

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
        waiters = [asyncio.wrap_future(t.future) for t in tasks]
        try:
            if waiters:
                await asyncio.wait(waiters, timeout=timeout, return_when=FIRST_EXCEPTION)
        except asyncio.CancelledError:
            self._core.abandon(tasks, RecallTimeout("the recall was cancelled"))
            raise
        finally:
            for waiter in waiters:  # read every outcome so asyncio never logs one as lost
                _ = waiter.cancel() or waiter.cancelled() or waiter.exception()
        return self._outcome(tasks, timeout)

    def _enqueue(self, request: SearchRequest, layers: Sequence[str], priority: int) -> list[Task]:
        names = backend.check_call(request, layers, priority, 1.0)
        self.start()
        return self._core.enqueue(request, names, priority) if names else []

    def _outcome(self, tasks: list[Task], timeout: float) -> dict[str, LayerResult]:
        done = [t.future for t in tasks if t.future.done() and not t.future.cancelled()]
        error = next((e for f in done if (e := f.exception()) is not None), None)
        if error is None and len(done) == len(tasks):
            return {t.layer: t.future.result() for t in tasks}
        error = error or RecallTimeout(f"distributed recall took longer than {timeout:g} s")
        self._core.abandon(tasks, error)
        raise error

    def health(self) -> dict[str, Any]:
        """Workers, busy, queue depth, latencies, restarts, task counters and scaling events.

        >>> # pool.health()["workers"], pool.health()["p95_latency_ms"]
        """
        core = self._core
        with core.cond:
            fleet, limits = core.fleet, self.limits
            busy = [w for w in fleet.of("ready") if w.inflight]
            return {
                "backend": "process",
                "start_method": self.start_method,
                "started": core.startup_ms is not None,
                "startup_ms": core.startup_ms,
                "available": self.available,
                "saturated": self.saturated,
                "state": core.state,
                "error": core.error,
                "workers": fleet.live(),
                "ready": len(fleet.of("ready")),
                "starting": len(fleet.of("starting")),
                "busy": len(busy),
                "min_workers": limits.min_workers,
                "max_workers": limits.max_workers,
                "queue_depth": len(core.queue),
                "queue_size": core.queue.size,
                "pids": [w.process.pid for w in fleet.of("ready", "starting")],
                "busy_pids": [w.process.pid for w in busy],
                **core.stats.snapshot(),
            }
