"""What the arm before costs a recall: a run's saved sessions, each sample by its neighbour.

``python benchmarks/neighbours.py DIR [DIR ...] [--scenario "simple cached query"]``
reads every session an ``athena bench`` run kept under ``DIR/sessions``, rebuilds the order
the arms took each turn in (the session's ``details["turns"]``: since stop 45's review a
Williams design relabelled each block, over the arms still asking, turn by recall; in run
69 the same design unrelabelled, turn by operation; before, the shuffle seeded by the
turn's index alone), and prints, over all sessions, each sample's cost as a share of its
session's median (over the arms that cache) grouped by the arm that ran just before it;
then, per arm, how often it ran right after an arm that caches and its p50 as a share of
the session's median. Runs before stop 45's review counted writes as turns: for them, a
scenario with writes is refused.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import random
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from athena.bench.arms import ARMS
from athena.bench.turns import TURNS, shuffled_turn, turn_order, williams

CACHING = ("cache", "hybrid", "adaptive")


class _Opened:
    """An arm's name with its place in the opening order, as turn_order labels arms."""

    def __init__(self, name: str, opened: int) -> None:
        self.name, self.opened = name, opened


def turns(
    details: dict[str, Any], names: list[str], stopped: dict[str, int], count: int
) -> list[list[str]]:
    """The order of each of ``count`` turns of a session, as its run ordered them
    (``stopped``: the arms that stopped over budget, after how many recalls)."""
    design = details.get("turns")
    arms = [_Opened(name, details.get("opened", names).index(name)) for name in names]
    out: list[list[str]] = []
    for index in range(count):
        live = [a for a in arms if index < stopped.get(a.name, count)]
        if design == TURNS:
            out.append([a.name for a in turn_order(live, index)])
            continue
        if design is None:  # until stop 45: a shuffle seeded by the index, the arms as given
            order = [a.name for a in shuffled_turn(arms, index)]
        else:  # run 69: the design's rows shuffled by block, labelled in the opening order
            labels = sorted(arms, key=lambda a: a.opened)
            rows = williams(len(labels))
            block, place = divmod(index, len(rows))
            shuffled = list(range(len(rows)))
            random.Random(block).shuffle(shuffled)
            order = [labels[i].name for i in rows[shuffled[place]]]
        alive = {a.name for a in live}
        out.append([name for name in order if name in alive])
    return out


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
        stopped = {
            n: int(samples[n].extra["stopped_after"])
            for n in names
            if samples[n].extra.get("stopped_after")
        }
        count = max(len(samples[name].ms) for name in names)
        writes = session.details.get("scenarios", {}).get(args.scenario, {}).get("writes")
        if writes and session.details.get("turns") != TURNS:
            parser.error(f"{path.name}: its run counted writes as turns; pick a scenario without")
        measured = [n for n in names if n in CACHING] or names
        median = statistics.median(m for n in measured for m in samples[n].ok())
        order = turns(session.details, names, stopped, count)
        stream = [(index, name) for index, turn in enumerate(order) for name in turn]
        for (_, before), (index, name) in itertools.pairwise(stream):
            value = samples[name].ms[index] / median
            if value != value:  # a failed recall
                continue
            by_before[f"{name} after {'a caching arm' if before in CACHING else before}"].append(
                value
            )
            if before in CACHING:
                warm[name] += 1
        for name in names:
            shares[name].append(statistics.median(samples[name].ok()) / median)
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
