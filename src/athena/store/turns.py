"""Taking turns at the one write connection, and telling of the pauses between writes.

:class:`TurnLock` hands the connection over in arrival order (a plain lock let one busy
thread take it again and again: four threads writing in a loop waited up to 107 ms, the
writer thread's queue 28). :class:`QuietTimer` calls a listener once writing has paused.
Both are for :class:`~athena.store.connection.Writer`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from athena.errors import StoreError

# After a commit that changed memories, this long with no other is a pause in writing.
QUIET_S: Final = 0.01
log = logging.getLogger(__name__)


def guarded(listener: Callable[..., None], *args: Any) -> None:
    """Call a commit or quiet listener: one that fails is logged, and the write and the
    other listeners go on (the write is committed, and its caller hears so). Interrupts
    (``KeyboardInterrupt``, ``SystemExit``) pass: listeners run on the writing thread.

    >>> guarded(lambda: 1 / 0)  # logged, not raised
    """
    try:
        listener(*args)
    except Exception:
        log.exception("a store listener failed")


class TurnLock:
    """A lock handed to its waiters in the order they came. The holder's thread may not
    take it again: that raises :class:`StoreError` (a write inside a write would wait for
    ever).

    >>> turns = TurnLock()
    >>> with turns:
    ...     turns.mine()
    True
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._owner: int | None = None
        self._waiting: deque[threading.Event] = deque()

    def mine(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    def __enter__(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                raise StoreError("a write cannot start inside a write (a store listener's?)")
            if not self._held:
                self._held, self._owner = True, me
                return
            turn = threading.Event()
            self._waiting.append(turn)
        try:
            turn.wait()
        except BaseException:  # interrupted while waiting: give up the turn, or pass it on
            with self._mutex:
                if turn in self._waiting:
                    self._waiting.remove(turn)
                    raise
            self._release()
            raise
        self._owner = me

    def __exit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        with self._mutex:
            self._owner = None
            if self._waiting:
                self._waiting.popleft().set()  # still held: it passes to the next in line
            else:
                self._held = False


class QuietTimer:
    """Calls ``listener`` on a thread of its own once :data:`QUIET_S` has passed since the
    last :meth:`arm` (a pause in writing). The thread is started by the first arm and woken
    only from its idle wait, once per burst of writes: one counting down re-reads the time
    of the last arm when its wait ends.

    >>> told = threading.Event()
    >>> timer = QuietTimer(told.set)
    >>> timer.arm(); told.wait(30.0)
    True
    >>> timer.close()
    """

    def __init__(self, listener: Callable[[], None]) -> None:
        self._listener = listener
        self._cond = threading.Condition()
        self._last = 0.0  # time.monotonic() of the last arm
        self._armed = False
        self._idle = False
        self._thread: threading.Thread | None = None
        self._started = False  # a thread was asked for (once, even if none could be had)
        self._closed = False

    def arm(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._last, self._armed = time.monotonic(), True
            if not self._started:
                self._started = True
                thread = threading.Thread(target=self._loop, name="athena-quiet", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread to be had (a limit, or shutting down)
                    log.warning("no quiet timer: work waiting for a pause in writing waits on")
                    return
                self._thread = thread
            elif self._idle:
                self._cond.notify()

    def _loop(self) -> None:
        cond = self._cond
        with cond:
            while not self._closed:
                if not self._armed:
                    self._idle = True
                    cond.wait()
                    self._idle = False
                    continue
                left = self._last + QUIET_S - time.monotonic()
                if left > 0:
                    cond.wait(left)
                    continue
                self._armed = False
                cond.release()  # the listener runs unlocked: arm() never waits for it
                try:
                    guarded(self._listener)
                except BaseException:  # this thread lives on: the next pause is told too
                    log.exception("a quiet listener was interrupted")
                finally:
                    cond.acquire()

    def close(self) -> None:
        """Stop the thread, after a listener call under way (unless called from that call).
        Idempotent."""
        with self._cond:
            self._closed = True
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
