"""Device discovery, measurement and the per-machine cache, on this machine's real devices."""

import json

import pytest
import torch

from mlscale.processors import devices as dv
from mlscale.processors.devices import (
    ERROR, NOT_INSTALLED, OK, MeasuredDevice, cache_path, choose_device, discover_devices,
    measure_devices, measured_devices,
)


def test_discovery_lists_the_cpu_with_its_model_cores_threads_and_simd(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\ncpu MHz\t\t: 2500.000\n"
                       "flags\t\t: fpu sse4_2 avx avx2 fma avx512f amx_bf16 amx_tile\n")
    cpu = discover_devices(cpuinfo)[0]
    assert (cpu.kind, cpu.index, cpu.name, cpu.status) == ("cpu", "cpu", "Test CPU 9000", OK)
    assert cpu.detail["simd"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "amx_tile", "amx_bf16"]
    assert cpu.detail["mhz"] == 2500.0
    assert cpu.detail["torch_threads"] == torch.get_num_threads() and cpu.detail["cores"] >= 1


def test_without_proc_cpuinfo_the_cpu_is_still_a_row(tmp_path):
    cpu = discover_devices(tmp_path / "no-cpuinfo")[0]
    assert cpu.kind == "cpu" and cpu.status == OK and cpu.name and cpu.detail["simd"] == []


def test_every_kind_has_a_row_and_an_absent_xla_is_reported_not_raised():
    rows = discover_devices()
    assert [r.kind for r in rows][0] == "cpu"
    assert {"cpu", "cuda", "mps", "xla"} <= {r.kind for r in rows}
    xla = next(r for r in rows if r.kind == "xla")
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        assert xla.status == NOT_INSTALLED and "torch_xla" in xla.error


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA really is absent")
def test_cuda_claimed_but_failing_is_an_error_row_and_auto_falls_back_to_cpu(monkeypatch):
    # torch says CUDA is available, so discovery really queries the device; on this CPU-only build
    # that query fails inside torch, the path a broken driver takes.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cuda = [r for r in discover_devices() if r.kind == "cuda"]
    assert len(cuda) == 1 and cuda[0].status == ERROR and "compiled with CUDA" in cuda[0].error
    choice = choose_device("auto")
    assert choice.device == torch.device("cpu") and "cuda error" in choice.reason


def test_measure_then_cache_hit_then_remeasure(tmp_path):
    first = measure_devices(remeasure=True, cache_dir=tmp_path, matmul_n=128, copy_bytes=2**20, repeats=3)
    cpu = first[0]
    assert isinstance(cpu, MeasuredDevice) and cpu.kind == "cpu" and cpu.name
    assert cpu.matmul_flops["fp32"] > 0 and cpu.mem_bandwidth > 0
    lo, hi = cpu.matmul_spread["fp32"]
    assert lo <= cpu.matmul_flops["fp32"] <= hi and cpu.repeats == 3
    path = cache_path(tmp_path)
    assert path.exists() and json.loads(path.read_text())["measured"][0]["name"] == cpu.name

    # a cache hit returns the stored figures (equal, measured_at included) without measuring
    assert measured_devices(tmp_path) == first
    # remeasure measures again and rewrites the cache
    again = measure_devices(remeasure=True, cache_dir=tmp_path, matmul_n=128, copy_bytes=2**20, repeats=2)
    assert again[0].repeats == 2 and measured_devices(tmp_path)[0].repeats == 2


def test_a_damaged_cache_is_measured_afresh(tmp_path):
    path = cache_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    got = measure_devices(cache_dir=tmp_path, matmul_n=64, copy_bytes=2**16, repeats=2)
    assert got[0].matmul_flops["fp32"] > 0 and json.loads(path.read_text())["version"] == dv.CACHE_VERSION


def test_cache_key_changes_with_the_devices_found():
    rows = discover_devices()
    other = rows + [dv.DeviceInfo("cuda", "cuda:7", "Some GPU", OK)]
    assert cache_path("/x", rows) != cache_path("/x", other)
    assert cache_path("/x", rows) == cache_path("/x", discover_devices())
