"""The recall side of :class:`~athena.memory.Memory`: recall, its cache-only and queued
forms, and how many recalls an async face should run at once."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from athena.embedding import Embedder, batch_width, embed_lanes
from athena.errors import NotFound, RecallTimeout
from athena.execution.admission import QueueTally, default_concurrency
from athena.execution.pipeline import Recall
from athena.execution.protocol import RecallEngine
from athena.generations import GenerationTracker
from athena.records import RequestMemo, check_timeout


class MemoryRecalls:
    """The recalls of a :class:`~athena.memory.Memory` (which is one): each request is
    checked, then answered by ``engine`` at the tenant's current generations.

    >>> import tempfile, os
    >>> from athena.memory import Memory
    >>> mem = Memory(os.path.join(tempfile.mkdtemp(), "r.db"), execution="sequential")
    >>> mid = mem.remember("Bob plays the cello.", tenant="t", layer="semantic")
    >>> [h.id for h in mem.recall("What does Bob play?", tenant="t").hits] == [mid]
    True
    >>> mem.concurrency >= 1
    True
    >>> mem.close()
    """

    engine: RecallEngine
    embedder: Embedder
    generations: GenerationTracker
    thread_queue: QueueTally
    _requests: RequestMemo

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

    def recall_queued(self, query: str, queued_at: float, **options: Any) -> Recall:
        """:meth:`recall` for a call queued since ``queued_at`` (``time.perf_counter``) by an
        async face: an answer cached while it waited is served from the cache, the wait
        counts against ``timeout`` (RecallTimeout once it is spent), and ``explain`` shows it
        as ``thread_queue_ms``. :attr:`thread_queue` counts the waits and the timeouts.

        >>> # await loop.run_in_executor(pool, mem.recall_queued, "q?", time.perf_counter())
        """
        waited = time.perf_counter() - queued_at
        timeout = check_timeout(options.get("timeout"))
        if timeout is None or timeout - waited > 0:
            self.thread_queue.record(waited)  # counted even if the recall then fails
            left = None if timeout is None else timeout - waited
            out = self.recall(query, **{**options, "timeout": left})  # cache first, as ever
        else:  # the wait spent it: only an answer cached meanwhile is still in time
            hit = self.recall_cached(query, **options)
            self.thread_queue.record(waited, timed_out=hit is None)
            if hit is None:
                raise RecallTimeout(f"recall waited {waited:.3f}s in the queue for a thread")
            out = hit
        if out.explain is None:
            return out
        return Recall(out.hits, {**out.explain, "thread_queue_ms": round(waited * 1000.0, 3)})

    @property
    def concurrency(self) -> int:
        """How many recalls an async face should hand to threads at once
        (:func:`~athena.execution.admission.default_concurrency` for this embedder)."""
        return default_concurrency(batch_width(self.embedder), embed_lanes(self.embedder))
