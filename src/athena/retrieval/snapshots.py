"""Vector index snapshots: a built HNSW graph kept in a file beside the database.

Building the graph of a large scope is the slowest thing Athena does (75k vectors: about
30 s of CPU on the 2-core benchmark machine; reading the same graph back: 0.2 s). Every
process that searches the scope would build it again: each pool worker at start and on
every restart, a restarted server on its first recall. A snapshot is written once the
graph is built, and the next process loads it and catches up from the store like any
index does (vectors with a newer ``seq``, tombstones with a newer change seq), so a
snapshot that is older than the data is still exact after its first sync.

A snapshot names the database it was made from (the store's random identity) and its
scope; one from another database, one claiming vectors the database never had (a backup
restored over the file), or an unreadable one is ignored, and the index is built. Files
appear atomically (written aside, then renamed), and a cross-process lock lets one
process build a scope while the others wait and then load its result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: builds are not coordinated across processes
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT: Final = 1
LOCK_WAIT_S: Final = 600.0  # longer than any build: past it a process builds on its own
LOCK_POLL_S: Final = 0.05

Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One index's state: the serialised graph and which memory each position holds."""

    graph: npt.NDArray[np.uint8]
    ids: Ints  # memory id at each position of the graph
    seqs: Ints  # the vector seq at each position
    live_ids: Ints  # memories whose newest vector is in the graph (deleted ones are not)
    live_seqs: Ints
    last_seq: int
    dead: int
    last_change: int


class IndexSnapshots:
    """Snapshots of one database's large indexes, in one directory.

    >>> import tempfile
    >>> snaps = IndexSnapshots(Path(tempfile.mkdtemp()) / "a.db.indexes", "ab12", lambda: 0)
    >>> snaps.load("tenant", "episodic", "static") is None
    True
    """

    def __init__(self, directory: Path, identity: str, seq_high: Callable[[], int]) -> None:
        self.directory, self.identity = directory, identity
        self._seq_high = seq_high
        self._writable = True
        self._lock = threading.Lock()
        self.loaded = self.saved = 0

    def path(self, tenant: str, layer: str, model: str) -> Path:
        """The file of one scope's snapshot (a hash: tenant names may hold any character)."""
        digest = hashlib.sha256(json.dumps([self.identity, tenant, layer, model]).encode())
        return self.directory / f"{digest.hexdigest()[:32]}.npz"

    def _meta(self, tenant: str, layer: str, model: str) -> str:
        return json.dumps(
            {"format": FORMAT, "store": self.identity, "scope": [tenant, layer, model]}
        )

    def load(self, tenant: str, layer: str, model: str) -> Snapshot | None:
        """The scope's snapshot, or None when there is none or it cannot be trusted."""
        path = self.path(tenant, layer, model)
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["meta"]) != self._meta(tenant, layer, model):
                    raise ValueError("it was made for another database or scope")
                snap = Snapshot(
                    data["graph"],
                    data["ids"],
                    data["seqs"],
                    data["live_ids"],
                    data["live_seqs"],
                    *(int(v) for v in data["counters"]),
                )
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn, foreign or damaged file is a cache miss
            log.warning("ignoring the index snapshot %s: %s", path, exc)
            return None
        if len(snap.ids) != len(snap.seqs) or len(snap.live_ids) != len(snap.live_seqs):
            log.warning("ignoring the index snapshot %s: its arrays disagree", path)
            return None
        if snap.last_seq > self._seq_high():
            log.warning("ignoring the index snapshot %s: newer than the database", path)
            return None
        self.loaded += 1
        return snap

    def save(self, tenant: str, layer: str, model: str, snap: Snapshot) -> bool:
        """Write the scope's snapshot atomically; False (logged once) if it cannot be."""
        if not self._writable:
            return False
        path = self.path(tenant, layer, model)
        aside = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            counters = np.array([snap.last_seq, snap.dead, snap.last_change], np.int64)
            with open(aside, "wb") as out:
                np.savez(
                    out,
                    meta=np.array(self._meta(tenant, layer, model)),
                    graph=snap.graph,
                    ids=snap.ids,
                    seqs=snap.seqs,
                    live_ids=snap.live_ids,
                    live_seqs=snap.live_seqs,
                    counters=counters,
                )
            os.replace(aside, path)
        except OSError as exc:
            with self._lock:
                if self._writable:
                    log.warning("index snapshots are off for %s: %s", self.directory, exc)
                self._writable = False
            with contextlib.suppress(OSError):
                aside.unlink()
            return False
        self.saved += 1
        return True

    @contextlib.contextmanager
    def building(self, tenant: str, layer: str, model: str) -> Iterator[None]:
        """Hold the scope's build lock across processes (best effort: without a writable
        directory or ``fcntl``, or after :data:`LOCK_WAIT_S`, it yields unlocked)."""
        handle = None
        if fcntl is not None and self._writable:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                handle = open(self.path(tenant, layer, model).with_suffix(".lock"), "a+b")  # noqa: SIM115
            except OSError:
                handle = None
        try:
            if handle is not None:
                _acquire(handle.fileno())
            yield
        finally:
            if handle is not None:
                handle.close()  # closing the file releases its lock


def _acquire(fd: int) -> bool:
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                log.warning(
                    "an index build lock was held past %.0f s; building anyway", LOCK_WAIT_S
                )
                return False
            time.sleep(LOCK_POLL_S)
        except OSError:
            return False  # a file system without locks


def for_store(
    path: Path, identity: str | None, seq_high: Callable[[], int]
) -> IndexSnapshots | None:
    """The snapshots of the database at ``path`` (``<path>.indexes/``), None without an identity.

    >>> for_store(Path("athena.db"), None, lambda: 0) is None
    True
    """
    if identity is None:
        return None
    return IndexSnapshots(path.with_name(path.name + ".indexes"), identity, seq_high)
