"""How often the "never slower" verdict flags ADAPTIVE, as fast as fixed arms or slower.

``python benchmarks/verdict_calibration.py [--trials 200] [--workers 2]`` draws, per trial,
ADAPTIVE and five fixed arms from the same distribution for ``equal`` of the fixed arms and
30% slower for the rest, then judges ADAPTIVE three ways with the harness's own functions:

* *best arm*: against the fixed arm of lowest p50 alone, 95% interval (the report until
  stop 44);
* *every arm, percentile*: :func:`athena.bench.verdicts.never_slower` with plain percentile
  intervals (stop 44): 95% simultaneous over the five, one-at-a-time samples paired
  (sample i of every arm answered op i);
* *every arm, corrected*: the same with each interval widened for the few units it
  resampled (:func:`athena.bench.verdicts.expansion`), as the report judges now.

Where ADAPTIVE is drawn as they are, a flag is a false alarm: the promise is 2.5% (the lower
bound above 1); where it is drawn slower, a flag is what the test should say. Cells: 300
recalls an arm, each on its own (the one-at-a-time scenarios: lognormal, sigma 0.4), or the
same 300 questions for every arm, each question's cost shared (lognormal, sigma 0.4) times
each arm's own noise (sigma 0.2); and bursts (a queue: each recall waits for the ones
before it, a burst's pace varying by a lognormal of sigma 0.15 around its arm's): eight of
100, as a full run sends at 100 concurrent, and twelve of 10, as at 10 concurrent (four
bursts, a quick run's, leave a verdict open since stop 44: the rates for four in
docs/bench/analysis.md were measured while four were judged). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math

import numpy as np

from athena.bench import verdicts
from athena.bench.verdicts import compare, never_slower

FIXED = ("sequential", "cache", "hybrid", "parallel", "distributed")
SHARED = -1  # "bursts" of a cell whose recalls share each question's cost across the arms
# (bursts an arm, 0 for recalls one at a time; recalls a burst; fixed arms equal to
# ADAPTIVE's arm; ADAPTIVE's scale: 1 for A/A, where a flag is a false alarm, 1.04 for the
# power to see the 4% a cold recall pays for the cache, 1.1 for bursts)
CELLS = (
    (0, 0, 1, 1.0),
    (0, 0, 3, 1.0),
    (0, 0, 5, 1.0),
    (SHARED, 0, 3, 1.0),
    (8, 100, 3, 1.0),
    (12, 10, 3, 1.0),
    (0, 0, 3, 1.04),
    (SHARED, 0, 3, 1.04),
    (8, 100, 3, 1.1),
    (12, 10, 3, 1.1),
)


def _arm(
    rng: np.random.Generator, scale: float, bursts: int, size: int, questions: np.ndarray
) -> list[float]:
    if bursts == SHARED:
        return list(scale * questions * rng.lognormal(0.0, 0.2, questions.size))
    if not bursts:
        return list(scale * rng.lognormal(0.0, 0.4, 300))
    out: list[float] = []
    for _ in range(bursts):
        pace = scale * rng.lognormal(0.0, 0.15)
        out += list(pace * np.cumsum(rng.lognormal(0.0, 0.4, size)))
    return out


def trial(cell: tuple[int, int, int, float], seed: int) -> tuple[bool | None, ...]:
    """(flagged by the best-arm test, by the every-arm test with percentile intervals, by
    it with corrected ones) for one draw; None where the verdict is left open (fewer bursts
    than ``verdicts.MIN_CLUSTERS``)."""
    bursts, size, equal, scale = cell
    rng = np.random.default_rng([seed, bursts + 1, size, equal])
    questions = rng.lognormal(0.0, 0.4, 300)
    mine = _arm(rng, scale, bursts, size, questions)
    fixed = {
        name: _arm(rng, 1.0 if i < equal else 1.3, bursts, size, questions)
        for i, name in enumerate(FIXED)
    }
    cluster = size if bursts > 0 else 1
    corrected = never_slower(mine, fixed, cluster=cluster, seed=seed, paired=cluster == 1)
    stretch = verdicts.expansion
    try:
        verdicts.expansion = lambda n: 1.0
        plain = never_slower(mine, fixed, cluster=cluster, seed=seed, paired=cluster == 1)
        _, low, _ = compare(mine, fixed[plain["best_fixed"]], cluster=cluster, seed=seed)
    finally:
        verdicts.expansion = stretch
    return (None if math.isnan(low) else bool(low > 1.0)), plain["slower"], corrected["slower"]


def _rate(flags: list[bool | None]) -> str:
    """The share flagged among the verdicts given, or "open" if none was."""
    given = [f for f in flags if f is not None]
    return f"{sum(given) / len(given):.1%}" if given else "open"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(
        "| recalls an arm | ADAPTIVE | fixed arms like it | trials | best arm, 95% "
        "| every arm, percentile | every arm, corrected |"
    )
    print("|---|---|---|---|---|---|---|")
    with cf.ProcessPoolExecutor(args.workers) as pool:
        for cell in CELLS:
            flags = list(pool.map(trial, [cell] * args.trials, range(args.trials), chunksize=8))
            rates = " | ".join(_rate([f[i] for f in flags]) for i in range(3))
            what = {0: "300, one at a time", SHARED: "300, the questions' costs shared"}.get(
                cell[0], f"{cell[0]} bursts of {cell[1]}"
            )
            like = "as" if cell[3] == 1.0 else f"{cell[3]:g}x"
            print(f"| {what} | {like} | {cell[2]} of 5 | {args.trials} | {rates} |", flush=True)


if __name__ == "__main__":
    main()
