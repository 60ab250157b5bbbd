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

from mlscale.errors import MlscaleError
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


def _strategy_class(name: str):
    """Imported when chosen: FSDP's and pipelining's modules (torch.distributed.tensor) take
    about 0.75 s to import, paid by every process that starts, every tuner trial's included."""
    if name == "ddp":
        from mlscale.training.distributed.ddp import DDPStrategy
        return DDPStrategy
    if name == "fsdp":
        from mlscale.training.distributed.fsdp import FSDPStrategy
        return FSDPStrategy
    if name == "pipeline":
        from mlscale.training.distributed.pipeline import PipelineStrategy
        return PipelineStrategy
    raise MlscaleError(f"unknown strategy {name!r} (ddp, fsdp or pipeline)")


def build_strategy(name: str, world, device: torch.device, **options):
    """The strategy `name` for this world; `options` are its settings (bucket_cap_mb for ddp; the
    pipeline section, input shape, batch size and autocast dtype for pipeline)."""
    if name == "pipeline" and world.world_size == 1:
        raise MlscaleError(f"strategy pipeline needs workers = pipeline.n_stages x replicas (at least "
                           f"{options['pipeline'].n_stages}); this run has 1 worker")
    if world.world_size == 1:
        return SingleDevice(device)
    strategy = _strategy_class(name)(device, world=world, **options)
    if not strategy.pipelined:
        strategy.data_shard = (world.rank, world.world_size)
    return strategy
