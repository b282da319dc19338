"""Athena: a memory engine for AI agents.

>>> from athena import Memory
"""

from athena.errors import (
    AthenaError,
    EmbedderError,
    ExecutionError,
    ImportFormatError,
    InvalidInput,
    NotFound,
    QueryTooLong,
    RecallTimeout,
    StoreError,
    UnknownLayer,
    WorkerPoolUnavailable,
)
from athena.execution.pipeline import Recall
from athena.memory import AsyncMemory, Memory
from athena.records import LAYERS, Hit, MemoryInput

__version__ = "0.1.0"

__all__ = [
    "LAYERS",
    "AsyncMemory",
    "AthenaError",
    "EmbedderError",
    "ExecutionError",
    "Hit",
    "ImportFormatError",
    "InvalidInput",
    "Memory",
    "MemoryInput",
    "NotFound",
    "QueryTooLong",
    "Recall",
    "RecallTimeout",
    "StoreError",
    "UnknownLayer",
    "WorkerPoolUnavailable",
    "__version__",
]
