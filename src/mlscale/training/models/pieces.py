"""Small parameter-free modules that let a model's forward pass be written as an ordered list of
layers (`pipeline_layers()`), so that it can be cut into pipeline stages at any boundary."""

from __future__ import annotations

import torch
from torch import nn


class Reshape(nn.Module):
    """(B, ...) -> (B, *shape)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class MeanOver(nn.Module):
    """The mean over the given dimensions (global average pooling, token pooling)."""

    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims)
