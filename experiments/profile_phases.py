"""Wall time per update of each phase of training, to find what bounds a set-up.

    python experiments/profile_phases.py 25 1                                   # the paper's setting
    python experiments/profile_phases.py 4 4 --env diffdac/RandomMassHopper-v5 --updates 300

One run of `diffdac train` on one torch thread, with the phases of the loop timed by wrapping
them: collect (and inside it the task batch's step and the policy's act), adapt and combine.
This is a profile, not a speed figure; speed is what `diffdac bench` reports, as a ratio to a
peer measured in the same run.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from diffdac import TrainConfig, train
from diffdac.learners.block import Learners
from diffdac.learners.population import Population
from envs import BatchedAcrobot, GymTaskBatch

PHASES = (
    ("collect", Learners, "collect"),
    ("  task batch step", BatchedAcrobot, "step"),
    ("  task batch step", GymTaskBatch, "step"),
    ("  policy act", Population, "act"),
    ("adapt", Learners, "adapt"),
    ("combine", Learners, "combine"),
)


@contextmanager
def timing(seconds: dict[str, float]) -> Iterator[None]:
    """Add each phase's wall time to `seconds` while the block runs; the methods are restored after."""
    originals = [(cls, name, getattr(cls, name)) for _, cls, name in PHASES]

    def wrap(label: str, method: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - start

        return timed

    for (label, cls, name), (_, _, method) in zip(PHASES, originals):
        setattr(cls, name, wrap(label, method))
    try:
        yield
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


def profile(learners: int, sims: int, env: str, updates: int) -> dict[str, float]:
    """Milliseconds per update of each phase, over `updates` updates of 5 steps."""
    seconds: dict[str, float] = collections.defaultdict(float)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp, timing(seconds):
            steps = updates * learners * sims * 5
            config = TrainConfig(
                env=env,
                num_learners=learners,
                envs_per_learner=sims,
                steps_per_update=5,
                total_steps=steps,
                log_dir=str(Path(tmp) / "run"),
                progress=False,
                log_interval=steps,
                save_every=steps,
            )
            train(config)
    finally:
        torch.set_num_threads(threads)
    labels = dict.fromkeys(label for label, _, _ in PHASES)
    return {label: 1e3 * seconds[label] / updates for label in labels if label in seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("learners", type=int)
    parser.add_argument("sims", type=int, help="simulators per learner")
    parser.add_argument("--env", default=TrainConfig.env, help="task family (default: train's default)")
    parser.add_argument("--updates", type=int, default=300, help="updates to time (default 300)")
    args = parser.parse_args(argv)
    for label, ms in profile(args.learners, args.sims, args.env, args.updates).items():
        print(f"{label:<20} {ms:8.3f} ms per update")


if __name__ == "__main__":
    main()
