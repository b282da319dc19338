"""Index upkeep for :class:`~athena.memory.Memory`: preparing the saved indexes of large
scopes, and giving memories written under another embedder a vector for this one."""

from __future__ import annotations

from collections.abc import Callable

from athena.embedding import Embedder
from athena.execution.pipeline import Pipeline
from athena.retrieval.lexical_index import LARGE as LEXICAL_LARGE
from athena.store.sqlite import SQLiteStore

BACKFILL_BATCH = 1024


class MemoryIndexes:
    """The index upkeep of a :class:`~athena.memory.Memory` (which is one).

    >>> import tempfile, os
    >>> from athena.memory import Memory
    >>> mem = Memory(os.path.join(tempfile.mkdtemp(), "i.db"), execution="sequential")
    >>> mem.large_scopes(), mem.prepare_indexes()  # no scope is large enough yet
    ([], 0)
    >>> mem.close()
    """

    store: SQLiteStore
    embedder: Embedder
    pipeline: Pipeline

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
            if size > LEXICAL_LARGE:
                ctx.lexicon.warm(tenant, layer, generation)
            if advance is not None:
                advance(1)
        return len(scopes)

    def large_scopes(self) -> list[tuple[str, str, int]]:
        """(tenant, layer, memories) of the scopes :meth:`prepare_indexes` would prepare."""
        cutoff = min(self.pipeline.ctx.indexes.cutoff, LEXICAL_LARGE)
        return self.store.large_scopes(cutoff + 1)

    def missing_vectors(self) -> int:
        """How many memories have no vector for this embedder (written under another one,
        or another runtime of it) until :meth:`backfill_vectors` gives them one."""
        return self.store.count_missing_vectors(self.embedder.name)

    def backfill_vectors(self, advance: Callable[[int], None] | None = None) -> int:
        """Embed every memory that has no vector for this embedder; returns how many.
        ``Memory`` does it when it opens unless told ``backfill=False``; ``advance(n)`` is
        called per batch embedded. A read-only store cannot take them: those memories are
        then found lexically only.

        >>> # mem = Memory("a.db", embedder="transformer", backfill=False)
        >>> # with bar(mem.missing_vectors()) as advance: mem.backfill_vectors(advance)
        """
        done = 0
        if self.store.readonly:
            return done
        while rows := self.store.missing_vectors(self.embedder.name, BACKFILL_BATCH):
            vectors = self.embedder.embed([row.text for row in rows])
            self.store.put_vectors(list(zip(rows, vectors, strict=True)), self.embedder.name)
            done += len(rows)
            if advance is not None:
                advance(len(rows))
        return done
