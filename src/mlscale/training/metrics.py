"""Training metrics: a windowed meter kept on the device, evaluation, and the curves plot."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from mlscale.runs import atomic_write


class Meter:
    """Loss, predictions and labels since the last `flush`, kept as device tensors so that the
    training step never waits for the device to report a number. Per step it only records
    references and one argmax; the sums are taken once per window, in `flush`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.preds: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.samples = 0
        self.busy_s = 0.0
        self.t0 = time.perf_counter()

    @property
    def batches(self) -> int:
        return len(self.losses)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.losses.append(loss.detach())
        self.preds.append(logits.detach().argmax(dim=1))
        self.labels.append(y)
        self.samples += len(y)

    def loss_sum(self) -> float:
        return torch.stack(self.losses).double().sum().item() if self.losses else 0.0

    def pause(self) -> None:
        """Stop the clock (evaluation and checkpoints are not training time)."""
        self.busy_s += time.perf_counter() - self.t0

    def resume(self) -> None:
        self.t0 = time.perf_counter()

    def flush(self) -> dict:
        """The window's mean loss, accuracy and samples/s; starts a new window."""
        self.pause()
        correct = torch.cat(self.preds).eq(torch.cat(self.labels)).sum().item() if self.preds else 0
        out = {
            "loss": self.loss_sum() / max(1, self.batches),
            "accuracy": correct / max(1, self.samples),
            "batches": self.batches,
            "correct": correct,
            "samples": self.samples,
            "train_time_s": self.busy_s,
            "samples_per_s": self.samples / self.busy_s if self.busy_s > 0 else 0.0,
        }
        self.reset()
        return out


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, autocast_dtype=None) -> dict:
    """Loss and accuracy over every sample `loader` yields (sums, so the mean is exact)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = 0
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    for batch in loader:
        if batch is None:  # an empty shard of a user dataset: nothing to evaluate on this rank
            continue
        x, y = (t.to(device, non_blocking=True) for t in batch)
        with ctx:
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
        count += len(y)
    model.train(was_training)
    return {"loss_sum": loss_sum, "correct": correct, "count": count}


def plot_curves(records: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy against optimizer step, training windows and evaluations, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.plot([r["step"] for r in train], [r[key] for r in train], label="train (window)", lw=1)
        ax.plot([r["step"] for r in evals], [r[key] for r in evals], "o-", label="test", lw=1.5)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
