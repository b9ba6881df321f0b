"""experiments/profile_phases.py: every phase of a tiny run timed, nested phases inside collect, methods restored."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from diffdac.learners import Learners

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "profile_phases.py"


def test_a_tiny_run_gets_every_phase_and_leaves_the_methods_as_they_were():
    spec = importlib.util.spec_from_file_location("profile_phases", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    collect = Learners.collect
    ms = module.profile(2, 1, "diffdac/RandomExtremeAcrobot-v1", updates=10)
    assert list(ms) == ["collect", "  task batch step", "  policy act", "adapt", "combine"]
    assert all(value > 0 for value in ms.values())
    assert ms["  task batch step"] + ms["  policy act"] < ms["collect"]
    assert Learners.collect is collect
