"""Importing JSON Lines: one memory per line, validated as a whole before anything is written.

Each non-blank line is an object with ``layer``, ``text`` and ``tenant``, and optionally
``timestamp`` (epoch seconds or ISO-8601), ``session``, ``actor``, ``key``, ``kind``,
``sources`` (list of str), ``metadata`` and ``attributes`` (objects)::

    {"layer": "semantic", "text": "Alice lives in Lisbon.", "tenant": "agent-1"}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from athena.errors import ImportFormatError, InvalidInput
from athena.records import LAYERS, MemoryInput, check_layer, check_tenant, check_text
from athena.writing import MAX_KEY_CHARS, check_mapping, check_timestamp

if TYPE_CHECKING:
    from athena.layers.protocol import MemoryLayer
    from athena.memory import Memory

BATCH_SIZE = 500
REQUIRED = ("layer", "text", "tenant")
OPTIONAL_STR = ("key", "kind", "session", "actor")
FIELDS = frozenset((*REQUIRED, *OPTIONAL_STR, "timestamp", "sources", "metadata", "attributes"))


def parse_timestamp(value: object, what: str = "timestamp") -> float:
    """Epoch seconds from a number, a numeric string or ISO-8601 text (naive means UTC).

    >>> parse_timestamp("2023-05-08T13:56:00Z"), parse_timestamp("2023-05-08 13:56")
    (1683554160.0, 1683554160.0)
    >>> parse_timestamp("1683554160")
    1683554160.0
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise InvalidInput(
                    f"{what} must be seconds since the epoch or ISO-8601, not {value!r}"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            number = moment.timestamp()
        value = number
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number")
    checked = check_timestamp(value, what)
    if checked is None:
        raise InvalidInput(f"{what} is missing")
    return checked


def check_item(item: MemoryInput, layers: Mapping[str, MemoryLayer] | None = None) -> None:
    """Every check a write makes short of embedding; raises InvalidInput.

    With ``layers`` (``memory.layers``) the layer-specific rules run too.
    """
    layer = check_layer(item.layer)
    check_tenant(item.tenant)
    check_text(item.text)
    if item.key is not None and (not item.key or len(item.key) > MAX_KEY_CHARS):
        raise InvalidInput(f"key must be a non-empty string of at most {MAX_KEY_CHARS} chars")
    for what, value in (("key", item.key), ("session", item.session), ("actor", item.actor)):
        if value is not None:
            check_text(value, what)
    check_mapping(item.metadata, "metadata")
    check_mapping(item.attributes, "attributes")
    if not all(isinstance(source, str) for source in item.sources):
        raise InvalidInput("sources must be strings")
    check_timestamp(item.event_time)
    if layers is not None:
        layers[layer].prepare(item)


def _fail(path: str | Path, line: int, message: str, unit: str = "line") -> ImportFormatError:
    return ImportFormatError(f"{path}, {unit} {line}: {message}")


def _parse_line(raw: Any, line: int, path: str | Path) -> MemoryInput:
    if not isinstance(raw, dict):
        raise _fail(path, line, f"expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise _fail(
            path, line, f"unknown field {unknown[0]!r}; fields: {', '.join(sorted(FIELDS))}"
        )
    for name in REQUIRED:
        if name not in raw:
            raise _fail(path, line, f"missing field {name!r}")
        if not isinstance(raw[name], str):
            raise _fail(path, line, f"field {name!r} must be a string")
    if raw["layer"] not in LAYERS:
        raise _fail(path, line, f"unknown layer {raw['layer']!r}; layers are: {', '.join(LAYERS)}")
    for name in OPTIONAL_STR:
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise _fail(path, line, f"field {name!r} must be a string")
    for name in ("metadata", "attributes"):
        if raw.get(name) is not None and not isinstance(raw[name], dict):
            raise _fail(path, line, f"field {name!r} must be an object")
    sources = raw.get("sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise _fail(path, line, "field 'sources' must be a list of strings")
    stamp = raw.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float | str | None):
        raise _fail(path, line, "field 'timestamp' must be a number or an ISO-8601 string")
    try:
        item = MemoryInput(
            layer=raw["layer"],
            text=raw["text"],
            tenant=raw["tenant"],
            key=raw.get("key"),
            kind=raw.get("kind"),
            session=raw.get("session"),
            actor=raw.get("actor"),
            event_time=None if stamp is None else parse_timestamp(stamp),
            sources=tuple(sources),
            metadata=raw.get("metadata") or {},
            attributes=raw.get("attributes") or {},
        )
        check_item(item)
    except InvalidInput as exc:
        raise _fail(path, line, str(exc)) from exc
    return item


def read_numbered(path: str | Path) -> list[tuple[int, MemoryInput]]:
    """Like :func:`read_jsonl`, each memory with its line number."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path} is not UTF-8 text: {exc}") from exc
    items: list[tuple[int, MemoryInput]] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise _fail(path, number, f"not valid JSON: {exc}") from exc
        items.append((number, _parse_line(raw, number, path)))
    if not items:
        raise ImportFormatError(f"{path} contains no memories")
    return items


def read_jsonl(path: str | Path) -> list[MemoryInput]:
    """Parse and validate a whole JSONL file; ImportFormatError names the first bad line."""
    return [item for _, item in read_numbered(path)]


def check_items(
    items: Iterable[tuple[int, MemoryInput]],
    layers: Mapping[str, MemoryLayer],
    path: str | Path,
    unit: str = "line",
) -> None:
    """Run every write check over numbered items; ImportFormatError names the first bad one."""
    for number, item in items:
        try:
            check_item(item, layers)
        except InvalidInput as exc:
            raise _fail(path, number, str(exc), unit) from exc


def write_batches(
    memory: Memory,
    items: Sequence[MemoryInput],
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Write ``items`` with ``remember_many`` in batches; ``progress`` gets each batch's size."""
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        memory.remember_many(batch)
        if progress:
            progress(len(batch))
    return len(items)


def import_jsonl(
    memory: Memory, path: str | Path, progress: Callable[[int], None] | None = None
) -> int:
    """Validate the whole file, then write it in batches of 500; returns the count.

    Nothing is written when any line is invalid. ``progress`` gets each batch's size.
    """
    numbered = read_numbered(path)
    check_items(numbered, memory.layers, path)
    return write_batches(memory, [item for _, item in numbered], progress)
