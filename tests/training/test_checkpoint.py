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
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_latest_and_prune(tmp_path):
    for step in (5, 10, 20, 30):
        ckpt.save_checkpoint(ckpt.step_checkpoint_path(tmp_path, step), {"loop": {"step": step}})
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000030.pt"
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.periodic_checkpoints(tmp_path)] == ["step-00000020.pt", "step-00000030.pt"]
    ckpt.save_checkpoint(ckpt.checkpoint_dir(tmp_path) / ckpt.FINAL, {})
    assert ckpt.latest_checkpoint(tmp_path).name == "final.pt"


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "model": _RunsCode()}, path)
    with pytest.raises(MlscaleError, match="refusing to load .*not a plain weights file"):
        ckpt.load_checkpoint(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(MlscaleError):
        ckpt.load_checkpoint(raw)


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
