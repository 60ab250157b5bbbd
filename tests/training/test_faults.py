"""Faults injected for real: SIGKILLed workers and launchers, full and read-only file systems, torn
checkpoints. Each test checks that no finished work is lost: the run resumes and ends with the same
parameters as an uninterrupted one."""

import contextlib
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from mlscale import RunFailed, train
from mlscale.training import checkpoint as ckpt
from mlscale.training.data import ArrayDataset


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _saved_params(run_dir):
    return torch.cat([t.flatten() for t in ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))["model"].values()])


class KilledOnRank1(nn.Module):
    """SIGKILLs its own process on rank 1 at forward call `at`; with a `marker` file, only the
    first time (a restarted worker finds the marker and carries on)."""

    def __init__(self, at: int, marker: str | None):
        super().__init__()
        torch.manual_seed(0)
        self.at, self.marker, self.calls = at, marker, 0
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x):
        self.calls += 1
        if dist.is_initialized() and dist.get_rank() == 1 and self.calls == self.at:
            if self.marker is None or not os.path.exists(self.marker):
                if self.marker:
                    Path(self.marker).touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)


def _pairs(n=256):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(1))
    return ArrayDataset(x, (x[:, 0] + x[:, 1] > 0).long())


@pytest.mark.multiprocess
def test_a_killed_worker_is_restarted_and_the_run_ends_as_if_uninterrupted(small_config, tmp_path, capfd):
    data = _pairs()
    cfg = dict(workers=2, batch_size=8, epochs=2, checkpoint_every_steps=4)  # 16 steps per epoch
    whole = train(small_config(**cfg), model=KilledOnRank1(at=0, marker=None), train_data=data, test_data=data)
    marker = tmp_path / "killed-once"
    # forward 11 on rank 1 is mid-epoch, after the step-8 checkpoint
    hit = train(small_config(**cfg, max_restarts=1), model=KilledOnRank1(at=11, marker=str(marker)),
                train_data=data, test_data=data)
    assert marker.exists()  # the kill did happen
    assert "worker rank 1 was killed by SIGKILL; restarting the workers (1/1), resuming from step-00000008.pt" \
        in capfd.readouterr().err
    assert hit.completed and hit.steps == whole.steps == 32
    torch.testing.assert_close(_params(hit.model), _params(whole.model), atol=1e-6, rtol=0)


@pytest.mark.multiprocess
def test_without_restarts_left_the_run_fails_with_rank_and_cause(small_config):
    data = _pairs()
    t0 = time.monotonic()
    with pytest.raises(RunFailed, match=r"worker rank 1 was killed by SIGKILL \(after 1 restart\)"):
        train(small_config(workers=2, batch_size=8, checkpoint_every_steps=4, max_restarts=1),
              model=KilledOnRank1(at=11, marker=None), train_data=data, test_data=data)
    assert time.monotonic() - t0 < 120


def _cli(out_dir, *args):
    return [sys.executable, "-m", "mlscale", "train", "--out_dir", str(out_dir), "--name", "faulty", "--epochs", "3",
            "--model.width", "256", "--checkpoint_every_steps", "1", "--keep_checkpoints", "2", "--threads", "1",
            "--progress", "false", *args]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.multiprocess
def test_a_launcher_killed_at_random_points_never_loses_the_run(small_config, tmp_path):
    """SIGKILL `mlscale train` again and again, at random moments of training, where a checkpoint is
    written every step; after each kill the run directory must hold a loadable checkpoint, and
    `--resume` must finish the job with the uninterrupted run's parameters."""
    rng = random.Random(0)
    out = tmp_path / "runs"
    kills, torn_writes = 0, 0
    run_dir, cmd = None, _cli(out)
    for _ in range(8):
        before = {p.name: p.stat().st_mtime_ns for p in ckpt.checkpoint_dir(run_dir).glob("*.pt")} if run_dir else {}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:  # wait until it is training
            dirs = list(out.glob("faulty-*"))
            now = {p.name: p.stat().st_mtime_ns for p in ckpt.checkpoint_dir(dirs[0]).glob("*.pt")} if dirs else {}
            if now and now != before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()
            break
        proc.kill()
        proc.wait()
        kills += 1
        run_dir = next(out.glob("faulty-*"))
        torn_writes += len(list(ckpt.checkpoint_dir(run_dir).glob(".*.tmp")))
        ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))  # always a loadable latest checkpoint
        cmd = _cli(out, "--resume", str(run_dir))
    else:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert kills >= 3
    print(f"{kills} launcher kills, {torn_writes} of them during a checkpoint write")
    run_dir = next(out.glob("faulty-*"))
    assert (ckpt.checkpoint_dir(run_dir) / ckpt.FINAL).exists()
    whole = train(small_config(epochs=3, model__width=256, checkpoint_every_steps=1))
    torch.testing.assert_close(_saved_params(run_dir), _params(whole.model), atol=1e-6, rtol=0)


@pytest.mark.multiprocess
def test_killing_the_launcher_takes_its_workers_along(tmp_path):
    proc = subprocess.Popen(_cli(tmp_path, "--workers", "2", "--epochs", "50"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(workers := [c for c in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{w}").exists() and b"spawn_main" in Path(f"/proc/{w}/cmdline").read_bytes()
              for w in workers if Path(f"/proc/{w}/cmdline").exists()):
        assert time.monotonic() < deadline, "a worker outlived its launcher"
        time.sleep(0.05)


# --- full and read-only file systems ---------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size_kb: int):
    """A real, small file system of its own at `path` (needs root or CAP_SYS_ADMIN)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}); "
                    f"the RLIMIT_FSIZE test covers a refused write")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path, leave_bytes: int) -> Path:
    st = os.statvfs(directory)
    filler = directory / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return filler


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_a_file_system_that_refuses_the_save_keeps_the_previous_checkpoint(small_config, tmp_path, fault):
    mount = tmp_path / "fs"
    with _tmpfs(mount, 8192):
        cfg = small_config(out_dir=str(mount / "runs"), epochs=3, checkpoint_every_steps=5, keep_checkpoints=1)

        def break_the_disk(epoch, metrics):  # after epoch 1's evaluation; its next save must fail
            if epoch == 1:
                if fault == "disk full":
                    _fill(mount, leave_bytes=16 * 1024)
                else:  # the checkpoint directory becomes a read-only view of itself
                    d = str(ckpt.checkpoint_dir(next((mount / "runs").iterdir())))
                    subprocess.run(["mount", "--bind", d, d], check=True)
                    subprocess.run(["mount", "-o", "remount,bind,ro", d], check=True)

        why = "No space left on device" if fault == "disk full" else "Read-only file system"
        with pytest.raises(RunFailed, match=f"cannot write checkpoint .*step-00000025.pt: {why}; "
                                            f"the previous checkpoint step-00000020.pt is intact"):
            train(cfg, on_eval=break_the_disk)
        run_dir = next((mount / "runs").iterdir())
        assert ckpt.latest_checkpoint(run_dir).name == "step-00000020.pt"
        assert not list(ckpt.checkpoint_dir(run_dir).glob(".*.tmp"))  # the torn temp file was removed
        if fault == "disk full":
            (mount / "filler").unlink()
        else:
            subprocess.run(["umount", str(ckpt.checkpoint_dir(run_dir))], check=True)
        resumed = train(small_config(out_dir=str(mount / "runs"), epochs=3, checkpoint_every_steps=5,
                                     keep_checkpoints=1), resume=run_dir)
        whole = train(small_config(epochs=3, checkpoint_every_steps=5))
        torch.testing.assert_close(_params(resumed.model), _params(whole.model), atol=1e-6, rtol=0)


def test_a_refused_write_is_one_line_and_exit_1(tmp_path):
    """The same through the CLI, with the kernel refusing any file past 64 KiB (RLIMIT_FSIZE: needs no
    privileges): the first checkpoint cannot be written."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    proc = subprocess.run([sys.executable, "-m", "mlscale", "train", "--out_dir", str(tmp_path), "--epochs", "2",
                           "--progress", "false", "--threads", "1"], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("mlscale train: error: cannot write checkpoint ")
    assert proc.stderr.strip().endswith("File too large; no earlier checkpoint exists")


_ELASTIC_WORKER = """
import sys
sys.path.insert(0, {tests!r})
from test_faults import KilledOnRank1, _pairs
from mlscale import TrainConfig, train
cfg = TrainConfig(out_dir={out!r}, progress=False, threads=1, batch_size=8, epochs=2, checkpoint_every_steps=4)
cfg.dist.timeout_s = 15.0  # rank 0 notices its dead peer at the next collective, at the latest
data = _pairs()
train(cfg, model=KilledOnRank1(at=11, marker={marker!r}), train_data=data, test_data=data)
"""


@pytest.mark.multiprocess
def test_an_elastic_restart_under_torchrun_resumes_the_same_run(small_config, tmp_path):
    """What torchrun --max-restarts does, with its agent's store served here on 127.0.0.1 (torchrun's
    own binds every interface): attempt 0 loses rank 1 to SIGKILL; attempt 1 (TORCHELASTIC_RESTART_COUNT=1)
    finds the run directory in the surviving store, resumes from its checkpoint and ends as if
    uninterrupted."""
    from mlscale.training.distributed.world import listen

    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=True, wait_for_workers=False,  # noqa: F841 - serves
                          master_listen_fd=sock.detach(), use_libuv=False)
    script = _ELASTIC_WORKER.format(tests=str(Path(__file__).parent), out=str(tmp_path / "runs"),
                                    marker=str(tmp_path / "killed-once"))
    for attempt in (0, 1):
        procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=dict(os.environ, RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                                                      LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                                                      TORCHELASTIC_USE_AGENT_STORE="true",
                                                      TORCHELASTIC_RESTART_COUNT=str(attempt)))
                 for r in range(2)]
        outs = [p.communicate(timeout=240) for p in procs]
        codes = [p.returncode for p in procs]
        if attempt == 0:
            assert codes[1] == -signal.SIGKILL and codes[0] != 0, outs
        else:
            assert codes == [0, 0], outs
    (run_dir,) = (tmp_path / "runs").iterdir()  # one directory for both attempts
    data = _pairs()
    whole = train(small_config(workers=2, batch_size=8, epochs=2, checkpoint_every_steps=4),
                  model=KilledOnRank1(at=0, marker=None), train_data=data, test_data=data)
    torch.testing.assert_close(_saved_params(run_dir), _params(whole.model), atol=1e-6, rtol=0)
    steps = [r["step"] for r in map(__import__("json").loads, (run_dir / "metrics.jsonl").read_text().splitlines())]
    assert steps == sorted(steps)  # the dead attempt's records after the checkpoint were dropped


def _lose_peer(errors):  # what a rank records when a collective breaks because its peer died
    (Path(errors) / "rank0.json").write_text(
        '{"rank": 0, "type": "RuntimeError", "message": "Connection closed by peer", "user_error": false, '
        '"mlscale_error": false}')
    os._exit(1)


def _die(_):
    os.kill(os.getpid(), signal.SIGKILL)


def test_when_two_ranks_have_died_the_launcher_names_the_cause_not_the_victim(tmp_path):
    import multiprocessing as mp

    from mlscale.training.distributed.launch import _AttemptFailed, _watch

    ctx = mp.get_context("fork")  # trivial children, no torch work in them
    procs = [ctx.Process(target=f, args=(str(tmp_path),)) for f in (_lose_peer, _die)]
    for p in procs:
        p.start()
    for p in procs:  # both ended before the launcher looks: it sees them together
        p.join()
    with pytest.raises(_AttemptFailed) as failed:
        _watch(procs, tmp_path)
    assert str(failed.value.error) == "worker rank 1 was killed by SIGKILL" and failed.value.restartable
