"""diffdac: decentralised multitask reinforcement learning by diffusion (Diff-DAC).

`import diffdac` is light (no torch): the command line can then answer Ctrl-C during its start-up
with one line, and `diffdac.train` and `diffdac.load_policy` import what they need on first use.
"""

from typing import Any

__version__ = "0.1.0"

from diffdac.config import TrainConfig  # noqa: E402  (no torch: the options alone)

__all__ = ["TrainConfig", "load_policy", "train", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from diffdac.training import train

        return train
    if name == "load_policy":
        from diffdac.policy import load_policy

        return load_policy
    raise AttributeError(f"module 'diffdac' has no attribute {name!r}")
