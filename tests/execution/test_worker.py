"""Inside one worker process: what it sends back when a layer's answer cannot be sent.

The pool's own tests (test_pool.py) run real worker processes; here the worker's serving
function runs in the test's process, on a real store, so a layer can be made to misbehave.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
import time
from collections.abc import Iterator
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from athena import Memory
from athena.execution import shm
from athena.execution import worker as wk
from athena.execution.worker_messages import seal
from athena.layers.protocol import LayerResult
from athena.records import MemoryInput, make_query


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[Memory]:
    with Memory(tmp_path / "w.db", pool="off") as memory:
        memory.remember_many(
            [
                MemoryInput(tenant="acme", layer="episodic", text="Alice moved to Lisbon in May."),
                MemoryInput(tenant="acme", layer="semantic", text="Alice lives in Lisbon."),
            ]
        )
        yield memory


def _block_names(tree: Any) -> list[str]:
    if isinstance(tree, shm.ShmArray):
        return [tree.name]
    if isinstance(tree, LayerResult):
        return _block_names(tree.ids) + _block_names(tree.scores)
    if isinstance(tree, tuple | list):
        return [name for item in tree for name in _block_names(item)]
    return []


def test_an_answer_that_cannot_be_sent_fails_its_task_and_frees_its_blocks(
    mem: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, serve, _ = wk._initialise(wk.WorkerConfig(str(mem.store.path), mem.embedder.name, 0))
    made: list[str] = []
    real_pack = shm.pack_tree

    def pack(obj: object, threshold: int | None = None) -> tuple[Any, list[SharedMemory]]:
        packed, blocks = real_pack(obj, threshold)
        made.extend(_block_names(packed))
        return packed, blocks

    def broken_semantic(layers: Any, ctx: Any, name: str, request: Any, source: str) -> Any:
        result = real_run(layers, ctx, name, request, source)
        if name != "semantic":
            return result
        big = np.arange(100_000, dtype=np.int64)  # over the threshold: a shared block
        return LayerResult(name, big, threading.Lock())  # type: ignore[arg-type]

    real_run = wk.run_layer
    monkeypatch.setattr(wk, "run_layer", broken_semantic)
    monkeypatch.setattr(wk.shm, "pack_tree", pack)
    try:
        request = mem.pipeline.request(make_query("Lisbon", "acme", 5), mem.generations.get("acme"))
        payload = pickle.dumps((request, False))
        kind, answers = pickle.loads(serve(((1, "episodic"), (2, "semantic")), payload))
    finally:
        store.close()
    assert kind == "done"
    by_task = {answer[0]: answer for answer in answers}
    assert by_task[1][1] == "ok" and by_task[1][2].ids  # the other layer is answered
    assert by_task[2][1:3] == ("error", "TypeError")
    assert "cannot be sent" in by_task[2][3]
    assert made  # the broken answer really went through a shared block
    for name in made:
        with pytest.raises(FileNotFoundError):
            SharedMemory(name=name)  # unlinked by the worker: no parent would have


def test_answers_that_can_be_sent_are_pickled_once_as_a_whole() -> None:
    answers = [(1, "ok", LayerResult("semantic", (3, 4), (0.5, 0.25)), False)]
    assert pickle.loads(seal(answers)) == ("done", answers)


def test_a_starting_worker_says_it_is_warming_until_it_is_done() -> None:
    parent, child = multiprocessing.Pipe()
    try:
        with wk.beating(child, 0.05):
            time.sleep(0.3)
        heard = []
        while parent.poll(0.2):
            heard.append(parent.recv())
        assert heard[0] == ("warming",)  # at once, not a beat later
        assert 4 <= len(heard) <= 8 and set(heard) == {("warming",)}
        assert not parent.poll(0.2)  # and nothing once the block ended
    finally:
        parent.close()
        child.close()
