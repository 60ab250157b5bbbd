"""Study storages: SQLite with parallel workers, a real PostgreSQL server shared by two tuner
processes (the across-machines set-up, on 127.0.0.1), passwords masked everywhere, and a killed
tuner that loses no finished trial."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from glob import glob
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mlscale.search.storage import mask_url, open_storage, repair_journal

SPACE = "optim.lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}\nmodel.width: {type: int, low: 16, high: 64}\n"
PG_BIN = sorted(glob("/usr/lib/postgresql/*/bin"))
PASSWORD = "s3cret-pw"


def _tune(tmp_path, *args, env=None, **kw):
    (tmp_path / "space.yaml").write_text(SPACE)
    cmd = [sys.executable, "-m", "mlscale", "tune", "--space", str(tmp_path / "space.yaml"), "--out-dir",
           str(tmp_path / "runs"), "--pruner", "none", "--epochs", "1", "--batch_size", "128", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **kw)


def test_passwords_are_masked():
    assert mask_url("postgresql://tuner:pw@db:5432/optuna") == "postgresql://tuner:***@db:5432/optuna"
    assert mask_url("postgresql+psycopg://u:p%40ss@h/d") == "postgresql+psycopg://u:***@h/d"
    assert mask_url("sqlite:///study.db") == "sqlite:///study.db"


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _tune(tmp_path, "--storage", f"postgresql://tuner:{PASSWORD}@127.0.0.1:{port}/optuna")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"mlscale tune: error: cannot open storage postgresql://tuner:***@127.0.0.1:{port}/optuna")
    assert PASSWORD not in out + err


def test_a_torn_journal_tail_is_cut(tmp_path):
    path = tmp_path / "journal.log"
    path.write_bytes(b'{"op_code": 0}\n{"op_code": 1}\n{"op_co')
    repair_journal(path)
    assert path.read_bytes() == b'{"op_code": 0}\n{"op_code": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["journal.log"]  # the journal's lock was released


@pytest.mark.multiprocess
def test_sqlite_storage_with_parallel_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _tune(tmp_path, "--storage", url, "--trials", "2", "--parallel", "2", "--sampler", "random")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    study = optuna.load_study(study_name="space", storage=url)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    assert "trials 2/2 done (2 complete, 0 pruned, 0 failed), 0 running" in err


@pytest.mark.multiprocess
def test_killing_the_tuner_loses_no_finished_trial(tmp_path):
    proc = _tune(tmp_path, "--trials", "6", "--parallel", "2", "--sampler", "random", start_new_session=True)
    journal = tmp_path / "runs" / "tune-space" / "journal.log"
    storage, finished, deadline = None, [], time.monotonic() + 240
    while time.monotonic() < deadline:  # kill it once 2 trials are done, with others running
        if journal.exists():
            storage = storage or open_storage(str(journal), tmp_path)
            trials = optuna.load_study(study_name="space", storage=storage).get_trials() if storage.get_all_studies() else []
            finished = [t for t in trials if t.state.is_finished()]
            if len(finished) >= 2:
                break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    # the workers get SIGKILL from the kernel as the tuner dies (PR_SET_PDEATHSIG): none is left running
    assert _wait_gone(proc.pid, timeout_s=30) == []
    before = {t.number: (t.state, t.value, t.params) for t in
              optuna.load_study(study_name="space", storage=open_storage(str(journal), tmp_path)).get_trials()
              if t.state.is_finished()}
    assert len(before) >= 2

    resumed = _tune(tmp_path, "--trials", "6", "--parallel", "2", "--sampler", "random", "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"continuing study 'space': {len(before)} finished trial(s) kept" in err
    trials = optuna.load_study(study_name="space", storage=open_storage(str(journal), tmp_path)).get_trials()
    for number, kept in before.items():  # every trial finished before the kill is there, unchanged
        assert (trials[number].state, trials[number].value, trials[number].params) == kept
    counted = [t for t in trials if not t.user_attrs.get("interrupted") and not t.user_attrs.get("surplus")]
    assert len(counted) == 6 and all(t.state == TrialState.COMPLETE for t in counted)
    for t in trials:
        if t.user_attrs.get("interrupted"):  # the trials the kill cut short are failed, with the reason
            assert t.state == TrialState.FAIL and t.user_attrs["error"].startswith("interrupted")


def _wait_gone(session: int, timeout_s: float) -> list[int]:
    """Processes of `session` still running (zombies awaiting their reaper do not count)."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(["pgrep", "-s", str(session)], capture_output=True, text=True).stdout.split()
        alive = []
        for pid in out:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(int(pid))
            except (OSError, IndexError):
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


# --- PostgreSQL: a real server from the Debian package, on 127.0.0.1 ----------------------------


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL server in a temporary directory, listening on 127.0.0.1 only, with a
    password; run as the unprivileged user 'nobody' when the tests run as root (postgres refuses root)."""
    if not PG_BIN or not os.path.exists(f"{PG_BIN[-1]}/initdb"):
        pytest.skip("PostgreSQL server binaries absent (/usr/lib/postgresql/*/bin): apt-get install postgresql")
    bin_dir = PG_BIN[-1]
    root = Path(tempfile.mkdtemp(prefix="mlscale-pg-"))
    as_user = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        root.chmod(0o700)
        as_user = ["runuser", "-u", "nobody", "--"]
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        os.chown(pwfile, pwd.getpwnam("nobody").pw_uid, -1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_user, f"{bin_dir}/initdb", "-D", str(data), "-U", "tuner", f"--pwfile={pwfile}",
                    "--auth=scram-sha-256", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                    "-o", f"-h 127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://tuner:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.multiprocess
def test_two_tuners_cooperate_on_one_postgresql_study(tmp_path, postgres):
    env = {"MLSCALE_TUNE_STORAGE": postgres}  # as on two machines: the same URL and study name
    for i in range(2):
        (tmp_path / f"machine{i}").mkdir()
    tuners = [_tune(tmp_path / f"machine{i}", "--study", "shared", "--trials", "4", "--sampler", "random",
                    "--seed", str(i), env=env) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in tuners]
    for p, (out, err) in zip(tuners, outputs):
        assert p.returncode == 0, err
        assert PASSWORD not in out + err and "postgresql://tuner:***@127.0.0.1" in err
    study = optuna.load_study(study_name="shared", storage=open_storage(postgres, tmp_path))
    trials = [t for t in study.get_trials() if not t.user_attrs.get("surplus")]
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both tuners ran trials of the one study
    for machine in ("machine0", "machine1"):
        files = list((tmp_path / machine / "runs" / "tune-shared").iterdir())
        assert {"leaderboard.txt", "best.yaml"} <= {f.name for f in files}
        assert all(PASSWORD not in f.read_text() for f in files if f.suffix in (".txt", ".yaml"))


def test_only_dead_workers_trials_are_failed_in_a_journal(tmp_path):
    """A journal has no heartbeat: a RUNNING trial is dead when its worker (host:pid) is this host's
    and gone. Other hosts' trials in a shared journal are left alone; a trial that never recorded a
    worker is dead only in the study directory's own journal."""
    from mlscale.search.runner import _fail_interrupted

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    for own, expected in [(False, {"dead"}), (True, {"dead", "unrecorded"})]:
        study = optuna.create_study(storage=open_storage(str(tmp_path / f"{own}.log"), tmp_path))
        for name, worker in [("dead", f"{host}:{gone.pid}"), ("alive", f"{host}:{os.getpid()}"),
                             ("elsewhere", "other-machine:1"), ("unrecorded", None)]:
            trial = study.ask()
            trial.set_user_attr("name", name)
            if worker:
                trial.set_user_attr("worker", worker)
        assert _fail_interrupted(study, own=own) == len(expected)
        failed = {t.user_attrs["name"] for t in study.get_trials() if t.state == TrialState.FAIL}
        assert failed == expected
        assert all(t.user_attrs.get("interrupted") for t in study.get_trials() if t.state == TrialState.FAIL)
