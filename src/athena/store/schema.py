"""Versioned schema migrations for the SQLite store.

Each migration runs once, in order, inside one transaction, and records its version in
``PRAGMA user_version``; opening an older file upgrades it, opening a newer one is refused.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

from athena.errors import StoreError
from athena.store.connection import open_connection, translated

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: memories of all layers, their lexical index, vectors, graph, generations.
    """
    CREATE TABLE memories (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        layer TEXT NOT NULL,
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        session TEXT,
        actor TEXT,
        text TEXT NOT NULL,
        event_time REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        sources TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        attributes TEXT NOT NULL DEFAULT '{}',
        scope TEXT NOT NULL,
        due_at REAL GENERATED ALWAYS AS (json_extract(attributes, '$.due_at')) VIRTUAL,
        status TEXT GENERATED ALWAYS AS (json_extract(attributes, '$.status')) VIRTUAL,
        UNIQUE (tenant, layer, key)
    );
    CREATE INDEX memories_scope_time ON memories (tenant, layer, event_time);
    CREATE INDEX memories_tasks ON memories (tenant, layer, status, due_at);

    -- External-content FTS5: the text lives once, in memories. ``scope`` holds one token
    -- per (tenant, layer) so a MATCH is intersected with the scope's doclist inside FTS5
    -- instead of scoring every tenant's matches with bm25.
    CREATE VIRTUAL TABLE memories_fts USING fts5 (
        text, scope, content='memories', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
        INSERT INTO memories_fts (rowid, text, scope) VALUES (new.id, new.text, new.scope);
    END;
    CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
        INSERT INTO memories_fts (memories_fts, rowid, text, scope)
        VALUES ('delete', old.id, old.text, old.scope);
    END;
    CREATE TRIGGER memories_au AFTER UPDATE OF text, scope ON memories BEGIN
        INSERT INTO memories_fts (memories_fts, rowid, text, scope)
        VALUES ('delete', old.id, old.text, old.scope);
        INSERT INTO memories_fts (rowid, text, scope) VALUES (new.id, new.text, new.scope);
    END;

    -- One vector per (memory, model). ``seq`` grows with every (re)write, so an in-memory
    -- index can load what is new since the last seq it saw and spot replaced vectors.
    CREATE TABLE vectors (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        memory_id INTEGER NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
        tenant TEXT NOT NULL,
        layer TEXT NOT NULL,
        model TEXT NOT NULL,
        vector BLOB NOT NULL,
        UNIQUE (memory_id, model)
    );
    CREATE INDEX vectors_scope ON vectors (tenant, layer, model, seq);

    CREATE TABLE entities (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        norm TEXT NOT NULL,
        name TEXT NOT NULL,
        first_seen REAL,
        last_seen REAL,
        UNIQUE (tenant, norm)
    );
    CREATE TABLE mentions (
        entity_id INTEGER NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
        memory_id INTEGER NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
        PRIMARY KEY (entity_id, memory_id)
    ) WITHOUT ROWID;
    CREATE INDEX mentions_memory ON mentions (memory_id);
    CREATE TABLE relations (
        id INTEGER PRIMARY KEY,
        tenant TEXT NOT NULL,
        subject_id INTEGER NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
        object_id INTEGER NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
        type TEXT NOT NULL,
        memory_id INTEGER NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
        at REAL
    );
    CREATE INDEX relations_subject ON relations (subject_id);
    CREATE INDEX relations_object ON relations (object_id);
    CREATE INDEX relations_memory ON relations (memory_id);

    -- Bumped in the same transaction as every write to (tenant, layer): a cached recall
    -- that read an older generation is never served.
    CREATE TABLE generations (
        tenant TEXT NOT NULL,
        layer TEXT NOT NULL,
        gen INTEGER NOT NULL,
        PRIMARY KEY (tenant, layer)
    ) WITHOUT ROWID;
    """,
    # 2: execution telemetry, bounded and rotated by the writer.
    """
    CREATE TABLE telemetry (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        tenant TEXT NOT NULL,
        query_type TEXT NOT NULL,
        strategy TEXT NOT NULL,
        row TEXT NOT NULL
    );
    CREATE TABLE learned_state (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 3: a change feed for the in-memory indexes: the latest change of each memory, with a
    # tombstone when it is deleted, so an index built long ago can catch up exactly (the
    # vectors table alone cannot tell a search that a memory is gone).
    """
    CREATE TABLE memory_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        memory_id INTEGER NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        layer TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX memory_changes_scope ON memory_changes (tenant, layer, seq);
    CREATE TRIGGER memory_changes_ai AFTER INSERT ON memories BEGIN
        INSERT OR REPLACE INTO memory_changes (memory_id, tenant, layer)
        VALUES (new.id, new.tenant, new.layer);
    END;
    CREATE TRIGGER memory_changes_au AFTER UPDATE OF text ON memories BEGIN
        INSERT OR REPLACE INTO memory_changes (memory_id, tenant, layer)
        VALUES (new.id, new.tenant, new.layer);
    END;
    CREATE TRIGGER memory_changes_ad AFTER DELETE ON memories BEGIN
        INSERT OR REPLACE INTO memory_changes (memory_id, tenant, layer, deleted)
        VALUES (old.id, old.tenant, old.layer, 1);
    END;
    INSERT INTO memory_changes (memory_id, tenant, layer)
    SELECT id, tenant, layer FROM memories ORDER BY id;
    """,
    # 4: one counter that moves with every generation: a reader that sees the file change
    # (PRAGMA data_version) tells a memory write from a telemetry or learned-state write
    # with one row read, instead of forgetting every tenant's cached generations.
    """
    CREATE TABLE write_clock (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        n INTEGER NOT NULL
    );
    INSERT INTO write_clock (id, n) VALUES (1, 0);
    CREATE TRIGGER generations_clock_ai AFTER INSERT ON generations BEGIN
        UPDATE write_clock SET n = n + 1 WHERE id = 1;
    END;
    CREATE TRIGGER generations_clock_au AFTER UPDATE ON generations BEGIN
        UPDATE write_clock SET n = n + 1 WHERE id = 1;
    END;
    CREATE TRIGGER generations_clock_ad AFTER DELETE ON generations BEGIN
        UPDATE write_clock SET n = n + 1 WHERE id = 1;
    END;
    """,
    # 5: a random identity for this database, minted once: files cached beside it (vector
    # index snapshots) name the database they were made from, so they are never applied
    # to another file that happens to sit at the same path.
    """
    CREATE TABLE store_identity (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        uuid TEXT NOT NULL
    );
    INSERT INTO store_identity (id, uuid) VALUES (1, lower(hex(randomblob(16))));
    """,
    # 6: what a recall reads on a large tenant, made cheap (one tenant of 103k memories):
    # - each mention carries its memory's event time, indexed per entity, so the graph
    #   layer finds an entity's most recent mentions in the index alone (joining every
    #   mention to its memory to sort them took 5-8 ms for one question in ten); triggers
    #   keep the copy equal to the memory's event time, whoever writes (a process of an
    #   older release still running, another tool);
    # - the tombstones of a scope have an index of their own: a vector index that never
    #   saw a deletion asks for those after seq 0, which walked every change of the scope
    #   (10 ms on the first recall after each write);
    # - each tenant's memory count and each entity's mention count, kept by triggers: the
    #   graph layer's ubiquity cap read the first with a count over the tenant (8 ms after
    #   each write) and the second by counting an entity's mentions up to the cap (0.28 ms
    #   a recall, median).
    """
    ALTER TABLE mentions ADD COLUMN event_time REAL;
    UPDATE mentions SET event_time =
        (SELECT event_time FROM memories WHERE memories.id = mentions.memory_id);
    CREATE INDEX mentions_recent ON mentions (entity_id, event_time, memory_id);
    CREATE TRIGGER mentions_time_ai AFTER INSERT ON mentions
    WHEN new.event_time IS NULL
        AND (SELECT event_time FROM memories WHERE id = new.memory_id) IS NOT NULL BEGIN
        UPDATE mentions SET event_time =
            (SELECT event_time FROM memories WHERE id = new.memory_id)
        WHERE entity_id = new.entity_id AND memory_id = new.memory_id;
    END;
    CREATE TRIGGER mentions_time_au AFTER UPDATE OF event_time ON memories
    WHEN old.event_time IS NOT new.event_time BEGIN
        UPDATE mentions SET event_time = new.event_time WHERE memory_id = new.id;
    END;
    ALTER TABLE entities ADD COLUMN mention_count INTEGER NOT NULL DEFAULT 0;
    UPDATE entities SET mention_count =
        (SELECT count(*) FROM mentions WHERE mentions.entity_id = entities.id);
    CREATE TRIGGER entity_mentions_ai AFTER INSERT ON mentions BEGIN
        UPDATE entities SET mention_count = mention_count + 1 WHERE id = new.entity_id;
    END;
    CREATE TRIGGER entity_mentions_ad AFTER DELETE ON mentions BEGIN
        UPDATE entities SET mention_count = mention_count - 1 WHERE id = old.entity_id;
    END;
    CREATE INDEX memory_changes_deleted ON memory_changes (tenant, layer, seq) WHERE deleted;
    CREATE TABLE tenant_sizes (
        tenant TEXT PRIMARY KEY,
        memories INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO tenant_sizes (tenant, memories)
    SELECT tenant, count(*) FROM memories GROUP BY tenant;
    CREATE TRIGGER tenant_sizes_ai AFTER INSERT ON memories BEGIN
        INSERT INTO tenant_sizes (tenant, memories) VALUES (new.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET memories = memories + 1;
    END;
    CREATE TRIGGER tenant_sizes_ad AFTER DELETE ON memories BEGIN
        UPDATE tenant_sizes SET memories = memories - 1 WHERE tenant = old.tenant;
    END;
    CREATE TRIGGER tenant_sizes_au AFTER UPDATE OF tenant ON memories
    WHEN old.tenant IS NOT new.tenant BEGIN
        UPDATE tenant_sizes SET memories = memories - 1 WHERE tenant = old.tenant;
        INSERT INTO tenant_sizes (tenant, memories) VALUES (new.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET memories = memories + 1;
    END;
    """,
    # 7: how many of each tenant's entities were ever deleted (or renamed, moved, given
    # another id, or inserted below the tenant's largest id: none of which Athena does),
    # kept by triggers: the graph layer then loads only the names added since it last
    # looked (entity ids only grow until an entity is deleted, when the largest may be
    # reused), and loads all of them again only when this count has moved; the new names
    # come through an index of each tenant's entities by id. Reloading every name after
    # each write took 27 ms a recall on a tenant of 41k names. And the entities no memory
    # mentions have an index of their own: a deletion removes them, and finding them walked
    # every entity of the tenant (18 ms a forget there).
    """
    CREATE INDEX entities_recent ON entities (tenant, id);
    CREATE INDEX entities_unmentioned ON entities (tenant) WHERE mention_count = 0;
    CREATE TABLE entity_deletions (
        tenant TEXT PRIMARY KEY,
        deleted INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TRIGGER entity_deletions_ad AFTER DELETE ON entities BEGIN
        INSERT INTO entity_deletions (tenant, deleted) VALUES (old.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET deleted = deleted + 1;
    END;
    CREATE TRIGGER entity_deletions_au AFTER UPDATE OF id, tenant, norm ON entities
    WHEN old.id IS NOT new.id OR old.tenant IS NOT new.tenant OR old.norm IS NOT new.norm
    BEGIN
        INSERT INTO entity_deletions (tenant, deleted) VALUES (old.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET deleted = deleted + 1;
        INSERT INTO entity_deletions (tenant, deleted) SELECT new.tenant, 1
        WHERE new.tenant IS NOT old.tenant
        ON CONFLICT (tenant) DO UPDATE SET deleted = deleted + 1;
    END;
    CREATE TRIGGER entity_deletions_ai AFTER INSERT ON entities
    WHEN new.id < (SELECT max(id) FROM entities WHERE tenant = new.tenant) BEGIN
        INSERT INTO entity_deletions (tenant, deleted) VALUES (new.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET deleted = deleted + 1;
    END;
    """,
    # 8: what each counted change was, kept for the last 1,024-1,279 changes of a tenant
    # (pruned 256 at a time): the entity's id, read again, and the name it had, which may
    # have gone. The graph layer then applies the changes since its count instead of reading
    # every name again (19-22 ms the first recall after a forget, on a tenant of 41k names).
    # SQLite may give a gone entity's id to a new one, below the largest id a reader saw:
    # every id that enters a tenant (an insert, a move, a new id) at or below the largest it
    # ever held (``max_seen``), or at or below 0 (a reader of a tenant with none saw 0), is
    # counted and logged, so a reused id is always one the log names. (The table and its
    # ``deleted`` column keep their schema-7 names: they count every logged change.) A row
    # another writer's REPLACE displaces fires no delete trigger (recursive_triggers is off),
    # so the BEFORE triggers log the row an insert's or an update's id would displace (a
    # plain conflict aborts the statement, log and all); one displaced by a name leaves that
    # name held, and its id, if reused, enters at or below ``max_seen``. An insert that lets
    # SQLite pick the id shows the BEFORE trigger an id of -1: an entity another writer put
    # at -1 is logged again by each such insert (harmless, a re-read). The update triggers
    # list rowid, _rowid_ and oid beside id: ``UPDATE OF id`` does not fire for ``SET rowid
    # = ...``. Views with INSTEAD OF triggers keep each rule in one place.
    """
    ALTER TABLE entity_deletions ADD COLUMN max_seen INTEGER;
    INSERT INTO entity_deletions (tenant, deleted, max_seen)
        SELECT tenant, 0, max(id) FROM entities WHERE true GROUP BY tenant
        ON CONFLICT (tenant) DO UPDATE SET max_seen = excluded.max_seen;
    CREATE TABLE entity_changes (
        tenant TEXT NOT NULL,
        seq INTEGER NOT NULL,
        entity_id INTEGER NOT NULL,
        norm TEXT,
        PRIMARY KEY (tenant, seq)
    ) WITHOUT ROWID;
    CREATE VIEW entity_change_log (tenant, entity_id, norm) AS
        SELECT tenant, entity_id, norm FROM entity_changes;
    CREATE TRIGGER entity_change_log_ii INSTEAD OF INSERT ON entity_change_log BEGIN
        INSERT INTO entity_deletions (tenant, deleted) VALUES (new.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET deleted = deleted + 1;
        INSERT INTO entity_changes (tenant, seq, entity_id, norm)
        SELECT new.tenant, deleted, new.entity_id, new.norm
        FROM entity_deletions WHERE tenant = new.tenant;
        DELETE FROM entity_changes WHERE tenant = new.tenant AND seq <=
            (SELECT deleted - 1024 FROM entity_deletions
             WHERE tenant = new.tenant AND deleted % 256 = 0);
    END;
    CREATE VIEW entity_arrivals (tenant, entity_id) AS
        SELECT tenant, entity_id FROM entity_changes;
    CREATE TRIGGER entity_arrivals_ii INSTEAD OF INSERT ON entity_arrivals BEGIN
        INSERT INTO entity_change_log SELECT new.tenant, new.entity_id, NULL
        WHERE new.entity_id <= max(0, coalesce(
            (SELECT max_seen FROM entity_deletions WHERE tenant = new.tenant), 0));
        INSERT INTO entity_deletions (tenant, deleted, max_seen)
        VALUES (new.tenant, 0, new.entity_id)
        ON CONFLICT (tenant) DO UPDATE SET
            max_seen = max(coalesce(max_seen, excluded.max_seen), excluded.max_seen);
    END;
    DROP TRIGGER entity_deletions_ad;
    DROP TRIGGER entity_deletions_au;
    DROP TRIGGER entity_deletions_ai;
    CREATE TRIGGER entity_deletions_ad AFTER DELETE ON entities BEGIN
        INSERT INTO entity_change_log VALUES (old.tenant, old.id, old.norm);
    END;
    CREATE TRIGGER entity_deletions_au
    AFTER UPDATE OF id, tenant, norm, rowid, _rowid_, oid ON entities
    WHEN old.id IS NOT new.id OR old.tenant IS NOT new.tenant OR old.norm IS NOT new.norm
    BEGIN
        INSERT INTO entity_change_log VALUES (old.tenant, old.id, old.norm);
        INSERT INTO entity_arrivals SELECT new.tenant, new.id
        WHERE new.id IS NOT old.id OR new.tenant IS NOT old.tenant;
    END;
    CREATE TRIGGER entity_deletions_ai AFTER INSERT ON entities BEGIN
        INSERT INTO entity_arrivals VALUES (new.tenant, new.id);
    END;
    CREATE TRIGGER entity_displaced_bi BEFORE INSERT ON entities
    WHEN EXISTS (SELECT 1 FROM entities WHERE id = new.id) BEGIN
        INSERT INTO entity_change_log SELECT tenant, id, norm FROM entities WHERE id = new.id;
    END;
    CREATE TRIGGER entity_displaced_bu BEFORE UPDATE OF id, rowid, _rowid_, oid ON entities
    WHEN old.id IS NOT new.id BEGIN
        INSERT INTO entity_change_log SELECT tenant, id, norm FROM entities WHERE id = new.id;
    END;
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


def initialise(path: Path) -> None:
    """Create the database at ``path``, or bring it to this version, in WAL mode.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "s.db"
    >>> initialise(path); initialise(path)  # the second finds nothing to do
    >>> path.is_file()
    True
    """
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    conn = open_connection(path)
    try:
        with translated():
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                migrate(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    finally:
        conn.close()


def migrate(conn: sqlite3.Connection, to: int = SCHEMA_VERSION) -> int:
    """Bring ``conn``'s database to version ``to`` (this release's, unless a test builds a
    file as an older release left it); return the version it had.

    The caller holds the write lock (``BEGIN IMMEDIATE``) so two processes opening a new
    file at once cannot both run a migration.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema version {version} is newer than this Athena ({SCHEMA_VERSION})"
        )
    for number in range(version, to):
        for statement in _split(MIGRATIONS[number]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    return version


def _split(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; run statements one by one instead.
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
