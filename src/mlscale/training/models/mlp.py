"""A multi-layer perceptron: `depth` hidden layers of `width` units."""

import math

from torch import nn

from mlscale.config import ModelConfig


class MLP(nn.Sequential):
    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int):
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = math.prod(input_shape)
        for _ in range(cfg.depth):
            layers += [nn.Linear(n_in, cfg.width), nn.ReLU(), nn.Dropout(cfg.dropout)]
            n_in = cfg.width
        layers.append(nn.Linear(n_in, n_classes))
        super().__init__(*layers)

    def pipeline_layers(self) -> list[nn.Module]:
        """The layers in order, for cutting into pipeline stages."""
        return list(self)
