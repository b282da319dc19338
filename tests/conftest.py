"""Shared fixtures: real SQLite files in tmp_path and the real static embedder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from athena import Memory
from athena.embedding import Embedder, load_embedder

LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"
if not LOCOMO.exists():  # a clean clone sits beside ../shared as well; fall back to /work
    LOCOMO = Path("/work/shared/data/locomo/locomo10.json")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder("static")


@pytest.fixture
def memory(tmp_path: Path, embedder: Embedder) -> Iterator[Memory]:
    mem = Memory(tmp_path / "athena.db", embedder=embedder)
    yield mem
    mem.close()


@pytest.fixture(scope="session")
def locomo_path() -> Path:
    if not LOCOMO.exists():
        pytest.skip("LoCoMo data not found beside the checkout")
    return LOCOMO
