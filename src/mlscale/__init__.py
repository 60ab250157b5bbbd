"""mlscale: take a machine-learning job from one CPU to many accelerators, measured.

The public API is re-exported here and imported lazily, so that `import mlscale` is cheap and has no
side effects (the systolic simulator, for one, needs no torch).
"""

from importlib import import_module

from mlscale.errors import MlscaleError, RunFailed

__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {
    "TrainConfig": "mlscale.config",
    "train": "mlscale.training.engine",
    "RunResult": "mlscale.training.engine",
    "simulate": "mlscale.processors.systolic",
    "tune": "mlscale.search.runner",
    "discover_devices": "mlscale.processors.devices",
    "measured_devices": "mlscale.processors.devices",
    "profile_model": "mlscale.processors.profile",
    "plan": "mlscale.planning.planner",
}

# name -> subpackage exposed as an attribute (`mlscale.systolic.run_functional(...)`)
_LAZY_MODULES = {"systolic": "mlscale.processors.systolic", "devices": "mlscale.processors.devices"}

__all__ = ["MlscaleError", "RunFailed", "__version__", *_LAZY, *_LAZY_MODULES]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in _LAZY_MODULES:
        return import_module(_LAZY_MODULES[name])
    raise AttributeError(f"module 'mlscale' has no attribute {name!r}")
