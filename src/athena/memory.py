"""The facade: remember, recall, forget, update and stats, with a sync and an async face.

:class:`Memory` holds all the logic. :class:`AsyncMemory` is only an async face over the
same core (each call runs on a worker thread), so there is no twin class to drift apart.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from athena.embedding import Embedder, batch_width, load_embedder, registered_name
from athena.errors import InvalidInput, NotFound, RecallTimeout
from athena.execution.admission import default_concurrency
from athena.execution.pipeline import Pipeline, Recall
from athena.execution.protocol import RecallEngine
from athena.execution.sequential import SequentialEngine
from athena.generations import GenerationTracker
from athena.layers import LayerContext, MemoryLayer, default_layers
from athena.records import MemoryInput, RequestMemo, check_tenant, check_timeout
from athena.retrieval.lexical_index import SNAPSHOT_MIN as LEXICAL_SNAPSHOT_MIN
from athena.retrieval.lexical_index import LexicalIndexes
from athena.retrieval.snapshots import for_store
from athena.retrieval.vector import DEFAULT_HNSW_CUTOFF, VectorIndexes
from athena.store.sqlite import SQLiteStore
from athena.writing import check_mapping, check_timestamp, prepare

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_PATH = "athena.db"
BACKFILL_BATCH = 1024
MAX_ID = 2**63 - 1  # SQLite's largest rowid
REQUEUED_S = 0.001  # a queued recall that waited longer looks in the cache again


class Memory:
    """An agent's memory in one SQLite file.

    ``index_snapshots`` (default on) keeps the vector graphs and BM25 indexes of large
    scopes (past ``hnsw_cutoff`` and 20,000 memories) in ``<path>.indexes/``, so the next
    process (a pool worker, a restart) loads them instead of building them; the directory
    is a cache and may be deleted at any time (delete it too when restoring an older copy
    of the database).

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
    ) -> None:
        self.store = SQLiteStore(path)
        self._requests = RequestMemo()
        try:
            self.embedder = load_embedder(embedder) if isinstance(embedder, str) else embedder
            self.layers = dict(layers or default_layers())
            self.generations = GenerationTracker(self.store)
            snapshots = for_store(self.store) if index_snapshots else None
            ctx = LayerContext(
                self.store,
                VectorIndexes(self.store, self.embedder.name, hnsw_cutoff, snapshots),
                LexicalIndexes(self.store, snapshots),
            )
            self.pipeline = Pipeline(self.layers, ctx, self.embedder)
            if engine is None:
                engine = _engine_factory(execution, pool, embedder, hnsw_cutoff, index_snapshots)
            self.engine: RecallEngine = engine(self.pipeline, self.store)
            self._backfill_vectors()
        except BaseException:
            self.store.close()
            raise

    # -- writing ----------------------------------------------------------------------------

    def remember(
        self,
        text: str,
        *,
        tenant: str,
        layer: str = "episodic",
        key: str | None = None,
        kind: str | None = None,
        session: str | None = None,
        actor: str | None = None,
        timestamp: float | None = None,
        sources: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> int:
        """Store one memory and return its id. Same (tenant, layer, key) updates in place.

        >>> # mem.remember("Buy milk", tenant="t", layer="prospective", attributes={"priority": 8})
        """
        item = MemoryInput(
            layer=layer,
            text=text,
            tenant=tenant,
            key=key,
            kind=kind,
            session=session,
            actor=actor,
            event_time=timestamp,
            sources=tuple(sources),
            metadata=metadata or {},
            attributes=attributes or {},
        )
        return self.remember_many([item])[0]

    def remember_many(self, items: Sequence[MemoryInput]) -> list[int]:
        """Store many memories in one transaction (all or none); return their ids in order."""
        if not items:
            return []
        return self.store.put(prepare(items, self.layers, self.embedder))

    def update(
        self,
        memory_id: int,
        *,
        tenant: str,
        text: str | None = None,
        timestamp: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> int:
        """Change a memory of ``tenant``: new text is re-embedded and re-indexed.

        Metadata and attributes are merged into what is stored. Raises NotFound when the id
        is not one of ``tenant``'s memories.
        """
        check_tenant(tenant)
        memory_id = _check_id(memory_id)
        rows = self.store.get(tenant, [memory_id])
        if not rows:
            raise NotFound(f"no memory {memory_id} for tenant {tenant!r}")
        row = rows[0]
        changes: dict[str, Any] = {}
        if timestamp is not None:
            changes["event_time"] = check_timestamp(timestamp)
        if metadata is not None:
            changes["metadata"] = dict(check_mapping(metadata, "metadata"))
        if attributes is not None:
            changes["attributes"] = dict(check_mapping(attributes, "attributes"))
        prepared = None
        if text is not None:
            merged = MemoryInput(
                layer=row.layer,
                text=text,
                tenant=tenant,
                key=row.key,
                kind=row.kind,
                session=row.session,
                actor=row.actor,
                attributes={**row.attributes, **changes.get("attributes", {})},
            )
            prepared = prepare([merged], self.layers, self.embedder)[0]
            changes["text"] = prepared.text
            changes["attributes"] = dict(prepared.attributes)
        if not changes:
            raise InvalidInput("update needs text, timestamp, metadata or attributes")
        self.store.update(tenant, memory_id, changes, prepared)
        return memory_id

    def forget(self, ids: int | Sequence[int], *, tenant: str) -> list[int]:
        """Delete memories of ``tenant``; return the ids that were deleted.

        Ids that do not exist or belong to another tenant raise NotFound, and nothing is
        deleted.
        """
        check_tenant(tenant)
        wanted = [_check_id(i) for i in ([ids] if isinstance(ids, int) else ids)]
        if not wanted:
            raise InvalidInput("forget needs at least one id")
        present = {row.id for row in self.store.get(tenant, wanted)}
        missing = [i for i in wanted if i not in present]
        if missing:
            raise NotFound(f"no memories {missing} for tenant {tenant!r}")
        return self.store.delete(tenant, wanted)

    # -- reading ----------------------------------------------------------------------------

    def recall(
        self,
        query: str,
        *,
        tenant: str,
        k: int = 10,
        layers: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        session: str | None = None,
        actor: str | None = None,
        kinds: Sequence[str] | None = None,
        strategy: str = "adaptive",
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recall:
        """The ``k`` memories of ``tenant`` that best answer ``query``, across ``layers``.

        Filters: ``since``/``until`` (event time, epoch seconds), ``session``, ``actor`` and
        ``kinds`` (e.g. ``["turn", "fact"]``). ``strategy`` forces an execution strategy
        (default: the planner chooses); ``explain`` attaches how the recall was run.

        >>> # mem.recall("when is the dentist?", tenant="t", k=5, layers=["prospective"])
        """
        request = self._requests.make(query, tenant, k, layers, since, until, session, actor, kinds)
        timeout = check_timeout(timeout)
        generations = self._generations(request.tenant)
        return self.engine.recall(
            request, generations, strategy=strategy, explain=explain, timeout=timeout
        )

    def recall_cached(
        self,
        query: str,
        *,
        tenant: str,
        k: int = 10,
        layers: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        session: str | None = None,
        actor: str | None = None,
        kinds: Sequence[str] | None = None,
        strategy: str = "adaptive",
        explain: bool = False,
        timeout: float | None = None,
    ) -> Recall | None:
        """:meth:`recall` if a valid cache entry answers it (tens of µs), else ``None``.

        Validates exactly as :meth:`recall` does, so bad input raises the same errors. The
        async face and the HTTP server call this on the event loop before paying for a
        thread; a hit is never stale (the entry's generations are checked as in recall).

        >>> # mem.recall_cached("where is the key?", tenant="t") or mem.recall(...)
        """
        request = self._requests.make(query, tenant, k, layers, since, until, session, actor, kinds)
        check_timeout(timeout)
        generations = self._generations(request.tenant)
        return self.engine.cached(request, generations, strategy=strategy, explain=explain)

    def _generations(self, tenant: str) -> dict[str, int]:
        generations = self.generations.get(tenant)
        if not generations:
            raise NotFound(f"unknown tenant {tenant!r}: it has no memories")
        return generations

    def get(self, memory_id: int, *, tenant: str) -> dict[str, Any]:
        """One memory of ``tenant`` as a dict; NotFound if it is not theirs."""
        rows = self.store.get(check_tenant(tenant), [_check_id(memory_id)])
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
        """The execution layer's state: ``cache``, ``pool``, ``telemetry``, ``selector``."""
        return self.engine.stats()

    def execution_gauges(self) -> dict[str, Any]:
        """Only the ``pool`` and ``admission`` sections of :meth:`execution_stats`, without
        summarising telemetry: what a metrics scrape reads."""
        return self.engine.gauges()

    def tenants(self) -> list[str]:
        return self.store.tenants()

    def recall_queued(self, query: str, queued_at: float, **options: Any) -> Recall:
        """:meth:`recall` for a call queued since ``queued_at`` (``time.perf_counter``) by an
        async face: an answer cached while it waited is served from the cache, and the wait
        counts against ``timeout`` (RecallTimeout once it is spent).

        >>> # await loop.run_in_executor(pool, mem.recall_queued, "q?", time.perf_counter())
        """
        waited = time.perf_counter() - queued_at
        if waited > REQUEUED_S:  # a recall ahead of it may have cached this answer
            hit = self.recall_cached(query, **options)
            if hit is not None:
                return hit
        timeout = check_timeout(options.get("timeout"))
        if timeout is not None and waited > 0:
            left = timeout - waited
            if left <= 0:
                raise RecallTimeout(f"recall waited {waited:.3f}s in the queue for a thread")
            options = {**options, "timeout": left}
        return self.recall(query, **options)

    @property
    def concurrency(self) -> int:
        """How many recalls an async face should hand to threads at once
        (:func:`~athena.execution.admission.default_concurrency` for this embedder)."""
        return default_concurrency(batch_width(self.embedder))

    def prepare_indexes(self, advance: Callable[[int], None] | None = None) -> int:
        """Build (or load) the vector graph and the lexical index of every scope large
        enough to have them saved, and save their snapshots, so no later process builds
        them; returns how many scopes it prepared. ``advance(1)`` is called per scope.
        Worth it after a bulk import of 20k+ memories into one (tenant, layer): building
        such a graph takes tens of seconds.

        >>> # mem.remember_many(items); mem.prepare_indexes()  # 1, for 75k turns in one tenant
        """
        ctx, scopes = self.pipeline.ctx, self.large_scopes()
        for tenant, layer, size in scopes:
            generation = self.store.generations(tenant).get(layer, 0)
            if size > ctx.indexes.cutoff:
                ctx.indexes.warm(tenant, layer, generation)
            if size > LEXICAL_SNAPSHOT_MIN:
                ctx.lexicon.warm(tenant, layer, generation)
            if advance is not None:
                advance(1)
        return len(scopes)

    def large_scopes(self) -> list[tuple[str, str, int]]:
        """(tenant, layer, memories) of the scopes :meth:`prepare_indexes` would prepare."""
        cutoff = min(self.pipeline.ctx.indexes.cutoff, LEXICAL_SNAPSHOT_MIN)
        return self.store.large_scopes(cutoff + 1)

    def _backfill_vectors(self) -> None:
        # Memories written with another embedder have no vector for this one yet. A
        # read-only store cannot take them: those memories are then found lexically only.
        if self.store.readonly:
            return
        while rows := self.store.missing_vectors(self.embedder.name, BACKFILL_BATCH):
            vectors = self.embedder.embed([row.text for row in rows])
            self.store.put_vectors(list(zip(rows, vectors, strict=True)), self.embedder.name)

    def close(self) -> None:
        try:
            self.engine.close()
        finally:
            self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _engine_factory(
    execution: str, pool: str, embedder: str | Embedder, hnsw_cutoff: int, snapshots: bool
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
        name: str | None = embedder if isinstance(embedder, str) else registered_name(embedder)
        if pool != "off" and name is not None:

            def backend() -> ProcessWorkerPool:
                return ProcessWorkerPool(
                    store.path, name, hnsw_cutoff=hnsw_cutoff, index_snapshots=snapshots
                )

        return AdaptiveEngine(pipeline, store, backend=backend, eager_pool=pool == "eager")

    return build


def _check_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise InvalidInput(
            f"memory id must be a positive integer (at most {MAX_ID}), not {value!r}"
        )
    return value


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
    bounded (``athena.execution.admission``).

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
        one in arrival order (see :meth:`Memory.recall_queued`).

        >>> # hits = (await mem.recall("where is the key?", tenant="t", k=5)).hits
        """
        hit = self.core.recall_cached(query, **options)
        if hit is not None:
            return hit
        queued = functools.partial(self.core.recall_queued, query, time.perf_counter(), **options)
        run = functools.partial(contextvars.copy_context().run, queued)
        return await asyncio.get_running_loop().run_in_executor(self._threads, run)

    async def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.core.close)

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
