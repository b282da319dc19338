"""What the feedback loop learnt, kept across restarts: the dependency graph is saved every
few hundred recalls (off the recall's path) and on close; at start it is reloaded, and the
saved telemetry is replayed into the strategy selector's cost models.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable
from typing import Final

from athena.errors import AthenaError
from athena.execution.telemetry import Telemetry, TelemetryRow
from athena.planning.dependency_graph import DependencyGraph
from athena.planning.selector import Situation, Strategy, StrategySelector
from athena.store.protocol import Store

GRAPH_STATE: Final = "dependency_graph"
SAVE_EVERY: Final = 500


class Checkpoint:
    """Restores and saves one feedback loop's graph; ``settle`` counts what is still noted.

    >>> import os, tempfile
    >>> from athena.store.sqlite import SQLiteStore
    >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "c.db"))
    >>> graph, selector = DependencyGraph(cores=2), StrategySelector()
    >>> saves = Checkpoint(store, graph, selector, Telemetry(store), lambda: None)
    >>> saves.save(); saves.restore(); store.load_state(GRAPH_STATE) == graph.to_json()
    True
    >>> store.close()
    """

    def __init__(
        self,
        store: Store,
        graph: DependencyGraph,
        selector: StrategySelector,
        telemetry: Telemetry,
        settle: Callable[[], None],
    ) -> None:
        self.store, self.graph, self.selector = store, graph, selector
        self.telemetry, self.settle = telemetry, settle
        self._recalls = itertools.count(1)  # recalls recorded; a save every SAVE_EVERY

    def restore(self) -> None:
        """Reload the saved graph, and replay saved telemetry into the selector."""
        saved = self.store.load_state(GRAPH_STATE)
        if saved:
            self.graph.load_json(saved)
        for row in self.telemetry.load():
            if row.features and row.cache == "miss" and not row.fallback and row.success:
                self.selector.learn(Strategy(row.strategy), _situation_from(row), row.actual_ms)

    def save(self) -> None:
        """Flush telemetry and persist the dependency graph (with every noted hit counted)."""
        self.settle()
        self.telemetry.flush()
        self.store.save_state(GRAPH_STATE, self.graph.to_json())

    def recorded(self) -> None:
        """Count one recorded recall; every :data:`SAVE_EVERY`, save on a thread of its own."""
        # next() on an itertools.count is atomic under the GIL: no lock on a hit's path.
        due = next(self._recalls) % SAVE_EVERY == 0
        if due:  # off the recall's path: a save is a write transaction
            threading.Thread(target=self._save_quietly, name="athena-save", daemon=True).start()

    def _save_quietly(self) -> None:
        with contextlib.suppress(AthenaError):  # the store is closing; close() saves again
            self.save()


def _situation_from(row: TelemetryRow) -> Situation:
    f = row.features
    return Situation(int(f[1]), f[2], 1.0, 0.0, int(f[3]), f[4], True, False, int(f[5]))
