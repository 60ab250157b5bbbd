"""The README's Python API example, whole: a built-in model, then your own model and data."""

import torch
from torch import nn
from torch.utils.data import TensorDataset

import mlscale

config = mlscale.TrainConfig(epochs=10)
config.model.name = "cnn"
config.model.width = 32
result = mlscale.train(config)
print(result.test_accuracy, result.samples_per_s, result.run_dir)

# any torch.nn.Module and any map-style Dataset of (features, label) pairs
x = torch.randn(1000, 20)
y = (x[:, 0] + x[:, 1] > 0).long()
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
result = mlscale.train(mlscale.TrainConfig(epochs=3), model=model,
                       train_data=TensorDataset(x[:800], y[:800]), test_data=TensorDataset(x[800:], y[800:]))
assert result.model is model  # trained in place
print(result.test_accuracy)

# stop a run part-way, then resume it to the same final state
stopped = mlscale.train(mlscale.TrainConfig(epochs=4, stop_at_step=30))
resumed = mlscale.train(resume=stopped.run_dir)
print(resumed.completed, resumed.steps)
