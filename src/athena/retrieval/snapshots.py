"""Index snapshots: built indexes kept in files beside the database.

Building the HNSW graph of a large scope is the slowest thing Athena does (75k vectors:
about 30 s of CPU on the 2-core benchmark machine; reading the same graph back: 0.5 s), and
its BM25 index takes most of a second more; a tenant's 750-document BM25 index takes 8 ms
to build and 1 to load. Every index that searches a scope would build it again: each pool
worker at start and on every restart, a restarted server on its first recall, a process
whose index budget dropped the tenant. A snapshot is written once an index is built (a
graph; a BM25 index from 256 documents), and the next index of the scope loads it and
catches up from the store like any index does (vectors with a newer ``seq``, changes and
tombstones with a newer change seq), so a snapshot older than the data is still exact
after its first sync.

A snapshot names the database it was made from (the store's random identity) and its
scope; one from another database, one claiming vectors the database never had (a backup
restored over the file), or an unreadable one is ignored, and the index is built. Files
appear atomically (written aside, then renamed), and a cross-process lock lets one
process build a scope while the others wait and then load its result.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: builds are not coordinated across processes
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT: Final = 2  # 1: NumPy's .npz (a zip archive: 0.44 ms to open a small one, this 0.08)
SUFFIX: Final = ".snapshot"
TEMPORARY: Final = ".tmp"  # a save's file until it is renamed into place
LEGACY: Final = (".npz",)  # what older formats were saved as (deleted when seen)
STALE_S: Final = 3600.0  # a temporary file this old is a dead save's
RETRY_S: Final = 60.0  # saves skipped after one failed for a reason that may pass
FOR_GOOD: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST})
KINDS: Final = "iubf"  # the dtype kinds a snapshot holds: integers, booleans, floats
MAGIC: Final = b"ATHENAIX"
ALIGN: Final = 64  # each array (and the body) starts this aligned in the file
_WORDS: Final = struct.Struct("<II")  # the header's length and CRC-32
_START: Final = len(MAGIC) + _WORDS.size
LOCK_WAIT_S: Final = 600.0  # longer than any build: past it a process builds on its own
LOCK_POLL_S: Final = 0.05

Arrays = Mapping[str, npt.NDArray[Any]]


class IndexSnapshots:
    """Snapshots of one database's large indexes, in one directory.

    An index hands over its state as named arrays; ``kind`` ("vector", "lexical") picks the
    sequence a snapshot's ``last_seq`` is checked against (``highs[kind]()``: the highest
    seq the database ever assigned in the feed that index catches up from).

    >>> import tempfile
    >>> snaps = IndexSnapshots(Path(tempfile.mkdtemp()) / "a.db.indexes", "ab12", {})
    >>> snaps.load("vector", "tenant", "episodic", "static") is None
    True
    """

    def __init__(
        self, directory: Path, identity: str, highs: Mapping[str, Callable[[], int]]
    ) -> None:
        self.directory, self.identity = directory, identity
        self._highs = highs
        self._writable = True
        self._retry_at = 0.0  # no save before this (time.monotonic) after a failed one
        self._swept = False
        self._lock = threading.Lock()
        self.loaded = self.saved = 0  # snapshots indexes started from; snapshots written

    def path(self, kind: str, tenant: str, layer: str, model: str) -> Path:
        """The file of one scope's snapshot (a hash: tenant names may hold any character)."""
        digest = hashlib.sha256(json.dumps([self.identity, kind, tenant, layer, model]).encode())
        return self.directory / f"{digest.hexdigest()[:32]}{SUFFIX}"

    def _meta(self, kind: str, tenant: str, layer: str, model: str) -> str:
        from athena import __version__  # here: the package imports this module

        scope = [kind, tenant, layer, model]
        return json.dumps(
            {"format": FORMAT, "athena": __version__, "store": self.identity, "scope": scope}
        )

    def load(self, kind: str, tenant: str, layer: str, model: str) -> dict[str, Any] | None:
        """The scope's arrays (with ``last_seq``), or None when there is no snapshot or it
        cannot be trusted."""
        path = self.path(kind, tenant, layer, model)
        try:
            meta, read = read_arrays(path)
            if meta.get("scope") != self._meta(kind, tenant, layer, model):
                raise ValueError("it was made for another database, scope or version")
            arrays: dict[str, Any] = {**read, "last_seq": int(meta["last_seq"])}
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn, foreign or damaged file is a cache miss
            log.warning("ignoring the index snapshot %s: %s", path, exc)
            return None
        high = self._highs.get(kind)
        if high is not None and arrays["last_seq"] > high():
            log.warning("ignoring the index snapshot %s: newer than the database", path)
            return None
        return arrays

    def save(
        self, kind: str, tenant: str, layer: str, model: str, arrays: Arrays, last_seq: int
    ) -> bool:
        """Write the scope's snapshot atomically; False (logged) if it cannot be, never an
        error: a directory this process may not write turns snapshots off, any other
        failure (a full disk, say) skips saves for :data:`RETRY_S`."""
        if not self._writable or time.monotonic() < self._retry_at:
            return False
        path = self.path(kind, tenant, layer, model)
        aside = path.with_name(f"{path.stem}.{os.getpid()}.{os.urandom(4).hex()}{TEMPORARY}")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._sweep()
            meta = {"scope": self._meta(kind, tenant, layer, model), "last_seq": last_seq}
            write_arrays(aside, meta, arrays)
            os.replace(aside, path)
        except Exception as exc:
            self._failed(exc)
            with contextlib.suppress(OSError):
                aside.unlink()
            return False
        with self._lock:
            self.saved += 1
        return True

    def _failed(self, exc: Exception) -> None:
        """A forbidden directory turns saves off; anything else pauses them for RETRY_S."""
        with self._lock:
            if not self._writable:
                return
            if isinstance(exc, OSError) and exc.errno in FOR_GOOD:
                log.warning("index snapshots are off for %s: %s", self.directory, exc)
                self._writable = False
            else:
                log.warning("an index snapshot was not saved in %s: %s", self.directory, exc)
                self._retry_at = time.monotonic() + RETRY_S

    def discard(self, kind: str, tenant: str, layer: str, model: str) -> None:
        """Delete the scope's snapshot, if there is one (an index too small to keep one)."""
        with contextlib.suppress(OSError):
            self.path(kind, tenant, layer, model).unlink()

    def note_loaded(self) -> None:
        """Count one index started from a snapshot (from any thread)."""
        with self._lock:
            self.loaded += 1

    def _sweep(self) -> None:
        """Once per process and directory: delete the snapshots of an older format and the
        temporary files of saves that died (older than :data:`STALE_S`)."""
        if self._swept:
            return
        self._swept = True
        stale = time.time() - STALE_S
        for leftover in self.directory.iterdir():
            with contextlib.suppress(OSError):
                if leftover.suffix in LEGACY or (
                    leftover.name.endswith(TEMPORARY) and leftover.stat().st_mtime < stale
                ):
                    leftover.unlink()

    @contextlib.contextmanager
    def building(self, kind: str, tenant: str, layer: str, model: str) -> Iterator[None]:
        """Hold the scope's build lock across processes (best effort: without a writable
        directory or ``fcntl``, or after :data:`LOCK_WAIT_S`, it yields unlocked)."""
        handle = None
        if fcntl is not None and self._writable:
            lock = self.path(kind, tenant, layer, model).with_suffix(".lock")
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                handle = open(lock, "a+b")  # noqa: SIM115
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


def write_arrays(path: Path, meta: Mapping[str, Any], arrays: Arrays) -> None:
    """Write ``arrays`` and ``meta`` (JSON) into one file: :data:`MAGIC`, the header's
    length and CRC-32 (4 bytes each), the header (``meta``, each array's dtype, shape and
    place, the body's size and CRC-32), then the body: the arrays' bytes, each aligned to
    :data:`ALIGN`. Any byte changed or cut off fails :func:`read_arrays`.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.snapshot"
    >>> write_arrays(path, {"n": 1}, {"a": np.arange(3, dtype=np.int64)})
    >>> meta, arrays = read_arrays(path)
    >>> meta["n"], arrays["a"].tolist()
    (1, [0, 1, 2])
    """
    places: list[list[Any]] = []
    views: list[bytes | memoryview] = []
    crc = at = 0
    for name, given in arrays.items():
        array = np.asarray(given, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
        if array.dtype.kind not in KINDS or array.dtype.fields is not None:
            raise TypeError(f"array {name!r} is of dtype {array.dtype}, not a plain number")
        view = memoryview(array.reshape(-1)).cast("B")  # type: ignore[arg-type]
        pad = bytes(-at % ALIGN)
        crc = zlib.crc32(view, zlib.crc32(pad, crc))
        places.append([name, array.dtype.str, list(array.shape), at + len(pad), view.nbytes])
        views += [pad, view]
        at += len(pad) + view.nbytes
    header = json.dumps({"meta": meta, "arrays": places, "size": at, "crc32": crc}).encode()
    header += b" " * (-(_START + len(header)) % ALIGN)
    with open(path, "wb") as out:
        out.write(MAGIC + _WORDS.pack(len(header), zlib.crc32(header)) + header)
        for part in views:
            out.write(part)


def read_arrays(path: Path) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
    """The ``meta`` and arrays :func:`write_arrays` wrote (writable arrays over one buffer);
    raises ``ValueError`` for a file that is not one, torn or damaged."""
    with open(path, "rb") as source:
        data = bytearray(os.fstat(source.fileno()).st_size)
        if source.readinto(data) != len(data):
            raise ValueError("it changed while it was read")
    if len(data) < _START or data[: len(MAGIC)] != MAGIC:
        raise ValueError("it is not an index snapshot")
    size, crc = _WORDS.unpack_from(data, len(MAGIC))
    body = _START + size
    if body > len(data) or zlib.crc32(memoryview(data)[_START:body]) != crc:
        raise ValueError("its header is torn or damaged")
    header = json.loads(bytes(data[_START:body]))
    view = memoryview(data)[body:]
    if len(view) != header["size"] or zlib.crc32(view) != header["crc32"]:
        raise ValueError("it is torn or damaged")
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, dtype, shape, offset, nbytes in header["arrays"]:
        kind = np.dtype(dtype)
        if kind.kind not in KINDS or kind.fields is not None:
            raise ValueError(f"its array {name!r} is of dtype {kind}")
        if not all(type(n) is int and n >= 0 for n in (*shape, offset, nbytes)):
            raise ValueError(f"its array {name!r} has a negative or odd shape or place")
        count = math.prod(shape)
        fits = count * kind.itemsize == nbytes and offset + nbytes <= len(view)
        if not fits or offset % ALIGN:
            raise ValueError(f"its array {name!r} does not fit")
        arrays[name] = np.frombuffer(data, kind, count, body + offset).reshape(shape)
    return header["meta"], arrays


def for_store(store: SnapshotSource) -> IndexSnapshots | None:
    """The snapshots of ``store``'s database (``<path>.indexes/``), None without an identity.

    >>> import tempfile
    >>> from athena.store.sqlite import SQLiteStore
    >>> store = SQLiteStore(Path(tempfile.mkdtemp()) / "a.db")
    >>> for_store(store).directory.name
    'a.db.indexes'
    >>> store.close()
    """
    identity = store.identity()
    if identity is None:
        return None
    path = store.path
    highs = {"vector": store.vector_seq_high, "lexical": store.change_seq_high}
    return IndexSnapshots(path.with_name(path.name + ".indexes"), identity, highs)


class SnapshotSource(Protocol):
    """What :func:`for_store` reads of a store."""

    @property
    def path(self) -> Path: ...

    def identity(self) -> str | None: ...

    def vector_seq_high(self) -> int: ...

    def change_seq_high(self) -> int: ...
