"""The named topologies, on their own so the options can list them."""

TOPOLOGY_NAMES = ("ring", "full", "star", "line", "grid", "none", "erdos-renyi")
