"""`diffdac plot`: learning curves and a results table of one or many run directories.

    diffdac plot runs/ring-s0 runs/ring-s1 runs/full-s0 runs/full-s1 --out curves.png --table

diffdac.tools.results does the table work (episodes on one time line of total env steps, bins, seed
groups, the summary); this module draws it with matplotlib (Agg: no display needed) and wires
the command line. Panels: returns; with --disagreement, progress.csv's disagreement; with
--per-learner, one panel per curve with every learner's own return.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffdac import files
from diffdac.tools import results
from diffdac.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

FORMATS = (".png", ".pdf", ".svg")
MARKERS_UP_TO = 40  # bins in a curve up to which its points are marked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `diffdac plot`."""
    parser.add_argument(
        "runs",
        nargs="*",
        type=Path,
        metavar="RUN_DIR",
        help="run directories of diffdac train, finished or still running",
    )
    parser.add_argument(
        "--graph",
        action="append",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="instead of curves, draw this run's graph: learners coloured by score, sized by a task parameter (repeatable)",
    )
    parser.add_argument(
        "--graph-param",
        default=None,
        metavar="NAME",
        help="task parameter that sizes the nodes (default: the first in tasks.csv)",
    )
    parser.add_argument("--out", type=Path, default=None, metavar="FIGURE", help="figure to write: .png, .pdf or .svg")
    parser.add_argument(
        "--bin-steps",
        type=int,
        default=20_000,
        metavar="W",
        help="smoothing: mean return of the episodes that ended in each bin of W env steps (default 20000)",
    )
    parser.add_argument(
        "--weighting",
        choices=results.WEIGHTINGS,
        default="task",
        help="a bin's return: task (mean over learners of each one's mean; every task counts once, default) "
        "or episode (mean over all episodes, which favours tasks with short episodes)",
    )
    parser.add_argument(
        "--x",
        choices=("steps", "time", "bytes"),
        default="steps",
        help="x axis: total env steps (default), wall-clock seconds since the run started, or bytes sent per "
        "learner (progress.csv's bytes_sent, log scale)",
    )
    parser.add_argument("--disagreement", action="store_true", help="add a panel with the disagreement of progress.csv")
    parser.add_argument("--per-learner", action="store_true", help="add one panel per curve with each learner's return")
    parser.add_argument(
        "--label",
        action="append",
        default=None,
        help="name of a curve; give it once per curve, in the order of their first run",
    )
    parser.add_argument("--title", default=None, metavar="TEXT", help="title of the figure")
    parser.add_argument(
        "--table", action="store_true", help="print per curve: final return, return at --at steps, steps to --threshold"
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        metavar="FILE",
        help="write that table (raw numbers, with standard errors) to this CSV file",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=-100.0,
        metavar="R",
        help="return whose first crossing the table reports (default -100, for Acrobot)",
    )
    parser.add_argument(
        "--at",
        default=None,
        metavar="S,S,...",
        help="comma list of env steps at which the table gives the return (default: 1/4, 1/2, 3/4 of the shortest curve)",
    )


def main(args: argparse.Namespace) -> int:
    """Run `diffdac plot`; bad input raises ConfigError (one line, exit 2 in the CLI)."""
    check_args(args)
    if args.graph:
        save_figure(draw_graphs(args), args.out)
        print(f"diffdac: wrote {args.out}")
        return 0
    runs = results.load_runs(args.runs)
    if args.out is not None:
        save_figure(draw(runs, args), args.out)
        print(f"diffdac: wrote {args.out}")
    if args.table or args.csv:
        table = results.summary(runs, args.bin_steps, args.threshold, parse_steps(args.at), args.label, args.weighting)
        if args.table:
            print(results.readable(table).to_string(index=False))
        if args.csv:
            write_file(args.csv, table.to_csv(index=False).encode())
            print(f"diffdac: wrote {args.csv}")
    return 0


def save_figure(fig: Any, out: Path) -> None:
    """The figure drawn in memory, then written whole or not at all."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format=out.suffix.lower().lstrip("."))
    write_file(out, buffer.getvalue())


def write_file(path: Path, data: bytes) -> None:
    """A file of plot's, with a full disk or a read-only place said in one line."""
    try:
        files.write_bytes(path, data)
    except OSError as err:
        raise ConfigError(f"cannot write {path} ({files.reason(err)})") from None


MAX_BIN_STEPS = 10**15  # far beyond any run's env steps; larger ones overflow pandas' integer bins


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad options before reading any run."""
    if args.graph and (args.runs or args.table or args.csv):
        raise ConfigError("--graph RUN_DIR draws graphs only: give the runs with --graph, without --table or --csv")
    if not args.graph and not args.runs:
        raise ConfigError("give run directories to plot (or --graph RUN_DIR for a run's graph)")
    if args.graph and args.out is None:
        raise ConfigError("--graph needs --out FIGURE.png")
    if args.out is None and not (args.table or args.csv):
        raise ConfigError("nothing to do: give --out FIGURE.png, --table or --csv FILE")
    if args.out is not None and args.out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out must end in .png, .pdf or .svg, got {args.out.name!r}")
    if not 1 <= args.bin_steps <= MAX_BIN_STEPS:
        raise ConfigError(
            f"--bin-steps must be a positive number of env steps up to {MAX_BIN_STEPS}, got {args.bin_steps}"
        )
    for path in (args.out, args.csv):
        if path is not None and path.is_dir():
            raise ConfigError(
                f"{path} is a directory: give a file name such as {path / ('curves.png' if path == args.out else 'table.csv')}"
            )
        if path is not None and not path.parent.is_dir():
            raise ConfigError(f"cannot write {path}: directory {path.parent} does not exist")
    parse_steps(args.at)


def parse_steps(text: str | None) -> list[int] | None:
    """--at '500000,1e6' -> [500000, 1000000]."""
    if text is None:
        return None
    try:
        points = [int(float(part)) for part in text.split(",") if part.strip()]
    except (ValueError, OverflowError):
        raise ConfigError(f"--at takes a comma list of env step counts, got {text!r}") from None
    if not points or min(points) <= 0 or max(points) > MAX_BIN_STEPS:
        raise ConfigError(f"--at takes positive env step counts, got {text!r}")
    return points


# --- drawing -------------------------------------------------------------------------------------


def draw(runs: list[results.Run], args: argparse.Namespace) -> Any:
    """The figure: returns, then disagreement and per-learner panels if asked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    curves = results.curves(runs, args.bin_steps, args.label, args.weighting)
    names = list(curves["curve"].cat.categories)
    panels = 1 + args.disagreement + (len(names) if args.per_learner else 0)
    cols = min(panels, 3)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    flat = list(axes.flat)
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    draw_returns(flat[0], curves, colors, args)
    used = 1
    if args.disagreement:
        draw_disagreement(flat[used], results.disagreement(runs, args.label), colors, args)
        used += 1
    if args.per_learner:
        learners = results.learner_curves(runs, args.bin_steps, args.label)
        for name in names:
            draw_learners(flat[used], learners[learners["curve"] == name], curves[curves["curve"] == name], name, args)
            used += 1
    for ax in flat[used:]:
        ax.set_visible(False)
    if args.x == "bytes":
        for ax in flat[:used]:
            ax.set_xscale("log")
    if args.x == "steps":
        for ax in flat[:used]:
            ax.xaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda v, _: results.human_steps(v) if v > 0 else "0")
            )
    fig.suptitle(args.title or default_title(runs))
    fig.tight_layout()
    return fig


def draw_graphs(args: argparse.Namespace) -> Any:
    """One panel per --graph run: its topology, learners coloured by score and sized by a task parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffdac.run import graph_figure

    runs = results.load_runs(args.graph)
    fig, axes = plt.subplots(1, len(runs), figsize=(5.0 * len(runs), 4.8), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        sizes, name, graph = graph_tables(run, args.graph_param)
        title = f"{run.path.name}: {run.config.get('method')}, {run.config.get('topology') or 'adjacency'}"
        mapping = graph_figure.draw_graph(ax, graph, results.learner_scores(run), sizes, name, title)
        if mapping is not None:
            fig.colorbar(mapping, ax=ax, shrink=0.7, label="score")
    fig.tight_layout()
    return fig


def graph_tables(run: results.Run, param: str | None = None) -> tuple[Any, Any, Any]:
    """A run's tasks.csv parameter and topology.csv graph, each refused in one line when missing or not a table."""
    import networkx as nx

    from diffdac.run import graph_figure

    for name in ("topology.csv", "tasks.csv"):
        path = run.path / name
        if not path.exists():
            raise ConfigError(f"{path} is missing: --graph draws the graph a run records there")
        files.read_text(path, files.MAX_SMALL)  # a link, a FIFO, binary garbage: refused here
    try:
        sizes, name = graph_figure.task_parameter(run.path, param)
        graph = graph_figure.run_graph(run.path)
    except (ValueError, KeyError, TypeError, IndexError, OSError, nx.NetworkXError) as err:
        raise ConfigError(
            f"{run.path}'s topology.csv or tasks.csv is not a table diffdac wrote ({files.reason(err)})"
        ) from None
    if graph.number_of_nodes() != run.config["num_learners"]:
        raise ConfigError(
            f"{run.path / 'topology.csv'} has {graph.number_of_nodes()} learners, config.json {run.config['num_learners']}"
        )
    return sizes, name, graph


def default_title(runs: list[results.Run]) -> str:
    """The environment(s) and the learners x simulators of the runs, e.g. `RandomExtremeAcrobot-v1: 25 learners x 1 sim`."""
    envs = sorted({str(r.config.get("env", "?")).split("/")[-1] for r in runs})
    sizes = sorted({(r.config["num_learners"], r.config["envs_per_learner"]) for r in runs})
    shown = ", ".join(f"{n} learners x {e} sim{'s' * (e > 1)}" for n, e in sizes)
    return f"{', '.join(envs)}: {shown}"


def _marker(points: int) -> dict[str, Any]:
    """Markers where a curve has few points: a curve of one bin is one marker, not an invisible line."""
    return {"marker": "o", "markersize": 3.5} if points <= MARKERS_UP_TO else {}


def x_values(table: pd.DataFrame, args: argparse.Namespace, steps: str = "bin") -> pd.Series:
    """Env steps, or the mean wall time (s) or bytes sent per learner at which those steps were reached."""
    if args.x == "bytes":
        return table["bytes"]
    return table["t"] if args.x == "time" else table[steps]


def x_label(args: argparse.Namespace) -> str:
    if args.x == "bytes":
        return "bytes sent per learner"
    return "wall-clock time since start (s)" if args.x == "time" else "env steps, all learners"


def draw_returns(ax: Axes, curves: pd.DataFrame, colors: dict[str, str], args: argparse.Namespace) -> None:
    """Mean return over seeds per bin, shaded ± one standard error."""
    for name, curve in curves.groupby("curve", observed=True):
        seeds = int(curve["n"].max())
        x = x_values(curve, args)
        ax.plot(
            x,
            curve["mean"],
            color=colors[name],
            label=f"{name} ({seeds} seed{'s' * (seeds > 1)})",
            **_marker(len(curve)),
        )
        if seeds > 1:
            ax.fill_between(
                x, curve["mean"] - curve["se"], curve["mean"] + curve["se"], color=colors[name], alpha=0.25, linewidth=0
            )
    ax.set_xlabel(x_label(args))
    per = "mean over learners" if args.weighting == "task" else "mean over episodes"
    ax.set_ylabel(f"return ({per}, per {results.human_steps(args.bin_steps)} steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")


def draw_disagreement(ax: Axes, table: pd.DataFrame, colors: dict[str, str], args: argparse.Namespace) -> None:
    """Disagreement (mean squared distance to the network average) over seeds, log scale.

    Exact consensus (0: a full graph, centralised A2C) has no place on a log axis: it is drawn on
    a floor a decade below the smallest positive value, dashed, and the legend says "= 0".
    """
    positive = table["mean"][table["mean"] > 0]
    floor = float(positive.min()) / 10 if len(positive) else 1.0
    for name, curve in table.groupby("curve", observed=True):
        x = x_values(curve, args, steps="steps")
        zero = bool((curve["mean"] == 0).all())
        label, style = (f"{name} (= 0)", "--") if zero else (name, "-")
        ax.plot(
            x, curve["mean"].clip(lower=floor), color=colors[name], label=label, linestyle=style, **_marker(len(curve))
        )
        if curve["n"].max() > 1 and not zero:
            low = (curve["mean"] - curve["se"]).clip(lower=floor)
            ax.fill_between(x, low, curve["mean"] + curve["se"], color=colors[name], alpha=0.25, linewidth=0)
    ax.set_yscale("log")
    ax.legend(fontsize="small", loc="best")
    ax.set_xlabel(x_label(args))
    ax.set_ylabel("disagreement")
    ax.set_title("squared distance of parameters to their average", fontsize="small")
    ax.grid(alpha=0.3)


def draw_learners(ax: Axes, learners: pd.DataFrame, curve: pd.DataFrame, name: str, args: argparse.Namespace) -> None:
    """Every learner's own return (thin, one colour each) under the curve's mean (black)."""
    import matplotlib

    ids = sorted(learners["learner"].unique())
    cmap = matplotlib.colormaps["viridis"]
    for i, (learner, own) in enumerate(learners.groupby("learner")):
        ax.plot(x_values(own, args), own["mean"], color=cmap(i / max(len(ids) - 1, 1)), linewidth=0.7, alpha=0.7)
    ax.plot(x_values(curve, args), curve["mean"], color="black", linewidth=1.5, label="all learners")
    ax.set_title(f"{name}: {len(ids)} learners", fontsize="medium")
    ax.set_xlabel(x_label(args))
    ax.set_ylabel("episode return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
