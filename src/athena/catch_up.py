"""The loaded indexes caught up with this process's own writes once writing pauses.

Before it searches, a recall brings every index it reads up to the scope's write
generation: the vectors and BM25 postings written since, the graph layer's entity names
and memory count. After a write, that catch-up was the next recall's to pay: a faiss HNSW
insert alone took about 0.5 ms in a tenant of 100k memories. An agent writes, then thinks
(a model call), then recalls, so :class:`CatchUp` does that work in between, on a thread of
its own (on the other core where the work releases the GIL, as faiss does), once writing
pauses: the store's quiet timer tells it when no write has come for 10 ms after one
(:data:`~athena.store.turns.QUIET_S`). An agent's next recall comes a model call
later; a recall right after a write (a benchmark's loop) does its own catch-up, unhindered
by this thread; a burst of writes is caught up once, after it.

Only what is already loaded is caught up, and only a little way (:data:`MOST`): a scope no
recall has searched stays unbuilt, and a bulk import's catch-up (or a graph's build) is the
next recall's, as before.
Nothing about a recall's correctness depends on it: each recall still syncs every index it
reads to the generation it read, finding it current (one comparison) or waiting, under the
index's lock, for a catch-up under way. Writes by other processes are caught up by the
recall, as before. A failure here is left for that recall to meet and report.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from athena.execution.pipeline import Pipeline
from athena.generations import GenerationTracker
from athena.layers.protocol import FollowsWrites
from athena.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)

# A scope further behind than this (a bulk import), or one whose catch-up would build an
# index, is left to its next recall, as before: close() waits for one scope's catch-up at
# most (with, now and then, the snapshot of a graph that took in 5,000 vectors since its
# last, as a recall would save it).
MOST: Final = 512


class CatchUp:
    """A thread that, whenever writing to ``store`` pauses, catches up the loaded indexes
    of the scopes this process wrote (started at the first pause, stopped by :meth:`close`).

    >>> import tempfile, os
    >>> from athena.memory import Memory
    >>> mem = Memory(os.path.join(tempfile.mkdtemp(), "c.db"))
    >>> _ = mem.remember("Ann likes coffee.", tenant="t", layer="semantic")
    >>> _ = mem.recall("who likes what?", tenant="t")  # the tenant's indexes are loaded
    >>> _ = mem.remember("Bo likes tea.", tenant="t", layer="semantic")
    >>> mem.catch_up.settle(5.0)  # caught up: the next recall only compares generations
    True
    >>> mem.close()
    """

    def __init__(self, store: SQLiteStore, tracker: GenerationTracker, pipeline: Pipeline) -> None:
        self._tracker = tracker
        self._pipeline = pipeline
        self._pending: dict[str, set[str]] = {}  # tenant -> layers written since last taken
        self._due = False  # writing paused since the pending writes: take them up
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.followed = 0  # commits' scopes taken up so far, by tenant
        store.on_commit(self._committed)
        store.on_quiet(self._quiet)

    def _committed(self, touched: set[tuple[str, str]]) -> None:
        """After a commit (on the writing thread, under the store's write lock): note the
        scopes. Wakes nothing (a thread woken here cost the write and the recall after it
        50-90 µs): :meth:`_quiet` does."""
        with self._cond:
            if not self._closed:
                for tenant, layer in touched:
                    self._pending.setdefault(tenant, set()).add(layer)

    def _quiet(self) -> None:
        """The store's quiet timer, once writing paused: wake the thread (started the first
        time) for what is pending."""
        with self._cond:
            if self._closed or not self._pending:
                return
            self._due = True
            if self._thread is None:
                thread = threading.Thread(target=self._loop, name="athena-catch-up", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread to be had (a limit, or shutting down)
                    log.warning("no catch-up thread: recalls catch up themselves")
                    self._pending.clear()
                    return
                self._thread = thread
            self._cond.notify_all()

    def _loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                self._busy = False
                cond.notify_all()  # settle() waits for this
                while not (self._due and self._pending) and not self._closed:
                    cond.wait()
                if self._closed:
                    return
                pending, self._pending, self._due = self._pending, {}, False
                self._busy = True
            for tenant, layers in pending.items():
                if self._closed:  # close() waits for this thread: leave the rest
                    break
                try:
                    self.follow(tenant, layers)
                except Exception:  # the next recall syncs these itself, and reports it
                    log.debug("catching up %s after a write failed", tenant, exc_info=True)

    def follow(self, tenant: str, layers: set[str]) -> None:
        """Catch ``tenant``'s loaded indexes of ``layers``, and any layer's own state of
        the tenant, up to its current generations (what the thread does, per tenant written,
        once writing pauses).

        >>> # mem.catch_up.follow("agent-1", {"episodic"})  # on the caller's thread
        """
        generations = self._tracker.get(tenant)
        ctx = self._pipeline.ctx
        for layer in layers:
            generation = generations.get(layer, 0)
            ctx.indexes.follow(tenant, layer, generation, MOST)
            ctx.lexicon.follow(tenant, layer, generation, MOST)
        for memory_layer in self._pipeline.layers.values():
            if isinstance(memory_layer, FollowsWrites):
                memory_layer.follow(ctx, tenant, generations)
        self.followed += 1

    def settle(self, timeout: float) -> bool:
        """Wait until the thread has taken up every commit so far (or ``timeout`` seconds
        pass); True if it has (what it left to the next recall included). For tests and
        benchmarks: a recall never needs to wait for it.

        >>> # mem.remember("...", tenant="t"); mem.catch_up.settle(5.0)
        """
        with self._cond:
            self._cond.wait_for(lambda: self._closed or not (self._pending or self._busy), timeout)
            return not (self._pending or self._busy)

    def close(self) -> None:
        """Stop taking commits and let the scope being caught up finish (the others are
        left). Idempotent; :meth:`Memory.close <athena.memory.Memory.close>` calls it first.

        >>> # mem.catch_up.close()  # this Memory's recalls now catch up themselves
        """
        with self._cond:
            self._closed = True
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None:
            thread.join()
