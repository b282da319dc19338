"""Worker processes: what runs inside one, and the parent's handles on them.

Inside, :func:`worker_main` initialises once (its own read-only store, the embedder, the
layers and their vector indexes), says ``("ready", pid, warmed)`` (the (tenant, layer)
scopes whose indexes it built at start) and then answers tasks from its
pipe one at a time until it reads ``None`` or the pipe closes (the parent died).

Messages, parent to worker: ``(((task_id, layer), ...), pickled (packed request, shared))``
(the layers of one recall given to this worker, searched in turn; or one task whose layer
is ``HITS``: the whole recall, every layer of its query searched, fused and its hits read
here) or ``None``. Worker to parent: ``("warming",)`` (every :data:`BEAT_S` while it
starts), ``("ready", pid, warmed)``, ``("failed", reason)`` or ``("done", answers)``, one
answer per task: ``(task_id, "ok", packed result, shared)`` (a whole recall's result: its
layers' results and its packed hits, or None for the hits when the message would outgrow
one write, :mod:`~athena.execution.worker_messages`) or ``(task_id, "error", error class
name, message)``; ``shared`` says whether the packed tree holds shared-memory blocks
(most do not, and walking a tree back costs tens of µs a task).

In the parent, :class:`Fleet` spawns, chooses, reaps and stops the processes; the pool
calls it under its lock (all but :meth:`Fleet.wait`, which only its monitor thread calls).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import selectors
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any, Final, Generic, TypeVar

from athena import errors
from athena.embedding import load_embedder
from athena.execution import shm
from athena.execution.backend import HITS
from athena.execution.pipeline import build_hits, pack_hits
from athena.execution.runner import run_layer
from athena.execution.worker_layers import layers_from
from athena.execution.worker_messages import seal, seal_in_one_write
from athena.layers.protocol import LayerContext, SearchRequest, open_context
from athena.retrieval.residency import default_budget
from athena.retrieval.snapshots import for_store
from athena.store.sqlite import SQLiteStore

T = TypeVar("T")
WORKER_CAPACITY: Final = 1  # a second task in a worker's pipe could no longer be re-prioritised
HOLDS_KEPT: Final = 4096  # (tenant, layer) keys the dispatcher remembers per worker
STOP_GRACE: Final = 2.0  # seconds workers get to exit on close before they are terminated
WARM_AT_LEAST: Final = 5_000  # memories in a scope before a worker builds its indexes at start
WARM_BUDGET_S: Final = 30.0  # of the pool's 60 s start allowance
BEAT_S: Final = 1.0  # how often a starting worker says it is still at work


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs to open its own copy of the engine."""

    db_path: str
    embedder: str  # its full name (the vectors searched), or a load_embedder name
    hnsw_cutoff: int
    index_snapshots: bool = True  # load (and save) the database's index snapshots
    index_memories: int | None = None  # its indexes' budget (None: the default one)
    layers: bytes | None = None  # worker_layers.portable_layers (None: the default five)


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of a worker process: initialise once, then serve tasks.

    >>> # ctx.Process(target=worker_main, args=(child_conn, WorkerConfig(...))).start()
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.dup2(2, 1)  # stdout may be an MCP stdio channel: nothing of ours may reach it
    sys.stdout = sys.stderr
    try:
        with beating(conn, BEAT_S):
            store, serve, warmed = _initialise(config)
    except BaseException as exc:
        send_quietly(conn, ("failed", f"{type(exc).__name__}: {exc}"))
        return
    send_quietly(conn, ("ready", os.getpid(), warmed))
    try:
        while (message := _next(conn)) is not None and send_quietly(conn, serve(*message), True):
            pass  # one task at a time, until told to stop or the parent goes away
    finally:
        store.close()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: a spawned worker exits in ms, not ~200 ms


@contextlib.contextmanager
def beating(conn: Connection, every: float) -> Iterator[None]:
    """Send ``("warming",)`` every ``every`` seconds until the block ends.

    A replacement that builds the indexes of a scope grown large since the pool started
    (no snapshot: tens of seconds) is then not taken for stuck by the pool's start
    allowance, which counts silence; a frozen or killed worker falls silent.

    >>> # with beating(conn, BEAT_S): initialise()
    """
    stop = threading.Event()

    def beat() -> None:
        while send_quietly(conn, ("warming",)) and not stop.wait(every):
            pass

    thread = threading.Thread(target=beat, name="athena-worker-beat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()  # before the next message: one sender on the pipe at a time


def _next(conn: Connection) -> Any:
    """The next task, or None when told to stop or when the parent went away."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


def _initialise(
    config: WorkerConfig,
) -> tuple[SQLiteStore, Callable[..., bytes], list[tuple[str, str]]]:
    store = SQLiteStore(config.db_path, readonly=True)
    try:
        store.data_version()  # fail now, not on the first task, if the file is unreadable
        model = vector_space(config.embedder)
        layers = layers_from(config.layers)
        snapshots = for_store(store) if config.index_snapshots else None
        budget = config.index_memories or default_budget()
        ctx = open_context(store, model, config.hnsw_cutoff, snapshots, layers.values(), budget)
        warmed = warm_indexes(ctx, WARM_AT_LEAST, WARM_BUDGET_S)
    except BaseException:
        store.close()
        raise

    def serve(work: tuple[tuple[int, str], ...], payload: bytes) -> bytes:
        try:
            tree, shared = pickle.loads(payload)  # shared: the request holds shm blocks
            request = shm.unpack_tree(tree, unlink=False) if shared else tree
        except Exception as exc:
            return seal([(tid, "error", type(exc).__name__, str(exc)) for tid, _ in work])
        answers = [
            whole(tid, request) if layer == HITS else search(tid, layer, request)
            for tid, layer in work
        ]
        return seal_in_one_write(answers, whole=work[-1][1] == HITS)

    def search(task_id: int, layer: str, request: SearchRequest) -> tuple[Any, ...]:
        try:
            result = run_layer(layers, ctx, layer, request, "distributed")
            packed, blocks = shm.pack_tree(result)
            shm.release(blocks, unlink=False)  # the parent unlinks them after unpacking
            return (task_id, "ok", packed, bool(blocks))
        except Exception as exc:
            return (task_id, "error", type(exc).__name__, str(exc))

    def whole(task_id: int, request: SearchRequest) -> tuple[Any, ...]:
        """A whole recall: every layer of the query in turn, fused, and the hits read
        (``pack_hits``); its layers' results go back too, for the caller's cache."""
        try:
            query = request.query
            found = {
                name: run_layer(layers, ctx, name, request, "distributed") for name in query.layers
            }
            hits = pack_hits(build_hits(store, query, found))
            return (task_id, "ok", (tuple(found.items()), hits), False)
        except Exception as exc:
            return (task_id, "error", type(exc).__name__, str(exc))

    return store, serve, warmed


def vector_space(embedder: str) -> str:
    """The stored vectors a worker searches: ``embedder`` is an embedder's full name (what
    the engine passes: the worker never embeds, so it never loads a model), or a
    ``load_embedder`` name such as ``"static"``.

    >>> vector_space("transformer:all-MiniLM-L6-v2-int8"), vector_space("static")
    ('transformer:all-MiniLM-L6-v2-int8', 'static:minilm-static-256')
    """
    return embedder if ":" in embedder else load_embedder(embedder).name


def warm_indexes(ctx: LayerContext, at_least: int, budget_s: float) -> list[tuple[str, str]]:
    """Build the indexes of the largest scopes before the worker reports ready.

    A first search on a scope of tens of thousands of memories builds its indexes (an HNSW
    graph of 75k vectors took about 28 s here), far past a task's deadline: the pool would
    kill the worker and the recall would fall back. Built here, that cost falls within the
    start-up allowance, and recalls take the parallel path until a worker is ready. Largest
    first; once ``budget_s`` has passed only scopes with a saved snapshot (a fraction of a
    second to load) are still warmed, and never past the worker's index budget.

    >>> # warm_indexes(ctx, at_least=5_000, budget_s=30.0)  # [("one", "episodic"), ...]
    """
    start, warmed = time.monotonic(), list[tuple[str, str]]()
    residency = ctx.residency
    for tenant, layer, size in ctx.store.large_scopes(at_least):
        if time.monotonic() - start > budget_s and not ctx.indexes.has_snapshot(tenant, layer):
            continue
        if residency.budget is not None and residency.memories + size > residency.budget:
            continue  # past this worker's share of the index budget: it would drop others
        generation = ctx.store.generations(tenant).get(layer, 0)
        ctx.indexes.warm(tenant, layer, generation)
        ctx.lexicon.warm(tenant, layer, generation)
        warmed.append((tenant, layer))
    return [(tenant, layer) for tenant, layer in warmed if residency.holds(tenant)]


def send_quietly(conn: Connection, message: object, pickled: bool = False) -> bool:
    """Send ``message`` (``pickled``: bytes the other end's ``recv`` unpickles); False if
    the other end is gone (the monitor deals with that).

    >>> # if not send_quietly(conn, None): ...  # the worker had already exited
    """
    try:
        if pickled:
            conn.send_bytes(message)  # type: ignore[arg-type]
        else:
            conn.send(message)
    except (OSError, ValueError, TypeError):  # TypeError: closed by another thread meanwhile
        return False
    return True


def rebuild_error(name: str, message: str) -> errors.AthenaError:
    """The exception a worker reported, as the parent raises it.

    Athena's own errors (a bad query, a store failure) keep their class; anything else is
    a bug or a broken worker and becomes WorkerPoolUnavailable.

    >>> type(rebuild_error("StoreLocked", "busy")).__name__
    'StoreLocked'
    >>> type(rebuild_error("KeyError", "'x'")).__name__
    'WorkerPoolUnavailable'
    """
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.AthenaError):
        return cls(message)
    return errors.WorkerPoolUnavailable(f"layer search failed in a worker: {name}: {message}")


# -- the parent's side ------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class WorkerHandle(Generic[T]):
    """One worker process as the parent sees it, with the tasks (``T``) it is running."""

    id: int
    process: BaseProcess
    conn: Connection
    last_active: float  # when it was spawned, until it is ready
    state: str = "starting"  # starting | ready | retiring
    heard: float = 0.0  # its last sign of life while starting
    inflight: dict[int, T] = field(default_factory=dict)
    holds: OrderedDict[Hashable, None] = field(default_factory=OrderedDict)  # keys it served


class Fleet(Generic[T]):
    """The worker processes of one pool. Not thread-safe: the pool serialises calls.

    >>> # fleet = Fleet(mp.get_context("spawn"), config, {}); fleet.spawn()
    """

    def __init__(self, ctx: BaseContext, config: WorkerConfig, procs: dict[int, BaseProcess]):
        self.ctx, self.config, self.procs = ctx, config, procs
        self.workers: dict[int, WorkerHandle[T]] = {}
        self.ids = itertools.count(1)
        self.init_error = ""
        self._wake_r, self._wake_w = -1, -1  # a self-pipe that interrupts wait()
        # One selector for the pool's life (multiprocessing's wait() builds and fills a new
        # one on every call): the wake pipe, and each worker's pipe and sentinel.
        self._selector: selectors.BaseSelector | None = None
        self._watched: dict[int, tuple[Connection, int]] = {}

    def open(self) -> None:
        """Create the self-pipe behind :meth:`wake` (once, before the first :meth:`wait`)."""
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)

    def wake(self) -> None:
        """Make a :meth:`wait` in another thread return now."""
        with contextlib.suppress(OSError):  # a wake-up is pending already, or it is closed
            os.write(self._wake_w, b"\0")

    def wait(self, workers: list[WorkerHandle[T]], timeout: float) -> set[Any]:
        """Block until one of ``workers`` writes or exits, or a wake-up; return what is ready
        (their ``conn`` and ``process.sentinel`` objects). Only the monitor thread calls it."""
        selector = self._selector
        assert selector is not None, "open() first"
        for worker in workers:
            if worker.id not in self._watched:
                pair = (worker.conn, worker.process.sentinel)
                for handle in pair:
                    selector.register(handle, selectors.EVENT_READ)
                self._watched[worker.id] = pair
        ready = {key.fileobj for key, _ in selector.select(max(0.0, timeout))}
        with contextlib.suppress(OSError):
            while self._wake_r in ready and os.read(self._wake_r, 4096):
                pass
        return ready

    def spawn(self) -> WorkerHandle[T]:
        """Start one worker process (it reports ``ready`` on its pipe once initialised)."""
        parent, child = self.ctx.Pipe()
        wid = next(self.ids)
        process = self.ctx.Process(  # type: ignore[attr-defined]
            target=worker_main, args=(child, self.config), name=f"athena-worker-{wid}", daemon=True
        )
        try:
            process.start()
        except Exception as exc:
            parent.close()
            raise errors.WorkerPoolUnavailable(f"cannot start a worker process: {exc}") from exc
        finally:
            child.close()
        worker: WorkerHandle[T] = WorkerHandle(wid, process, parent, time.monotonic())
        self.workers[wid] = worker
        self.procs[wid] = process
        return worker

    def of(self, *states: str) -> list[WorkerHandle[T]]:
        return [w for w in self.workers.values() if w.state in states]

    def live(self) -> int:
        return len(self.of("starting", "ready"))

    def tally(self) -> tuple[int, int, int]:
        """Live (starting or ready), ready, and busy ready workers, in one pass: the
        planner reads the pool's load on every recall."""
        live = ready = busy = 0
        for worker in self.workers.values():
            live += worker.state in ("starting", "ready")
            if worker.state == "ready":
                ready, busy = ready + 1, busy + bool(worker.inflight)
        return live, ready, busy

    def _free(self) -> list[WorkerHandle[T]]:
        return [w for w in self.of("ready") if len(w.inflight) < WORKER_CAPACITY]

    def free(self) -> int:
        """How many ready workers could take a task now."""
        return len(self._free())

    def pick(self, key: Hashable = None) -> WorkerHandle[T] | None:
        """A free ready worker: one that :func:`hold` says served ``key`` if any is free,
        else the one with the fewest tasks in flight (oldest first on a tie)."""
        free = self._free()
        if key is not None:
            for worker in free:
                if key in worker.holds:
                    return worker
        return min(free, key=lambda w: (len(w.inflight), w.id)) if free else None

    def remove(self, worker: WorkerHandle[T]) -> list[T]:
        """Forget a worker that exited (or was killed); return the tasks it was running."""
        self.workers.pop(worker.id, None)
        self.procs.pop(worker.id, None)
        watched = self._watched.pop(worker.id, ())
        if self._selector is not None:
            for handle in watched:  # before its descriptors close and may be reused
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(handle)
        worker.process.join(1.0)
        worker.conn.close()
        return list(worker.inflight.values())

    def receive(self, worker: WorkerHandle[T]) -> tuple[Any, ...] | None:
        """The task answers waiting on ``worker``'s pipe, if that is what it sent; start-up
        reports are handled here. One message per wake-up: a poll() costs a selector of its
        own, and if more are waiting, the monitor's next wait returns at once."""
        try:
            message: tuple[Any, ...] = worker.conn.recv()
        except (EOFError, OSError):
            return None  # the worker is gone: its sentinel fires and the monitor reaps it
        if message[0] == "ready":
            worker.state, worker.last_active = "ready", time.monotonic()
            for tenant, layer in message[2]:  # built at start: it holds them
                hold(worker, (tenant, layer))
        elif message[0] == "warming":
            worker.heard = time.monotonic()
        elif message[0] == "failed":
            self.init_error = message[1]
        else:
            return message
        return None

    def stop_all(self) -> None:
        """Ask every worker to exit, terminate the ones that do not, kill what is left."""
        workers = list(self.workers.values())
        for w in workers:  # a worker still starting has nothing to finish
            send_quietly(w.conn, None) if w.state != "starting" else w.process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
        for w in workers:
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(0.5)
        kill_all(self.procs)  # SIGKILL reaches even a stopped process
        for w in workers:
            self.remove(w)
        if self._selector is not None:
            self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r, self._wake_w = -1, -1


def hold(worker: WorkerHandle[Any], key: Hashable) -> bool:
    """Note that ``worker`` is sent a task of ``key`` (the most recent
    :data:`HOLDS_KEPT` are remembered); returns whether it had served ``key`` before.

    >>> from types import SimpleNamespace
    >>> from collections import OrderedDict
    >>> w = SimpleNamespace(holds=OrderedDict())
    >>> hold(w, ("t", "episodic")), hold(w, ("t", "episodic"))
    (False, True)
    """
    holds = worker.holds
    had = key in holds
    holds[key] = None
    holds.move_to_end(key)
    if len(holds) > HOLDS_KEPT:
        holds.popitem(last=False)
    return had


def kill_all(procs: dict[int, BaseProcess]) -> None:
    """SIGKILL and reap every process in ``procs`` (a SIGSTOPped one dies too).

    >>> kill_all({})
    """
    for process in list(procs.values()):
        if process.is_alive():
            process.kill()
        process.join(1.0)
    procs.clear()


def halt(lock: threading.Condition, stop: threading.Event, procs: dict[int, BaseProcess]) -> None:
    """Last resort, at garbage collection or interpreter exit: kill every worker.

    >>> # weakref.finalize(pool, halt, cond, stop_event, procs)
    """
    with lock:  # spawns happen under this lock: none can slip in after this
        stop.set()
        kill_all(procs)
