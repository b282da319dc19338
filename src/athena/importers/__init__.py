"""Importers of generic memory files (LoCoMo has its own package, :mod:`athena.locomo`)."""

from athena.importers.jsonl import (
    check_item,
    import_jsonl,
    parse_timestamp,
    read_jsonl,
    read_numbered,
    write_batches,
)

__all__ = [
    "check_item",
    "import_jsonl",
    "parse_timestamp",
    "read_jsonl",
    "read_numbered",
    "write_batches",
]
