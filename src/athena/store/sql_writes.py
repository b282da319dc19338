"""Write transactions of the SQLite store: plain functions run on the one write connection,
one at a time."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from athena.errors import NotFound
from athena.store.protocol import MemoryRow, PreparedMemory
from athena.store.sql_reads import row_from_sql, scope_token

Touched = set[tuple[str, str]]


def bump(conn: sqlite3.Connection, touched: Touched, tenant: str, layer: str) -> None:
    """Advance the (tenant, layer) generation inside the current transaction."""
    if (tenant, layer) in touched:
        return
    conn.execute(
        "INSERT INTO generations (tenant, layer, gen) VALUES (?, ?, 1) "
        "ON CONFLICT (tenant, layer) DO UPDATE SET gen = gen + 1",
        (tenant, layer),
    )
    touched.add((tenant, layer))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def put(conn: sqlite3.Connection, touched: Touched, items: Sequence[PreparedMemory]) -> list[int]:
    now = time.time()
    ids: list[int] = []
    for item in items:
        row = conn.execute(
            "SELECT id, text FROM memories WHERE tenant = ? AND layer = ? AND key = ?",
            (item.tenant, item.layer, item.key),
        ).fetchone()
        values = (
            item.kind,
            item.session,
            item.actor,
            item.text,
            item.event_time,
            now,
            _dumps(list(item.sources)),
            _dumps(dict(item.metadata)),
            _dumps(dict(item.attributes)),
        )
        if row is None:
            # A new id is past every id ever used, as the change feed remembers them (it
            # keeps a row, a tombstone once deleted, for every memory), and past every id
            # now (should the feed ever lack one). SQLite's own choice, the largest id
            # now + 1, gave a forgotten newest memory's id to the next one,
            # whose change then replaced the tombstone, so an index of the forgotten
            # memory's scope kept it; and a client holding the old id reached the new one.
            memory_id = int(
                conn.execute(
                    "INSERT INTO memories (id, kind, session, actor, text, event_time,"
                    " updated_at, sources, metadata, attributes, created_at, tenant, layer,"
                    " key, scope) VALUES ("
                    " (SELECT max((SELECT coalesce(max(memory_id), 0) FROM memory_changes),"
                    " (SELECT coalesce(max(id), 0) FROM memories)) + 1),"
                    " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (
                        *values,
                        now,
                        item.tenant,
                        item.layer,
                        item.key,
                        scope_token(item.tenant, item.layer),
                    ),
                ).fetchone()[0]
            )
            text_changed = True
        else:
            memory_id = int(row[0])
            text_changed = row[1] != item.text
            conn.execute(
                "UPDATE memories SET kind = ?, session = ?, actor = ?, text = ?, event_time = ?,"
                " updated_at = ?, sources = ?, metadata = ?, attributes = ? WHERE id = ?",
                (*values, memory_id),
            )
        if item.vector is not None and text_changed:
            _write_vector(conn, memory_id, item.tenant, item.layer, item.model, item.vector)
        if text_changed:
            _link_entities(conn, touched, memory_id, item, now)
        bump(conn, touched, item.tenant, item.layer)
        ids.append(memory_id)
    return ids


def _write_vector(
    conn: sqlite3.Connection,
    memory_id: int,
    tenant: str,
    layer: str,
    model: str,
    vector: npt.NDArray[np.float32],
) -> None:
    # Delete then insert (not UPDATE) so the vector gets a new seq: in-memory indexes see
    # the new seq, load the new vector and drop the old one.
    conn.execute("DELETE FROM vectors WHERE memory_id = ? AND model = ?", (memory_id, model))
    conn.execute(
        "INSERT INTO vectors (memory_id, tenant, layer, model, vector) VALUES (?, ?, ?, ?, ?)",
        (memory_id, tenant, layer, model, np.ascontiguousarray(vector, np.float32).tobytes()),
    )


def _entity_id(conn: sqlite3.Connection, tenant: str, name: str, at: float | None) -> int:
    norm = name.casefold()
    row = conn.execute(
        "INSERT INTO entities (tenant, norm, name, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant, norm) DO UPDATE SET"
        " last_seen = max(coalesce(last_seen, excluded.last_seen), excluded.last_seen)"
        " RETURNING id",
        (tenant, norm, name, at, at),
    ).fetchone()
    return int(row[0])


def _link_entities(
    conn: sqlite3.Connection, touched: Touched, memory_id: int, item: PreparedMemory, now: float
) -> None:
    conn.execute("DELETE FROM mentions WHERE memory_id = ?", (memory_id,))
    conn.execute("DELETE FROM relations WHERE memory_id = ?", (memory_id,))
    at = item.event_time if item.event_time is not None else now
    names = {name.casefold(): name for name in item.entities}
    for subject, _, obj in item.relations:
        names.setdefault(subject.casefold(), subject)
        names.setdefault(obj.casefold(), obj)
    ids = {norm: _entity_id(conn, item.tenant, name, at) for norm, name in names.items()}
    conn.executemany(  # the event time as the memory row now holds it (see schema 6)
        "INSERT OR IGNORE INTO mentions (entity_id, memory_id, event_time)"
        " SELECT ?, id, event_time FROM memories WHERE id = ?",
        [(entity_id, memory_id) for entity_id in ids.values()],
    )
    conn.executemany(
        "INSERT INTO relations (tenant, subject_id, object_id, type, memory_id, at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (item.tenant, ids[s.casefold()], ids[o.casefold()], rel, memory_id, at)
            for s, rel, o in item.relations
        ],
    )
    if ids:
        bump(conn, touched, item.tenant, "graph")


def update(
    conn: sqlite3.Connection,
    touched: Touched,
    tenant: str,
    memory_id: int,
    changes: Mapping[str, Any],
    prepared: PreparedMemory | None,
) -> MemoryRow:
    row = conn.execute(
        "SELECT * FROM memories WHERE id = ? AND tenant = ?", (memory_id, tenant)
    ).fetchone()
    if row is None:
        raise NotFound(f"no memory {memory_id} for tenant {tenant!r}")
    current = row_from_sql(row)
    sets: dict[str, Any] = {"updated_at": time.time()}
    for name in ("text", "event_time", "session", "actor"):
        if name in changes:
            sets[name] = changes[name]
    for name in ("metadata", "attributes"):
        if name in changes:
            sets[name] = _dumps({**getattr(current, name), **changes[name]})
    conn.execute(
        f"UPDATE memories SET {', '.join(f'{c} = ?' for c in sets)} WHERE id = ?",
        (*sets.values(), memory_id),
    )
    if prepared is not None:
        if prepared.vector is not None:
            _write_vector(conn, memory_id, tenant, current.layer, prepared.model, prepared.vector)
        _link_entities(conn, touched, memory_id, prepared, sets["updated_at"])
    bump(conn, touched, tenant, current.layer)
    new = conn.execute("SELECT * FROM memories WHERE id = ?", (memory_id,)).fetchone()
    return row_from_sql(new)


UNMENTIONED = "DELETE FROM entities WHERE tenant = ? AND mention_count = 0"


def delete(
    conn: sqlite3.Connection, touched: Touched, tenant: str, ids: Sequence[int]
) -> list[int]:
    deleted: list[int] = []
    for memory_id in ids:
        row = conn.execute(
            "DELETE FROM memories WHERE id = ? AND tenant = ? RETURNING layer",
            (memory_id, tenant),
        ).fetchone()
        if row is not None:
            deleted.append(memory_id)
            bump(conn, touched, tenant, row[0])
            # Mentions cascade away; the graph layer's answers change with them.
            bump(conn, touched, tenant, "graph")
    # Entities nobody mentions any more would otherwise match queries forever. Their
    # mention counts are kept by triggers (schema 6), and a partial index holds those at 0.
    if deleted:
        conn.execute(UNMENTIONED, (tenant,))
    return deleted


def put_vectors(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[MemoryRow, npt.NDArray[np.float32]]],
    model: str,
) -> None:
    for row, vector in rows:
        _write_vector(conn, row.id, row.tenant, row.layer, model, vector)


def append_telemetry(
    conn: sqlite3.Connection, rows: Sequence[tuple[float, str, str, str, str]], keep: int
) -> None:
    conn.executemany(
        "INSERT INTO telemetry (at, tenant, query_type, strategy, row) VALUES (?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("DELETE FROM telemetry WHERE id <= (SELECT max(id) FROM telemetry) - ?", (keep,))


def save_state(conn: sqlite3.Connection, name: str, value: str) -> None:
    conn.execute(
        "INSERT INTO learned_state (name, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
        " updated_at = excluded.updated_at",
        (name, value, time.time()),
    )
