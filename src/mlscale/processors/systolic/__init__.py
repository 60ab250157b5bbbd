"""A cycle-accurate systolic-array simulator (NumPy only): functional and timing modes.

Re-exports the public names; see docs/systolic.md.
"""

from mlscale.processors.systolic.array import DATAFLOWS, ArrayConfig
from mlscale.processors.systolic.dataflows import FunctionalResult, run_functional
from mlscale.processors.systolic.formats import BUILTIN_CONFIGS, load_config, load_topology
from mlscale.processors.systolic.layers import Layer
from mlscale.processors.systolic.simulator import SimulationResult, simulate
from mlscale.processors.systolic.timing import LayerTiming, fold, fold_tiles, time_layer
from mlscale.processors.systolic.vonneumann import ENERGY_PJ, VonNeumannComparison, compare

__all__ = [
    "DATAFLOWS", "ArrayConfig", "FunctionalResult", "run_functional", "BUILTIN_CONFIGS", "load_config",
    "load_topology", "Layer", "SimulationResult", "simulate", "LayerTiming", "fold", "fold_tiles",
    "time_layer", "ENERGY_PJ", "VonNeumannComparison", "compare",
]
