"""MuJoCo task families and their sampling: which parameters each family varies, drawn from a seed.

Kept apart from envs.mujoco so that registering the ids imports neither mujoco nor gymnasium's
MuJoCo envs. Mass and wind follow the original Diff-DAC "RandomMuJoCo" tasks; the length range is
Packer et al. 2018's "Extreme" range.
"""

from __future__ import annotations

import numpy as np

from envs.acrobot import uniform_extreme

MASS_BETA = 0.1  # original Diff-DAC: mass factor 1 + 1.9 * (Beta(0.1, 0.1) - 0.5)
MASS_SPREAD = 1.9
WIND_BETA = 0.4  # original Diff-DAC: wind per axis 30 * (Beta(0.4, 0.4) - 0.5), m/s
WIND_SPREAD = 30.0
AIR_DENSITY = 1.2  # kg/m^3, original Diff-DAC
AIR_VISCOSITY = 2e-4  # original Diff-DAC

# family (the id's prefix) -> what it varies; "air" puts the robot in air of AIR_DENSITY, AIR_VISCOSITY
FAMILIES: dict[str, tuple[str, ...]] = {
    "RandomMass": ("mass", "air"),
    "RandomLength": ("length",),
    "RandomWind": ("wind", "air"),
    "Random": ("mass", "wind", "air"),
}


ROBOT_NAMES = ("Hopper", "HalfCheetah", "Walker2d")


def variant_id(family: str, robot: str) -> str:
    """The gymnasium id of one family and robot, e.g. diffdac/RandomMassHopper-v5."""
    return f"diffdac/{family}{robot}-v5"


def sample_mujoco_task(family: str, task_seed: int) -> dict:
    """The task of one learner: the parameters `family` varies, fixed by `task_seed`.

    Every family draws mass, wind and length in this one order and keeps the ones it varies, so
    RandomMass, RandomWind and Random agree on the mass and the wind of a seed.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown MuJoCo task family {family!r}: choose one of {', '.join(FAMILIES)}")
    rng = np.random.default_rng(task_seed)
    draws = {
        "mass": 1.0 + MASS_SPREAD * (rng.beta(MASS_BETA, MASS_BETA) - 0.5),
        "wind": WIND_SPREAD * (rng.beta(WIND_BETA, WIND_BETA, size=2) - 0.5),
        "length": uniform_extreme(rng, 1)[0],
    }
    varies = FAMILIES[family]
    task: dict = {}
    if "mass" in varies:
        task["mass"] = float(draws["mass"])
    if "wind" in varies:
        task["wind_x"], task["wind_y"] = (float(w) for w in draws["wind"])
    if "length" in varies:
        task["length"] = float(draws["length"])
    if "air" in varies:
        task["density"], task["viscosity"] = AIR_DENSITY, AIR_VISCOSITY
    return task
