"""Consistency checks of an Athena database file, shared by the reliability scripts and tests.

:func:`integrity_problems` opens the file with plain ``sqlite3`` (no Athena code on the
checking path) and lists every problem it finds; an empty list means the file is sound:

- ``PRAGMA integrity_check`` is ``ok`` and ``PRAGMA foreign_key_check`` finds nothing;
- FTS5's own ``integrity-check`` passes, including the comparison with the external content
  table (``rank = 1``): the index holds exactly the rows' text and scope;
- every memory is in the lexical index under its (tenant, layer) scope and nothing else is
  (the scope token is the one the engine's lexical search filters on);
- every memory has a vector for each embedding model in use, of the right tenant and layer,
  and no vector lacks its memory (no half-written record);
- every (tenant, layer) that holds memories has a generation row (the cache's staleness key).

SQLite 3.40 (this machine) does not run FTS5's check inside ``PRAGMA integrity_check``
(that came with 3.44), so it is run explicitly here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from athena.store.sql_reads import scope_token


def fts_integrity(conn: sqlite3.Connection) -> str | None:
    """None when FTS5's ``integrity-check`` passes, else its error text."""
    try:
        conn.execute("INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)")
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None


def integrity_problems(db: Path | str, *, models: tuple[str, ...] | None = None) -> list[str]:
    """Every consistency problem of the database at ``db`` (empty: sound).

    ``models``: the embedding models every memory must have a vector for (default: every
    model that has at least one vector in the file).
    """
    problems: list[str] = []
    conn = sqlite3.connect(str(db), isolation_level=None, timeout=30)
    try:
        result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        if result != ["ok"]:
            problems.append(f"integrity_check: {'; '.join(result[:5])}")
            return problems  # the rest would only repeat it
        fks = conn.execute("PRAGMA foreign_key_check").fetchall()
        if fks:
            problems.append(f"foreign_key_check: {len(fks)} violations, e.g. {fks[:3]}")
        fts = fts_integrity(conn)
        if fts is not None:
            problems.append(f"fts5 integrity-check: {fts}")
        problems += _scopes(conn)
        problems += _vectors(conn, models)
        missing_gen = conn.execute(
            "SELECT DISTINCT m.tenant, m.layer FROM memories m WHERE NOT EXISTS"
            " (SELECT 1 FROM generations g WHERE g.tenant = m.tenant AND g.layer = m.layer)"
        ).fetchall()
        if missing_gen:
            problems.append(f"scopes without a generation: {missing_gen[:5]}")
    finally:
        conn.close()
    return problems


def _scopes(conn: sqlite3.Connection) -> list[str]:
    problems: list[str] = []
    scopes = conn.execute("SELECT DISTINCT tenant, layer FROM memories").fetchall()
    for tenant, layer in scopes:
        token = scope_token(tenant, layer)
        rows = {
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM memories WHERE tenant = ? AND layer = ?", (tenant, layer)
            )
        }
        indexed = {
            int(r[0])
            for r in conn.execute(
                "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?", (f"scope:{token}",)
            )
        }
        if rows != indexed:
            problems.append(
                f"lexical index of ({tenant!r}, {layer}) disagrees with the rows: "
                f"{len(rows - indexed)} unindexed, {len(indexed - rows)} stray"
            )
    return problems


def _vectors(conn: sqlite3.Connection, models: tuple[str, ...] | None) -> list[str]:
    problems: list[str] = []
    if models is None:
        models = tuple(str(r[0]) for r in conn.execute("SELECT DISTINCT model FROM vectors"))
    for model in models:
        (missing,) = conn.execute(
            "SELECT count(*) FROM memories m WHERE NOT EXISTS"
            " (SELECT 1 FROM vectors v WHERE v.memory_id = m.id AND v.model = ?)",
            (model,),
        ).fetchone()
        if missing:
            problems.append(f"{missing} memories without a {model} vector")
    (orphans,) = conn.execute(
        "SELECT count(*) FROM vectors v WHERE NOT EXISTS"
        " (SELECT 1 FROM memories m WHERE m.id = v.memory_id)"
    ).fetchone()
    if orphans:
        problems.append(f"{orphans} vectors without a memory")
    (mismatched,) = conn.execute(
        "SELECT count(*) FROM vectors v JOIN memories m ON m.id = v.memory_id"
        " WHERE v.tenant != m.tenant OR v.layer != m.layer"
    ).fetchone()
    if mismatched:
        problems.append(f"{mismatched} vectors filed under another tenant or layer than their row")
    return problems
