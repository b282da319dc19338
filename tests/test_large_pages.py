"""The interpreter's heap on huge pages: when a process is restarted for it, and that the
restarted process really allocates through glibc onto huge pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from athena.interfaces import cli
from athena.large_pages import SWITCH, TUNABLE, heap_env, large_page_env, on_large_pages

GLIBC = "glibc 2.36"


@pytest.fixture
def madvise(tmp_path: Path) -> Path:
    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    return mode


def test_the_environment_adds_the_allocator_and_keeps_the_rest(madvise: Path) -> None:
    env = large_page_env({"HOME": "/h", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                         thp_mode=madvise, libc=GLIBC)  # fmt: skip
    assert env is not None
    assert env["PYTHONMALLOC"] == "malloc"
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}"
    assert env["HOME"] == "/h"
    assert on_large_pages(env)


@pytest.mark.parametrize(
    ("environ", "mode", "libc"),
    [
        ({SWITCH: "0"}, "always [madvise] never", GLIBC),  # turned off
        ({"PYTHONMALLOC": "pymalloc"}, "always [madvise] never", GLIBC),  # the user's choice
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "[always] madvise never", GLIBC),
        ({}, "always madvise [never]", GLIBC),  # the kernel gives no huge pages
        ({}, "", GLIBC),  # no setting to read
        ({}, "[always] madvise never", "glibc 2.34"),  # no hugetlb tunable yet
        ({}, "[always] madvise never", ""),  # not glibc (musl, macOS)
    ],
)
def test_nothing_to_do(tmp_path: Path, environ: dict[str, str], mode: str, libc: str) -> None:
    path = tmp_path / "enabled"
    if mode:
        path.write_text(mode + "\n")
    assert large_page_env(environ, thp_mode=path, libc=libc) is None


def test_always_counts_as_available(tmp_path: Path) -> None:
    path = tmp_path / "enabled"
    path.write_text("[always] madvise never\n")
    assert large_page_env({SWITCH: "1"}, thp_mode=path, libc="glibc 2.40") is not None


CHILD = textwrap.dedent(
    """
    import json, os, sys
    from athena.large_pages import relaunch_on_large_pages
    relaunch_on_large_pages()
    heap = [str(i) * 3 for i in range(1_500_000)]  # about 100 MB of small objects
    huge = 0
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("AnonHugePages:"):
            huge = int(line.split()[1])
    print(json.dumps({"pid": os.getpid(), "malloc": os.environ.get("PYTHONMALLOC"),
                      "tunables": os.environ.get("GLIBC_TUNABLES"), "huge_kb": huge}))
    """
)


def _child(env: dict[str, str]) -> tuple[int, dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1  # the first start printed nothing before it was replaced
    return proc.pid, json.loads(lines[0])


def test_a_relaunched_process_allocates_on_huge_pages() -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", SWITCH)}
    base.pop("GLIBC_TUNABLES", None)
    if large_page_env(base) is None:
        pytest.skip("no huge pages for glibc's heap here (Linux, glibc 2.35+, THP on)")
    pid, huge = _child(base)
    assert huge["pid"] == pid  # replaced in place: a supervisor's pid still names it
    assert huge["malloc"] == "malloc" and huge["tunables"] == TUNABLE
    off_pid, off = _child({**base, SWITCH: "0"})
    assert off["pid"] == off_pid and off["malloc"] is None
    assert isinstance(huge["huge_kb"], int) and isinstance(off["huge_kb"], int)
    assert huge["huge_kb"] >= 32 * 1024 > off["huge_kb"]  # the small objects' heap moved


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["serve", "http"], "serve"),
        (["--db", "serve.db", "--embedder", "static", "bench", "--quick"], "bench"),
        (["--db", "bench", "recall", "q"], "recall"),  # a file named bench is not the command
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_past_global_options(argv: list[str], command: str | None) -> None:
    assert cli.command_of(argv) == command


def test_only_long_running_commands_relaunch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cli, "relaunch_on_large_pages", lambda: calls.append("relaunch"))
    monkeypatch.setattr(cli, "app", lambda: calls.append("app"))
    for argv in (["athena", "--db", "a.db", "serve", "mcp"], ["athena", "recall", "q"]):
        monkeypatch.setattr(sys, "argv", argv)
        cli.main()
    assert calls == ["relaunch", "app", "app"]


def test_a_failed_restart_carries_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from athena import large_pages

    def refuse(*_: object) -> None:
        raise OSError("no such interpreter")

    monkeypatch.setattr(large_pages, "large_page_env", lambda: {"PYTHONMALLOC": "malloc"})
    monkeypatch.setattr(large_pages.os, "execve", refuse)
    large_pages.relaunch_on_large_pages(["python", "-c", "pass"])  # returns: nothing replaced


def test_an_interpreter_that_ignores_the_environment_is_not_restarted() -> None:
    code = "from athena.large_pages import large_page_env as e; print(e() is None)"
    command = [sys.executable, "-E", "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "True"


def test_heap_env_replaces_what_the_environment_chose() -> None:
    chosen = {"PATH": "/bin", "PYTHONMALLOC": "pymalloc", SWITCH: "0"}
    assert heap_env(False, chosen) == {"PATH": "/bin", SWITCH: "0"}
    huge = heap_env(True, chosen)
    if huge is None:
        pytest.skip("no huge pages for glibc's heap here")
    assert on_large_pages(huge) and huge["PATH"] == "/bin" and SWITCH not in huge
