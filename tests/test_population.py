import gymnasium as gym
import numpy as np
import torch

from diffdac.learners.population import Population
from diffdac.learners import kernels

OBS = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def _pop(ids, action_space=DISCRETE, **kwargs) -> Population:
    return Population(OBS, action_space, np.asarray(ids), hidden=16, seed=3, **kwargs)


def test_learners_share_initial_parameters_unless_asked_otherwise():
    shared, separate = _pop(range(4)), _pop(range(4), separate_init=True)
    assert all(torch.equal(shared.flat[0], row) for row in shared.flat)
    assert not torch.equal(separate.flat[0], separate.flat[1])


def test_initial_parameters_do_not_depend_on_the_block_a_learner_is_in():
    whole, block = _pop(range(6), separate_init=True), _pop([4, 5], separate_init=True)
    assert torch.equal(whole.flat[4:], block.flat)


def test_hidden_weights_are_orthogonal_with_the_original_gain():
    w = _pop([0]).trainable()["actor.0.weight"][0]  # [in=6, out=16]
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(6), atol=1e-5, rtol=0)


def test_forward_shapes_for_discrete_and_continuous_heads():
    obs = torch.randn(3, 5, 6)
    pop = _pop(range(3))
    assert pop.actor(obs).shape == (3, 5, 3) and pop.value(obs).shape == (3, 5)
    assert pop.act(obs, seed=0, step=0).shape == (3, 5)
    cont = _pop(range(3), action_space=BOX)
    actions = cont.act(obs, seed=0, step=0)
    assert actions.shape == (3, 5, 2)
    logp, ent = cont.evaluate(obs, actions)
    assert logp.shape == (3, 5) and ent.shape == (3, 5)


def test_a_learner_acts_the_same_in_any_block():
    obs = torch.randn(4, 8, 6)
    whole, block = _pop(range(4), separate_init=True), _pop([2, 3], separate_init=True)
    assert torch.equal(whole.act(obs, 7, 11)[2:], block.act(obs[2:], 7, 11))


def test_sampled_actions_follow_the_policy():
    pop = _pop([0])
    obs = torch.zeros(1, 20000, 6)
    probs = torch.softmax(pop.actor(obs[:, :1]), -1).flatten()
    counts = torch.bincount(pop.act(obs, 0, 0).flatten(), minlength=3) / 20000
    torch.testing.assert_close(counts, probs.detach(), atol=0.02, rtol=0)


def test_a_learner_gradient_never_reaches_another():
    pop = _pop(range(3), separate_init=True)
    obs = torch.randn(3, 4, 6)
    pop.value(obs)[1].sum().backward()
    grad = pop.flat.grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0


def test_gradients_are_clipped_per_learner():
    grad = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    grad.mul_(kernels.clip_scale(grad, 1.0))  # as clip_and_step clips before the step
    torch.testing.assert_close(grad.norm(dim=1), torch.tensor([1.0, 0.5]), atol=1e-5, rtol=0)


def test_a_learner_computes_the_same_bits_alone_as_in_a_block():
    """A batch of one matrix takes another BLAS kernel (5 x 64 by 64 x 64 rounds differently): the paper's
    one learner per process must still give the numbers of a block of learners."""
    obs, actions = torch.randn(4, 5, 6), torch.randint(0, 3, (4, 5))
    block = Population(OBS, DISCRETE, np.arange(4), hidden=64, separate_init=True)
    params = block.trainable()
    logp, _ = block.evaluate(obs, actions, params)
    (logp.sum() + block.value(obs, params).sum()).backward()
    for k in range(4):
        alone = Population(OBS, DISCRETE, np.array([k]), hidden=64, separate_init=True)
        own = alone.trainable()
        assert torch.equal(alone.actor(obs[k : k + 1], own)[0], block.actor(obs, params)[k])
        assert torch.equal(alone.value(obs[k : k + 1], own)[0], block.value(obs, params)[k])
        logp_k, _ = alone.evaluate(obs[k : k + 1], actions[k : k + 1], own)
        (logp_k.sum() + alone.value(obs[k : k + 1], own).sum()).backward()
        for name in params:
            assert torch.equal(own[name].grad[0], params[name].grad[k]), name


def test_the_gaussian_terms_are_torch_normals_bit_for_bit_forward_and_backward():
    from diffdac.learners.population import _gaussian

    gen = torch.Generator().manual_seed(0)
    mean0, log_std0 = torch.randn(4, 20, 3, generator=gen), torch.randn(4, 1, 3, generator=gen) * 0.3
    actions, weights = torch.randn(4, 20, 3, generator=gen), torch.randn(4, 20, generator=gen)
    results = []
    for terms in (_gaussian, None):
        mean, log_std = mean0.clone().requires_grad_(), log_std0.clone().requires_grad_()
        if terms is None:
            dist = torch.distributions.Normal(mean, log_std.exp())
            logp, entropy = dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)
        else:
            logp, entropy = terms(mean, log_std, actions)
        ((logp * weights).sum() + 0.01 * entropy.sum()).backward()
        results.append((logp, entropy, mean.grad, log_std.grad))
    assert all(torch.equal(a, b) for a, b in zip(*results))
