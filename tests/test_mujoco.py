"""MuJoCo task variants: every id builds and steps, tasks follow the seed, and the parameters land in
the compiled model (masses, wind, air, limb geometry); plus a short training run on them."""

from __future__ import annotations

import csv
import pickle

import gymnasium
import mujoco
import numpy as np
import pytest

import envs
import torch
from diffdac.run import checkpoint
from diffdac.cli import main
from envs.mujoco import ROBOTS, build_model, lowest_point
from envs.mujoco_tasks import (
    AIR_DENSITY,
    AIR_VISCOSITY,
    FAMILIES,
    ROBOT_NAMES,
    sample_mujoco_task,
    variant_id,
)

ALL_IDS = [variant_id(family, robot) for robot in ROBOT_NAMES for family in FAMILIES]


@pytest.fixture(autouse=True)
def _mujoco_log_in_tmp(tmp_path, monkeypatch):
    """MuJoCo writes MUJOCO_LOG.TXT into the working directory on warnings (HalfCheetah's XML has one)."""
    monkeypatch.chdir(tmp_path)


def _variant(env_id: str, task_seed: int, **options) -> gymnasium.Env:
    return gymnasium.make(env_id, task_seed=task_seed, **options).unwrapped


def _stock(robot: str) -> mujoco.MjModel:
    return gymnasium.make(f"{robot}-v5").unwrapped.model


def _family_robot(env_id: str) -> tuple[str, str]:
    name = env_id.removeprefix("diffdac/").removesuffix("-v5")
    robot = next(r for r in ROBOT_NAMES if name.endswith(r))
    return name.removesuffix(robot), robot


def _seed_where(family: str, predicate) -> int:
    """The first task seed whose task satisfies `predicate` (so tests cover both sides of a range)."""
    return next(s for s in range(1000) if predicate(sample_mujoco_task(family, s)))


def _model_arrays(model: mujoco.MjModel) -> list[np.ndarray]:
    return [
        model.body_mass,
        model.body_inertia,
        model.body_pos,
        model.geom_size,
        model.geom_pos,
        model.jnt_pos,
        model.qpos0,
        model.opt.wind,
        np.array([model.opt.density, model.opt.viscosity]),
    ]


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_each_id_builds_and_steps_like_its_stock_robot(env_id):
    family, robot = _family_robot(env_id)
    env = gymnasium.make(env_id, task_seed=1)
    stock = gymnasium.make(f"{robot}-v5")
    assert env.observation_space == stock.observation_space and env.action_space == stock.action_space
    assert env.spec.max_episode_steps == stock.spec.max_episode_steps == 1000
    assert env.unwrapped.task == sample_mujoco_task(family, 1)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(30):
        obs, reward, terminated, _, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        assert np.all(np.isfinite(obs)) and np.isfinite(reward)
        if terminated:
            obs, _ = env.reset()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_task_seed_same_model_and_other_seeds_other_models(env_id):
    a, b, c = (_variant(env_id, s).model for s in (11, 11, 12))
    assert all(np.array_equal(x, y) for x, y in zip(_model_arrays(a), _model_arrays(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(_model_arrays(a), _model_arrays(c)))


def test_same_task_seed_same_trajectory():
    envs_ = [gymnasium.make("diffdac/RandomHopper-v5", task_seed=5) for _ in range(2)]
    runs = []
    for env in envs_:
        obs = [env.reset(seed=3)[0]]
        obs += [env.step(np.full(3, 0.5, dtype=np.float32))[0] for _ in range(40)]
        runs.append(np.stack(obs))
    assert np.array_equal(runs[0], runs[1])


@pytest.mark.parametrize("robot", ROBOT_NAMES)
@pytest.mark.parametrize("family", ["RandomMass", "Random"])
def test_mass_factor_scales_every_body_mass_and_inertia(robot, family):
    env = _variant(
        variant_id(family, robot), _seed_where(family, lambda t: t["mass"] < 0.5), mass_scaling="mass-and-inertia"
    )
    model, stock, factor = env.model, _stock(robot), env.task["mass"]
    np.testing.assert_allclose(model.body_mass, stock.body_mass * factor, rtol=1e-12)
    np.testing.assert_allclose(model.body_inertia, stock.body_inertia * factor, rtol=1e-12)
    np.testing.assert_allclose(model.body_subtreemass, stock.body_subtreemass * factor, rtol=1e-12)  # mj_setConst ran
    assert (model.opt.density, model.opt.viscosity) == (AIR_DENSITY, AIR_VISCOSITY)


@pytest.mark.parametrize("robot", ROBOT_NAMES)
@pytest.mark.parametrize("family", ["RandomMass", "Random"])
def test_by_default_the_mass_factor_scales_body_masses_only_as_the_original(robot, family):
    env = _variant(variant_id(family, robot), _seed_where(family, lambda t: t["mass"] > 1.5))
    model, stock, factor = env.model, _stock(robot), env.task["mass"]
    np.testing.assert_allclose(model.body_mass, stock.body_mass * factor, rtol=1e-12)
    np.testing.assert_allclose(model.body_inertia, stock.body_inertia, rtol=1e-12)
    np.testing.assert_allclose(model.body_subtreemass, stock.body_subtreemass * factor, rtol=1e-12)  # mj_setConst ran
    with pytest.raises(ValueError, match="unknown mass scaling"):
        _variant(variant_id(family, robot), 0, mass_scaling="heavier")


@pytest.mark.parametrize("robot", ROBOT_NAMES)
@pytest.mark.parametrize("family", ["RandomWind", "Random"])
def test_wind_lands_in_the_model_in_air(robot, family):
    env = _variant(variant_id(family, robot), task_seed=2)
    assert np.array_equal(env.model.opt.wind, [env.task["wind_x"], env.task["wind_y"], 0.0])
    assert (env.model.opt.density, env.model.opt.viscosity) == (AIR_DENSITY, AIR_VISCOSITY)
    if family == "RandomWind":
        np.testing.assert_allclose(env.model.body_mass, _stock(robot).body_mass, rtol=1e-12)


def test_wind_pushes_the_robot():
    env = _variant("diffdac/RandomWindHalfCheetah-v5", _seed_where("RandomWind", lambda t: abs(t["wind_x"]) > 10))
    calm = {key: value for key, value in env.task.items() if not key.startswith("wind")}
    still, _ = build_model(ROBOTS["HalfCheetah"], calm, env.fullpath)
    positions = []
    for model in (env.model, still):
        data = mujoco.MjData(model)
        mujoco.mj_step(model, data, nstep=500)
        positions.append(data.qpos[0])
    assert np.sign(positions[0] - positions[1]) == np.sign(env.task["wind_x"])


@pytest.mark.parametrize("robot", ROBOT_NAMES)
def test_mass_and_length_families_leave_what_they_do_not_vary(robot):
    stock = _stock(robot)
    mass = _variant(variant_id("RandomMass", robot), 4).model
    length = _variant(variant_id("RandomLength", robot), 4).model
    assert np.array_equal(mass.opt.wind, [0, 0, 0]) and np.array_equal(mass.geom_size, stock.geom_size)
    assert length.opt.density == 0.0 and np.array_equal(length.opt.wind, [0, 0, 0])


def test_task_draws_follow_the_original_distributions():
    tasks = [sample_mujoco_task("Random", s) for s in range(400)]
    mass = np.array([t["mass"] for t in tasks])
    wind = np.array([[t["wind_x"], t["wind_y"]] for t in tasks])
    length = np.array([sample_mujoco_task("RandomLength", s)["length"] for s in range(400)])
    assert (
        np.all((mass >= 0.05) & (mass <= 1.95)) and np.mean((mass < 0.2) | (mass > 1.8)) > 0.5
    )  # Beta(0.1, 0.1): U-shaped
    assert np.all(np.abs(wind) <= 15.0) and wind.std() > 5.0  # 30 * (Beta(0.4, 0.4) - 0.5)
    assert np.all(((length >= 0.5) & (length < 0.75)) | ((length > 1.25) & (length <= 1.5)))
    assert 0.3 < np.mean(length < 1.0) < 0.7
    assert sample_mujoco_task("RandomMass", 9)["mass"] == sample_mujoco_task("Random", 9)["mass"]


def test_unknown_family_is_a_one_line_value_error():
    with pytest.raises(ValueError, match=r"^unknown MuJoCo task family 'RandomColour': choose one of RandomMass"):
        sample_mujoco_task("RandomColour", 0)


def _segment(model, data, geom):
    """End points of a capsule's axis in world coordinates."""
    axis = data.geom_xmat[geom].reshape(3, 3)[:, 2] * model.geom_size[geom, 1]
    return data.geom_xpos[geom] - axis, data.geom_xpos[geom] + axis


def _distance_to_segment(point, a, b) -> float:
    t = np.clip(np.dot(point - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
    return float(np.linalg.norm(point - (a + t * (b - a))))


def _joint_to_parent_limb(model: mujoco.MjModel, robot: str) -> dict[str, float]:
    """For each leg body hanging from another leg body: distance from its joint to the parent's capsule axis."""
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    out = {}
    for name in ROBOTS[robot].legs:
        body = model.body(name).id
        parent = model.body_parentid[body]
        if model.body(parent).name in ROBOTS[robot].legs:
            out[name] = _distance_to_segment(
                data.xanchor[model.body_jntadr[body]], *_segment(model, data, model.body_geomadr[parent])
            )
    return out


@pytest.mark.parametrize("robot", ROBOT_NAMES)
@pytest.mark.parametrize("longer", [False, True])
def test_length_variant_stretches_the_legs_and_stays_connected(robot, longer):
    seed = _seed_where("RandomLength", lambda t: (t["length"] > 1.0) == longer)
    env = _variant(variant_id("RandomLength", robot), seed)
    model, stock, factor = env.model, _stock(robot), env.task["length"]
    legs = np.isin(model.geom_bodyid, [model.body(name).id for name in ROBOTS[robot].legs])
    np.testing.assert_allclose(model.geom_size[legs, 1], stock.geom_size[legs, 1] * factor)  # half-lengths
    np.testing.assert_array_equal(model.geom_size[legs, 0], stock.geom_size[legs, 0])  # radii
    np.testing.assert_array_equal(model.geom_size[~legs], stock.geom_size[~legs])  # torso, head, floor
    gaps, stock_gaps = _joint_to_parent_limb(model, robot), _joint_to_parent_limb(stock, robot)
    for name, gap in gaps.items():  # each joint still sits on its parent limb
        assert gap <= model.geom_size[model.body_geomadr[model.body_parentid[model.body(name).id]], 0]
        assert gap == pytest.approx(stock_gaps[name] * factor, abs=1e-12)
    assert lowest_point(model) == pytest.approx(lowest_point(stock), abs=1e-9)  # feet start where the stock's do


@pytest.mark.parametrize("robot", ROBOT_NAMES)
def test_length_variant_simulates_and_keeps_the_height_observation_meaningful(robot):
    env = _variant(variant_id("RandomLength", robot), _seed_where("RandomLength", lambda t: t["length"] < 0.75))
    stock = _stock(robot)
    env.reset(seed=0)
    torso = env.model.body("torso").id  # the height joint still reads the torso's height, as in the stock robot
    assert env.data.qpos[1] - env.data.xpos[torso, 2] == pytest.approx(
        stock.qpos0[1] - stock.body_pos[torso, 2], abs=1e-12
    )
    if ROBOTS[robot].has_healthy_z:
        assert env.is_healthy  # the healthy height range follows the shorter legs
    data = mujoco.MjData(env.model)
    ctrl = np.random.default_rng(0).uniform(-1, 1, (2000, env.model.nu))
    for u in ctrl:
        data.ctrl[:] = u
        mujoco.mj_step(env.model, data)
    assert np.all(np.isfinite(data.qpos)) and data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number == 0
    assert data.xpos[1:, 2].min() > -0.1  # nothing fell through the floor


def test_stock_robots_are_untouched():
    for env_id in ALL_IDS:
        _variant(env_id, 3)
    for robot in ROBOT_NAMES:
        stock_env = gymnasium.make(f"{robot}-v5").unwrapped
        fresh = mujoco.MjModel.from_xml_path(stock_env.fullpath)
        assert all(np.array_equal(x, y) for x, y in zip(_model_arrays(stock_env.model), _model_arrays(fresh)))
        assert stock_env.model.opt.density == 0.0 and not hasattr(stock_env, "task")


def test_build_model_with_no_task_is_the_stock_model():
    for robot in ROBOT_NAMES:
        stock = _stock(robot)
        model, shift = build_model(ROBOTS[robot], {}, gymnasium.make(f"{robot}-v5").unwrapped.fullpath)
        assert shift == 0.0
        for x, y in zip(_model_arrays(model), _model_arrays(stock)):
            np.testing.assert_allclose(x, y, rtol=1e-12)


def test_a_variant_pickles_with_its_task():
    env = _variant("diffdac/RandomLengthWalker2d-v5", 8)
    copy = pickle.loads(pickle.dumps(env))
    assert copy.task == env.task and np.array_equal(copy.model.geom_size, env.model.geom_size)


def test_short_training_run_on_random_mass_hopper(tmp_path):
    run_dir = tmp_path / "run"
    argv = [
        "train",
        "--env",
        "diffdac/RandomMassHopper-v5",
        "--num-learners",
        "2",
        "--envs-per-learner",
        "2",
        "--total-steps",
        "400",
        "--log-interval",
        "200",
        "--hidden",
        "8",
        "--log-dir",
        str(run_dir),
        "--no-progress",
    ]
    assert main(argv) == 0
    with open(run_dir / "tasks.csv") as f:
        rows = list(csv.DictReader(f))
    masses = [float(row["mass"]) for row in rows]
    assert masses == [sample_mujoco_task("RandomMass", envs.task_seed_for(0, k))["mass"] for k in (0, 1)]
    assert masses[0] != masses[1]
    assert len(list((run_dir / "monitor").glob("*.monitor.csv"))) == 4


def test_a_run_on_two_simulator_processes_is_the_run_on_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["train", "--env", "diffdac/RandomMassHopper-v5", "--num-learners", "2", "--envs-per-learner", "3"]
    common += ["--total-steps", "3000", "--hidden", "8", "--no-progress"]
    assert main([*common, "--log-dir", str(tmp_path / "one")]) == 0
    assert main([*common, "--log-dir", str(tmp_path / "two"), "--sim-processes", "2"]) == 0
    for path in sorted((tmp_path / "one" / "monitor").glob("*.monitor.csv")):
        rows = [
            [line.split(",")[:2] for line in (d / "monitor" / path.name).read_text().splitlines()[2:]]
            for d in (tmp_path / "one", tmp_path / "two")
        ]
        assert rows[0] == rows[1] and rows[0]
    params = [checkpoint.gather(tmp_path / d, "params") for d in ("one", "two")]
    assert torch.equal(*params)
