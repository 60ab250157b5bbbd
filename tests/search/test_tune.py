"""`mlscale.tune` end to end on the embedded digits: real training runs as trials, real Optuna
studies in journal files; pruning fed by the engine's per-epoch evaluation; failed trials recorded
and the study going on; the report's best config accepted by `mlscale train --config`."""

import json
import os
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from mlscale import MlscaleError, TrainConfig, tune
from mlscale.cli.main import main
from mlscale.search.space import parse_space

SPACE = {"optim.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
         "model.width": {"type": "int", "low": 16, "high": 64, "log": True},
         "model.depth": {"type": "int", "low": 1, "high": 2}}


def _base(**changes) -> TrainConfig:
    cfg = TrainConfig(epochs=2, progress=False, batch_size=128)
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def _study(result):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(result.study_dir / "journal.log")))
    return optuna.load_study(study_name=result.study_name, storage=storage)


def test_a_study_reports_a_best_config_that_mlscale_train_takes(tmp_path, capsys):
    result = tune(parse_space(SPACE), _base(), n_trials=3, sampler="random", pruner="none", out_dir=tmp_path,
                  study_name="s", progress=False)
    study = _study(result)
    trials = study.get_trials()
    assert result.n_complete == 3 and [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:  # every epoch's accuracy was reported, the last one is the trial's value
        assert sorted(t.intermediate_values) == [1, 2] and t.intermediate_values[2] == t.value
        summary = json.loads((tmp_path / "tune-s" / "trials").glob(f"trial-{t.number:04d}-*/summary.json").__next__().read_text())
        assert summary["test_accuracy"] == t.value
        # a trial is never resumed: it writes its final checkpoint only, none after each epoch
        run_dir = next((tmp_path / "tune-s" / "trials").glob(f"trial-{t.number:04d}-*"))
        assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == ["final.pt"]
        assert not (run_dir / "curves.png").exists()  # the study's plots stand for the trials'
    best = max(trials, key=lambda t: t.value)
    assert result.best_trial == best.number and result.best_value == best.value
    config = yaml.safe_load((tmp_path / "tune-s" / "best.yaml").read_text())
    assert config["optim"]["lr"] == best.params["optim.lr"] and config["model"]["width"] == best.params["model.width"]
    assert config["out_dir"] == "runs" and config["progress"] is False
    assert config["checkpoint_every_steps"] == 0 and config["curves"] is True  # the base's, not the trials'
    board = (tmp_path / "tune-s" / "leaderboard.txt").read_text().splitlines()
    assert board[0].split()[:3] == ["rank", "trial", "accuracy"] and board[1].split()[1] == str(best.number)
    for png in ("history.png", "importances.png"):
        assert (tmp_path / "tune-s" / png).read_bytes()[:4] == b"\x89PNG"
    # the best config trains again, to the trial's own accuracy (same seed, same everything)
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "tune-s" / "best.yaml"), "--out_dir", str(tmp_path / "again"),
                 "--threads", "1"]) == 0
    assert f"test accuracy  {best.value:.4f}" in capsys.readouterr().out


def test_asha_prunes_trials_on_their_per_epoch_accuracy(tmp_path):
    space = {"optim.lr": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True}, "optim.name": ["sgd", "adamw"]}
    result = tune(parse_space(space), _base(epochs=4), n_trials=8, sampler="random", pruner="asha",
                  out_dir=tmp_path, study_name="asha", progress=False)
    study = _study(result)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert result.n_pruned == len(pruned) >= 1 and result.n_complete + result.n_pruned == 8
    for t in pruned:  # stopped before the last epoch, after reporting every epoch it ran
        assert max(t.intermediate_values) < 4 and sorted(t.intermediate_values) == list(range(1, max(t.intermediate_values) + 1))


def test_diverging_and_invalid_trials_fail_with_their_error_and_the_study_goes_on(tmp_path):
    space = {"optim.lr": {"type": "categorical", "choices": [1e6, 0.01]}, "optim.name": ["sgd"],
             "model.name": ["mlp", "transformer"], "model.width": [30]}
    result = tune(parse_space(space), _base(), n_trials=4, sampler="grid", pruner="none", out_dir=tmp_path,
                  study_name="fail", progress=False)
    study = _study(result)
    by_config = {(t.params["optim.lr"], t.params["model.name"]): t for t in study.get_trials()}
    assert len(by_config) == 4 and result.n_failed == 3 and result.n_complete == 1
    assert by_config[(0.01, "mlp")].state == TrialState.COMPLETE
    assert "the training loss became nan" in by_config[(1e6, "mlp")].user_attrs["error"]
    assert "model.n_heads (4) must divide model.width (30)" in by_config[(0.01, "transformer")].user_attrs["error"]
    board = (tmp_path / "tune-fail" / "leaderboard.txt").read_text()
    assert f"trial {by_config[(1e6, 'mlp')].number} failed: the training loss became nan" in board


def test_the_same_study_name_continues_the_study(tmp_path, capsys):
    first = tune(parse_space(SPACE), _base(epochs=1), n_trials=2, sampler="random", pruner="none",
                 out_dir=tmp_path, study_name="c")
    values = {t.number: t.value for t in _study(first).get_trials()}
    again = tune(parse_space(SPACE), _base(epochs=1), n_trials=3, sampler="random", pruner="none",
                 out_dir=tmp_path, study_name="c", resume=True)
    trials = _study(again).get_trials()
    assert "continuing study 'c': 2 finished trial(s) kept" in capsys.readouterr().err
    assert len(trials) == 3 and {t.number: t.value for t in trials[:2]} == values
    with pytest.raises(MlscaleError, match="study 'c' searched another space"):
        tune(parse_space({"optim.lr": [0.1]}), _base(epochs=1), n_trials=4, out_dir=tmp_path, study_name="c")
    with pytest.raises(MlscaleError, match="--resume: no study 'other'"):
        tune(parse_space(SPACE), _base(epochs=1), out_dir=tmp_path, study_name="other", resume=True)


@pytest.mark.multiprocess
def test_parallel_workers_share_one_study_and_run_exactly_the_budget(tmp_path):
    result = tune(parse_space(SPACE), _base(epochs=1), n_trials=4, parallel=2, sampler="random", pruner="none",
                  out_dir=tmp_path, study_name="par", progress=False)
    trials = [t for t in _study(result).get_trials() if not t.user_attrs.get("surplus")]
    assert result.n_complete == 4 and [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({tuple(t.params.values()) for t in trials}) == 4  # seeded per worker: no repeated draws
    for t in trials:
        assert t.user_attrs["config"]["threads"] == max(1, (os.cpu_count() or 1) // 2)  # cores / 2 workers


@pytest.mark.multiprocess
def test_a_trial_can_itself_be_data_parallel(tmp_path):
    result = tune(parse_space({"optim.lr": [0.01]}), _base(), n_trials=1, workers_per_trial=2,
                  sampler="grid", pruner="median", out_dir=tmp_path, study_name="dp", progress=False)
    trials = _study(result).get_trials()
    assert result.n_complete == 1
    for t in trials:  # the watcher reported every epoch of the 2-worker run
        assert t.user_attrs["config"]["workers"] == 2 and sorted(t.intermediate_values) == [1, 2]
        assert t.intermediate_values[2] == t.value


@pytest.mark.multiprocess
def test_a_pruned_data_parallel_trial_stops_its_workers(small_config):
    """The watcher reports the 2-worker run's epochs as they are logged; pruned after epoch 1 (a
    threshold no run reaches), it stops the workers and the trial ends PRUNED, not failed."""
    import multiprocessing

    from mlscale.search.objective import _train_data_parallel

    cfg = small_config(epochs=30, workers=2, name="trial-0000")  # far longer than the watcher takes to see epoch 1
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.999))
    study.optimize(lambda trial: _train_data_parallel(trial, cfg).test_accuracy, n_trials=1)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    (run_dir,) = (p.parent for p in Path(cfg.out_dir).glob("trial-0000-*/metrics.jsonl"))
    assert not (run_dir / "summary.json").exists()  # stopped before the end
    assert [p for p in multiprocessing.active_children() if p.name.startswith("mlscale-rank")] == []
