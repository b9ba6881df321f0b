"""How learners share what they learn: one Method class per --method, and the registry of them.

A Method knows its name, its own options, the communication graphs it needs (one exchange plan
each), the graph and matrix the run directory records, and the Mixer that runs after every adapt
step. Adding a method is one module with one Method subclass (and its Options, which TrainConfig,
the command line and config files then know), listed in METHODS below, and its tests.
"""

from __future__ import annotations

import dataclasses

import networkx as nx

from diffdac.errors import ConfigError
from diffdac.network.methods.base import Method, Mixer
from diffdac.network.methods.centralized import Centralized, CentralizedA2C
from diffdac.network.methods.choco import Choco
from diffdac.network.methods.diffusion import DiffA2C, Diffusion
from diffdac.network.methods.gala import Gala, PushSum
from diffdac.network.methods.isolated import Isolated
from diffdac.options import RunConfig

METHODS: dict[str, type[Method]] = {m.name: m for m in (DiffA2C, CentralizedA2C, Isolated, Gala, Choco)}


def method_class(name: str) -> type[Method]:
    """The Method of a --method name, or a ConfigError listing the names there are."""
    if name not in METHODS:
        raise ConfigError(f"unknown --method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_for(config: RunConfig, graph: nx.Graph) -> Method:
    """The run's method over its graph."""
    return method_class(config.method)(config, graph)


def option_owners() -> dict[str, type[Method]]:
    """Each method option's name -> the method that declares it (an option belongs to one method)."""
    owners: dict[str, type[Method]] = {}
    for method in METHODS.values():
        for f in dataclasses.fields(method.Options):
            if f.name in owners:
                raise TypeError(f"option {f.name} is declared by both {owners[f.name].name} and {method.name}")
            owners[f.name] = method
    return owners


__all__ = ["METHODS", "Centralized", "Diffusion", "Method", "Mixer", "PushSum", "method_class", "method_for", "option_owners"]
