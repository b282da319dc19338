"""Every script under benchmarks/ loads: its imports still name what the package has.

The docs cite these scripts' commands; ``ramp_stalls.py`` once imported a helper the harness
had renamed and failed before parsing its arguments, unnoticed for several stops. Loading a
script runs its imports and module-level definitions, never its ``main``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py")


def test_there_are_scripts_to_load() -> None:
    assert len(SCRIPTS) >= 20


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_loads(script: Path) -> None:
    name = "bench_script_" + "_".join(script.relative_to(ROOT).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)  # a script may put its folder on the path: as it was, after
    sys.path.insert(0, str(script.parent))  # and it may import its neighbours
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
        sys.modules.pop(name, None)
    if "__main__" in script.read_text(encoding="utf-8"):
        assert callable(getattr(module, "main", None)), "a script run as a program has a main()"
