"""Combination weights: stochasticity, canonical order, SLEM, and sparse cost."""

import networkx as nx
import numpy as np
import pytest

from topologies import (
    TOPOLOGY_NAMES,
    WEIGHT_RULES,
    TopologyError,
    build_graph,
    combination_weights,
    dense_combination_matrix,
    describe,
    second_largest_eigenvalue_modulus,
)

GRAPHS = [(name, n) for name in TOPOLOGY_NAMES for n in (1, 2, 7)]


def graph(name: str, n: int) -> nx.Graph:
    return build_graph(name, n, edge_prob=0.4, seed=3)


@pytest.mark.parametrize("name, n", GRAPHS)
def test_uniform_columns_sum_to_one(name, n):
    c = dense_combination_matrix(graph(name, n), "uniform")
    np.testing.assert_allclose(c.sum(axis=0), 1.0)


@pytest.mark.parametrize("name, n", GRAPHS)
def test_metropolis_doubly_stochastic_and_symmetric(name, n):
    c = dense_combination_matrix(graph(name, n), "metropolis")
    np.testing.assert_allclose(c.sum(axis=0), 1.0)
    np.testing.assert_allclose(c.sum(axis=1), 1.0)
    np.testing.assert_allclose(c, c.T)
    assert (c >= 0).all()


def test_uniform_is_original_rule_on_star():
    c = dense_combination_matrix(build_graph("star", 4), "uniform")
    np.testing.assert_allclose(c[:, 0], 0.25)
    np.testing.assert_allclose(c[:, 1], [0.5, 0.5, 0, 0])


@pytest.mark.parametrize("rule", WEIGHT_RULES)
@pytest.mark.parametrize("name", TOPOLOGY_NAMES)
def test_coo_sorted_by_dst_then_src_and_matches_dense(name, rule):
    g = graph(name, 9)
    src, dst, weight = combination_weights(g, rule)
    keys = list(zip(dst.tolist(), src.tolist()))
    assert keys == sorted(set(keys))
    assert set(zip(src.tolist(), dst.tolist())) >= {(k, k) for k in range(9)}
    c = dense_combination_matrix(g, rule)
    np.testing.assert_array_equal(c[src, dst], weight)
    assert np.count_nonzero(c) == len(weight)


def test_slem_full_uniform_is_zero():
    c = dense_combination_matrix(build_graph("full", 6), "uniform")
    assert second_largest_eigenvalue_modulus(c) == pytest.approx(0.0, abs=1e-9)


def test_slem_ring8_uniform_known_value():
    c = dense_combination_matrix(build_graph("ring", 8), "uniform")
    expected = (1 + 2 * np.cos(2 * np.pi / 8)) / 3
    assert second_largest_eigenvalue_modulus(c) == pytest.approx(expected, abs=1e-9)


def test_slem_single_learner_and_disconnected():
    assert second_largest_eigenvalue_modulus(np.ones((1, 1))) == 0.0
    c = dense_combination_matrix(build_graph("none", 3), "metropolis")
    assert second_largest_eigenvalue_modulus(c) == pytest.approx(1.0)


def test_large_ring_has_one_entry_per_edge_end_and_learner():
    src, dst, weight = combination_weights(build_graph("ring", 1024), "metropolis")
    assert len(weight) == 3 * 1024


def test_unknown_rule():
    with pytest.raises(TopologyError, match="uniform or metropolis"):
        combination_weights(build_graph("ring", 3), "max-degree")


def test_describe_small_and_large():
    text = describe(build_graph("ring", 8), "uniform")
    assert "learners: 8, edges: 8" in text
    assert "0.333" in text
    assert "0.8047" in text
    big = describe(build_graph("none", 40), "metropolis")
    assert "not printed" in big
    assert "40 connected components" in big
    assert len(big.splitlines()) < 10
