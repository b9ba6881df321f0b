"""Checkpoints in DIR/checkpoints: one file per rank, then a manifest that makes the set valid.

A checkpoint at env step S is `stepS.rankRRR.pt` from every rank plus `stepS.json`, which rank 0
writes only after every rank has written its file (a barrier in between). A kill at any moment
therefore leaves either a complete checkpoint or files without a manifest, which are ignored.
Every file is written to a temporary name and renamed, so none is ever half written.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffdac.errors import ConfigError

MANIFEST = re.compile(r"step(\d{12})\.json$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _stem(steps: int) -> str:
    return f"step{steps:012d}"


def rank_path(run_dir: Path, steps: int, rank: int) -> Path:
    return checkpoint_dir(run_dir) / f"{_stem(steps)}.rank{rank:03d}.pt"


def manifest_path(run_dir: Path, steps: int) -> Path:
    return checkpoint_dir(run_dir) / f"{_stem(steps)}.json"


@dataclass(frozen=True)
class Manifest:
    """What rank 0 records once every rank's file of a checkpoint is on disk."""

    steps: int
    updates: int
    world_size: int
    complete: bool  # the run's last checkpoint: training reached --total-steps

    def rank_paths(self, run_dir: Path) -> list[Path]:
        return [rank_path(run_dir, self.steps, r) for r in range(self.world_size)]


def save_rank(run_dir: Path, steps: int, rank: int, state: dict[str, Any]) -> None:
    """This rank's part of the checkpoint at `steps`, written atomically."""
    path = rank_path(run_dir, steps, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def commit(run_dir: Path, manifest: Manifest, keep: int) -> None:
    """Rank 0, after the barrier: declare the checkpoint valid, then drop manifests beyond the last `keep`."""
    path = manifest_path(run_dir, manifest.steps)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest.__dict__) + "\n")
    os.replace(tmp, path)
    for old in manifests(run_dir)[:-keep]:
        manifest_path(run_dir, old.steps).unlink(missing_ok=True)


def prune_rank(run_dir: Path, rank: int, keep: int, current: int) -> None:
    """Each rank keeps its own files of the newest `keep` checkpoints up to step `current`.

    Done per rank from its own files, because on several machines only rank 0 sees the
    manifests. Files past `current` are left over from before a resume and are dropped too.
    """
    paths = sorted(checkpoint_dir(run_dir).glob(f"step*.rank{rank:03d}.pt"))
    steps = [int(p.name[4:16]) for p in paths]
    kept = sorted(s for s in steps if s <= current)[-keep:]
    for path, step in zip(paths, steps):
        if step not in kept:
            path.unlink(missing_ok=True)
    for stray in checkpoint_dir(run_dir).glob(f"step*.rank{rank:03d}.pt.tmp"):  # a save cut short by a kill or Ctrl-C
        stray.unlink(missing_ok=True)


def manifests(run_dir: Path) -> list[Manifest]:
    """Valid checkpoints of a run, oldest first."""
    found = []
    for path in checkpoint_dir(run_dir).glob("step*.json"):
        if MANIFEST.fullmatch(path.name):
            found.append(Manifest(**json.loads(path.read_text())))
    return sorted(found, key=lambda m: m.steps)


def latest(run_dir: Path) -> Manifest | None:
    """The newest valid checkpoint, or None before the first one."""
    found = manifests(run_dir)
    return found[-1] if found else None


def load_rank(run_dir: Path, manifest: Manifest, rank: int, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = rank_path(run_dir, manifest.steps, rank)
    if not path.is_file():
        raise ConfigError(f"checkpoint at step {manifest.steps} has no file for rank {rank} ({path}): copy it here or resume from an older one")
    return torch.load(path, map_location=device, weights_only=False)


def resolve(run_dir: Path, which: str | None) -> Manifest:
    """The checkpoint `which` names (a step count, a file of it, or None for the newest)."""
    found = manifests(run_dir)
    if not found:
        raise ConfigError(f"{run_dir} has no checkpoint yet: train longer or lower --save-every")
    if which is None or which == "latest":
        return found[-1]
    match = re.search(r"step(\d{12})", which)
    steps = int(match.group(1)) if match else _int_or_none(which)
    for manifest in found:
        if manifest.steps == steps:
            return manifest
    raise ConfigError(f"no checkpoint {which!r} in {checkpoint_dir(run_dir)}: choose one of {', '.join(str(m.steps) for m in found)}")


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def gather(run_dir: Path, key: str = "params", manifest: Manifest | None = None) -> torch.Tensor:
    """One learner state of every learner, in learner order, from all ranks' files of a checkpoint.

    `key` names an entry of the learners' state, dotted for nested ones (`obs_norm.mean`); the
    newest checkpoint unless `manifest` is given.
    """
    manifest = manifest or resolve(run_dir, None)
    rows: dict[int, torch.Tensor] = {}
    for rank in range(manifest.world_size):
        state = load_rank(run_dir, manifest, rank)["learners"]
        value = state
        for part in key.split("."):
            value = value[part]
        for i, learner in enumerate(state["learner_ids"].tolist()):
            rows[learner] = value[i]
    return torch.stack([rows[k] for k in sorted(rows)])
