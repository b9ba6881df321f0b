"""Communication graphs between learners: named topologies and user-given adjacency matrices.

Every graph has nodes 0..N-1, one per learner, and no self-loops: a learner always keeps its own
parameters, so the combination rules add the self weight themselves.
"""

from __future__ import annotations

import ast
import json
import math
import os
import stat
from pathlib import Path

import networkx as nx
import numpy as np

from topologies.errors import TopologyError
from topologies.names import RANDOM_TOPOLOGIES, TOPOLOGY_NAMES


ADJACENCY_SUFFIXES = (".npy", ".csv", ".txt")
FIRST_LINE_LIMIT = 1 << 26  # characters of a first row read to learn N (a 1M-learner row of "0,")


def build_graph(name: str, num_learners: int, edge_prob: float | None = None, seed: int = 0) -> nx.Graph:
    """Build the named topology on learners 0..num_learners-1.

    `edge_prob` and `seed` are used by `erdos-renyi` only, so that a config can carry them
    whatever the topology. A random schedule (random-matching, random-regular) draws a graph per
    round (topologies.schedules); its graph here is their support, the full graph: any two
    learners may be linked in some round.
    """
    _check_num_learners(num_learners)
    if name == "ring":
        return _ring(num_learners)
    if name == "full" or name in RANDOM_TOPOLOGIES:
        return nx.complete_graph(num_learners)
    if name == "star":
        return nx.star_graph(num_learners - 1)
    if name == "line":
        return nx.path_graph(num_learners)
    if name == "grid":
        return _grid(num_learners)
    if name == "none":
        return nx.empty_graph(num_learners)
    if name == "erdos-renyi":
        return _erdos_renyi(num_learners, edge_prob, seed)
    raise TopologyError(f"unknown topology {name!r}: choose one of {', '.join(TOPOLOGY_NAMES)}")


def edge_count(name: str, num_learners: int, edge_prob: float | None = None) -> int:
    """Edges the named topology will have (its expectation for erdos-renyi), known before building it."""
    n = num_learners
    pairs = n * (n - 1) // 2
    counts = {"ring": n if n > 2 else n - 1, "full": pairs, "star": n - 1, "line": n - 1, "grid": 2 * n, "none": 0}
    counts.update(dict.fromkeys(RANDOM_TOPOLOGIES, pairs))  # their support, the full graph
    if name == "erdos-renyi":
        return int(pairs * float(edge_prob or 0.0))
    return max(counts.get(name, 0), 0)


def _check_num_learners(num_learners: int) -> None:
    if isinstance(num_learners, bool) or not isinstance(num_learners, int) or num_learners < 1:
        raise TopologyError(f"--num-learners must be a positive integer, got {num_learners!r}: give 1 or more")


def _ring(n: int) -> nx.Graph:
    """A cycle; for N <= 2 the path, since a 1- or 2-cycle would be a self-loop or a double edge."""
    return nx.path_graph(n) if n <= 2 else nx.cycle_graph(n)


def grid_shape(n: int) -> tuple[int, int]:
    """Rows x cols of the grid on n learners: rows is the largest divisor of n <= sqrt(n)."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def _grid(n: int) -> nx.Graph:
    """A rows x cols lattice with learners numbered row-major (sorted (row, col) labels)."""
    rows, cols = grid_shape(n)
    return nx.convert_node_labels_to_integers(nx.grid_2d_graph(rows, cols), ordering="sorted")


def _erdos_renyi(n: int, edge_prob: float | None, seed: int) -> nx.Graph:
    if edge_prob is None or isinstance(edge_prob, bool) or not 0.0 < float(edge_prob) <= 1.0:
        raise TopologyError(
            f"topology erdos-renyi needs --edge-prob in (0, 1], got {edge_prob!r}: give e.g. --edge-prob 0.3"
        )
    return nx.gnp_random_graph(n, float(edge_prob), seed=seed)


def parse_adjacency(spec: str, max_learners: int | None = None) -> np.ndarray:
    """Read an adjacency matrix from a literal ("[[0,1],[1,0]]") or a .npy/.csv/.txt file.

    A spec starting with '[' is a literal, anything else a path, so a typo in a literal is
    reported as a bad literal rather than as a missing file. With `max_learners`, a file larger
    than any matrix of that many learners could be is refused before it is read.
    """
    text = spec.strip()
    if text.startswith("["):
        return _to_numeric(_parse_literal(text), "adjacency literal")
    return _to_numeric(_load_file(Path(text), max_learners), f"adjacency file {text!r}")


def max_file_bytes(path: Path, n: int) -> int:
    """The largest an n x n adjacency file can reasonably be: every entry written out in full.

    .npy: a header and up to 16 bytes per entry; text: up to 32 characters per entry (e.g.
    `1.000000000000000000e+00,`), plus our topology.csv's header row and learner column.
    """
    if path.suffix.lower() == ".npy":
        return 4096 + 16 * n * n
    return 1024 + 32 * n * n + (len(str(n)) + 9) * (n + 1)


def _parse_literal(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    except RecursionError:  # nested thousands deep: no adjacency matrix looks like that
        raise TopologyError(
            f"cannot parse adjacency literal {_shorten(text)}: it is nested too deeply; "
            'give a list of rows such as "[[0,1],[1,0]]"'
        ) from None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise TopologyError(
            f'cannot parse adjacency literal {_shorten(text)}: give a list of rows such as "[[0,1],[1,0]]"'
        ) from None


def _load_file(path: Path, max_learners: int | None) -> np.ndarray:
    info = _check_file(path)
    rounds = _npy_rounds(path)
    if max_learners is not None and info.st_size > rounds * max_file_bytes(path, max_learners):
        raise TopologyError(
            f"adjacency file {str(path)!r} is {info.st_size:,} bytes, more than a matrix of {max_learners} learners "
            f"can take ({rounds * max_file_bytes(path, max_learners):,}): check the file or --num-learners"
        )
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        text = path.read_text()
        delimiter = "," if "," in text else None
        if _is_run_table(text):  # a run's own topology.csv: a header row and a learner column around the matrix
            return np.loadtxt(path, delimiter=delimiter, ndmin=2, skiprows=1)[:, 1:]
        return np.loadtxt(path, delimiter=delimiter, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError, MemoryError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TopologyError(
            f"cannot read adjacency file {str(path)!r} ({reason}): "
            "give a file of 0/1 rows separated by commas or spaces, or a .npy array"
        ) from None


def _check_file(path: Path) -> os.stat_result:
    """An adjacency file that exists, is a regular file and has a suffix we read; its stat."""
    if path.exists() and not path.is_file():
        raise TopologyError(f"adjacency file {str(path)!r} is not a regular file: give a .npy, .csv or .txt file")
    if path.suffix.lower() not in ADJACENCY_SUFFIXES:
        raise TopologyError(
            f"adjacency {_shorten(str(path))} is neither a literal nor a .npy/.csv/.txt file: "
            'give a literal such as "[[0,1],[1,0]]" or a path ending in .npy, .csv or .txt'
        )
    if not path.exists():
        raise TopologyError(
            f'adjacency file {str(path)!r} not found: check the path, or give a literal such as "[[0,1],[1,0]]"'
        )
    try:
        info = path.stat()
    except OSError as exc:
        raise TopologyError(f"cannot read adjacency file {str(path)!r} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device (/dev/zero) would never end or never fit
        raise TopologyError(f"adjacency file {str(path)!r} is not a regular file: give a .npy, .csv or .txt file")
    return info


def _is_run_table(text: str) -> bool:
    """Whether a text file is a matrix as diffdac writes it (topology.csv): first line `learner,0,1,...`."""
    return text.split("\n", 1)[0].split(",")[0].strip() == "learner"


def _npy_shape(path: Path) -> tuple[int, ...]:
    """The shape in a .npy file's header, read without its data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return tuple(read(f)[0])


def _npy_rounds(path: Path) -> int:
    """R of a .npy of R stacked matrices [R, N, N] (1 for anything else), for its size limit."""
    if path.suffix.lower() != ".npy":
        return 1
    try:
        shape = _npy_shape(path)
    except (OSError, ValueError):
        return 1  # np.load names what is wrong with it
    return max(1, shape[0]) if len(shape) == 3 else 1


def adjacency_parts(spec: str) -> list[str]:
    """The matrices' sources in an --adjacency spec: one literal, or one or more files separated by commas."""
    text = spec.strip()
    if text.startswith("["):
        return [text]
    return [part.strip() for part in text.split(",") if part.strip()] or [text]


def adjacency_size(spec: str) -> int:
    """N of the N x N matrix `spec` gives (of its first matrix for a sequence), read cheaply (a .npy header,
    a text file's first row), so that --num-learners can default to it before the whole matrix is read
    under a size limit."""
    text = adjacency_parts(spec)[0]
    if text.startswith("["):
        shape = _to_numeric(_parse_literal(text), "adjacency literal").shape
        return int(shape[-1]) if shape else 0
    path = Path(text)
    _check_file(path)
    try:
        if path.suffix.lower() == ".npy":
            shape = _npy_shape(path)
            return int(shape[-1]) if shape else 0
        with open(path) as f:
            first = f.readline(FIRST_LINE_LIMIT)
            ours = _is_run_table(first)
            if ours:
                first = f.readline(FIRST_LINE_LIMIT)
        return len(first.replace(",", " ").split()) - ours
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TopologyError(f"cannot read adjacency file {str(path)!r} ({exc})") from None


def _to_numeric(obj: object, what: str) -> np.ndarray:
    """Turn parsed rows into a float array, rejecting ragged rows and non-numbers."""
    try:
        arr = np.asarray(obj)
    except ValueError:
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        raise TopologyError(f"{what} is not a rectangular matrix of numbers: give rows of 0/1 entries of equal length")
    return arr.astype(np.float64)


def _shorten(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def validate_adjacency(a: np.ndarray, num_learners: int) -> None:
    """Check that `a` is a usable undirected adjacency matrix for `num_learners` learners.

    The checks run in the order a user would fix them, and each names the first offending entry.
    """
    _check_num_learners(num_learners)
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise TopologyError(f"adjacency matrix must be square, got shape {a.shape}: give an N x N matrix")
    n = a.shape[0]
    if n != num_learners:
        raise TopologyError(
            f"adjacency matrix is {n}x{n} but --num-learners is {num_learners}: "
            f"give a {num_learners}x{num_learners} matrix or --num-learners {n}"
        )
    bad = np.argwhere((a != 0) & (a != 1))
    if len(bad):
        i, j = bad[0]
        raise TopologyError(f"adjacency matrix entry ({i},{j}) is {a[i, j]:g}: entries must be 0 or 1")
    asym = np.argwhere(a != a.T)
    if len(asym):
        i, j = asym[0]
        raise TopologyError(
            f"adjacency matrix is not symmetric: entry ({i},{j}) is {int(a[i, j])} "
            f"but ({j},{i}) is {int(a[j, i])}: links are two-way, make both entries equal"
        )
    loops = np.flatnonzero(np.diagonal(a))
    if len(loops):
        k = loops[0]
        raise TopologyError(
            f"adjacency matrix has a self-loop at entry ({k},{k}): set the diagonal to 0 "
            "(every learner keeps its own parameters anyway)"
        )


def read_adjacency(spec: str, num_learners: int) -> np.ndarray:
    """The checked adjacency matrix of `num_learners` learners that `spec` (literal or file) gives; for a
    sequence of matrices, their union (the graph of every link that is ever used)."""
    matrices = read_adjacencies(spec, num_learners)
    return matrices[0] if len(matrices) == 1 else matrices.max(0)


def read_adjacencies(spec: str, num_learners: int) -> np.ndarray:
    """The checked matrices [R, N, N] of an --adjacency sequence: a literal (one matrix or a list of them),
    files separated by commas, or a .npy of shape [R, N, N]; round r of a run uses matrix r mod R."""
    _check_num_learners(num_learners)
    matrices: list[np.ndarray] = []
    for part in adjacency_parts(spec):
        a = parse_adjacency(part, max_learners=num_learners)
        if a.ndim == 3:
            matrices.extend(a)
        else:
            matrices.append(a)  # validate_adjacency names a shape that is not N x N
    sizes = [m.shape for m in matrices]
    if len(matrices) > 1 and any(m.ndim != 2 or m.shape != sizes[0] for m in matrices):
        bad = next(i for i, m in enumerate(matrices) if m.ndim != 2 or m.shape != sizes[0])
        raise TopologyError(
            f"adjacency sequence {_shorten(spec)}: matrix {bad} has shape {sizes[bad]} but matrix 0 has {sizes[0]}: "
            "give N x N matrices of one N (a .npy sequence has shape [R, N, N])"
        )
    for r, a in enumerate(matrices):
        try:
            validate_adjacency(a, num_learners)
        except TopologyError as err:
            if len(matrices) == 1:
                raise
            raise TopologyError(f"adjacency sequence, matrix {r}: {err}") from None
    return np.stack(matrices) if len(matrices) > 1 else matrices[0][None]


def adjacency_rounds(spec: str) -> int:
    """How many matrices an --adjacency spec gives, read cheaply (a .npy header; a literal is in memory anyway)."""
    count = 0
    for part in adjacency_parts(spec):
        if part.startswith("["):
            literal = _to_numeric(_parse_literal(part), "adjacency literal")
            count += len(literal) if literal.ndim == 3 else 1
        else:
            count += _npy_rounds(Path(part)) if Path(part).is_file() else 1
    return count


def graph_from_adjacency(a: np.ndarray) -> nx.Graph:
    """The undirected graph on nodes 0..N-1 with an edge wherever a[i, j] != 0 (i < j)."""
    a = np.asarray(a)
    g = nx.empty_graph(a.shape[0])
    g.add_edges_from((int(i), int(j)) for i, j in np.argwhere(np.triu(a, k=1)))
    return g


def resolve_graph(
    topology: str | None,
    adjacency: str | None,
    num_learners: int,
    edge_prob: float | None = None,
    seed: int = 0,
) -> nx.Graph:
    """The graph the user asked for with exactly one of --topology and --adjacency."""
    if topology is not None and adjacency is not None:
        raise TopologyError("give --topology or --adjacency, not both")
    if adjacency is not None:
        return graph_from_adjacency(read_adjacency(adjacency, num_learners))
    if topology is None:
        raise TopologyError(f"no topology given: pass --topology ({', '.join(TOPOLOGY_NAMES)}) or --adjacency")
    return build_graph(topology, num_learners, edge_prob=edge_prob, seed=seed)


def disconnection_warning(g: nx.Graph) -> str | None:
    """A warning when learners cannot all reach each other; such graphs are allowed.

    Learners in different components never share parameters, so they converge to different
    policies: usually a mistake, but a legitimate baseline (topology `none`).
    """
    if g.number_of_nodes() <= 1:
        return None
    count = nx.number_connected_components(g)
    if count == 1:
        return None
    return f"graph has {count} connected components: learners in different components never share parameters"
