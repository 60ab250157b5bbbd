"""The array under simulation: an R x C grid of multiply-accumulate (MAC) units and its SRAMs.

One value, `ArrayConfig`, describes the hardware: grid size, dataflow, the three operand SRAMs and
the DRAM interface bandwidth. It follows SCALE-Sim's architecture presets (`ArrayHeight`,
`ArrayWidth`, `IfmapSramSzkB`, ..., `Dataflow`, `Bandwidth`; Samajdar et al., "A Systematic
Methodology for Characterizing Scalability of DNN Accelerators using SCALE-Sim", ISPASS 2020), so a
SCALE-Sim `.cfg` maps onto it field by field (see `formats.py`).

Operand names follow SCALE-Sim: for C = A @ B with A (M x K) and B (K x N),
`ifmap` is A (im2col'd input feature map), `filter` is B (weights), `ofmap` is C.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mlscale.errors import MlscaleError

#: the three classic dataflows, named after which operand stays in the PEs (Chen et al., Eyeriss,
#: ISCA 2016; Samajdar et al., SCALE-Sim, 2018): output-, weight-, input-stationary.
DATAFLOWS = ("os", "ws", "is")


@dataclass(frozen=True)
class ArrayConfig:
    """A systolic array of `rows` x `cols` MAC units and its memory system.

    Attributes:
        rows: PE rows (SCALE-Sim `ArrayHeight`).
        cols: PE columns (SCALE-Sim `ArrayWidth`).
        dataflow: "os", "ws" or "is".
        ifmap_sram_kb: input SRAM size in KiB (SCALE-Sim `IfmapSramSzkB`).
        filter_sram_kb: weight SRAM size in KiB (`FilterSramSzkB`).
        ofmap_sram_kb: output SRAM size in KiB (`OfmapSramSzkB`).
        bandwidth_words_per_cycle: DRAM words per cycle per operand interface; None means
            SCALE-Sim's CALC mode (bandwidth estimated as whatever keeps the array stall-free).
        word_bytes: bytes per operand word (SCALE-Sim fixes 1: 8-bit operands, as the TPU v1).
        name: a label for reports (SCALE-Sim `run_name`).
    """

    rows: int = 32
    cols: int = 32
    dataflow: str = "ws"
    ifmap_sram_kb: int = 64
    filter_sram_kb: int = 64
    ofmap_sram_kb: int = 64
    bandwidth_words_per_cycle: float | None = None
    word_bytes: int = 1
    name: str = "array"

    def __post_init__(self) -> None:
        for field in ("rows", "cols", "ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb", "word_bytes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MlscaleError(f"array config: {field} must be a positive integer, got {value!r}")
        if self.dataflow not in DATAFLOWS:
            raise MlscaleError(
                f"array config: unknown dataflow {self.dataflow!r}; choose one of {', '.join(DATAFLOWS)}"
            )
        bw = self.bandwidth_words_per_cycle
        if bw is not None and not (isinstance(bw, (int, float)) and bw > 0):
            raise MlscaleError(f"array config: bandwidth_words_per_cycle must be > 0, got {bw!r}")

    @property
    def n_pes(self) -> int:
        """Number of MAC units, rows * cols."""
        return self.rows * self.cols

    def sram_words(self, operand: str) -> int:
        """Capacity of one operand SRAM in words (KiB * 1024 / word_bytes)."""
        kb = {"ifmap": self.ifmap_sram_kb, "filter": self.filter_sram_kb, "ofmap": self.ofmap_sram_kb}
        return kb[operand] * 1024 // self.word_bytes

    def with_(self, **changes) -> ArrayConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def parse_array_dims(text: str) -> tuple[int, int]:
    """Parse "RxC" (e.g. "128x128") into (rows, cols).

    Raises:
        MlscaleError: not two positive integers separated by "x".
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not match or int(match.group(1)) <= 0 or int(match.group(2)) <= 0:
        raise MlscaleError(f"--array: expected ROWSxCOLS with positive integers (e.g. 128x128), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def check_dataflow(text: str) -> str:
    """Normalise a dataflow name ("OS", "ws", ...) or raise MlscaleError naming the choices."""
    name = text.strip().lower()
    if name not in DATAFLOWS:
        raise MlscaleError(f"unknown dataflow {text!r}; choose one of {', '.join(DATAFLOWS)}")
    return name
