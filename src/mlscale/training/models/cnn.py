"""A small convolutional network: `depth` blocks of 3x3 conv + ReLU (+ 2x2 max-pool while the image
is large enough), global average pooling, and a linear classifier.

Samples of shape (C, H, W) are images; a flat (F,) sample is read as a 1 x 1 x F image.
"""

import math

import torch
from torch import nn

from mlscale.config import ModelConfig
from mlscale.training.models.pieces import MeanOver, Reshape


class CNN(nn.Module):
    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int):
        super().__init__()
        if len(input_shape) == 3:
            self.image_shape = tuple(input_shape)
        else:
            self.image_shape = (1, 1, math.prod(input_shape))
        c_in, h, w = self.image_shape
        blocks: list[nn.Module] = []
        for _ in range(cfg.depth):
            blocks += [nn.Conv2d(c_in, cfg.width, kernel_size=3, padding=1), nn.ReLU(), nn.Dropout(cfg.dropout)]
            if h >= 4 and w >= 4:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c_in = cfg.width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)  # (B, C, H, W)
        x = self.features(x).mean(dim=(2, 3))  # (B, width)
        return self.head(x)

    def pipeline_layers(self) -> list[nn.Module]:
        """The forward pass as an ordered list of layers, for cutting into pipeline stages."""
        return [Reshape(self.image_shape), *self.features, MeanOver((2, 3)), self.head]
