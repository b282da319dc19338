"""PARALLEL: the layers of one recall fanned out over a bounded reader thread pool.

Each thread reads through its own SQLite connection (WAL lets them run side by side), and
the heavy parts (FTS5, numpy, faiss) release the GIL. A recall with a timeout gets its
RecallTimeout at the deadline, whatever its layers are doing.

The calling thread is one of the workers (:func:`fan_out`): it searches the layers too cheap
for a hand-off and, when the recall has no timeout, the costliest layer and whatever else
balances the shares, while the pool searches the rest as one task per other core (a reader
thread searching its layers in turn), instead of sleeping until the pool is done. A
hand-off to a reader thread and back costs 42-78 µs on the 2-core machine the benchmarks
ran on (a no-op task, median; ``athena bench`` measures it in every session).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from athena.errors import RecallTimeout
from athena.execution.pipeline import Pipeline
from athena.execution.pool_warmth import BUILD_ROWS
from athena.layers.protocol import LayerResult, SearchRequest

DEFAULT_THREADS: Final = 4
INLINE_MS: Final = 0.05  # a layer expected to take less runs on the calling thread
UNSEEN_MS: Final = 1.0  # what a layer is expected to take before the executor has run it
LEARN: Final = 0.2  # the weight of a layer's newest time in its expected time


def fan_out(
    layers: Sequence[str],
    cost: Callable[[str], float],
    keep_costliest: bool = True,
    slots: int = 1,
) -> tuple[list[list[str]], list[str]]:
    """Split ``layers`` into the pool's tasks (each a list of layers one reader thread
    searches in turn) and the layers the caller searches itself, in the order it does.

    A layer cheaper than :data:`INLINE_MS` is never handed off (the hand-off costs more).
    The others are dealt, costliest first, to whichever share is lightest so far: with
    ``keep_costliest`` the caller's and ``slots`` tasks, so the caller takes the costliest
    layer and keeps working while the pool works, and the critical path is the heaviest
    share, not a layer and its hand-off; without (a recall with a timeout: a layer the
    caller runs cannot be left behind at the deadline) ``slots`` tasks alone. A reader
    thread searching two layers in turn costs one hand-off, not two: a hand-off and back
    costs 42-78 µs here, and two cores run no more than two shares at once anyway.

    >>> ms = {"episodic": 0.4, "semantic": 0.3, "graph": 0.2, "procedural": 0.01}
    >>> fan_out(["episodic", "semantic", "graph", "procedural"], ms.__getitem__)
    ([['semantic', 'graph']], ['episodic', 'procedural'])
    >>> ms["graph"] = 2.5
    >>> fan_out(["episodic", "semantic", "graph", "procedural"], ms.__getitem__)
    ([['episodic', 'semantic']], ['graph', 'procedural'])
    >>> fan_out(["episodic", "semantic", "graph"], ms.__getitem__, False, slots=2)
    ([['graph'], ['episodic', 'semantic']], [])
    """
    ms = {name: cost(name) for name in layers}  # each asked once
    ranked = sorted(layers, key=ms.__getitem__, reverse=True)
    shares: list[list[str]] = [[] for _ in range(max(slots, 1) + keep_costliest)]
    loads = [0.0] * len(shares)
    for name in ranked:
        if ms[name] >= INLINE_MS:
            lightest = loads.index(min(loads))  # ties: the first, the caller's if kept
            shares[lightest].append(name)
            loads[lightest] += ms[name]
    inline = shares.pop(0) if keep_costliest else []
    inline += [name for name in ranked if ms[name] < INLINE_MS]
    return [share for share in shares if share], inline


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
        cores: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._ms: dict[str, float] = dict(expected or {})
        self._known = known
        self._threads, self._cores = threads, cores or os.cpu_count() or 1
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
        keep = timeout is None
        slots = max(min(self._threads, self._cores - keep), 1)  # the caller takes a core
        tasks, inline = fan_out(layers, self.expected_ms, keep, slots)
        run = self.pipeline.run
        futures = [(task, self._pool.submit(self._search, task, request)) for task in tasks]
        results: dict[str, LayerResult] = {}
        try:
            for name in inline:
                results[name] = run(name, request, "parallel")
                if deadline is not None and time.monotonic() > deadline:
                    raise RecallTimeout(f"layer {name!r} missed its {timeout}s deadline")
            for task, future in futures:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                try:
                    results.update(future.result(timeout=remaining))
                except cf.TimeoutError as exc:
                    names = ", ".join(map(repr, task))
                    what = "layer" if len(task) == 1 else "layers"
                    raise RecallTimeout(f"{what} {names} missed its {timeout}s deadline") from exc
        except BaseException:
            for _, future in futures:
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

    def _search(self, layers: Sequence[str], request: SearchRequest) -> dict[str, LayerResult]:
        """One task on a reader thread: ``layers`` searched in turn."""
        return {name: self.pipeline.run(name, request, "parallel") for name in layers}

    def close(self) -> None:
        """Drop the layers not started; wait for those running (a fan-out that timed out or
        failed leaves them running), however long they take (a large tenant's first search
        builds its indexes: seconds): the store is closed next, and a search still reading
        through a closed connection crashed the process (a segmentation fault). A recall
        still running on another thread when its ``Memory`` closes is the caller's to
        finish first, whatever its strategy."""
        self._pool.shutdown(wait=True, cancel_futures=True)
