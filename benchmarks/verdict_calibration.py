"""How often the "never slower" verdict flags an ADAPTIVE arm that is no slower (A/A).

``python benchmarks/verdict_calibration.py [--trials 200] [--workers 2]`` draws, per trial,
ADAPTIVE and five fixed arms from the same distribution for ``equal`` of the fixed arms and
30% slower for the rest, then judges ADAPTIVE two ways with the harness's own functions:

* *best arm*: against the fixed arm of lowest p50 alone, 95% interval (the report until
  stop 44);
* *every arm*: :func:`athena.bench.verdicts.never_slower`, 95% simultaneous over the five.

A flag is a false alarm: the promise is 2.5% (the lower bound above 1). Cells: 300 recalls
an arm, each on its own (the one-at-a-time scenarios: lognormal, sigma 0.4); and bursts of
100 (a queue: each recall waits for the ones before it, a burst's pace varying by a
lognormal of sigma 0.15 around its arm's), four or eight an arm. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf

import numpy as np

from athena.bench.verdicts import compare, never_slower

FIXED = ("sequential", "cache", "hybrid", "parallel", "distributed")
CELLS = (  # (bursts an arm, 0 for independent recalls; fixed arms equal to ADAPTIVE)
    (0, 1),
    (0, 3),
    (0, 5),
    (4, 3),
    (8, 3),
)


def _arm(rng: np.random.Generator, scale: float, bursts: int) -> list[float]:
    if not bursts:
        return list(scale * rng.lognormal(0.0, 0.4, 300))
    out: list[float] = []
    for _ in range(bursts):
        pace = scale * rng.lognormal(0.0, 0.15)
        out += list(pace * np.cumsum(rng.lognormal(0.0, 0.4, 100)))
    return out


def trial(cell: tuple[int, int], seed: int) -> tuple[bool, bool]:
    """(flagged by the best-arm test, flagged by the every-arm test) for one draw."""
    bursts, equal = cell
    rng = np.random.default_rng([seed, bursts, equal])
    mine = _arm(rng, 1.0, bursts)
    fixed = {name: _arm(rng, 1.0 if i < equal else 1.3, bursts) for i, name in enumerate(FIXED)}
    cluster = 100 if bursts else 1
    verdict = never_slower(mine, fixed, cluster=cluster, seed=seed)
    _, low, _ = compare(mine, fixed[verdict["best_fixed"]], cluster=cluster, seed=seed)
    return bool(low > 1.0), bool(verdict["slower"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print("| recalls an arm | fixed arms equal to ADAPTIVE | trials | best arm, 95% | every arm |")
    print("|---|---|---|---|---|")
    with cf.ProcessPoolExecutor(args.workers) as pool:
        for cell in CELLS:
            flags = list(pool.map(trial, [cell] * args.trials, range(args.trials), chunksize=8))
            old = sum(f[0] for f in flags) / args.trials
            new = sum(f[1] for f in flags) / args.trials
            what = f"{cell[0]} bursts of 100" if cell[0] else "300, one at a time"
            row = f"| {what} | {cell[1]} of 5 | {args.trials} | {old:.1%} | {new:.1%} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
