"""PARALLEL: the layers of one recall fanned out over a bounded reader thread pool.

Each thread reads through its own SQLite connection (WAL lets them run side by side), and
the heavy parts (FTS5, numpy, faiss) release the GIL. A recall with a timeout gets its
RecallTimeout at the deadline, whatever its layers are doing.

The calling thread is one of the workers (:func:`fan_out`): it searches the layers too cheap
for a hand-off and, when the recall has no timeout, a costliest layer that is the critical
path by itself, while the pool searches the others, instead of sleeping until the pool is
done. A hand-off to a reader thread and back costs 42-78 µs on the 2-core machine the
benchmarks ran on (a no-op task, median; ``athena bench`` measures it in every session).
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from athena.errors import RecallTimeout
from athena.execution.pipeline import Pipeline
from athena.execution.pool_keeper import BUILD_ROWS
from athena.layers.protocol import LayerResult, SearchRequest

DEFAULT_THREADS: Final = 4
INLINE_MS: Final = 0.05  # a layer expected to take less runs on the calling thread
UNSEEN_MS: Final = 1.0  # what a layer is expected to take before the executor has run it
LEARN: Final = 0.2  # the weight of a layer's newest time in its expected time


def fan_out(
    layers: Sequence[str], cost: Callable[[str], float], keep_costliest: bool = True
) -> tuple[list[str], list[str]]:
    """Split ``layers`` into those handed to the pool and those the caller searches itself,
    in the order it searches them.

    A layer cheaper than :data:`INLINE_MS` is never handed off (the hand-off costs more).
    With ``keep_costliest``, the costliest layer stays with the caller when it is expected
    to take at least as long as the other layers together: it alone is the recall's
    critical path, and keeping it skips a hand-off on that path (one tenant of 100k
    memories, k=50: 13-19% faster than handing every layer off). Otherwise every other
    layer goes to the pool: a caller busy in Python holds the GIL the pool threads need to
    start (LoCoMo, k=50: 1-3% slower when it always kept its costliest layer).

    >>> ms = {"episodic": 0.4, "semantic": 0.3, "graph": 0.2, "procedural": 0.01}
    >>> fan_out(["episodic", "semantic", "graph", "procedural"], ms.__getitem__)
    (['episodic', 'semantic', 'graph'], ['procedural'])
    >>> ms["graph"] = 2.5
    >>> fan_out(["episodic", "semantic", "graph", "procedural"], ms.__getitem__)
    (['episodic', 'semantic'], ['graph', 'procedural'])
    >>> fan_out(["episodic", "semantic", "graph"], ms.__getitem__, keep_costliest=False)
    (['graph', 'episodic', 'semantic'], [])
    """
    ms = {name: cost(name) for name in layers}  # each asked once
    ranked = sorted(layers, key=ms.__getitem__, reverse=True)
    handed = [name for name in ranked if ms[name] >= INLINE_MS]
    if keep_costliest and handed and ms[handed[0]] >= sum(ms[n] for n in handed[1:]):
        handed = handed[1:]
    return handed, [name for name in ranked if name not in handed]


class ParallelExecutor:
    """Runs layer searches at once on ``threads`` reader threads and the calling one.

    A layer's expected time is ``known(layer)`` (the dependency graph's: the layer run
    alone), else a moving average of its times in the fan-outs, which contention inflates
    (``expected`` at first): an engine forced to PARALLEL never runs a layer alone. A
    search that built an index (a tenant's first) teaches neither, as in the graph.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        threads: int = DEFAULT_THREADS,
        expected: Mapping[str, float] | None = None,
        known: Callable[[str], float | None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._ms: dict[str, float] = dict(expected or {})
        self._known = known
        self._pool = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="athena-reader")

    def expected_ms(self, layer: str) -> float:
        """What ``layer`` is expected to take in a fan-out, in ms.

        >>> executor = ParallelExecutor(None, 1, {"graph": 2.5})  # type: ignore[arg-type]
        >>> executor.expected_ms("graph"), executor.expected_ms("episodic")
        (2.5, 1.0)
        >>> executor.close()
        """
        known = None if self._known is None else self._known(layer)
        return self._ms.get(layer, UNSEEN_MS) if known is None else known

    def run(
        self, request: SearchRequest, layers: Sequence[str], timeout: float | None = None
    ) -> dict[str, LayerResult]:
        """Search ``layers`` at once; RecallTimeout if any misses the deadline. With a
        ``timeout``, the caller keeps only the cheap layers, checked as each ends: a layer
        the caller is running cannot be left behind at the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        handed, inline = fan_out(layers, self.expected_ms, keep_costliest=timeout is None)
        run = self.pipeline.run
        futures = {name: self._pool.submit(run, name, request, "parallel") for name in handed}
        results: dict[str, LayerResult] = {}
        try:
            for name in inline:
                results[name] = run(name, request, "parallel")
                if deadline is not None and time.monotonic() > deadline:
                    raise RecallTimeout(f"layer {name!r} missed its {timeout}s deadline")
            for name, future in futures.items():
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                try:
                    results[name] = future.result(timeout=remaining)
                except cf.TimeoutError as exc:
                    raise RecallTimeout(f"layer {name!r} missed its {timeout}s deadline") from exc
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
        for name, result in results.items():  # unlocked: a race loses one sample, no more
            if result.loaded > BUILD_ROWS:
                continue
            old = self._ms.get(name)
            self._ms[name] = (
                result.elapsed_ms if old is None else old + LEARN * (result.elapsed_ms - old)
            )
        return {name: results[name] for name in layers}  # in the order asked

    def close(self) -> None:
        """Drop the layers not started; wait for those running (a fan-out that timed out or
        failed leaves them running), however long they take (a large tenant's first search
        builds its indexes: seconds): the store is closed next, and a search still reading
        through a closed connection crashed the process (a segmentation fault). A recall
        still running on another thread when its ``Memory`` closes is the caller's to
        finish first, whatever its strategy."""
        self._pool.shutdown(wait=True, cancel_futures=True)
