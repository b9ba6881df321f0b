"""Settings every test worker shares, so the suite can run on all cores at once (pytest-xdist).

Each xdist worker is its own process: with one torch thread per worker (and per subprocess a test
starts) the workers do not fight over the cores, and the numbers stay those of one thread, which
is what a training run uses by default. Each test runs in its own temporary directory, so files a
run or a simulator writes into the working directory (default run directories, MUJOCO_LOG.TXT)
cannot collide between workers or land in the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads; inherited by every subprocess (torchrun ranks too)
os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Subprocesses (`python -m diffdac`) run outside the repository root below, so they import this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _in_own_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test in its own empty directory: nothing it writes by a relative path is shared."""
    monkeypatch.chdir(tmp_path)
