"""The worker pool's shared state and its two threads (see :mod:`athena.execution.pool`).

``PoolCore`` holds the fleet, the priority queue and the counters, changed only under its
condition. :func:`take` picks a queued task and a free worker for it, preferring one that
holds the task's indexes and bundling a recall's layers, and :func:`send` sends them: the
caller itself for what free workers can take when it queues, ``PoolDispatcher`` (a thread)
for the rest as workers free up. ``PoolMonitor`` (the
other thread) reads results, reaps dead or hung workers (replacing them and retrying their
tasks once) and has ``PoolScaler`` size the fleet between ``min_workers`` and
``max_workers``.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
import time
from concurrent.futures import Future
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final

from athena.errors import WorkerPoolUnavailable
from athena.execution import backend, shm
from athena.execution import worker as wk
from athena.execution.backend import PoolLimits, Settle, Task, settle
from athena.layers.protocol import LayerResult, SearchRequest

MAX_STARTING: Final = 2  # processes starting at once while scaling up
MAX_START_DEATHS: Final = 8  # workers in a row that die before ready: the pool is broken
TICK: Final = 0.5  # the monitor's longest sleep: how often idle workers are looked at
MIN_START_ALLOWANCE_S: Final = 10.0  # the least a replacement is given to report ready
ANSWERS_BYTES: Final = 12_000  # a message's answers stay under a pipe's one-write 16 KiB
ANSWER_BYTES_PER_ID: Final = 24  # an id and a score in a pickled LayerResult, with room


class PoolCore:
    """What the pool's API and its two threads share; it changes only under ``cond``."""

    def __init__(self, config: wk.WorkerConfig, method: str, limits: PoolLimits) -> None:
        self.limits = limits
        self.cond = backend.VersionedCondition(threading.RLock())
        self.seen: tuple[int, backend.PoolLoad] | None = None  # the load at a version
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

    def enqueue(
        self, request: SearchRequest, names: list[str], priority: int, whole: bool = False
    ) -> list[Task]:
        """Queue one task per layer (all or none), or with ``whole`` one :data:`backend.HITS`
        task covering them all; arrays over 64 KiB go by shared memory.

        The caller sends what free workers can take now itself (:func:`take`), rather than
        waking the dispatcher thread to do it: a one-layer round trip went from 0.93 to
        0.80 ms p50 without that hand-off (each hop timed by a ``/tmp`` script;
        ``benchmarks/pool_round_trip.py`` times whole trips)."""
        packed, blocks = shm.pack_tree(request)
        payload = pickle.dumps((packed, bool(blocks)), protocol=pickle.HIGHEST_PROTOCOL)
        covers = tuple(names) if whole else ()  # one task: every layer, then the hits
        names = [backend.HITS] if whole else names
        group = backend.TaskGroup(len(names), partial(shm.release, blocks))
        with self.cond:
            try:
                if self.state != "running":
                    raise WorkerPoolUnavailable(self.error or "worker pool is not running")
                tenant, depth, ids = request.query.tenant, request.depth, self.queue.new_id
                tasks = [
                    Task(
                        ids(),
                        n,
                        priority,
                        payload,
                        group,
                        tenant=tenant,
                        depth=depth,
                        covers=covers,
                    )
                    for n in names
                ]
                self.queue.add(tasks)
            except BaseException:
                shm.release(blocks)
                raise
            sends = []
            while (taken := take(self)) is not None:
                sends.append(taken)
            if len(self.queue):  # some wait: the dispatcher sends them as workers free up,
                self.cond.notify_all()  # and the monitor fails them if no worker is ready
                self.fleet.wake()
        try:
            for worker, bundle in sends:
                send(worker, bundle)
        finally:
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
        for body in (PoolDispatcher(self).loop, PoolMonitor(self).loop):
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


class PoolDispatcher:
    """The dispatcher thread: queued tasks to free workers (see :meth:`loop`)."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core

    def loop(self) -> None:
        """Thread: while tasks wait and a worker is free, :func:`take` and :func:`send`."""
        core = self.core
        while True:
            with core.cond:
                while not core.stopping() and not (len(core.queue) and core.fleet.pick()):
                    core.cond.wait()
                if core.stopping():
                    return
                taken = take(core)
            if taken is not None:
                send(*taken)


def take(core: PoolCore) -> tuple[wk.WorkerHandle[Task], list[Task]] | None:
    """The best queued task and a free worker for it (lock held), or None if either is
    missing: one that has searched the task's (tenant, layer) before, so holds its indexes
    (a worker new to them loads them first: 21-54 ms for a 4 ms search on 100k-tenants),
    else the least-loaded ready worker. The worker is marked busy with the task.

    The task goes with the next queued tasks of its recall, its share of them among the
    free workers (five layers, two free workers: three in this message, two in the next):
    one message, one wake-up and one unpickling of the request per share instead of per
    layer, while the layers still spread over the workers."""
    while len(core.queue) and not core.stopping():
        worker = core.fleet.pick()
        if worker is None:
            return None
        task = core.queue.pop()
        if not _runnable(task):
            continue
        free = core.fleet.free()
        worker = core.fleet.pick((task.tenant, (task.covers or (task.layer,))[0])) or worker
        share = -(-(1 + task.group.queued) // max(1, free))  # ceiling
        # Answers under 16 KiB, which a pipe takes in one write: a longer one is written
        # in two, and a worker stopped between them would block the read.
        share = min(share, max(1, ANSWERS_BYTES // (ANSWER_BYTES_PER_ID * task.depth)))
        bundle = [task]
        while len(bundle) < share and (peer := core.queue.peek()) is not None:
            if peer.group is not task.group:
                break
            if _runnable(core.queue.pop()):
                bundle.append(peer)
        core.stats.count["messages"] += 1
        # One deadline for the message: its searches take milliseconds, and a worker stopped
        # holding several must be found as soon as one holding one would.
        deadline = time.monotonic() + core.limits.task_timeout
        for each in bundle:
            held = all([wk.hold(worker, (each.tenant, n)) for n in each.covers or (each.layer,)])
            core.stats.count["sent_to_holder" if held else "sent_elsewhere"] += 1
            each.attempts += 1
            each.deadline = deadline
            worker.inflight[each.id] = each
        return worker, bundle
    return None


def send(worker: wk.WorkerHandle[Task], bundle: list[Task]) -> None:
    """Send a :func:`take` outside the lock: messages stay far below a pipe's buffer, so
    it cannot block, and the worker is busy with them, so no one else sends to it."""
    work = tuple((each.id, each.layer) for each in bundle)
    wk.send_quietly(worker.conn, (work, bundle[0].payload))


def _runnable(task: Task) -> bool:
    """Whether a task just popped should run (its caller neither gave up nor cancelled)."""
    first = task.attempts == 0
    if task.abandoned or (first and not task.future.set_running_or_notify_cancel()):
        task.finish()
        return False
    return True


class PoolMonitor:
    """The monitor thread: results, dead or hung workers, retries and scaling."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        self.scaler = PoolScaler(core)

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
                    if (message := core.fleet.receive(worker)) is not None:
                        self.handle(worker, message, out)
                    if was_starting and worker.state == "ready":
                        core.start_deaths = 0
            for worker in workers:
                if worker.process.sentinel in ready and worker.id in core.fleet.workers:
                    self.reap(worker, "died", out)
            self.expire(out)
            self.orphans(out)
            self.scaler.scale()
            core.cond.notify_all()
        settle(out)
        return True

    def handle(self, worker: wk.WorkerHandle[Task], message: tuple[Any, ...], out: Settle) -> None:
        """One message of answers: ``("done", [(task_id, kind, ...), ...])``."""
        for answer in message[1]:
            self.answer(worker, answer, out)

    def answer(self, worker: wk.WorkerHandle[Task], answer: tuple[Any, ...], out: Settle) -> None:
        core, now, kind = self.core, time.monotonic(), answer[1]
        outcome: Any  # a LayerResult, a whole recall's (results, hits), or an error
        try:  # unpack even an unexpected result, so its shared blocks are unlinked
            if kind == "ok":  # answer[3]: whether the result holds shared-memory blocks
                outcome = shm.unpack_tree(answer[2], unlink=True) if answer[3] else answer[2]
            else:
                outcome = wk.rebuild_error(*answer[2:])
        except Exception as exc:
            outcome = WorkerPoolUnavailable(f"a worker's result was lost: {exc!r}")
        task = worker.inflight.pop(answer[0], None)
        if task is None:
            return
        worker.last_active = now
        failed = isinstance(outcome, BaseException)
        if task.layer == backend.HITS and not failed:
            core.stats.count["hits_left" if outcome[1] is None else "hits_read"] += 1
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
                timed_out = late is not None and task.deadline <= late.deadline  # its message's
                error = task.attempt_failed(why, timed_out)
                if task.abandoned:
                    task.finish()
                elif error is None:  # retried once, on whichever worker is free first
                    core.stats.count["retries"] += 1
                    core.queue.push(task)
                else:
                    core.stats.record(None)
                    core.fail(task, error, out)
            core.start_deaths += state == "starting"
            if core.state == "running" and may_replace(core):
                core.stats.count["restarts"] += 1
                core.fleet.spawn()
        if core.state == "running" and not core.fleet.live():
            why = core.fleet.init_error or how
            if core.start_deaths > MAX_START_DEATHS:
                why = f"{core.start_deaths} workers in a row died while starting ({how})"
            core.end("broken", f"no worker left: {why}", out)

    def expire(self, out: Settle) -> None:
        """Kill each worker whose task overran its deadline (hung, stopped or too slow), and
        each replacement that, while starting, fell silent for
        :meth:`PoolScaler.start_allowance` (it says ``warming`` every second while it
        builds indexes) or took ``start_timeout`` in all: one stopped or stuck while
        starting would otherwise hold its place in the pool for good."""
        now, limits = time.monotonic(), self.core.limits
        for worker in self.core.fleet.of("ready"):
            late = next((t for t in worker.inflight.values() if t.deadline <= now), None)
            if late is not None:
                worker.process.kill()
                self.reap(worker, f"timed out after {limits.task_timeout:g} s", out, late)
        if self.core.state != "running":
            return  # the first start has its own allowance (PoolCore.start)
        allowance = self.scaler.start_allowance()
        for worker in self.core.fleet.of("starting"):
            silent = now - max(worker.last_active, worker.heard)  # spawned at last_active
            if silent > allowance or now - worker.last_active > limits.start_timeout:
                worker.process.kill()
                why = f"silent for {allowance:.3g} s" if silent > allowance else "too slow"
                self.reap(worker, f"did not start ({why})", out)

    def orphans(self, out: Settle) -> None:
        """With no worker ready (every one died or hung and its replacement is starting,
        which takes seconds), fail the queued tasks now, so their recalls fall back at once
        instead of waiting out their deadline for a worker."""
        core = self.core
        if core.state != "running" or not len(core.queue) or core.fleet.of("ready"):
            return
        error = WorkerPoolUnavailable("no worker is ready: the pool is replacing its workers")
        while len(core.queue):
            core.stats.record(None)
            core.fail(core.queue.pop(), error, out)


class PoolScaler:
    """How many workers the pool should run: grow, retire, and how long a start may take."""

    def __init__(self, core: PoolCore) -> None:
        self.core = core
        self.deep_since: float | None = None  # when the queue last became deep

    def scale(self) -> None:
        """Grow on a deep queue or a high p95 latency; retire workers idle for idle_seconds."""
        core, limits = self.core, self.core.limits
        fleet, stats, depth, now = core.fleet, core.stats, len(core.queue), time.monotonic()
        live = fleet.live()
        if core.state != "running" or fleet.init_error:
            return
        p95, since = stats.percentile(0.95, last=32), now - stats.last_grow
        if depth <= 2 * live:
            self.deep_since = None
        elif self.deep_since is None:
            self.deep_since = now
        deep_s = 0.0 if self.deep_since is None else now - self.deep_since
        reason = limits.grow_reason(depth, live, p95, since, deep_s)
        if live < limits.min_workers and may_replace(core):
            reason = f"{live} live workers < min_workers {limits.min_workers}"
        if reason and len(fleet.of("starting")) < MAX_STARTING:
            fleet.spawn()
            stats.last_grow, self.deep_since = now, None  # the next one waits its turn
            stats.scale("up", reason, live + 1)
        elif not depth and live > limits.min_workers:
            idle = [w for w in fleet.of("ready") if not w.inflight]
            idle = [w for w in idle if now - w.last_active >= limits.idle_seconds]
            spare = min(live, len(fleet.of("ready"))) - limits.min_workers  # never the last
            for worker in sorted(idle, key=lambda w: -w.id)[: max(0, spare)]:
                worker.state = "retiring"
                wk.send_quietly(worker.conn, None)
                live -= 1
                stats.scale("down", f"idle for {limits.idle_seconds:g} s", live)

    def start_allowance(self) -> float:
        """Seconds a replacement may go without a sign of life while it starts: three
        times what this pool's first start took, at least :data:`MIN_START_ALLOWANCE_S`, at
        most ``start_timeout``."""
        core = self.core
        first = (core.startup_ms or 0.0) / 1000.0
        return min(core.limits.start_timeout, max(MIN_START_ALLOWANCE_S, 3.0 * first))


def may_replace(core: PoolCore) -> bool:
    """A dead worker is replaced unless workers fail their start-up (an init error, or too
    many deaths in a row before ready): then the pool would only crash-loop."""
    return not core.fleet.init_error and core.start_deaths <= MAX_START_DEATHS
