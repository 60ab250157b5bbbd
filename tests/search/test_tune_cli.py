"""`mlscale tune` on the command line: a run with overrides of the base config, and every user
mistake as one line on stderr with exit status 2."""

import pytest

from mlscale.cli.main import main

SPACE = "optim.lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}\nmodel.depth: [1, 2]\n"


def test_tune_runs_from_the_command_line_with_base_overrides(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "base.yaml").write_text("epochs: 3\nmodel: {width: 32}\n")
    code = main(["tune", "--space", str(tmp_path / "space.yaml"), "--trials", "2", "--sampler", "random",
                 "--pruner", "median", "--config", str(tmp_path / "base.yaml"), "--epochs", "1",
                 "--threads", "1", "--out-dir", str(tmp_path / "runs"), "--study", "cli"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "study 'cli' in " in captured.err and "2 fields, 2 trials, 1 at a time" in captured.err
    assert "trials 2/2 done (2 complete, 0 pruned, 0 failed), 0 running; best " in captured.err
    best = (tmp_path / "runs" / "tune-cli" / "best.yaml").read_text()
    assert "epochs: 1\n" in best and "  width: 32\n" in best  # the base file < the override < the search


@pytest.mark.parametrize("args, message", [
    (["--sampler", "bayes"], "--sampler must be one of tpe, random, grid, got 'bayes'"),
    (["--pruner", "asha2"], "--pruner must be one of asha, hyperband, median, none, got 'asha2'"),
    (["--parallel", "0"], "--parallel must be a positive integer, got 0"),
    (["--study", "a b"], "--study 'a b': use letters, digits"),
    (["--resume", "--study", "nope"], "--resume: no study 'nope'"),
    (["--storage", "mysql://u:pw@h/db"], "--storage mysql://u:***@h/db: unsupported"),
    (["--model.widht", "3"], "unknown config key 'model.widht' (did you mean 'model.width'?)"),
    (["--trials", "many"], "argument --trials: invalid int value: 'many'"),
    (["--sampler", "grid", "--space", "SPACE_LR"], "optim.lr: a float field needs 'step' or 'values' for --sampler grid"),
])
def test_a_mistake_is_one_line(tmp_path, capsys, args, message):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "lr.yaml").write_text("optim.lr: {type: float, low: 1.0e-3, high: 3.0e-2}\n")
    args = [str(tmp_path / "lr.yaml") if a == "SPACE_LR" else a for a in args]
    space = [] if "--space" in args else ["--space", str(tmp_path / "space.yaml")]
    code = main(["tune", *space, "--out-dir", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("mlscale tune: error: ") and message in err, err
    assert not list((tmp_path / "runs").glob("tune-*/trials"))  # no trial ran
    assert not (tmp_path / "runs" / "tune-nope").exists()


def test_a_bad_space_file_is_one_line(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text("model.name: [mlp, resnet]\n")
    assert main(["tune", "--space", str(tmp_path / "space.yaml"), "--out-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err == (f"mlscale tune: error: space file {tmp_path / 'space.yaml'}: model.name: 'resnet' is not a valid value "
                   f"(model.name must be one of mlp, cnn, transformer; got 'resnet')\n")
