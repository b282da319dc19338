"""The generation tracker: cheap on the hit path, never stale across connections or processes."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from athena import Memory
from athena.embedding import Embedder
from athena.generations import GenerationTracker
from athena.store.sqlite import SQLiteStore


class CountingStore(SQLiteStore):
    """A real store that counts how often the tracker reads generations from the file."""

    reads = 0
    versions = 0

    def generations(self, tenant: str) -> dict[str, int]:
        self.reads += 1
        return super().generations(tenant)

    def data_version(self) -> int:
        self.versions += 1
        return super().data_version()


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    s = CountingStore(tmp_path / "g.db")
    yield s  # type: ignore[misc]
    s.close()


def test_write_clock_moves_with_every_generation_bump_only(tmp_path: Path) -> None:
    with Memory(tmp_path / "m.db") as mem:
        store = mem.store
        before = store.write_clock()
        mem.remember("one", tenant="a")
        after_one = store.write_clock()
        assert after_one > before
        store.append_telemetry([(0.0, "a", "q", "sequential", "[]")], keep=10)
        store.save_state("probe", "{}")
        assert store.write_clock() == after_one  # telemetry and state are not memories
        mem.remember("two", tenant="b")
        assert store.write_clock() > after_one


def test_other_connections_telemetry_keeps_cached_generations(
    store: CountingStore, tmp_path: Path
) -> None:
    other = SQLiteStore(tmp_path / "g.db")  # another connection, as a second process has
    try:
        tracker = GenerationTracker(store)
        for tenant in ("a", "b", "c"):
            tracker.get(tenant)
        assert store.reads == 3
        for _ in range(5):
            other.append_telemetry([(0.0, "a", "q", "sequential", "[]")], keep=10)
            other.save_state("probe", "{}")
            for tenant in ("a", "b", "c"):
                assert tracker.get(tenant) == {}
        assert store.reads == 3  # the file changed, but no generation did
    finally:
        other.close()


def test_other_connections_memory_write_is_seen(store: CountingStore, tmp_path: Path) -> None:
    tracker = GenerationTracker(store)
    assert tracker.get("a") == {} and tracker.get("b") == {}
    with Memory(tmp_path / "g.db") as other:
        other.remember("from elsewhere", tenant="b")
    assert tracker.get("b") == {"episodic": 1}
    assert tracker.get("a") == {}


WRITER = """
import sys
from athena import Memory
with Memory(sys.argv[1]) as mem:
    mem.remember("the spare key is under the blue flowerpot", tenant="t", key="spare")
"""


def test_a_cached_recall_sees_another_process_write(tmp_path: Path, embedder: Embedder) -> None:
    path = tmp_path / "shared.db"
    with Memory(path, embedder=embedder, pool="off") as mem:
        mem.remember("the car key hangs by the door", tenant="t", key="car")
        first = mem.recall("where is the spare key?", tenant="t", k=5)
        again = mem.recall("where is the spare key?", tenant="t", k=5, explain=True)
        assert again.explain is not None and again.explain["cache"] == "hit"
        assert [h.key for h in first.hits] == ["car"]
        mem.store.append_telemetry([(0.0, "t", "q", "sequential", "[]")], keep=10)
        subprocess.run([sys.executable, "-c", WRITER, str(path)], check=True, timeout=120)
        after = mem.recall("where is the spare key?", tenant="t", k=5, explain=True)
        assert after.explain is not None and after.explain["cache"] != "hit"
        assert {h.key for h in after.hits} == {"car", "spare"}


def test_sqlite_is_asked_again_only_after_a_commit(store: CountingStore, tmp_path: Path) -> None:
    tracker = GenerationTracker(store)
    tracker.get("a")
    asked = store.versions
    for _ in range(50):
        assert tracker.get("a") == {}
    assert store.versions == asked  # the WAL-index header did not move: nobody committed
    with Memory(tmp_path / "g.db") as other:  # another connection, not heard by the listener
        other.remember("from elsewhere", tenant="a")
    assert tracker.get("a") == {"episodic": 1}
    assert store.versions > asked


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["write", "telemetry", "read"]), st.sampled_from("ab"))))
def test_generations_are_never_stale_across_connections(ops: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "g.db"
        mine = SQLiteStore(path)
        try:
            with Memory(path, pool="off") as other:
                tracker = GenerationTracker(mine)
                for op, tenant in ops:
                    if op == "write":
                        other.remember("a note", tenant=tenant)
                    elif op == "telemetry":
                        other.store.append_telemetry([(0.0, tenant, "q", "cache", "[]")], keep=10)
                    for name in "ab":
                        assert tracker.get(name) == mine.generations(name)
        finally:
            mine.close()


def test_the_cache_keeps_a_bounded_number_of_tenants(tmp_path: Path) -> None:
    """A server reached by more tenants than it keeps empties the cache, and reads on."""
    with Memory(tmp_path / "b.db", pool="off") as mem:
        for n in range(7):
            mem.remember(f"note {n}", tenant=f"t{n}", layer="semantic")
        tracker = mem.generations
        tracker.kept = 3
        for _ in range(2):
            for n in range(7):
                assert tracker.get(f"t{n}") == {"semantic": 1}
                assert len(tracker._cache) <= 3
