"""experiments/profile_phases.py: every phase of a tiny run timed, nested phases inside collect, methods restored."""

from __future__ import annotations

import experiment_scripts
from diffdac.learners.block import Learners


def test_a_tiny_run_gets_every_phase_and_leaves_the_methods_as_they_were():
    module = experiment_scripts.load("profile_phases")
    collect = Learners.collect
    ms = module.profile(2, 1, "diffdac/RandomExtremeAcrobot-v1", updates=10)
    assert list(ms) == ["collect", "  task batch step", "  policy act", "adapt", "combine"]
    assert all(value > 0 for value in ms.values())
    assert ms["  task batch step"] + ms["  policy act"] < ms["collect"]
    assert Learners.collect is collect
