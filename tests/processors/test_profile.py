"""profile_model on real models and this machine's CPU; the roofline picture; vendor peaks."""

import math

import pytest
import torch
from torch import nn

from mlscale.errors import MlscaleError
from mlscale.processors.devices import measure_devices
from mlscale.processors.profile import SYSTOLIC_CLOCK_HZ, profile_model
from mlscale.processors.roofline import plot_roofline
from mlscale.processors.systolic import Layer, simulate
from mlscale.processors.vendor_peaks import cpu_peak, gpu_peak


@pytest.fixture(scope="module")
def cpu_devices(tmp_path_factory):
    return measure_devices(remeasure=True, cache_dir=tmp_path_factory.mktemp("cache"), matmul_n=128,
                           copy_bytes=2**20, repeats=2)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.ReLU()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        h = self.act(self.fc1(x))                      # (B, 16) -> (B, 32)
        t = h.reshape(h.shape[0], 4, 8)                # 4 tokens of 8
        a, _ = self.attn(t, t, t, need_weights=False)
        return self.fc2(a.reshape(h.shape[0], 32))


def test_layers_flops_bytes_bounds_and_systolic_column(cpu_devices):
    B = 8
    prof = profile_model(Net(), (16,), B, cpu_devices, name="net", batches=[2, 8], repeats=2, min_sample_s=0.001)
    by_name = {l.name: l for l in prof.layers}
    assert list(by_name) == ["fc1", "act", "attn", "fc2"]  # attention whole, its out_proj not separate

    fc1 = by_name["fc1"]
    assert fc1.flops == 2 * B * 16 * 32
    # input + weight + bias + output, fp32
    assert fc1.bytes_moved == 4 * (B * 16 + 16 * 32 + 32 + B * 32)
    assert math.isclose(fc1.intensity, fc1.flops / fc1.bytes_moved)
    assert by_name["act"].flops == 0 and by_name["act"].systolic_s is None
    assert by_name["attn"].flops == 2 * B * 4 * 8 * 24 + 2 * B * 4 * 8 * 8 + 2 * B * 2 * 4 * 4 * 4 * 2

    cpu = cpu_devices[0]
    ridge = cpu.matmul_flops["fp32"] / cpu.mem_bandwidth
    for layer in prof.layers:
        assert layer.time_s["cpu"] > 0
        assert layer.bound["cpu"] == ("compute" if layer.intensity >= ridge else "memory")

    # the TPU-like column is the simulator's cycles for the layer's GEMM at the stated clock
    cycles = simulate([Layer.gemm("fc1", B, 16, 32)], "tpu-v1").layers[0].total_cycles
    assert fc1.systolic_s == pytest.approx(cycles / SYSTOLIC_CLOCK_HZ)
    assert by_name["attn"].systolic_s > 0

    rec = prof.recommendation
    assert rec.device == "cpu" and rec.batch in (2, 8)
    assert rec.samples_per_s == prof.throughput["cpu"][rec.batch] > 0
    assert "samples/s" in rec.reason and "tpu-v1" in rec.reason
    assert prof.to_dict()["layers"][0]["name"] == "fc1"


def test_conv_layer_profile(cpu_devices):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    prof = profile_model(model, (1, 8, 8), 2, cpu_devices, batches=[2], repeats=2, min_sample_s=0.001)
    conv = prof.layers[0]
    assert conv.type == "Conv2d" and conv.flops == 2 * 2 * 64 * 4 * 9
    cycles = simulate([Layer.gemm("c", 2 * 64, 9, 4)], "tpu-v1").layers[0].total_cycles
    assert conv.systolic_s == pytest.approx(cycles / SYSTOLIC_CLOCK_HZ)


def test_bad_input_is_one_clear_error(cpu_devices):
    with pytest.raises(MlscaleError, match="batch must be a positive integer"):
        profile_model(Net(), (16,), 0, cpu_devices)
    with pytest.raises(MlscaleError, match=r"fails on a batch of shape \(2, 5\)"):
        profile_model(Net(), (5,), 2, cpu_devices)


def test_roofline_png_has_roofs_and_layers(cpu_devices, tmp_path):
    import matplotlib.image

    prof = profile_model(Net(), (16,), 4, cpu_devices, batches=[4], repeats=2, min_sample_s=0.001)
    path = plot_roofline(cpu_devices, tmp_path / "roof.png", prof)
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 400
    assert img[..., :3].std() > 0.05  # not a blank canvas
    with pytest.raises(MlscaleError, match="cannot write"):
        plot_roofline(cpu_devices, tmp_path / "missing-dir" / "roof.png")


def test_vendor_peaks():
    assert gpu_peak("NVIDIA H100 80GB HBM3").mem_bandwidth == 3350e9
    assert gpu_peak("NVIDIA H100 PCIe").matmul_flops["bf16"] == 756e12
    assert gpu_peak("NVIDIA H200").mem_bandwidth == 4800e9
    assert gpu_peak("NVIDIA A100-SXM4-80GB").mem_bandwidth == 2039e9
    assert gpu_peak("NVIDIA GeForce GT 710") is None
    # 4 cores x 3 GHz x (2 FLOPs x 16 lanes x 2 FMA units)
    assert cpu_peak(4, 3000.0, ["avx512f", "avx2", "fma"]).matmul_flops["fp32"] == 4 * 3e9 * 64
    assert cpu_peak(4, 3000.0, ["avx512f", "amx_bf16"]).matmul_flops["bf16"] == 4 * 3e9 * 1024
    assert cpu_peak(4, None, ["avx2", "fma"]) is None and cpu_peak(4, 3000.0, ["sse2"]) is None


def test_recommendation_takes_the_fastest_device_at_its_smallest_near_best_batch(cpu_devices):
    from mlscale.processors.profile import LayerProfile, _recommend

    layers = [LayerProfile("fc", "Linear", 1000, 100, {"cpu": 1e-3, "cuda:0": 1e-5},
                           {"cpu": "compute", "cuda:0": "memory"}, 1e-6)]
    throughput = {"cpu": {16: 1e4, 64: 2e4, 256: 2.1e4}, "cuda:0": {16: 1e5, 64: 3.7e5, 256: 4e5}}
    rec = _recommend(layers, cpu_devices, throughput, 64)
    # cuda:0 is fastest; 64 reaches 3.7e5 >= 0.9 x 4e5, so the larger batch buys too little
    assert (rec.device, rec.batch, rec.samples_per_s) == ("cuda:0", 64, 3.7e5)
    assert "1 of 1 matmul layers are memory-bound" in rec.reason and "cpu 21,000/s" in rec.reason


def test_an_eval_mode_model_is_profiled_whole_and_its_mode_restored(cpu_devices):
    # in eval mode MultiheadAttention may take a fused native kernel that counts no FLOPs
    model = Net().eval()
    prof = profile_model(model, (16,), 2, cpu_devices, batches=[2], repeats=2, min_sample_s=0.001, systolic=False)
    assert not model.training
    attn = next(l for l in prof.layers if l.name == "attn")
    assert attn.flops == 2 * 2 * 4 * 8 * 24 + 2 * 2 * 4 * 8 * 8 + 2 * 2 * 2 * 4 * 4 * 4 * 2


def test_recommendation_points_at_bf16_when_its_roof_is_higher():
    from mlscale.processors.devices import MeasuredDevice
    from mlscale.processors.profile import LayerProfile, _recommend

    gpu = MeasuredDevice("GPU", "cuda", "cuda:0", {"fp32": 1e13, "bf16": 1e14}, 1e12)
    layers = [LayerProfile("fc", "Linear", 10**9, 10**6, {"cuda:0": 1e-4}, {"cuda:0": "compute"}, None)]
    rec = _recommend(layers, [gpu], {"cuda:0": {8: 1e5}}, 8)
    assert rec.device == "cuda:0" and "10.0x its fp32 one" in rec.reason and "tpu-v1" not in rec.reason


def test_a_batchnorm_model_is_timed_at_batch_one(cpu_devices):
    # the throughput sweep tries batch 1, which BatchNorm refuses in train mode; it is timed in eval mode
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    prof = profile_model(model, (16,), 8, cpu_devices, batches=[1, 8], repeats=2, min_sample_s=0.001, systolic=False)
    assert set(prof.throughput["cpu"]) == {1, 8} and model.training
