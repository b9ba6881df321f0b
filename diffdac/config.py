"""The options of a training run: one typed dataclass, validated once at the edge.

RunOptions holds what every run has; each method declares its own options beside its code
(`Method.Options`). TrainConfig is both in one flat dataclass, so the command line, config files
and config.json know every option, and a method's options are refused with any other method.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffdac import files
from diffdac.errors import ConfigError, ResumeError
from diffdac.network.methods import METHODS, method_class, option_owners
from diffdac.options import flag as _flag
from diffdac.options import has_type as _has_type
from diffdac.options import option as opt
from diffdac.options import type_name as _type_name
from envs import MASS_SCALINGS, TASK_SEEDINGS
from topologies.names import TOPOLOGY_NAMES

NORMALIZE_CHOICES = ("obs", "reward")
DEVICES = ("cpu", "cuda")
BACKENDS = ("gloo", "nccl")
TIME_LIMITS = ("bootstrap", "terminal")
MAX_SEED = 2**63 - 1  # seeds fold into 64-bit keys; torch generators take signed 64-bit values


@dataclass
class RunOptions:
    """The options every run has, whatever its method; TrainConfig adds the methods' own."""

    method: str = opt(
        "diff-a2c",
        "how learners share what they learn, one of diffdac.network.methods.METHODS (diffdac train --help lists them)",
    )
    env: str = opt(
        "diffdac/RandomExtremeAcrobot-v1", "gymnasium id of the task family; each learner gets its own variant"
    )
    num_learners: int = opt(8, "number of actor-learners in the graph")
    topology: str | None = opt("ring", f"named graph: {', '.join(TOPOLOGY_NAMES)}")
    adjacency: str | None = opt(
        None, "adjacency matrix as a literal '[[0,1],[1,0]]' or a .npy/.csv/.txt file; replaces --topology"
    )
    edge_prob: float | None = opt(None, "edge probability of the erdos-renyi topology")
    weights: str = opt(
        "uniform",
        "combination weights: uniform (own + neighbours over degree + 1, the original's) or metropolis (doubly stochastic)",
    )
    envs_per_learner: int = opt(4, "simulators per learner, each with the learner's task")
    steps_per_update: int = opt(5, "rollout length n of the n-step returns")
    combine_every: int = opt(1, "combine with the neighbours after every this many updates")
    total_steps: int = opt(600_000, "environment steps summed over all learners and simulators")
    lr: float = opt(7e-4, "RMSprop learning rate")
    rms_alpha: float = opt(0.99, "RMSprop smoothing constant")
    rms_eps: float = opt(1e-5, "RMSprop epsilon")
    gamma: float = opt(0.99, "discount factor")
    gae_lambda: float | None = opt(None, "GAE lambda; unset means plain n-step returns")
    entropy_coef: float = opt(
        0.0,
        "weight of the entropy bonus (rl-baselines3-zoo uses 0 for Acrobot A2C; 0.01 made our default job collapse to a uniform policy)",
    )
    value_coef: float = opt(0.5, "weight of the value loss")
    max_grad_norm: float = opt(0.5, "per-learner gradient-norm clip; 0 turns clipping off")
    time_limit: str = opt(
        "bootstrap",
        "an episode cut by its time limit: bootstrap (its return goes on as the value of its last observation) or terminal (an end like any other, as the original)",
        choices=TIME_LIMITS,
    )
    hidden: int = opt(64, "width of the two hidden layers of actor and critic")
    separate_init: bool = opt(False, "give every learner its own initial parameters instead of one shared draw")
    normalize: tuple[str, ...] | None = opt(
        None,
        "running normalisation per learner: obs, reward, obs,reward or none; unset means obs,reward for MuJoCo tasks and none otherwise",
        choices=NORMALIZE_CHOICES,
    )
    local_normalizer: bool = opt(
        False, "keep normaliser statistics local instead of diffusing them with the parameters"
    )
    seed: int = opt(0, "seed of tasks, initial parameters, actions and resets")
    task_seeding: str = opt(
        "keyed",
        "how learner r's task follows from the seed: keyed (a hash of seed and r; seeds share no task) or original (seed + 2r, the original's)",
        choices=TASK_SEEDINGS,
    )
    mass_scaling: str = opt(
        "body-mass",
        "MuJoCo mass variants: body-mass (scale body masses only, inertias unchanged, as the original) or mass-and-inertia (both, a denser body of the same shape)",
        choices=MASS_SCALINGS,
    )
    log_dir: str | None = opt(None, "run directory; default runs/<env>-<topology>-s<seed>-<time>")
    overwrite: bool = opt(False, "replace a run directory that already holds a run")
    log_interval: int = opt(20_000, "environment steps between rows of progress.csv")
    save_every: int = opt(100_000, "environment steps between checkpoints (one is always saved at the end)")
    keep_checkpoints: int = opt(3, "how many of the newest checkpoints to keep")
    resume: bool = opt(
        False, "continue the run in --log-dir from its last checkpoint, with the options in its config.json"
    )
    threads: int = opt(1, "torch CPU threads per process; the numbers are reproducible for a fixed count")
    sim_threads: int = opt(
        1, "threads that step a gymnasium task batch (MuJoCo releases the GIL); the numbers do not depend on it"
    )
    sim_processes: int = opt(
        1,
        "processes that step a gymnasium task batch, this one and N-1 workers (a step's Python runs in parallel too, "
        "unlike threads); the numbers do not depend on it",
    )
    device: str = opt("cpu", "torch device of the population: cpu or cuda")
    progress: bool = opt(
        True, "show a progress bar on a terminal, or a status line per log interval when stdout is not one"
    )
    tensorboard: str | None = opt(
        None,
        "also write TensorBoard event files into this directory: progress.csv's scalars, each learner's returns, "
        "the graph (the [tensorboard] extra)",
    )
    backend: str | None = opt(
        None, "torch.distributed backend under torchrun: gloo or nccl; unset means nccl with --device cuda, else gloo"
    )
    dist_timeout: float = opt(120.0, "seconds a rank waits for a peer before it stops with an error naming that peer")

    def validate(self) -> "TrainConfig":
        """Refuse bad input with a ConfigError naming the option and the fix."""
        self._check_types()
        check_bounds(self)
        for name in (
            "num_learners",
            "envs_per_learner",
            "steps_per_update",
            "combine_every",
            "total_steps",
            "hidden",
            "log_interval",
            "threads",
            "sim_threads",
            "sim_processes",
            "save_every",
            "keep_checkpoints",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"--{_flag(name)} must be a positive integer, got {value!r}")
        if self.sim_threads > 1 and self.sim_processes > 1:
            raise ConfigError("--sim-threads and --sim-processes both ask for more than 1: give one of them")
        for name in ("lr", "rms_alpha", "rms_eps", "gamma", "entropy_coef", "value_coef", "max_grad_norm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"--{_flag(name)} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.rms_alpha < 1:
            raise ConfigError(f"--rms-alpha must lie in [0, 1) (RMSprop's smoothing constant), got {self.rms_alpha}")
        if self.rms_eps <= 0:
            raise ConfigError(f"--rms-eps must be > 0 (it keeps RMSprop from dividing by zero), got {self.rms_eps}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"--seed must be an integer in [0, 2**63 - 1], got {self.seed}")
        if self.total_steps < self.steps_per_update_all:
            raise ConfigError(
                f"--total-steps {self.total_steps} is less than one update of {self.steps_per_update_all} env steps "
                f"({self.num_learners} learners x {self.envs_per_learner} simulators x {self.steps_per_update} steps): "
                f"give --total-steps {self.steps_per_update_all} or more"
            )
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"--gamma must lie in [0, 1], got {self.gamma}")
        if self.gae_lambda is not None and not 0 <= self.gae_lambda <= 1:
            raise ConfigError(f"--gae-lambda must lie in [0, 1], got {self.gae_lambda}")
        unknown = [n for n in self.normalize or () if n not in NORMALIZE_CHOICES + ("none",)]
        if unknown:
            raise ConfigError(f"--normalize takes obs, reward or obs,reward, got {','.join(unknown)!r}")
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices and isinstance(value, str) and value not in choices:
                raise ConfigError(f"--{_flag(f.name)} takes {' or '.join(choices)}, got {value!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ConfigError(f"--backend must be gloo or nccl, got {self.backend!r}")
        if self.backend == "nccl" and self.device != "cuda":
            raise ConfigError("--backend nccl moves CUDA tensors only: add --device cuda or use --backend gloo")
        if (
            not isinstance(self.dist_timeout, (int, float))
            or not math.isfinite(self.dist_timeout)
            or self.dist_timeout <= 0
        ):
            raise ConfigError(f"--dist-timeout must be a positive number of seconds, got {self.dist_timeout!r}")
        if self.topology is None and self.adjacency is None:
            raise ConfigError("give a graph: --topology NAME or --adjacency MATRIX_OR_FILE")
        self._validate_method()
        if self.resume and not self.log_dir:
            raise ConfigError("--resume continues a run in place: give its directory with --log-dir DIR")
        return self

    @property
    def steps_per_update_all(self) -> int:
        """Env steps one update makes, summed over all learners and simulators."""
        return self.num_learners * self.envs_per_learner * self.steps_per_update

    @property
    def steps_to_run(self) -> int:
        """Env steps the run makes: whole updates, as many as fit in --total-steps."""
        return self.total_steps // self.steps_per_update_all * self.steps_per_update_all

    def _check_types(self) -> None:
        """Every option has its annotated type: config.json and config files are untrusted, and so is the Python API."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            if not _has_type(value, hint):
                raise ConfigError(f"--{_flag(f.name)} must be {_type_name(hint)}, got {value!r}")

    def _validate_method(self) -> None:
        """The method exists, its options are sound, and no other method's option is set."""
        method = method_class(self.method)
        for name, owner in option_owners().items():
            f = next(f for f in dataclasses.fields(owner.Options) if f.name == name)
            if owner is not method and getattr(self, name) != f.default:
                raise ConfigError(
                    f"--{_flag(name)} is an option of --method {owner.name}: use it with --method {owner.name}, "
                    f"not {self.method}"
                )
        method.Options.of(self).check(self)

    def differences(self, other: "TrainConfig") -> list[str]:
        """Options (as flags) whose values differ, leaving out those a resumed run may change."""
        return [
            f"--{_flag(f.name)} {getattr(self, f.name)!r} (the run has {getattr(other, f.name)!r})"
            for f in dataclasses.fields(self)
            if f.name not in RESUME_FREE and getattr(self, f.name) != getattr(other, f.name)
        ]

    @classmethod
    def from_run(cls, run_dir: str | Path) -> TrainConfig:
        """The options a run was made with, read from its config.json."""
        values = read_run_config(Path(run_dir))
        check_stored_matrix(values, Path(run_dir))
        return cls.from_dict(run_options(values))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from config.json (extra keys such as version are ignored; lists become tuples)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """Plain values for config.json."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


MAX_COUNT = 2**31 - 1  # learners: beyond this no machine holds the run
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: a smaller --rms-eps vanishes in the update
MAX_DIST_TIMEOUT = 10**7  # seconds (about 4 months): longer ones overflow torch.distributed's clocks


def check_bounds(config: TrainConfig) -> None:
    """Values that pass their type but no machine or library can take: NaN and infinite probabilities,
    learners past 2**31, timeouts past torch's clocks. Checked first, so the message names the option at fault."""
    if isinstance(config.num_learners, int) and config.num_learners > MAX_COUNT:
        raise ConfigError(
            f"--num-learners {config.num_learners} is more learners than any machine can hold: give at most {MAX_COUNT}"
        )
    if config.edge_prob is not None and not (math.isfinite(config.edge_prob) and 0 <= config.edge_prob <= 1):
        raise ConfigError(f"--edge-prob is a probability in [0, 1], got {config.edge_prob!r}")
    if isinstance(config.rms_eps, (int, float)) and 0 < config.rms_eps < FLOAT32_TINY:
        raise ConfigError(
            f"--rms-eps {config.rms_eps!r} is 0 in float32, the parameters' type (RMSprop would divide by zero): "
            f"give at least {FLOAT32_TINY:.3g}"
        )
    if isinstance(config.dist_timeout, (int, float)) and config.dist_timeout > MAX_DIST_TIMEOUT:
        raise ConfigError(f"--dist-timeout must be at most {MAX_DIST_TIMEOUT} seconds, got {config.dist_timeout!r}")


# Options added after runs were already being made, with the value those older runs had in effect
# (a config.json written since holds every option, so a missing key means an older run).
BEFORE_THE_OPTION = {"mass_scaling": "mass-and-inertia"}
# What a config file may not set: where this run goes and whether it replaces or continues another.
NOT_FROM_FILES = frozenset({"log_dir", "overwrite", "resume"})


def run_options(values: dict[str, Any]) -> dict[str, Any]:
    """A run's config.json values, with what older runs had in effect for options they predate."""
    return {**BEFORE_THE_OPTION, **values}


def check_stored_matrix(values: dict[str, Any], run_dir: Path) -> None:
    """A run keeps its adjacency matrix itself (a literal in config.json): a file name there is never read."""
    adjacency = values.get("adjacency")
    if adjacency is not None and not (isinstance(adjacency, str) and adjacency.strip().startswith("[")):
        raise ResumeError(
            f"{run_dir / 'config.json'} gives adjacency as a file name, not the matrix a run keeps there: "
            "diffdac does not read files a run directory names; put the matrix literal back"
        )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options a --config file gives: TOML (option names with _ or -), or a run's config.json.

    A run's own config.json repeats that run (with, say, another --seed on the command line); its
    log_dir, version and world size are not options of the new run, so they are left out.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file: give a .toml file or a run's config.json")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read --config {path} ({getattr(err, 'strerror', None) or err})") from None
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise ConfigError(f"--config {path} is not valid JSON") from None
        if not isinstance(values, dict):
            raise ConfigError(f"--config {path} must hold a JSON object of options, like a run's config.json")
        values = {k: v for k, v in run_options(values).items() if k not in RUN_METADATA}
    else:
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"--config {path} is not valid TOML ({err})") from None
    return _file_options(path, values)


def _file_options(path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Check a config file's keys against TrainConfig's fields; lists and comma strings become tuples."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean {_flag(close[0])}?)" if close else ""
            raise ConfigError(f"--config {path}: unknown option {key!r}{hint}")
        if name in NOT_FROM_FILES:
            refuse_run_place(path, key)
            continue
        if isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, str) and str(fields[name].type).startswith("tuple"):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        out[name] = value
    return out


def refuse_run_place(path: Path, key: str) -> None:
    """A TOML file cannot say where a run goes or whether it replaces or continues one: refused, not ignored.

    (A run's config.json repeats its log_dir; as --config it is left out, as read_config_file says.)"""
    if path.suffix.lower() != ".json":
        raise ConfigError(
            f"--config {path}: {key!r} cannot come from a config file (it says where a run goes or what it replaces): "
            f"give --{_flag(key.replace('-', '_'))} on the command line"
        )


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run directory as a dict, or a ResumeError saying why it is not one."""
    path = Path(run_dir) / "config.json"
    if not path.exists() and not path.is_symlink():
        raise ResumeError(f"{run_dir} is not a diffdac run (no config.json): give the directory of an existing run")
    try:
        values = json.loads(files.read_text(path, files.MAX_SMALL))
    except files.RunFileError as err:
        raise ResumeError(str(err)) from None
    except OSError as err:
        raise ResumeError(f"cannot read {path}: {files.reason(err)}") from None
    except (json.JSONDecodeError, RecursionError):
        raise ResumeError(f"{path} is not valid JSON: it is not a diffdac run's config.json") from None
    if not isinstance(values, dict) or not {"env", "num_learners"} <= set(values):
        raise ResumeError(
            f"{path} is not a diffdac run's config.json: expected a JSON object with env, num_learners, ..."
        )
    return values


# Options that control how a run is carried out, not what it computes: free to change on --resume.
RESUME_FREE = frozenset(
    {
        "log_dir",
        "overwrite",
        "resume",
        "progress",
        "dist_timeout",
        "save_every",
        "keep_checkpoints",
        "tensorboard",
        "sim_threads",
        "sim_processes",
    }
)
# What config.json adds to the options.
RUN_METADATA = frozenset({"version", "world_size", "adjacency_file", "provenance"})
# Everything that says where, how or with which seed a run was made rather than what it learns:
# runs that differ only here are seeds of one curve.
NOT_WHAT_IS_LEARNED = RESUME_FREE | RUN_METADATA | {"seed", "log_interval", "backend"}


def _method_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    """Every method's options as TrainConfig fields, in the registry's order."""
    out = []
    for method in METHODS.values():
        hints = typing.get_type_hints(method.Options)
        for f in dataclasses.fields(method.Options):
            out.append((f.name, hints[f.name], dataclasses.field(default=f.default, metadata=f.metadata)))
    return out


TrainConfig = dataclasses.make_dataclass("TrainConfig", _method_fields(), bases=(RunOptions,))
TrainConfig.__module__ = __name__
TrainConfig.__doc__ = """Every option of `diffdac train`, the methods' own included; `diffdac.train(config)` runs it."""
