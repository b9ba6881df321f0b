"""What a run was made with, kept in config.json: library versions, the command line, the git commit.

A result is reproducible only with the same code and libraries; `diffdac eval` and `--resume`
warn when this machine's differ from the run's.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

VERSION = "0.1.0"  # the one place it is written: setup.cfg and diffdac.__version__ read it

PACKAGES = ("diffdac", "torch", "numpy", "gymnasium", "mujoco", "networkx", "pandas")


def facts() -> dict[str, Any]:
    """Python and package versions, the command line, and the git commit when diffdac runs from a checkout."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "command": sys.argv, "git_commit": git_commit()}


def git_commit() -> str | None:
    """The commit of the checkout diffdac is imported from, with `-dirty` if files differ from it; None outside one."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def version_warnings(stored: dict[str, Any]) -> list[str]:
    """One line per library whose version here differs from the one a run recorded (runs from before this record none).

    A library the run was made without (an Acrobot run before `[mujoco]` was installed) cannot
    have shaped its numbers, so installing it later is no reason to warn.
    """
    recorded = (stored.get("provenance") or {}).get("versions") or {}
    here = facts()["versions"]
    return [
        f"the run was made with {name} {recorded[name]}, this is {here.get(name)}: numbers may differ"
        for name in sorted(recorded)
        if recorded[name] is not None and recorded[name] != here.get(name)
    ]
