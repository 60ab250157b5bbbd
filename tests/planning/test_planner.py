"""The planner on a hand-made calibration: predictions, answers, catalog, errors."""

from dataclasses import dataclass

import pytest
import torch

from mlscale.errors import MlscaleError
from mlscale.planning.calibrate import Calibration, LinkFit
from mlscale.planning.catalog import (
    GPU_LAUNCH_S, SPEC_SHEET_UTILISATION, DeviceSpec, catalog_from_measured, load_catalog, select, spec_sheet_devices,
)
from mlscale.planning.costmodel import Link, StepProfile
from mlscale.planning.planner import answer, cheapest_overall, compute_scale, predict, steps_for_epochs

LINK = Link(alpha_s=1e-4, bandwidth_bytes_per_s=1e9)


def _cal(compute_s=0.1, grad_bytes=10_000_000, ops=0):
    profile = StepProfile(compute_s=compute_s, backward_s=compute_s / 2, input_wait_s=0.0, bucket_bytes=(grad_bytes,),
                          ops_per_step=ops)
    return Calibration(profile=profile, link_fit=LinkFit(LINK, 2, "gloo", (1,), (1.0,)), matmul_flops=1e11,
                       threads=2, device="cpu", batch_size=100, n_train=102_400, grad_accum_steps=1, epochs=1)


def test_steps_for_epochs_drops_remainders():
    assert steps_for_epochs(1000, 64, 1, 1, 2) == 15 * 2
    assert steps_for_epochs(1000, 64, 2, 1, 1) == 7
    assert steps_for_epochs(1000, 64, 1, 4, 1) == 4  # 15 micro-batches -> 4 optimizer steps
    assert steps_for_epochs(100, 64, 2, 1, 5) == 0


def test_cpu_predictions_hand_computed():
    cal = _cal()
    cpu = load_catalog(cal.matmul_flops, include_measured=False)["cpu"]
    one, two = predict(cal, [cpu], [1, 2])
    assert one.step.step_s == pytest.approx(0.1) and one.steps_total == 1024 and one.time_s == pytest.approx(102.4)
    # 2 workers: one 10 MB bucket ready at the end of backward: fully exposed, 1e7/1e9 + 2e-4 s
    assert two.step.exposed_comm_s == pytest.approx(0.0102)
    assert two.step.step_s == pytest.approx(0.1102) and two.steps_total == 512
    assert two.speedup == pytest.approx(2 * 0.1 / 0.1102) and two.efficiency == pytest.approx(0.1 / 0.1102)
    assert two.samples_per_s == pytest.approx(200 / 0.1102)


def test_spec_sheet_devices_scale_compute_and_use_their_links():
    cal = _cal()
    h100 = load_catalog(cal.matmul_flops, include_measured=False)["h100-sxm"]
    assert compute_scale(cal, h100, "bf16") == pytest.approx(1e11 / (989e12 * SPEC_SHEET_UTILISATION))
    eight, sixteen = predict(cal, [h100], [8, 16])
    assert h100.link_for(8) == h100.link and h100.link_for(16) == h100.network  # past one node: the network
    assert sixteen.step.comm_s > eight.step.comm_s


def test_a_gpu_step_takes_at_least_its_launches():
    cal = _cal(ops=1000)
    h100 = load_catalog(cal.matmul_flops, include_measured=False)["h100-sxm"]
    assert h100.launch_s > 0
    assert compute_scale(cal, h100, "bf16") == pytest.approx(1000 * h100.launch_s / 0.1)  # 6 ms of launches
    (one,) = predict(cal, [h100], [1])
    assert one.step.compute_s == pytest.approx(1000 * h100.launch_s)
    tpu = load_catalog(cal.matmul_flops, include_measured=False)["tpu-v5e"]  # compiled steps: FLOPs decide
    assert compute_scale(cal, tpu, "bf16") == pytest.approx(1e11 / (197e12 * SPEC_SHEET_UTILISATION))


def test_answers_deadline_knee_and_cost():
    cal = _cal()
    catalog = load_catalog(cal.matmul_flops, include_measured=False)
    prices = {"cpu": 1.0, "h100-sxm": 3.0}
    preds = predict(cal, select(catalog, ["cpu", "h100-sxm"]), [1, 2, 4, 8, 16, 32, 64], prices)
    cpu_rows = [p for p in preds if p.device == "cpu"]
    for p in cpu_rows:
        assert p.cost == pytest.approx(p.n_workers * p.time_s / 3600 * 1.0)
    answers = answer(preds, deadline_s=30.0, min_efficiency=0.8)
    cpu = answers[0]
    assert cpu.device == "cpu"
    meeting = [p for p in cpu_rows if p.time_s <= 30.0]
    assert cpu.within_deadline == min(meeting, key=lambda p: p.cost)
    assert cpu.knee.efficiency >= 0.8 and all(p.efficiency < 0.8 for p in cpu_rows if p.n_workers > cpu.knee.n_workers)
    assert cpu.fastest.time_s == min(p.time_s for p in cpu_rows)
    best = cheapest_overall(answers)
    assert best.cost == min(a.within_deadline.cost for a in answers if a.within_deadline)
    assert answer(preds, deadline_s=1e-9)[0].within_deadline is None


def test_catalog_errors_and_sources():
    catalog = load_catalog(1e11, include_measured=False)
    with pytest.raises(MlscaleError, match="'b200' is not in the device catalog; it holds"):
        select(catalog, ["cpu", "b200"])
    for d in spec_sheet_devices():
        assert d.source and d.link is not None and d.mem_bandwidth > 0 and all(v > 0 for v in d.peak_flops.values())
    with pytest.raises(MlscaleError, match="no price for device 'h100-sxm'"):
        predict(_cal(), [catalog["h100-sxm"]], [1], {"cpu": 1.0})


@dataclass
class _Measured:  # what mlscale.processors.devices.measured_devices() returns, in shape
    name: str
    kind: str
    matmul_flops: dict
    mem_bandwidth: float


def test_measured_devices_enter_the_catalog():
    specs = catalog_from_measured([_Measured("cuda:0", "cuda", {"fp32": 5e13, "bf16": 2e14}, 3e12),
                                   _Measured("cuda:1", "cuda", {}, 0.0)])  # every dtype failed: left out
    assert specs == [DeviceSpec("cuda:0", "cuda", {"fp32": 5e13, "bf16": 2e14}, 3e12, measured=True,
                                launch_s=GPU_LAUNCH_S)]
    cal = _cal()
    assert compute_scale(cal, specs[0], "bf16") == pytest.approx(1e11 / 2e14)  # measured: no utilisation discount
    (p,) = predict(cal, specs, [2])
    assert p.step.comm_s == pytest.approx(1e7 / 1e9 + 2e-4)  # no link of its own: the calibrated one


def test_public_plan_with_a_given_calibration(tmp_path):
    import mlscale

    prices = tmp_path / "prices.yaml"
    prices.write_text("cpu: 0.5\nh100-sxm: 3\n")
    seen = []
    p = mlscale.plan(mlscale.TrainConfig(), "1-16", "cpu,h100-sxm", deadline="2m", prices=str(prices),
                     calibration=_cal(), on_calibrated=seen.append)
    assert seen == [p.calibration] and [a.device for a in p.answers] == ["cpu", "h100-sxm"]
    assert len(p.predictions) == 2 * 5 and p.cheapest is not None and p.cheapest.time_s <= 120
    with pytest.raises(MlscaleError, match="'tpu-v9' is not in the device catalog"):
        mlscale.plan(None, [1, 2], ["tpu-v9"], calibration=_cal())
    with pytest.raises(MlscaleError, match="strategy fsdp is not modelled"):
        mlscale.plan(mlscale.TrainConfig(strategy="fsdp"), [1, 2], "cpu", calibration=_cal())
    with pytest.raises(MlscaleError, match="deadline must be positive"):
        mlscale.plan(None, [1, 2], "cpu", deadline=-5.0, calibration=_cal())


def test_a_gpu_calibration_is_its_own_catalog_entry():
    from dataclasses import replace

    cal = replace(_cal(), device="cuda", matmul_flops=2e14)
    catalog = load_catalog(cal.matmul_flops, include_measured=False, host="cuda")
    assert "cpu" not in catalog and catalog["cuda"].measured
    assert compute_scale(cal, catalog["cuda"], "bf16") == 1.0
    assert compute_scale(cal, catalog["h100-sxm"], "bf16") == pytest.approx(2e14 / (989e12 * SPEC_SHEET_UTILISATION))


def test_the_catalog_reads_what_mlscale_devices_measured_and_never_measures(tmp_path):
    from mlscale.planning.catalog import _measured
    from mlscale.processors.devices import measure_devices

    assert _measured(tmp_path) == []  # nothing cached: nothing measured either
    assert not list(tmp_path.iterdir())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # cached at 1 thread, read at another count: the cache key's thread count does not matter here
        (cpu,) = measure_devices(remeasure=True, cache_dir=tmp_path, matmul_n=64, copy_bytes=2**16, repeats=1)
    finally:
        torch.set_num_threads(threads)
    (spec,) = _measured(tmp_path)
    assert spec.measured and spec.name == cpu.name and spec.peak_flops == cpu.matmul_flops
