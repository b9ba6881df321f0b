"""Errors the command line turns into one line and an exit status."""


class ConfigError(ValueError):
    """Bad user input, found before any training: the message names the problem and the fix."""


class TrainingError(RuntimeError):
    """A run that failed after it started: the message names the learner or rank and the step."""


class ResumeError(ConfigError):
    """A run directory that cannot be resumed as asked (not a run, other options, logs that do not match)."""


class CheckpointError(ConfigError):
    """A checkpoint file or manifest that cannot be used: missing, truncated, edited, or holding more than tensors."""


class Stopped(Exception):
    """A run stopped on request (SIGTERM, SIGINT) after writing a checkpoint: the line to print and the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
