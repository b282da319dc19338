"""Probe: what dropping frequent query terms would save in FTS5 bm25 on one large scope.

``python benchmarks/lexical_pruning.py [--db PATH] [--questions 100]``

Builds (unless ``--db`` exists) the 103k-memory one-tenant store of benchmarks/engine.py
(LoCoMo rewritten 11 times into tenant ``one``), then for a sample of LoCoMo questions runs
the engine's episodic lexical query as is and with every term whose document frequency is
above a share of the index dropped (keeping the rarest term if none is left). Prints the
p50 query time, the top-10 overlap with the unpruned query and the cost of the frequency
lookup (terms are stemmed by a scratch FTS5 table with the engine's tokenizer). A probe
for docs/benchmarks.md, not a feature: the engine does not prune.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import time
from dataclasses import replace
from pathlib import Path

from athena import Memory
from athena.bench.runner import resolve_data
from athena.locomo.data import load_locomo
from athena.locomo.importer import conversation_memories
from athena.retrieval.lexical import terms
from athena.store.sql_reads import scope_token

DATA = resolve_data(None)  # ../shared/data/locomo/locomo10.json, as athena bench finds it
SHARES = (1.0, 0.05, 0.02, 0.01)
QUERY = (
    "SELECT rowid, bm25(memories_fts, 1.0, 0.0) r FROM memories_fts"
    " WHERE memories_fts MATCH ? ORDER BY r LIMIT 50"
)


def build(db: Path) -> None:
    with Memory(db, pool="off") as memory:
        per_conv = [conversation_memories(c) for c in load_locomo(DATA)]
        for copy in range(11):
            for items in per_conv:
                keyed = [replace(i, tenant="one", key=f"{copy}/{i.tenant}/{i.key}") for i in items]
                memory.remember_many(keyed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, default=Path("bench-out/lexical-one-tenant.db"))
    parser.add_argument("--questions", type=int, default=100)
    args = parser.parse_args()
    if not args.db.exists():
        args.db.parent.mkdir(parents=True, exist_ok=True)
        build(args.db)
    conn = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, memories_fts, 'row')")
    conn.execute(
        "CREATE VIRTUAL TABLE temp.q USING fts5(text,"
        " tokenize='porter unicode61 remove_diacritics 2')"
    )
    conn.execute("CREATE VIRTUAL TABLE temp.qv USING fts5vocab(temp, q, 'row')")
    total = conn.execute("SELECT count(*) FROM memories_fts").fetchone()[0]
    asks = [q["question"] for c in json.loads(DATA.read_text()) for q in c["qa"]]
    asks = asks[:: max(1, len(asks) // args.questions)][: args.questions]
    token = scope_token("one", "episodic")

    def frequency(word: str) -> int:
        conn.execute("DELETE FROM temp.q")
        conn.execute("INSERT INTO temp.q VALUES (?)", (word,))
        stemmed = conn.execute("SELECT term FROM temp.qv").fetchone()
        row = stemmed and conn.execute("SELECT doc FROM temp.v WHERE term = ?", stemmed).fetchone()
        return int(row[0]) if row else 0

    def run(words: list[str]) -> tuple[float, list[int]]:
        ored = " OR ".join(f'"{word}"' for word in words)
        expression = f"scope:{token} AND text : ({ored})"
        start = time.perf_counter()
        rows = conn.execute(QUERY, (expression,)).fetchall()
        return (time.perf_counter() - start) * 1000.0, [r[0] for r in rows]

    print(f"{args.db}: {total} indexed rows, {len(asks)} questions, episodic scope")
    print("| max document share | p50 ms | top-10 overlap | frequency lookup p50 ms |")
    print("|---|---|---|---|")
    for share in SHARES:
        times, overlaps, lookups = [], [], []
        for ask in asks:
            words = terms(ask)
            began = time.perf_counter()
            df = {w: frequency(w) for w in words}
            lookups.append((time.perf_counter() - began) * 1000.0)
            kept = [w for w in words if df[w] <= share * total] or [min(words, key=df.__getitem__)]
            _, base = run(words)
            took, got = run(kept)
            times.append(took)
            overlaps.append(len(set(base[:10]) & set(got[:10])) / max(1, len(base[:10])))
        print(
            f"| {share:g} | {statistics.median(times):.2f} | {statistics.mean(overlaps):.3f} "
            f"| {statistics.median(lookups):.3f} |"
        )


if __name__ == "__main__":
    main()
