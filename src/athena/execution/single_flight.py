"""Single flight: concurrent callers of one key share one execution (threads, or tasks of
one event loop). The result cache keys it with the generations a caller read
(:meth:`athena.execution.cache.ResultCache.flight_key`), so callers that read different
generations never share.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar, cast
from weakref import WeakKeyDictionary

T = TypeVar("T")


class Flight:
    """One execution in progress: its owner thread, its result or error, its waiters."""

    __slots__ = ("done", "error", "owner", "value", "waiters")

    def __init__(self) -> None:
        # Made by the first waiter (most flights have none, and an Event costs microseconds).
        self.done: threading.Event | None = None
        self.value: Any = None
        self.error: BaseException | None = None
        self.owner = threading.get_ident()
        self.waiters = 0


class SingleFlight:
    """Concurrent callers of one key share one execution (threads, or tasks of one loop).

    >>> SingleFlight(threading.Lock()).run("key", lambda: 42, timeout=None)
    42
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._flights: dict[Hashable, Flight] = {}
        self._tasks: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Any]]
        self._tasks = WeakKeyDictionary()

    def run(self, key: Hashable, fn: Callable[[], T], timeout: float | None) -> T:
        me = threading.get_ident()
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = Flight()
            elif flight.owner == me:
                raise RuntimeError("single_flight re-entered for a key this thread computes")
            else:
                flight.waiters += 1
                if flight.done is None:
                    flight.done = threading.Event()
            done = flight.done
        if flight.owner == me:  # the leader
            try:
                flight.value = fn()
                return cast(T, flight.value)
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                with self._lock:  # after this no waiter can join, so `done` is final
                    del self._flights[key]
                    done = flight.done
                if done is not None:
                    done.set()
        assert done is not None
        finished = done.wait(timeout)
        with self._lock:
            flight.waiters -= 1
        if not finished:
            raise TimeoutError(f"gave up after {timeout} s waiting for a shared execution")
        if flight.error is not None:
            raise flight.error
        return cast(T, flight.value)

    async def arun(self, key: Hashable, coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:  # after this, only the loop's own thread touches its dict
            tasks = self._tasks.get(loop)
            if tasks is None:
                tasks = self._tasks[loop] = {}
        task: asyncio.Task[T] | None = tasks.get(key)
        if task is None:
            task = tasks[key] = loop.create_task(coro_fn())
            task.add_done_callback(functools.partial(_landed, tasks, key))
        elif task is asyncio.current_task():
            raise RuntimeError("asingle_flight re-entered for a key this task computes")
        # Shielded: a cancelled caller leaves the shared execution running for the others.
        return await asyncio.shield(task)

    def waiters(self, key: Hashable) -> int:
        with self._lock:
            flight = self._flights.get(key)
            return 0 if flight is None else flight.waiters


def _landed(tasks: dict[Hashable, Any], key: Hashable, task: asyncio.Task[Any]) -> None:
    if tasks.get(key) is task:
        del tasks[key]
    if not task.cancelled():
        task.exception()  # mark it retrieved: every caller may have been cancelled
