"""The numba kernels of the A2C step give the bits of the torch ops they replace, and training is the same run with them or without."""

import numpy as np
import pandas as pd
import pytest
import torch

from diffdac import TrainConfig, noise, train
from diffdac.learners import kernels
from diffdac.run import checkpoint
from diffdac.learners.kernels import returns_by_ops

pytestmark = pytest.mark.skipif(kernels.numba is None, reason="numba (the [fast] extra) is not installed")


def test_every_kernel_serves_on_this_machine():
    """With numba installed each kernel passes its probe; if one fails here, training silently takes the slower ops."""
    assert kernels.returns_available() and kernels.categorical_available() and noise.compiled()
    assert kernels.rmsprop_variant() is not None


@pytest.mark.parametrize("gamma, lam", [(0.99, 1.0), (0.9, 0.95), (0.5, 0.0)])
def test_returns_equal_the_torch_ops_bit_for_bit(gamma, lam):
    gen = torch.Generator().manual_seed(3)
    k, t, e = 5, 7, 3
    rewards = torch.randn(k, t, e, generator=gen) * 10.0
    values = torch.randn(k, t * e, generator=gen).view(k, t, e)  # the critic's [K, T * E], as adapt passes it
    dones = (torch.rand(t, k, e, generator=gen) < 0.25).float().transpose(0, 1)  # strided: the kernel only reads
    next_value = torch.randn(k, e, generator=gen)
    want = returns_by_ops(rewards, values, dones, next_value, gamma, lam)
    got = kernels.returns(rewards, values, dones, next_value, gamma, lam)
    assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_categorical_draws_equal_the_torch_ops_including_boundaries():
    gen = torch.Generator().manual_seed(4)
    probs = torch.softmax(torch.randn(30, 20, 5, generator=gen) * 4.0, dim=-1)
    u = np.random.default_rng(4).random((30, 20, 1))
    cdf = probs.double().cumsum(-1).numpy()
    u[0, :5, 0] = cdf[0, np.arange(5), np.arange(5)]  # exactly on each running sum
    u[1, 0, 0] = np.nextafter(1.0, 0.0)
    got = kernels.categorical(probs, u)
    assert torch.equal(got, kernels.categorical_by_ops(probs, u))
    assert got.dtype == torch.int64 and set(got.unique().tolist()) == set(range(5))


@pytest.mark.parametrize("max_norm, chunk", [(0.5, 1 << 19), (0.0, 1 << 19), (0.5, 2400), (0.5, 100)])
def test_clipped_rmsprop_steps_equal_torch_and_hand_over_the_same_state(max_norm, chunk, monkeypatch):
    """Rows above and below the clip norm, in one block or several (3 + 3 + 1 rows, or one each); then
    the torch optimizer continues from the kernels' state."""
    monkeypatch.setattr(kernels, "CHUNK", chunk)
    gen = torch.Generator().manual_seed(5)
    start = torch.randn(7, 777, generator=gen)
    grads = [torch.randn(7, 777, generator=gen) * 4.0 ** torch.arange(-3.0, 4.0)[:, None] for _ in range(5)]
    ends = []
    for kernel_steps in (0, 3):
        flat = start.clone().requires_grad_(True)
        optimizer = torch.optim.RMSprop([flat], lr=7e-4, alpha=0.99, eps=1e-5, foreach=False)
        for i, grad in enumerate(grads):
            flat.grad = grad.clone()
            if i < kernel_steps:
                scale = kernels.clip_scale(flat.grad, max_norm) if max_norm > 0 else None
                assert kernels.rmsprop_kernel(optimizer, flat, scale, kernels.rmsprop_variant()) == -1
            else:
                if max_norm > 0:
                    flat.grad.mul_(kernels.clip_scale(flat.grad, max_norm))
                optimizer.step()
        ends.append((flat.detach().clone(), optimizer.state_dict()))
    (p0, s0), (p1, s1) = ends
    assert torch.equal(p0, p1)
    assert torch.equal(s0["state"][0]["square_avg"], s1["state"][0]["square_avg"])
    assert s0["state"][0]["step"] == s1["state"][0]["step"] == len(grads)


@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernels", "torch ops"])
def test_the_step_names_the_first_learner_left_with_non_finite_parameters(use_kernel, monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK", 100)  # a block per row: the row is found in a later block
    if not use_kernel:
        monkeypatch.setattr(kernels, "rmsprop_variant", lambda: None)
    flat = torch.zeros(4, 50, requires_grad=True)
    optimizer = torch.optim.RMSprop([flat], lr=1e-2)
    flat.grad = torch.ones(4, 50)
    assert kernels.clip_and_step(optimizer, flat, 0.5) == -1
    flat.grad = torch.ones(4, 50)
    flat.grad[2, 7] = float("nan")
    flat.grad[3, 0] = float("inf")
    assert kernels.clip_and_step(optimizer, flat, 0.0) == 2


@pytest.mark.parametrize(
    "seed, step, learners, sims, draws", [(0, 0, [0, 1], 1, 1), (2**40 + 3, 2**33, [5, 2**20], 3, 4)]
)
def test_the_keyed_uniform_loop_draws_numpys_numbers(seed, step, learners, sims, draws):
    stream = noise.Stream(seed, noise.ACTION, np.array(learners), sims, draws)
    assert np.array_equal(stream._by_loop(step), stream._by_numpy(step))


def _without_kernels(monkeypatch) -> None:
    monkeypatch.setattr(kernels, "returns_available", lambda: False)
    monkeypatch.setattr(kernels, "categorical_available", lambda: False)
    monkeypatch.setattr(kernels, "rmsprop_variant", lambda: None)
    monkeypatch.setattr(noise, "compiled", lambda: False)


@pytest.mark.parametrize("env", ["diffdac/RandomExtremeAcrobot-v1", "diffdac/RandomMassHopper-v5"])
def test_a_run_is_the_same_with_the_kernels_and_without(tmp_path, monkeypatch, env):
    """Episodes, parameters and optimizer state to the last bit: the [fast] extra changes the speed only."""
    options = dict(env=env, num_learners=3, envs_per_learner=2, total_steps=3000, hidden=16, progress=False)
    fast = train(TrainConfig(log_dir=str(tmp_path / "fast"), **options))
    _without_kernels(monkeypatch)
    plain = train(TrainConfig(log_dir=str(tmp_path / "plain"), **options))
    for path in sorted((fast / "monitor").glob("*.monitor.csv")):
        a, b = (pd.read_csv(d / "monitor" / path.name, skiprows=1)[["r", "l"]] for d in (fast, plain))
        pd.testing.assert_frame_equal(a, b)
    states = [checkpoint.load_rank(d, checkpoint.resolve(d, None), 0)["learners"] for d in (fast, plain)]
    assert torch.equal(states[0]["params"], states[1]["params"])
    square_avgs = [s["optimizer"]["state"][0]["square_avg"] for s in states]
    assert torch.equal(*square_avgs) and square_avgs[0].abs().sum() > 0
