"""Built-in models, by name. Model code is single-device: nothing here knows about processes."""

from __future__ import annotations

from torch import nn

from mlscale.config import ModelConfig
from mlscale.errors import MlscaleError
from mlscale.training.models.cnn import CNN
from mlscale.training.models.mlp import MLP
from mlscale.training.models.transformer import TransformerClassifier

# name -> class taking (cfg, input_shape, n_classes)
MODELS = {"mlp": MLP, "cnn": CNN, "transformer": TransformerClassifier}


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build the registered model `cfg.name` for samples of `input_shape` and `n_classes` classes."""
    if cfg.name not in MODELS:
        raise MlscaleError(f"unknown model '{cfg.name}'; built-in models: {', '.join(MODELS)}")
    return MODELS[cfg.name](cfg, tuple(input_shape), n_classes)
