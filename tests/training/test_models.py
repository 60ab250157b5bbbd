import pytest
import torch

from mlscale import MlscaleError
from mlscale.config import ModelConfig
from mlscale.training.models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (64,), (10,), (3, 5, 7)])
def test_every_model_maps_samples_to_logits(name, shape):
    cfg = ModelConfig(name=name, width=16, depth=2, n_heads=2, patch_size=8)
    model = build_model(cfg, shape, n_classes=5)
    logits = model(torch.randn(4, *shape))
    assert logits.shape == (4, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_size_fields_change_the_model(name):
    small = build_model(ModelConfig(name=name, width=16, depth=1, n_heads=2), (1, 8, 8), 10)
    big = build_model(ModelConfig(name=name, width=32, depth=2, n_heads=2), (1, 8, 8), 10)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(big) > count(small)


def test_unknown_model():
    with pytest.raises(MlscaleError, match="unknown model 'vgg'"):
        build_model(ModelConfig(name="vgg"), (4,), 2)
