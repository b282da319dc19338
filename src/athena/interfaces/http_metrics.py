"""The HTTP API's Prometheus metrics (``GET /metrics``), in a registry of each app's own:
recall latency by strategy, cache results, fallbacks, writes, refusals, and the engine's
gauges (worker pool, admission, thread queue, index budget) read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from athena.memory import Memory

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CACHE_RESULTS = ("hit", "partial", "miss")
MCP_TOOLS = ("remember", "recall", "forget", "list_memories", "stats")


Family = type[GaugeMetricFamily] | type[CounterMetricFamily]
# The engine's gauges and counters read at scrape time: (family, name, help, section of
# execution_gauges(), key in it, scale).
ENGINE_METRICS: tuple[tuple[Family, str, str, str, str, float], ...] = (
    (GaugeMetricFamily, "athena_index_memories",
     "Memories held in this process's in-memory indexes.", "indexes", "memories", 1.0),
    (CounterMetricFamily, "athena_index_evictions",
     "Tenants whose indexes were dropped to keep to the index budget.", "indexes", "evicted", 1.0),
    (GaugeMetricFamily, "athena_pool_workers", "Worker pool size.", "pool", "workers", 1.0),
    (GaugeMetricFamily, "athena_pool_queue_depth",
     "Tasks waiting for a worker.", "pool", "queue_depth", 1.0),
    (GaugeMetricFamily, "athena_execution_slots",
     "Recalls that may execute in-process at once.", "admission", "slots", 1.0),
    (GaugeMetricFamily, "athena_recalls_waiting",
     "Recalls queued for an execution slot.", "admission", "waiting", 1.0),
    (CounterMetricFamily, "athena_recall_queued_seconds",
     "Time recalls spent queued for an execution slot.", "admission", "waited_ms", 0.001),
    (CounterMetricFamily, "athena_recall_thread_queue_seconds",
     "Time recalls spent queued for a thread (the server's recall concurrency).",
     "thread_queue", "waited_ms", 0.001),
)  # fmt: skip


class _EngineCollector(Collector):
    """Worker-pool and admission gauges read from ``execution_gauges()`` at scrape time."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    def collect(self) -> Iterable[Metric]:
        try:
            stats = self.memory.execution_gauges()
        except Exception:
            stats = {}
        for family, name, text, section, key, scale in ENGINE_METRICS:
            yield family(name, text, _number(stats.get(section) or {}, key) * scale)
        threads, admission = stats.get("thread_queue") or {}, stats.get("admission") or {}
        timeouts = CounterMetricFamily(
            "athena_recall_queue_timeouts",
            "Recalls whose timeout ran out while queued, by queue.",
            labels=["queue"],
        )
        timeouts.add_metric(["thread"], _number(threads, "timeouts"))
        timeouts.add_metric(["execution_slot"], _number(admission, "timeouts"))
        yield timeouts


def _number(section: Mapping[str, Any], key: str) -> float:
    value = section.get(key)  # absent until the pool starts (and with the sequential engine)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class Metrics:
    """Prometheus metrics of one app, in a registry of its own."""

    def __init__(self, memory: Memory) -> None:
        self.registry = CollectorRegistry()
        self.recall_seconds = Histogram(
            "athena_recall_seconds",
            "Recall latency by execution strategy.",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache = Counter(
            "athena_recall_cache", "Recalls by cache result.", ["result"], registry=self.registry
        )
        self.fallbacks = Counter(
            "athena_recall_fallbacks",
            "Recalls that fell back to another strategy.",
            registry=self.registry,
        )
        self.writes = Counter(
            "athena_writes", "Writes by operation.", ["op"], registry=self.registry
        )
        self.rejected = Counter(
            "athena_http_rejected",
            "Requests refused before running.",
            ["reason"],
            registry=self.registry,
        )
        self.mcp_calls = Counter(
            "athena_mcp_calls", "MCP tool calls at /mcp, by tool.", ["tool"], registry=self.registry
        )
        for result in CACHE_RESULTS:
            self.cache.labels(result)
        for tool in MCP_TOOLS:
            self.mcp_calls.labels(tool)
        for op in ("remember", "update", "forget"):
            self.writes.labels(op)
        self.registry.register(_EngineCollector(memory))

    def recall(self, explain: Mapping[str, Any] | None, seconds: float) -> None:
        explain = explain or {}
        strategy = explain.get("executed") or explain.get("strategy")
        label = strategy if isinstance(strategy, str) and strategy else "unknown"
        self.recall_seconds.labels(label).observe(seconds)
        cache = explain.get("cache")
        if cache in CACHE_RESULTS:
            self.cache.labels(cache).inc()
        if explain.get("fallback"):
            self.fallbacks.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
