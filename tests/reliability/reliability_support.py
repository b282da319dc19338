"""Shared pieces of the reliability suite: the store audit, tmpfs mounts, and the loopback
server of tests/loopback.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "benchmarks" / "reliability"
sys.path.insert(0, str(SCRIPTS))

from store_checks import integrity_problems  # noqa: E402

from loopback import Server, serving  # noqa: E402

__all__ = ["SCRIPTS", "Server", "assert_sound", "integrity_problems", "remount", "serving", "tmpfs"]


def assert_sound(db: Path) -> None:
    """The file passes every check of :mod:`store_checks` (integrity, FTS5, no orphans)."""
    assert integrity_problems(db) == []


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` at ``path``; the test is skipped if mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)
