"""The selector's learned costs: one strategy's cost per context, as a robust median with
its spread, blended with a prior while a context has few observations; when the reference
(SEQUENTIAL) runs again where another strategy is exploited; and which contexts SEQUENTIAL
won by far, so that their next decisions predict it alone."""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from typing import Final

Context = tuple[int, int, int, int]  # see selector.context

PRIOR_WEIGHT: Final = 2.0  # the rule estimate counts as two observations
WINDOW: Final = 21  # observations a cost is the median of (it forgets older ones)
IQR_PER_SD: Final = 1.349  # a normal distribution's interquartile range, in sds
MAX_CELLS: Final = 4096
RATIO_AFTER: Final = 10  # observations before a strategy's own cost ratio replaces the rules
REFERENCE_AFTER: Final = 3  # SEQUENTIAL runs in a context before others' priors scale from it
MIN_ESTIMATE_MS: Final = 0.05
# Where another strategy is exploited, SEQUENTIAL runs again after this many of its recalls
# there, the interval doubling (up to REFRESH_MAX) while each such run confirms the choice.
REFRESH_AFTER: Final = 8
REFRESH_MAX: Final = 64
# Where SEQUENTIAL won a full decision with every other option at least SETTLED_SLACK of its
# cost past the switch rule, about the next SETTLED_USES decisions there predict SEQUENTIAL
# alone (see Settled).
SETTLED_USES: Final = 8
SETTLED_SLACK: Final = 0.1


class Cell:
    """One strategy's measured cost in one context: the median of the last ``WINDOW``
    observations, with a spread from their interquartile range.

    Robust, not a mean: one stall (a page fault storm, a collector pass, a neighbour's
    burst) once measured a 5-layer LoCoMo recall at about 200 ms beside a typical 11 ms; an
    exponential mean carried it as a 21 ms SEQUENTIAL for a hundred recalls, and the
    adaptive arm ran PARALLEL, 4% slower, on 113 of 120 oracle recalls. The window also
    follows the machine's drift (it forgets after ``WINDOW`` observations)."""

    __slots__ = ("mean", "n", "ordered", "recent", "var")

    def __init__(self) -> None:
        self.n, self.mean, self.var = 0, 0.0, 0.0
        self.recent: deque[float] = deque()  # the window, oldest first
        self.ordered: list[float] = []  # the same values, sorted (kept so, not re-sorted)

    def add(self, value: float) -> None:
        """Fold ``value`` in (a value that is not finite is ignored: it has no place in
        the sorted window).

        >>> cell = Cell()
        >>> for ms in (3.0, 1.0, 2.0, float("nan")):
        ...     cell.add(ms)
        >>> cell.mean, cell.n
        (2.0, 3)
        """
        if not math.isfinite(value):
            return
        recent, ordered = self.recent, self.ordered
        if len(recent) >= WINDOW:  # the oldest leaves: any equal value is the same value
            del ordered[bisect_left(ordered, recent.popleft())]
        recent.append(value)
        insort(ordered, value)
        size = len(ordered)
        half = size // 2
        median = ordered[half] if size % 2 else (ordered[half - 1] + ordered[half]) / 2.0
        spread = (ordered[(3 * size) // 4] - ordered[size // 4]) / IQR_PER_SD
        self.mean, self.var = median, spread * spread
        self.n += 1  # last: a lock-free reader never sees a count without its mean


class CostModel:
    """One strategy's learned cost per context, blended with a prior while a context has few
    observations (the prior counts as ``PRIOR_WEIGHT`` of them).

    The prior is the seed's rule estimate until the strategy has ``RATIO_AFTER``
    observations at the same concurrency; from then on it is what the strategy has cost
    relative to the sequential estimate across every context of that concurrency (say 1.3x
    for PARALLEL on 2 cores), so a new regime starts from this machine's experience instead
    of the rules' optimism. Per concurrency: one ratio over all of them once priced an idle
    recall from the queueing of 100 concurrent ones (13.7x the estimate, not 1.5x)."""

    def __init__(self) -> None:
        self.cells: dict[Context, Cell] = {}
        self.ratios: dict[int, Cell] = {}  # cost / the sequential estimate, per concurrency
        self.relative = Cell()  # cost / SEQUENTIAL's measured cost in the same context
        self.n = 0

    def predict(
        self,
        key: Context,
        rule: float,
        sequential_ms: float,
        reference: float | None = None,
        measured: bool = False,
    ) -> tuple[float, float]:
        """``reference``: SEQUENTIAL's predicted cost in this context (None for itself);
        ``measured``: SEQUENTIAL has run in this context."""
        prior, estimate = rule, max(sequential_ms, MIN_ESTIMATE_MS)
        ratio = self.ratios.get(key[2])
        if reference is not None and self.relative.n >= RATIO_AFTER:
            prior = self.relative.mean * reference
        else:
            if ratio is not None and ratio.n >= RATIO_AFTER:
                prior = ratio.mean * estimate
            elif reference is not None:  # the rules, as a ratio to SEQUENTIAL's rule, scaled
                prior = rule / estimate * reference
            if reference is not None and (measured or key[2] > 0):
                # Not yet learned against SEQUENTIAL: never undercut a measured SEQUENTIAL,
                # nor any SEQUENTIAL under load, where a wrong detour queues every recall.
                prior = max(prior, reference)
        cell = self.cells.get(key)
        if cell is None or cell.n == 0:
            return prior, prior  # unknown: as uncertain as the estimate is large
        weight = cell.n / (cell.n + PRIOR_WEIGHT)
        mean = weight * cell.mean + (1.0 - weight) * prior
        effective = min(cell.n, WINDOW)
        width = math.sqrt(cell.var / effective) + abs(prior - cell.mean) * (1.0 - weight)
        return mean, width

    def update(
        self, key: Context, actual: float, sequential_ms: float, reference: float | None = None
    ) -> None:
        ratio = self.ratios.get(key[2])
        if ratio is None:
            ratio = self.ratios[key[2]] = Cell()
        ratio.add(actual / max(sequential_ms, MIN_ESTIMATE_MS))
        if reference is not None:
            self.relative.add(actual / max(reference, MIN_ESTIMATE_MS))
        cell = self.cells.get(key)
        if cell is None:
            if len(self.cells) >= MAX_CELLS:
                return  # bounded: a pathological stream of regimes cannot grow it
            cell = self.cells[key] = Cell()
        cell.add(actual)
        self.n += 1


class Refresh:
    """When SEQUENTIAL runs again in each context where another strategy is exploited.

    Only SEQUENTIAL runs time the layers, and the layers' estimate is part of the context
    (:func:`athena.planning.selector.context`): once another strategy won a context,
    SEQUENTIAL's cost there was never measured again, and the estimate, so the context,
    stood still. One 103k-memory tenant, run 24: after three slow recalls (7-10 ms),
    DISTRIBUTED ran the next 16 oracle queries, 48 recalls in a row, each 1.28x slower
    than SEQUENTIAL (medians; the oracle's 16% regret). So SEQUENTIAL runs again after
    ``every`` others in the context; a run that still costs more than the chosen strategy
    was predicted to doubles ``every`` (a choice that keeps being right costs ever less to
    check), one that does not resets it.

    >>> r = Refresh()
    >>> [r.due((3, 2, 0, 0), 4.0) for _ in range(REFRESH_AFTER + 1)][-2:]
    [False, True]
    >>> r.measured((3, 2, 0, 0), 8.0)  # still dearer: the choice stands, check half as often
    >>> r.states[(3, 2, 0, 0)][1] == 2 * REFRESH_AFTER
    True
    """

    __slots__ = ("states",)

    def __init__(self) -> None:
        self.states: dict[Context, list[float]] = {}  # [since, every, expected ms or 0]

    def due(self, key: Context, expected_ms: float) -> bool:
        """Count one recall another strategy runs in ``key``; True if SEQUENTIAL should run
        it instead (then ``expected_ms``, the other's predicted cost, is what it is held to)."""
        state = self.states.get(key)
        if state is None:
            if len(self.states) >= MAX_CELLS:
                return False
            state = self.states[key] = [0.0, float(REFRESH_AFTER), 0.0]
        state[0] += 1
        if state[0] <= state[1]:
            return False
        state[0], state[2] = 0.0, expected_ms
        return True

    def measured(self, key: Context, actual_ms: float) -> None:
        """SEQUENTIAL ran in ``key`` and cost ``actual_ms``."""
        state = self.states.get(key)
        if state is None:
            return
        state[0] = 0.0
        if state[2] > 0.0:
            confirmed = actual_ms > state[2]
            state[1] = min(state[1] * 2.0, REFRESH_MAX) if confirmed else float(REFRESH_AFTER)
            state[2] = 0.0


Others = tuple[tuple[str, float], ...]  # the other options' predicted ms, by name


class Settled:
    """Contexts where SEQUENTIAL won its last full decision by far: about the next
    :data:`SETTLED_USES` decisions there skip predicting the other options.

    A full decision predicts every feasible strategy; with a pool up that is three cost
    models read cold on a recall's path: an adaptive cold recall's decision took 29.6-33.1
    µs in place, a forced strategy's one prediction 9.8-11.9 (100k-one-tenant, transformer,
    an eager pool; ``benchmarks/engine_overhead.py --pools full --parts``).
    A settled context is given back only while the selector's other costs are as they were
    (``generation``: the selector counts every cost another strategy learns, anywhere,
    since cells and ratios are shared across contexts), and the caller checks the kept
    costs against SEQUENTIAL's fresh prediction before using them. Uses are counted
    without a lock: two threads may take the same one.

    >>> settled = Settled()
    >>> settled.keep((3, 1, 0, 0), 2, 0, (("parallel", 1.4),))
    >>> [settled.use((3, 1, 0, 0), 2, 0) is not None for _ in range(SETTLED_USES + 1)]
    [True, True, True, True, True, True, True, True, False]
    >>> settled.keep((3, 1, 0, 0), 2, 0, (("parallel", 1.4),))
    >>> settled.use((3, 1, 0, 0), 3, 0), settled.use((3, 1, 0, 0), 2, 1)  # options; costs
    (None, None)
    """

    __slots__ = ("states",)

    def __init__(self) -> None:
        # uses left, options feasible, the selector's generation, the other options' costs
        self.states: dict[Context, tuple[int, int, int, Others]] = {}

    def use(self, key: Context, options: int, generation: int) -> Others | None:
        """The other options' kept costs if ``key`` is settled for ``options`` feasible
        strategies at ``generation`` (counting one use), else None.

        >>> Settled().use((3, 1, 0, 0), 2, 0) is None
        True
        """
        state = self.states.get(key)
        if state is None or state[1] != options or state[2] != generation:
            return None
        if state[0] > 1:
            self.states[key] = (state[0] - 1, *state[1:])
        else:
            self.states.pop(key, None)
        return state[3]

    def keep(self, key: Context, options: int, generation: int, others: Others) -> None:
        """Settle ``key``: SEQUENTIAL won, every option of ``others`` far dearer.

        >>> settled = Settled(); settled.keep((2, 0, 0, 0), 2, 5, (("parallel", 9.0),))
        >>> settled.states[(2, 0, 0, 0)][0] == SETTLED_USES
        True
        """
        if key in self.states or len(self.states) < MAX_CELLS:
            self.states[key] = (SETTLED_USES, options, generation, others)

    def forget(self, key: Context) -> None:
        """Decide in full in ``key`` until a full decision settles it again.

        >>> Settled().forget((2, 0, 0, 0))
        """
        self.states.pop(key, None)


def busiest(model: CostModel, cells: int = 4) -> dict[str, object]:
    """What ``model`` has learned where it has learned most: its ``cells`` most observed
    contexts (layers, estimate scale, load, pool) with their median ms, spread and count,
    and its cost relative to SEQUENTIAL's in the same context.

    >>> busiest(CostModel())
    {'relative': None, 'cells': []}
    """
    top = sorted(model.cells.items(), key=lambda kv: -kv[1].n)[:cells]
    relative = model.relative
    return {
        "relative": round(relative.mean, 3) if relative.n else None,
        "cells": [
            {"context": list(key), "n": c.n, "ms": round(c.mean, 3), "sd": round(c.var**0.5, 3)}
            for key, c in top
        ],
    }
