"""Communication graphs between learners and the combination matrices built on them.

numpy and networkx only: this package knows nothing of torch or training.
"""

from topologies.combination import (
    WEIGHT_RULES,
    combination_weights,
    dense_combination_matrix,
    describe,
    directed_edges,
    second_largest_eigenvalue_modulus,
    weights_from_edges,
)
from topologies.errors import TopologyError
from topologies.graphs import (
    TOPOLOGY_NAMES,
    adjacency_size,
    build_graph,
    disconnection_warning,
    edge_count,
    graph_from_adjacency,
    grid_shape,
    parse_adjacency,
    read_adjacency,
    resolve_graph,
    validate_adjacency,
)
from topologies.time_varying import Reads, exponential_period, exponential_reads

__all__ = [
    "TOPOLOGY_NAMES",
    "WEIGHT_RULES",
    "adjacency_size",
    "TopologyError",
    "build_graph",
    "combination_weights",
    "dense_combination_matrix",
    "Reads",
    "describe",
    "directed_edges",
    "disconnection_warning",
    "edge_count",
    "exponential_period",
    "exponential_reads",
    "graph_from_adjacency",
    "grid_shape",
    "parse_adjacency",
    "read_adjacency",
    "resolve_graph",
    "second_largest_eigenvalue_modulus",
    "validate_adjacency",
    "weights_from_edges",
]
