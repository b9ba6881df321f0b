"""The graph of a run as a picture: learners where networkx lays them out, coloured by their score,
sized by a task parameter, so a user sees which learners struggle where (`diffdac plot --graph`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CIRCLE_UP_TO = 64  # learners up to which rings and other sparse graphs are laid out on a circle


def run_graph(run_dir: Path) -> nx.Graph:
    """The graph topology.csv records (the method's communication graph)."""
    matrix = pd.read_csv(run_dir / "topology.csv", index_col=0).to_numpy()
    return nx.from_numpy_array(np.asarray(matrix != 0, dtype=int))


def layout(graph: nx.Graph) -> dict[int, np.ndarray]:
    """Positions: a circle for small graphs (rings, stars, isolated learners read best so), else a spring layout."""
    if graph.number_of_nodes() <= CIRCLE_UP_TO:
        return nx.circular_layout(graph)
    return nx.spring_layout(graph, seed=0)


def draw_graph(
    ax: Axes, graph: nx.Graph, scores: pd.Series | None, sizes: pd.Series | None, size_name: str | None, title: str
) -> Any:
    """Nodes coloured by `scores` (per learner) and sized by `sizes` (a task parameter), labelled by learner.

    Returns the colour mapping, for a colour bar (None without scores).
    """
    import matplotlib

    positions = layout(graph)
    nodes = list(graph.nodes)
    if sizes is not None and sizes.notna().any():
        values = sizes.reindex(nodes).to_numpy(dtype=float)
        low, high = np.nanmin(values), np.nanmax(values)
        node_size = 120 + 480 * ((values - low) / (high - low) if high > low else np.full(len(values), 0.5))
    else:
        node_size = 300
    color: Any = "lightgray"
    mapping = None
    if scores is not None and scores.notna().any():
        color = scores.reindex(nodes).to_numpy(dtype=float)
        mapping = matplotlib.cm.ScalarMappable(
            norm=matplotlib.colors.Normalize(np.nanmin(color), np.nanmax(color)), cmap="viridis"
        )
        color = [mapping.to_rgba(c) if np.isfinite(c) else (0.8, 0.8, 0.8, 1.0) for c in color]
    nx.draw_networkx_edges(graph, positions, ax=ax, alpha=0.4)
    nx.draw_networkx_nodes(
        graph, positions, ax=ax, node_size=node_size, node_color=color, edgecolors="black", linewidths=0.5
    )
    if graph.number_of_nodes() <= CIRCLE_UP_TO:
        nx.draw_networkx_labels(graph, positions, ax=ax, font_size=7)
    sized = f"; size: {size_name}" if size_name else ""
    ax.set_title(
        f"{title}\ncolour: score (last 10 episodes){sized}" if mapping else f"{title}{sized.replace('; ', chr(10))}",
        fontsize="small",
    )
    ax.set_axis_off()
    return mapping


def task_parameter(run_dir: Path, name: str | None) -> tuple[pd.Series | None, str | None]:
    """One numeric task parameter per learner from tasks.csv (`name`, or the first there is)."""
    tasks = pd.read_csv(run_dir / "tasks.csv").set_index("learner")
    numeric = [c for c in tasks.columns if c != "env_id" and pd.api.types.is_numeric_dtype(tasks[c])]
    if name is None:
        name = numeric[0] if numeric else None
    if name is None or name not in tasks:
        return None, None
    return tasks[name], name


def figure(run_dir: Path) -> Any:
    """The run's graph on its own figure, learners sized by their first task parameter (no scores):
    the picture TensorBoard shows when a run starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    sizes, name = task_parameter(run_dir, None)
    draw_graph(ax, run_graph(run_dir), None, sizes, name, run_dir.name)
    return fig
