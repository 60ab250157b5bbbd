import os
import tempfile

import pytest

# matplotlib writes a font cache on first import; keep it out of $HOME and shared between tests.
os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "mlscale-test-mpl"))


@pytest.fixture
def small_config(tmp_path):
    """A fast, quiet digits run writing under tmp_path."""
    from mlscale import TrainConfig

    def make(**changes):
        cfg = TrainConfig(out_dir=str(tmp_path / "runs"), epochs=2, progress=False, threads=1)
        cfg.dist.timeout_s = 60.0  # a broken collective fails a test in a minute, not five
        for key, value in changes.items():
            target = cfg
            *sections, leaf = key.split("__")
            for s in sections:
                target = getattr(target, s)
            setattr(target, leaf, value)
        return cfg

    return make
