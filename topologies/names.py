"""The named topologies, on their own so the options can list them."""

RANDOM_TOPOLOGIES = ("random-matching", "random-regular")  # a fresh graph every combine round (topologies.schedules)
TOPOLOGY_NAMES = ("ring", "full", "star", "line", "grid", "none", "erdos-renyi", *RANDOM_TOPOLOGIES)
