"""Writers take turns in arrival order; listeners cannot hang the store; pauses are told."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from athena.errors import StoreError
from athena.store import PreparedMemory, SQLiteStore
from athena.store.turns import QuietTimer, TurnLock


def _wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.002)
    assert predicate(), "timed out"  # type: ignore[operator]


def test_the_lock_passes_in_arrival_order() -> None:
    turns, order = TurnLock(), []

    def take(name: str) -> None:
        with turns:
            order.append(name)

    threads = []
    with turns:  # held: the others line up behind it one by one
        for name in "abcde":
            thread = threading.Thread(target=take, args=(name,))
            thread.start()
            threads.append(thread)
            lined_up = len(threads)
            _wait_for(lambda: len(turns._waiting) == lined_up)  # noqa: B023 (called at once)
    for thread in threads:
        thread.join(30.0)
    assert order == list("abcde")


def test_a_write_inside_a_write_raises_instead_of_waiting_for_ever(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    try:
        with pytest.raises(StoreError, match="inside a write"):
            store._writer.run(lambda conn, touched: store._writer.run(lambda c, t: None))
        with pytest.raises(StoreError, match="inside a write"):
            store._writer.run(lambda conn, touched: store.close())
        assert store._writer.run(lambda conn, touched: 7) == 7  # nothing held or left open
        assert not store._gate._closed  # nor closed half-way (its readers and WAL watch)
    finally:
        store.close()


def test_a_quiet_listener_may_close_the_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    closed = threading.Event()

    def close_it() -> None:
        store.close()
        closed.set()

    store.on_quiet(close_it)
    store.put([_item()])
    assert closed.wait(30.0)
    with pytest.raises(StoreError, match="closed"):
        store.put([_item(key="b")])


def test_the_timer_tells_of_each_pause_once() -> None:
    told: list[float] = []
    timer = QuietTimer(lambda: told.append(time.monotonic()))
    try:
        timer.arm()
        timer.arm()
        _wait_for(lambda: len(told) == 1)
        timer.arm()  # a second burst, after the first was told
        _wait_for(lambda: len(told) == 2)
        time.sleep(0.05)
        assert len(told) == 2
    finally:
        timer.close()
    timer.arm()  # after close: ignored
    time.sleep(0.05)
    assert len(told) == 2


def _item(key: str = "a") -> PreparedMemory:
    return PreparedMemory(
        tenant="t",
        layer="episodic",
        key=key,
        kind="turn",
        text="hello",
        session=None,
        actor=None,
        event_time=None,
        sources=(key,),
        metadata={},
        attributes={},
        vector=np.ones(4, np.float32) / 2,
        model="m",
    )
