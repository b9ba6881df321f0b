"""Run directories as pandas tables: episodes on one time line, bins, seed groups, a summary.

`diffdac plot` draws what this module computes; notebooks can use it directly:

    runs = load_runs([Path("runs/ring-s0"), Path("runs/ring-s1"), Path("runs/full-s0")])
    curves(runs, bin_steps=20_000)           # one row per (curve, bin): mean return and s.e. over seeds
    summary(runs, 20_000, threshold=-100)    # one row per curve: final return, return at S, steps to -100

**The time line.** A Monitor row is one finished episode of one simulator; its `l` is the
episode's length in that simulator's steps. All simulators of a run step in lock-step (every
update, each of the N x E simulators makes `steps_per_update` steps), so when a simulator has
made L steps in all, the whole run has made exactly L * N * E env steps. An episode is therefore
placed at `steps = cumsum(l) * num_learners * envs_per_learner`: the run's total env steps when
it ended, the same axis as `--total-steps` and progress.csv, whatever the number of simulators.

**Bins.** Bin b holds the episodes that ended in (b - w, b] (w = bin_steps). Its return is
*task-weighted* by default: the mean over learners of each learner's mean return in the bin, so
that every task counts once however many episodes it finishes (a mean over all episodes, the
`episode` weighting, favours tasks with short episodes, which are the easy ones on Acrobot). A
bin is kept only once the run has passed its end (the run's extent: the last progress.csv row,
or its last episode if further), so the last, still filling bin of a run in progress never
biases the curve towards short episodes.

**Seeds.** Runs whose config.json agree on everything but the seed (and bookkeeping such as
log_dir) form one curve: the mean over seeds of the per-run bin returns and its standard error
(ddof 1, none for one seed). A curve stops at the last bin every one of its seeds has reached.
The summary's final return also carries a 95% bootstrap confidence interval over seeds.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diffdac import files
from diffdac.config import NOT_WHAT_IS_LEARNED, TrainConfig, read_run_config, run_options
from diffdac.errors import ConfigError
from diffdac.run.rundir import MONITOR_NAME, complete_lines

# Options that say where or how a run was logged, not what was learned: never split a curve.
BOOKKEEPING_KEYS = NOT_WHAT_IS_LEARNED
# Keys whose value alone names a curve ("ring" rather than "topology=ring").
BARE_KEYS = ("topology", "method")
GRAPH_KEYS = ("topology", "adjacency", "edge_prob", "weights")  # meaningless for a method that ignores the graph
MAX_LABEL = 40  # characters of an automatic curve name: the legend stays inside the figure
OPTION_DEFAULTS = {
    f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in dataclasses.fields(TrainConfig)
}
WEIGHTINGS = ("task", "episode")  # a bin's return: mean over learners of their means, or over all episodes
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000


MAX_COUNT = 10**9  # learners or simulators per learner a run could have: larger counts are edits


class RunError(ConfigError):
    """A run directory that cannot be read or has nothing to show yet: bad input, exit status 2."""


@dataclass
class Run:
    """One run directory as tables."""

    path: Path
    config: dict[str, Any]
    episodes: pd.DataFrame  # learner, sim, r, l, t, steps: one row per finished episode
    progress: pd.DataFrame  # progress.csv as written so far (may be empty)
    extent: int  # env steps the run is known to have made

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def read_monitor(path: Path) -> pd.DataFrame:
    """The finished episodes of one Monitor file (columns r, l, t).

    A file being written may end in half a row; only newline-terminated rows count, so an
    episode is never read with a cut-off length.
    """
    text = files.read_text(path)
    if text and not text.startswith("#"):
        raise RunError(f"{path} is not a Monitor file: its first line must be '#' + JSON")
    lines = complete_lines(text)
    if len(lines) < 2:  # no header yet
        return pd.DataFrame({"r": pd.Series(dtype=float), "l": pd.Series(dtype="int64"), "t": pd.Series(dtype=float)})
    frame = pd.read_csv(io.StringIO("\n".join(lines[1:]) + "\n"))
    missing = {"r", "l", "t"} - set(frame.columns)
    if missing:
        raise RunError(f"{path} has no column {', '.join(sorted(missing))}: a Monitor file's header is r,l,t")
    return _numbers(path, frame[["r", "l", "t"]]).dropna().astype({"l": "int64"})


def _numbers(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """A Monitor file's rows as numbers; a row of text is named (a run writes only numbers there)."""
    numbers = frame.apply(pd.to_numeric, errors="coerce")
    bad = (numbers.isna() & frame.notna()).any(axis=1) | ~np.isfinite(numbers["l"].astype(float).fillna(0))
    if bad.any():
        raise RunError(f"{path} line {int(bad.to_numpy().argmax()) + 3} is not a row of numbers: remove it")
    return numbers


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run, with the two counts the time line needs."""
    path = run_dir / "config.json"
    try:
        config = {
            **OPTION_DEFAULTS,
            **run_options(read_run_config(run_dir)),
        }  # runs made before an option existed had its default
    except ConfigError as err:
        raise RunError(str(err)) from None
    for key in ("num_learners", "envs_per_learner"):
        if (
            not isinstance(config.get(key), int)
            or isinstance(config.get(key), bool)
            or not 1 <= config[key] <= MAX_COUNT
        ):
            raise RunError(
                f"{path} has no positive integer {key!r} up to {MAX_COUNT}: was it written by diffdac train?"
            )
    return config


def load_episodes(run_dir: Path, config: dict[str, Any]) -> pd.DataFrame:
    """Every finished episode of a run, placed at the run's total env steps when it ended."""
    files = sorted(p for p in (run_dir / "monitor").glob("*.monitor.csv") if MONITOR_NAME.search(p.name))
    if not files:
        raise RunError(f"{run_dir} has no Monitor files (monitor/learnerKKK.simEE.monitor.csv): has the run started?")
    frames = []
    for path in files:
        learner, sim = map(int, MONITOR_NAME.search(path.name).groups())
        frame = read_monitor(path)
        frames.append(frame.assign(learner=learner, sim=sim, sim_steps=frame["l"].cumsum()))
    episodes = pd.concat(frames, ignore_index=True)
    if episodes.empty:
        raise RunError(
            f"{run_dir} has no finished episode yet ({len(files)} Monitor files, all empty): wait for its first episodes or leave it out"
        )
    simulators = config["num_learners"] * config["envs_per_learner"]
    episodes["steps"] = episodes["sim_steps"] * simulators
    return episodes[["learner", "sim", "r", "l", "t", "steps"]].sort_values("steps", kind="stable", ignore_index=True)


def read_progress(run_dir: Path) -> pd.DataFrame:
    """progress.csv so far; empty when the run has not logged yet. A half-written last row is dropped."""
    path = run_dir / "progress.csv"
    text = files.read_text(path) if path.exists() or path.is_symlink() else ""
    lines = complete_lines(text)
    if len(lines) < 2:
        return pd.DataFrame(
            {"steps": pd.Series(dtype="int64"), "time": pd.Series(dtype=float), "disagreement": pd.Series(dtype=float)}
        )
    try:
        table = pd.read_csv(io.StringIO("\n".join(lines) + "\n"))
    except (ValueError, pd.errors.ParserError) as err:
        raise RunError(f"{path} is not a progress.csv of diffdac train ({str(err).splitlines()[0]})") from None
    numbers = table.apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna() & table.notna()
    if bad.any().any() or "steps" not in table:
        line = int(bad.any(axis=1).to_numpy().argmax()) + 2 if bad.any().any() else 1
        raise RunError(f"{path} line {line} is not a row of numbers: remove it (a run writes only numbers there)")
    return numbers.dropna(subset=["steps"])


def load_run(run_dir: Path) -> Run:
    """A run directory, finished or still running, as tables."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a directory: give run directories of diffdac train")
    config = read_config(run_dir)
    episodes = load_episodes(run_dir, config)
    progress = read_progress(run_dir)
    extent = int(max(episodes["steps"].max(), progress["steps"].max() if len(progress) else 0))
    return Run(run_dir, config, episodes, progress, extent)


def load_runs(run_dirs: Sequence[Path]) -> list[Run]:
    """Every run directory given; the first bad one ends it with a RunError."""
    return [load_run(Path(d)) for d in run_dirs]


# --- seed groups and labels ---------------------------------------------------------------------


def group_key(config: dict[str, Any]) -> str:
    """What a run is, apart from its seed: the config without bookkeeping keys, as canonical JSON."""
    return json.dumps({k: v for k, v in config.items() if k not in BOOKKEEPING_KEYS}, sort_keys=True, default=str)


def curve_labels(runs: Sequence[Run], labels: Sequence[str] | None = None) -> list[str]:
    """The curve each run belongs to, labelled by the config keys that differ between curves.

    Curves keep the order of their first run. `labels`, one per curve in that order, replace the
    automatic names.
    """
    keys = list(dict.fromkeys(group_key(r.config) for r in runs))
    firsts = [next(r.config for r in runs if group_key(r.config) == key) for key in keys]
    if labels is not None:
        if len(labels) != len(keys):
            raise RunError(
                f"--label was given {len(labels)} times but the runs form {len(keys)} curves (runs that differ only in seed share a curve)"
            )
        names = list(labels)
        if len(set(names)) < len(names):
            raise RunError(f"--label must name each curve differently, got {', '.join(names)}")
    else:
        names = _describe(firsts)
    by_key = dict(zip(keys, names))
    return [by_key[group_key(r.config)] for r in runs]


def _describe(configs: list[dict[str, Any]]) -> list[str]:
    """Short names from the keys whose values differ between curves (topology first, then method).

    The graph is named once (an adjacency file by its name), and not at all for a method that
    ignores it; options that are unset or empty for a curve are left out of its name.
    """
    others = sorted({k for c in configs for k in c} - BOOKKEEPING_KEYS - set(BARE_KEYS))
    differing = [k for k in [*BARE_KEYS, *others] if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    if "topology" in differing and "adjacency" in differing:
        differing.remove("adjacency")
    if not differing:  # one curve: say what it is
        c = configs[0]
        return [f"{_graph(c)}, {c['num_learners']} learners x {c['envs_per_learner']} sims"]
    used = [
        k for k in BARE_KEYS if k in differing
    ]  # the graph and the method, then as few options as tell curves apart
    while True:  # each time the option that splits the curves most
        names = [_name(c, used) for c in configs]
        left = [k for k in differing if k not in used]
        if len(set(names)) == len(names) or not left:
            break
        used.append(max(left, key=lambda k: (len({_name(c, [*used, k]) for c in configs}), -left.index(k))))
    used.sort(key=differing.index)
    names = [_name(c, used) for c in configs]
    if len(set(names)) < len(names):  # values cut short to the same text: number the curves
        names = [f"{name} #{i + 1}" for i, name in enumerate(names)]
    return names


def _name(config: dict[str, Any], keys: list[str]) -> str:
    return _shorten(
        ", ".join(_show(k, config.get(k), config) for k in keys if _shown(k, config)) or str(config.get("method"))
    )


def _shown(key: str, config: dict[str, Any]) -> bool:
    """Whether a differing option says something about this curve."""
    value = config.get(key)
    if key != "topology" and (value is None or value == [] or value == ""):  # topology None: named by its adjacency
        return False
    return key not in GRAPH_KEYS or _uses_graph(config)


def _uses_graph(config: dict[str, Any]) -> bool:
    from diffdac.network.methods import METHODS

    method = METHODS.get(str(config.get("method")))
    return method is None or method.uses_graph


def _graph(config: dict[str, Any]) -> str:
    if config.get("topology"):
        return str(config["topology"])
    adjacency = str(config.get("adjacency") or "")
    return f"adjacency {Path(adjacency).name}" if adjacency and not adjacency.startswith("[") else "adjacency"


def _show(key: str, value: Any, config: dict[str, Any]) -> str:
    if key == "topology":
        return _graph(config)
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    text = text if len(text) <= 24 else text[:21] + "..."
    return text if key in BARE_KEYS else f"{key}={text}"


def _shorten(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 3] + "..."


# --- bins and curves -----------------------------------------------------------------------------


def bin_end(steps: pd.Series | int, bin_steps: int) -> pd.Series | int:
    """The end of the bin (b - w, b] that holds each step count."""
    return -(-steps // bin_steps) * bin_steps


def run_bins(run: Run, bin_steps: int, by: Sequence[str] = (), weighting: str = "task") -> pd.DataFrame:
    """Return, mean wall time and episode count per bin (and per `by`, e.g. learner) of one run.

    `task` weighting: the mean over the learners that finished an episode in the bin of each one's
    mean return there; `episode`: the mean over all those episodes.
    """
    if weighting not in WEIGHTINGS:
        raise RunError(f"unknown weighting {weighting!r}: choose task or episode")
    episodes = run.episodes.assign(bin=bin_end(run.episodes["steps"], bin_steps))
    episodes = episodes[episodes["bin"] <= run.extent]
    keys = [*by, "bin"] if weighting == "episode" or "learner" in by else [*by, "learner", "bin"]
    table = episodes.groupby(keys).agg(r=("r", "mean"), t=("t", "mean"), episodes=("r", "size")).reset_index()
    if keys != [*by, "bin"]:
        table = (
            table.groupby([*by, "bin"])
            .agg(r=("r", "mean"), t=("t", "mean"), episodes=("episodes", "sum"))
            .reset_index()
        )
    return table.assign(bytes=bytes_at(run, table["bin"]))


def bytes_at(run: Run, steps: pd.Series | np.ndarray) -> np.ndarray:
    """Bytes sent per learner by these env step counts, read off progress.csv's bytes_sent (linear between
    its rows, from 0 at step 0); NaN for a run from before the column, or past its last row."""
    steps = np.asarray(steps, dtype=float)
    progress = run.progress
    if "bytes_sent" not in progress or progress["bytes_sent"].isna().all():
        return np.full(len(steps), np.nan)
    known = progress.dropna(subset=["bytes_sent"])
    xs = np.concatenate([[0.0], known["steps"].to_numpy(float)])
    ys = np.concatenate([[0.0], known["bytes_sent"].to_numpy(float)])
    return np.where(steps <= xs[-1], np.interp(steps, xs, ys), np.nan)


def seed_table(
    runs: Sequence[Run],
    bin_steps: int,
    labels: Sequence[str] | None = None,
    by: Sequence[str] = (),
    weighting: str = "task",
) -> pd.DataFrame:
    """Every run's bins stacked, with its curve label and seed: the long table everything else groups."""
    names = curve_labels(runs, labels)
    frames = [
        run_bins(run, bin_steps, by, weighting).assign(curve=name, seed=run.seed, run=str(run.path))
        for run, name in zip(runs, names)
    ]
    table = pd.concat(frames, ignore_index=True)
    if table.empty:
        longest = max((int(run.progress["steps"].max()) for run in runs if len(run.progress)), default=0)
        raise ConfigError(
            f"--bin-steps {bin_steps} holds no whole bin of any run (the longest has {longest} env steps): "
            "give a smaller --bin-steps"
        )
    table["curve"] = pd.Categorical(table["curve"], categories=list(dict.fromkeys(names)), ordered=True)
    return table


def across_seeds(table: pd.DataFrame, keys: Sequence[str], value: str = "r") -> pd.DataFrame:
    """Mean, standard error and count over runs of `value` per `keys`, kept where every run of the curve has a value."""
    runs_per_curve = table.groupby("curve", observed=True)["run"].nunique().rename("runs")
    extra = {"bytes": ("bytes", "mean")} if "bytes" in table else {}
    stats = (
        table.groupby(list(keys), observed=True)
        .agg(mean=(value, "mean"), se=(value, "sem"), n=(value, "size"), t=("t", "mean"), **extra)
        .reset_index()
    )
    stats = stats.join(runs_per_curve, on="curve")
    return stats[stats["n"] == stats["runs"]].drop(columns="runs").reset_index(drop=True)


def curves(
    runs: Sequence[Run], bin_steps: int, labels: Sequence[str] | None = None, weighting: str = "task"
) -> pd.DataFrame:
    """One row per (curve, bin): mean return over seeds, its standard error, seeds, mean wall time."""
    return across_seeds(seed_table(runs, bin_steps, labels, weighting=weighting), ["curve", "bin"])


def learner_curves(runs: Sequence[Run], bin_steps: int, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (curve, learner, bin): each learner's return, averaged over seeds."""
    return across_seeds(seed_table(runs, bin_steps, labels, by=["learner"]), ["curve", "learner", "bin"])


def learner_scores(run: Run, last: int = 10) -> pd.Series:
    """Each learner's mean return over its last `last` finished episodes (as progress.csv's score)."""
    episodes = run.episodes.sort_values("steps", kind="stable")
    return episodes.groupby("learner")["r"].apply(lambda r: r.tail(last).mean())


def disagreement(runs: Sequence[Run], labels: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (curve, progress.csv step): mean disagreement over seeds and its standard error."""
    names = curve_labels(runs, labels)
    frames = [
        r.progress[["steps", "time", "disagreement"]]
        .assign(curve=n, run=str(r.path), bytes=bytes_at(r, r.progress["steps"]))
        .rename(columns={"time": "t"})
        for r, n in zip(runs, names)
    ]
    table = pd.concat(frames, ignore_index=True).dropna(subset=["disagreement"])
    table["curve"] = pd.Categorical(table["curve"], categories=list(dict.fromkeys(names)), ordered=True)
    return across_seeds(table, ["curve", "steps"], value="disagreement")


# --- the summary table ---------------------------------------------------------------------------


def steps_to_threshold(bins: pd.DataFrame, threshold: float) -> pd.Series:
    """Per run, the first bin end whose mean return reaches `threshold` (NaN if none does)."""
    reached = bins[bins["r"] >= threshold]
    first = reached.groupby("run")["bin"].min()
    return first.reindex(bins["run"].unique())


def default_checkpoints(last_bins: pd.Series, bin_steps: int) -> list[int]:
    """A quarter, half and three quarters of the shortest curve, on bin ends."""
    shortest = int(last_bins.min())
    points = {int(bin_end(shortest * q // 4, bin_steps)) for q in (1, 2, 3)}
    return sorted(p for p in points if 0 < p < shortest)


def summary(
    runs: Sequence[Run],
    bin_steps: int,
    threshold: float = -100.0,
    at: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    weighting: str = "task",
) -> pd.DataFrame:
    """One row per curve: seeds, steps covered, final return, return at `at` steps, steps to `threshold`.

    Every figure is a mean over the curve's seeds with its standard error (`*_se`); the final
    return also with a bootstrap confidence interval over seeds (`final_ci_low`, `final_ci_high`).
    """
    bins = seed_table(runs, bin_steps, labels, weighting=weighting)
    stats = across_seeds(bins, ["curve", "bin"])
    last = stats.groupby("curve", observed=True)["bin"].max()
    at = sorted(set(at)) if at is not None else default_checkpoints(last, bin_steps)
    rows = stats.groupby("curve", observed=True).agg(seeds=("n", "max"), steps=("bin", "max"))
    final = stats.loc[stats.groupby("curve", observed=True)["bin"].idxmax()].set_index("curve")
    rows["final"], rows["final_se"] = final["mean"], final["se"]
    last_bins = bins.join(last.rename("last"), on="curve")
    per_seed = last_bins[last_bins["bin"] == last_bins["last"]].groupby("curve", observed=True)["r"]
    rows["final_ci_low"], rows["final_ci_high"] = zip(
        *(bootstrap_interval(per_seed.get_group(c).to_numpy()) for c in rows.index)
    )
    for point in at:
        here = stats[stats["bin"] == bin_end(point, bin_steps)].set_index("curve")
        rows[f"return@{human_steps(point)}"], rows[f"return@{human_steps(point)}_se"] = here["mean"], here["se"]
    first = steps_to_threshold(bins, threshold).rename("first").to_frame().join(bins.groupby("run")["curve"].first())
    reach = first.groupby("curve", observed=True)["first"].agg(["mean", "sem", "count", "size"])
    name = f"steps_to_{threshold:g}"
    complete = reach["count"] == reach["size"]
    rows[name] = reach["mean"].where(complete)
    rows[f"{name}_se"] = reach["sem"].where(complete)
    rows["reached"] = reach["count"].astype(str) + "/" + reach["size"].astype(str)
    sent = pd.DataFrame(
        {"curve": curve_labels(runs, labels), "mb": [bytes_at(r, [r.progress["steps"].max()])[0] / 1e6 for r in runs]}
    ).groupby("curve", sort=False)["mb"]
    rows["mb_sent"], rows["mb_sent_se"] = sent.mean(), sent.sem()
    return rows.reset_index()


def bootstrap_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one per seed); NaN for fewer than two.

    Resampled with a fixed generator, so a table is the same every time it is made. With 3 to 5
    seeds the interval is rough (it cannot be wider than the seeds' range); it is shown beside the
    standard error, not instead of it.
    """
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    from scipy import stats

    result = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def human_steps(steps: float) -> str:
    """2000000 -> 2M, 506667 -> 507k, 1286667 -> 1.29M: three significant digits at most."""
    if steps >= 1e6:
        return f"{steps / 1e6:.3g}M"
    return f"{steps / 1e3:.3g}k" if steps >= 1e3 else f"{steps:.3g}"


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The summary with `mean ± se` strings, for people."""
    out = pd.DataFrame(
        {"curve": table["curve"].astype(str), "seeds": table["seeds"], "steps": table["steps"].map(human_steps)}
    )
    for column in [c for c in table.columns if c in ("final", "mb_sent") or c.startswith(("return@", "steps_to_"))]:
        if column.endswith("_se"):
            continue
        is_steps = column.startswith("steps_to_")
        header = f"steps to {column.removeprefix('steps_to_')}" if is_steps else column
        header = "MB sent per learner" if column == "mb_sent" else header
        show = "mb" if column == "mb_sent" else is_steps
        out[header] = [_pm(m, s, show) for m, s in zip(table[column], table[f"{column}_se"])]
        if column == "final" and "final_ci_low" in table:
            out[f"final {CONFIDENCE:.0%} CI"] = [
                _interval(lo, hi) for lo, hi in zip(table["final_ci_low"], table["final_ci_high"])
            ]
        if is_steps:
            out["reached"] = table["reached"]
    return out


def _interval(low: float, high: float) -> str:
    return "-" if pd.isna(low) else f"[{low:.1f}, {high:.1f}]"


def _pm(mean: float, se: float, steps: bool | str) -> str:
    """`mean ± se`: as step counts, as megabytes (`"mb"`, three significant digits) or as returns."""
    if pd.isna(mean):
        return "-"
    show = (lambda v: f"{v:.3g}") if steps == "mb" else human_steps if steps else (lambda v: f"{v:.1f}")
    return show(mean) if pd.isna(se) or math.isinf(se) else f"{show(mean)} ± {show(se)}"


def markdown(table: pd.DataFrame) -> str:
    """The summary as a Markdown table."""
    text = readable(table).astype(str)
    lines = ["| " + " | ".join(text.columns) + " |", "|" + "---|" * len(text.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)
