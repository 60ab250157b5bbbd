"""Fully sharded data parallelism with FSDP2 (`torch.distributed.fsdp.fully_shard`): parameters,
gradients and optimizer state are sharded over the ranks; each block's parameters are all-gathered
just before it runs and its gradients reduce-scattered after backward (Zhao et al., "PyTorch FSDP",
VLDB 2023). Blocks are sharded first, then the root, as torchtitan's parallelize does."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard

from mlscale.training.distributed.whole import WholeModel

# units of sharding in the built-in models: a block's parameters are gathered together
_BLOCKS = (nn.TransformerEncoderLayer, nn.Linear, nn.Conv2d)


class FSDPStrategy(WholeModel):
    comm_time_s = None  # FSDP's collectives are issued inside its hooks; not timed here

    def __init__(self, device: torch.device, **_):
        self.device = device

    def setup_module(self, model: nn.Module) -> nn.Module:
        if _is_builtin(model):
            for module in _blocks(model):
                fully_shard(module)
        fully_shard(model)  # the root: whatever parameters are left (a user model: all of them)
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    @contextmanager
    def no_sync(self, model: FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)


def _is_builtin(model: nn.Module) -> bool:
    from mlscale.training.models import MODELS

    return type(model) in MODELS.values()


def _blocks(model: nn.Module) -> list[nn.Module]:
    """Outermost block modules, in order (a Linear inside an encoder layer belongs to the layer:
    attention reads its projections' weights without calling them, so they cannot be sharded apart)."""
    found, inside = [], set()
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if module is not model and isinstance(module, _BLOCKS):
            found.append(module)
            inside.add(name)
    return found
