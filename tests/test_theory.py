"""Diffusion's theory on a convex problem whose answer is known, through the trainer's own optimiser and combine step.

Learner k minimises f_k(theta) = |A_k theta - b_k|^2 / (2m), a least-squares problem of its own. Adapt
is one plain SGD step per learner on the stacked parameters (torch.optim on a [K, P] tensor, as
the trainer steps RMSprop), combine is the diff-a2c method's mixer, the trainer's combine step. For a step
size mu, diffusion theory (Sayed 2014, "Adaptation, learning, and optimization over networks")
says: the network average tracks centralised gradient descent to O(mu); the learners' disagreement
at the fixed point is O(mu^2); with doubly stochastic (Metropolis) weights the fixed point is the
minimiser of the summed objectives up to O(mu), while the original's uniform weights on an
irregular graph converge to the minimiser of a Perron-weighted sum instead.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch

import topologies
from diffdac.network.comm import LocalCommunicator
from diffdac.config import TrainConfig
from diffdac.network.mixing import disagreement
from diffdac.network.methods import method_for
from diffdac.learners import kernels

K, P, M = 6, 3, 5
GRAPH = nx.path_graph(K)  # irregular: the ends have one neighbour, the rest two


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(K, M, P)) + np.eye(M, P)  # well conditioned per learner
    b = rng.normal(size=(K, M)) + 3.0 * np.arange(K)[:, None]  # tasks that disagree
    return torch.from_numpy(a), torch.from_numpy(b)


def _minimiser(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """argmin of sum_k weights_k f_k."""
    hessian = torch.einsum("k,kmp,kmq->pq", weights, a, a)
    return torch.linalg.solve(hessian, torch.einsum("k,kmp,km->p", weights, a, b))


def _losses(theta: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """f_k(theta_k) for every learner: [K]."""
    return (torch.einsum("kmp,kp->km", a, theta) - b).square().sum(1) / (2 * M)


class Network:
    """K learners with stacked parameters, stepped by SGD and combined by the trainer's Diffusion mixer."""

    def __init__(self, mu: float, rule: str, a: torch.Tensor, b: torch.Tensor) -> None:
        self.a, self.b = a, b
        self.theta = torch.zeros(K, P, dtype=torch.float64, requires_grad=True)
        self.optimizer = torch.optim.SGD([self.theta], lr=mu)
        config = TrainConfig(num_learners=K, weights=rule)  # the mixer reads the weights rule; the graph is given
        self.mixer = method_for(config, GRAPH).mixer(LocalCommunicator(), np.arange(K), torch.device("cpu"))

    def update(self, round_index: int) -> None:
        self.optimizer.zero_grad()
        _losses(
            self.theta, self.a, self.b
        ).sum().backward()  # losses per learner, then summed: no learner shares a gradient
        # the trainer's per-learner clip (far above these gradients) and step
        kernels.clip_and_step(self.optimizer, self.theta, 1e6)
        with torch.no_grad():
            self.theta.copy_(self.mixer.combine(round_index, np.ones(K, dtype=bool), [self.theta.detach()])[0])

    def fixed_point(self, max_rounds: int = 200_000) -> torch.Tensor:
        for r in range(max_rounds):
            before = self.theta.detach().clone()
            self.update(r)
            if (self.theta.detach() - before).abs().max() < 1e-14:
                return self.theta.detach().clone()
        raise AssertionError("diffusion did not converge")


def _centralised_step(theta: torch.Tensor, mu: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One gradient step of (1/K) sum_k f_k, every learner's objective at the one parameter vector."""
    theta = theta.clone().requires_grad_(True)
    (_losses(theta.expand(K, P), a, b).mean()).backward()
    return (theta - mu * theta.grad).detach()


def _tracking_error(mu: float, horizon: float = 4.0) -> float:
    """max over the first horizon/mu rounds of |network average - centralised GD| (same start, same mu)."""
    a, b = _problem()
    network, central, worst = Network(mu, "metropolis", a, b), torch.zeros(P, dtype=torch.float64), 0.0
    for r in range(int(horizon / mu)):
        network.update(r)
        central = _centralised_step(central, mu, a, b)
        worst = max(worst, float((network.theta.detach().mean(0) - central).norm()))
    return worst


def test_the_network_average_tracks_centralised_gradient_descent_to_order_mu():
    errors = [_tracking_error(mu) for mu in (0.02, 0.01)]
    assert errors[0] < 0.05 * float(_minimiser(*_problem(), torch.ones(K, dtype=torch.float64)).norm())
    assert 1.6 < errors[0] / errors[1] < 2.4, errors  # halving the step halves the gap (1.88 here)


def test_disagreement_at_the_fixed_point_shrinks_like_mu_squared():
    a, b = _problem()
    spread = [disagreement(Network(mu, "metropolis", a, b).fixed_point()) for mu in (0.02, 0.01)]
    assert spread[0] > 0
    assert 3.3 < spread[0] / spread[1] < 4.7, spread  # halving the step quarters it (3.6 here; 4 as mu -> 0)


def test_with_metropolis_weights_the_fixed_point_is_the_minimiser_of_the_summed_objectives():
    a, b = _problem()
    target = _minimiser(a, b, torch.ones(K, dtype=torch.float64))
    errors = [
        float((Network(mu, "metropolis", a, b).fixed_point().mean(0) - target).norm()) for mu in (0.04, 0.02, 0.01)
    ]
    assert errors[-1] < 0.05 * float(target.norm())
    assert all(1.6 < errors[i] / errors[i + 1] < 2.5 for i in range(2)), errors  # O(mu): it goes to the minimiser


def test_uniform_weights_on_an_irregular_graph_minimise_a_perron_weighted_sum_instead():
    a, b = _problem()
    c = torch.from_numpy(topologies.dense_combination_matrix(GRAPH, "uniform"))  # theta_k <- sum_l C[l, k] psi_l
    eigenvalues, vectors = torch.linalg.eig(c)
    perron = vectors[:, eigenvalues.real.argmax()].real
    perron = perron / perron.sum()  # C p = p: the weight each learner's objective gets at the fixed point
    assert not torch.allclose(perron, torch.full((K,), 1.0 / K, dtype=torch.float64))
    weighted, summed = _minimiser(a, b, perron), _minimiser(a, b, torch.ones(K, dtype=torch.float64))
    fixed = Network(0.01, "uniform", a, b).fixed_point().mean(0)
    assert float((fixed - weighted).norm()) < 0.2 * float((fixed - summed).norm())
