"""The CLI on random argv: no traceback, and an exit code from the documented set.

Hypothesis draws lists of tokens from the real command names and options, values that
are valid, odd or hostile, and junk text, and runs them through typer's CliRunner on a
real database (``docs/cli.md``: exit codes 0, 1, 2, 3, 4, 5; errors are one line,
``error: ...``, never a traceback).

Left out of the draw, on purpose: ``serve`` (it would start a server) and ``--strategy
distributed`` (it starts worker processes; tests/reliability/test_pool_faults.py covers
them). Lone surrogates (argv from a real shell decodes invalid UTF-8 to them) and ids past
2**63 - 1 printed tracebacks (docs/reliability.md, bugs 1 and 3, fixed): both are drawn now,
and pinned by the regression tests at the end of this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import assert_sound
from typer.testing import CliRunner, Result

from athena.interfaces.cli import app

EXIT_CODES = {0, 1, 2, 3, 4, 5}
COMMANDS = ["remember", "recall", "forget", "update", "get", "stats", "tenants"]
GROUPS = [["import", "jsonl"], ["import", "locomo"], ["eval", "locomo"], ["telemetry"]]
OPTIONS = [
    "--tenant", "-t", "--layer", "--key", "--kind", "--session", "--actor", "--timestamp",
    "--metadata", "--attributes", "--json", "-k", "--since", "--until", "--strategy",
    "--explain", "--no-explain", "--timeout", "--text", "--embedder", "--version", "--help",
    "-h", "--db", "--nope", "-x", "--",
]  # fmt: skip
VALUES = [
    "t", "acme", "episodic", "semantic", "graph", "dreams", "0", "1", "-1", "10", "1000",
    "1001", "9223372036854775807", "-9223372036854775808", "1e309", "nan", "inf", "-inf",
    "abc", "", " ", "{}", '{"a": 1}', "[1]", "{", '{"due_at": "x"}', '{"priority": 99}',
    "2024-05-08", "2024-05-08T13:56:00+02:00", "9999-99-99", "adaptive", "sequential",
    "parallel", "cache", "hybrid", "static", "transformer", "missing.jsonl", "memories.jsonl",
    "'; DROP TABLE memories; --", "scope:xyz OR text:*", "NEAR(a b)", "a\x00b", "🙂", "x" * 4001,
    "9223372036854775808", "-9223372036854775809", "1" * 30, "\udced\udca0\udc80",
]  # fmt: skip
JUNK = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates too
token = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(VALUES), JUNK)
value = st.one_of(st.sampled_from(VALUES), JUNK)
ID = st.one_of(st.integers(-5, 60).map(str), st.integers(1, 9).map(str), st.sampled_from(VALUES))
# Per command: its positional arguments and the options it takes (from docs/cli.md).
SHAPES: dict[str, tuple[list[st.SearchStrategy[str]], list[str]]] = {
    "remember": (
        [value],
        ["--layer", "--key", "--kind", "--session", "--actor", "--timestamp", "--metadata",
         "--attributes", "--json"],
    ),
    "recall": (
        [value],
        ["-k", "--layer", "--since", "--until", "--session", "--actor", "--strategy",
         "--explain", "--timeout", "--json"],
    ),
    "forget": ([ID, ID], ["--json"]),
    "update": ([ID], ["--text", "--metadata", "--attributes", "--timestamp", "--json"]),
    "get": ([ID], ["--json"]),
    "stats": ([], ["--json"]),
    "tenants": ([], ["--json"]),
}  # fmt: skip
FLAGS = {"--json", "--explain"}
VALID = {
    "--layer": ["episodic", "semantic", "graph", "prospective"], "-k": ["1", "5", "1000"],
    "--since": ["2024-05-08", "0"], "--until": ["2030-01-01", "1700000000"],
    "--strategy": ["adaptive", "sequential", "parallel", "cache", "hybrid"],
    "--timestamp": ["2024-05-08T10:00:00Z", "1700000000"], "--metadata": ['{"a": [1, 2]}'],
    "--attributes": ['{"priority": 3}'], "--timeout": ["5"], "--text": ["new text"],
    "--session": ["s1"], "--actor": ["Alice"], "--key": ["k1"], "--kind": ["fact", "turn"],
}  # fmt: skip


@st.composite
def shaped(draw: st.DrawFn) -> list[str]:
    """A well-formed command with drawn values: the commands run, not just their parser."""
    command = draw(st.sampled_from(sorted(SHAPES)))
    positional, options = SHAPES[command]
    args = [command, *(draw(arg) for arg in positional)]
    if command not in ("stats", "tenants") or draw(st.booleans()):
        tenants = st.sampled_from(["t", "acme", "nobody"])
        args += ["-t", draw(st.one_of(tenants, tenants, value))]
    for option in draw(st.lists(st.sampled_from(options), max_size=4, unique=True)):
        good = st.sampled_from(VALID.get(option, ["x"]))
        args += [option] if option in FLAGS else [option, draw(st.one_of(good, good, value))]
    return args


argv = st.one_of(
    shaped(),
    st.tuples(
        st.one_of(st.sampled_from([[c] for c in COMMANDS]), st.sampled_from(GROUPS), st.just([])),
        st.lists(token, max_size=8),
        st.lists(st.sampled_from(["--db", "other.db", "--embedder", "static"]), max_size=2),
    ).map(lambda parts: [*parts[2], *parts[0], *parts[1]]),
)

runner = CliRunner()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory with a seeded database and a JSONL file; the CLI runs from inside it."""
    work = tmp_path_factory.mktemp("cli-fuzz")
    (work / "memories.jsonl").write_text(
        '{"layer": "semantic", "text": "Alice lives in Lisbon.", "tenant": "acme"}\n'
        '{"layer": "episodic", "text": "Bob baked bread.", "tenant": "t"}\n'
    )
    before = Path.cwd()
    os.chdir(work)
    try:
        for tenant in ("t", "acme"):
            _check(_run(["remember", f"Alice moved to Lisbon ({tenant})", "-t", tenant]), [])
        yield work
    finally:
        os.chdir(before)


def _run(args: list[str]) -> Result:
    return runner.invoke(app, args, env={"ATHENA_DB": "athena.db", "COLUMNS": "120"})


def _check(result: Result, args: list[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, (args, output[-2000:])
    assert result.exit_code in EXIT_CODES, (args, result.exit_code, output[-2000:])
    if result.exception is not None:  # CliRunner keeps what escaped the command
        assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
    if result.exit_code not in (0, 2) or "Usage" not in output:
        assert result.exit_code == 0 or "error" in output.lower(), (args, output[-2000:])


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(args=argv)
def test_random_argv_never_tracebacks(workdir: Path, args: list[str]) -> None:
    assert Path.cwd() == workdir
    _check(_run(args), args)


def test_the_database_is_sound_after_the_fuzzing(workdir: Path) -> None:
    for name in ("athena.db", "other.db"):
        if (workdir / name).exists():
            assert_sound(workdir / name)
    # The fuzzing may have forgotten the seeded memories (it draws `forget` with small ids):
    # the store must still take a write and recall it.
    assert _run(["remember", "Bob sails to Madeira", "-t", "acme"]).exit_code == 0
    result = _run(["recall", "Bob Madeira", "-t", "acme", "--json"])
    assert result.exit_code == 0 and "Madeira" in result.stdout


# -- regressions of the bugs found here (docs/reliability.md, bugs 1 and 3; fixed) -----------


@pytest.mark.parametrize("command", ["get", "update", "forget"])
def test_id_past_int64_is_an_error_line(workdir: Path, command: str) -> None:
    extra = ["--text", "x"] if command == "update" else []
    result = _run([command, "9223372036854775808", "-t", "t", *extra])
    assert result.exit_code == 2 and "Traceback" not in result.stdout + result.stderr
    assert result.stderr.startswith("error: memory id must be a positive integer (at most")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_undecodable_argv_is_an_error_line(workdir: Path) -> None:
    # A shell passes invalid UTF-8 bytes as lone surrogates (surrogateescape).
    result = _run(
        ["recall", "alice", "-t", "t", "--actor", b"\xed\xa0\x80".decode(errors="surrogateescape")]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: argument 6 ") and "not valid UTF-8" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_undecodable_argv_from_a_real_shell(workdir: Path) -> None:
    """The console script itself, argv as raw bytes: one error line, exit 2, nothing written."""
    before = _run(["stats", "--json"]).stdout
    cli = [sys.executable, "-c", "from athena.interfaces.cli import main; main()"]
    for args in (
        [b"recall", b"alice", b"-t", b"t", b"--actor", b"\xed\xa0\x80"],
        [b"remember", b"caf\xe9", b"-t", b"t"],
        [b"--db", b"\xff.db", b"stats"],
    ):
        done = subprocess.run(
            [*(part.encode() for part in cli), *args], capture_output=True, timeout=120, check=False
        )
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 2, stderr
        assert stderr.startswith("error: argument ") and "Traceback" not in stderr
    assert _run(["stats", "--json"]).stdout == before
    assert not (workdir / b"\xff.db".decode(errors="surrogateescape")).exists()
