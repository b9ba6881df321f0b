"""MuJoCo task variants: Hopper, HalfCheetah and Walker2d with random masses, limb lengths or wind.

Each variant is gymnasium's v5 env on its own model: geometry, air and wind are edited in a
`mujoco.MjSpec` before compiling (resizing a compiled model's geoms can lose collisions); masses
are scaled on the compiled model (body_mass alone, as the original did, or with the inertias by
mj_setTotalmass), followed by mj_setConst, which recomputes every derived constant, as MuJoCo 4
advises now that the compiler's settotalmass is deprecated.
The task is a function of `task_seed` alone, so the same seed compiles the same model, and the
stock `<Robot>-v5` envs are never touched. The families and their draws are in envs.mujoco_tasks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import mujoco
import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.mujoco_env import expand_model_path
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from gymnasium.utils import EzPickle

from envs.batch import MASS_SCALINGS
from envs.mujoco_tasks import sample_mujoco_task


@dataclass(frozen=True)
class Robot:
    """A gymnasium v5 robot and the bodies whose limbs the length variant scales."""

    env_class: type
    xml_file: str  # the v5 env's default model
    legs: tuple[str, ...]  # leg bodies, each scaled with everything it carries
    root: str = "torso"  # raised or lowered so the feet start where the stock feet do
    height_joint: str = "rootz"
    has_healthy_z: bool = True  # whether the env ends episodes on the torso's height


ROBOTS: dict[str, Robot] = {
    "Hopper": Robot(HopperEnv, "hopper.xml", ("thigh", "leg", "foot")),
    "HalfCheetah": Robot(
        HalfCheetahEnv,
        "half_cheetah.xml",
        ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"),
        has_healthy_z=False,
    ),
    "Walker2d": Robot(Walker2dEnv, "walker2d_v5.xml", ("thigh", "leg", "foot", "thigh_left", "leg_left", "foot_left")),
}


def scale_limb(body: mujoco.MjsBody, factor: float) -> None:
    """Stretch one limb by `factor` along its own frame: its geoms' positions and lengths, its
    joints' anchors and the positions of the bodies it carries, so the chain stays connected.

    Radii stay as they are: the limb gets longer or shorter, not fatter.
    """
    for geom in body.geoms:
        if geom.type not in (mujoco.mjtGeom.mjGEOM_CAPSULE, mujoco.mjtGeom.mjGEOM_CYLINDER):
            raise ValueError(
                f"limb geom {geom.name!r} is a {geom.type.name}: only capsules and cylinders can be stretched"
            )
        if np.isnan(geom.fromto[0]):
            geom.pos = geom.pos * factor
            geom.size = geom.size * np.array([1.0, factor, 1.0])
        else:
            geom.fromto = geom.fromto * factor
    for joint in body.joints:
        joint.pos = joint.pos * factor
    for child in body.bodies:
        child.pos = child.pos * factor


def lowest_point(model: mujoco.MjModel) -> float:
    """Height of the lowest point of the robot (every capsule or cylinder off the world body) at qpos0."""
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    robot = model.geom_bodyid > 0
    radius, half_length = model.geom_size[robot, 0], model.geom_size[robot, 1]
    axis_z = np.abs(data.geom_xmat[robot].reshape(-1, 3, 3)[:, 2, 2])  # z-component of each geom's long axis
    return float(np.min(data.geom_xpos[robot, 2] - axis_z * half_length - radius))


def stretch_legs(spec: mujoco.MjSpec, robot: Robot, factor: float) -> float:
    """Scale every leg limb of `spec` by `factor` and move the root so the feet start on the same
    level as the stock robot's. Returns that height shift (m), which the healthy range follows."""
    stock_low = lowest_point(spec.compile())
    for name in robot.legs:
        scale_limb(spec.body(name), factor)
    shift = stock_low - lowest_point(spec.compile())
    spec.body(robot.root).pos = spec.body(robot.root).pos + np.array([0.0, 0.0, shift])
    spec.joint(robot.height_joint).ref += shift  # qpos of the height joint stays the torso's height
    return shift




def scale_body_masses(model: mujoco.MjModel, factor: float) -> None:
    """The original Diff-DAC's mass perturbation: every `body_mass` times `factor`, inertias as they
    were, then the derived constants recomputed (mj_setConst) so they describe the new masses."""
    if factor == 1.0:
        return
    model.body_mass[:] = model.body_mass * factor
    mujoco.mj_setConst(model, mujoco.MjData(model))


def set_total_mass(model: mujoco.MjModel, total: float) -> None:
    """Scale every body's mass and inertia by one factor so they sum to `total`, then recompute the
    model's derived constants (without mj_setConst they would describe the old masses)."""
    if np.isclose(total, mujoco.mj_getTotalmass(model), rtol=0.0, atol=1e-12):
        return
    mujoco.mj_setTotalmass(model, total)
    mujoco.mj_setConst(model, mujoco.MjData(model))


def build_model(
    robot: Robot, task: dict, xml_path: str, mass_scaling: str = "body-mass"
) -> tuple[mujoco.MjModel, float]:
    """Compile `xml_path` with `task` applied. Returns (model, height shift of the root in m).

    The compiler's `settotalmass` (HalfCheetah's XML sets 14 kg) is deprecated in MuJoCo 4, so it
    is applied after compiling, as MuJoCo advises. The task's mass factor then scales the body
    masses alone (`body-mass`, the original's perturbation: a heavier body of the same inertia) or
    masses and inertias together (`mass-and-inertia`: a body of the same shape, denser).
    """
    if mass_scaling not in MASS_SCALINGS:
        raise ValueError(f"unknown mass scaling {mass_scaling!r}: choose one of {', '.join(MASS_SCALINGS)}")
    spec = mujoco.MjSpec.from_file(xml_path)
    xml_total_mass, spec.compiler.settotalmass = spec.compiler.settotalmass, -1.0
    shift = stretch_legs(spec, robot, task["length"]) if "length" in task else 0.0
    if "density" in task:
        spec.option.density, spec.option.viscosity = task["density"], task["viscosity"]
    if "wind_x" in task:
        spec.option.wind = np.array([task["wind_x"], task["wind_y"], 0.0])
    model = spec.compile()
    total = xml_total_mass if xml_total_mass > 0 else mujoco.mj_getTotalmass(model)
    factor = task.get("mass", 1.0)
    if mass_scaling == "mass-and-inertia":
        set_total_mass(model, total * factor)
    else:
        set_total_mass(model, total)
        scale_body_masses(model, factor)
    return model, shift


class MujocoVariant:
    """Mixin over a gymnasium v5 MuJoCo env: simulates the model of one task, exposed as `self.task`."""

    ROBOT: str

    def __init__(self, family: str, task_seed: int = 0, mass_scaling: str = "body-mass", **kwargs):
        robot = ROBOTS[self.ROBOT]
        self.task = sample_mujoco_task(family, task_seed)
        xml_path = expand_model_path(kwargs.get("xml_file", robot.xml_file))
        self._task_model, shift = build_model(robot, self.task, xml_path, mass_scaling)
        if robot.has_healthy_z and "healthy_z_range" not in kwargs:
            low, high = inspect.signature(robot.env_class).parameters["healthy_z_range"].default
            kwargs["healthy_z_range"] = (low + shift, high + shift)
        super().__init__(**kwargs)
        EzPickle.__init__(self, family, task_seed, mass_scaling, **kwargs)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """The task's model instead of the XML file's (called by MujocoEnv.__init__)."""
        model = self._task_model
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)


class HopperVariantEnv(MujocoVariant, HopperEnv):
    """gymnasium's Hopper-v5 on one task's model."""

    ROBOT = "Hopper"


class HalfCheetahVariantEnv(MujocoVariant, HalfCheetahEnv):
    """gymnasium's HalfCheetah-v5 on one task's model."""

    ROBOT = "HalfCheetah"


class Walker2dVariantEnv(MujocoVariant, Walker2dEnv):
    """gymnasium's Walker2d-v5 on one task's model."""

    ROBOT = "Walker2d"
