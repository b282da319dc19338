"""The one exception tree of Athena.

::

    AthenaError
    ├── InvalidInput            bad query, k, layer, timestamp, metadata, limits
    │   ├── UnknownLayer
    │   └── QueryTooLong
    ├── NotFound                unknown memory id or tenant
    ├── ImportFormatError       a file that cannot be imported (malformed LoCoMo / JSONL)
    ├── StoreError              the storage engine failed (translated inside the store)
    │   ├── StoreReadOnly
    │   ├── StoreFull
    │   ├── StoreLocked
    │   └── StoreCorrupt
    ├── EmbedderError           the embedding model cannot load or run
    └── ExecutionError          a recall could not be executed
        ├── RecallTimeout
        └── WorkerPoolUnavailable

Interfaces map these to exit codes (CLI), HTTP statuses and MCP error results.
"""

from __future__ import annotations


class AthenaError(Exception):
    """Base of every error Athena raises on purpose.

    >>> isinstance(InvalidInput("k must be positive"), AthenaError)
    True
    """

    code = "athena_error"


class InvalidInput(AthenaError, ValueError):
    """The caller passed something Athena cannot accept."""

    code = "invalid_input"


class UnknownLayer(InvalidInput):
    """A layer name that is not one of the five memory layers."""

    code = "unknown_layer"


class QueryTooLong(InvalidInput):
    """A query over the documented maximum length."""

    code = "query_too_long"


class NotFound(AthenaError, LookupError):
    """A memory id or tenant that does not exist (for this tenant)."""

    code = "not_found"


class ImportFormatError(AthenaError):
    """An import file that is unreadable or malformed."""

    code = "import_format"


class StoreError(AthenaError):
    """The storage engine failed; the message says why."""

    code = "store_error"


class StoreReadOnly(StoreError):
    code = "store_read_only"


class StoreFull(StoreError):
    code = "store_full"


class StoreLocked(StoreError):
    code = "store_locked"


class StoreCorrupt(StoreError):
    code = "store_corrupt"


class EmbedderError(AthenaError):
    code = "embedder_error"


class ExecutionError(AthenaError):
    code = "execution_error"


class RecallTimeout(ExecutionError, TimeoutError):
    code = "recall_timeout"


class WorkerPoolUnavailable(ExecutionError):
    code = "worker_pool_unavailable"


__all__ = [
    "AthenaError",
    "EmbedderError",
    "ExecutionError",
    "ImportFormatError",
    "InvalidInput",
    "NotFound",
    "QueryTooLong",
    "RecallTimeout",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoreLocked",
    "StoreReadOnly",
    "UnknownLayer",
    "WorkerPoolUnavailable",
]
