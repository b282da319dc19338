"""Plumbing of the ``athena`` CLI: the lazily opened Memory, errors to exit codes, output.

Every command runs inside :class:`AthenaGroup`, which turns any :class:`AthenaError` into a
one-line ``error: <message>`` on stderr and an exit code (see :data:`EXIT_CODES`), and
closes the Memory when the command ends. Nothing here imports the embedding model.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from athena.errors import AthenaError, ImportFormatError, InvalidInput, NotFound, StoreError
from athena.importers.jsonl import parse_timestamp

if TYPE_CHECKING:
    from athena.memory import Memory

DEFAULT_DB = "athena.db"
EMBEDDERS = ("static", "transformer")
STRATEGIES = ("adaptive", "sequential", "parallel", "distributed", "cache", "hybrid")
EXIT_CODES: tuple[tuple[type[AthenaError], int], ...] = (
    (InvalidInput, 2),
    (NotFound, 3),
    (ImportFormatError, 4),
    (StoreError, 5),
)
_EMBEDDER_ALIASES = {"static": "static", "transformer": "transformer", "minilm": "transformer"}


def exit_code(exc: AthenaError) -> int:
    """The CLI exit code of an Athena error.

    >>> exit_code(NotFound("x")), exit_code(AthenaError("x"))
    (3, 1)
    """
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 1


def report(exc: AthenaError) -> int:
    """Print ``error: <message>`` (one line) on stderr; return the exit code."""
    message = " ".join(str(exc).split()) or exc.code
    typer.echo(f"error: {message}", err=True)
    return exit_code(exc)


def open_memory(path: Path, embedder: str) -> Memory:
    """Open the Memory; memories without a vector for ``embedder`` (a store written under
    another model or runtime) get one first, behind a progress bar."""
    from athena.memory import Memory

    memory = Memory(path, embedder=embedder, backfill=False)
    try:
        if not memory.store.readonly and (missing := memory.missing_vectors()):
            with progress_bar(f"vectors for {memory.embedder.name}", missing) as bar:
                memory.backfill_vectors(bar)
    except BaseException:
        memory.close()
        raise
    return memory


class State:
    """The global options and the Memory, opened on first use and closed at the end."""

    def __init__(self) -> None:
        self.db = Path(os.environ.get("ATHENA_DB") or DEFAULT_DB)
        self.embedder = "static"
        self._memory: Memory | None = None
        self._created = False

    def configure(self, db: Path, embedder: str) -> None:
        name = _EMBEDDER_ALIASES.get(embedder.strip().lower())
        if name is None:
            raise InvalidInput(f"unknown embedder {embedder!r}; choose one of: static, transformer")
        self.db, self.embedder = db, name

    def memory(self, *, create: bool = False) -> Memory:
        """The Memory on ``--db``; NotFound if the file is missing and ``create`` is false."""
        if self._memory is None:
            existed = self.db.exists()
            if not existed and not create:
                raise NotFound(
                    f"no database at {self.db}; create it with `athena remember` "
                    "or `athena import`, or pass --db"
                )
            try:
                self._memory = open_memory(self.db, self.embedder)
            except BaseException:
                if not existed:
                    self._remove_files()
                raise
            self._created = not existed
        return self._memory

    def close(self, *, failed: bool) -> None:
        """Close the Memory; a database this command created and left empty is removed."""
        memory, self._memory = self._memory, None
        if memory is None:
            return
        remove = False
        try:
            if failed and self._created:
                remove = memory.stats()["memories"] == 0
        finally:
            memory.close()
        if remove:
            self._remove_files()

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with suppress(OSError):
                Path(f"{self.db}{suffix}").unlink(missing_ok=True)


def get_state(ctx: typer.Context) -> State:
    """The :class:`State` of this invocation (created by :class:`AthenaGroup`)."""
    return ctx.find_root().ensure_object(State)


class AthenaGroup(TyperGroup):
    """The root command group: maps AthenaError to exit codes, closes the Memory."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Refuse argv that is not UTF-8 before parsing it (an ``error:`` line, exit 2).

        Python decodes undecodable argv bytes to lone surrogates, which nothing downstream
        can store, print or pass to SQLite.
        """
        problem = undecodable_argument(sys.argv[1:] if args is None else args)
        if problem is not None:
            code = report(InvalidInput(problem))
            if standalone_mode:
                sys.exit(code)
            return code
        return super().main(
            args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra
        )

    def invoke(self, ctx: Any) -> Any:  # a click Context (vendored by newer typer)
        state = ctx.ensure_object(State)
        try:
            try:
                result = super().invoke(ctx)
            except typer.Exit as exc:
                state.close(failed=exc.exit_code != 0)
                raise
            except BaseException:
                with suppress(AthenaError):
                    state.close(failed=True)
                raise
            state.close(failed=False)
            return result
        except AthenaError as exc:
            raise typer.Exit(report(exc)) from exc


# -- parsing ------------------------------------------------------------------------------


def undecodable_argument(args: Sequence[str]) -> str | None:
    """What is wrong with the first argument that is not valid UTF-8, or None.

    >>> undecodable_argument(["recall", "café"]) is None
    True
    >>> undecodable_argument(["recall", "caf\\udce9"])
    "argument 2 ('caf\\\\udce9') is not valid UTF-8 text"
    """
    for number, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg if len(arg) <= 40 else arg[:40] + "..."
            return f"argument {number} ({shown!r}) is not valid UTF-8 text"
    return None


def parse_object(text: str | None, option: str) -> dict[str, Any] | None:
    """A JSON object given on the command line; InvalidInput if it is not one."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{option} must be a JSON object, not {type(value).__name__}")
    return value


def parse_time(text: str | None, option: str) -> float | None:
    """Epoch seconds from ``text`` (a number or ISO-8601; naive means UTC)."""
    return None if text is None else parse_timestamp(text, option)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    return strategy


# -- output -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def emit_json(data: Any) -> None:
    """One JSON document on stdout."""
    typer.echo(json.dumps(data, ensure_ascii=False, default=_plain))


def console() -> Console:
    return Console(highlight=False)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table whose cells are plain text (no markup interpretation)."""
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    return out


def pairs(title: str | None, data: Mapping[str, Any]) -> Table:
    """A two-column key/value table; nested values are shown as JSON."""
    return table(title, ["field", "value"], [[key, _cell(value)] for key, value in data.items()])


def _cell(value: Any) -> Any:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=_plain)
    return value


class Bar:
    """Progress callback for the importers and the evaluation: ``bar(n)`` advances by n."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def __call__(self, n: int) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress_bar(label: str, total: int | None = None) -> Iterator[Bar]:
    """A rich progress bar on stderr."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield Bar(progress, progress.add_task(label, total=total))
