"""The training engine: data, models, the loop, checkpoints, metrics."""
