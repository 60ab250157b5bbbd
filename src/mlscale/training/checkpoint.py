"""Checkpoints: the whole training state, saved atomically and loaded without running code.

A checkpoint holds the model, optimizer and scheduler state, the RNG states, and the loop position
(epoch, micro-batch within the epoch, optimizer step), so a resumed run continues to the same final
state as an uninterrupted one. Files are plain `torch.save` archives of tensors and primitives,
loaded with `weights_only=True`: a file crafted to execute code on load is refused.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from mlscale.errors import MlscaleError
from mlscale.runs import atomic_write

FORMAT = 1
FINAL = "final.pt"
_STEP = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write `payload` to `path` atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **payload}, f))


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint onto the CPU, refusing anything but tensors and plain data."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MlscaleError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MlscaleError(f"refusing to load {path}: it is not a plain weights file ({first})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise MlscaleError(f"checkpoint {path} is unreadable or truncated: {str(err).splitlines()[0]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MlscaleError(f"{path} is not an mlscale checkpoint (format {FORMAT})")
    return payload


def step_checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


def periodic_checkpoints(run_dir: Path) -> list[Path]:
    """Periodic checkpoints, oldest first."""
    d = checkpoint_dir(run_dir)
    found = [(int(m.group(1)), p) for p in d.glob("step-*.pt") if (m := _STEP.match(p.name))] if d.exists() else []
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resumption starts from: the final one, else the newest periodic one."""
    final = checkpoint_dir(run_dir) / FINAL
    if final.exists():
        return final
    periodic = periodic_checkpoints(run_dir)
    return periodic[-1] if periodic else None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` periodic checkpoints."""
    for path in periodic_checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the training state, gathered from and scattered to any number of ranks ------------------------


def capture_training_state(model, optimizer) -> tuple[dict, dict]:
    """Full (unsharded, unwrapped) model and optimizer state dicts keyed by parameter name, on the
    CPU of rank 0 (other ranks get empty dicts). Collective when distributed: every rank calls it.
    A world of any size can load the result, which is what lets 2 workers resume on 1 and back."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def restore_training_state(model, optimizer, model_state: dict, optim_state: dict) -> None:
    """Load full state dicts into a (possibly wrapped or sharded) model and its optimizer; every
    rank passes the full dicts and keeps what it holds (all of it, or its shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=True))
