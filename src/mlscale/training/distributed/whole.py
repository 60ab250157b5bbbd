"""What the strategies whose workers each hold the whole model (one device, ddp, fsdp) do alike:
clip, evaluate, capture or restore the full training state, and report nothing of their own. The
pipeline strategy, whose workers each hold one stage, gives its own versions of these, so the engine calls the
strategy and never asks which kind it has."""

from __future__ import annotations

import torch
from torch import nn

from mlscale.training import checkpoint as ckpt
from mlscale.training.metrics import evaluate


class WholeModel:
    pipelined = False

    def clip_grad_norm_(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        return nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def evaluate(self, model: nn.Module, loader, device: torch.device, autocast_dtype=None) -> dict:
        return evaluate(model, loader, device, autocast_dtype)

    def capture_training_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        return ckpt.capture_training_state(model, optimizer)

    def restore_training_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                               optim_state: dict) -> None:
        ckpt.restore_training_state(model, optimizer, model_state, optim_state)

    def report(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
        return None  # the run summary's strategy section (a pipeline's split, bubble, memory)
