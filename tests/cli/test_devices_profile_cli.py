"""`mlscale devices` and `mlscale profile` end to end (in-process main(), a real cache in tmp)."""

import json
import subprocess
import sys

import pytest
import torch

from mlscale.cli.main import main
from mlscale.processors.devices import measure_devices


@pytest.fixture(autouse=True)
def one_thread():
    """The cache is keyed by torch's thread count: measure and read it at 1 thread (the subprocess
    below says --threads 1), whatever an earlier test in this process left the setting at."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    """A real measurement (small sizes) in a private cache directory the CLI is pointed at."""
    d = tmp_path_factory.getbasetemp() / "device-cache"
    if not d.exists():
        measure_devices(remeasure=True, cache_dir=d, matmul_n=128, copy_bytes=2**20, repeats=2)
    monkeypatch.setenv("MLSCALE_CACHE_DIR", str(d))
    return d


def test_devices_table_reads_the_cache(cache, capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cpu" in out and "torch uses" in out and "matmul fp32 (n=128)" in out and "GB/s" in out
    assert "not installed" in out or "xla" in out  # every kind has its row
    assert str(cache) in out


def test_devices_json_and_roofline(cache, capsys, tmp_path):
    png = tmp_path / "roof.png"
    assert main(["devices", "--json", "--roofline", str(png)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["devices"][0]["kind"] == "cpu"
    assert {d["kind"] for d in data["devices"]} >= {"cpu", "cuda", "mps", "xla"}
    cpu = data["measured"][0]
    assert cpu["matmul_flops"]["fp32"] > 0 and cpu["mem_bandwidth"] > 0 and cpu["matmul_n"] == 128
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_devices_remeasure_quick_rewrites_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLSCALE_CACHE_DIR", str(tmp_path))
    assert main(["devices", "--remeasure", "--quick", "--repeats", "2", "--json"]) == 0
    cpu = json.loads(capsys.readouterr().out)["measured"][0]
    assert cpu["repeats"] == 2 and cpu["matmul_n"] == 1024
    assert len(list(tmp_path.glob("devices-*.json"))) == 1


def test_broken_cuda_is_a_row_and_the_cpu_is_still_measured(tmp_path, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine where CUDA really is absent")
    # torch claims a GPU, so the real device query runs and fails inside torch (CPU-only build)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("MLSCALE_CACHE_DIR", str(tmp_path))
    assert main(["devices", "--quick", "--repeats", "2"]) == 0
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if line.startswith("cuda"))
    assert "error" in row and "not compiled with CUDA" in row
    assert "matmul fp32" in captured.out and "measuring matmul FLOP/s" in captured.err


def test_profile_builtin_model_table(cache, capsys, tmp_path):
    png = tmp_path / "p.png"
    assert main(["profile", "--model", "cnn", "--width", "8", "--depth", "1", "--batch", "8",
                 "--roofline", str(png)]) == 0
    out = capsys.readouterr().out
    assert "profile of cnn, batch 8" in out and "Conv2d" in out and "tpu-v1 ms" in out
    assert "recommendation: cpu, batch" in out and png.exists()


def test_profile_factory_json(cache, capsys, tmp_path):
    f = tmp_path / "my_net.py"
    f.write_text("import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(12, 6), torch.nn.ReLU())\n")
    assert main(["profile", "--model", f"{f}:build", "--input-shape", "12", "--batch", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "my_net.py:build" and data["layers"][0]["flops"] == 2 * 4 * 12 * 6
    assert data["recommendation"]["device"] == "cpu"


@pytest.mark.parametrize("argv, message", [
    (["profile", "--model", "resnet", "--batch", "4"], "unknown model 'resnet'"),
    (["profile", "--model", "mlp", "--batch", "0"], "--batch must be >= 1"),
    (["profile", "--model", "mlp"], "the following arguments are required: --batch"),
    (["profile", "--model", "mlp", "--batch", "x"], "invalid int value"),
    (["profile", "--model", "mlp", "--batch", "2", "--input-shape", "1,a"], "--input-shape must be"),
    (["profile", "--model", "nope.py:build", "--batch", "2"], "nope.py: no such file"),
    (["profile", "--model", "mlp", "--batch", "2", "--roofline", "out.jpg"], "must name a .png"),
    (["profile", "--model", "mlp", "--batch", str(10**12)], "does not fit in memory"),
    (["devices", "--repeats", "0"], "--repeats must be >= 1"),
    (["devices", "--bogus"], "unrecognized arguments: --bogus"),
    (["devices", "--threads", "0"], "--threads must be >= 1"),
])
def test_bad_input_is_one_line(argv, message, cache, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlscale {argv[0]}: error: ") and message in err
    assert err.count("\n") == 1


def test_factory_errors_are_one_line(cache, capsys, tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("def build():\n    return 42\n\ndef boom():\n    raise ValueError('no weights here')\n")
    for spec, message in [(f"{f}:build", "returned a int, not a torch.nn.Module"),
                          (f"{f}:missing", "no callable 'missing'"), (f"{f}:boom", "ValueError: no weights here")]:
        assert main(["profile", "--model", spec, "--batch", "2"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_a_model_that_fails_on_the_input_shape_is_one_line_from_the_real_command(cache, tmp_path):
    f = tmp_path / "net12.py"
    f.write_text("import torch\n\ndef build():\n    return torch.nn.Linear(12, 6)\n")
    proc = subprocess.run([sys.executable, "-m", "mlscale", "profile", "--model", f"{f}:build", "--batch", "2",
                           "--input-shape", "3,5", "--threads", "1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("mlscale profile: error: the model fails on a batch of shape (2, 3, 5): RuntimeError")
    assert proc.stderr.count("\n") == 1
