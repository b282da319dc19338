"""How often the report's "never slower" test flags arms that are not the adaptive one.

``python benchmarks/never_slower_check.py DIR [DIR ...]`` reads the sessions that ``athena
bench --out DIR`` kept (``DIR/sessions/*.pickle``) and judges each caching arm (CACHE,
HYBRID and ADAPTIVE, which share the engine, the cache and the eager pool and differ only in
strategy) as the report judges ADAPTIVE: its p50 against the best p50 of the other fixed
arms, slower if the bootstrap 95% interval of the ratio lies above 1
(:func:`athena.bench.report.compare`). Ramps are left out (judged by their rate, not a
bootstrap). It prints, per arm, how many (session, scenario) pairs were flagged, and where.

CACHE and HYBRID run the same code on a full cache hit, so a flag between those two on the
simple cached query is the test's false-alarm rate; flags of either against SEQUENTIAL on
cold recalls are what caching costs a miss.
"""

from __future__ import annotations

import argparse
import collections
import pickle
import statistics
from pathlib import Path

from athena.bench.arms import FIXED
from athena.bench.report import Session, compare

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
                    others = {n: arms[n].ok() for n in FIXED if n != name and n in arms}
                    p50 = {n: statistics.median(ms) for n, ms in others.items() if ms}
                    if not p50:
                        continue
                    best = min(p50, key=lambda n: p50[n])
                    burst = session.details.get("scenarios", {}).get(scenario, {})
                    size = int(burst.get("concurrency", 1))  # bursts resampled whole
                    mine, best_ms = arms[name].ms, arms[best].ms
                    _, low, _ = compare(mine, best_ms, cluster=size)
                    judged[name] += 1
                    if low > 1.0:
                        flagged[(name, scenario, best)] += 1
    print(f"{runs} runs; slower than the best other fixed arm (95% bootstrap):")
    for name in JUDGED:
        total = sum(v for (arm, _, _), v in flagged.items() if arm == name)
        print(f"\n{name}: {total} of {judged[name]} (session, scenario) pairs")
        for (judged_arm, scenario, fastest), count in flagged.most_common():
            if judged_arm == name:
                print(f"  {count:3d}  {scenario} (best: {fastest})")


if __name__ == "__main__":
    main()
