"""What users do with finished runs: results tables, plots, greedy evaluation, exported policies,
videos, and the speed bench. Each reads run directories; none is imported by training."""
