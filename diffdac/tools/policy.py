"""A trained policy on its own: `load_policy(RUN)` gives a torch.nn.Module from observations to actions,
and `diffdac export RUN --out policy.pt2` saves it with torch.export (TorchScript is deprecated in
torch 2.13), which loads with `torch.export.load(path).module()` and torch alone (no diffdac, no
gymnasium) wherever the policy is wanted. The exported program takes a batch `[B, D]`.

The module holds one learner's actor (or the network average of all learners' actors) and, when the
run normalised observations, that learner's (or the averaged) statistics, so it takes raw
observations as the environment gives them. It acts greedily, as `diffdac eval` does: the most
likely action of a Discrete space, the mean action of a Box clipped to the space.
"""

import argparse
import io
from pathlib import Path

import gymnasium
import numpy as np
import torch

from diffdac import files
from diffdac.run import checkpoint
from diffdac.config import TrainConfig
from diffdac.errors import ConfigError
from diffdac.learners.normalize import CLIP, EPS
from diffdac.learners.population import Population

AVERAGE = "average"


class Policy(torch.nn.Module):
    """Observations `[B, D]` (or `[D]`) -> greedy actions `[B]` / `[B, A]` (or one action)."""

    continuous: bool
    normalized: bool

    def __init__(
        self,
        layers: list[tuple[torch.Tensor, torch.Tensor]],
        obs_mean: torch.Tensor | None,
        obs_var: torch.Tensor | None,
        low: torch.Tensor | None,
        high: torch.Tensor | None,
    ) -> None:
        super().__init__()
        (w0, b0), (w1, b1), (w2, b2) = layers  # weights [in, out], biases [1, out], as the population stores them
        # Two copies of each: the products then take the kernel (and the rounding) of the trainer's blocks.
        for name, tensor in (("w0", w0), ("b0", b0), ("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
            self.register_buffer(name, tensor.detach().float()[None].repeat(2, 1, 1))
        self.normalized = obs_mean is not None
        self.continuous = low is not None
        dim, out = w0.shape[0], w2.shape[1]
        mean = obs_mean if obs_mean is not None else torch.zeros(dim)
        var = obs_var if obs_var is not None else torch.ones(dim)
        # every buffer has storage of its own: an exported program saves whole tensors
        self.register_buffer("mean", mean.double().clone().reshape(1, 1, dim))
        self.register_buffer("std", torch.sqrt(var.double() + EPS).reshape(1, 1, dim))
        self.register_buffer("low", (low if low is not None else torch.zeros(out)).float().clone())
        self.register_buffer("high", (high if high is not None else torch.zeros(out)).float().clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        single = obs.dim() == 1
        x = (obs.reshape(1, -1, obs.shape[-1]) if not single else obs.reshape(1, 1, -1)).float().repeat(2, 1, 1)
        if self.normalized:
            x = ((x.double() - self.mean) / self.std).clamp(-CLIP, CLIP).float()
        x = torch.tanh(torch.baddbmm(self.b0, x, self.w0))
        x = torch.tanh(torch.baddbmm(self.b1, x, self.w1))
        x = torch.baddbmm(self.b2, x, self.w2)[0]
        actions = torch.maximum(torch.minimum(x, self.high), self.low) if self.continuous else x.argmax(-1)
        return actions[0] if single else actions


def load_policy(run_dir: str | Path, learner: int | str = AVERAGE, checkpoint_at: str | None = None) -> Policy:
    """Learner `learner`'s policy, or the network average's ("average"), from a run's newest (or given) checkpoint."""
    from diffdac.run.prepare import make_tasks

    run_dir = Path(run_dir)
    config = TrainConfig.from_run(run_dir).validate()
    manifest = checkpoint.resolve(run_dir, checkpoint_at)
    params = checkpoint.gather(run_dir, "params", manifest)
    normalized = "obs" in (config.normalize or ())
    stats = (
        [checkpoint.gather(run_dir, f"obs_norm.{k}", manifest) for k in ("mean", "var")] if normalized else [None, None]
    )
    rows = _pick(learner, len(params))
    pick = (lambda t: t[rows].mean(0)) if isinstance(rows, list) else (lambda t: t[rows])
    tasks = make_tasks(config, np.arange(1), envs_per_learner=1)
    space = tasks.action_space
    tasks.close()
    check_width(config, params, tasks.observation_space, space)
    pop = Population(tasks.observation_space, space, np.arange(1), config.hidden)
    views = pop._param_views(pick(params)[None])
    layers = [(views[f"actor.{i}.weight"][0], views[f"actor.{i}.bias"][0]) for i in range(3)]
    low, high = (torch.as_tensor(space.low), torch.as_tensor(space.high)) if pop.continuous else (None, None)
    mean, var = (pick(stats[0]), pick(stats[1])) if normalized else (None, None)
    return Policy(layers, mean, var, low, high).eval()


def check_width(config: TrainConfig, params: torch.Tensor, obs_space, action_space) -> None:
    """The checkpoint must hold the parameters of the network the run's options describe (an edited env or hidden)."""
    from diffdac.learners.population import _layout, action_dim

    act = action_space
    width = sum(
        p.numel
        for p in _layout(obs_space.shape[0], config.hidden, action_dim(act), isinstance(act, gymnasium.spaces.Box))
    )
    if params.dim() != 2 or params.shape[1] != width:
        raise ConfigError(
            f"the checkpoint does not match the run's options in config.json (env {config.env} and hidden {config.hidden} "
            f"make {width} parameters per learner, the checkpoint has {tuple(params.shape[1:])})"
        )


def _pick(learner: int | str, n: int) -> int | list[int]:
    if learner == AVERAGE:
        return list(range(n))
    try:
        k = int(learner)
    except ValueError:
        raise ConfigError(f"--learner takes a learner index or 'average', got {learner!r}") from None
    if not 0 <= k < n:
        raise ConfigError(f"--learner {k}: the run has learners 0..{n - 1}")
    return k


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by diffdac train")
    parser.add_argument(
        "--out", required=True, type=Path, help="file to write (.pt2): load it with torch.export.load(path).module()"
    )
    parser.add_argument(
        "--learner", default=AVERAGE, help="a learner's index, or average for the network average (default)"
    )
    parser.add_argument(
        "--checkpoint", default=None, help="env step count or file of a checkpoint (default: the newest)"
    )


def main(args: argparse.Namespace) -> int:
    """`diffdac export`: the policy as a torch.export program."""
    if args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a directory: give a file name such as {args.out / 'policy.pt'}")
    if not args.out.parent.is_dir():
        raise ConfigError(f"cannot write {args.out}: directory {args.out.parent} does not exist")
    policy = load_policy(args.run_dir, args.learner, args.checkpoint)
    example = torch.zeros(2, policy.w0.shape[1])
    program = torch.export.export(policy, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()  # in memory first: a full disk then fails in one plain write, not inside torch (SIGABRT)
    torch.export.save(program, buffer)
    try:
        files.write_bytes(args.out, buffer.getvalue())
    except OSError as err:
        raise ConfigError(f"cannot write {args.out} ({files.reason(err)})") from None
    who = "the network average" if args.learner == AVERAGE else f"learner {args.learner}"
    print(f"diffdac: wrote {args.out} (the policy of {who}; load it with torch.export.load(path).module())")
    return 0
