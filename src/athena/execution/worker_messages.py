"""A worker's answers as they cross its pipe: pickled by the worker itself, and kept to one
write (see :mod:`athena.execution.worker` for the messages).

The parent's monitor reads answers with a blocking ``recv`` while it holds the pool's lock.
``multiprocessing`` writes a message of up to 16 KiB in one ``write``, a longer one in two;
a worker stopped between the two would leave the monitor blocked. So a message stays
under :data:`ONE_WRITE`: a whole recall's hits that would outgrow it are dropped (the caller
reads them itself), and a message still too long becomes one error answer per task.
"""

from __future__ import annotations

import contextlib
import pickle
from typing import Any, Final

from athena.execution import shm

ONE_WRITE: Final = 16_000  # bytes multiprocessing sends in one write (it splits past 16 KiB)


def seal(answers: list[tuple[Any, ...]]) -> bytes:
    """The ``("done", answers)`` message, pickled here rather than in ``send``: an answer
    that cannot be pickled (a layer's result holding a lock, say) becomes that task's error,
    and its shared blocks are unlinked, instead of killing the worker mid-send and leaving
    the blocks for no one to unlink.

    >>> import threading
    >>> pickle.loads(seal([(1, "ok", {"a": threading.Lock()}, False)]))[1][0][:3]
    (1, 'error', 'TypeError')
    """
    try:
        return pickle.dumps(("done", answers), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        checked = [_sendable(answer) for answer in answers]
        return pickle.dumps(("done", checked), protocol=pickle.HIGHEST_PROTOCOL)


def seal_in_one_write(
    answers: list[tuple[Any, ...]], whole: bool = False, limit: int = ONE_WRITE
) -> bytes:
    """:func:`seal`, kept under ``limit`` bytes: with ``whole``, the last answer is a whole
    recall's (``(results, packed hits)``) and first loses its hits; then every answer
    becomes an error saying the message was too large.

    >>> big = [(1, "ok", ((("semantic", "r"),), ("x" * 20_000,)), False)]
    >>> pickle.loads(seal_in_one_write(big, whole=True))[1][0][2]
    ((('semantic', 'r'),), None)
    >>> pickle.loads(seal_in_one_write([(2, "ok", "y" * 20_000, False)]))[1][0][1:3]
    ('error', 'WorkerPoolUnavailable')
    """
    message = seal(answers)
    if len(message) <= limit:
        return message
    last = answers[-1]
    if whole and last[1] == "ok" and last[2][1] is not None:
        answers = [*answers[:-1], (last[0], "ok", (last[2][0], None), last[3])]
        message = seal(answers)
        if len(message) <= limit:
            return message
    for answer in answers:
        if answer[1] == "ok" and answer[3]:  # its blocks reach no parent: unlink them here
            with contextlib.suppress(Exception):
                shm.unpack_tree(answer[2], unlink=True)
    why = f"a worker's answer outgrew one pipe write ({len(message):,} bytes)"
    return seal([(answer[0], "error", "WorkerPoolUnavailable", why) for answer in answers])


def _sendable(answer: tuple[Any, ...]) -> tuple[Any, ...]:
    try:
        pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        return answer
    except Exception as exc:
        if answer[1] == "ok" and answer[3]:  # its blocks reach no parent: unlink them here
            with contextlib.suppress(Exception):
                shm.unpack_tree(answer[2], unlink=True)
        return (answer[0], "error", type(exc).__name__, f"a layer's result cannot be sent: {exc}")
