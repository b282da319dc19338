"""Durability under ``kill -9``: a writer is SIGKILLed at random moments, then the file is audited.

``python benchmarks/reliability/kill_writer.py [--cycles 100] [--seed 1] [--max-delay 1.5]
[--workdir DIR] [--json OUT]``

Each cycle starts a writer process on the same database. The writer loops over a mix of
operations on three tenants and all five layers: new memories, keyed upserts (same key
again = update in place), ``update`` of an existing id, ``remember_many`` batches (all or
none) and ``forget``. Before each call it appends an *intent* line to an ack log; after the
call returned it appends an *ack* line and fsyncs the log: an acked write is one the caller
was told succeeded. The parent SIGKILLs the writer at a random moment (usually while it
writes; one cycle in ten while it is still starting, i.e. opening or creating the file),
then audits the file:

- it opens again (``Memory(...)``, which recovers the WAL);
- ``PRAGMA integrity_check`` = ok, FTS5 ``integrity-check`` passes, no foreign-key
  violation, every row has its vector and lexical-index entry and nothing is orphaned
  (:mod:`store_checks`);
- every acknowledged write is there and complete: text, layer and tenant as written (or as
  later acknowledged writes left them; a forgotten id is gone);
- the one write in flight at the kill is all or nothing: an update/forget left the row
  either before or after, a batch has all of its rows or none;
- for the cycle's acknowledged memories (and a sample of older ones), a search of the
  exact text finds each in the lexical index and in the vector index, a full recall finds
  it in the top 10 (episodic, semantic, procedural; graph recalls by entities and
  prospective re-ranks by urgency, so their misses are counted apart as ranking figures),
  and its stored vector equals the embedding of its text.

A SIGKILL is a process crash: what reached the OS survives it. The store runs WAL with
``synchronous = NORMAL``, so this does not model a power cut (there SQLite may drop the
last commits; ``synchronous = FULL`` would be needed).

Prints a Markdown summary; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_checks import integrity_problems

TENANTS = ("acme", "globex", "initech")
LAYERS = ("episodic", "semantic", "procedural", "prospective", "graph")
WORDS = (
    "Alice Bob Carol Dave Erin Frank moved baked hiked painted wrote repaired visited "
    "Lisbon Porto Oslo garden bicycle piano kitchen river mountain report budget"
).split()
OPS = (("new", 35), ("keyed", 25), ("update", 15), ("batch", 15), ("forget", 10))
KEYS_PER_SCOPE = 40


# -- the writer (child process) ---------------------------------------------------------------


def _attributes(layer: str, rng: random.Random) -> dict[str, Any]:
    if layer == "prospective":
        return {"priority": rng.randint(0, 10), "due_at": 1.7e9 + rng.randint(0, 10**7)}
    if layer == "graph":
        a, b = rng.sample(WORDS[:6], 2)
        return {"relations": [[a, "knows", b]]}
    return {}


def _text(rng: random.Random, tag: str) -> str:
    # ``tag`` is a token no other text has: the exact text finds exactly this memory.
    return f"{' '.join(rng.choices(WORDS, k=6))} {tag}."


def child(db: str, acklog: str, seed: int) -> None:
    """The writer: loops until killed, logging intents and fsync'd acks."""
    from athena import Memory
    from athena.records import MemoryInput

    rng = random.Random(seed)
    memory = Memory(db, execution="sequential")
    conn = sqlite3.connect(db)
    live = [(int(r[0]), r[1], r[2]) for r in conn.execute("SELECT id, tenant, layer FROM memories")]
    conn.close()
    log = open(acklog, "a", encoding="utf-8")  # noqa: SIM115 (held until the process dies)
    print("ready", flush=True)
    seq = 0
    while True:
        seq += 1
        tag = f"tag{seed}x{seq}"
        op = rng.choices([o for o, _ in OPS], [w for _, w in OPS])[0]
        if op in ("update", "forget") and not live:
            op = "new"
        intent: dict[str, Any] = {"seq": seq, "phase": "intent", "op": op}
        if op in ("new", "keyed", "batch"):
            count = rng.randint(2, 6) if op == "batch" else 1
            items, used = [], set()
            for i in range(count):
                tenant, layer = rng.choice(TENANTS), rng.choice(LAYERS)
                keyed = op == "keyed" or (op == "batch" and rng.random() < 0.5)
                key = f"k{rng.randrange(KEYS_PER_SCOPE)}" if keyed else None
                if key is not None and (tenant, layer, key) in used:
                    key = None  # one key once per batch: the all-or-none check stays exact
                used.add((tenant, layer, key))
                items.append(
                    {"tenant": tenant, "layer": layer, "key": key, "text": _text(rng, f"{tag}i{i}")}
                )
            intent["items"] = items
        else:
            index = rng.randrange(len(live))
            memory_id, tenant, layer = live[index]
            intent.update(id=memory_id, tenant=tenant, layer=layer)
            if op == "update":
                intent["text"] = _text(rng, tag)
        log.write(json.dumps(intent) + "\n")
        log.flush()
        if op in ("new", "keyed", "batch"):
            ids = memory.remember_many(
                [
                    MemoryInput(
                        layer=it["layer"],
                        text=it["text"],
                        tenant=it["tenant"],
                        key=it["key"],
                        session=f"s{seq % 7}",
                        actor=rng.choice(WORDS[:6]),
                        event_time=1.7e9 + seq,
                        metadata={"seq": seq, "nested": {"a": [1, 2, {"b": tag}]}},
                        attributes=_attributes(it["layer"], rng),
                    )
                    for it in intent["items"]
                ]
            )
            for it, memory_id in zip(intent["items"], ids, strict=True):
                entry = (memory_id, it["tenant"], it["layer"])
                if entry not in live:
                    live.append(entry)
        elif op == "update":
            ids = [memory.update(intent["id"], tenant=intent["tenant"], text=intent["text"])]
        else:
            ids = memory.forget([intent["id"]], tenant=intent["tenant"])
            live.pop(index)
        log.write(json.dumps({"seq": seq, "phase": "ack", "ids": ids}) + "\n")
        log.flush()
        os.fsync(log.fileno())


# -- the auditor (parent) ---------------------------------------------------------------------

Row = tuple[str, str, str]  # tenant, layer, text


@dataclass
class Model:
    """What the acknowledged writes say the store holds: id -> row, or None once forgotten."""

    rows: dict[int, Row | None] = field(default_factory=dict)
    offset: int = 0  # bytes of the ack log already applied
    acked_ops: int = 0
    acked_records: int = 0


Event = tuple[str, dict[str, Any], Any]  # ("ack", intent, ids) or ("resolved", intent, rows)


def _read_log(path: Path, model: Model) -> tuple[list[Event], dict[str, Any] | None]:
    """Events logged since the last read, and the intent still pending (in flight at the kill).

    A pending intent is resolved by the auditor, which then logs a ``resolved`` line with
    the rows it found, so replaying the whole log from the start gives the same model.
    """
    data = path.read_bytes()[model.offset :]
    lines = data.split(b"\n")
    complete, torn = lines[:-1], lines[-1]
    model.offset += len(data) - len(torn)  # a torn last line is dropped (truncated below)
    if torn:
        with path.open("r+b") as handle:
            handle.truncate(model.offset)
    events: list[Event] = []
    pending: dict[str, Any] | None = None
    for raw in complete:
        entry = json.loads(raw)
        if entry["phase"] == "intent":
            assert pending is None, (pending, entry)
            pending = entry
            continue
        assert pending is not None and pending["seq"] == entry["seq"], (pending, entry)
        if entry["phase"] == "ack":
            events.append(("ack", pending, list(entry["ids"])))
        else:
            rows = {int(k): None if v is None else tuple(v) for k, v in entry["rows"].items()}
            events.append(("resolved", pending, rows))
        pending = None
    return events, pending


def _log_resolution(path: Path, model: Model, seq: int, rows: dict[int, Row | None]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"seq": seq, "phase": "resolved", "rows": rows}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    model.offset = path.stat().st_size


def _apply(model: Model, intent: dict[str, Any], ids: list[int]) -> list[int]:
    op = intent["op"]
    if op in ("new", "keyed", "batch"):
        for item, memory_id in zip(intent["items"], ids, strict=True):
            model.rows[memory_id] = (item["tenant"], item["layer"], item["text"])
    elif op == "update":
        model.rows[intent["id"]] = (intent["tenant"], intent["layer"], intent["text"])
    else:
        model.rows[intent["id"]] = None
    model.acked_ops += 1
    model.acked_records += len(ids)
    return [i for i in ids if model.rows.get(i) is not None]


def _rows(conn: sqlite3.Connection) -> dict[int, Row]:
    return {
        int(r[0]): (r[1], r[2], r[3])
        for r in conn.execute("SELECT id, tenant, layer, text FROM memories")
    }


def _resolve_pending(
    model: Model, pending: dict[str, Any], stored: dict[int, Row], problems: list[str]
) -> dict[int, Row | None]:
    """The write in flight at the kill: all or nothing. Returns the rows it left."""
    op = pending["op"]
    adopted: dict[int, Row | None] = {}
    if op in ("new", "keyed", "batch"):
        by_text = {row[2]: memory_id for memory_id, row in stored.items()}
        found = [by_text.get(item["text"]) for item in pending["items"]]
        present = [i for i in found if i is not None]
        if present and len(present) != len(found):
            problems.append(f"half-applied batch seq {pending['seq']}: {found}")
        for item, memory_id in zip(pending["items"], found, strict=True):
            if memory_id is not None:
                if stored[memory_id][:2] != (item["tenant"], item["layer"]):
                    problems.append(f"in-flight write {memory_id} landed in the wrong scope")
                adopted[memory_id] = stored[memory_id]
    else:
        memory_id = pending["id"]
        before = model.rows.get(memory_id, stored.get(memory_id))
        after = None if op == "forget" else (pending["tenant"], pending["layer"], pending["text"])
        now = stored.get(memory_id)
        if now not in (before, after):
            problems.append(
                f"in-flight {op} of {memory_id} left {now!r}, not {before!r} or {after!r}"
            )
        adopted[memory_id] = now
    model.rows.update(adopted)
    return adopted


def audit(
    db: Path, log: Path, model: Model, embedder: Any, rng: random.Random, sample: int = 20
) -> dict[str, Any]:
    """Open the file, check it, compare it with the acknowledged writes."""
    from athena import Memory
    from athena.errors import AthenaError
    from athena.retrieval.lexical import match_expression
    from athena.store.protocol import RowFilter

    problems: list[str] = []
    ranking: dict[str, int] = {}
    recalled: dict[str, int] = {}
    started = time.perf_counter()
    try:
        memory = Memory(db, embedder=embedder, execution="sequential")
    except AthenaError as exc:
        return {"opened": False, "problems": [f"cannot open: {exc!r}"], "lost": 0, "checked": 0}
    try:
        problems += integrity_problems(db, models=(embedder.name,))
        events, pending = _read_log(log, model)
        fresh: list[int] = []
        for kind, intent, value in events:
            if kind == "ack":
                fresh += _apply(model, intent, value)
            else:
                model.rows.update(value)
        conn = sqlite3.connect(db)
        stored = _rows(conn)
        if pending is not None:
            adopted = _resolve_pending(model, pending, stored, problems)
            _log_resolution(log, model, pending["seq"], adopted)
        lost = 0
        for memory_id, expected in model.rows.items():
            if stored.get(memory_id) != expected:
                lost += 1
                if lost <= 5:
                    problems.append(
                        f"id {memory_id}: stored {stored.get(memory_id)!r}, acked {expected!r}"
                    )
        live = [i for i, row in model.rows.items() if row is not None]
        probe = set(fresh) | set(rng.sample(live, min(sample, len(live))))
        probe = {i for i in probe if model.rows.get(i) is not None}
        missed = 0
        generations = {t: memory.store.generations(t) for t in TENANTS}
        for memory_id in sorted(probe):
            tenant, layer, text = stored[memory_id]
            vector_now = embedder.embed([text])[0]
            lexical = memory.store.lexical(tenant, layer, match_expression(text), 50, RowFilter())
            nearest = memory.pipeline.ctx.indexes.search(
                tenant, layer, generations[tenant][layer], vector_now, 10
            )
            for index, found in (("lexical", lexical), ("vector", nearest)):
                if memory_id not in {i for i, _ in found}:
                    missed += 1
                    problems.append(f"{index} index misses the text of {memory_id} ({layer})")
            # The full recall: graph goes by entities, and prospective re-ranks by urgency
            # (an urgent, weakly relevant task can push an exact match out of the top 10),
            # so a miss there is a ranking observation, not an index problem.
            if layer != "graph":
                recalled[layer] = recalled.get(layer, 0) + 1
                hits = memory.recall(text, tenant=tenant, layers=[layer], k=10)
                if memory_id not in {hit.id for hit in hits.hits}:
                    ranking[layer] = ranking.get(layer, 0) + 1
                    if layer != "prospective":
                        missed += 1
                        problems.append(f"recall of the text of {memory_id} ({layer}) misses it")
            blob = conn.execute(
                "SELECT vector FROM vectors WHERE memory_id = ? AND model = ?",
                (memory_id, embedder.name),
            ).fetchone()
            vector = np.frombuffer(blob[0], np.float32) if blob else None
            if vector is None or not np.allclose(vector, vector_now, atol=1e-5):
                problems.append(f"stored vector of {memory_id} is not the embedding of its text")
        conn.close()
    finally:
        memory.close()
    return {
        "opened": True,
        "problems": problems,
        "lost": lost,
        "checked": len(model.rows),
        "recall_probes": len(probe),
        "recall_missed": missed,
        "recall_top10_misses_by_layer": ranking,
        "recalls_by_layer": recalled,
        "pending": None if pending is None else pending["op"],
        "audit_s": round(time.perf_counter() - started, 3),
    }


def load_embedder_for_audit() -> Any:
    """The writer's embedder (static), loaded once in the auditor."""
    from athena.embedding import load_embedder

    return load_embedder("static")


def run(cycles: int, seed: int, max_delay: float, workdir: Path) -> dict[str, Any]:
    embedder = load_embedder_for_audit()
    rng = random.Random(seed)
    db, log = workdir / "kill.db", workdir / "acks.jsonl"
    log.touch()
    model = Model()
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for cycle in range(cycles):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(db), str(log), str(seed * 100_000 + cycle)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        during_start = rng.random() < 0.1
        if during_start:
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            line = proc.stdout.readline()
            assert line.strip() == "ready", f"writer did not start: {line!r}"
            time.sleep(rng.uniform(0.0, max_delay))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        before = model.acked_ops
        result = audit(db, log, model, embedder, rng)
        result.update(cycle=cycle, during_start=during_start, acked=model.acked_ops - before)
        results.append(result)
        status = "ok" if not result["problems"] else f"PROBLEMS {result['problems'][:3]}"
        print(
            f"cycle {cycle + 1}/{cycles}: +{result['acked']} acked writes, "
            f"{result['checked']} ids checked, lost {result['lost']}, {status}",
            file=sys.stderr,
            flush=True,
        )
    return {
        "cycles": cycles,
        "kills_during_startup": sum(r["during_start"] for r in results),
        "writes_acknowledged": model.acked_ops,
        "records_acknowledged": model.acked_records,
        "ids_tracked": len(model.rows),
        "lost": sum(r["lost"] for r in results),
        "lost_final": results[-1]["lost"] if results else 0,
        "open_failures": sum(not r["opened"] for r in results),
        "integrity_failures": sum(bool(r["problems"]) for r in results),
        "recall_probes": sum(r.get("recall_probes", 0) for r in results),
        "recall_missed": sum(r.get("recall_missed", 0) for r in results),
        "prospective_top10_misses": sum(
            r.get("recall_top10_misses_by_layer", {}).get("prospective", 0) for r in results
        ),
        "prospective_recalls": sum(
            r.get("recalls_by_layer", {}).get("prospective", 0) for r in results
        ),
        "in_flight_at_kill": sum(r.get("pending") is not None for r in results),
        "problems": [p for r in results for p in r["problems"]][:20],
        "seconds": round(time.perf_counter() - started, 1),
        "seed": seed,
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=1.5, help="seconds after ready")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="athena-kill-") as tmp:
        summary = run(args.cycles, args.seed, args.max_delay, args.workdir or Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print("| cycles | writes acked | records acked | lost | integrity failures | probes missed |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {summary['cycles']} | {summary['writes_acknowledged']} | "
        f"{summary['records_acknowledged']} | {summary['lost']} | "
        f"{summary['integrity_failures']} | {summary['recall_missed']}/{summary['recall_probes']} |"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
