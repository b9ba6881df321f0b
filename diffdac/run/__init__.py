"""A run from options to run directory: preparation (checks, graph, tasks), the training loop,
checkpoints, the loggers and the files of the run directory, memory limits and provenance."""
