"""A small transformer encoder classifier.

Each sample's features are flattened and cut into tokens of `patch_size` values (zero-padded at the
end), embedded linearly with a learned position embedding, encoded by `depth` pre-norm layers of
`n_heads` heads, mean-pooled, and classified. For an 8x8 digit with patch_size 8, a token is a row.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from mlscale.config import ModelConfig
from mlscale.training.models.pieces import MeanOver


class TransformerClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int):
        super().__init__()
        self.n_features = math.prod(input_shape)
        self.patch_size = cfg.patch_size
        self.n_tokens = -(-self.n_features // cfg.patch_size)
        self.embed = nn.Linear(cfg.patch_size, cfg.width)
        self.position = nn.Parameter(torch.zeros(1, self.n_tokens, cfg.width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.width, nhead=cfg.n_heads, dim_feedforward=4 * cfg.width,
            dropout=cfg.dropout, activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.n_features)
        x = F.pad(x, (0, self.n_tokens * self.patch_size - self.n_features))
        tokens = self.embed(x.reshape(x.shape[0], self.n_tokens, self.patch_size)) + self.position  # (B, T, C)
        return self.head(self.norm(self.encoder(tokens)).mean(dim=1))

    def pipeline_layers(self) -> list[nn.Module]:
        """The forward pass as an ordered list of layers (embedding, each encoder layer, head), for
        cutting into pipeline stages; applied in turn they compute `forward`."""
        return [_TokenEmbedding(self), *self.encoder.layers, self.norm, MeanOver((1,)), self.head]


class _TokenEmbedding(nn.Module):
    """The first part of `TransformerClassifier.forward`: cut into tokens, embed, add positions.
    It shares (does not copy) the classifier's `embed` and `position` parameters."""

    def __init__(self, model: TransformerClassifier):
        super().__init__()
        self.n_features, self.patch_size, self.n_tokens = model.n_features, model.patch_size, model.n_tokens
        self.embed, self.position = model.embed, model.position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.n_features)
        x = F.pad(x, (0, self.n_tokens * self.patch_size - self.n_features))
        return self.embed(x.reshape(x.shape[0], self.n_tokens, self.patch_size)) + self.position  # (B, T, C)
