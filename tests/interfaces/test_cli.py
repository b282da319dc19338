"""The ``athena`` CLI against real SQLite files and the real static embedder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from athena.embedding import Embedder, load_embedder
from athena.errors import (
    AthenaError,
    EmbedderError,
    ImportFormatError,
    InvalidInput,
    NotFound,
    QueryTooLong,
    StoreError,
    StoreLocked,
    UnknownLayer,
)
from athena.importers import import_jsonl, parse_timestamp, read_jsonl
from athena.interfaces import cli_support
from athena.interfaces.cli import app
from athena.interfaces.cli_support import exit_code
from athena.memory import Memory

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "cli.md"
runner = CliRunner()
SEED = [
    ("semantic", "Alice moved to Lisbon in May 2023.", "s1", "Alice"),
    ("episodic", "Bob: I adopted a puppy named Rex yesterday.", "s1", "Bob"),
    ("episodic", "Alice: I started learning the cello last week.", "s2", "Alice"),
    ("prospective", "Call the dentist on Friday.", None, None),
]


def run(db: Path, *args: str, **kwargs: Any) -> Result:
    return runner.invoke(app, ["--db", str(db), *args], env={"COLUMNS": "200"}, **kwargs)


def ok(db: Path, *args: str) -> Result:
    result = run(db, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def out_json(db: Path, *args: str) -> Any:
    return json.loads(ok(db, *args, "--json").stdout)


def stats(db: Path) -> Any:
    return out_json(db, "stats")


def fail(db: Path, code: int, message: str, *args: str) -> Result:
    result = run(db, *args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


@pytest.fixture(scope="module")
def static() -> Embedder:
    return load_embedder("static")


@pytest.fixture(autouse=True)
def _setup(monkeypatch: pytest.MonkeyPatch, static: Embedder) -> None:
    """A clean environment, and the static model loaded once for every in-process command.

    (The CLI opens the Memory by embedder name; the console-script test covers that path.)
    """
    monkeypatch.delenv("ATHENA_DB", raising=False)
    monkeypatch.delenv("ATHENA_EMBEDDER", raising=False)
    real = cli_support.open_memory

    def open_memory(path: Path, embedder: str) -> Memory:
        return Memory(path, embedder=static) if embedder == "static" else real(path, embedder)

    monkeypatch.setattr(cli_support, "open_memory", open_memory)


@pytest.fixture
def db(tmp_path: Path, static: Embedder) -> Iterator[Path]:
    path = tmp_path / "seeded.db"
    with Memory(path, embedder=static) as memory:
        for i, (layer, text, session, actor) in enumerate(SEED):
            memory.remember(
                text,
                tenant="t1",
                layer=layer,
                session=session,
                actor=actor,
                timestamp=1_700_000_000 + i,
            )
        memory.remember("Carol likes jazz.", tenant="t2", layer="semantic")
    yield path


# -- help, docs, entry point -------------------------------------------------------------


def _tree(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _tree(sub, (*path, name))


COMMANDS = [path for path, _ in _tree(typer.main.get_command(app))]


def test_the_command_tree_is_complete() -> None:
    leaves = {" ".join(path) for path, cmd in _tree(typer.main.get_command(app))}
    assert {"remember", "recall", "forget", "update", "stats", "import jsonl"} <= leaves
    assert {"import locomo", "eval locomo", "get", "tenants"} <= leaves


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "athena")
def test_every_command_has_help(path: tuple[str, ...], tmp_path: Path) -> None:
    command = dict(_tree(typer.main.get_command(app)))[path]
    assert (command.help or "").strip(), f"no help text for {path}"
    result = run(tmp_path / "none.db", *path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
    assert not (tmp_path / "none.db").exists()


def test_docs_mention_every_command_and_option() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for path, command in _tree(typer.main.get_command(app)):
        assert f"athena {' '.join(path)}".strip() in docs, f"docs/cli.md misses {path}"
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in docs, f"docs/cli.md misses {opt} of {path}"


def test_console_script_help_and_round_trip(tmp_path: Path) -> None:
    local = Path(sys.executable).parent / "athena"
    exe = str(local) if local.exists() else shutil.which("athena")
    assert exe, "the athena console script is not installed"
    env = {**os.environ, "COLUMNS": "200"}
    help_run = subprocess.run([exe, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert help_run.returncode == 0 and "remember" in help_run.stdout
    db = str(tmp_path / "sub.db")
    base = [exe, "--db", db]
    stored = subprocess.run(
        [*base, "remember", "The spare key is under the blue pot.", "-t", "a", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert stored.returncode == 0, stored.stderr
    memory_id = json.loads(stored.stdout)["id"]
    recalled = subprocess.run(
        [*base, "recall", "where is the spare key?", "-t", "a", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert recalled.returncode == 0, recalled.stderr
    assert [hit["id"] for hit in json.loads(recalled.stdout)["hits"]] == [memory_id]
    missing = subprocess.run(
        [*base, "recall", "x", "-t", "nobody"], capture_output=True, text=True, env=env, timeout=60
    )
    assert missing.returncode == 3 and missing.stderr.startswith("error: ")
    assert "Traceback" not in missing.stderr


def test_help_does_not_load_the_model() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from athena.interfaces.cli import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0;"
        "print(any(m.startswith(('model2vec', 'torch')) for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_version_and_no_args(tmp_path: Path) -> None:
    assert "athena 0." in ok(tmp_path / "x.db", "--version").stdout
    assert "Usage" in runner.invoke(app, []).output
    assert not (tmp_path / "x.db").exists()


# -- remember / recall / forget / update / get / stats / tenants -------------------------


def test_remember_prints_the_id_and_stores_every_field(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    first = ok(db, "remember", "Dana plays chess on Sundays.", "-t", "u")
    assert first.stdout.strip().isdigit()
    stored = out_json(
        db,
        "remember",
        "Dana's rating is 1800.",
        "--tenant",
        "u",
        "--layer",
        "semantic",
        "--key",
        "rating",
        "--kind",
        "fact",
        "--session",
        "s9",
        "--actor",
        "Dana",
        "--timestamp",
        "2024-02-03T04:05:06",
        "--metadata",
        '{"source": "chat"}',
        "--attributes",
        '{"confidence": 0.9}',
    )
    row = out_json(db, "get", str(stored["id"]), "-t", "u")
    assert row["text"] == "Dana's rating is 1800."
    assert (row["layer"], row["key"], row["session"], row["actor"]) == (
        "semantic",
        "rating",
        "s9",
        "Dana",
    )
    assert row["event_time"] == datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC).timestamp()
    assert row["metadata"] == {"source": "chat"}
    assert row["attributes"]["confidence"] == 0.9
    again = out_json(
        db,
        "remember",
        "Dana's rating is 1850.",
        "-t",
        "u",
        "--layer",
        "semantic",
        "--key",
        "rating",
        "--timestamp",
        "1700000000",
    )
    assert again["id"] == stored["id"]
    assert out_json(db, "get", str(stored["id"]), "-t", "u")["event_time"] == 1_700_000_000.0
    assert "Dana" in ok(db, "get", str(stored["id"]), "-t", "u").stdout


def test_recall_json_shape_and_explain(db: Path) -> None:
    plain = out_json(db, "recall", "Who moved to Lisbon?", "-t", "t1")
    assert list(plain) == ["hits"]
    assert plain["hits"][0]["text"] == "Alice moved to Lisbon in May 2023."
    assert {"id", "layer", "text", "score", "sources"} <= set(plain["hits"][0])
    explained = out_json(db, "recall", "Who moved to Lisbon?", "-t", "t1", "--explain")
    assert list(explained) == ["hits", "explain"] and explained["explain"]["strategy"]
    assert len(out_json(db, "recall", "Alice", "-t", "t1", "-k", "1")["hits"]) == 1


def test_recall_filters(db: Path) -> None:
    def texts(*args: str) -> list[str]:
        return [hit["text"] for hit in out_json(db, "recall", "Alice puppy cello", *args)["hits"]]

    assert all("Bob" in t for t in texts("-t", "t1", "--actor", "Bob"))
    assert texts("-t", "t1", "--session", "s2") == [SEED[2][1]]
    layered = texts("-t", "t1", "--layer", "semantic", "--layer", "prospective")
    assert set(layered) <= {SEED[0][1], SEED[3][1]} and layered
    assert texts("-t", "t1", "--until", "2000-01-01") == []
    assert texts("-t", "t1", "--since", "2000-01-01T00:00:00Z", "--strategy", "sequential")
    assert texts("-t", "t1", "--timeout", "30")


def test_recall_table_output(db: Path) -> None:
    result = ok(db, "recall", "Who moved to Lisbon?", "-t", "t1", "--explain")
    assert "Alice moved to Lisbon in May 2023." in result.stdout
    assert "explain" in result.stdout and "strategy" in result.stdout
    assert "no memories found" in ok(db, "recall", "x", "-t", "t1", "--until", "0").stdout


def test_forget(db: Path) -> None:
    ids = [hit["id"] for hit in out_json(db, "recall", "Alice", "-t", "t1", "-k", "2")["hits"]]
    assert out_json(db, "forget", *map(str, ids), "-t", "t1") == {"deleted": ids}
    assert out_json(db, "stats", "--tenant", "t1")["memories"] == len(SEED) - 2
    last = out_json(db, "recall", "dentist", "-t", "t1", "-k", "1")["hits"][0]["id"]
    assert "forgot 1 memories" in ok(db, "forget", str(last), "-t", "t1").stdout


def test_update(db: Path) -> None:
    memory_id = out_json(db, "recall", "dentist", "-t", "t1", "-k", "1")["hits"][0]["id"]
    assert ok(db, "update", str(memory_id), "-t", "t1", "--text", "Call the vet.").stdout.strip()
    assert out_json(
        db,
        "update",
        str(memory_id),
        "-t",
        "t1",
        "--metadata",
        '{"by": "cli"}',
        "--attributes",
        '{"priority": 9}',
        "--timestamp",
        "2024-01-01",
    ) == {"id": memory_id}
    row = out_json(db, "get", str(memory_id), "-t", "t1")
    assert row["text"] == "Call the vet." and row["metadata"] == {"by": "cli"}
    assert row["attributes"]["priority"] == 9
    assert row["event_time"] == datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def test_stats_and_tenants(db: Path) -> None:
    everything = out_json(db, "stats")
    assert everything["memories"] == len(SEED) + 1 and everything["tenants"] == 2
    assert out_json(db, "stats", "-t", "t2")["layers"] == {"semantic": 1}
    table = ok(db, "stats", "--tenant", "t1").stdout
    assert "memories" in table and "layer semantic" in table
    assert out_json(db, "tenants") == {"tenants": ["t1", "t2"]}
    assert ok(db, "tenants").stdout.split() == ["t1", "t2"]


def test_a_bad_index_budget_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    fresh = tmp_path / "new.db"
    env = {"ATHENA_DB": str(fresh), "ATHENA_INDEX_MEMORIES": "lots"}
    bad = runner.invoke(app, ["remember", "hello", "-t", "t1"], env=env)
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: ATHENA_INDEX_MEMORIES must be a positive whole number")
    assert not fresh.exists()
    env["ATHENA_INDEX_MEMORIES"] = "50"
    assert runner.invoke(app, ["remember", "hello", "-t", "t1"], env=env).exit_code == 0


def test_env_vars_select_the_database_and_embedder(db: Path) -> None:
    result = runner.invoke(app, ["stats", "--json"], env={"ATHENA_DB": str(db)})
    assert result.exit_code == 0 and json.loads(result.stdout)["tenants"] == 2
    env = {"ATHENA_DB": str(db), "ATHENA_EMBEDDER": "static"}
    assert runner.invoke(app, ["tenants"], env=env).stdout.split() == ["t1", "t2"]
    bad = runner.invoke(app, ["stats"], env={**env, "ATHENA_EMBEDDER": "glove"})
    assert bad.exit_code == 2 and bad.stderr.startswith("error: unknown embedder 'glove'")


def test_a_store_opened_under_another_embedder_gets_its_vectors_behind_a_bar(db: Path) -> None:
    result = run(db, "--embedder", "transformer", "recall", "Who moved to Lisbon?", "-t", "t1")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "vectors for transformer:all-MiniLM-L6-v2" in result.stderr
    assert "Lisbon" in result.stdout
    again = run(db, "--embedder", "transformer", "stats")  # they are kept: no bar this time
    assert again.exit_code == 0 and "vectors for" not in again.stderr


# -- errors: exit code, one line on stderr, database unchanged ---------------------------

HUGE = "word " * 1000
PRIORITY_99 = ["--layer", "prospective", "--attributes", '{"priority": 99}']
ERRORS = [
    (2, "query must be a non-empty string", ["recall", "", "-t", "t1"]),
    (2, "query must be a non-empty string", ["recall", "   ", "-t", "t1"]),
    (2, "query is longer than", ["recall", HUGE, "-t", "t1"]),
    (2, "k must be between", ["recall", "Alice", "-t", "t1", "-k", "0"]),
    (2, "k must be between", ["recall", "Alice", "-t", "t1", "-k", "-3"]),
    (2, "unknown layer 'memes'", ["recall", "Alice", "-t", "t1", "--layer", "memes"]),
    (2, "unknown layer 'memes'", ["remember", "x", "-t", "t1", "--layer", "memes"]),
    (2, "--since must be", ["recall", "Alice", "-t", "t1", "--since", "last week"]),
    (2, "since must not be after", ["recall", "A", "-t", "t1", "--since", "9", "--until", "1"]),
    (2, "unknown strategy", ["recall", "Alice", "-t", "t1", "--strategy", "magic"]),
    (2, "--timeout must be", ["recall", "Alice", "-t", "t1", "--timeout", "0"]),
    (2, "tenant must be a non-empty string", ["recall", "Alice", "-t", ""]),
    (3, "unknown tenant 'ghost'", ["recall", "Alice", "-t", "ghost"]),
    (3, "no memories [999]", ["forget", "1", "999", "-t", "t1"]),
    (3, "no memories [1]", ["forget", "1", "-t", "t2"]),
    (2, "memory id must be a positive integer", ["forget", "0", "-t", "t1"]),
    (3, "no memory 999", ["update", "999", "-t", "t1", "--text", "x"]),
    (3, "no memory 1", ["get", "1", "-t", "t2"]),
    (2, "update needs", ["update", "1", "-t", "t1"]),
    (2, "--metadata is not valid JSON", ["remember", "x", "-t", "t1", "--metadata", "{oops"]),
    (2, "--metadata must be a JSON object", ["remember", "x", "-t", "t1", "--metadata", "[1]"]),
    (2, "--attributes is not valid JSON", ["update", "1", "-t", "t1", "--attributes", "{"]),
    (2, "--metadata is not valid JSON", ["update", "1", "-t", "t1", "--metadata", "nope"]),
    (2, "--timestamp must be", ["remember", "x", "-t", "t1", "--timestamp", "soon"]),
    (2, "timestamp must be a finite", ["remember", "x", "-t", "t1", "--timestamp", "1e300"]),
    (2, "text must be a non-empty string", ["remember", "", "-t", "t1"]),
    (2, "text is longer than", ["remember", "x" * 100_001, "-t", "t1"]),
    (2, "priority must be an integer", ["remember", "x", "-t", "t1", *PRIORITY_99]),
    (2, "unknown embedder", ["--embedder", "word2vec", "stats"]),
    (2, "unknown store 'tiny'", ["bench", "--store", "tiny", "--out", "/nonexistent/out"]),
    (4, "cannot read", ["import", "jsonl", "/nonexistent/memories.jsonl"]),
    (4, "cannot read", ["import", "locomo", "/nonexistent/locomo.json"]),
    (4, "cannot read", ["eval", "locomo", "/nonexistent/locomo.json"]),
]


@pytest.mark.parametrize(("code", "message", "args"), ERRORS, ids=lambda v: str(v)[:40])
def test_errors_exit_codes_and_leave_the_database_unchanged(
    db: Path, code: int, message: str, args: list[str]
) -> None:
    before = stats(db)
    if args[0].startswith("--"):
        result = runner.invoke(app, [*args[:2], "--db", str(db), *args[2:]])
        assert result.exit_code == code and result.stderr.startswith("error: " + message)
    else:
        fail(db, code, message, *args)
    assert stats(db) == before


def test_unreadable_and_malformed_files(db: Path, tmp_path: Path) -> None:
    before = stats(db)
    directory = tmp_path / "adir"
    directory.mkdir()
    fail(db, 4, "cannot read", "import", "jsonl", str(directory))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"sample_id": ', encoding="utf-8")
    fail(db, 4, "is not valid JSON", "import", "locomo", str(broken))
    fail(db, 4, "is not valid JSON", "eval", "locomo", str(broken))
    broken.write_text('{"not": "a list"}', encoding="utf-8")
    fail(db, 4, "not a LoCoMo file", "import", "locomo", str(broken))
    broken.write_text('[{"sample_id": "x"}]', encoding="utf-8")
    fail(db, 4, "not a LoCoMo file", "import", "locomo", str(broken))
    broken.write_bytes(b"\xff\xfe\x00garbage")
    fail(db, 4, "", "import", "jsonl", str(broken))
    assert stats(db) == before


def test_store_errors_and_missing_database(tmp_path: Path) -> None:
    fail(tmp_path, 5, "is a directory", "stats")
    fail(tmp_path / "no" / "such" / "dir.db", 5, "storage failed", "remember", "x", "-t", "a")
    missing = tmp_path / "missing.db"
    for args in (["stats"], ["recall", "x", "-t", "a"], ["forget", "1", "-t", "a"], ["tenants"]):
        fail(missing, 3, "no database at", *args)
    fail(missing, 2, "text must be", "remember", " ", "-t", "a")
    fail(
        missing,
        2,
        "priority must be",
        "remember",
        "x",
        "-t",
        "a",
        "--layer",
        "prospective",
        "--attributes",
        '{"priority": -1}',
    )
    assert not any(tmp_path.glob("missing.db*")), "a failed command left a database behind"


def test_usage_errors_keep_click_exit_code(db: Path) -> None:
    before = stats(db)
    for args in (
        ["forget", "abc", "-t", "t1"],
        ["recall", "x"],
        ["recall", "x", "-t", "t1", "-k", "many"],
        ["nosuchcommand"],
        ["import", "csv", "f"],
    ):
        result = run(db, *args)
        assert result.exit_code == 2, args
        assert "Traceback" not in result.output
    assert stats(db) == before


def test_exit_code_mapping_and_other_errors(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [exit_code(e("m")) for e in (InvalidInput, UnknownLayer, QueryTooLong)] == [2, 2, 2]
    assert [exit_code(e("m")) for e in (NotFound, ImportFormatError)] == [3, 4]
    assert [exit_code(e("m")) for e in (StoreError, StoreLocked, EmbedderError)] == [5, 5, 1]
    assert exit_code(AthenaError("m")) == 1

    def broken(path: Path, name: str) -> Any:
        raise EmbedderError("model exploded\nbadly")

    monkeypatch.setattr(cli_support, "open_memory", broken)
    fail(db, 1, "error: model exploded badly", "stats")


# -- import jsonl ------------------------------------------------------------------------


def _jsonl(path: Path, rows: list[Any]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_import_jsonl_happy_path(tmp_path: Path) -> None:
    rows: list[Any] = [
        {
            "layer": "episodic",
            "text": f"Turn {i}: we talked about topic {i}.",
            "tenant": "j",
            "timestamp": 1_700_000_000 + i,
            "session": f"s{i % 3}",
            "metadata": {"n": i},
        }
        for i in range(1203)
    ]
    rows[5] = {
        "layer": "semantic",
        "text": "Eve is a pilot.",
        "tenant": "k",
        "key": "eve",
        "kind": "fact",
        "actor": "Eve",
        "sources": ["D1:1"],
        "attributes": {"c": 1},
        "timestamp": "2023-05-08T13:56:00+00:00",
    }
    rows.insert(7, "")  # blank lines are skipped
    path = _jsonl(tmp_path / "m.jsonl", rows)
    db = tmp_path / "j.db"
    report = out_json(db, "import", "jsonl", str(path))
    assert report["memories"] == 1203 and report["per_second"] > 0
    assert report["prepared_scopes"] == 0  # no scope past 20,000 memories: nothing to save
    assert not (tmp_path / "j.db.indexes").exists()
    assert out_json(db, "stats")["memories"] == 1203
    hit = out_json(db, "recall", "Who is a pilot?", "-t", "k")["hits"][0]
    assert (hit["text"], hit["sources"], hit["event_time"]) == (
        "Eve is a pilot.",
        ["D1:1"],
        1683554160.0,
    )
    text = ok(db, "import", "jsonl", str(path)).stdout  # keyless lines are added again
    assert "imported 1203 memories" in text and "memories/s" in text


BAD_LINES = [
    ("{not json", "line 2: not valid JSON"),
    ('["a", "list"]', "line 2: expected a JSON object"),
    ({"layer": "episodic", "tenant": "j"}, "line 2: missing field 'text'"),
    ({"layer": "episodic", "text": 5, "tenant": "j"}, "line 2: field 'text' must be a string"),
    ({"layer": "dreams", "text": "x", "tenant": "j"}, "line 2: unknown layer 'dreams'"),
    ({"layer": "episodic", "text": "x", "tenant": "j", "timestamp": "soon"}, "line 2: timestamp"),
    ({"layer": "episodic", "text": "x", "tenant": "j", "timestamp": True}, "line 2: field 'times"),
    ({"layer": "episodic", "text": "x", "tenant": "j", "metadata": []}, "line 2: field 'metadata"),
    ({"layer": "episodic", "text": "x", "tenant": "j", "sources": "D1"}, "line 2: field 'sources"),
    ({"layer": "episodic", "text": "x", "tenant": "j", "session": 3}, "line 2: field 'session"),
    ({"layer": "episodic", "text": "x", "tenant": "j", "colour": "red"}, "line 2: unknown field"),
    ({"layer": "episodic", "text": " ", "tenant": "j"}, "line 2: text must be a non-empty"),
    (
        {"layer": "prospective", "text": "x", "tenant": "j", "attributes": {"status": "??"}},
        "line 2: status must be one of",
    ),
]


@pytest.mark.parametrize(("bad", "message"), BAD_LINES, ids=lambda v: str(v)[:30])
def test_import_jsonl_bad_line_writes_nothing(
    db: Path, tmp_path: Path, bad: Any, message: str
) -> None:
    good = {"layer": "episodic", "text": "fine", "tenant": "j"}
    path = _jsonl(tmp_path / "bad.jsonl", [good, bad, *[good] * 600])
    before = stats(db)
    fail(db, 4, message, "import", "jsonl", str(path))
    assert stats(db) == before


def test_import_jsonl_bad_last_line_after_many_batches(db: Path, tmp_path: Path) -> None:
    good = {"layer": "episodic", "text": "fine", "tenant": "j"}
    path = _jsonl(tmp_path / "late.jsonl", [*[good] * 1100, {"layer": "episodic", "tenant": "j"}])
    before = stats(db)
    fail(db, 4, "line 1101: missing field 'text'", "import", "jsonl", str(path))
    empty = _jsonl(tmp_path / "empty.jsonl", ["", "  "])
    fail(db, 4, "contains no memories", "import", "jsonl", str(empty))
    assert stats(db) == before


def test_jsonl_library_functions(tmp_path: Path, static: Embedder) -> None:
    path = _jsonl(
        tmp_path / "lib.jsonl",
        [
            {
                "layer": "graph",
                "text": "A knows B.",
                "tenant": "g",
                "attributes": {"relations": [["A", "knows", "B"]]},
            }
        ],
    )
    assert [item.layer for item in read_jsonl(path)] == ["graph"]
    seen: list[int] = []
    with Memory(tmp_path / "lib.db", embedder=static) as memory:
        assert import_jsonl(memory, path, seen.append) == 1
    assert seen == [1]
    assert parse_timestamp("1970-01-02") == 86_400.0
    assert parse_timestamp(" 12.5 ") == 12.5
    with pytest.raises(InvalidInput):
        parse_timestamp("nan")
    with pytest.raises(ImportFormatError, match="line 1"):
        read_jsonl(_jsonl(tmp_path / "x.jsonl", ["[]"]))


# -- LoCoMo ------------------------------------------------------------------------------


def _locomo(path: Path) -> Path:
    def conversation(sample: str, a: str, b: str, pet: str, city: str) -> dict[str, Any]:
        return {
            "sample_id": sample,
            "conversation": {
                "speaker_a": a,
                "speaker_b": b,
                "session_1_date_time": "1:56 pm on 8 May, 2023",
                "session_1": [
                    {"speaker": a, "dia_id": "D1:1", "text": f"I just adopted a {pet}!"},
                    {"speaker": b, "dia_id": "D1:2", "text": "Congrats! What's its name?"},
                    {
                        "speaker": a,
                        "dia_id": "D1:3",
                        "text": "Biscuit. We walk every morning.",
                        "blip_caption": f"a photo of a {pet} on a leash",
                    },
                ],
                "session_2_date_time": "10:00 am on 20 June, 2023",
                "session_2": [
                    {"speaker": b, "dia_id": "D2:1", "text": f"I am moving to {city} next month."},
                    {"speaker": a, "dia_id": "D2:2", "text": "That is exciting, good luck!"},
                ],
                "session_3_date_time": "1 July, 2023",
                "session_3": [],
            },
            "observation": {
                "session_1_observation": {a: [[f"{a} adopted a {pet} named Biscuit.", "D1:1"]]},
                "session_2_observation": {b: [[f"{b} is moving to {city}.", ["D2:1"]]]},
            },
            "session_summary": {"session_1_summary": f"{a} told {b} about the new {pet}."},
            "event_summary": {
                "events_session_2": {b: [f"{b} plans a move."], "date": "20 June, 2023"}
            },
            "qa": [
                {
                    "question": f"What pet did {a} adopt?",
                    "answer": pet,
                    "evidence": ["D1:1"],
                    "category": 4,
                },
                {
                    "question": f"Where is {b} moving?",
                    "answer": city,
                    "evidence": ["D2:1"],
                    "category": 1,
                },
                {
                    "question": f"When did {a} adopt a pet?",
                    "answer": "May 2023",
                    "evidence": ["D1:1; D1:3"],
                    "category": 2,
                },
                {
                    "question": "What is the weather?",
                    "answer": "n/a",
                    "evidence": [],
                    "category": 5,
                },
            ],
        }

    data = [
        conversation("conv-1", "Alice", "Bob", "beagle", "Lisbon"),
        conversation("conv-2", "Carla", "Dan", "parrot", "Oslo"),
    ]
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_import_and_eval_locomo(tmp_path: Path) -> None:
    path = _locomo(tmp_path / "locomo.json")
    db = tmp_path / "l.db"
    fail(db, 3, "no database at", "eval", "locomo", str(path))
    report = out_json(db, "import", "locomo", str(path))
    assert report["conversations"] == 2 and report["memories"] >= 2 * 8
    assert out_json(db, "tenants") == {"tenants": ["conv-1", "conv-2"]}
    assert out_json(db, "stats")["memories"] == report["memories"]
    text = ok(db, "import", "locomo", str(path)).stdout  # re-import updates in place
    assert f"imported {report['memories']} memories from 2 conversations" in text
    assert "memories/s" in text
    assert out_json(db, "stats")["memories"] == report["memories"]

    evaluated = out_json(db, "eval", "locomo", str(path))
    assert {"recall_at", "by_category", "latency_ms", "questions"} <= set(evaluated)
    assert evaluated["questions"] == 8
    assert set(evaluated["recall_at"]) == {"5", "10", "25", "50"}
    scores = list(evaluated["recall_at"].values())
    for category in evaluated["by_category"].values():
        scores += category["recall_at"].values()
    assert all(0.0 <= s <= 100.0 for s in scores) and evaluated["recall_at"]["50"] == 100.0
    assert evaluated["latency_ms"]["p95"] >= evaluated["latency_ms"]["p50"] >= 0

    shown = ok(db, "eval", "locomo", str(path), "--strategy", "sequential")
    assert "DRAGON" in shown.stdout and "R@25" in shown.stdout and "single-hop" in shown.stdout
    assert "latency p50" in shown.stdout
    fail(db, 2, "unknown strategy", "eval", "locomo", str(path), "--strategy", "nope")


def test_eval_locomo_needs_the_conversations_imported(db: Path, tmp_path: Path) -> None:
    path = _locomo(tmp_path / "locomo.json")
    fail(db, 3, "conversations not imported: conv-1, conv-2", "eval", "locomo", str(path))
