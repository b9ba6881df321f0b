"""Batched Acrobot against gymnasium's own AcrobotEnv, task sampling, and layout independence."""

import gymnasium
import numpy as np
import pytest

import envs
from envs import BatchedAcrobot, TaskSpec, make_task_batch, sample_acrobot_task, task_seed_for
from envs import acrobot_kernel
from envs.acrobot import apply_task


def _batch(*args, **kwargs):
    """The task batch of TaskSpec(*args, **kwargs)."""
    return make_task_batch(TaskSpec(*args, **kwargs))


def _oracle_envs(tasks, envs_per_learner, seed):
    """gymnasium Acrobot-v1 (with its TimeLimit) per simulator, links set to the learner's task."""
    oracles = []
    for k, task in enumerate(tasks):
        row = []
        for e in range(envs_per_learner):
            env = gymnasium.make("Acrobot-v1")
            apply_task(env.unwrapped, task)
            env.reset(seed=seed + 10 * k + e)
            row.append(env)
        oracles.append(row)
    return oracles


def _policy(obs, rng):
    """Random actions on sim 0 (episodes truncate); on sim 1 torque along the joint's velocity,
    a bang-bang swing-up that terminates within ~150 steps."""
    actions = rng.integers(0, 3, size=obs.shape[:2])
    actions[:, 1] = np.where(obs[:, 1, 5] > 0, 2, 0)
    return actions


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "numba kernel"])
def test_batched_acrobot_matches_gymnasium_bit_for_bit(compiled):
    if compiled and not acrobot_kernel.available():
        pytest.skip("numpy's float64 sin and cos are not libm's on this machine, so only the numpy path is exact")
    tasks = [sample_acrobot_task(f, task_seed_for(7, k)) for k, f in enumerate(["standard", "normal", "extreme"])]
    K, E = len(tasks), 2
    oracles = _oracle_envs(tasks, E, seed=123)
    batch = BatchedAcrobot(tasks, E, seed=0, learner_ids=range(K), compiled=compiled)
    start = np.array([[env.unwrapped.state for env in row] for row in oracles])
    batch.load_state_dict({**batch.state_dict(), "state": start.tolist()})  # each simulator in its oracle's state
    rng = np.random.default_rng(0)
    obs = np.array([[env.unwrapped._get_ob() for env in row] for row in oracles])
    ended = {"terminated": 0, "truncated": 0}
    for _ in range(1200):
        actions = _policy(obs, rng)
        result = batch.step(actions)
        for k in range(K):
            for e in range(E):
                o, r, term, trunc, _ = oracles[k][e].step(int(actions[k, e]))
                assert np.array_equal(result.final_obs[k, e], o)
                assert result.reward[k, e] == r
                assert result.terminated[k, e] == term and result.truncated[k, e] == trunc
                if term or trunc:
                    ended["terminated" if term else "truncated"] += 1
                    _restart_oracle(oracles[k][e], batch.state[k, e], result.obs[k, e])
                else:
                    assert np.array_equal(result.obs[k, e], o)
                    assert np.array_equal(batch.state[k, e], oracles[k][e].unwrapped.state)  # float64, every bit
        obs = result.obs
    assert ended["terminated"] >= 1 and ended["truncated"] >= 1, ended


def _restart_oracle(env, batch_state, batch_obs):
    """Start the oracle's next episode in the batch's fresh float32 initial state."""
    env.reset()
    env.unwrapped.state = batch_state.astype(np.float32)
    assert np.array_equal(env.unwrapped.state.astype(np.float64), batch_state)
    assert np.array_equal(env.unwrapped._get_ob(), batch_obs)


def test_truncation_statistics_and_same_step_autoreset():
    """With zero torque from near rest nothing terminates: every episode is cut at step 500."""
    batch = _batch("diffdac/Acrobot-v1", seed=1, learner_ids=[0], envs_per_learner=3)
    batch.reset()
    zero_torque = np.ones((1, 3), dtype=int)
    for _ in range(499):
        result = batch.step(zero_torque)
        assert not (result.terminated | result.truncated).any()
        assert np.array_equal(result.obs, result.final_obs)
        assert not result.episode_length.any() and not result.episode_return.any()
    result = batch.step(zero_torque)
    assert result.truncated.all() and not result.terminated.any()
    assert np.all(result.episode_length == 500) and np.all(result.episode_return == -500.0)
    assert np.all(np.abs(result.obs[..., 4:]) <= 0.1)  # a fresh initial state
    assert not np.array_equal(result.obs, result.final_obs)


@pytest.mark.parametrize("family, low, high", [("normal", 0.75, 1.25), ("extreme", 0.5, 1.5)])
def test_task_ranges(family, low, high):
    values = np.array([list(sample_acrobot_task(family, s).values()) for s in range(300)])
    assert values.min() >= low and values.max() <= high
    if family == "extreme":
        assert not np.any((values > 0.75) & (values < 1.25))
        assert (values < 1.0).any() and (values > 1.0).any()


def test_standard_task_is_gymnasium_default():
    assert sample_acrobot_task("standard", 5) == {"mass": 1.0, "length": 1.0, "inertia": 1.0}


def test_task_sampling_is_deterministic():
    assert sample_acrobot_task("extreme", 11) == sample_acrobot_task("extreme", 11)
    assert sample_acrobot_task("extreme", 11) != sample_acrobot_task("extreme", 12)
    assert sample_acrobot_task("normal", 11) != sample_acrobot_task("normal", 12)


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="unknown Acrobot family"):
        sample_acrobot_task("medium", 0)


@pytest.mark.parametrize(
    "env_id", ["diffdac/Acrobot-v1", "diffdac/RandomNormalAcrobot-v1", "diffdac/RandomExtremeAcrobot-v1"]
)
def test_registered_ids_build_with_task_seed(env_id):
    env = gymnasium.make(env_id, task_seed=42)
    family = {"diffdac/Acrobot-v1": "standard"}.get(env_id, "normal" if "Normal" in env_id else "extreme")
    assert env.unwrapped.task == sample_acrobot_task(family, 42)
    assert env.unwrapped.LINK_MASS_2 == env.unwrapped.task["mass"]
    assert env.spec.max_episode_steps == 500
    env.reset(seed=0)
    env.step(1)


def test_registration_is_idempotent(recwarn):
    import importlib

    importlib.reload(envs)
    assert not [w for w in recwarn if "diffdac" in str(w.message)]


def test_layout_independence():
    env_id, seed, E = "diffdac/RandomExtremeAcrobot-v1", 3, 2
    whole = _batch(env_id, seed, [0, 1, 2, 3], E)
    parts = [_batch(env_id, seed, ids, E) for ids in ([0, 1], [2, 3])]
    assert whole.tasks == parts[0].tasks + parts[1].tasks
    assert np.array_equal(whole.reset(), np.concatenate([p.reset() for p in parts]))
    rng = np.random.default_rng(0)
    for _ in range(600):
        actions = rng.integers(0, 3, size=(4, E))
        a = whole.step(actions)
        b = [p.step(actions[2 * i : 2 * i + 2]) for i, p in enumerate(parts)]
        for field in ("obs", "reward", "terminated", "truncated", "final_obs", "episode_return", "episode_length"):
            assert np.array_equal(getattr(a, field), np.concatenate([getattr(r, field) for r in b])), field
