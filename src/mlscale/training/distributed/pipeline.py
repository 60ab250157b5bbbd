"""Pipeline model parallelism on `torch.distributed.pipelining`: the model's layers are cut into
`n_stages` contiguous stages, one per worker, and each batch is cut into `n_microbatches` that flow
through them (GPipe, Huang et al. 2019; 1F1B, Narayanan et al., PipeDream 2019), so that the stages
work on different micro-batches at once.

Combined with data parallelism on a 2-D mesh (replicas x stages, as torchtitan lays out its
"dp" and "pp" dimensions): rank = replica * n_stages + stage. Each replica is one whole pipeline fed
its own shard of the batch; after the schedule's backward, each stage's gradients are averaged over
the replicas holding the same stage.

The loss is known on the last stage only; the engine's metrics count it there. Checkpoints hold the
whole model under its own parameter names (gathered from the stages), so a pipelined run resumes in
a non-pipelined one and back.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from mlscale.config import PipelineConfig
from mlscale.errors import MlscaleError, RunFailed
from mlscale.training.distributed import split as sp


NEIGHBOUR_GRACE_S = 3.0  # a stage whose transfer failed waits this long before failing itself


class _StageModule(nn.Sequential):
    """One stage: its layers in order, under autocast when the run asks for it."""

    def __init__(self, layers: list[nn.Module], autocast_dtype: torch.dtype | None, device_type: str):
        super().__init__(*layers)
        self.autocast_dtype, self.device_type = autocast_dtype, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast(self.device_type, dtype=self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with ctx:
            return super().forward(x)


class PipelineStrategy:
    """The engine's strategy interface (see strategies.py) for a pipelined model, plus `step`
    (forward, loss and backward of one batch through the schedule), `evaluate`, `clip_grad_norm_`,
    the checkpoint's capture/restore, and `report` (per-stage time, bubble, memory)."""

    pipelined = True
    comm_time_s = None

    def __init__(self, device: torch.device, *, world, pipeline: PipelineConfig, input_shape=(),
                 batch_size: int = 1, autocast_dtype=None, **_):
        from torch.distributed.device_mesh import init_device_mesh

        n_stages = pipeline.n_stages
        if world.world_size % n_stages:
            raise MlscaleError(f"pipeline.n_stages ({n_stages}) must divide the number of workers "
                               f"({world.world_size}): workers = n_stages x data-parallel replicas")
        self.device, self.cfg, self.world = device, pipeline, world
        self.n_stages, self.n_replicas = n_stages, world.world_size // n_stages
        mesh = init_device_mesh(device.type, (self.n_replicas, n_stages), mesh_dim_names=("dp", "pp"))
        self.pp_group, self.dp_group = mesh.get_group("pp"), mesh.get_group("dp")
        self.stage_index, self.replica = mesh.get_local_rank("pp"), mesh.get_local_rank("dp")
        self.is_first, self.is_last = self.stage_index == 0, self.stage_index == n_stages - 1
        self.input_shape, self.micro_batch = tuple(input_shape), max(1, batch_size // pipeline.n_microbatches)
        self.autocast_dtype = autocast_dtype
        self.stats = {"steps": 0, "step_s": 0.0, "busy_s": 0.0, "in_flight": 0, "peak_in_flight": 0,
                      "activation_bytes": 0, "failed_in_compute": False}

    # --- what the engine's data sharding needs -----------------------------------------------------

    @property
    def data_shard(self) -> tuple[int, int]:
        """(index, count) of this rank's data shard: all stages of a replica see the same batches."""
        return self.replica, self.n_replicas

    # --- set-up -------------------------------------------------------------------------------------

    def setup_module(self, model: nn.Module) -> nn.Module:
        """Cut `model` into stages and keep this rank's; returns the stage module (to optimise)."""
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        layers = sp.model_layers(model)
        example = None
        if self.cfg.split == "time":  # a sample micro-batch, drawn without touching the run's random stream
            g = torch.Generator().manual_seed(0)
            example = torch.randn(self.micro_batch, *self.input_shape, generator=g).to(self.device)
        split = sp.choose_split(layers, self.n_stages, self.cfg.split, self.cfg.split_points, example)
        box = [split]  # measured times differ by rank: every rank takes rank 0's split
        dist.broadcast_object_list(box, src=0)
        self.split = box[0]
        a, b = self.split.bounds[self.stage_index], self.split.bounds[self.stage_index + 1]
        self.layer_names = [layer.name for layer in layers[a:b]]
        module = _StageModule([layer.module for layer in layers[a:b]], self.autocast_dtype, self.device.type)
        # the model's own names for this stage's tensors: checkpoints use them, whatever the split
        full_names = {id(t): n for n, t in [*model.named_parameters(), *model.named_buffers()]}
        self.full_name = {k: full_names[id(t)] for k, t in module.state_dict(keep_vars=True).items()}
        self.model_order = [n for n, _ in model.named_parameters()]
        self.stage = PipelineStage(module, self.stage_index, self.n_stages, self.device, group=self.pp_group)
        self._time_chunks(self.stage)
        kind = ScheduleGPipe if self.cfg.schedule == "gpipe" else Schedule1F1B
        self.schedule = kind(self.stage, self.cfg.n_microbatches, loss_fn=_loss, scale_grads=True)
        return module

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def no_sync(self, model: nn.Module):
        return nullcontext()

    # --- the training step ---------------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Forward, loss and backward of one batch, micro-batch by micro-batch through the stages,
        then (with replicas) the gradients averaged over them. Returns (mean loss, logits) on the
        last stage, (None, None) elsewhere. A stage that raises fails the run naming the stage."""
        losses: list[torch.Tensor] = []
        t0 = time.perf_counter()
        try:
            args = (x,) if self.is_first else ()
            out = self.schedule.step(*args, target=y if self.is_last else None,
                                     losses=losses if self.is_last else None)
        except Exception as err:  # noqa: BLE001 - named and re-raised as the run's failure
            if not self.stats["failed_in_compute"]:
                # a transfer failed: most likely a neighbour stage died. Give the launcher a moment to
                # see that stage's own error first, so the run's error names the stage that caused it
                time.sleep(NEIGHBOUR_GRACE_S)
            raise RunFailed(f"pipeline stage {self.stage_index} (layers {self._layers_text()}) failed: "
                            f"{_root_cause(err)}") from err
        if self.stats["steps"] > 0:  # the first step also exchanges shapes between stages: not counted
            self.stats["step_s"] += time.perf_counter() - t0
        else:
            self.stats["busy_s"] = 0.0
        self.stats["steps"] += 1
        if self.n_replicas > 1:
            self._average_gradients()
        if not self.is_last:
            return None, None
        return torch.stack(losses).mean().detach(), out

    def _average_gradients(self) -> None:
        """All-reduce this stage's gradients over the replicas holding it (one flat buffer)."""
        grads = [p.grad for p in self.stage.submod.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat, group=self.dp_group)
        flat /= self.n_replicas
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def clip_grad_norm_(self, model: nn.Module, max_norm: float) -> float:
        """Scale all gradients so that their global norm (over every stage) is at most `max_norm`,
        as `torch.nn.utils.clip_grad_norm_` does on the whole model."""
        grads = [p.grad for p in self.stage.submod.parameters() if p.grad is not None]
        sq = torch.stack([g.detach().double().pow(2).sum() for g in grads]).sum() if grads else torch.zeros((), dtype=torch.float64)
        dist.all_reduce(sq, group=self.pp_group)
        total = math.sqrt(sq.item())
        coef = min(1.0, max_norm / (total + 1e-6))
        for g in grads:
            g.mul_(coef)
        return total

    # --- evaluation ------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, autocast_dtype=None) -> dict:
        """Loss and accuracy sums, the activations of each whole batch passed stage to stage
        (forward only: no micro-batches needed). Sums are non-zero on the last stage only."""
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct, count = torch.zeros((), dtype=torch.int64, device=device), 0
        rank = dist.get_rank()
        for batch in loader:
            if batch is None:  # an empty shard: every stage of this replica skips it alike
                continue
            x, y = (t.to(device, non_blocking=True) for t in batch)
            h = x if self.is_first else _recv_tensor(rank - 1, device)
            h = model(h)
            if not self.is_last:
                _send_tensor(h, rank + 1)
                continue
            loss_sum += F.cross_entropy(h.float(), y, reduction="sum")
            correct += (h.argmax(dim=1) == y).sum()
            count += len(y)
        model.train(was_training)
        return {"loss_sum": loss_sum, "correct": correct, "count": count}

    # --- checkpoints: the whole model under its own names -----------------------------------------------

    def capture_training_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
        """Full model and optimizer state dicts on rank 0, keyed by the model's parameter names (the
        format a non-pipelined run saves); other ranks get empty dicts. Every rank calls it."""
        local = None
        if self.replica == 0:
            names = [self.full_name[k] for k, _ in model.named_parameters()]
            own = optimizer.state_dict()
            (group,) = own["param_groups"]
            local = ({self.full_name[k]: t.detach().cpu().clone() for k, t in model.state_dict().items()},
                     {names[i]: {k: v.cpu().clone() if torch.is_tensor(v) else v for k, v in s.items()}
                      for i, s in own["state"].items()},
                     {k: v for k, v in group.items() if k != "params"}, names)
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        if not self.world.is_main:
            return {}, {}
        model_state, optim_state, names = {}, {}, []
        for part in parts:
            if part is not None:
                model_state.update(part[0])
                optim_state.update(part[1])
                names += part[3]
        order = {n: i for i, n in enumerate(self.model_order)}
        group = {**parts[0][2], "params": sorted(set(names), key=order.__getitem__)}
        return model_state, {"state": optim_state, "param_groups": [group]}

    def restore_training_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                               optim_state: dict) -> None:
        """Load this stage's part of full (whole-model) state dicts."""
        model.load_state_dict({k: model_state[full] for k, full in self.full_name.items()})
        names = [self.full_name[k] for k, _ in model.named_parameters()]
        (group,) = optim_state["param_groups"]
        optimizer.load_state_dict({
            "state": {i: optim_state["state"][n] for i, n in enumerate(names) if n in optim_state["state"]},
            "param_groups": [{**{k: v for k, v in group.items() if k != "params"}, "params": list(range(len(names)))}],
        })

    # --- what the run summary shows ------------------------------------------------------------------------

    def report(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
        """Per stage: layers, parameters, time busy computing vs the step's wall time, memory; and
        the bubble fraction measured vs theory, (S - 1) / (M + S - 1) (GPipe, section 2.2).
        Collective: every rank calls it; rank 0 gets the report, the others None."""
        params = list(model.parameters())
        mine = {
            "stage": self.stage_index, "replica": self.replica, "layers": self._layers_text(),
            "params": sum(p.numel() for p in params),
            "param_bytes": sum(p.numel() * p.element_size() for p in params),
            "grad_bytes": sum(p.numel() * p.element_size() for p in params if p.requires_grad),
            "optimizer_bytes": sum(v.numel() * v.element_size() for s in optimizer.state.values()
                                   for v in s.values() if torch.is_tensor(v)),
            "activation_peak_bytes": self.stats["activation_bytes"] * self.stats["peak_in_flight"],
            "step_s": self.stats["step_s"], "busy_s": self.stats["busy_s"], "steps": self.stats["steps"],
        }
        every = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        if not self.world.is_main:
            return None
        stages = [s for s in every if s["replica"] == 0]
        step_s, busy_s = sum(s["step_s"] for s in stages), sum(s["busy_s"] for s in stages)
        for s in stages:
            s["idle_fraction"] = 1 - s["busy_s"] / s["step_s"] if s["step_s"] else None
        m, n = self.cfg.n_microbatches, self.n_stages
        return {
            "n_stages": n, "n_replicas": self.n_replicas, "n_microbatches": m, "schedule": self.cfg.schedule,
            "split": self.split.how, "stage_costs": self.split.stage_costs(),
            "bubble_fraction_measured": 1 - busy_s / step_s if step_s else None,
            "bubble_fraction_theory": (n - 1) / (m + n - 1),
            "stages": stages,
        }

    # --- internals -----------------------------------------------------------------------------------------

    def _layers_text(self) -> str:
        names = self.layer_names
        return names[0] if len(names) == 1 else f"{names[0]}-{names[-1]}"

    def _time_chunks(self, stage) -> None:
        """Count the time this stage computes (forward and backward of each micro-batch; waiting for
        a neighbour is not in it), the micro-batches alive at once, and the bytes one micro-batch's
        forward saves for backward (parameters excluded): what the bubble and memory report need."""
        stats, params = self.stats, {p.data_ptr() for p in stage.submod.parameters()}
        forward, backward = stage.forward_one_chunk, stage.backward_one_chunk

        def pack(t: torch.Tensor):
            if t.data_ptr() not in params:
                stats["_saved"] += t.numel() * t.element_size()
            return t

        def timed_forward(*args, **kwargs):
            t0, stats["_saved"] = time.perf_counter(), 0
            stats["failed_in_compute"] = True  # until it returns
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = forward(*args, **kwargs)
            stats["failed_in_compute"] = False
            stats["busy_s"] += time.perf_counter() - t0
            stats["activation_bytes"] = max(stats["activation_bytes"], stats["_saved"])
            if torch.is_grad_enabled() and stage.has_backward:
                stats["in_flight"] += 1
                stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
            return out

        def timed_backward(*args, **kwargs):
            t0 = time.perf_counter()
            stats["failed_in_compute"] = True
            out = backward(*args, **kwargs)
            stats["failed_in_compute"] = False
            stats["busy_s"] += time.perf_counter() - t0
            stats["in_flight"] = max(0, stats["in_flight"] - 1)
            return out

        stage.forward_one_chunk, stage.backward_one_chunk = timed_forward, timed_backward


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of one micro-batch; the schedule divides gradients by the number of
    micro-batches (scale_grads), so they equal the whole batch's mean-loss gradients."""
    return F.cross_entropy(logits.float(), target)


def _root_cause(err: BaseException) -> str:
    """The innermost cause (pipelining wraps a stage's error in its own RuntimeError), one line."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
_MAX_DIMS = 8


def _send_tensor(t: torch.Tensor, dst: int) -> None:
    """Send a tensor of any shape: a fixed-size header (dtype, rank, dims), then the data."""
    header = torch.zeros(2 + _MAX_DIMS, dtype=torch.int64)
    header[0], header[1] = _DTYPES.index(t.dtype), t.dim()
    header[2:2 + t.dim()] = torch.tensor(t.shape, dtype=torch.int64)
    dist.send(header.to(t.device), dst)
    dist.send(t.contiguous(), dst)


def _recv_tensor(src: int, device: torch.device) -> torch.Tensor:
    header = torch.zeros(2 + _MAX_DIMS, dtype=torch.int64, device=device)
    dist.recv(header, src)
    dtype, ndim = _DTYPES[int(header[0])], int(header[1])
    t = torch.empty(header[2:2 + ndim].tolist(), dtype=dtype, device=device)
    dist.recv(t, src)
    return t
