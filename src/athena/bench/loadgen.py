"""An OPEN-LOOP load generator over :class:`~athena.memory.AsyncMemory`.

Every request has an intended send time fixed in advance by the arrival schedule; it is
sent then whether or not earlier ones have finished, and its latency is measured from that
intended time, so a slow system is charged for the queue it builds (no coordinated
omission). Calls run on a thread pool as large as the concurrency asked for, set as the
event loop's default executor, which is what ``AsyncMemory``'s ``asyncio.to_thread`` uses.

* :func:`bursts`: ``concurrency`` recalls sent at the same instant, a burst every
  ``interval`` seconds: the seed's "10 parallel" and "100 concurrent" rows.
* :func:`ramp`: a fixed arrival rate held for ``step_s`` per rate, the rate raised
  geometrically until p99 exceeds a bound; arms take turns rate by rate.
* :func:`ceiling`: the same generator against a no-op async call: the most this harness
  itself can send, so a throughput miss can be told apart from a harness limit.

:func:`closed_loop` is the other kind, for the benchmarks that compare how much work a
process gets through: a fixed number of threads, each sending its next call when the last
returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from athena.bench.arms import Arm, Samples, percentile
from athena.bench.turns import turn_order
from athena.bench.workloads import Ask
from athena.errors import AthenaError

RAMP_FACTOR: Final = 1.5
P99_BOUND_MS: Final = 100.0
REQUEST_TIMEOUT_S: Final = 30.0
HOT: Final = 8  # questions a cached throughput step asks (each primed first)
LEAD_S: Final = 0.02  # schedule starts this far ahead, so creating the tasks is not timed
CEILING_SHARE: Final = 0.9  # a no-op step must also complete 90 % of its rate to count
SPIN_S: Final = 0.001  # the paced generator spins, rather than sleeps, this close to a send

Call = Callable[[Ask], Awaitable[Any]]


T = TypeVar("T")


def closed_loop(
    call: Callable[[T], object], items: Sequence[T], threads: int
) -> tuple[float, float]:
    """``call`` on every item of ``items`` from ``threads`` threads, each taking the next
    item when its last call returns: (calls/s, process CPU ms per call).

    >>> rate, cpu = closed_loop(abs, range(1000), 4)
    >>> rate > 0 and cpu >= 0
    True
    """
    feed, lock = iter(items), threading.Lock()

    def work() -> None:
        while True:
            with lock:
                try:
                    item = next(feed)
                except StopIteration:
                    return
            call(item)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    cpu, wall = time.process_time(), time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return len(items) / wall, cpu / max(len(items), 1) * 1000.0


Advance = Callable[[int], None]


@dataclass(slots=True)
class Phase:
    """The outcome of one open-loop phase."""

    ms: list[float] = field(default_factory=list)  # from the intended send time; NaN: failed
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0  # first intended send to last completion
    sent: int = 0

    @property
    def completed(self) -> int:
        return sum(1 for m in self.ms if m == m)

    @property
    def qps(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def p99(self) -> float:
        return percentile([m for m in self.ms if m == m], 99)


async def open_loop(
    call: Call, asks: Sequence[Ask], offsets: Sequence[float], timeout: float = REQUEST_TIMEOUT_S
) -> Phase:
    """Send ``asks[i]`` at ``offsets[i]`` seconds from now (+ a short lead); time each.
    ``phase.ms[i]`` is the ``i``-th request's, in send order (NaN if it failed), so a run of
    requests sent together (a burst) stays together whatever order they complete in."""
    loop = asyncio.get_running_loop()
    start = loop.time() + LEAD_S
    phase = Phase(ms=[math.nan] * len(asks), sent=len(asks))
    ends: list[float] = []

    async def one(index: int, ask: Ask, offset: float) -> None:
        intended = start + offset
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await asyncio.wait_for(call(ask), timeout)
        except (AthenaError, TimeoutError) as exc:
            phase.errors.append(f"{type(exc).__name__}: {exc}")
            return  # its entry stays NaN
        now = loop.time()
        ends.append(now)
        phase.ms[index] = (now - intended) * 1000.0

    sends = enumerate(zip(asks, offsets, strict=True))
    await asyncio.gather(*(one(i, a, o) for i, (a, o) in sends))
    phase.seconds = (max(ends) if ends else loop.time()) - start
    return phase


async def paced(call: Call, asks: Sequence[Ask], offsets: Sequence[float]) -> Phase:
    """Send ``asks[i]`` at ``offsets[i]`` seconds from now, in order, one at a time.

    For calls that complete on the event loop (cache hits): one task per request would cost
    more than the hit, so a single pacer sends each request when due, sleeping when ahead
    and spinning the last millisecond. A request held back by a slow earlier one is sent
    late and charged from its intended time, so the open-loop accounting still holds.
    """
    loop = asyncio.get_running_loop()
    start = loop.time() + LEAD_S
    phase = Phase(sent=len(asks))
    end = start
    for ask, offset in zip(asks, offsets, strict=True):
        intended = start + offset
        delay = intended - loop.time()
        if delay > SPIN_S:
            await asyncio.sleep(delay - SPIN_S)
        while loop.time() < intended:
            pass
        try:
            await call(ask)
        except (AthenaError, TimeoutError) as exc:
            phase.errors.append(f"{type(exc).__name__}: {exc}")
            phase.ms.append(float("nan"))
            continue
        end = loop.time()
        phase.ms.append((end - intended) * 1000.0)
    phase.seconds = end - start
    return phase


def run_phase(
    call: Call,
    asks: Sequence[Ask],
    offsets: Sequence[float],
    threads: int,
    timeout: float = REQUEST_TIMEOUT_S,
    *,
    pacer: bool = False,
) -> Phase:
    """:func:`open_loop` (or, with ``pacer``, :func:`paced`) in a fresh event loop whose
    default executor has ``threads``."""

    async def main() -> Phase:
        executor = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench-load")
        asyncio.get_running_loop().set_default_executor(executor)
        if pacer:
            return await paced(call, asks, offsets)
        return await open_loop(call, asks, offsets, timeout)

    return asyncio.run(main())


def arm_call(arm: Arm, timeout: float) -> Call:
    async def call(ask: Ask) -> None:
        await arm.arecall(ask, timeout=timeout)

    return call


def cycle(asks: Sequence[Ask]) -> Iterator[Ask]:
    return itertools.cycle(asks) if asks else iter(())


def bursts(
    arms: Sequence[Arm],
    asks: Sequence[Ask],
    *,
    concurrency: int,
    per_block: int,
    blocks: int,
    interval: float,
    advance: Advance | None = None,
) -> dict[str, Samples]:
    """Bursts of ``concurrency`` simultaneous recalls, ``per_block`` bursts ``interval`` s
    apart per arm turn, the arms taking turns block by block
    (:func:`athena.bench.turns.turn_order`), ``blocks`` turns each, and ``interval`` s idle
    before every turn but the first: no burst starts on the heels of another arm's.

    Each arm draws its recalls in order from ``asks`` (distinct, so none is a repeat for it).
    Bursts of one turn share its moment of the machine (10 concurrent, runs 64-65: a
    correlation of about 0.2 between them), so the harness sends one burst a turn and
    more turns (see :mod:`athena.bench.verdicts`).
    """
    out = {arm.name: Samples() for arm in arms}
    feeds = {arm.name: cycle(asks) for arm in arms}
    counts = {arm.name: arm.cache_counts() for arm in arms}
    offsets = [b * interval for b in range(per_block) for _ in range(concurrency)]
    seen = {arm.name: arm.recorded() for arm in arms}
    first = True
    for block in range(blocks):
        for arm in turn_order(arms, block):
            if not first:
                time.sleep(interval)
            first = False
            picked = [next(feeds[arm.name]) for _ in offsets]
            phase = run_phase(arm_call(arm, REQUEST_TIMEOUT_S), picked, offsets, concurrency)
            samples = out[arm.name]
            samples.ms += phase.ms
            samples.errors += len(phase.errors)
            arm.errors += phase.errors
            samples.wall_s += phase.seconds
            if advance:
                advance(1)
    for arm in arms:
        samples = out[arm.name]
        fresh = arm.recorded() - seen[arm.name]
        samples.rows = arm.telemetry()[-fresh:] if fresh > 0 else []
        samples.qps = len(samples.ok()) / samples.wall_s if samples.wall_s else None
        samples.cache = {
            k: arm.cache_counts().get(k, 0.0) - v
            for k, v in counts[arm.name].items()
            if k in ("hits", "partial_hits", "misses")
        }
    return out


def rates(start: float, stop: float, factor: float = RAMP_FACTOR) -> list[float]:
    """The geometric ladder of arrival rates from ``start`` to at most ``stop``.

    >>> rates(100, 400, 2.0)
    [100.0, 200.0, 400.0]
    """
    out, rate = [], float(start)
    while rate <= stop * (1 + 1e-9):
        out.append(round(rate, 3))
        rate *= factor
    return out


@dataclass(slots=True)
class RampStep:
    rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float
    errors: int
    passed: bool
    executed: dict[str, int] = field(default_factory=dict)  # strategies the engine ran


def ramp(
    arms: Sequence[Arm],
    asks: Sequence[Ask],
    *,
    cached: bool,
    ladder: Sequence[float],
    step_s: float,
    bound_ms: float = P99_BOUND_MS,
    threads: int = 64,
    refine: int = 0,
    advance: Advance | None = None,
) -> dict[str, list[RampStep]]:
    """Raise the arrival rate along ``ladder`` for every arm, rate by rate (arms take turns),
    until an arm's p99 passes ``bound_ms`` or a recall fails; that arm then stops. Then
    ``refine`` rounds: each arm runs the geometric midpoint of its highest passing rate and
    its failed one, halving the gap (in ratio) each round: two rounds turn a x1.5 ladder's
    "passed 380, failed 570" into a rate known within x1.11.

    Cold: every step starts from empty caches and asks distinct questions (cycling only
    when a step needs more than there are). Cached: a step asks only the first few of
    ``asks``, each asked once (primed) before the step starts, through :func:`paced` (hits
    complete on the event loop, so a task per request would measure the generator).
    """
    steps: dict[str, list[RampStep]] = {arm.name: [] for arm in arms}
    live = list(arms)
    hot = list(asks[: max(1, min(len(asks), HOT))])

    def run(arm: Arm, rate: float) -> RampStep:
        step = _step(arm, asks, hot, rate, cached, step_s, bound_ms, threads)
        steps[arm.name].append(step)
        if advance:
            advance(1)
        return step

    for index, rate in enumerate(ladder):
        for arm in turn_order(live, index):
            if not run(arm, rate).passed:
                live.remove(arm)
        if not live:
            break
    for round_ in range(refine):
        gaps = {arm.name: gap(steps[arm.name]) for arm in arms}
        due = [arm for arm in arms if gaps[arm.name] is not None]
        for arm in turn_order(due, len(ladder) + round_):
            low, high = gaps[arm.name] or (0.0, 0.0)
            middle = round(math.sqrt(low * high), 1)
            if low < middle < high:  # rates 0.1 apart have no step between them
                run(arm, middle)
    return steps


def _step(
    arm: Arm,
    asks: Sequence[Ask],
    hot: Sequence[Ask],
    rate: float,
    cached: bool,
    step_s: float,
    bound_ms: float,
    threads: int,
) -> RampStep:
    """One ramp step: ``rate`` recalls a second for ``step_s`` from empty caches."""
    count = max(1, round(rate * step_s))
    arm.reset()
    if cached:
        for ask in hot:
            arm.recall(ask)
        feed = cycle(hot)
    else:  # distinct questions only: a repeat could be served from a cache
        feed, count = cycle(asks), min(count, len(asks))
    picked = [next(feed) for _ in range(count)]
    offsets = [i / rate for i in range(count)]
    seen = arm.recorded()
    phase = run_phase(arm_call(arm, REQUEST_TIMEOUT_S), picked, offsets, threads, pacer=cached)
    fresh = arm.recorded() - seen
    rows = arm.telemetry()[-fresh:] if fresh > 0 else []
    executed = Counter(str(getattr(row, "strategy", "?")) for row in rows)
    ok = [m for m in phase.ms if m == m]
    p99 = percentile(ok, 99)
    arm.errors += phase.errors
    return RampStep(
        rate,
        percentile(ok, 50),
        percentile(ok, 95),
        p99,
        phase.qps,
        len(phase.errors),
        not phase.errors and p99 <= bound_ms,
        dict(executed),
    )


def gap(steps: Sequence[RampStep]) -> tuple[float, float] | None:
    """The highest passing rate and the lowest failed rate above it, or None when there is
    no such pair (nothing passed, or nothing above the best failed).

    >>> ok, bad = RampStep(380, 2, 3, 4, 380, 0, True), RampStep(570, 9, 99, 120, 500, 0, False)
    >>> gap([ok, bad])
    (380, 570)
    """
    best = best_step(steps)
    if best is None:
        return None
    above = [s.rate for s in steps if not s.passed and s.rate > best.rate]
    return (best.rate, min(above)) if above else None


def best_step(steps: Sequence[RampStep]) -> RampStep | None:
    """The highest-rate step that passed, or None if none did."""
    passed = [s for s in steps if s.passed]
    return max(passed, key=lambda s: s.rate) if passed else None


def ceiling(
    ladder: Sequence[float],
    step_s: float,
    threads: int = 64,
    bound_ms: float = P99_BOUND_MS,
    *,
    pacer: bool = False,
) -> float:
    """The highest rate at which this generator keeps p99 under ``bound_ms`` calling a no-op:
    through a thread as ``AsyncMemory`` runs a miss (the open-loop generator), or inline as
    it serves a hit (``pacer``). The harness's own limit, to tell a miss from it."""

    def noop() -> None:
        return None

    async def hop(ask: Ask) -> None:
        await asyncio.to_thread(noop)

    async def inline(ask: Ask) -> None:
        return None

    call = inline if pacer else hop
    best = 0.0
    for rate in ladder:
        count = max(1, round(rate * step_s))
        offsets = [i / rate for i in range(count)]
        phase = run_phase(call, [Ask("-", "-")] * count, offsets, threads, pacer=pacer)
        if phase.errors or phase.p99() > bound_ms or phase.qps < rate * CEILING_SHARE:
            break
        best = rate
    return best
