"""diffdac: decentralised multitask reinforcement learning by diffusion (Diff-DAC).

The parts, from the bottom up: `learners/` (the population and its A2C arithmetic), `network/`
(how learners share: methods, mixing, transport), `run/` (options to run directory: preparation,
the loop, checkpoints, logs) and `tools/` (results, plot, eval, export, video, bench), with `cli`
on top. `import diffdac` is light (no torch): the command line can then answer Ctrl-C during its
start-up with one line, and the public names below import what they need on first use.
"""

from typing import Any

__all__ = ["TrainConfig", "checkpoint", "load_policy", "results", "train", "__version__"]

_LAZY = {
    "TrainConfig": ("diffdac.config", "TrainConfig"),
    "train": ("diffdac.run.training", "train"),
    "load_policy": ("diffdac.tools.policy", "load_policy"),
    "checkpoint": ("diffdac.run.checkpoint", None),
    "results": ("diffdac.tools.results", None),
    "__version__": ("diffdac.run.provenance", "VERSION"),
}


def __getattr__(name: str) -> Any:
    """The public API, imported on first use so that the package itself imports nothing."""
    if name not in _LAZY:
        raise AttributeError(f"module 'diffdac' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    loaded = importlib.import_module(module)
    return loaded if attr is None else getattr(loaded, attr)
