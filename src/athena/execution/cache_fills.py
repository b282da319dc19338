"""Whether the adaptive strategy keeps what a cold recall computed, judged by what keeping
has been worth.

Filling the result cache costs every cold recall some microseconds (about 15-20 µs in place
on a 1 ms LoCoMo recall with the static model: building the entry, sizing its hits, the LRU's
bookkeeping), and pays only when the same question comes back while the entry is valid. An
agent's recalls are often new questions (each step's context is new text), and then every
fill is spent for nothing. So the adaptive strategy weighs the two: every :data:`WINDOW` of
its cold recalls, the repeats it saw in that time (the cache's full and partial hits, and
while it keeps nothing, the questions asked again that it could have served) times what a
cold recall costs, against the fills' measured cost. While repeats pay, it keeps every
result (the start: nothing is measured yet); while they do not, it keeps a result only when
its question is asked the second time within the last :data:`GHOSTS` questions not kept
(a CDN's "cache on second hit"), so a question that does repeat is served from its third
ask on; and as soon as the repeats since the window began have saved what a whole window
of fills costs, it keeps everything again (one decision a window to stop, at once to
start: a stream that turns to repeats loses a few of them, not a window's).

Skipping a fill never serves anything stale: it only leaves an entry out. The fixed CACHE
and HYBRID strategies keep every result, as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

WINDOW: Final = 64  # cold recalls between two decisions
GHOSTS: Final = 4096  # questions not kept, remembered to tell a repeat (tenant, text)
SMOOTHING: Final = 1.0 / 16.0  # weight of the newest cost in the running means

Scope = tuple[str, str]  # (tenant, normalised text)


class FillPolicy:
    """Decides, cold recall by cold recall, whether the adaptive strategy fills the cache.

    ``repeats`` reads the cache's hits so far (full and partial; it may drop to zero when
    the cache is cleared).

    >>> hits = [0]
    >>> policy = FillPolicy(lambda: hits[0], window=4)
    >>> [policy.admit(("t", f"q{i}"), 1.0) for i in range(4)]  # nothing measured: keep
    [True, True, True, True]
    >>> policy.filled(0.02)
    >>> [policy.admit(("t", f"q{i}"), 1.0) for i in range(4, 12)]  # no repeat came
    [True, True, True, False, False, False, False, False]
    >>> policy.admit(("t", "q9"), 1.0)  # asked again: kept this time
    True
    """

    def __init__(
        self, repeats: Callable[[], int], *, window: int = WINDOW, ghosts: int = GHOSTS
    ) -> None:
        if window < 1 or ghosts < 0:
            raise ValueError("window must be at least 1 and ghosts not negative")
        self._repeats, self._window, self._max_ghosts = repeats, window, ghosts
        self.keeping = True
        self.fill_ms = 0.0  # a fill's cost, a running mean (0: not measured yet)
        self.miss_ms = 0.0  # a cold recall's cost before its fill, a running mean
        self.skipped = 0  # results not kept
        self.switches = 0  # times keeping turned on or off
        self._ghosts: OrderedDict[Scope, None] = OrderedDict()
        self._seen = repeats()  # the cache's hits when this window began
        self._misses = self._ghost_hits = 0  # in this window
        self._lock = threading.Lock()

    def admit(self, scope: Scope, miss_ms: float) -> bool:
        """Count one cold recall of ``scope`` that cost ``miss_ms`` so far; whether to keep
        its result (the caller then times the fill for :meth:`filled`).

        >>> FillPolicy(lambda: 0).admit(("tenant", "where is the key?"), 1.2)
        True
        """
        with self._lock:
            self.miss_ms = _mean(self.miss_ms, miss_ms)
            again = False
            if not self.keeping:
                ghosts = self._ghosts
                again = scope in ghosts  # asked before, since keeping stopped
                if again:
                    del ghosts[scope]
                    self._ghost_hits += 1
                elif self._max_ghosts:
                    ghosts[scope] = None
                    if len(ghosts) > self._max_ghosts:
                        ghosts.popitem(last=False)
            self._misses += 1
            if self._misses >= self._window or (not self.keeping and self._pays()):
                self._judge()
            keep = self.keeping or again
            self.skipped += not keep
            return keep

    def filled(self, fill_ms: float) -> None:
        """What one fill cost (ms)."""
        with self._lock:
            self.fill_ms = _mean(self.fill_ms, fill_ms)

    def _pays(self) -> bool:
        """Whether this window's repeats so far already saved what a whole window of fills
        costs: then keeping starts again at once, not at the window's end (lock held)."""
        return self._saved(self._repeats()) >= self._window * self.fill_ms

    def _saved(self, now: int) -> float:
        """What this window's repeats saved (ms), given the cache's hits ``now``."""
        hits = now - self._seen if now >= self._seen else now  # cleared meanwhile
        return (hits + self._ghost_hits) * self.miss_ms

    def _judge(self) -> None:
        """End a window: keep results while its repeats saved at least what its fills cost
        (lock held)."""
        now = self._repeats()
        keeping = self._saved(now) >= self._misses * self.fill_ms
        if keeping != self.keeping:
            self.keeping = keeping
            self.switches += 1
            self._ghosts.clear()  # kept or not, the ghosts of an earlier stretch are stale
        self._seen, self._misses, self._ghost_hits = now, 0, 0

    def snapshot(self) -> dict[str, object]:
        """What the policy decided and why (for stats).

        >>> FillPolicy(lambda: 0).snapshot()["keeping"]
        True
        """
        with self._lock:
            return {
                "keeping": self.keeping,
                "skipped": self.skipped,
                "switches": self.switches,
                "fill_ms": round(self.fill_ms, 4),
                "miss_ms": round(self.miss_ms, 4),
            }


def _mean(mean: float, value: float) -> float:
    """The running mean after ``value`` (the first value starts it)."""
    return value if mean == 0.0 else mean + (value - mean) * SMOOTHING
