"""Strategies: how a single-device model is spread over the workers. A flat class per strategy
behind one small interface (Lightning Fabric's vocabulary), chosen from a plain dict.

    setup_module(model) -> model     wrap for training (gradients synchronised across ranks)
    unwrap(model) -> model           the user's module inside
    no_sync(model)                   context: this micro-step's backward does not synchronise
    comm_time_s                      time with a gradient collective in flight (None: not measured)
    pipelined                        True: the engine runs forward/backward through `step` (pipeline.py)
    clip_grad_norm_, evaluate,       clip, evaluate and checkpoint the model however it is spread
    capture/restore_training_state   (whole.py for whole-model workers; pipeline.py per stage)
    data_shard                       (index, count) of this rank's data shard
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from mlscale.training.distributed.ddp import DDPStrategy
from mlscale.errors import MlscaleError
from mlscale.training.distributed.fsdp import FSDPStrategy
from mlscale.training.distributed.pipeline import PipelineStrategy
from mlscale.training.distributed.whole import WholeModel


class SingleDevice(WholeModel):
    """One process: nothing to synchronise."""

    comm_time_s = None
    data_shard = (0, 1)

    def __init__(self, device: torch.device, **_):
        self.device = device

    def setup_module(self, model: nn.Module) -> nn.Module:
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def no_sync(self, model: nn.Module):
        return nullcontext()


STRATEGIES = {"ddp": DDPStrategy, "fsdp": FSDPStrategy, "pipeline": PipelineStrategy}


def build_strategy(name: str, world, device: torch.device, **options):
    """The strategy `name` for this world; `options` are its settings (bucket_cap_mb for ddp; the
    pipeline section, input shape, batch size and autocast dtype for pipeline)."""
    if name == "pipeline" and world.world_size == 1:
        raise MlscaleError(f"strategy pipeline needs workers = pipeline.n_stages x replicas (at least "
                           f"{options['pipeline'].n_stages}); this run has 1 worker")
    if world.world_size == 1:
        return SingleDevice(device)
    strategy = STRATEGIES[name](device, world=world, **options)
    if not strategy.pipelined:
        strategy.data_shard = (world.rank, world.world_size)
    return strategy
