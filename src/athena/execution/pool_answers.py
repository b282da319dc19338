"""Waiting for a pool call's tasks and reading their answers (see :mod:`athena.execution.pool`).

A call waits until every task is answered, one fails, or ``timeout`` passes; then it
returns every layer's result or raises the first error, abandoning the tasks still out.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import FIRST_EXCEPTION
from concurrent.futures import wait as wait_futures
from typing import Any

from athena.errors import RecallTimeout
from athena.execution.backend import Task
from athena.execution.pool_core import PoolCore
from athena.layers.protocol import LayerResult

# A whole recall's answer: its layers' results, and its hits packed (None: not read there).
WholeAnswer = tuple[tuple[tuple[str, LayerResult], ...], "tuple[tuple[Any, ...], ...] | None"]


def gather(core: PoolCore, tasks: list[Task], timeout: float) -> dict[str, LayerResult]:
    """Block at most ``timeout`` seconds for ``tasks``; their results by layer.

    >>> # gather(pool._core, tasks, 2.0)["semantic"]
    """
    wait_futures([t.future for t in tasks], timeout, return_when=FIRST_EXCEPTION)
    return outcome(core, tasks, timeout)


def gather_whole(core: PoolCore, tasks: list[Task], timeout: float) -> WholeAnswer:
    """:func:`gather` for a whole recall's one task: its layers' results as (name, result)
    pairs and its packed hits (None: the caller reads them).

    >>> # results, packed = gather_whole(pool._core, tasks, 2.0)
    """
    answer: WholeAnswer = gather(core, tasks, timeout)[tasks[0].layer]  # type: ignore[assignment]
    return answer


async def gather_async(core: PoolCore, tasks: list[Task], timeout: float) -> dict[str, LayerResult]:
    """:func:`gather` for an event loop; a cancelled caller abandons its tasks.

    >>> # await gather_async(pool._core, tasks, 2.0)
    """
    waiters = [asyncio.wrap_future(t.future) for t in tasks]
    try:
        if waiters:
            await asyncio.wait(waiters, timeout=timeout, return_when=FIRST_EXCEPTION)
    except asyncio.CancelledError:
        core.abandon(tasks, RecallTimeout("the recall was cancelled"))
        raise
    finally:
        for waiter in waiters:  # read every outcome so asyncio never logs one as lost
            _ = waiter.cancel() or waiter.cancelled() or waiter.exception()
    return outcome(core, tasks, timeout)


def outcome(core: PoolCore, tasks: list[Task], timeout: float) -> dict[str, LayerResult]:
    """Every task's result by layer, or raise the first error (a timeout if none failed)
    after abandoning the tasks still out.

    >>> # outcome(pool._core, tasks, 2.0)
    """
    done = [t.future for t in tasks if t.future.done() and not t.future.cancelled()]
    error = next((e for f in done if (e := f.exception()) is not None), None)
    if error is None and len(done) == len(tasks):
        return {t.layer: t.future.result() for t in tasks}
    error = error or RecallTimeout(f"distributed recall took longer than {timeout:g} s")
    core.abandon(tasks, error)
    raise error
