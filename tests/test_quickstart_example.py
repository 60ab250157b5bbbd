import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first_accuracy = float(proc.stdout.splitlines()[1].split()[0])
    assert first_accuracy > 0.9
    assert proc.stdout.splitlines()[-1] == "True 88"
    assert len(list((tmp_path / "runs").iterdir())) == 3
