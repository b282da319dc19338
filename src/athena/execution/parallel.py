"""PARALLEL: the layers of one recall fanned out over a bounded reader thread pool.

Each thread reads through its own SQLite connection (WAL lets them run side by side), and
the heavy parts (FTS5, numpy, faiss) release the GIL. Every layer has a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from collections.abc import Sequence

from athena.errors import RecallTimeout
from athena.execution.pipeline import Pipeline
from athena.layers.protocol import LayerResult, SearchRequest

DEFAULT_THREADS = 4


class ParallelExecutor:
    """Runs layer searches at once on ``threads`` reader threads."""

    def __init__(self, pipeline: Pipeline, threads: int = DEFAULT_THREADS) -> None:
        self.pipeline = pipeline
        self._pool = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="athena-reader")

    def run(
        self, request: SearchRequest, layers: Sequence[str], timeout: float | None = None
    ) -> dict[str, LayerResult]:
        """Search ``layers`` at once; RecallTimeout if any misses the deadline."""
        futures = {
            name: self._pool.submit(self.pipeline.run, name, request, "parallel") for name in layers
        }
        deadline = None if timeout is None else time.monotonic() + timeout
        results: dict[str, LayerResult] = {}
        for name, future in futures.items():
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                results[name] = future.result(timeout=remaining)
            except cf.TimeoutError as exc:
                for other in futures.values():
                    other.cancel()
                raise RecallTimeout(f"layer {name!r} missed its {timeout}s deadline") from exc
        return results

    async def arun(
        self, request: SearchRequest, layers: Sequence[str], timeout: float | None = None
    ) -> dict[str, LayerResult]:
        """The asyncio fan-out: one awaitable per layer over the same reader threads."""
        loop = asyncio.get_running_loop()
        tasks = [
            loop.run_in_executor(self._pool, self.pipeline.run, name, request, "parallel")
            for name in layers
        ]
        try:
            done = await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        except TimeoutError as exc:
            raise RecallTimeout(f"layers missed their {timeout}s deadline") from exc
        return {result.layer: result for result in done}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
