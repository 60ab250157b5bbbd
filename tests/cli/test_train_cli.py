import json
import os
import subprocess
import sys

import pytest

from mlscale.cli.main import main


def _run(tmp_path, *args):
    return main(["train", "--out_dir", str(tmp_path / "runs"), "--progress", "false", "--threads", "1", *args])


def test_end_to_end_subprocess(tmp_path):
    """`python -m mlscale train` as a user runs it: a real process, a real run directory."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mlscale", "train", "--epochs", "2", "--out_dir", str(tmp_path / "runs"),
         "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "samples/s" in proc.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completed"] and summary["test_accuracy"] > 0.85
    assert "step/s" in proc.stderr  # the progress bar


def test_config_file_overrides_and_resume(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("epochs: 2\nmodel:\n  name: cnn\n  width: 8\nstop_at_step: 10\n")
    assert _run(tmp_path, "--config", str(cfg), "--model.depth", "1") == 0
    out = capsys.readouterr().out
    assert "stopped at step 10" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert main(["train", "--resume", str(run_dir), "--progress", "false"]) == 0
    assert "done: 2 epochs, 44 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochz", "2"], "unknown config key 'epochz' (did you mean 'epochs'?)"),
        (["--epochs", "two"], "epochs must be an integer, got 'two'"),
        (["--batch_size", "-4"], "batch_size must be > 0, got -4"),
        (["--model.name", "resnet"], "model.name must be one of mlp, cnn, transformer"),
        (["--device", "tpu7"], "unknown device 'tpu7'"),
        (["--device", "cuda"], "device 'cuda' asked for, but no CUDA GPU is usable"),
        (["--data.dataset", "nope.csv"], "data file not found: nope.csv"),
        (["--epochs"], "--epochs needs a value"),
        (["stray"], "unexpected argument 'stray'"),
        (["--config", "missing.yaml"], "config file not found: missing.yaml"),
        (["--resume", "/nonexistent/run"], "not a run directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert _run(tmp_path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and err.startswith("mlscale train: error:")


def test_label_column_missing_and_checkpoint_from_another_config(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(50)) + "\n")
    assert _run(tmp_path, "--data.dataset", str(data)) == 2
    assert "no label column 'label'" in capsys.readouterr().err
    assert _run(tmp_path, "--data.dataset", str(data), "--data.label_column", "y", "--batch_size", "8",
                "--stop_at_step", "2") == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--model.width", "7"]) == 2
    assert "a resumed run must keep the config it started with" in capsys.readouterr().err


def test_diverged_run_exits_1(tmp_path, capsys):
    assert _run(tmp_path, "--optim.lr", "1e12", "--optim.name", "sgd", "--log_every_steps", "1") == 1
    assert "loss became" in capsys.readouterr().err


def test_help_lists_every_field(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--optim.lr" in out and "--model.name" in out and "--resume RUN_DIR" in out


def test_unknown_command_and_top_level_help(capsys):
    with pytest.raises(SystemExit) as err:
        main(["fly"])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        main(["--help"])
    assert err.value.code == 0 and "train" in capsys.readouterr().out
