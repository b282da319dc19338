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
index's lock, for a catch-up under way. A failure here is left for that recall to meet and
report.

Writes by other processes (the other server processes of ``athena serve http --workers N``,
an import) reach no listener of this one. After :meth:`CatchUp.watch` (the servers call
it) the thread also looks, every :data:`WATCH_S`, at the file's WAL-index header (a read
of mapped memory, no system call); once it has moved and then stayed still for
:data:`~athena.store.turns.QUIET_S`, the thread reads the scopes changed since from the
store's change feed and catches those up too. Without it, those writes are caught up by
the recall, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from athena.errors import InvalidInput
from athena.execution.pipeline import Pipeline
from athena.generations import GenerationTracker
from athena.layers.protocol import FollowsWrites, LayerContext
from athena.store.sqlite import SQLiteStore
from athena.store.turns import QUIET_S

log = logging.getLogger(__name__)

# A scope further behind than this (a bulk import), or one whose catch-up would build an
# index, is left to its next recall, as before: close() waits for one scope's catch-up at
# most (with, now and then, the snapshot of a graph that took in 5,000 vectors since its
# last, as a recall would save it).
MOST: Final = 512
WATCH_S: Final = 0.02  # how often a watching thread looks for other processes' commits
SCAN: Final = 4096  # change-feed rows read per look: a bulk import is read over several


class OtherWriters:
    """The scopes other connections to the file wrote, once their writing paused.

    :meth:`scopes` is polled: it returns nothing while the file's WAL-index header (or, where
    it cannot be mapped, ``PRAGMA data_version``) is unchanged, or changed less than
    :data:`QUIET_S` ago; then the (tenant, layer) scopes of the change feed's rows after the
    last it read (this process's own writes among them: catching up a current index is one
    comparison).

    >>> import tempfile, os
    >>> from athena.memory import Memory
    >>> path = os.path.join(tempfile.mkdtemp(), "o.db")
    >>> mine, theirs = Memory(path), Memory(path)
    >>> others = OtherWriters(mine.store)
    >>> _ = theirs.remember("Ann likes tea.", tenant="t", layer="semantic")
    >>> others.scopes(0.0), others.scopes(1.0)  # moved, then still for 10 ms
    ({}, {'t': {'semantic'}})
    >>> theirs.close(); mine.close()
    """

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._token = self._look()
        self._seq = store.change_seq_high()
        self._moved_at: float | None = None

    def _look(self) -> object:
        header = self._store.wal_header()
        return header if header is not None else self._store.data_version()

    def look(self, now: float) -> dict[str, set[str]]:
        """:meth:`scopes`, or nothing when the store cannot be read (the recall reads what
        this could not, and reports it)."""
        try:
            return self.scopes(now)
        except Exception:
            log.debug("looking for other processes' writes failed", exc_info=True)
            return {}

    def scopes(self, now: float) -> dict[str, set[str]]:
        """Scopes written since the last call that found any, by tenant, once the file has
        been still for :data:`QUIET_S` (``now``: ``time.monotonic()``)."""
        token = self._look()
        if token != self._token:
            self._token, self._moved_at = token, now
            return {}
        if self._moved_at is None or now - self._moved_at < QUIET_S:
            return {}
        rows = self._store.scopes_changed_after(self._seq, SCAN)
        # A full read leaves more: the next look reads on, without waiting again.
        self._moved_at = now - QUIET_S if len(rows) == SCAN else None
        found: dict[str, set[str]] = {}
        for seq, tenant, layer in rows:
            self._seq = seq
            found.setdefault(tenant, set()).add(layer)
        return found


class CatchUp:
    """A thread that, whenever writing to ``store`` pauses, catches up the loaded indexes
    of the scopes this process wrote (started at the first pause, stopped by :meth:`close`),
    and after :meth:`watch` those other processes wrote too.

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
        self._store = store
        self._others: OtherWriters | None = None
        self._every = WATCH_S
        self.followed = 0  # commits' scopes taken up so far, by tenant
        self.watched = 0  # tenants found written by watching the file (others', and ours)
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
            if self._started():
                self._cond.notify_all()

    def watch(self, every: float = WATCH_S) -> None:
        """Also catch up what other connections to the file write (other processes), looking
        for their commits every ``every`` seconds (see the module docstring). Servers call
        it. A second call changes nothing (its ``every`` included); on a file nobody can
        write to (opened ``immutable``, on read-only media) it does nothing. :meth:`settle`
        does not wait for writes the thread has not found yet: watch :attr:`watched`.

        >>> # memory.catch_up.watch()  # a server process among others on one file
        """
        if not 0 < every <= threading.TIMEOUT_MAX:
            raise InvalidInput("every must be a positive number of seconds")
        if self._store.immutable:
            return
        others = OtherWriters(self._store)
        with self._cond:
            if self._closed or self._others is not None:
                return
            self._others, self._every = others, every
            if self._started():
                self._cond.notify_all()

    def _started(self) -> bool:
        """Start the thread unless it runs (lock held); False if no thread can be had."""
        if self._thread is None:
            self._thread = start_daemon(self._loop, "athena-catch-up")
            if self._thread is None:  # recalls catch up themselves
                self._pending.clear()
                self._others = None
        return self._thread is not None

    def _loop(self) -> None:
        while True:
            pending = self._next()
            if pending is None:
                return
            for tenant, layers in pending.items():
                if self._closed:  # close() waits for this thread: leave the rest
                    break
                try:
                    follow(self._pipeline, self._tracker, tenant, layers)
                    self.followed += 1
                except Exception:  # the next recall syncs these itself, and reports it
                    log.debug("catching up %s after a write failed", tenant, exc_info=True)

    def _next(self) -> dict[str, set[str]] | None:
        """The next scopes to take up, waiting for a pause in this process's writing or,
        when watching, for other writers' scopes; None once closed."""
        cond = self._cond
        while True:
            with cond:
                self._busy = False
                cond.notify_all()  # settle() waits for this
                while not (self._due and self._pending) and not self._closed:
                    if self._others is not None:
                        cond.wait(self._every)
                        break
                    cond.wait()
                if self._closed:
                    return None
                if self._due and self._pending:
                    pending, self._pending, self._due = self._pending, {}, False
                    self._busy = True
                    return pending
                others = self._others
            # Outside the lock: a write's listener must not wait for this read.
            found = {} if others is None else others.look(time.monotonic())
            if found:
                with cond:
                    for tenant, layers in found.items():
                        self._pending.setdefault(tenant, set()).update(layers)
                    self._due = True
                    self.watched += len(found)

    def settle(self, timeout: float) -> bool:
        """Wait until the thread has taken up every commit of this process so far (or
        ``timeout`` seconds pass); True if it has (what it left to the next recall
        included). Other processes' commits count once the watching thread has found them
        (:attr:`watched`). For tests and benchmarks: a recall never needs to wait for it.

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


def follow(pipeline: Pipeline, tracker: GenerationTracker, tenant: str, layers: set[str]) -> None:
    """Catch what ``pipeline`` holds of ``tenant`` up to its current generations: its loaded
    indexes of ``layers``, and the state of every layer that follows writes. A tenant this
    process holds nothing of is left at once, before its generations are read (the watching
    thread finds every tenant other processes write).

    >>> # follow(mem.pipeline, mem.generations, "agent-1", {"episodic"})
    """
    ctx = pipeline.ctx
    followers = [
        layer
        for layer in pipeline.layers.values()
        if isinstance(layer, FollowsWrites) and _holds(layer, ctx, tenant)
    ]
    indexed = ctx.residency.holds(tenant)
    if not (indexed or followers):
        return
    generations = tracker.get(tenant)
    if indexed:
        for layer in layers:
            generation = generations.get(layer, 0)
            ctx.indexes.follow(tenant, layer, generation, MOST)
            ctx.lexicon.follow(tenant, layer, generation, MOST)
    for follower in followers:
        follower.follow(ctx, tenant, generations)


def _holds(layer: FollowsWrites, ctx: LayerContext, tenant: str) -> bool:
    """Whether ``layer`` keeps state of ``tenant``: its ``holds(ctx, tenant)`` if it has one
    (the graph layer), else True (a layer that only follows is always asked to)."""
    holds = getattr(layer, "holds", None)
    return True if holds is None else bool(holds(ctx, tenant))


def start_daemon(target: Callable[[], None], name: str) -> threading.Thread | None:
    """A started daemon thread running ``target``, or None when no thread can be had (a
    limit, or the interpreter shutting down).

    >>> start_daemon(lambda: None, "noop").join()
    """
    thread = threading.Thread(target=target, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:
        log.warning("no %s thread: recalls catch up themselves", name)
        return None
    return thread
