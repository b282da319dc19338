"""What the arm before costs a recall: a run's saved sessions, each sample by its neighbour.

``python benchmarks/neighbours.py DIR [DIR ...] [--scenario "simple cached query"]``
reads every session an ``athena bench`` run kept under ``DIR/sessions``, rebuilds the order
the arms took each turn in (the session's ``details["turns"]``: a Williams design over the
arms in their opening order, or, for runs before stop 45, the shuffle seeded by the turn's
index alone), and prints, over all sessions, each sample's cost as a share of its session's
median (over the arms that cache, on the cached hit) grouped by the arm that ran just
before it; then, per arm, how often it ran right after an arm that caches and its p50 as a
share of the session's median. For a scenario without writes (the others' turn indexes
count writes too).
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from athena.bench.arms import ARMS
from athena.bench.turns import TURNS, shuffled_turn, turn_order

CACHING = ("cache", "hybrid", "adaptive")


class _Opened:
    """An arm's name with its place in the opening order, as turn_order labels arms."""

    def __init__(self, name: str, opened: int) -> None:
        self.name, self.opened = name, opened


def turns(details: dict[str, Any], names: list[str], count: int) -> list[list[str]]:
    """The order of each of ``count`` turns of a session, as its run ordered them."""
    if details.get("turns") != TURNS:
        return [shuffled_turn(names, index) for index in range(count)]
    opened = details["opened"]
    arms = [_Opened(name, opened.index(name)) for name in names]
    return [[a.name for a in turn_order(arms, index)] for index in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+")
    parser.add_argument("--scenario", default="simple cached query")
    args = parser.parse_args()
    by_before: dict[str, list[float]] = defaultdict(list)
    warm: Counter[str] = Counter()
    shares: dict[str, list[float]] = defaultdict(list)
    sessions = 0
    for path in sorted(p for d in args.dirs for p in (d / "sessions").glob("*.pickle")):
        with path.open("rb") as fh:
            session, _ = pickle.load(fh)  # our own files, written by athena bench
        samples = session.scenarios.get(args.scenario)
        if not samples:
            continue
        names = [name for name in ARMS if name in samples]
        count = min(len(samples[name].ms) for name in names)
        measured = [n for n in names if n in CACHING] or names
        median = statistics.median(m for n in measured for m in samples[n].ms[:count])
        order = turns(session.details, names, count)
        stream = [(index, name) for index, turn in enumerate(order) for name in turn]
        for (_, before), (index, name) in itertools.pairwise(stream):
            value = samples[name].ms[index] / median
            by_before[f"{name} after {'a caching arm' if before in CACHING else before}"].append(
                value
            )
            if before in CACHING:
                warm[name] += 1
        for name in names:
            shares[name].append(statistics.median(samples[name].ms[:count]) / median)
        sessions += 1
    print(f"{args.scenario}: {sessions} sessions; cost / the session's median")
    for key in sorted(by_before):
        values = by_before[key]
        print(f"  {key:34s} n {len(values):6d}  median {statistics.median(values):.3f}")
    for name in shares:
        print(
            f"  {name:12s} after a caching arm {warm[name]:5d} times; p50 / median, "
            f"sessions: {min(shares[name]):.3f}-{max(shares[name]):.3f}, "
            f"median {statistics.median(shares[name]):.3f}"
        )


if __name__ == "__main__":
    main()
