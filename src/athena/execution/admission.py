"""Admission: how many recalls may execute in-process at once; the rest queue, first come
first served.

Under CPython's GIL, recalls on many threads do not overlap their Python work, they fight
over it: every SQLite step and numpy call releases and retakes the GIL, and each retake
against other runnable threads costs a switch. Measured on the 2-core machine
(``benchmarks/admission.py``: cold SEQUENTIAL recalls over ``100k-tenants``, one process,
closed loop), ungated recalls ran at about 480/s from one thread but 120/s from 64, the CPU
per recall going from 2.1 ms to 12 ms; behind one slot the same 64 threads ran about 300/s
(``docs/bench/analysis.md``). So a burst, or a garbage-collection pause that lets requests pile
up, turned into a congestion collapse below the arrival rate.

The gate bounds the recalls whose layers run in this process (SEQUENTIAL and PARALLEL;
a PARALLEL recall still fans its own layers out), and the merge into hits after them. Work
that waits without the GIL holds no slot: the query embedding, the pool's DISTRIBUTED round
trip (its recall takes a slot only for the merge after it), single-flight followers, full
cache hits. Waiters sleep on their own lock (not runnable, so not contending) and are handed the
slot in arrival order, so the wait is a plain queue and the tail is bounded by it.

The gate cannot stop the threads themselves from contending: a hundred recalls on a
hundred threads all run their own Python (the request, the cache, the plan, the query
embedding) before they reach it, and each gate holder must win the GIL back from them at
every SQLite step. So the async faces (``AsyncMemory``, the HTTP server) also bound how
many recalls they hand to threads at once (:func:`default_concurrency`); the rest wait in
a queue, where waiting costs nothing. Bursts of 100 cold recalls over ``100k-tenants``
(static, SEQUENTIAL and ADAPTIVE, a hundred threads and the default four alternating in one
process, three rounds): p50 198-273 ms and p99 296-462 on a hundred, 131-173 and 269-353
on four; two to six did about as well as four. At a fixed arrival rate (open loop,
``benchmarks/recall_threads.py``, arms interleaved, medians of three) fewer did better
still: offered 600 static recalls/s, one thread did 599/s (p99 65 ms), two 550/s (p99 185)
and four 514/s (p99 331), at 1.70 ms of CPU a recall against 2.01-2.17. So under the GIL
an async face runs one recall at a time, or one per core when the embedding runs outside
the GIL (the int8 transformer, offered 420/s: two threads did 418/s, four 364, one 243).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from athena.errors import RecallTimeout

MAX_SLOTS: Final = 1024


def _gil() -> bool:
    return bool(getattr(sys, "_is_gil_enabled", lambda: True)())


def default_slots() -> int:
    """One slot under the GIL (threads only add switches); a core each without it.

    >>> default_slots() >= 1
    True
    """
    return 1 if _gil() else os.cpu_count() or 1


def default_concurrency(batch: int = 1, lanes: int = 0) -> int:
    """Recalls an async face hands to threads at once.

    Under the GIL: one, since a recall is Python nearly throughout and a second thread
    only trades the GIL with it; or ``lanes``, the model calls an embedder runs at once
    outside the GIL (the int8 transformer, a core each), so one recall runs its layers
    while the others embed; or one embedding batch (``batch``), so a coalescing embedder
    still receives full batches. Without the GIL: two per core, or ``batch``.

    >>> default_concurrency(16) >= 16
    True
    """
    if _gil():
        return max(1, lanes, batch)
    return max(2 * (os.cpu_count() or 1), batch)


class AdmissionGate:
    """A FIFO counting gate: ``slots`` holders at once, the next waiter handed each release.

    >>> gate = AdmissionGate(1)
    >>> with gate.slot(timeout=1.0) as waited:
    ...     waited >= 0.0
    True
    >>> gate.stats()["admitted"]
    1
    """

    def __init__(self, slots: int) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be an integer from 1 to {MAX_SLOTS}, not {slots!r}")
        self.slots = slots
        self._free = slots
        self._lock = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self.admitted = 0
        self.queued = 0  # admissions that had to wait
        self.timeouts = 0
        self.waited_s = 0.0
        self.max_queue = 0

    def acquire(self, timeout: float | None = None) -> float:
        """Take a slot, waiting in line up to ``timeout`` s; the seconds waited.

        RecallTimeout if the slot did not come in time (nothing is held then).
        """
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                self.admitted += 1
                return 0.0
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
            self.max_queue = max(self.max_queue, len(self._waiters))
        start = time.perf_counter()
        granted = waiter.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
        waited = time.perf_counter() - start
        with self._lock:
            if not granted:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    granted = True  # handed over just as the wait ran out: it is ours
            if not granted:
                self.timeouts += 1
                raise RecallTimeout(f"recall waited {waited:.3f}s for an execution slot")
            self.admitted += 1
            self.queued += 1
            self.waited_s += waited
        return waited

    def release(self) -> None:
        """Give the slot back: to the longest waiter if there is one."""
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            elif self._free < self.slots:
                self._free += 1
            else:
                raise RuntimeError("release of a slot that was not taken")

    @contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[float]:
        """Hold a slot for the ``with`` body; yields the seconds waited for it."""
        waited = self.acquire(timeout)
        try:
            yield waited
        finally:
            self.release()

    def stats(self) -> dict[str, float | int]:
        """Counters: slots, admitted, queued (had to wait), timeouts, waited_ms, waiting."""
        with self._lock:
            return {
                "slots": self.slots,
                "admitted": self.admitted,
                "queued": self.queued,
                "timeouts": self.timeouts,
                "waited_ms": round(self.waited_s * 1000.0, 3),
                "waiting": len(self._waiters),
                "max_queue": self.max_queue,
            }


class QueueTally:
    """What the async faces' thread queue did: recalls that waited for a thread, how long
    in all, and how many ran out of their ``timeout`` there (they never reach the engine, so
    no telemetry row or admission counter sees them).

    >>> tally = QueueTally()
    >>> tally.record(0.002, timed_out=True)
    >>> tally.stats()["timeouts"], tally.stats()["waited_ms"]
    (1, 2.0)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queued = 0
        self.timeouts = 0
        self.waited_s = 0.0

    def record(self, waited_s: float, *, timed_out: bool = False) -> None:
        """Count one recall that waited ``waited_s`` for a thread (and whether that spent
        its timeout)."""
        with self._lock:
            self.queued += 1
            self.timeouts += timed_out
            self.waited_s += waited_s

    def stats(self) -> dict[str, float | int]:
        """Counters: queued (recalls handed to a thread), timeouts, waited_ms."""
        with self._lock:
            return {
                "queued": self.queued,
                "timeouts": self.timeouts,
                "waited_ms": round(self.waited_s * 1000.0, 3),
            }
