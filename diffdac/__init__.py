"""diffdac: decentralised multitask reinforcement learning by diffusion (Diff-DAC)."""

__version__ = "0.1.0"

from diffdac.config import TrainConfig  # noqa: E402
from diffdac.train import train  # noqa: E402

__all__ = ["TrainConfig", "train", "__version__"]
