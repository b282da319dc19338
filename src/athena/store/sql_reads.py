"""Read queries of the SQLite store: plain functions over a reader connection."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from athena.store.protocol import EntityChanges, EntityNames, MemoryRow, RowFilter, VectorBatch

_COLUMNS = (
    "id, tenant, layer, key, kind, session, actor, text, event_time, created_at,"
    " updated_at, sources, metadata, attributes"
)


def scope_token(tenant: str, layer: str) -> str:
    """The FTS5 token that marks one (tenant, layer): letters and digits only.

    >>> scope_token("t", "episodic") == scope_token("t", "episodic")
    True
    """
    digest = hashlib.blake2b(f"{tenant}\x00{layer}".encode(), digest_size=10).hexdigest()
    return "scope" + digest


def row_from_sql(row: Sequence[Any]) -> MemoryRow:
    return MemoryRow(
        id=int(row[0]),
        tenant=row[1],
        layer=row[2],
        key=row[3],
        kind=row[4],
        session=row[5],
        actor=row[6],
        text=row[7],
        event_time=row[8],
        created_at=row[9],
        updated_at=row[10],
        sources=tuple(json.loads(row[11])) if row[11] != "[]" else (),
        metadata=_mapping(row[12]),
        attributes=_mapping(row[13]),
    )


def _mapping(raw: str) -> dict[str, Any]:
    """A JSON object column; most are empty, and ``{}`` needs no parser."""
    if raw == "{}":
        return {}
    value: dict[str, Any] = json.loads(raw)
    return value


def _where(where: RowFilter, prefix: str = "m.") -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if where.since is not None:
        clauses.append(f"{prefix}event_time >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append(f"{prefix}event_time <= ?")
        params.append(where.until)
    if where.session:
        clauses.append(f"{prefix}session = ?")
        params.append(where.session)
    if where.actor:
        clauses.append(f"{prefix}actor = ?")
        params.append(where.actor)
    if where.kinds is not None:
        clauses.append(f"{prefix}kind IN ({','.join('?' * len(where.kinds))})")
        params.extend(where.kinds)
    return "".join(f" AND {c}" for c in clauses), params


def get(conn: sqlite3.Connection, tenant: str, ids: Sequence[int]) -> list[MemoryRow]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        # "+tenant": filter on it, but look rows up by id. Without the "+", SQLite picks a
        # tenant index and walks every row of a large tenant (25.7 ms -> 0.13 ms at 100k).
        f"SELECT {_COLUMNS} FROM memories WHERE +tenant = ? AND id IN ({marks})",
        (tenant, *ids),
    ).fetchall()
    by_id = {int(r[0]): row_from_sql(r) for r in rows}
    return [by_id[i] for i in ids if i in by_id]


def lexical(
    conn: sqlite3.Connection, tenant: str, layer: str, match: str, limit: int, where: RowFilter
) -> list[tuple[int, float]]:
    extra, params = _where(where)
    # The user's terms are confined to the text column: a word that happens to be a scope
    # token (its own tenant's, say) must not match the scope column of every row.
    expression = f"scope:{scope_token(tenant, layer)} AND text : ({match})"
    rows = conn.execute(
        "SELECT m.id, bm25(memories_fts, 1.0, 0.0) AS rank FROM memories_fts"
        " JOIN memories m ON m.id = memories_fts.rowid"
        f" WHERE memories_fts MATCH ?{extra} ORDER BY rank, m.id LIMIT ?",
        (expression, *params, limit),
    ).fetchall()
    return [(int(r[0]), float(r[1])) for r in rows]


def admitted(
    conn: sqlite3.Connection, tenant: str, ids: Sequence[int], where: RowFilter
) -> set[int]:
    if not ids:
        return set()
    extra, params = _where(where)
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT m.id FROM memories m WHERE +m.tenant = ? AND m.id IN ({marks}){extra}",
        (tenant, *ids, *params),
    )
    return {int(r[0]) for r in rows}


def vectors_after(
    conn: sqlite3.Connection,
    tenant: str,
    layer: str,
    model: str,
    after_seq: int,
    limit: int | None = None,
) -> VectorBatch:
    rows = conn.execute(
        "SELECT seq, memory_id, vector FROM vectors"
        " WHERE tenant = ? AND layer = ? AND model = ? AND seq > ? ORDER BY seq LIMIT ?",
        (tenant, layer, model, after_seq, -1 if limit is None else limit),
    ).fetchall()
    if not rows:
        return VectorBatch(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        )
    seqs = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    ids = np.fromiter((r[1] for r in rows), np.int64, len(rows))
    matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    return VectorBatch(seqs, ids, matrix)


def vector_seqs(conn: sqlite3.Connection, ids: Sequence[int], model: str) -> dict[int, int]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT memory_id, seq FROM vectors WHERE model = ? AND memory_id IN ({marks})",
        (model, *ids),
    ).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def vector_seq_high(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vectors'").fetchone()
    return int(row[0]) if row else 0


def change_seq_high(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'memory_changes'").fetchone()
    return int(row[0]) if row else 0


def scopes_changed_after(
    conn: sqlite3.Connection, after_seq: int, limit: int
) -> list[tuple[int, str, str]]:
    rows = conn.execute(
        "SELECT seq, tenant, layer FROM memory_changes WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    )
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def identity(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT uuid FROM store_identity WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # a read-only file whose schema predates it
        return None
    return str(row[0]) if row else None


def changes_after(
    conn: sqlite3.Connection, tenant: str, layer: str, after_seq: int, limit: int | None = None
) -> list[tuple[int, int, str | None]]:
    # One statement, so one snapshot: a memory's text and its tombstone never disagree.
    rows = conn.execute(
        "SELECT c.seq, c.memory_id, CASE WHEN c.deleted THEN NULL ELSE m.text END"
        " FROM memory_changes c LEFT JOIN memories m ON m.id = c.memory_id"
        " WHERE c.tenant = ? AND c.layer = ? AND c.seq > ? ORDER BY c.seq LIMIT ?",
        (tenant, layer, after_seq, -1 if limit is None else limit),
    ).fetchall()
    return [(int(r[0]), int(r[1]), r[2]) for r in rows]


def deleted_after(
    conn: sqlite3.Connection, tenant: str, layer: str, after_seq: int, limit: int | None = None
) -> list[tuple[int, int]]:
    rows = conn.execute(
        "SELECT seq, memory_id FROM memory_changes"
        " WHERE tenant = ? AND layer = ? AND seq > ? AND deleted ORDER BY seq LIMIT ?",
        (tenant, layer, after_seq, -1 if limit is None else limit),
    ).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]


def large_scopes(conn: sqlite3.Connection, at_least: int) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        "SELECT tenant, layer, count(*) AS n FROM memories GROUP BY tenant, layer"
        " HAVING n >= ? ORDER BY n DESC, tenant, layer",
        (at_least,),
    ).fetchall()
    return [(r[0], r[1], int(r[2])) for r in rows]


def write_clock(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT n FROM write_clock WHERE id = 1").fetchone()[0])


def generations(conn: sqlite3.Connection, tenant: str) -> dict[str, int]:
    rows = conn.execute("SELECT layer, gen FROM generations WHERE tenant = ?", (tenant,))
    return {r[0]: int(r[1]) for r in rows}


def tasks(conn: sqlite3.Connection, tenant: str, limit: int, where: RowFilter) -> list[MemoryRow]:
    extra, params = _where(where, prefix="")
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM memories WHERE tenant = ? AND layer = 'prospective'"
        f" AND coalesce(status, 'open') NOT IN ('done', 'cancelled'){extra}"
        " ORDER BY due_at IS NULL, due_at, json_extract(attributes, '$.priority') DESC, id"
        " LIMIT ?",
        (tenant, *params, limit),
    ).fetchall()
    return [row_from_sql(r) for r in rows]


def entities(
    conn: sqlite3.Connection, tenant: str, norms: Sequence[str], cap: int | None = None
) -> dict[str, tuple[int, int]]:
    if not norms:
        return {}
    marks = ",".join("?" * len(norms))
    # Each entity's mentions are counted by triggers (schema 6): counting them here, even
    # stopping at the cap, walked thousands of index entries for a speaker of every turn.
    rows = conn.execute(
        f"SELECT norm, id, mention_count FROM entities WHERE tenant = ? AND norm IN ({marks})",
        (tenant, *norms),
    ).fetchall()
    top = None if cap is None else max(0, cap)
    return {r[0]: (int(r[1]), int(r[2]) if top is None else min(int(r[2]), top)) for r in rows}


def neighbours(
    conn: sqlite3.Connection, tenant: str, entity_ids: Sequence[int], limit: int
) -> list[int]:
    if not entity_ids:
        return []
    marks = ",".join("?" * len(entity_ids))
    rows = conn.execute(
        "SELECT other, count(*) AS n FROM ("
        f" SELECT object_id AS other FROM relations WHERE tenant = ? AND subject_id IN ({marks})"
        " UNION ALL"
        f" SELECT subject_id FROM relations WHERE tenant = ? AND object_id IN ({marks})"
        ") GROUP BY other ORDER BY n DESC, other LIMIT ?",
        (tenant, *entity_ids, tenant, *entity_ids, limit),
    ).fetchall()
    found = set(entity_ids)
    return [int(r[0]) for r in rows if int(r[0]) not in found]


def mentioning(
    conn: sqlite3.Connection, tenant: str, entity_ids: Sequence[int], limit: int
) -> list[tuple[int, int]]:
    """The ``limit`` most recent (memory id, entity id) mentions of ``entity_ids``, newest
    event first (ties: the higher memory id, then entity id).

    Read from the mentions' own index (entity, event time, memory), never joining the
    memories: the join cost 5-8 ms for entities mentioned thousands of times. ``tenant``
    is implied: an entity id is one tenant's (entities are unique per tenant and a memory
    mentions only its own tenant's), and the rows of the ids are read per tenant after.
    """
    if not entity_ids:
        return []
    marks = ",".join("?" * len(entity_ids))
    rows = conn.execute(
        f"SELECT memory_id, entity_id FROM mentions WHERE entity_id IN ({marks})"
        " ORDER BY event_time DESC, memory_id DESC, entity_id DESC LIMIT ?",
        (*entity_ids, limit),
    ).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]


def memory_count(conn: sqlite3.Connection, tenant: str) -> int:
    row = conn.execute("SELECT memories FROM tenant_sizes WHERE tenant = ?", (tenant,)).fetchone()
    return int(row[0]) if row else 0


# One statement, so one snapshot: a first row holding the count of changes (which says
# whether names read before are all still there) and the tenant's largest entity id, then
# the names. Not a read transaction of two statements: an interrupt between them could
# leave the reader inside it for good. Every name is read from the covering (tenant, norm)
# index, in no order (in id order, through the (tenant, id) index and a row lookup each,
# reading 41k names took 27 ms instead of 17).
_HEAD = (  # the count of changes and the largest id
    "coalesce((SELECT deleted FROM entity_deletions WHERE tenant = ?1), 0),"
    " coalesce((SELECT max(id) FROM entities WHERE tenant = ?1), 0)"
)
ENTITY_NAMES = f"SELECT {_HEAD} UNION ALL SELECT norm, NULL FROM entities WHERE tenant = ?1"

# What changed since a read that saw ids up to ?2 and ?3 changes, in one snapshot too:
# the head (kind 0), the changes logged since (kind 1: the name the entity had, or NULL),
# and the names now (kind 2) of the entities past ?2 (through (tenant, id)) and of those
# the log names. A name that went and came back is among these: names are unique within a
# tenant, so no entity the log leaves out held it at the read.
ENTITY_CHANGES = (
    f"SELECT 0, {_HEAD}"
    " UNION ALL SELECT 1, norm, NULL FROM entity_changes WHERE tenant = ?1 AND seq > ?3"
    " UNION ALL SELECT 2, norm, NULL FROM entities WHERE tenant = ?1 AND id > ?2"
    " UNION ALL SELECT 2, e.norm, NULL FROM entity_changes c"
    " JOIN entities e ON e.id = c.entity_id AND e.tenant = ?1"
    " WHERE c.tenant = ?1 AND c.seq > ?3"
)


def entity_names(conn: sqlite3.Connection, tenant: str) -> EntityNames:
    return entity_names_of(conn.execute(ENTITY_NAMES, (tenant,)))


def entity_names_of(rows: Iterator[tuple[Any, ...]]) -> EntityNames:
    """An :class:`EntityNames` from :data:`ENTITY_NAMES`' rows: the head (its second column
    never NULL) and the names (NULL there). SQLite yields a compound's left part first, but
    does not promise it, so a name that comes first is handled too.

    >>> entity_names_of(iter([(2, 9), ("ann", None)]))
    EntityNames(changes=2, last_id=9, names=frozenset({'ann'}))
    >>> entity_names_of(iter([("ann", None), (2, 9), ("bo", None)])).names == {"ann", "bo"}
    True
    """
    head = next(rows)
    if head[1] is not None:
        return EntityNames(int(head[0]), int(head[1]), frozenset(row[0] for row in rows))
    rest = [head, *rows]
    [head] = [row for row in rest if row[1] is not None]
    names = frozenset(row[0] for row in rest if row[1] is None)
    return EntityNames(int(head[0]), int(head[1]), names)


def entity_changes(conn: sqlite3.Connection, tenant: str, after: int, since: int) -> EntityChanges:
    """The changes since ``since`` changes and id ``after``, from :data:`ENTITY_CHANGES`'
    rows in any order; complete if the log holds every change since.

    >>> conn = sqlite3.connect(":memory:")
    >>> for sql in ("CREATE TABLE entities (id INTEGER PRIMARY KEY, tenant, norm)",
    ...             "CREATE TABLE entity_deletions (tenant, deleted)",
    ...             "CREATE TABLE entity_changes (tenant, seq, entity_id, norm)",
    ...             "INSERT INTO entities VALUES (1, 't', 'ann'), (4, 't', 'cy')",
    ...             "INSERT INTO entity_deletions VALUES ('t', 2)",
    ...             "INSERT INTO entity_changes VALUES ('t', 2, 3, 'bo'), ('t', 1, 2, 'eve')"):
    ...     _ = conn.execute(sql)
    >>> changes = entity_changes(conn, "t", 3, 1)
    >>> changes.names, changes.removed, changes.last_id, changes.complete
    (frozenset({'cy'}), frozenset({'bo'}), 4, True)
    >>> sorted(entity_changes(conn, "t", 4, 0).removed)
    ['bo', 'eve']
    >>> _ = conn.execute("DELETE FROM entity_changes WHERE seq = 1")  # pruned
    >>> entity_changes(conn, "t", 4, 0).complete
    False
    """
    changes = last_id = logged = 0
    names: set[str] = set()
    removed: set[str] = set()
    for kind, value, extra in conn.execute(ENTITY_CHANGES, (tenant, after, since)):
        if kind == 2:
            names.add(value)
        elif kind == 1:
            logged += 1
            if value is not None:
                removed.add(value)
        else:
            changes, last_id = int(value), int(extra)
    complete = logged == changes - since
    return EntityChanges(changes, last_id, frozenset(names), frozenset(removed), complete)


def stats(conn: sqlite3.Connection, tenant: str | None) -> dict[str, Any]:
    if tenant is None:
        rows = conn.execute("SELECT layer, count(*) FROM memories GROUP BY layer").fetchall()
        tenants = conn.execute("SELECT count(DISTINCT tenant) FROM memories").fetchone()[0]
    else:
        rows = conn.execute(
            "SELECT layer, count(*) FROM memories WHERE tenant = ? GROUP BY layer", (tenant,)
        ).fetchall()
        tenants = 1 if rows else 0
    layers = {r[0]: int(r[1]) for r in rows}
    entity_count = conn.execute(
        "SELECT count(*) FROM entities" + ("" if tenant is None else " WHERE tenant = ?"),
        () if tenant is None else (tenant,),
    ).fetchone()[0]
    return {
        "memories": sum(layers.values()),
        "layers": layers,
        "tenants": int(tenants),
        "entities": int(entity_count),
    }


def tenants(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT tenant FROM memories ORDER BY tenant")]


def missing_vectors(conn: sqlite3.Connection, model: str, limit: int) -> list[MemoryRow]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM memories m WHERE NOT EXISTS"
        " (SELECT 1 FROM vectors v WHERE v.memory_id = m.id AND v.model = ?) LIMIT ?",
        (model, limit),
    ).fetchall()
    return [row_from_sql(r) for r in rows]


def count_missing_vectors(conn: sqlite3.Connection, model: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM memories m WHERE NOT EXISTS"
        " (SELECT 1 FROM vectors v WHERE v.memory_id = m.id AND v.model = ?)",
        (model,),
    ).fetchone()
    return int(row[0])


def load_state(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT value FROM learned_state WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def read_telemetry(conn: sqlite3.Connection, limit: int) -> list[str]:
    rows = conn.execute(
        "SELECT row FROM (SELECT id, row FROM telemetry ORDER BY id DESC LIMIT ?) ORDER BY id",
        (limit,),
    ).fetchall()
    return [str(r[0]) for r in rows]
