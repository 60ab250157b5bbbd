"""Strategies: how a single-device model is spread over the workers. A flat class per strategy
behind one small interface (Lightning Fabric's vocabulary), chosen from a plain dict.

    setup_module(model) -> model     wrap for training (gradients synchronised across ranks)
    unwrap(model) -> model           the user's module inside
    no_sync(model)                   context: this micro-step's backward does not synchronise
    comm_time_s                      time with a gradient collective in flight (None: not measured)
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from mlscale.training.distributed.ddp import DDPStrategy
from mlscale.training.distributed.fsdp import FSDPStrategy


class SingleDevice:
    """One process: nothing to synchronise."""

    comm_time_s = None

    def __init__(self, device: torch.device, **_):
        self.device = device

    def setup_module(self, model: nn.Module) -> nn.Module:
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def no_sync(self, model: nn.Module):
        return nullcontext()


STRATEGIES = {"ddp": DDPStrategy, "fsdp": FSDPStrategy}


def build_strategy(name: str, world_size: int, device: torch.device, bucket_cap_mb: float = 0.0):
    if world_size == 1:
        return SingleDevice(device)
    return STRATEGIES[name](device, bucket_cap_mb=bucket_cap_mb)
