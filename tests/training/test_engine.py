import json
import shutil

import pytest
import torch
from torch import nn

from mlscale import MlscaleError, RunFailed, train
from mlscale.training import checkpoint as ckpt
from mlscale.training.data import ArrayDataset


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_default_run_learns_digits_and_writes_its_outputs(small_config):
    result = train(small_config(epochs=3))
    assert result.completed and result.epochs_done == 3 and result.steps == 3 * 22
    assert result.test_accuracy > 0.9
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "curves.png", "checkpoints"} <= files
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rec = [r for r in records if r["kind"] == "train"]
    assert {"step", "epoch", "loss", "accuracy", "samples_per_s", "lr"} <= set(train_rec[0])
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2, 3]
    assert (result.run_dir / "checkpoints" / "final.pt").exists()
    assert json.loads((result.run_dir / "summary.json").read_text())["steps"] == 66


def test_same_seed_same_result_on_cpu(small_config):
    a = train(small_config(model__dropout=0.2))
    b = train(small_config(model__dropout=0.2))
    c = train(small_config(model__dropout=0.2, seed=1))
    assert torch.equal(_params(a.model), _params(b.model))
    assert not torch.equal(_params(a.model), _params(c.model))


@pytest.mark.parametrize(
    "changes, stop",
    [
        ({}, 22),  # stop at the end of epoch 1 of 2
        ({"model__dropout": 0.3, "grad_accum_steps": 2, "checkpoint_every_steps": 4, "optim__name": "sgd"}, 5),
        ({"model__name": "cnn", "model__width": 8, "optim__warmup_steps": 5}, 13),
    ],
)
def test_resume_reaches_the_same_final_state(small_config, changes, stop):
    whole = train(small_config(**changes))
    first = train(small_config(stop_at_step=stop, **changes))
    assert not first.completed and first.steps == stop
    resumed = train(small_config(**changes), resume=first.run_dir)
    assert resumed.completed and resumed.steps == whole.steps
    torch.testing.assert_close(_params(resumed.model), _params(whole.model), atol=1e-6, rtol=0)
    # metrics of the resumed run continue where the checkpoint left off, with no duplicates
    steps = [json.loads(l)["step"] for l in (first.run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["kind"] == "train"]
    assert steps == sorted(set(steps))


def test_gradient_accumulation_equals_the_bigger_batch(small_config):
    big = train(small_config(batch_size=64, optim__name="sgd"))
    accum = train(small_config(batch_size=32, grad_accum_steps=2, optim__name="sgd"))
    assert big.steps == accum.steps
    torch.testing.assert_close(_params(accum.model), _params(big.model), atol=1e-5, rtol=0)


def test_clipping_and_constant_schedule_run(small_config):
    result = train(small_config(grad_clip_norm=0.5, optim__schedule="constant", optim__weight_decay=0.01))
    assert result.test_accuracy > 0.8


def test_resuming_a_finished_run_is_a_no_op(small_config):
    done = train(small_config(epochs=1))
    again = train(None, resume=done.run_dir)
    assert again.steps == done.steps and again.completed
    torch.testing.assert_close(_params(again.model), _params(done.model))


def test_diverging_loss_stops_the_run(small_config):
    with pytest.raises(RunFailed, match=r"loss became (nan|inf).*no checkpoint had been written"):
        train(small_config(epochs=3, optim__name="sgd", optim__lr=1e12, log_every_steps=1))


def test_a_new_learning_rate_is_not_a_resumable_change(small_config):
    first = train(small_config(epochs=3, optim__name="sgd", optim__lr=1e-2, stop_at_step=22))
    with pytest.raises(MlscaleError, match="optim.lr"):
        train(small_config(epochs=3, optim__name="sgd", optim__lr=1e12), resume=first.run_dir)


def test_nan_after_a_checkpoint_names_it_and_keeps_it(small_config):
    x = torch.randn(200, 4)
    y = (x[:, 0] > 0).long()
    x_bad = x.clone()
    x_bad[7] = float("inf")  # one poisoned sample: some step after the first meets it
    cfg = small_config(epochs=5, batch_size=8, checkpoint_every_steps=1, log_every_steps=1)
    with pytest.raises(RunFailed, match="the last good checkpoint is .*step-") as err:
        train(cfg, model=nn.Linear(4, 2), train_data=ArrayDataset(x_bad, y), test_data=ArrayDataset(x, y))
    path = str(err.value).split("the last good checkpoint is ")[1].split(". ")[0]
    state = ckpt.load_checkpoint(path)
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_any_module_and_dataset(small_config):
    class Pairs(torch.utils.data.Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(n)
            self.x = torch.randn(n, 6, generator=g)
            self.y = (self.x.sum(1) > 0).long()

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], self.y[i]

    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 2))
    result = train(small_config(epochs=5, batch_size=16), model=model, train_data=Pairs(400), test_data=Pairs(100))
    assert result.model is model and result.test_accuracy > 0.85
    assert result.run_dir.name.startswith("sequential-Pairs")
    # built-in model on a user dataset: shape and classes inferred
    assert train(small_config(epochs=1), train_data=Pairs(64), test_data=Pairs(16)).steps == 1


def test_resume_with_another_config_or_data_is_refused(small_config, tmp_path):
    first = train(small_config(stop_at_step=3))
    with pytest.raises(MlscaleError, match=r"written with model.width=128, this config has model.width=64"):
        train(small_config(model__width=64), resume=first.run_dir)
    with pytest.raises(MlscaleError, match="not a run directory"):
        train(None, resume=tmp_path)
    with pytest.raises(MlscaleError, match="written with epochs=2, this config has epochs=3"):
        train(small_config(epochs=3), resume=first.run_dir)  # with cosine, the length shapes the schedule
    other = train(small_config(stop_at_step=2, seed=5))
    ckpt_path = ckpt.latest_checkpoint(other.run_dir)
    target = ckpt.latest_checkpoint(first.run_dir)
    target.write_bytes(ckpt_path.read_bytes())  # bytes copied over a recorded checkpoint: caught by its checksum
    with pytest.raises(MlscaleError, match="no usable checkpoint"):
        train(None, resume=first.run_dir)
    shutil.rmtree(ckpt.checkpoint_dir(first.run_dir))  # another run's whole checkpoint directory
    shutil.copytree(ckpt.checkpoint_dir(other.run_dir), ckpt.checkpoint_dir(first.run_dir))
    with pytest.raises(MlscaleError, match="written with seed=5"):
        train(None, resume=first.run_dir)


def test_extending_a_finished_constant_schedule_run_moves_forward(small_config):
    done = train(small_config(epochs=1, optim__schedule="constant"))
    part = train(small_config(epochs=3, optim__schedule="constant", stop_at_step=30), resume=done.run_dir)
    assert part.steps == 30 and not part.completed
    assert not (done.run_dir / "checkpoints" / "final.pt").exists()  # superseded by step 30
    rest = train(small_config(epochs=3, optim__schedule="constant"), resume=done.run_dir)
    assert rest.completed and rest.steps == 66
    straight = train(small_config(epochs=3, optim__schedule="constant"))
    torch.testing.assert_close(_params(rest.model), _params(straight.model), atol=1e-6, rtol=0)


def test_changed_data_file_is_detected_on_resume(small_config, tmp_path):
    path = tmp_path / "d.csv"
    rows = [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(100)]
    path.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    first = train(small_config(data__dataset=str(path), batch_size=8, stop_at_step=3))
    path.write_text("a,b,label\n" + "\n".join(rows[:90]) + "\n")
    with pytest.raises(MlscaleError, match=r"the data changed since .*\(80 train / 20 test samples then, 72 / 18 now\)"):
        train(None, resume=first.run_dir)
    path.write_text("a,b,label\n" + "\n".join(rows[:99] + ["6,4,1"]) + "\n")  # same size, one row edited
    with pytest.raises(MlscaleError, match="the data changed since .*same size, other contents"):
        train(None, resume=first.run_dir)


def test_baseline_must_be_a_finished_run_of_the_same_job(small_config, tmp_path):
    with pytest.raises(MlscaleError, match="not a finished run directory"):
        train(small_config(baseline=str(tmp_path)))
    base = train(small_config(epochs=1))
    with pytest.raises(MlscaleError, match="ran another job: model.width=128 there, 64 here"):
        train(small_config(epochs=1, model__width=64, baseline=str(base.run_dir)))
    result = train(small_config(epochs=1, baseline=str(base.run_dir)))
    assert 0.2 < result.scaling_efficiency < 5  # 1 worker vs itself: about 1, timing noise aside


def test_bad_sizes(small_config):
    with pytest.raises(MlscaleError, match="larger than the training split"):
        train(small_config(batch_size=5000))
    with pytest.raises(MlscaleError, match="give train_data and test_data together"):
        train(small_config(), train_data=ArrayDataset(torch.zeros(4, 2), torch.zeros(4).long()))
    with pytest.raises(MlscaleError, match="unknown device 'tpu9'"):
        train(small_config(device="tpu9"))


def test_loader_workers_feed_the_same_batches(small_config):
    in_process = train(small_config(epochs=1))
    with_workers = train(small_config(epochs=1, data__num_workers=2, data__prefetch_factor=4))
    torch.testing.assert_close(_params(with_workers.model), _params(in_process.model), atol=0, rtol=0)


def test_bf16_autocast_runs_on_cpu_when_asked(small_config):
    result = train(small_config(epochs=3, precision="bf16"))
    assert result.test_accuracy > 0.85
