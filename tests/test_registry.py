"""envs' task-family seam: the registry (ids, one family each, unknown ids), TaskSpec, held-out splits."""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest

import envs
from envs import BatchedAcrobot, GymTaskBatch, TaskFamily, TaskSpec, family_of, make_task_batch, registry
from envs.family import AcrobotFamily

SHORT_ID = "diffdactest/ShortCartPole-v1"


class ShortCartPole(TaskFamily):
    """A family as a user would add one: CartPole cut at 10 steps."""

    ids = (SHORT_ID,)

    def registration(self, env_id: str) -> dict:
        return {"entry_point": "gymnasium.envs.classic_control.cartpole:CartPoleEnv", "max_episode_steps": 10}


@pytest.fixture
def short_family(monkeypatch):
    """ShortCartPole registered for one test, then gone from both registries."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    family = ShortCartPole()
    envs.register(family)
    yield family
    gymnasium.registry.pop(SHORT_ID, None)


def test_every_builtin_id_has_one_family_and_is_a_gymnasium_id():
    ids = registry.registered_ids()
    assert len(ids) == len(set(ids)) == 3 + 4 * 3  # three Acrobot ranges, four MuJoCo families x three robots
    for env_id in ids:
        assert env_id in family_of(env_id).ids and env_id in gymnasium.registry


def test_an_id_is_registered_by_one_family_only():
    with pytest.raises(ValueError, match="^diffdac/Acrobot-v1 belongs to a family already"):
        envs.register(AcrobotFamily("diffdac/Acrobot-v1", "standard"))
    assert family_of("diffdac/Acrobot-v1").task_range == "standard"


def test_a_registered_family_is_what_make_task_batch_builds(short_family):
    assert family_of(SHORT_ID) is short_family and gymnasium.spec(SHORT_ID).max_episode_steps == 10
    batch = make_task_batch(TaskSpec(SHORT_ID, 0, [0, 1], 2))
    assert isinstance(batch, GymTaskBatch) and batch.tasks == [{}, {}]
    batch.reset()
    results = [batch.step(np.full((2, 2), t % 2)) for t in range(10)]  # pushed to and fro: the pole stays up
    assert not any(r.truncated.any() for r in results[:-1]) and results[-1].truncated.all()  # cut at step 10
    batch.close()


@pytest.mark.parametrize(
    "env_id, hint",
    [("NoSuchEnv-v0", ""), ("diffdac/RandomExtremeAcrobat-v1", "did you mean diffdac/RandomExtremeAcrobot-v1?")],
)
def test_an_unknown_id_is_one_line_naming_it(env_id, hint):
    with pytest.raises(ValueError) as info:
        family_of(env_id)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"unknown environment id {env_id!r}: {hint}")
    assert not envs.needs_mujoco(env_id)  # asked before the batch is made, which then names the id


def test_plain_gymnasium_ids_fall_back_to_the_gymnasium_family():
    cartpole, hopper = family_of("CartPole-v1"), family_of("Hopper-v5")
    assert type(cartpole) is type(hopper) and cartpole.ids == ("CartPole-v1",)
    assert (cartpole.needs_mujoco, cartpole.simulator_kind) == (False, "gym")
    assert (hopper.needs_mujoco, hopper.simulator_kind) == (True, "mujoco")
    assert envs.needs_mujoco("diffdac/RandomWindWalker2d-v5") and not envs.needs_mujoco("diffdac/Acrobot-v1")


def test_the_spec_is_one_frozen_value_whatever_holds_the_ids():
    spec = TaskSpec("diffdac/Acrobot-v1", 3, np.arange(2), 4)
    assert spec == TaskSpec("diffdac/Acrobot-v1", 3, [0, 1], 4) and spec.learner_ids == (0, 1)
    assert all(type(k) is int for k in spec.learner_ids)
    assert spec.task_seed(1) == envs.task_seed_for(3, 1) and spec.task_seed(1) != spec.task_seed(0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 4
    with pytest.raises(ValueError, match="got 1 tasks for 2 learners"):
        TaskSpec("diffdac/Acrobot-v1", 0, [0, 1], tasks=[{"mass": 1.0, "length": 1.0, "inertia": 1.0}])


def test_explicit_tasks_reach_the_acrobot_and_are_refused_where_tasks_come_from_seeds():
    task = {"mass": 1.4, "length": 0.6, "inertia": 1.3}
    batch = make_task_batch(TaskSpec("diffdac/Acrobot-v1", 0, [7], 2, tasks=[task]))
    assert isinstance(batch, BatchedAcrobot) and batch.tasks == [task]
    env = family_of("diffdac/Acrobot-v1").make_env(TaskSpec("diffdac/Acrobot-v1", 0, [7], tasks=[task]), 0)
    assert env.unwrapped.task == task and env.unwrapped.LINK_MASS_1 == 1.4
    with pytest.raises(ValueError, match="takes no task parameters"):
        make_task_batch(TaskSpec("CartPole-v1", 0, [0], tasks=[task]))


@pytest.mark.parametrize("env_id", ["diffdac/RandomNormalAcrobot-v1", "diffdac/RandomMassHopper-v5"])
def test_a_learners_single_env_has_the_task_of_its_batch(env_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo may write MUJOCO_LOG.TXT
    spec = TaskSpec(env_id, 5, [2, 3], task_seeding="original", mass_scaling="mass-and-inertia")
    family = family_of(spec.env_id)
    single = [family.make_env(spec, i).unwrapped for i in (0, 1)]
    assert [env.task for env in single] == make_task_batch(spec).tasks == family.learner_tasks(spec)
    if family.needs_mujoco:  # the spec's mass scaling reaches the env: inertias scaled with the masses
        other = family.make_env(dataclasses.replace(spec, mass_scaling="body-mass"), 0).unwrapped
        assert not np.array_equal(single[0].model.body_inertia, other.model.body_inertia)


def test_held_out_tasks_are_the_other_acrobot_range_or_new_task_seeds():
    assert family_of("diffdac/RandomNormalAcrobot-v1").heldout("diffdac/RandomNormalAcrobot-v1", 3) == (
        "diffdac/RandomExtremeAcrobot-v1",
        [0, 1, 2],
    )
    assert family_of("diffdac/RandomExtremeAcrobot-v1").heldout("diffdac/RandomExtremeAcrobot-v1", 2)[0] == (
        "diffdac/RandomNormalAcrobot-v1"
    )
    for env_id in ("diffdac/Acrobot-v1", "CartPole-v1", "diffdac/RandomMassHopper-v5"):
        assert family_of(env_id).heldout(env_id, 3) == (env_id, [3, 4, 5])


def test_a_mujoco_variants_stock_id_and_none_for_other_ids():
    assert envs.stock_id("diffdac/RandomLengthHalfCheetah-v5") == "HalfCheetah-v5"
    with pytest.raises(ValueError, match="'CartPole-v1' is not a MuJoCo task variant"):
        envs.stock_id("CartPole-v1")
    with pytest.raises(ValueError, match="is not a MuJoCo task variant"):
        envs.stock_id("diffdac/Acrobot-v1")
