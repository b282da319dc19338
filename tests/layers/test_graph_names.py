"""The graph layer's entity names against any writer: a Hypothesis state machine writes to
a real file through a raw ``sqlite3`` connection (as another program, or an older Athena,
could: explicit, reused, zero and negative ids, renames, moves between tenants, id
changes, REPLACE, bursts that prune the change log), and the file may start at schema 6 or
7 and be migrated part-way. Names read through a ``SQLiteStore`` from any snapshot held
before must always be exactly the tenant's names."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from athena.layers.graph import Names, read_names
from athena.store import SQLiteStore
from athena.store.schema import SCHEMA_VERSION, migrate

TENANTS = st.sampled_from(["t", "u"])
NAMES = st.sampled_from([f"n{i}" for i in range(4)])
IDS = st.integers(-1, 6)


class NamesAgainstAnyWriter(RuleBasedStateMachine):
    """Writes through a raw connection; reads through the store, from held snapshots."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "names.db"
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.store: SQLiteStore | None = None
        self.held: dict[str, list[Names | None]] = {"t": [None], "u": [None]}

    @initialize(version=st.sampled_from([6, 7, SCHEMA_VERSION]))
    def at_version(self, version: int) -> None:
        migrate(self.conn, to=version)

    def write(self, sql: str, *args: object) -> None:
        with contextlib.suppress(sqlite3.IntegrityError):  # aborted: its triggers' writes too
            self.conn.execute(sql, args)

    @rule(tenant=TENANTS, name=NAMES, entity_id=st.none() | IDS)
    def insert(self, tenant: str, name: str, entity_id: int | None) -> None:
        self.write(
            "INSERT INTO entities (id, tenant, norm, name) VALUES (?, ?, ?, 'x')",
            entity_id,
            tenant,
            name,
        )

    @rule(tenant=TENANTS, name=NAMES)
    def upsert(self, tenant: str, name: str) -> None:  # as Athena writes an entity
        self.write(
            "INSERT INTO entities (tenant, norm, name) VALUES (?, ?, 'x')"
            " ON CONFLICT (tenant, norm) DO UPDATE SET last_seen = 1",
            tenant,
            name,
        )

    @rule(tenant=TENANTS, name=NAMES, entity_id=IDS)
    def replace(self, tenant: str, name: str, entity_id: int) -> None:
        self.write(
            "INSERT OR REPLACE INTO entities (id, tenant, norm, name) VALUES (?, ?, ?, 'x')",
            entity_id,
            tenant,
            name,
        )

    @rule(entity_id=IDS)
    def delete(self, entity_id: int) -> None:
        self.write("DELETE FROM entities WHERE id = ?", entity_id)

    @rule(entity_id=IDS, name=NAMES, verb=st.sampled_from(["UPDATE", "UPDATE OR REPLACE"]))
    def rename(self, entity_id: int, name: str, verb: str) -> None:
        self.write(f"{verb} entities SET norm = ? WHERE id = ?", name, entity_id)

    @rule(entity_id=IDS, tenant=TENANTS)
    def move(self, entity_id: int, tenant: str) -> None:
        self.write("UPDATE entities SET tenant = ? WHERE id = ?", tenant, entity_id)

    @rule(entity_id=IDS, new_id=IDS, column=st.sampled_from(["id", "rowid"]))
    def change_id(self, entity_id: int, new_id: int, column: str) -> None:
        self.write(f"UPDATE OR REPLACE entities SET {column} = ? WHERE id = ?", new_id, entity_id)

    @rule(tenant=TENANTS)
    def delete_all(self, tenant: str) -> None:
        self.write("DELETE FROM entities WHERE tenant = ?", tenant)

    @rule(tenant=TENANTS, count=st.integers(1, 700))
    def churn(self, tenant: str, count: int) -> None:
        """Names that come and go, enough to prune the change log past a held count."""
        self.conn.execute("BEGIN")
        for i in range(count):
            self.conn.execute(
                "INSERT INTO entities (tenant, norm, name) VALUES (?, ?, 'x')", (tenant, f"c{i}")
            )
            self.conn.execute(
                "DELETE FROM entities WHERE tenant = ? AND norm = ?", (tenant, f"c{i}")
            )
        self.conn.execute("COMMIT")

    @precondition(lambda self: self.store is None)
    @rule()
    def migrate(self) -> None:
        self.store = SQLiteStore(self.path)  # an older file is brought to this version

    @rule(tenant=TENANTS, which=st.integers(0, 8))
    def read(self, tenant: str, which: int) -> None:
        if self.store is None:
            self.migrate()
        assert self.store is not None
        snapshots = self.held[tenant]
        names = read_names(self.store, tenant, snapshots[which % len(snapshots)])
        rows = self.conn.execute("SELECT norm FROM entities WHERE tenant = ?", (tenant,))
        want = {row[0] for row in rows}
        universe = {f"n{i}" for i in range(6)} | {f"c{i}" for i in range(700)}
        assert {name for name in universe if name in names} == want
        assert len(names) == len(want)
        snapshots.append(names)

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()
        self.conn.close()
        self.dir.cleanup()


NamesAgainstAnyWriter.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestNamesAgainstAnyWriter = NamesAgainstAnyWriter.TestCase
