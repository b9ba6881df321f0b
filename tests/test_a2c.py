import pytest
import torch

from diffdac.learners.a2c import a2c_loss, bootstrap_truncations, compute_returns


def _col(values):
    """[T] -> [K, T, E] = [1, T, 1]"""
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1)


def test_n_step_returns_discount_rewards_and_bootstrap_the_last_value():
    rewards, values = _col([1.0, 2.0, 3.0]), _col([0.5, 0.5, 0.5])
    dones = _col([0.0, 0.0, 0.0])
    next_value = torch.tensor([[10.0]], dtype=torch.float64)
    adv, ret = compute_returns(rewards, values, dones, next_value, gamma=0.5)
    # R2 = 3 + 0.5*10 = 8; R1 = 2 + 0.5*8 = 6; R0 = 1 + 0.5*6 = 4
    assert ret.flatten().tolist() == pytest.approx([4.0, 6.0, 8.0])
    assert adv.flatten().tolist() == pytest.approx([3.5, 5.5, 7.5])


def test_returns_stop_at_an_episode_end():
    rewards, values = _col([1.0, 2.0, 3.0]), _col([0.0, 0.0, 0.0])
    dones = _col([0.0, 1.0, 0.0])
    next_value = torch.tensor([[10.0]], dtype=torch.float64)
    _, ret = compute_returns(rewards, values, dones, next_value, gamma=0.5)
    # step 1 ends its episode: R1 = 2, R0 = 1 + 0.5*2 = 2; R2 = 3 + 0.5*10 = 8
    assert ret.flatten().tolist() == pytest.approx([2.0, 2.0, 8.0])


def test_gae_with_lambda_zero_is_the_one_step_td_error():
    rewards, values = _col([1.0, 1.0]), _col([2.0, 3.0])
    dones = _col([0.0, 0.0])
    next_value = torch.tensor([[4.0]], dtype=torch.float64)
    adv, _ = compute_returns(rewards, values, dones, next_value, gamma=0.9, gae_lambda=0.0)
    assert adv.flatten().tolist() == pytest.approx([1 + 0.9 * 3 - 2, 1 + 0.9 * 4 - 3])


def test_gae_with_lambda_one_equals_n_step_returns():
    torch.manual_seed(0)
    rewards, values = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    dones = (torch.rand(2, 5, 3) < 0.3).double()
    next_value = torch.randn(2, 3, dtype=torch.float64)
    a1, r1 = compute_returns(rewards, values, dones, next_value, 0.97)
    a2, r2 = compute_returns(rewards, values, dones, next_value, 0.97, gae_lambda=1.0)
    torch.testing.assert_close(r1, r2)


def test_truncation_bootstraps_from_the_value_of_the_last_observation():
    rewards = _col([-1.0, -1.0])
    truncated = _col([0.0, 1.0])
    final_values = _col([100.0, -20.0])
    out = bootstrap_truncations(rewards, truncated, final_values, gamma=0.5)
    assert out.flatten().tolist() == [-1.0, -1.0 + 0.5 * -20.0]


def test_a2c_loss_on_a_hand_computed_case():
    logp = torch.tensor([[-1.0, -2.0]])
    entropy = torch.tensor([[0.5, 1.5]])
    values = torch.tensor([[1.0, 2.0]], requires_grad=True)
    returns = torch.tensor([[3.0, 1.0]])
    advantages = returns - values.detach()  # [2, -1]
    loss = a2c_loss(logp, entropy, values, returns, advantages, value_coef=0.5, entropy_coef=0.1)
    policy = -(2 * -1.0 + -1 * -2.0) / 2  # 0
    value = (4 + 1) / 2
    assert loss.policy.item() == pytest.approx(policy)
    assert loss.value.item() == pytest.approx(value)
    assert loss.entropy.item() == pytest.approx(1.0)
    assert loss.total.item() == pytest.approx(policy + 0.5 * value - 0.1 * 1.0)


def test_loss_is_reduced_per_learner():
    logp = torch.zeros(3, 4, requires_grad=True)
    zeros = torch.zeros(3, 4)
    returns = torch.tensor([[1.0] * 4, [2.0] * 4, [3.0] * 4])
    loss = a2c_loss(logp, zeros, zeros, returns, returns, 0.5, 0.0)
    assert loss.total.shape == (3,)
    loss.total[1].backward()
    assert logp.grad[0].abs().sum() == 0 and logp.grad[2].abs().sum() == 0


def test_a_kernel_serves_only_cpu_float32_tensors_and_only_where_its_probe_passes():
    from diffdac.learners import kernels

    x = torch.zeros(2, 3)
    assert kernels.serves(lambda: True, x, x.t())  # any strides: the kernels that ask this only read
    assert not kernels.serves(lambda: True, x, x.double())
    assert not kernels.serves(lambda: False, x)
