import networkx as nx
import numpy as np
import pytest
import torch

import topologies
from diffdac.network.mixing import Combiner, disagreement


def _combiner(graph: nx.Graph, rule: str, local=None) -> Combiner:
    src, dst, w = topologies.combination_weights(graph, rule)
    ids = np.arange(graph.number_of_nodes()) if local is None else np.asarray(local)
    return Combiner(src, dst, w, ids)


@pytest.mark.parametrize("rule", ["uniform", "metropolis"])
@pytest.mark.parametrize("graph", [nx.cycle_graph(7), nx.star_graph(5), nx.path_graph(4), nx.complete_graph(5)])
def test_combine_matches_the_dense_matrix(graph, rule):
    x = torch.randn(graph.number_of_nodes(), 50, dtype=torch.float64)
    dense = torch.from_numpy(topologies.dense_combination_matrix(graph, rule))
    torch.testing.assert_close(_combiner(graph, rule).combine(x), dense.T @ x)


def test_a_block_combines_exactly_as_the_whole_network_does():
    graph = nx.cycle_graph(8)
    x = torch.randn(8, 33)
    whole = _combiner(graph, "uniform").combine(x)
    block = _combiner(graph, "uniform", local=[3, 4, 5])
    assert block.buffer_ids.tolist() == [2, 3, 4, 5, 6]
    assert torch.equal(block.combine(x[block.buffer_ids]), whole[3:6])


def _consensus_errors(graph: nx.Graph, rule: str, rounds: int) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x0 = torch.randn(graph.number_of_nodes(), 20, dtype=torch.float64)
    combiner, x, errors = _combiner(graph, rule), x0.clone(), []
    for _ in range(rounds):
        x = combiner.combine(x)
        errors.append(disagreement(x))
    return errors, x0, x


def test_metropolis_combining_reaches_the_exact_mean_at_the_rate_of_the_eigenvalue():
    graph = nx.cycle_graph(8)
    slem = topologies.second_largest_eigenvalue_modulus(topologies.dense_combination_matrix(graph, "metropolis"))
    errors, x0, x = _consensus_errors(graph, "metropolis", 200)
    torch.testing.assert_close(x, x0.mean(0, keepdim=True).expand_as(x), atol=1e-10, rtol=0)
    # disagreement is a squared distance: it shrinks by SLEM^2 per round, asymptotically
    assert errors[60] / errors[59] == pytest.approx(slem**2, rel=1e-3)
    assert all(e <= disagreement(x0) * slem ** (2 * (t + 1)) * (1 + 1e-9) for t, e in enumerate(errors[:60]))


def test_uniform_combining_reaches_consensus_at_the_rate_of_the_eigenvalue():
    graph = nx.star_graph(4)
    slem = topologies.second_largest_eigenvalue_modulus(topologies.dense_combination_matrix(graph, "uniform"))
    errors, _, x = _consensus_errors(graph, "uniform", 200)
    assert errors[-1] < 1e-20
    assert errors[30] / errors[29] == pytest.approx(slem**2, rel=1e-3)


def test_disagreement_is_mean_squared_distance_to_the_average():
    params = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    assert disagreement(params) == pytest.approx(1.0)


@pytest.mark.parametrize("topology", ["ring", "star", "erdos-renyi"])
def test_the_training_combine_step_equals_the_dense_combination(topology):
    """The combine step of a training run (sparse, in place, normaliser statistics included)
    against the dense C of combination.csv applied by hand."""

    from diffdac.network.comm import LocalCommunicator
    from diffdac.config import TrainConfig
    from diffdac.learners.block import Learners
    from diffdac.network.methods import method_for
    from diffdac.run.prepare import make_tasks, resolve_defaults

    config = resolve_defaults(
        TrainConfig(
            num_learners=9,
            topology=topology,
            edge_prob=0.5,
            hidden=8,
            separate_init=True,
            normalize=("obs",),
            envs_per_learner=2,
        ).validate()
    )
    graph = topologies.resolve_graph(config.topology, None, 9, config.edge_prob, config.seed)
    ids = np.arange(9)
    method = method_for(config, graph)
    learners = Learners(config, method, LocalCommunicator(), make_tasks(config, ids), ids)
    learners.obs_norm.update(torch.randn(9, 40, learners.pop.obs_dim))  # different statistics per learner
    params, mean = learners.pop.flat.detach().double().clone(), learners.obs_norm.mean.clone()
    dense = torch.from_numpy(method.combination_matrix())
    learners.combine(0)
    torch.testing.assert_close(learners.pop.flat.detach().double(), dense.T @ params, rtol=0, atol=1e-6)
    torch.testing.assert_close(learners.obs_norm.mean, dense.T @ mean, rtol=0, atol=1e-12)
