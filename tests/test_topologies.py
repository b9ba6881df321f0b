"""Named graphs, adjacency parsing and validation, and the disconnection warning."""

import networkx as nx
import numpy as np
import pytest

from topologies import (
    TOPOLOGY_NAMES,
    TopologyError,
    build_graph,
    disconnection_warning,
    graph_from_adjacency,
    parse_adjacency,
    resolve_graph,
    validate_adjacency,
)


def edges(g: nx.Graph) -> set[tuple[int, int]]:
    return {tuple(sorted(e)) for e in g.edges}


def degrees(g: nx.Graph) -> list[int]:
    return [d for _, d in sorted(g.degree)]


def test_every_name_builds_nodes_0_to_n_minus_1():
    for name in TOPOLOGY_NAMES:
        g = build_graph(name, 6, edge_prob=0.5)
        assert list(g.nodes) == list(range(6)), name
        assert nx.number_of_selfloops(g) == 0, name


def test_ring():
    g = build_graph("ring", 5)
    assert degrees(g) == [2] * 5
    assert edges(g) == {(0, 1), (1, 2), (2, 3), (3, 4), (0, 4)}


def test_small_rings():
    assert edges(build_graph("ring", 1)) == set()
    assert list(build_graph("ring", 1).nodes) == [0]
    assert edges(build_graph("ring", 2)) == {(0, 1)}


def test_full():
    g = build_graph("full", 4)
    assert degrees(g) == [3] * 4
    assert g.number_of_edges() == 6


def test_star_centre_is_zero():
    g = build_graph("star", 5)
    assert edges(g) == {(0, k) for k in range(1, 5)}


def test_line():
    g = build_graph("line", 4)
    assert edges(g) == {(0, 1), (1, 2), (2, 3)}
    assert degrees(g) == [1, 2, 2, 1]


def test_grid_6_is_2x3_row_major():
    g = build_graph("grid", 6)
    assert edges(g) == {(0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (1, 4), (2, 5)}


def test_grid_prime_is_a_line():
    assert edges(build_graph("grid", 5)) == edges(build_graph("line", 5))


def test_none_has_no_edges():
    assert build_graph("none", 4).number_of_edges() == 0


def test_erdos_renyi_is_seeded():
    a = build_graph("erdos-renyi", 20, edge_prob=0.3, seed=1)
    b = build_graph("erdos-renyi", 20, edge_prob=0.3, seed=1)
    c = build_graph("erdos-renyi", 20, edge_prob=0.3, seed=2)
    assert edges(a) == edges(b)
    assert edges(a) != edges(c)


@pytest.mark.parametrize("p", [None, 0.0, -0.1, 1.5])
def test_erdos_renyi_needs_edge_prob_in_range(p):
    with pytest.raises(TopologyError, match="--edge-prob"):
        build_graph("erdos-renyi", 5, edge_prob=p)


def test_unknown_name_lists_valid_names():
    with pytest.raises(TopologyError) as info:
        build_graph("torus", 4)
    assert all(name in str(info.value) for name in TOPOLOGY_NAMES)


@pytest.mark.parametrize("n", [0, -3])
def test_num_learners_must_be_positive(n):
    with pytest.raises(TopologyError, match="--num-learners"):
        build_graph("ring", n)


RING4 = np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]], dtype=float)


@pytest.mark.parametrize(
    "spec", ["[[0,1,0,1],[1,0,1,0],[0,1,0,1],[1,0,1,0]]", "[[0, 1, 0, 1], [1, 0, 1, 0], (0, 1, 0, 1), [1, 0, 1, 0],]"]
)
def test_parse_literal(spec):
    np.testing.assert_array_equal(parse_adjacency(spec), RING4)


def test_parse_npy(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, RING4.astype(int))
    np.testing.assert_array_equal(parse_adjacency(str(path)), RING4)


def test_parse_csv(tmp_path):
    path = tmp_path / "a.csv"
    np.savetxt(path, RING4, delimiter=",", fmt="%d")
    np.testing.assert_array_equal(parse_adjacency(str(path)), RING4)


def test_parse_txt_whitespace(tmp_path):
    path = tmp_path / "a.txt"
    np.savetxt(path, RING4, fmt="%d")
    np.testing.assert_array_equal(parse_adjacency(str(path)), RING4)


def assert_one_line_error(fn, *args, contains: str) -> None:
    with pytest.raises(TopologyError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    assert contains in message


@pytest.mark.parametrize(
    "spec, contains",
    [
        ("[[0,1],[1,0]", "cannot parse"),
        ("[[0,1],[1]]", "rectangular"),
        ("[[0,'a'],[1,0]]", "numbers"),
        ("missing.npy", "not found"),
        ("matrix.xlsx", ".npy"),
    ],
)
def test_parse_errors(spec, contains):
    assert_one_line_error(parse_adjacency, spec, contains=contains)


def test_parse_unreadable_file(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("0,1\nx,0\n")
    assert_one_line_error(parse_adjacency, str(path), contains="cannot read")
    bad_npy = tmp_path / "b.npy"
    bad_npy.write_bytes(b"not an array")
    assert_one_line_error(parse_adjacency, str(bad_npy), contains="cannot read")


def test_validate_accepts_ring():
    for ring in (RING4, RING4.astype(int), RING4.astype(bool)):
        given = ring.copy()
        assert validate_adjacency(given, 4) is None and np.array_equal(given, ring)  # accepted and left as it was


def test_validate_size_mismatch():
    assert_one_line_error(
        validate_adjacency,
        RING4,
        5,
        contains="adjacency matrix is 4x4 but --num-learners is 5: give a 5x5 matrix or --num-learners 4",
    )


def test_validate_not_square():
    assert_one_line_error(validate_adjacency, np.zeros((2, 3)), 2, contains="(2, 3)")


def test_validate_non_binary_names_entry():
    a = RING4.copy()
    a[1, 2] = a[2, 1] = 0.5
    assert_one_line_error(validate_adjacency, a, 4, contains="entry (1,2) is 0.5")


def test_validate_asymmetric_names_entry():
    a = np.zeros((6, 6))
    a[2, 5] = 1
    assert_one_line_error(
        validate_adjacency,
        a,
        6,
        contains="adjacency matrix is not symmetric: entry (2,5) is 1 but (5,2) is 0",
    )
    assert_one_line_error(validate_adjacency, a.T, 6, contains="entry (2,5) is 0 but (5,2) is 1")


def test_validate_self_loop():
    a = RING4.copy()
    a[3, 3] = 1
    assert_one_line_error(validate_adjacency, a, 4, contains="(3,3)")


def test_graph_from_adjacency_round_trip():
    g = graph_from_adjacency(RING4)
    np.testing.assert_array_equal(nx.to_numpy_array(g, nodelist=range(4)), RING4)
    assert list(g.nodes) == [0, 1, 2, 3]


def test_resolve_graph():
    assert edges(resolve_graph(None, "[[0,1],[1,0]]", 2)) == {(0, 1)}
    assert edges(resolve_graph("line", None, 3)) == {(0, 1), (1, 2)}
    assert_one_line_error(resolve_graph, "ring", "[[0,1],[1,0]]", 2, contains="not both")
    assert_one_line_error(resolve_graph, None, "[[0,1],[1,0]]", 3, contains="2x2")


def test_disconnection_warning():
    assert disconnection_warning(build_graph("ring", 5)) is None
    assert disconnection_warning(build_graph("none", 1)) is None
    message = disconnection_warning(build_graph("none", 3))
    assert "3 connected components" in message
