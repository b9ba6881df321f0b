"""Combination weights: how much of each neighbour's parameters a learner averages in.

The combine step is theta_k <- sum_l C[l, k] * psi_l over k's closed neighbourhood. C is kept
sparse (COO) because the trainer must never do dense N x N work; the dense form exists for
printing and small tests.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from topologies.errors import TopologyError
from topologies.graphs import disconnection_warning

WEIGHT_RULES = ("uniform", "metropolis")

# Largest network for which `describe` prints full matrices / computes the dense SLEM.
PRINT_MAX_LEARNERS = 32
SLEM_MAX_LEARNERS = 1024


def combination_weights(g: nx.Graph, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse C as (src, dst, weight) arrays with C[src, dst] = weight, self-loops included.

    Entries are sorted by (dst, src) so that every learner sums its neighbours in one canonical
    order wherever they live, which keeps results independent of how learners are grouped.
    uniform: each of k's closed neighbourhood gets 1/(deg k + 1), the original Diff-DAC rule
    (each dst's weights sum to 1, not doubly stochastic on irregular graphs).
    metropolis: C[l, k] = 1/(1 + max(deg l, deg k)) off the diagonal, the rest on the diagonal
    (symmetric and doubly stochastic, so the fixed point is the exact network average).
    Cost O(N + edges).
    """
    n = _num_learners(g)
    src, dst = directed_edges(g)
    return weights_from_edges(src, dst, n, rule)


def weights_from_edges(
    src: np.ndarray, dst: np.ndarray, n: int, rule: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`combination_weights` from both directions of each edge (no self-loops) of a graph on n nodes.

    Vectorised, so a trainer can re-weight every round over the links that work (dropped links,
    departed learners) without building a graph; a node without links keeps weight 1 on itself.
    """
    _check_rule(rule)
    deg = np.bincount(dst, minlength=n)
    loops = np.arange(n, dtype=np.int64)
    if rule == "uniform":
        w_off = 1.0 / (deg[dst] + 1.0)
        w_self = 1.0 / (deg + 1.0)
    else:
        w_off = 1.0 / (1.0 + np.maximum(deg[src], deg[dst]))
        w_self = 1.0 - np.bincount(dst, weights=w_off, minlength=n)
    all_src = np.concatenate([src, loops])
    all_dst = np.concatenate([dst, loops])
    weight = np.concatenate([w_off, w_self])
    order = np.lexsort((all_src, all_dst))
    return all_src[order], all_dst[order], weight[order]


def _check_rule(rule: str) -> None:
    if rule not in WEIGHT_RULES:
        raise TopologyError(f"unknown weight rule {rule!r}: choose --weights {' or '.join(WEIGHT_RULES)}")


def _num_learners(g: nx.Graph) -> int:
    """N, after checking that g is an undirected graph on nodes 0..N-1."""
    n = g.number_of_nodes()
    if g.is_directed() or set(g.nodes) != set(range(n)):
        raise TopologyError(
            "the communication graph must be undirected with nodes 0..N-1: "
            "build it with build_graph or graph_from_adjacency"
        )
    return n


def directed_edges(g: nx.Graph) -> tuple[np.ndarray, np.ndarray]:
    """Both directions of every edge, self-loops dropped (the rules add the self weight)."""
    pairs = np.array([(u, v) for u, v in g.edges if u != v], dtype=np.int64).reshape(-1, 2)
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    return src, dst


def dense_combination_matrix(g: nx.Graph, rule: str) -> np.ndarray:
    """C as a dense [N, N] array, C[l, k] = weight of l's parameters in k's average."""
    src, dst, weight = combination_weights(g, rule)
    n = g.number_of_nodes()
    c = np.zeros((n, n))
    c[src, dst] = weight
    return c


def second_largest_eigenvalue_modulus(c: np.ndarray) -> float:
    """The SLEM of C: repeated combining shrinks the distance to consensus by about this per round.

    1 means some learners never reach agreement (a disconnected graph); 0 means one combine step
    reaches consensus (the full graph).
    """
    if c.shape[0] <= 1:
        return 0.0
    moduli = np.sort(np.abs(np.linalg.eigvals(c)))[::-1]
    return float(moduli[1])


def describe(g: nx.Graph, rule: str) -> str:
    """Human-readable report of a topology for `diffdac topology`."""
    _check_rule(rule)
    n = _num_learners(g)
    degrees = [d for _, d in sorted(g.degree)]
    lines = [
        f"learners: {n}, edges: {g.number_of_edges()}, weights: {rule}",
        f"degrees: min {min(degrees)}, mean {np.mean(degrees):.2f}, max {max(degrees)}",
    ]
    if n <= PRINT_MAX_LEARNERS:
        lines.append(f"degree per learner: {' '.join(map(str, degrees))}")
        lines.append("adjacency matrix:")
        lines += _matrix_lines(nx.to_numpy_array(g, nodelist=range(n)), "{:.0f}")
    c = dense_combination_matrix(g, rule) if n <= SLEM_MAX_LEARNERS else None
    if c is not None and n <= PRINT_MAX_LEARNERS:
        lines.append("combination matrix C (column k: weights of learner k's average):")
        lines += _matrix_lines(c, "{:.3f}")
    if n > PRINT_MAX_LEARNERS:
        lines.append(f"matrices not printed for more than {PRINT_MAX_LEARNERS} learners")
    if c is None:
        lines.append(f"SLEM not computed for more than {SLEM_MAX_LEARNERS} learners")
    else:
        slem = second_largest_eigenvalue_modulus(c)
        lines.append(
            f"second largest eigenvalue modulus (SLEM): {slem:.4f}, spectral gap {1 - slem:.4f} "
            "(distance to consensus shrinks by about the SLEM per combine step)"
        )
    warning = disconnection_warning(g)
    if warning:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def _matrix_lines(m: np.ndarray, fmt: str) -> list[str]:
    cells = [[fmt.format(x) for x in row] for row in m]
    width = max(len(cell) for row in cells for cell in row)
    return ["  " + " ".join(cell.rjust(width) for cell in row) for row in cells]
