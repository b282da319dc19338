"""A bounded soak (60 s, in a subprocess): no fd or thread growth, RSS growth < 10%.

The full figure is ``benchmarks/reliability/soak.py`` over 30 minutes (docs/reliability.md);
this CI variant runs the same script for one minute at 40 operations per second and is
generous: fds and threads may move by 2, RSS by 10% after a 20 s warm-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_support import SCRIPTS

DURATION_S = 60


@pytest.mark.slow
def test_one_minute_soak_is_flat(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "soak.py"),
            *("--duration", str(DURATION_S), "--rate", "40", "--window", "5"),
            *("--warmup", "20", "--seed-memories", "1000", "--json", str(out)),
        ],
        check=True,
        capture_output=True,
        timeout=DURATION_S * 4,
    )
    soak = json.loads(out.read_text())
    assert soak["errors"] == 0
    assert soak["ops"] >= 0.8 * 40 * DURATION_S, soak["ops"]  # the rate was held
    assert soak["fds_end"] <= soak["fds_after_warmup"] + 2, soak
    assert soak["fds_max"] <= soak["fds_after_warmup"] + 4, soak
    assert soak["threads_end"] <= soak["threads_after_warmup"] + 2, soak
    assert soak["rss_growth_pct_after_warmup"] < 10.0, soak
