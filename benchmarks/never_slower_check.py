"""How often the report's "never slower" test flags arms that are not the adaptive one.

``python benchmarks/never_slower_check.py DIR [DIR ...]`` reads the sessions that ``athena
bench --out DIR`` kept (``DIR/sessions/*.pickle``) and judges each caching arm (CACHE,
HYBRID and ADAPTIVE, which share the engine, the cache and the eager pool and differ only in
strategy) as the report judges ADAPTIVE: against every other fixed arm, slower if the
bootstrap interval of its p50 (mean on the mixed workloads) over that arm's lies above 1,
the intervals 95% simultaneous over the arms, one-at-a-time samples paired
(:func:`athena.bench.report.judge`, as the report calls it). Ramps are left
out (judged by their rate, not a bootstrap). It prints, per arm, how many (session,
scenario) pairs were flagged, and against which arm.

CACHE and HYBRID run the same code on a full cache hit, so a flag between those two on the
simple cached query is the test's false-alarm rate; flags of either against SEQUENTIAL on
cold recalls are what caching costs a miss.
"""

from __future__ import annotations

import argparse
import collections
import pickle
from pathlib import Path

from athena.bench.arms import FIXED
from athena.bench.report import Session, judge

JUDGED = ("cache", "hybrid", "adaptive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    args = parser.parse_args()
    judged: collections.Counter[str] = collections.Counter()
    flagged: collections.Counter[tuple[str, str, str]] = collections.Counter()
    runs = 0
    for folder in args.dirs:
        paths = sorted((folder / "sessions").glob("*.pickle"))
        runs += bool(paths)
        for path in paths:
            with path.open("rb") as fh:
                session: Session = pickle.load(fh)[0]  # our own files, written by athena bench
            for scenario, arms in session.scenarios.items():
                for name in (n for n in JUDGED if n in arms and arms[n].ok()):
                    others: dict[str, list[float]] = {
                        n: arms[n].ms for n in FIXED if n != name and n in arms and arms[n].ok()
                    }
                    if not others:
                        continue
                    verdict = judge(session, scenario, arms[name].ms, others)
                    judged[name] += 1
                    for fastest in verdict["slower_than"]:
                        flagged[(name, scenario, fastest)] += 1
    print(f"{runs} runs; slower than another fixed arm (95% bootstrap, simultaneous):")
    for name in JUDGED:
        total = sum(v for (arm, _, _), v in flagged.items() if arm == name)
        print(f"\n{name}: {total} flags in {judged[name]} (session, scenario) pairs")
        for (judged_arm, scenario, fastest), count in flagged.most_common():
            if judged_arm == name:
                print(f"  {count:3d}  {scenario} (than {fastest})")


if __name__ == "__main__":
    main()
