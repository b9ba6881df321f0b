"""`diffdac train | topology | bench | plot`: a thin layer over TrainConfig and the topologies package."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from diffdac.errors import ConfigError, TrainingError
from topologies.names import TOPOLOGY_NAMES

if TYPE_CHECKING:  # the options import the methods, and they torch: main imports them inside its Ctrl-C guard
    from diffdac.config import TrainConfig

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line and exit status 2, never a usage wall."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"diffdac: error: {message} (see --help)\n" if _is_lead() else None)


def _field_type(f: dataclasses.Field) -> type:
    """The concrete type of an `X | None` or plain annotation (tuple for `tuple[str, ...]`)."""
    from diffdac.config import TrainConfig

    hint = typing.get_type_hints(TrainConfig)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = [a for a in typing.get_args(hint) if a is not type(None)][0]
    return typing.get_origin(hint) or hint


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, its help taken from the field's doc.

    Defaults are left out of the namespace (SUPPRESS), so that the options a user actually gave
    are known: --resume takes every other option from the run's config.json.
    """
    from diffdac.config import TrainConfig
    from diffdac.network.methods import METHODS

    for f in dataclasses.fields(TrainConfig):
        flag, doc, kind = f"--{f.name.replace('_', '-')}", f.metadata["doc"], _field_type(f)
        if f.name == "method":
            doc = "how learners share what they learn: " + "; ".join(
                f"{name}: {m.summary}" for name, m in METHODS.items()
            )
        shown = ",".join(f.default) or "none" if isinstance(f.default, tuple) else f.default
        if kind is bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{doc} (default: {'on' if f.default else 'off'})",
            )
        elif kind is tuple:
            parser.add_argument(flag, type=_comma_list, default=argparse.SUPPRESS, help=doc)
        else:
            parser.add_argument(
                flag, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(), help=f"{doc} (default: {shown})"
            )


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's options; the subcommands' modules (torch, pandas) are imported here, inside main's Ctrl-C guard."""
    from diffdac.tools import bench, evaluate, plot, policy  # noqa: F401 (each adds its subcommand's options)

    parser = OneLineParser(prog="diffdac", description="Decentralised multitask RL by diffusion (Diff-DAC).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    train = sub.add_parser(
        "train", help="train a network of learners (or continue one with --resume)", allow_abbrev=False
    )
    train.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="options from a TOML file (such as experiments/configs/original-acrobot.toml) "
        "or a run's config.json; options given on the command line override it",
    )
    train.add_argument(
        "--wandb",
        default=None,
        metavar="PROJECT",
        help="also log progress rows to this Weights & Biases project (the [wandb] extra; WANDB_MODE=offline works)",
    )
    _add_config_options(train)
    bench.add_arguments(
        sub.add_parser("bench", help="env steps/s of the same run in different set-ups (e.g. 1, 2, N processes)")
    )
    evaluate.add_arguments(
        sub.add_parser("eval", help="each learner's policy and the network average on training or held-out tasks")
    )
    plot.add_arguments(
        sub.add_parser("plot", help="learning curves and a results table of run directories, seeds grouped")
    )
    policy.add_arguments(
        sub.add_parser("export", help="a trained policy as a torch.export program, to use without diffdac")
    )
    topo = sub.add_parser("topology", help="print a graph's adjacency, combination weights and spectral gap")
    topo.add_argument("--topology", default="ring", help=f"named graph ({', '.join(TOPOLOGY_NAMES)})")
    topo.add_argument(
        "--adjacency",
        default=None,
        help="adjacency literal or .npy/.csv/.txt file, or a sequence (a,b or [R,N,N] .npy); replaces --topology",
    )
    topo.add_argument("--degree", type=int, default=None, help="degree of --topology random-regular")
    topo.add_argument("--num-learners", type=int, default=None, help="default: the size of --adjacency, else 8")
    topo.add_argument("--weights", default="uniform", help="uniform or metropolis")
    topo.add_argument("--edge-prob", type=float, default=None)
    topo.add_argument("--seed", type=int, default=0)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the options given: over the defaults, or with --resume over the run's config.json.

    Options of a --config file count as given, below those of the command line. --adjacency
    without --topology replaces the default topology.
    """
    from diffdac.config import TrainConfig, read_config_file

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    _one_graph(given, "on the command line")
    if getattr(args, "config", None):
        from_file = read_config_file(args.config)
        _one_graph(from_file, f"in {args.config}")
        if {"topology", "adjacency"} & set(given):  # a graph on the command line replaces the file's graph
            from_file = {k: v for k, v in from_file.items() if k not in ("topology", "adjacency")}
        given = {**from_file, **given}
    if given.get("resume") and given.get("log_dir") and (Path(given["log_dir"]) / "config.json").exists():
        return dataclasses.replace(_stored_for_resume(given["log_dir"]), **given)
    if given.get("adjacency") is not None and "topology" not in given:
        given["topology"] = None
    if given.get("adjacency") is not None and "num_learners" not in given:
        given["num_learners"] = _matrix_size(given["adjacency"])
    return TrainConfig(**given)


# Options that name places outside the run directory: a shared run's config.json must not send a
# resume's files there, so on --resume they hold only when given again.
OUTSIDE_THE_RUN = ("tensorboard",)


def _stored_for_resume(log_dir: str) -> TrainConfig:
    """The run's own options for --resume, without those that name places outside the run."""
    from diffdac.config import TrainConfig

    stored = TrainConfig.from_run(log_dir)
    return dataclasses.replace(stored, **{name: None for name in OUTSIDE_THE_RUN})


def _one_graph(options: dict, where: str) -> None:
    """--topology and --adjacency both name the graph: given together, one would be ignored, so refuse the pair."""
    if options.get("topology") is not None and options.get("adjacency") is not None:
        raise ConfigError(f"--topology and --adjacency both give the graph {where}: give one of them")


def _matrix_size(adjacency: str) -> int:
    """--num-learners defaults to the size of the --adjacency matrix."""
    import topologies

    size = topologies.adjacency_size(adjacency)
    if size < 1:
        raise ConfigError(f"--adjacency {adjacency} holds no matrix: give a square 0/1 matrix of at least one learner")
    return size


def check_topology_args(args: argparse.Namespace, n: int) -> None:
    """`diffdac topology`'s counts: a seed in range, a probability, and a graph (with its dense matrices) that fits in memory."""
    import math

    import topologies
    from diffdac.config import MAX_COUNT, MAX_SEED
    from diffdac.run import limits

    if not 1 <= n <= MAX_COUNT:
        raise ConfigError(f"--num-learners must be a positive integer up to {MAX_COUNT}, got {n}")
    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer in [0, 2**63 - 1], got {args.seed}")
    if args.edge_prob is not None and not (math.isfinite(args.edge_prob) and 0 <= args.edge_prob <= 1):
        raise ConfigError(f"--edge-prob is a probability in [0, 1], got {args.edge_prob!r}")
    edges = n * n // 2 if args.adjacency is not None else topologies.edge_count(args.topology, n, args.edge_prob)
    need, have = edges * limits.BYTES_PER_EDGE + 3 * n * n * limits.DOUBLE, limits.available_bytes()
    if have is not None and need > have * limits.USABLE_FRACTION:
        raise ConfigError(
            f"the {n}-learner graph and its matrices need about {need / 1e9:,.1f} GB of memory but this machine has "
            f"{have / 1e9:,.1f} GB available: lower --num-learners"
        )


def run_train(args: argparse.Namespace) -> int:
    from diffdac.network.distributed import connect
    from diffdac.run.prepare import prepare
    from diffdac.run.training import run

    loggers = _extra_loggers(args)
    prepared = prepare(config_from_args(args))  # bad input ends every rank before any of them waits on a rendezvous
    with connect(prepared.config, prepared.method.communication()) as comm:
        run(prepared, comm, loggers)
    return 0


def _extra_loggers(args: argparse.Namespace) -> list:
    """The loggers asked for on the command line, checked before the run directory is touched."""
    if not args.wandb:
        return []
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("--wandb needs the wandb package: pip install 'diffdac[wandb]'")
    from diffdac.tools.wandb_logger import WandbLogger

    return [WandbLogger(args.wandb)]


def run_topology(args: argparse.Namespace) -> int:
    import numpy as np

    import topologies

    topology = None if args.adjacency is not None else args.topology
    n = args.num_learners
    if n is None:
        n = _matrix_size(args.adjacency) if args.adjacency is not None else 8
    check_topology_args(args, n)
    graph = topologies.resolve_graph(topology, args.adjacency, n, args.edge_prob, args.seed)
    schedule = topologies.schedule_for(topology, args.adjacency, graph, args.seed, args.degree)
    if schedule.random:  # the support is every pair: show one round's graph, the static figure beside E[C]'s
        graph = topologies.graph_from_adjacency(schedule.matrix(0, "uniform") * (1 - np.eye(n)) > 0)
        print("round 0's graph:")
    elif not schedule.static:
        print("union of the sequence's graphs:")
    print(topologies.describe(graph, args.weights))
    if not schedule.static:
        print("\n".join(topologies.describe_schedule(schedule, args.weights)))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from diffdac.tools import bench

    return bench.run(args)


def run_plot(args: argparse.Namespace) -> int:
    from diffdac.tools import plot

    return plot.main(args)


def run_eval(args: argparse.Namespace) -> int:
    from diffdac.tools import evaluate

    return evaluate.main(args)


def run_export(args: argparse.Namespace) -> int:
    from diffdac.tools import policy

    return policy.main(args)


COMMANDS = {
    "train": run_train,
    "topology": run_topology,
    "bench": run_bench,
    "plot": run_plot,
    "eval": run_eval,
    "export": run_export,
}


def _is_lead() -> bool:
    """Rank 0 of a torchrun world, or a plain process: the one that reports input errors, once."""
    from diffdac.network.distributed import env_rank

    return env_rank() == 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `diffdac` command; returns the exit status.

    Bad input is one line and status 2, a failed run one line and status 1, Ctrl-C (start-up
    included) one line and status 130, and a reader that goes away (`| head`) a quiet exit.
    """
    from diffdac import files
    from diffdac.errors import Stopped

    files.fail_writes_past_the_file_size_limit()
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except Stopped as stop:
        if _is_lead():
            print(stop, file=sys.stderr)
        return stop.status
    except KeyboardInterrupt:
        print("diffdac: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, _topology_error()) as err:  # bad input, found before training
        if _is_lead():
            print(f"diffdac: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingError as err:
        print(f"diffdac: training stopped: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _silence_stdout()
        return 0


def _topology_error() -> type[Exception]:
    from topologies import TopologyError

    return TopologyError


def _silence_stdout() -> None:
    """After the reader of stdout has gone, point stdout at /dev/null so Python's exit flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
