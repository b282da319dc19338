"""What the benchmark runs against: three stores built from LoCoMo, and the query streams.

Stores (each built once per embedder and cached under ``<out>/stores``, keyed by a digest
of the data file, the target size and the model's full name, so reruns skip the build):

* ``locomo``: LoCoMo as is, one tenant per conversation;
* ``100k-tenants``: LoCoMo imported again and again under ``copyNN/`` tenant prefixes until
  the store holds at least ``target`` memories;
* ``100k-one-tenant``: the same copies rewritten into the single tenant ``one`` with keys
  made distinct per copy, so one tenant's indexes hold them all.

Queries are the LoCoMo questions, each asked in its own conversation's tenant (in
``100k-tenants`` in one of that conversation's copies, drawn once per question; in
``100k-one-tenant`` in ``one``). The mixed workloads draw a Zipf stream (s≈1.1) over the
questions, long enough that about half of its recalls repeat an earlier one; the write
variant turns about a tenth of the operations into ``remember`` calls into the tenant the
next recall asks, so cache invalidation shows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from athena.embedding import Embedder, load_embedder
from athena.locomo.data import Conversation, load_locomo
from athena.locomo.importer import conversation_memories, import_locomo
from athena.memory import Memory
from athena.retrieval.lexical_index import LARGE as LEXICAL_LARGE
from athena.retrieval.snapshots import SUFFIX as SNAPSHOT_SUFFIX
from athena.retrieval.vector import DEFAULT_HNSW_CUTOFF
from athena.store.connection import file_uri
from athena.store.sql_reads import large_scopes

STORES: Final = ("locomo", "100k-tenants", "100k-one-tenant")
MIN_STREAM: Final = 100
DEFAULT_TARGET: Final = 100_000
ZIPF_S: Final = 1.1
REPEAT_SHARE: Final = 0.5
WRITE_SHARE: Final = 0.1
ONE_TENANT: Final = "one"
SNAPSHOTS: Final = 3  # what prepare_indexes saves: 1 vector graphs, 2 also lexical indexes,
# 3 both in the snapshot format 2 (see athena.retrieval.snapshots)

Advance = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Ask:
    """One recall: a question asked in a tenant."""

    tenant: str
    text: str


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a stream: a recall, or a write of ``text`` into ``layer``."""

    kind: Literal["recall", "write"]
    ask: Ask
    layer: str = "episodic"


@dataclass(frozen=True, slots=True)
class Store:
    """A built store: its pristine file (never written by a benchmark) and its questions."""

    name: str
    embedder: str
    path: Path
    memories: int
    tenants: int
    asks: tuple[Ask, ...]
    build_s: float
    graphs_s: float = 0.0  # building its large indexes' snapshots (not part of build_s)


def copies_for(memories_per_copy: int, target: int) -> int:
    """How many copies of LoCoMo reach ``target`` memories.

    >>> copies_for(9373, 100_000)
    11
    """
    return max(1, math.ceil(target / max(memories_per_copy, 1)))


def digest(path: Path, target: int, model: str = "") -> str:
    """A short digest of the data file, the size and the model's full name (its vectors,
    say ``transformer:all-MiniLM-L6-v2-int8``): the cache key of a built store."""
    h = hashlib.sha1(path.read_bytes(), usedforsecurity=False)
    h.update(f"target={target}".encode())
    if model:
        h.update(f"model={model}".encode())
    return h.hexdigest()[:10]


def asks_for(name: str, conversations: Sequence[Conversation], copies: int) -> tuple[Ask, ...]:
    """Every question of ``conversations`` as asked in store ``name`` (deterministic)."""
    rng = random.Random(f"asks/{name}")
    out: list[Ask] = []
    for conv in conversations:
        for q in conv.questions:
            if name == "locomo":
                tenant = conv.sample_id
            elif name == "100k-tenants":
                tenant = f"copy{rng.randrange(copies):02d}/{conv.sample_id}"
            else:
                tenant = ONE_TENANT
            out.append(Ask(tenant, q.question))
    return tuple(out)


def build_store(
    name: str,
    embedder: str,
    data: Path,
    out_dir: Path,
    *,
    target: int = DEFAULT_TARGET,
    model: Embedder | None = None,
    advance: Advance | None = None,
) -> Store:
    """The store ``name`` for ``embedder``, built under ``out_dir/stores`` unless cached.

    ``model`` lets builds share one (caching) embedder, so the texts every copy repeats are
    embedded once. ``advance(1)`` is called per copy written.
    """
    if name not in STORES:
        raise ValueError(f"unknown store {name!r}; stores are {', '.join(STORES)}")
    conversations = load_locomo(data)
    per_copy = [conversation_memories(c) for c in conversations]
    copies = 1 if name == "locomo" else copies_for(sum(map(len, per_copy)), target)
    folder = out_dir / "stores"
    folder.mkdir(parents=True, exist_ok=True)
    space = (model if model is not None else load_embedder(embedder)).name
    path = folder / f"{name}-{embedder}-{digest(data, target if copies > 1 else 0, space)}.db"
    meta = path.with_suffix(".json")
    asks = asks_for(name, conversations, copies)
    if path.exists() and meta.exists():
        saved: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        if saved.get("snapshots") != SNAPSHOTS:  # built before these snapshots: make them now
            saved["graphs_s"] = prepare_indexes(path, model if model is not None else embedder)
            saved["snapshots"] = SNAPSHOTS
            meta.write_text(json.dumps(saved), encoding="utf-8")
        counts = saved["memories"], saved["tenants"]
        return Store(name, embedder, path, *counts, asks, saved["build_s"], saved["graphs_s"])
    partial = path.with_name(path.name + ".building")
    for stale in folder.glob(partial.name + "*"):
        stale.unlink()
    start = time.perf_counter()
    # Not `model or embedder`: an empty CachingEmbedder has len() 0, so it is falsy.
    memory = Memory(partial, embedder=model if model is not None else embedder, pool="off")
    try:
        total = 0
        for copy in range(copies):
            if name == "locomo":
                total += import_locomo(memory, data).memories
            elif name == "100k-tenants":
                total += import_locomo(memory, data, tenant_prefix=f"copy{copy:02d}/").memories
            else:
                for items in per_copy:
                    rows = [
                        replace(i, tenant=ONE_TENANT, key=f"{copy:02d}/{i.tenant}/{i.key}")
                        for i in items
                    ]
                    total += len(memory.remember_many(rows))
            if advance:
                advance(1)
        tenants = len(memory.tenants())
    finally:
        memory.close()
    _settle(partial)
    build_s = time.perf_counter() - start
    partial.rename(path)
    graphs_s = prepare_indexes(path, model if model is not None else embedder)
    built = {"memories": total, "tenants": tenants, "build_s": round(build_s, 2)}
    built.update(graphs_s=graphs_s, snapshots=SNAPSHOTS)
    meta.write_text(json.dumps(built), encoding="utf-8")
    return Store(name, embedder, path, total, tenants, asks, build_s, graphs_s)


def prepare_indexes(path: Path, embedder: str | Embedder) -> float:
    """Build the store's large indexes and save their snapshots (``<path>.indexes/``), as
    ``athena import`` does after a bulk import; returns the seconds it took."""
    start = time.perf_counter()
    conn = sqlite3.connect(file_uri(path) + "?mode=ro", uri=True)
    try:
        large = large_scopes(conn, min(DEFAULT_HNSW_CUTOFF, LEXICAL_LARGE) + 1)
    finally:
        conn.close()
    if large:  # else there is nothing to build, and no embedder to load
        memory = Memory(path, embedder=embedder, execution="sequential")  # learns nothing
        try:
            memory.prepare_indexes()
        finally:
            memory.close()
        _settle(path)
    return round(time.perf_counter() - start, 2)


def _settle(path: Path) -> None:
    """Fold the WAL into the main file and leave rollback-journal mode: one file is the store.

    A WAL file left beside it may hold the last commits; renaming the main file away from
    it would lose them.
    """
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            raise RuntimeError(f"{path}{suffix} is still there after a checkpoint")


def working_copy(store: Store, work_dir: Path) -> Path:
    """A fresh copy of the pristine store (SQLite's backup API), for one benchmark run.

    Benchmarks write into their copy (the write workload, telemetry, learned state), so
    every run starts from the same bytes and nothing learned leaks between runs.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / f"{store.name}-{store.embedder}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    source = sqlite3.connect(file_uri(store.path) + "?mode=ro", uri=True)
    try:
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)
            dest.execute("PRAGMA journal_mode = WAL")
        finally:
            dest.close()
    finally:
        source.close()
    _link_snapshots(Path(f"{store.path}.indexes"), Path(f"{target}.indexes"))
    return target


def _link_snapshots(source: Path, target: Path) -> None:
    """The pristine store's index snapshots, for its copy (same identity, same data).

    Hard links where the file system allows: a save replaces a file, never writes into one,
    so the copy's saves leave the pristine ones alone.
    """
    shutil.rmtree(target, ignore_errors=True)
    if not source.is_dir():
        return
    target.mkdir(parents=True)
    for snapshot in source.glob(f"*{SNAPSHOT_SUFFIX}"):
        try:
            os.link(snapshot, target / snapshot.name)
        except OSError:
            shutil.copy2(snapshot, target / snapshot.name)


def zipf_stream(
    n: int,
    rng: random.Random,
    *,
    s: float = ZIPF_S,
    repeat_share: float = REPEAT_SHARE,
    limit: int | None = None,
) -> list[int]:
    """Indices into ``n`` questions, Zipf(s) over a random popularity order.

    The stream stops at the first length of at least ``MIN_STREAM`` items (fewer for a pool
    under 50 questions) where at least ``repeat_share`` of its items repeat an earlier one,
    or at ``limit``.

    >>> stream = zipf_stream(200, random.Random(1))
    >>> repeats = len(stream) - len(set(stream))
    >>> abs(repeats / len(stream) - 0.5) < 0.05
    True
    """
    if n < 1:
        raise ValueError("need at least one question")
    order = list(range(n))
    rng.shuffle(order)
    weights = [1.0 / (rank + 1) ** s for rank in range(n)]
    cumulative: list[float] = []
    acc = 0.0
    for w in weights:
        acc += w
        cumulative.append(acc)
    stream: list[int] = []
    seen: set[int] = set()
    repeats = 0
    cap = limit if limit is not None else 50 * n
    while len(stream) < cap:
        rank = _bisect(cumulative, rng.random() * acc)
        item = order[rank]
        repeats += item in seen
        seen.add(item)
        stream.append(item)
        # Not before MIN_STREAM items (a lucky run of early repeats once ended a stream at
        # 10), nor past twice the pool before looking: a small pool repeats early anyway.
        shortest = min(MIN_STREAM, 2 * n, cap)
        if len(stream) >= shortest and repeats >= repeat_share * len(stream):
            break
    return stream


def _bisect(cumulative: list[float], x: float) -> int:
    lo, hi = 0, len(cumulative) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cumulative[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def recall_ops(asks: Sequence[Ask], indices: Sequence[int]) -> list[Op]:
    return [Op("recall", asks[i]) for i in indices]


def with_writes(ops: Sequence[Op], rng: random.Random, share: float = WRITE_SHARE) -> list[Op]:
    """``ops`` with writes inserted so they are about ``share`` of all operations.

    Each write goes into the tenant of the recall that follows it, into the episodic or the
    semantic layer, so that recall (and every cached answer of that tenant) is invalidated.

    >>> ops = recall_ops([Ask("t", "q")], [0] * 90)
    >>> mixed = with_writes(ops, random.Random(0))
    >>> sum(op.kind == "write" for op in mixed) / len(mixed)
    0.1
    """
    recalls = [op for op in ops if op.kind == "recall"]
    writes = round(share * len(recalls) / (1.0 - share))
    before = set(rng.sample(range(len(recalls)), min(writes, len(recalls))))
    out: list[Op] = []
    for index, op in enumerate(recalls):
        if index in before:
            layer = rng.choice(("episodic", "semantic"))
            note = f"Benchmark note {index}: {op.ask.text} (written at op {len(out)})"
            out.append(Op("write", Ask(op.ask.tenant, note), layer))
        out.append(op)
    return out


def distinct(asks: Sequence[Ask], count: int, rng: random.Random) -> list[Ask]:
    """``count`` distinct asks (all of them, shuffled, when there are fewer)."""
    picked = list(asks)
    rng.shuffle(picked)
    return picked[:count]
