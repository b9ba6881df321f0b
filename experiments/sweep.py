"""Methods x learning rates x seeds from a sweep file: every method tuned, then compared at its best rate.

    python experiments/sweep.py experiments/configs/sweep-acrobot.toml                 # stage "sweep": the grid
    python experiments/sweep.py experiments/configs/sweep-acrobot.toml --stage best    # each method at its best rate
    python experiments/sweep.py experiments/configs/sweep-acrobot.toml --report-only   # tables and figures from the runs there are
    python experiments/sweep.py experiments/configs/sweep-acrobot.toml --quick         # the whole pipeline in a few minutes

A sweep file (TOML) names the runs' options and the grid:

    name = "acrobot-original"              # runs go to RUNS_DIR/<name>/<stage>/, results to OUT_DIR/<name>/
    train_config = "original-acrobot.toml" # every run's options (relative to this file); leave out for diffdac's defaults
    [train]                                # options over train_config for every run
    [sweep]                                # lrs = [...], seeds = [...], total_steps, final_window (default a tenth)
    [best]                                 # seeds = [...], total_steps, final_window: the comparison at the best rates
    [variants.ring]                        # one table per method: its own options (method, topology, ...)
                                           # lr = X pins its rate (tuned in an earlier sweep): no sweep runs

Every run is one `diffdac train` in its own directory. A complete run of the same options is kept;
an incomplete one is resumed from its last checkpoint, so a sweep cut short loses at most the
runs in flight since their last checkpoint, and calling it again carries on. A run's score is
task-weighted (diffdac.tools.results): the mean over learners of each learner's mean return over the
episodes that ended in the last `final_window` env steps. A method's best learning rate is the
one with the highest mean score over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from diffdac import cli
from diffdac.run.provenance import VERSION
from diffdac.run import checkpoint
from diffdac.tools import results
from diffdac.config import RESUME_FREE, RUN_METADATA
from diffdac.errors import ConfigError

STAGES = ("sweep", "best")
NOT_COMPARED = RESUME_FREE | RUN_METADATA  # config.json keys that do not change what a run computes
QUICK = {"total_steps": 60_000, "final_window": 20_000, "seeds": [0, 1]}


@dataclass(frozen=True)
class Job:
    """One training run: a method (variant) at one learning rate and seed."""

    variant: str
    lr: float
    seed: int
    flags: tuple[str, ...]  # diffdac train options, without --log-dir

    @property
    def name(self) -> str:
        return f"{self.variant}-lr{self.lr:g}-s{self.seed}"


@dataclass(frozen=True)
class Sweep:
    """A sweep file, read and checked."""

    path: Path
    name: str
    train_config: Path | None
    train: dict[str, Any]
    stages: dict[str, dict[str, Any]]
    variants: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, path: Path) -> "Sweep":
        try:
            values = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise SystemExit(f"sweep: cannot read {path}: {err}") from None
        unknown = set(values) - {"name", "train_config", "train", "variants", *STAGES}
        if unknown or not values.get("variants") or "sweep" not in values:
            raise SystemExit(
                f"sweep: {path} needs name, [sweep] and [variants.NAME] tables (unknown keys: {sorted(unknown)})"
            )
        for name, options in values["variants"].items():
            nested = [key for key, value in options.items() if isinstance(value, dict)]
            if nested:  # [variants.clip-0.5] is the table "5" inside "clip-0"
                raise SystemExit(
                    f"sweep: variant {name!r} of {path} holds tables {nested}: a variant's name cannot contain a dot"
                )
        base = values.get("train_config")
        return cls(
            path,
            values.get("name", path.stem),
            (path.parent / base).resolve() if base else None,
            values.get("train", {}),
            {stage: values.get(stage, {}) for stage in STAGES},
            values["variants"],
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_file", type=Path, help="the sweep's TOML file")
    parser.add_argument(
        "--stage", choices=STAGES, default="sweep", help="sweep: the grid of rates; best: each method at its best rate"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument(
        "--runs-dir", type=Path, default=Path("runs/sweeps"), help="where run directories go (default runs/sweeps)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("experiments/results"),
        help="figures, CSVs and results.md go to OUT_DIR/<name>",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing: tables and figures from the complete runs there are"
    )
    parser.add_argument(
        "--quick", action="store_true", help="60k steps, 2 seeds, into RUNS_DIR/<name>-quick: checks the pipeline"
    )
    parser.add_argument("--variants", default=None, help="comma list: only these variants of the sweep file")
    return parser.parse_args(argv)


def stage_settings(sweep: Sweep, stage: str, quick: bool) -> dict[str, Any]:
    """lrs (sweep only), seeds, total_steps and final_window of a stage, with --quick's small numbers."""
    settings = {**sweep.stages["sweep"], **(sweep.stages[stage] if stage == "best" else {})}
    if stage == "best":
        settings.pop("lrs", None)
    if quick:
        settings.update(QUICK)
        settings["lrs"] = settings.get("lrs", [])[:2]
    settings.setdefault("final_window", settings["total_steps"] // 10)
    return settings


def flags(options: dict[str, Any]) -> list[str]:
    """diffdac train options from TOML values: --key=value, --key / --no-key for booleans, comma lists."""
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            out.append(f"{flag}={','.join(map(str, value)) or 'none'}")
        else:
            out.append(f"{flag}={value}")
    return out


def jobs(
    sweep: Sweep, stage: str, settings: dict[str, Any], rates: dict[str, float], only: list[str] | None
) -> list[Job]:
    """Every run of a stage, seed outermost: a sweep cut short has every method and rate of its first seeds."""
    base = ["--config", str(sweep.train_config)] if sweep.train_config else []
    variants = [v for v in sweep.variants if only is None or v in only]
    out = []
    for seed in settings["seeds"]:
        for variant in variants:
            pinned = "lr" in sweep.variants[variant]
            if stage == "sweep" and pinned:
                continue
            for lr in settings["lrs"] if stage == "sweep" else [rates[variant]]:
                options = {
                    **sweep.train,
                    **sweep.variants[variant],
                    "total_steps": settings["total_steps"],
                    "lr": lr,
                    "seed": seed,
                }
                out.append(Job(variant, float(lr), int(seed), (*base, *flags(options), "--threads=1", "--no-progress")))
    return out


def pinned_rates(sweep: Sweep) -> dict[str, float]:
    """The variants whose learning rate the sweep file fixes (`lr = ...`), tuned in an earlier sweep."""
    return {name: float(options["lr"]) for name, options in sweep.variants.items() if "lr" in options}


def expected_config(job: Job) -> dict[str, Any]:
    """The config.json values the job's options resolve to, as diffdac train itself resolves them."""
    from diffdac.run.prepare import resolve_defaults

    config = resolve_defaults(cli.config_from_args(cli.build_parser().parse_args(["train", *job.flags])).validate())
    return _comparable(config.to_dict())


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in values.items() if k not in NOT_COMPARED}))


def state(run_dir: Path, job: Job) -> str:
    """complete, partial (same options, not finished: resume it), or new (nothing, or other options: start afresh)."""
    try:
        stored = _comparable(json.loads((run_dir / "config.json").read_text()))
    except (OSError, json.JSONDecodeError):
        return "new"
    if stored != expected_config(job):
        return "new"
    latest = checkpoint.latest(run_dir)
    return "complete" if latest is not None and latest.complete else "partial"


def command(job: Job, run_dir: Path, how: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "diffdac",
        "train",
        *job.flags,
        f"--log-dir={run_dir}",
        "--resume" if how == "partial" else "--overwrite",
    ]


def run(job: Job, stage_dir: Path, window: int) -> str:
    """Train one job unless it is complete; its output goes to STAGE_DIR/<job>.log. Returns a line to print."""
    run_dir = stage_dir / job.name
    how = state(run_dir, job)
    if how == "complete":
        return f"{job.name}: complete, kept"
    start = time.perf_counter()
    with open(stage_dir / f"{job.name}.log", "a") as log:
        done = subprocess.run(
            command(job, run_dir, how),
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    if done.returncode != 0:
        return f"{job.name}: FAILED (exit {done.returncode}); see {stage_dir / job.name}.log"
    return f"{job.name}: {'resumed' if how == 'partial' else 'trained'} in {time.perf_counter() - start:.0f}s, score {score(run_dir, window):.1f}"


def train_all(todo: list[Job], stage_dir: Path, parallel: int, window: int) -> None:
    """Run the jobs `parallel` at a time, printing a line as each ends (in order)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for line in pool.map(lambda job: run(job, stage_dir, window), todo):
            print(line, flush=True)


def score(run_dir: Path, window: int) -> float:
    """A run's task-weighted return over its last `window` env steps (NaN before its first episode)."""
    try:
        bins = results.run_bins(results.load_run(run_dir), window)
    except results.RunError:
        return float("nan")
    return float(bins["r"].iloc[-1]) if len(bins) else float("nan")


def scores(todo: list[Job], stage_dir: Path, window: int) -> pd.DataFrame:
    """One row per complete run: variant, lr, seed, score, run directory."""
    rows = [
        {
            "variant": j.variant,
            "lr": j.lr,
            "seed": j.seed,
            "score": score(stage_dir / j.name, window),
            "run": str(stage_dir / j.name),
        }
        for j in todo
        if state(stage_dir / j.name, j) == "complete"
    ]
    return pd.DataFrame(rows, columns=["variant", "lr", "seed", "score", "run"])


def by_rate(table: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, lr): mean score over seeds, standard error, seeds, bootstrap interval."""
    grouped = table.groupby(["variant", "lr"], sort=False)["score"]
    stats = grouped.agg(mean="mean", se="sem", seeds="size").reset_index()
    intervals = [results.bootstrap_interval(group.to_numpy()) for _, group in grouped]
    stats["ci_low"], stats["ci_high"] = zip(*intervals) if intervals else ((), ())
    return stats


def best_rates(stats: pd.DataFrame) -> pd.DataFrame:
    """Each variant's row at the learning rate of its highest mean score."""
    return stats.loc[stats.groupby("variant", sort=False)["mean"].idxmax()].reset_index(drop=True)


def draw_sweep(stats: pd.DataFrame, title: str, out: Path) -> None:
    """Final score against learning rate (log axis), one line per method, shaded ± one standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (variant, rows) in enumerate(stats.groupby("variant", sort=False)):
        rows = rows.sort_values("lr")
        fewest, most = int(rows["seeds"].min()), int(rows["seeds"].max())
        seeds = f"{fewest} seeds" if fewest == most else f"{fewest}-{most} seeds"
        ax.plot(rows["lr"], rows["mean"], marker="o", color=f"C{i}", label=f"{variant} ({seeds})")
        ax.fill_between(
            rows["lr"],
            rows["mean"] - rows["se"].fillna(0),
            rows["mean"] + rows["se"].fillna(0),
            color=f"C{i}",
            alpha=0.2,
            linewidth=0,
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (RMSprop)")
    ax.set_ylabel("final score (task-weighted return)")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def markdown_table(stats: pd.DataFrame) -> str:
    lines = ["| method | lr | seeds | score (mean ± s.e.) | 95% bootstrap CI |", "|---|---|---|---|---|"]
    for row in stats.itertuples():
        se = "" if pd.isna(row.se) else f" ± {row.se:.1f}"
        ci = "-" if pd.isna(row.ci_low) else f"[{row.ci_low:.1f}, {row.ci_high:.1f}]"
        lines.append(f"| {row.variant} | {row.lr:g} | {row.seeds} | {row.mean:.1f}{se} | {ci} |")
    return "\n".join(lines)


def describe(sweep: Sweep, settings: dict[str, Any], stage: str) -> str:
    base = (
        f"`{sweep.train_config.relative_to(Path.cwd())}`"
        if sweep.train_config and sweep.train_config.is_relative_to(Path.cwd())
        else (f"`{sweep.train_config}`" if sweep.train_config else "diffdac's defaults")
    )
    over = ", ".join(f"{' '.join(flags({k: v}))}" for k, v in sweep.train.items())
    rates = f"learning rates {', '.join(f'{lr:g}' for lr in settings['lrs'])}; " if stage == "sweep" else ""
    return (
        f"Options: {base}{' with ' + over if over else ''}; {rates}seeds {', '.join(map(str, settings['seeds']))}; "
        f"{settings['total_steps']:,} env steps per run; score over the last {settings['final_window']:,} env steps."
    )


def variant_lines(sweep: Sweep) -> list[str]:
    return [
        f"- `{name}`: `{' '.join(flags(options)) or '(the options above)'}`" for name, options in sweep.variants.items()
    ]


def stage_tables(
    todo: list[Job], stage_dir: Path, window: int, out_dir: Path, stage: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every complete run's score and the scores per (method, rate), also written to OUT/<stage>.csv and <stage>-summary.csv."""
    table = scores(todo, stage_dir, window)
    if table.empty:
        raise SystemExit(f"sweep: no complete run in {stage_dir} yet")
    stats = by_rate(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / f"{stage}.csv", index=False)
    stats.to_csv(out_dir / f"{stage}-summary.csv", index=False)
    return table, stats


def report_sweep(
    sweep: Sweep, settings: dict[str, Any], todo: list[Job], stage_dir: Path, out_dir: Path
) -> pd.DataFrame:
    """sweep.csv (every run), sweep-summary.csv (per rate), sweep.png, and the sweep's part of results.md."""
    table, stats = stage_tables(todo, stage_dir, settings["final_window"], out_dir, "sweep")
    draw_sweep(stats, f"{sweep.name}: final score against learning rate", out_dir / "sweep.png")
    best = best_rates(stats)
    section = "\n".join(
        [
            "## Learning-rate sweep",
            "",
            describe(sweep, settings, "sweep"),
            "",
            *variant_lines(sweep),
            "",
            f"{len(table)} of {len(todo)} runs complete.",
            "",
            "Each method at its best learning rate:",
            "",
            markdown_table(best),
            "",
            "Every rate:",
            "",
            markdown_table(stats),
            "",
            "![score against learning rate](sweep.png)",
            "",
        ]
    )
    (out_dir / "sweep.md").write_text(section)
    print(markdown_table(best))
    return best


def report_best(sweep: Sweep, settings: dict[str, Any], todo: list[Job], stage_dir: Path, out_dir: Path) -> None:
    """best.csv, best-summary.csv, best.png (diffdac plot of the curves) and the comparison's part of results.md."""
    table, stats = stage_tables(todo, stage_dir, settings["final_window"], out_dir, "best")
    complete = [Path(r) for r in table["run"]]
    order = list(dict.fromkeys(table["variant"]))
    runs_in_order = [r for v in order for r in complete if Path(r).name.startswith(f"{v}-lr")]
    labels = [opt for v in order for opt in ("--label", f"{v} (lr {stats.set_index('variant').loc[v, 'lr']:g})")]
    title = f"{sweep.name}: each method at its best learning rate"
    status = cli.main(
        [
            "plot",
            *map(str, runs_in_order),
            "--out",
            str(out_dir / "best.png"),
            "--csv",
            str(out_dir / "best-curves.csv"),
            "--disagreement",
            "--bin-steps",
            str(settings["final_window"] // 5),
            "--title",
            title,
            *labels,
        ]
    )
    if status != 0:
        raise SystemExit(status)
    reference = settings.get("reference", "centralized")
    paired = paired_differences(table, reference) if reference in set(table["variant"]) else None
    section = "\n".join(
        [
            "## Each method at its best learning rate",
            "",
            describe(sweep, settings, "best"),
            "",
            markdown_table(stats),
            "",
            *(
                [
                    f"Paired by seed (a seed gives every method the same tasks), each method's score minus {reference}'s:",
                    "",
                    paired_table(paired),
                    "",
                ]
                if paired is not None
                else []
            ),
            "![learning curves at the best rates](best.png)",
            "",
        ]
    )
    (out_dir / "best.md").write_text(section)
    print(markdown_table(stats))
    if paired is not None:
        paired.to_csv(out_dir / "best-paired.csv", index=False)
        print(paired_table(paired))


def paired_differences(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per method: the mean over seeds of its score minus the reference's on the same seed, s.e., bootstrap interval."""
    scores = table.pivot(index="seed", columns="variant", values="score")
    rows = []
    for variant in [v for v in dict.fromkeys(table["variant"]) if v != reference]:
        diff = (scores[variant] - scores[reference]).dropna()
        low, high = results.bootstrap_interval(diff.to_numpy())
        better = int((diff > 0).sum())
        rows.append(
            {
                "variant": variant,
                "reference": reference,
                "mean_difference": diff.mean(),
                "se": diff.sem(),
                "ci_low": low,
                "ci_high": high,
                "seeds": len(diff),
                "seeds_ahead": better,
            }
        )
    return pd.DataFrame(rows)


def paired_table(paired: pd.DataFrame) -> str:
    lines = [
        "| method | minus | seeds | difference (mean ± s.e.) | 95% bootstrap CI | seeds ahead |",
        "|---|---|---|---|---|---|",
    ]
    for row in paired.itertuples():
        lines.append(
            f"| {row.variant} | {row.reference} | {row.seeds} | {row.mean_difference:+.1f} ± {row.se:.1f} | "
            f"[{row.ci_low:+.1f}, {row.ci_high:+.1f}] | {row.seeds_ahead}/{row.seeds} |"
        )
    return "\n".join(lines)


def without_stage(argv: list[str]) -> list[str]:
    """The command line that trains a sweep: --stage and --report-only only say which part ran or was redrawn."""
    kept, args = [], iter(argv)
    for arg in args:
        if arg == "--stage":
            next(args, None)  # and its value
        elif arg != "--report-only" and not arg.startswith("--stage="):
            kept.append(arg)
    return kept


def write_results(sweep: Sweep, out_dir: Path, argv: list[str]) -> None:
    """results.md: provenance, then the sections of the stages that have been reported."""
    sections = [(out_dir / f"{stage}.md").read_text() for stage in STAGES if (out_dir / f"{stage}.md").is_file()]
    cmd = "python experiments/sweep.py " + " ".join(shlex.quote(a) for a in without_stage(argv))
    also = " (and the same with `--stage best`)" if sweep.stages["best"] else ""
    (out_dir / "results.md").write_text(
        "\n".join(
            [
                f"# {sweep.name}",
                "",
                f"Made by `{cmd}`{also}, diffdac {VERSION}, on a {os.cpu_count()}-core "
                f"{platform.machine()} machine; sweep file `{sweep.path}`.",
                "",
                *sections,
            ]
        )
    )


SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")  # one path component: a name cannot leave its directory


def check_name(what: str, name: object) -> None:
    """A sweep's or a variant's name becomes a directory name under --runs-dir and --out-dir: one plain component."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise SystemExit(
            f"sweep: {what} {name!r} must be a plain name (letters, digits, _ . + -, no / or ..): "
            "it names a directory inside --runs-dir and --out-dir"
        )


def _numbers(stage: str, key: str, values: object, kind: type, low: float) -> None:
    ok = (
        isinstance(values, list)
        and values
        and all(isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) and v > low for v in values)
    )
    if not ok:
        raise SystemExit(f"sweep: [{stage}] {key} must be a non-empty list of numbers > {low:g}, got {values!r}")


def check_sweep(sweep: Sweep, args: argparse.Namespace) -> list[str] | None:
    """Everything a sweep file and the command line can get wrong, each in one line; returns --variants as a list."""
    check_name("name", sweep.name)
    for variant in sweep.variants:
        check_name("variant", variant)
    for stage in STAGES:
        settings = sweep.stages[stage]
        steps = settings.get("total_steps")
        if (stage == "sweep" or steps is not None) and (type(steps) is not int or steps < 1):
            raise SystemExit(f"sweep: [{stage}] needs total_steps = a positive integer, got {steps!r}")
        if "lrs" in settings or stage == "sweep":
            _numbers(stage, "lrs", settings.get("lrs"), (int, float), 0)
        if "seeds" in settings or stage == "sweep":
            _numbers(stage, "seeds", settings.get("seeds"), int, -1)
        window = settings.get("final_window")
        if window is not None and (type(window) is not int or window < 1):
            raise SystemExit(f"sweep: [{stage}] final_window must be a positive integer, got {window!r}")
    if args.jobs < 1:
        raise SystemExit(f"sweep: --jobs must be a positive number of runs at a time, got {args.jobs}")
    only = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    unknown = [v for v in only or () if v not in sweep.variants]
    if unknown or only == []:
        raise SystemExit(
            f"sweep: unknown variant {', '.join(unknown) or repr(args.variants)}: {sweep.path} has {', '.join(sweep.variants)}"
        )
    return only


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    sweep = Sweep.read(args.sweep_file)
    only = check_sweep(sweep, args)
    name = sweep.name + ("-quick" if args.quick else "")
    runs_root, out_dir = args.runs_dir / name, (args.runs_dir / name / "results" if args.quick else args.out_dir / name)
    sweep_settings = stage_settings(sweep, "sweep", args.quick)
    sweep_jobs = jobs(sweep, "sweep", sweep_settings, {}, only)
    try:
        if args.stage == "sweep":
            if not args.report_only:
                train_all(sweep_jobs, runs_root / "sweep", args.jobs, sweep_settings["final_window"])
            report_sweep(sweep, sweep_settings, sweep_jobs, runs_root / "sweep", out_dir)
        else:
            best = report_sweep(sweep, sweep_settings, sweep_jobs, runs_root / "sweep", out_dir)
            settings = stage_settings(sweep, "best", args.quick)
            todo = jobs(sweep, "best", settings, {**dict(zip(best["variant"], best["lr"])), **pinned_rates(sweep)}, only)
            if not args.report_only:
                train_all(todo, runs_root / "best", args.jobs, settings["final_window"])
            report_best(sweep, settings, todo, runs_root / "best", out_dir)
    except ConfigError as err:
        raise SystemExit(f"sweep: {err}") from None
    write_results(sweep, out_dir, argv)
    print(f"sweep: results in {out_dir}")


if __name__ == "__main__":
    main()
