"""The facade: remember, recall, forget, update and stats, with a sync and an async face.

:class:`Memory` holds all the logic: its writes (:class:`~athena.memory_writes.MemoryWrites`),
recalls (:class:`~athena.memory_recalls.MemoryRecalls`) and index upkeep
(:class:`~athena.memory_indexes.MemoryIndexes`) live in the classes it extends.
:class:`AsyncMemory` is only an async face over the same core (each call runs on a worker
thread), so there is no twin class to drift apart.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from athena.catch_up import CatchUp
from athena.embedding import Embedder, load_embedder
from athena.errors import ExecutionError, InvalidInput, NotFound, WorkerPoolUnavailable
from athena.execution.admission import QueueTally
from athena.execution.backend import default_max_workers
from athena.execution.pipeline import Pipeline, Recall
from athena.execution.protocol import RecallEngine
from athena.execution.sequential import SequentialEngine
from athena.execution.worker_layers import portable_layers
from athena.generations import GenerationTracker
from athena.layers import MemoryLayer, default_layers
from athena.layers.protocol import HoldsTenants, open_context
from athena.memory_indexes import MemoryIndexes
from athena.memory_recalls import MemoryRecalls
from athena.memory_writes import MemoryWrites, check_id
from athena.records import RequestMemo, check_tenant
from athena.retrieval.residency import check_budget, default_budget
from athena.retrieval.snapshots import for_store
from athena.retrieval.vector import DEFAULT_HNSW_CUTOFF
from athena.store.sqlite import SQLiteStore

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_PATH = "athena.db"


class Memory(MemoryWrites, MemoryRecalls, MemoryIndexes):
    """An agent's memory in one SQLite file.

    ``index_snapshots`` (default on) keeps the vector graphs of scopes past ``hnsw_cutoff``
    and the BM25 indexes of scopes from 256 memories in ``<path>.indexes/``, so the next
    index of a scope (a pool worker, a restart, this process after the index budget dropped
    the tenant) loads them instead of building them; the directory is a cache and may be
    deleted at any time (delete it too when restoring an older copy of the database).

    ``backfill`` (default on): memories with no vector for this embedder (written under
    another one, or another runtime of the transformer) are embedded as the Memory opens;
    off, they are found lexically until :meth:`backfill_vectors` runs (the CLI runs it
    behind a progress bar).

    ``index_memories``: at most this many memories held in this process's in-memory
    indexes, and as many in the pool's workers' together (each its share); past it the
    tenants searched least recently are dropped and built again when next searched
    (:mod:`athena.retrieval.residency`). Default: ``ATHENA_INDEX_MEMORIES``, else a
    quarter of physical memory (or of a cgroup limit) at 2.6 KB each.

    >>> import tempfile, os
    >>> mem = Memory(os.path.join(tempfile.mkdtemp(), "m.db"))
    >>> mid = mem.remember("Alice moved to Lisbon in May.", tenant="agent-1", layer="semantic")
    >>> [h.id for h in mem.recall("Where does Alice live?", tenant="agent-1").hits] == [mid]
    True
    >>> mem.close()
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_PATH,
        *,
        embedder: str | Embedder = "static",
        engine: Callable[[Pipeline, SQLiteStore], RecallEngine] | None = None,
        execution: str = "adaptive",
        pool: str = "lazy",
        hnsw_cutoff: int = DEFAULT_HNSW_CUTOFF,
        layers: Mapping[str, MemoryLayer] | None = None,
        index_snapshots: bool = True,
        backfill: bool = True,
        index_memories: int | None = None,
    ) -> None:
        # Refused before the file is created or opened.
        budget = default_budget() if index_memories is None else check_budget(index_memories)
        self.store = SQLiteStore(path)
        self._requests = RequestMemo()
        self.thread_queue = QueueTally()  # what the async faces' wait for a thread did
        try:
            self.embedder = load_embedder(embedder) if isinstance(embedder, str) else embedder
            self.layers = dict(layers or default_layers())
            self.generations = GenerationTracker(self.store)
            snapshots = for_store(self.store) if index_snapshots else None
            ctx = open_context(
                self.store, self.embedder.name, hnsw_cutoff, snapshots, self.layers.values(), budget
            )
            self.pipeline = Pipeline(self.layers, ctx, self.embedder)
            self.catch_up = CatchUp(self.store, self.generations, self.pipeline)
            if engine is None:
                own = self.layers if layers else None  # None: workers build the defaults
                engine = _engine_factory(execution, pool, hnsw_cutoff, index_snapshots, budget, own)
            self.engine = engine(self.pipeline, self.store)
            if backfill:
                self.backfill_vectors()
        except BaseException:
            if hasattr(self, "catch_up"):
                self.catch_up.close()
            self.store.close()
            raise

    def get(self, memory_id: int, *, tenant: str) -> dict[str, Any]:
        """One memory of ``tenant`` as a dict; NotFound if it is not theirs."""
        rows = self.store.get(check_tenant(tenant), [check_id(memory_id)])
        if not rows:
            raise NotFound(f"no memory {memory_id} for tenant {tenant!r}")
        row = rows[0]
        return {name: getattr(row, name) for name in row.__dataclass_fields__}

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Counts per layer, tenants and entities, for one tenant or the whole store."""
        if tenant is not None:
            check_tenant(tenant)
        out = self.store.stats(tenant)
        out["embedder"] = self.embedder.name
        out["path"] = str(self.store.path)
        return out

    def execution_stats(self) -> dict[str, Any]:
        """The execution layer's state: ``cache``, ``pool``, ``telemetry``, ``selector``,
        ``thread_queue`` (recalls the async faces queued for a thread, and their timeouts)
        and ``indexes`` (memories held in this process's indexes, the budget, tenants held
        and tenants dropped so far)."""
        return {**self.engine.stats(), **self._process_gauges()}

    def execution_gauges(self) -> dict[str, Any]:
        """Only the ``pool``, ``admission``, ``thread_queue`` and ``indexes`` sections of
        :meth:`execution_stats`, without summarising telemetry: what a metrics scrape reads."""
        return {**self.engine.gauges(), **self._process_gauges()}

    def _process_gauges(self) -> dict[str, Any]:
        residency = self.pipeline.ctx.residency.stats()
        return {"thread_queue": self.thread_queue.stats(), "indexes": residency}

    def tenants(self) -> list[str]:
        return self.store.tenants()

    def close(self) -> None:
        try:
            self.catch_up.close()
            self.engine.close()
        finally:
            for layer in self.layers.values():
                if isinstance(layer, HoldsTenants):  # a layer shared by several Memory objects
                    layer.forget_tenants(self.store)
            self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _engine_factory(
    execution: str,
    pool: str,
    hnsw_cutoff: int,
    snapshots: bool,
    budget: int | None,
    layers: Mapping[str, MemoryLayer] | None = None,
) -> Callable[[Pipeline, SQLiteStore], RecallEngine]:
    """``execution``: "adaptive" (default) or "sequential" (the reference path only).

    ``pool``: "lazy" starts the worker processes the first time a recall needs them,
    "eager" at start-up (for servers), "off" never (DISTRIBUTED then falls back).
    """
    if execution == "sequential":
        return lambda pipeline, store: SequentialEngine(pipeline)
    if execution != "adaptive":
        raise InvalidInput("execution must be 'adaptive' or 'sequential'")
    if pool not in ("lazy", "eager", "off"):
        raise InvalidInput("pool must be 'lazy', 'eager' or 'off'")

    def build(pipeline: Pipeline, store: SQLiteStore) -> RecallEngine:
        from athena.execution.adaptive import AdaptiveEngine
        from athena.execution.pool import ProcessWorkerPool

        backend = None
        if pool != "off":
            name = pipeline.embedder.name  # workers search its stored vectors; none embeds
            # The layers as configured now, pickled once for every pool this engine starts
            # (rebuilds too); a layer that cannot be pickled leaves the pool off, with why.
            try:
                portable, refused = portable_layers(layers), ""
            except WorkerPoolUnavailable as exc:
                portable, refused = None, str(exc)

            def backend() -> ProcessWorkerPool:
                if refused:
                    raise WorkerPoolUnavailable(refused)
                return ProcessWorkerPool(
                    store.path,
                    name,
                    hnsw_cutoff=hnsw_cutoff,
                    index_snapshots=snapshots,
                    index_memories=budget,
                    layers=portable,
                )

        return AdaptiveEngine(pipeline, store, backend=backend, eager_pool=pool == "eager")

    return build


def _threaded(method: Callable[P, T]) -> Callable[P, Any]:
    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(method, *args, **kwargs)

    return call


class AsyncMemory:
    """The async face of :class:`Memory`: the same core, each call on a worker thread.

    At most ``concurrency`` recalls run on threads at once (default
    :attr:`Memory.concurrency`), on threads of its own; the others wait in its queue, in
    arrival order, and one that finds its answer cached by then is served from the cache.
    More threads only fight over the GIL: bursts of 100 cold recalls ran 1.4-1.8x faster
    bounded (``athena.execution.admission``). Forced DISTRIBUTED recalls, which wait on
    the worker pool without the GIL, run on threads of their own while the pool can take
    them (twice its default ceiling of a worker per core).

    >>> # async with AsyncMemory("m.db") as mem: await mem.recall("...", tenant="t")
    """

    def __init__(
        self, path: str | Path = DEFAULT_PATH, *, concurrency: int | None = None, **options: Any
    ) -> None:
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise InvalidInput(f"concurrency must be a positive integer, not {concurrency!r}")
        self.core = Memory(path, **options)
        self.concurrency = self.core.concurrency if concurrency is None else concurrency
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="athena-recall")
        # A forced DISTRIBUTED recall waits on the worker pool nearly throughout, without the
        # GIL: on threads of its own (twice the pool's default ceiling, a worker per core) it
        # keeps the workers busy and leaves the ``concurrency`` threads to the recalls that
        # run here. Only while the pool can take it: one that falls back runs here.
        self._pool_threads = ThreadPoolExecutor(
            2 * default_max_workers(), thread_name_prefix="athena-pool-recall"
        )
        self.remember = _threaded(self.core.remember)
        self.remember_many = _threaded(self.core.remember_many)
        self.recall_cached = self.core.recall_cached
        self.forget = _threaded(self.core.forget)
        self.update = _threaded(self.core.update)
        self.stats = _threaded(self.core.stats)
        self.get = _threaded(self.core.get)
        self.execution_stats = _threaded(self.core.execution_stats)
        self.execution_gauges = _threaded(self.core.execution_gauges)

    async def recall(self, query: str, **options: Any) -> Recall:
        """:meth:`Memory.recall`, awaitable: a valid cache hit is served on the event loop
        (no thread hop); anything else runs on one of ``concurrency`` threads, waiting for
        one in arrival order (see :meth:`Memory.recall_queued`), or with
        ``strategy="distributed"`` on threads that wait for the worker pool.

        >>> # hits = (await mem.recall("where is the key?", tenant="t", k=5)).hits
        """
        hit = self.core.recall_cached(query, **options)
        if hit is not None:
            return hit
        queued = functools.partial(self.core.recall_queued, query, time.perf_counter(), **options)
        run = functools.partial(contextvars.copy_context().run, queued)
        pooled = options.get("strategy") == "distributed" and self.core.engine.pool_ready()
        try:
            threads = self._pool_threads if pooled else self._threads
            future = asyncio.get_running_loop().run_in_executor(threads, run)
        except RuntimeError:  # the thread pool is shut: close() has begun
            raise ExecutionError("this AsyncMemory is closed") from None
        return await future

    async def close(self) -> None:
        """Let the recalls already queued finish, then close the core. A later recall that
        misses the cache raises ExecutionError."""
        self._threads.shutdown(wait=False)  # both refuse new recalls from now on
        self._pool_threads.shutdown(wait=False)
        await asyncio.to_thread(self._threads.shutdown, True)
        await asyncio.to_thread(self._pool_threads.shutdown, True)
        await asyncio.to_thread(self.core.close)

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
