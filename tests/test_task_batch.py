"""GymTaskBatch on CartPole and MuJoCo variants (action clipping), and the batch each id's family builds, and errors."""

import gymnasium
import numpy as np
import pytest

from envs import BatchedAcrobot, GymTaskBatch, TaskSpec, WorkerError, family_of, make_task_batch
from envs.gym_env import make_learner_env
from envs.sim_workers import SimWorker

K, E = 2, 2


def _batch(*args, **kwargs):
    """The task batch of TaskSpec(*args, **kwargs)."""
    return make_task_batch(TaskSpec(*args, **kwargs))


def _gym_batch(*args, **kwargs):
    return GymTaskBatch(TaskSpec(*args, **kwargs))


def _run(batch, steps, seed=0):
    """Random actions; returns every StepResult."""
    rng = np.random.default_rng(seed)
    return [batch.step(rng.integers(0, 2, size=(batch.num_learners, E))) for _ in range(steps)]


def test_cartpole_shapes_and_same_step_autoreset():
    batch = _batch("CartPole-v1", seed=0, learner_ids=[0, 1], envs_per_learner=E)
    assert isinstance(batch, GymTaskBatch)
    assert batch.tasks == [{}, {}] and batch.observation_space.shape == (4,)
    obs = batch.reset()
    assert obs.shape == (K, E, 4) and obs.dtype == np.float32
    rewards_since_reset = np.zeros((K, E))
    steps_since_reset = np.zeros((K, E), dtype=int)
    ended = 0
    for result in _run(batch, 150):
        assert result.obs.shape == result.final_obs.shape == (K, E, 4)
        assert result.reward.shape == result.terminated.shape == (K, E)
        assert result.reward.dtype == np.float32 and result.episode_return.dtype == np.float64
        rewards_since_reset += result.reward
        steps_since_reset += 1
        done = result.terminated | result.truncated
        assert np.array_equal(result.obs[~done], result.final_obs[~done])
        assert np.all(np.abs(result.obs[done]) <= 0.05)  # CartPole's initial-state bound
        if done.any():
            assert not np.array_equal(result.obs[done], result.final_obs[done])
        assert np.array_equal(result.episode_return, np.where(done, rewards_since_reset, 0.0))
        assert np.array_equal(result.episode_length, np.where(done, steps_since_reset, 0))
        rewards_since_reset[done] = 0.0
        steps_since_reset[done] = 0
        ended += done.sum()
    assert ended >= 4


def test_gym_batch_is_layout_independent():
    whole = _gym_batch("CartPole-v1", seed=5, learner_ids=[0, 1], envs_per_learner=E)
    parts = [_gym_batch("CartPole-v1", seed=5, learner_ids=[k], envs_per_learner=E) for k in (0, 1)]
    assert np.array_equal(whole.reset(), np.concatenate([p.reset() for p in parts]))
    rng = np.random.default_rng(1)
    for _ in range(100):
        actions = rng.integers(0, 2, size=(K, E))
        a = whole.step(actions)
        b = [p.step(actions[k : k + 1]) for k, p in enumerate(parts)]
        assert np.array_equal(a.obs, np.concatenate([r.obs for r in b]))
        assert np.array_equal(a.episode_length, np.concatenate([r.episode_length for r in b]))


def test_gym_batch_gives_each_learner_its_diffdac_task():
    batch = _gym_batch("diffdac/RandomExtremeAcrobot-v1", seed=0, learner_ids=[0, 1], envs_per_learner=E)
    reference = _batch("diffdac/RandomExtremeAcrobot-v1", seed=0, learner_ids=[0, 1], envs_per_learner=E)
    assert batch.tasks == reference.tasks and batch.tasks[0] != batch.tasks[1]


@pytest.mark.parametrize(
    "env_id", ["diffdac/Acrobot-v1", "diffdac/RandomNormalAcrobot-v1", "diffdac/RandomExtremeAcrobot-v1"]
)
def test_acrobot_ids_get_the_batched_acrobot(env_id):
    assert family_of(env_id).simulator_kind == "batched"
    batch = _batch(env_id, seed=0, learner_ids=[3, 4, 5], envs_per_learner=E)
    assert isinstance(batch, BatchedAcrobot)
    assert batch.num_learners == 3 and batch.envs_per_learner == E
    assert batch.reset().shape == (3, E, 6)


def test_other_ids_are_not_batched_acrobot():
    assert all(family_of(env_id).simulator_kind != "batched" for env_id in ("Acrobot-v1", "CartPole-v1"))
    assert not isinstance(_batch("Acrobot-v1", 0, [0]), BatchedAcrobot)


@pytest.mark.parametrize("env_id", ["NoSuchEnv-v0", "diffdac/RandomExtremeAcrobat-v1", "nospace/CartPole-v1"])
def test_unknown_id_is_a_one_line_value_error(env_id):
    with pytest.raises(ValueError) as info:
        _batch(env_id, seed=0, learner_ids=[0], envs_per_learner=1)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"unknown environment id {env_id!r}")


def test_box_actions_are_clipped_for_the_simulator_only():
    wild, tame = (
        _gym_batch("diffdac/RandomMassHopper-v5", seed=0, learner_ids=[0, 1], envs_per_learner=E) for _ in range(2)
    )
    assert np.array_equal(wild.reset(), tame.reset())
    rng = np.random.default_rng(2)
    for _ in range(30):
        actions = rng.normal(0.0, 5.0, size=(K, E, 3)).astype(np.float32)  # mostly outside [-1, 1]
        given = actions.copy()
        a = wild.step(actions)
        b = tame.step(np.clip(actions, -1.0, 1.0))
        assert np.array_equal(actions, given)  # the caller's actions (for the log-probability) are untouched
        assert np.array_equal(a.obs, b.obs) and np.array_equal(a.reward, b.reward)


def test_mujoco_batch_gives_each_learner_its_task_and_is_layout_independent():
    env_id = "diffdac/RandomMassHopper-v5"
    whole = _batch(env_id, seed=3, learner_ids=[0, 1], envs_per_learner=E)
    parts = [_batch(env_id, seed=3, learner_ids=[k], envs_per_learner=E) for k in (0, 1)]
    assert isinstance(whole, GymTaskBatch) and whole.tasks[0]["mass"] != whole.tasks[1]["mass"]
    assert whole.tasks == [p.tasks[0] for p in parts]
    assert np.array_equal(whole.reset(), np.concatenate([p.reset() for p in parts]))
    rng = np.random.default_rng(4)
    for _ in range(60):
        actions = rng.uniform(-1, 1, size=(K, E, 3)).astype(np.float32)
        a = whole.step(actions)
        b = [p.step(actions[k : k + 1]) for k, p in enumerate(parts)]
        assert np.array_equal(a.obs, np.concatenate([r.obs for r in b]))
        assert np.array_equal(a.episode_return, np.concatenate([r.episode_return for r in b]))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "diffdac/RandomMassHopper-v5"])
def test_gym_batch_equals_gymnasiums_sync_vector_env_with_same_step_autoreset(env_id):
    batch = _gym_batch(env_id, seed=1, learner_ids=[0, 1], envs_per_learner=E)
    vec = gymnasium.vector.SyncVectorEnv(
        [lambda k=k: make_learner_env(env_id, 1, k) for k in (0, 1) for _ in range(E)],
        autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP,
    )
    obs, _ = vec.reset(seed=batch._reset_seeds)
    assert np.array_equal(batch.reset().reshape(K * E, -1), obs.astype(np.float32))
    space, rng, resets = batch.action_space, np.random.default_rng(0), 0
    for _ in range(150):
        if env_id == "CartPole-v1":
            actions = rng.integers(0, 2, size=K * E)
        else:
            actions = rng.uniform(-1, 1, (K * E, 3)).astype(np.float32)
        ours = batch.step(actions.reshape((K, E) + space.shape))
        obs, reward, terminated, truncated, info = vec.step(actions)
        done = terminated | truncated
        final = obs.copy()
        for i in np.nonzero(done)[0]:
            final[i] = info["final_obs"][i]
        assert np.array_equal(ours.obs.reshape(K * E, -1), obs.astype(np.float32))
        assert np.array_equal(ours.final_obs.reshape(K * E, -1), final.astype(np.float32))
        assert np.array_equal(ours.reward.ravel(), reward.astype(np.float32))
        assert np.array_equal(ours.terminated.ravel(), terminated) and np.array_equal(ours.truncated.ravel(), truncated)
        resets += done.sum()
    assert resets >= 4


@pytest.mark.parametrize("env_id", ["CartPole-v1", "diffdac/RandomMassHopper-v5"])
@pytest.mark.parametrize("parallel", [{"sim_threads": 2}, {"sim_processes": 3}], ids=["threads", "processes"])
def test_stepping_a_batch_on_several_cores_gives_the_same_numbers(env_id, parallel, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo may write MUJOCO_LOG.TXT
    batches = [_batch(env_id, 0, [0, 1, 2], 3), _batch(env_id, 0, [0, 1, 2], 3, **parallel)]
    assert batches[0].tasks == batches[1].tasks and batches[0].action_space == batches[1].action_space
    observations = [b.reset() for b in batches]
    assert np.array_equal(*observations)
    rng = np.random.default_rng(0)
    for _ in range(300):  # long enough for many episodes to end and reset
        shape = (3, 3) + batches[0].action_space.shape
        actions = rng.integers(0, 2, shape) if not batches[0].action_space.shape else rng.uniform(-1, 1, shape)
        one, two = (b.step(actions) for b in batches)
        for field in ("obs", "reward", "terminated", "truncated", "final_obs", "episode_return", "episode_length"):
            assert np.array_equal(getattr(one, field), getattr(two, field)), field
    for b in batches:
        b.close()


def test_a_simulator_workers_error_and_its_death_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    worker = SimWorker("diffdac/RandomMassHopper-v5", 0, [0], "keyed", {})
    assert worker.tasks()[0]["mass"] > 0 and worker.reset([1]).shape == (1, 11)
    worker.send_step(np.zeros((1, 5), np.float32))  # a Hopper takes 3 numbers, not 5
    with pytest.raises(WorkerError, match="^a simulator worker failed: ValueError"):
        worker.receive_step()
    worker.close()
    batch = _batch("diffdac/RandomMassHopper-v5", 0, [0, 1], 2, sim_processes=2)
    batch.reset()
    batch._workers[0]._process.kill()
    batch._workers[0]._process.wait()
    with pytest.raises(WorkerError, match="^a simulator worker process died"):
        batch.step(np.zeros((2, 2, 3), np.float32))
    batch.close()


def test_asking_for_simulator_threads_and_processes_at_once_is_refused():
    with pytest.raises(ValueError, match="not both"):
        _batch("CartPole-v1", 0, [0], 2, sim_threads=2, sim_processes=2)
