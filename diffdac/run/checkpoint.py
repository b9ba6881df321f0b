"""Checkpoints in DIR/checkpoints: one file per rank, then a manifest that makes the set valid.

A checkpoint at env step S is `stepS.rankRRR.pt` from every rank plus `stepS.json`, which rank 0
writes only after every rank has written its file (a barrier in between). A kill at any moment
therefore leaves either a complete checkpoint or files without a manifest, which are ignored.
Every file is written to a temporary name and renamed, so none is ever half written.

Run directories travel between people, so a checkpoint holds tensors and plain values only and
is read with `torch.load(weights_only=True)`: a planted file can fail to load, never run code.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffdac import files
from diffdac.errors import CheckpointError, ConfigError, TrainingError

MANIFEST = re.compile(r"step(\d{12})\.json$")
RANK_FILE = re.compile(r"step(\d{12})\.rank(\d{3})\.pt(\.tmp)?$")
STATE_KEYS = ("learners", "loop")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _stem(steps: int) -> str:
    return f"step{steps:012d}"


def rank_path(run_dir: Path, steps: int, rank: int) -> Path:
    return checkpoint_dir(run_dir) / f"{_stem(steps)}.rank{rank:03d}.pt"


def manifest_path(run_dir: Path, steps: int) -> Path:
    return checkpoint_dir(run_dir) / f"{_stem(steps)}.json"


def is_checkpoint_file(name: str) -> bool:
    """Whether a file name in checkpoints/ is one diffdac writes (a rank file, a manifest, or their temporaries)."""
    return bool(RANK_FILE.fullmatch(name) or MANIFEST.fullmatch(name.removesuffix(".tmp")))


@dataclass(frozen=True)
class Manifest:
    """What rank 0 records once every rank's file of a checkpoint is on disk."""

    steps: int
    updates: int
    world_size: int
    complete: bool  # the run's last checkpoint: training reached --total-steps

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        """A manifest file, checked field by field: it comes from a run directory, which anyone may have edited."""
        try:
            values = json.loads(files.read_text(path, files.MAX_SMALL))
        except (OSError, files.RunFileError, json.JSONDecodeError, RecursionError) as err:
            raise CheckpointError(f"{path} is not a readable checkpoint manifest ({_reason(err)})") from None
        types = {"steps": int, "updates": int, "world_size": int, "complete": bool}
        if not isinstance(values, dict) or set(values) != set(types):
            raise CheckpointError(f"{path} is not a checkpoint manifest: expected the keys {', '.join(types)}")
        for key, kind in types.items():
            if type(values[key]) is not kind or (kind is int and values[key] < (1 if key == "world_size" else 0)):
                raise CheckpointError(f"{path} has an invalid {key!r}: {values[key]!r}")
        manifest = cls(**values)
        if manifest_path(path.parent.parent, manifest.steps).name != path.name:
            raise CheckpointError(f"{path} records step {manifest.steps}, not the step in its name")
        return manifest


def save_rank(run_dir: Path, steps: int, rank: int, state: dict[str, Any]) -> None:
    """This rank's part of the checkpoint at `steps`, written atomically.

    A write that fails (no space, no permission) leaves no temporary file and names the cause;
    the checkpoints written before it stay valid.
    """
    path = rank_path(run_dir, steps, rank)
    try:
        files.make_dir(path.parent)
        with files.replacing_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, files.RunFileError) as err:
        raise CheckpointWriteError(f"rank {rank} could not write its checkpoint {path} ({_reason(err)})") from None
    except RuntimeError:  # torch's zip writer reports a failed write (a full disk, ulimit -f) without its cause
        raise CheckpointWriteError(
            f"rank {rank} could not write its checkpoint {path} (the write failed: is the disk full, "
            "or a file size limit (ulimit -f) lower than a checkpoint?)"
        ) from None


class CheckpointWriteError(TrainingError):
    """A checkpoint could not be written: the run stops, keeping the checkpoints it had."""


def commit(run_dir: Path, manifest: Manifest, keep: int) -> None:
    """Rank 0, after the barrier: declare the checkpoint valid, then drop manifests beyond the last `keep`.

    Manifests past this step come from before a resume that went back further (an unreadable
    newer checkpoint was skipped); they describe a future this run no longer has, so they go too.
    """
    path = manifest_path(run_dir, manifest.steps)
    try:
        files.write_text(path, json.dumps(manifest.__dict__) + "\n")
    except (OSError, files.RunFileError) as err:
        raise CheckpointWriteError(f"could not write the checkpoint manifest {path} ({_reason(err)})") from None
    found = manifests(run_dir)
    for old in [m for m in found if m.steps <= manifest.steps][:-keep] + [m for m in found if m.steps > manifest.steps]:
        files.remove(manifest_path(run_dir, old.steps))


def prune_rank(run_dir: Path, rank: int, keep: int, current: int) -> None:
    """Each rank keeps its own files of the newest `keep` checkpoints up to step `current`.

    Done per rank from its own files, because on several machines only rank 0 sees the
    manifests. Files past `current` are left over from before a resume and are dropped too.
    """
    paths = sorted(p for p in checkpoint_dir(run_dir).glob(f"step*.rank{rank:03d}.pt") if RANK_FILE.fullmatch(p.name))
    steps = [int(RANK_FILE.fullmatch(p.name).group(1)) for p in paths]
    kept = sorted(s for s in steps if s <= current)[-keep:]
    for path, step in zip(paths, steps):
        if step not in kept:
            files.remove(path)
    for stray in checkpoint_dir(run_dir).glob(f"step*.rank{rank:03d}.pt.tmp"):  # a save cut short by a kill or Ctrl-C
        files.remove(stray)


def scan(run_dir: Path) -> tuple[list[Manifest], list[str]]:
    """Valid checkpoint manifests of a run, oldest first, and one line for each manifest that is not valid."""
    found, problems = [], []
    for path in sorted(checkpoint_dir(run_dir).glob("step*.json")):
        if not MANIFEST.fullmatch(path.name):
            continue
        try:
            found.append(Manifest.read(path))
        except CheckpointError as err:
            problems.append(str(err))
    return sorted(found, key=lambda m: m.steps), problems


def manifests(run_dir: Path) -> list[Manifest]:
    """Valid checkpoints of a run, oldest first (unreadable manifests are left out)."""
    return scan(run_dir)[0]


def latest(run_dir: Path) -> Manifest | None:
    """The newest valid checkpoint, or None before the first one."""
    found = manifests(run_dir)
    return found[-1] if found else None


def load_rank(run_dir: Path, manifest: Manifest, rank: int, device: torch.device | str = "cpu") -> dict[str, Any]:
    """One rank's checkpoint file: tensors and plain values only, never unpickled objects.

    Any file that is missing, truncated, not a torch file, or holds anything else raises a
    CheckpointError naming the file.
    """
    path = rank_path(run_dir, manifest.steps, rank)
    if not path.exists() and not path.is_symlink():
        raise CheckpointError(f"checkpoint at step {manifest.steps} has no file for rank {rank} ({path})")
    try:
        with files.open_plain(path) as file:
            state = torch.load(file, map_location=device, weights_only=True)
    except files.RunFileError as err:
        raise CheckpointError(str(err)) from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values; diffdac does not unpickle them, "
            "since that could run code"
        ) from None
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        zipfile.BadZipFile,
        KeyError,
        TypeError,
        AttributeError,
        MemoryError,  # what weights_only still lets a planted file ask for: bytearray(2**62), unknown codecs, ...
        OverflowError,
        LookupError,
        UnicodeError,
        RecursionError,
    ) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {_reason(err)})") from None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in STATE_KEYS):
        raise CheckpointError(f"{path} is not a diffdac checkpoint: expected a dict with {' and '.join(STATE_KEYS)}")
    return state


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
    raise ConfigError(
        f"no checkpoint {which!r} in {checkpoint_dir(run_dir)}: choose one of {', '.join(str(m.steps) for m in found)}"
    )


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _reason(err: BaseException) -> str:
    """The first line of an error, without the traceback: what a user reads in a one-line message."""
    text = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
    return text or type(err).__name__


def gather(run_dir: Path, key: str = "params", manifest: Manifest | None = None) -> torch.Tensor:
    """One learner state of every learner, in learner order, from all ranks' files of a checkpoint.

    `key` names an entry of the learners' state, dotted for nested ones (`obs_norm.mean`); the
    newest checkpoint unless `manifest` is given. Files that do not hold what a diffdac
    checkpoint holds raise a CheckpointError.
    """
    manifest = manifest or resolve(run_dir, None)
    rows: dict[int, torch.Tensor] = {}
    for rank in range(manifest.world_size):
        path = rank_path(run_dir, manifest.steps, rank)
        state = load_rank(run_dir, manifest, rank)["learners"]
        try:
            value = state
            for part in key.split("."):
                value = value[part]
            ids = state["learner_ids"].tolist()
            for i, learner in enumerate(ids):
                rows[int(learner)] = value[i]
        except (KeyError, TypeError, IndexError, AttributeError):
            raise CheckpointError(f"{path} has no {key!r} for its learners: it is not a diffdac checkpoint") from None
    try:
        return torch.stack([rows[k] for k in sorted(rows)])
    except RuntimeError:
        raise CheckpointError(
            f"the files of the checkpoint at step {manifest.steps} disagree on the shape of {key!r}"
        ) from None
