"""How an option is declared and checked, for the run's options and for each method's own.

A method declares its options as a MethodOptions dataclass next to its code (defaults, help
text, checks, how many parameter copies it keeps); `diffdac.config.TrainConfig` is the run's
options plus every method's, so the CLI, config files and config.json see one flat set.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

OptionsT = TypeVar("OptionsT", bound="MethodOptions")


def option(default: Any, doc: str, **kwargs: Any) -> Any:
    """A dataclass field whose docstring travels with it (the CLI's help text reads it)."""
    return field(default=default, metadata={"doc": doc, **kwargs})


def flag(name: str) -> str:
    """An option's name as the command line spells it (without the dashes)."""
    return name.replace("_", "-")


class RunConfig(Protocol):
    """What a method reads of the run's options besides its own (TrainConfig has all of them)."""

    method: str
    num_learners: int
    weights: str
    seed: int


@dataclass
class MethodOptions:
    """The options one method declares; a subclass adds fields made with `option()`."""

    def check(self, run: RunConfig) -> None:
        """Refuse values this method cannot honour (ConfigError); the run's options are there to compare."""

    def parameter_copies(self) -> int:
        """Copies of every learner's parameters the method keeps (the memory estimate reads it)."""
        return 1

    def failures(self, num_learners: int) -> dict[int, int]:
        """Learners that leave the graph, {learner: env step}: none unless the method models it."""
        return {}

    @classmethod
    def of(cls: type[OptionsT], config: Any) -> OptionsT:
        """This method's options out of a TrainConfig."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def has_type(value: Any, hint: Any) -> bool:
    """isinstance for the annotations options use: int, float, str, bool, `X | None`, tuple[str, ...]."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(has_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    """How an error message names a type."""
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "unset"}
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(type_name(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "a comma list of names"
    return names.get(hint, str(hint))
