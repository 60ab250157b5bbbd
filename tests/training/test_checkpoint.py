import os
import pickle

import pytest
import torch

from mlscale import MlscaleError
from mlscale.training import checkpoint as ckpt


def test_save_is_atomic_and_loads(tmp_path):
    path = tmp_path / "checkpoints" / "step-00000001.pt"
    ckpt.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "loop": {"step": 1}})
    assert ckpt.load_checkpoint(path)["model"]["w"].tolist() == [1.0, 1.0, 1.0]
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json", path.name]  # no temp file left


def test_latest_and_prune(tmp_path):
    for step in (5, 10, 20, 30):
        ckpt.save_checkpoint(ckpt.step_checkpoint_path(tmp_path, step), {"loop": {"step": step}})
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000030.pt"
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.periodic_checkpoints(tmp_path)] == ["step-00000020.pt", "step-00000030.pt"]
    ckpt.save_checkpoint(ckpt.checkpoint_dir(tmp_path) / ckpt.FINAL, {})
    assert ckpt.latest_checkpoint(tmp_path).name == "final.pt"


class _RunsCode:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_RunsCode(marker)))  # the payload is real: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "model": _RunsCode(marker)}, path)
    with pytest.raises(MlscaleError, match="refusing to load .*not a plain weights file"):
        ckpt.load_checkpoint(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(MlscaleError):
        ckpt.load_checkpoint(raw)
    assert not marker.exists()  # refused without running it


def test_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "good.pt"
    ckpt.save_checkpoint(good, {"model": {"w": torch.randn(1000)}})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(MlscaleError, match="unreadable or truncated"):
        ckpt.load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"w": torch.ones(1)}, foreign)
    with pytest.raises(MlscaleError, match="not an mlscale checkpoint"):
        ckpt.load_checkpoint(foreign)


def _three_checkpoints(run_dir):
    for step in (10, 20, 30):
        ckpt.save_checkpoint(ckpt.step_checkpoint_path(run_dir, step), {"w": torch.full((4096,), float(step))})
    return ckpt.periodic_checkpoints(run_dir)


def test_a_corrupt_newest_checkpoint_is_reported_and_the_previous_used(tmp_path):
    first, second, newest = _three_checkpoints(tmp_path)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the tensor data: it would still load
    newest.write_bytes(bytes(data))
    latest = ckpt.find_latest(tmp_path)
    assert latest.path == second
    assert latest.skipped == [(newest, "is corrupt: its SHA-256 does not match the manifest")]
    assert latest.report() == [f"checkpoint {newest} is corrupt: its SHA-256 does not match the manifest: "
                               f"resuming from {second.name}"]


def test_a_torn_checkpoint_is_passed_over(tmp_path):
    first, second, newest = _three_checkpoints(tmp_path)
    newest.write_bytes(newest.read_bytes()[:1000])
    second.write_bytes(b"")
    latest = ckpt.find_latest(tmp_path)
    assert latest.path == first
    assert [why.split(":")[0] for _, why in latest.skipped] == ["is torn"] * 2


def test_checkpoints_outside_the_manifest_must_load(tmp_path):
    """A checkpoint renamed into place just before a kill is complete but unrecorded: it is used;
    an unrecorded file that does not load is not."""
    first, second, newest = _three_checkpoints(tmp_path)
    manifest = tmp_path / "checkpoints" / "manifest.json"
    manifest.write_text(manifest.read_text().replace(newest.name, "gone.pt"))
    assert ckpt.latest_checkpoint(tmp_path) == newest
    newest.write_bytes(b"not a checkpoint")
    assert ckpt.latest_checkpoint(tmp_path) == second


def test_pruning_keeps_the_manifest_in_step(tmp_path):
    _three_checkpoints(tmp_path)
    ckpt.prune_checkpoints(tmp_path, keep=1)
    import json

    recorded = json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())["checkpoints"]
    assert list(recorded) == ["step-00000030.pt"]
