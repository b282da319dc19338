"""Long-running processes: the interpreter's heap on transparent huge pages (2 MiB).

A recall walks many small Python objects (rows, hits, dictionaries, index entries) spread
over the heap. CPython's own allocator takes them from 1 MiB arenas of 4 KiB pages, and the
kernel backs those with huge pages only when asked (``madvise`` is the usual setting of
``/sys/kernel/mm/transparent_hugepage/enabled``). On a virtual machine every TLB miss walks
two page tables, and a recall that comes after a pause (an agent's model call) finds its
TLB and caches cold: on the project's 2-core VM a LoCoMo recall took 1.28 ms p50 back
to back and 3.35 ms with 50 ms asleep before it, and on huge pages recalls were 4-11% and
cache hits after a pause 16-18% cheaper (``docs/bench/analysis.md``, "Huge pages for the
heap"); a server kept saturated gained nothing (its cached requests about 2% slower).
Bulk imports were slower (12-22%), so ``athena import`` starts as it is. Started
with ``PYTHONMALLOC=malloc`` and ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
(glibc 2.35 or later), Python allocates through glibc, which asks for huge pages for its
heap, so the same working set needs one TLB entry per 2 MiB instead of one per 4 KiB.

Both are read when the interpreter starts, so a process cannot switch itself over: it must
be started so. :func:`large_page_env` is the environment to start one with (or None where
there is nothing to do), and :func:`relaunch_on_large_pages` replaces the current process
with itself started so. ``athena serve`` and ``athena bench`` call it first thing;
``ATHENA_LARGE_PAGES=0`` turns it off, and a ``PYTHONMALLOC`` or glibc ``hugetlb`` tunable
the user set is left as it is. A library user starts their own process with the
environment (``env PYTHONMALLOC=malloc GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python app.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

SWITCH: Final = "ATHENA_LARGE_PAGES"  # "0" keeps the interpreter's default allocator
TUNABLE: Final = "glibc.malloc.hugetlb=1"  # glibc madvises its heap for huge pages
THP_MODE: Final = Path("/sys/kernel/mm/transparent_hugepage/enabled")
GLIBC_AT_LEAST: Final = (2, 35)  # the first glibc with the hugetlb tunable


def large_page_env(
    environ: Mapping[str, str] | None = None,
    *,
    thp_mode: Path = THP_MODE,
    libc: str | None = None,
) -> dict[str, str] | None:
    """The environment to start a process with so its heap sits on huge pages, or None
    when there is nothing to do: turned off (``ATHENA_LARGE_PAGES=0``), already set up (or
    the user chose an allocator or the tunable), not glibc 2.35+ on Linux, or transparent
    huge pages disabled. ``libc``: ``os.confstr("CS_GNU_LIBC_VERSION")`` unless given.

    >>> mode = Path(__import__("tempfile").mkdtemp()) / "enabled"
    >>> _ = mode.write_text("always [madvise] never\\n")
    >>> env = large_page_env({"PATH": "/bin"}, thp_mode=mode, libc="glibc 2.36")
    >>> env["PYTHONMALLOC"], env["GLIBC_TUNABLES"], env["PATH"]
    ('malloc', 'glibc.malloc.hugetlb=1', '/bin')
    >>> large_page_env({"ATHENA_LARGE_PAGES": "0"}, thp_mode=mode, libc="glibc 2.36") is None
    True
    >>> large_page_env({}, thp_mode=mode, libc="glibc 2.31") is None
    True
    """
    env = dict(os.environ if environ is None else environ)
    tunables = env.get("GLIBC_TUNABLES", "")
    if env.get(SWITCH, "1").strip() == "0" or "PYTHONMALLOC" in env:
        return None
    if sys.flags.ignore_environment:  # python -E or -I would ignore PYTHONMALLOC
        return None
    if "glibc.malloc.hugetlb" in tunables or not sys.platform.startswith("linux"):
        return None
    if not _glibc_has_tunable(_libc_version() if libc is None else libc):
        return None
    if _thp_mode(thp_mode) not in ("always", "madvise"):
        return None
    env["PYTHONMALLOC"] = "malloc"
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return env


def relaunch_on_large_pages(argv: Sequence[str] | None = None) -> None:
    """Replace this process with itself, started by :func:`large_page_env`'s environment
    (same interpreter, same arguments: ``sys.orig_argv`` unless ``argv`` is given); returns
    only when there is nothing to do. Call it first thing, before any thread or file is
    opened: ``os.execve`` keeps open descriptors (stdin and stdout for an MCP client) but
    nothing else.

    >>> # relaunch_on_large_pages()  # the top of a long-running command
    """
    env = large_page_env()
    if env is None or not sys.executable:
        return
    args = list(sys.orig_argv if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # closed, or None
            stream.flush()
    try:
        os.execve(sys.executable, args, env)
    except OSError as exc:  # carry on as started
        with contextlib.suppress(AttributeError, OSError, ValueError):
            print(f"athena: not restarted on huge pages: {exc}", file=sys.stderr)


def heap_env(huge: bool, environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """``environ`` (default ``os.environ``) set to start a process on huge pages (``huge``)
    or on CPython's own allocator, whatever allocator settings it held; None when huge
    pages cannot be had here. For comparing the two (``benchmarks/large_pages.py``).

    >>> heap_env(False, {"PYTHONMALLOC": "malloc", "PATH": "/bin"})
    {'PATH': '/bin', 'ATHENA_LARGE_PAGES': '0'}
    """
    source = os.environ if environ is None else environ
    drop = ("PYTHONMALLOC", "GLIBC_TUNABLES", SWITCH)
    base = {k: v for k, v in source.items() if k not in drop}
    return large_page_env(base) if huge else {**base, SWITCH: "0"}


def on_large_pages(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started so its heap can sit on huge pages.

    >>> on_large_pages({"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    True
    >>> on_large_pages({})
    False
    """
    env = os.environ if environ is None else environ
    tunables = env.get("GLIBC_TUNABLES", "").split(":")
    if sys.flags.ignore_environment and environ is None:
        return False  # started with -E or -I: the interpreter read neither variable
    return env.get("PYTHONMALLOC") == "malloc" and TUNABLE in tunables


def _libc_version() -> str:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not POSIX, or not glibc
        return ""


def _glibc_has_tunable(libc: str) -> bool:
    """``"glibc 2.36"`` -> True; anything not glibc 2.35 or later -> False.

    >>> _glibc_has_tunable("glibc 2.35"), _glibc_has_tunable("glibc 2.34"), _glibc_has_tunable("")
    (True, False, False)
    """
    name, _, version = libc.partition(" ")
    parts = version.split(".")
    if name != "glibc" or len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        return False
    return (int(parts[0]), int(parts[1])) >= GLIBC_AT_LEAST


def _thp_mode(path: Path) -> str:
    """The bracketed mode of the kernel's transparent huge pages setting ('' if unknown)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else ""
