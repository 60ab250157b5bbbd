"""Checkpoints: the whole training state, saved atomically and loaded without running code.

A checkpoint holds the model, optimizer and scheduler state, the RNG states, and the loop position
(epoch, micro-batch within the epoch, optimizer step), so a resumed run continues to the same final
state as an uninterrupted one. Files are plain `torch.save` archives of tensors and primitives,
loaded with `weights_only=True`: a file crafted to execute code on load is refused.

Every checkpoint is written atomically (temp file, fsync, rename) and then recorded with its size
and SHA-256 in `checkpoints/manifest.json` (itself replaced atomically). A resumption takes the
newest checkpoint that matches its record; one that does not (torn, truncated, bit-rotted, or a
write that never finished) is reported and passed over for the previous good one.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mlscale.errors import MlscaleError, RunFailed
from mlscale.runs import atomic_write, atomic_write_text

FORMAT = 1
FINAL = "final.pt"
MANIFEST = "manifest.json"
_STEP = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write `payload` to `path` atomically, then record its size and SHA-256 in the manifest.

    Raises:
        RunFailed: the file could not be written (disk full, read-only, no permission); any
            earlier checkpoint is left as it was.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    data = buf.getbuffer()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        atomic_write(path, lambda f: f.write(data))
        manifest = _read_manifest(path.parent)
        manifest[path.name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        _write_manifest(path.parent, manifest)
    except (OSError, RunFailed) as err:
        why = err.strerror if isinstance(err, OSError) else str(err).rpartition(": ")[2]
        previous = latest_checkpoint(path.parent.parent)
        kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
        raise RunFailed(f"cannot write checkpoint {path}: {why}; {kept}") from None


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint onto the CPU, refusing anything but tensors and plain data."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MlscaleError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MlscaleError(f"refusing to load {path}: it is not a plain weights file ({first})") from None
    except Exception as err:  # noqa: BLE001 - any failure of the (code-free) weights-only reader: a damaged file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MlscaleError(f"checkpoint {path} is unreadable or truncated: {first}") from None
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


@dataclass
class Latest:
    """The checkpoint to resume from, and the newer ones passed over, with why."""

    path: Path | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def report(self) -> list[str]:
        to = f"resuming from {self.path.name}" if self.path else "no good checkpoint is left"
        return [f"checkpoint {p} {why}: {to}" for p, why in self.skipped]


def find_latest(run_dir: Path) -> Latest:
    """The newest good checkpoint (the final one first, then periodic ones, newest first)."""
    d = checkpoint_dir(run_dir)
    candidates = ([d / FINAL] if (d / FINAL).exists() else []) + periodic_checkpoints(run_dir)[::-1]
    manifest = _read_manifest(d) if candidates else {}
    skipped = []
    for path in candidates:
        problem = verify(path, manifest)
        if problem is None:
            return Latest(path, skipped)
        skipped.append((path, problem))
    return Latest(None, skipped)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resumption starts from: the newest one that passes `verify`."""
    return find_latest(run_dir).path


def verify(path: Path, manifest: dict | None = None) -> str | None:
    """Why `path` cannot be resumed from, or None when it can: a recorded checkpoint must match its
    size and SHA-256; one missing from the manifest (written before it) must at least load."""
    entry = (manifest if manifest is not None else _read_manifest(path.parent)).get(path.name)
    if entry is None:
        try:
            load_checkpoint(path)
        except MlscaleError as err:
            return f"is unusable ({err})"
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if len(data) != entry.get("bytes"):
        return f"is torn: {len(data)} bytes on disk, {entry.get('bytes')} written"
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        return "is corrupt: its SHA-256 does not match the manifest"
    return None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` periodic checkpoints (and their manifest records)."""
    old = periodic_checkpoints(run_dir)[:-keep]
    if not old:
        return
    d = checkpoint_dir(run_dir)
    manifest = _read_manifest(d)
    for path in old:
        manifest.pop(path.name, None)
    _write_manifest(d, manifest)  # first: a record without its file is harmless, not the reverse
    for path in old:
        path.unlink(missing_ok=True)


def _read_manifest(d: Path) -> dict:
    """name -> {"bytes", "sha256"}; empty when there is none (or it is unreadable: then every
    checkpoint is checked by loading it instead)."""
    try:
        entries = json.loads((Path(d) / MANIFEST).read_text()).get("checkpoints", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_manifest(d: Path, entries: dict) -> None:
    live = {name: e for name, e in sorted(entries.items()) if (Path(d) / name).exists()}
    atomic_write_text(Path(d) / MANIFEST, json.dumps({"format": FORMAT, "checkpoints": live}, indent=1) + "\n")


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
