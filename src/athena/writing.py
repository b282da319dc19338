"""Turning :class:`MemoryInput` values into :class:`PreparedMemory` rows, embedded in batches."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from athena.embedding.protocol import Embedder
from athena.errors import InvalidInput
from athena.layers.extraction import extract_entities
from athena.layers.protocol import MemoryLayer
from athena.records import (
    MAX_METADATA_BYTES,
    MemoryInput,
    check_bound,
    check_encodable,
    check_layer,
    check_tenant,
    check_text,
)
from athena.store.protocol import PreparedMemory

MAX_KEY_CHARS = 512


def check_timestamp(value: object, what: str = "timestamp") -> float | None:
    """Seconds since the epoch, finite, between the years 1 and 9999; ``None`` passes.

    >>> check_timestamp(1_700_000_000)
    1700000000.0
    """
    number = check_bound(value, what)
    if number is not None and not -62_135_596_800 <= number <= 253_402_300_799:
        raise InvalidInput(f"{what} must be a finite time between the years 1 and 9999")
    return number


def check_mapping(value: object, what: str) -> Mapping[str, Any]:
    import json

    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be an object")
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not JSON-serialisable: {exc}") from exc
    if len(encoded.encode("utf-8", "surrogatepass")) > MAX_METADATA_BYTES:
        raise InvalidInput(f"{what} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        encoded.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} is not valid unicode (lone surrogate)") from exc
    if "\x00" in encoded or "\\u0000" in encoded:
        raise InvalidInput(f"{what} must not contain NUL characters")
    return value


def _check_optional(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    check_text(value, what)
    return value


def prepare(
    items: Sequence[MemoryInput], layers: Mapping[str, MemoryLayer], embedder: Embedder
) -> list[PreparedMemory]:
    """Validate every item, then embed all their texts in one batch."""
    staged: list[tuple[MemoryInput, str, Any]] = []
    for item in items:
        layer = check_layer(item.layer)
        check_tenant(item.tenant)
        check_text(item.text)
        key = item.key if item.key is not None else uuid.uuid4().hex
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            raise InvalidInput(f"key must be a non-empty string of at most {MAX_KEY_CHARS} chars")
        check_text(key, "key")
        check_mapping(item.metadata, "metadata")
        check_mapping(item.attributes, "attributes")
        if not all(isinstance(s, str) for s in item.sources):
            raise InvalidInput("sources must be strings")
        for source in item.sources:
            check_encodable(source, "sources")
        if item.kind is not None and not isinstance(item.kind, str):
            raise InvalidInput("kind must be a string")
        prepared = layers[layer].prepare(item)
        check_text(prepared.kind, "kind")  # graph and procedural take any kind
        staged.append((item, key, prepared))
    vectors = embedder.embed([prepared.text for _, _, prepared in staged]) if staged else None
    out: list[PreparedMemory] = []
    for index, (item, key, prepared) in enumerate(staged):
        session = _check_optional(item.session, "session")
        actor = _check_optional(item.actor, "actor")
        sources = tuple(item.sources)
        if not sources and item.layer == "episodic":
            sources = (key,)  # a turn is its own source
        out.append(
            PreparedMemory(
                tenant=item.tenant,
                layer=item.layer,
                key=key,
                kind=prepared.kind,
                text=prepared.text,
                session=session,
                actor=actor,
                event_time=check_timestamp(item.event_time, "timestamp"),
                sources=sources,
                metadata=dict(item.metadata),
                attributes=prepared.attributes,
                vector=None if vectors is None else vectors[index],
                model=embedder.name,
                entities=extract_entities(prepared.text, actor),
                relations=prepared.relations,
            )
        )
    return out
