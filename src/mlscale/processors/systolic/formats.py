"""SCALE-Sim's input formats: `.cfg` architecture files and topology CSVs; built-in configs.

Formats as SCALE-Sim 3.0.0 reads them (`scale_config.py`, `topology_utils.py`):
- cfg: INI sections `[general]` (run_name), `[architecture_presets]` (ArrayHeight, ArrayWidth,
  IfmapSramSzkB, FilterSramSzkB, OfmapSramSzkB, Dataflow, Bandwidth, ...), `[run_presets]`
  (InterfaceBandwidth = CALC | USER). Keys are case-insensitive; "key: value" and "key = value" both.
  Other sections (layout, sparsity) are accepted and ignored.
- conv topology: header row, then `name, IFMAP H, IFMAP W, Filter H, Filter W, Channels,
  Num Filter, Strides,` (trailing comma; blank lines skipped; an optional N:M sparsity column ignored).
- GEMM topology: header row, then `name, M, N, K,` (note the order: N before K).
Every error names the file, the line and the field.
"""

from __future__ import annotations

import configparser
import csv
import re
from pathlib import Path

from mlscale.errors import MlscaleError
from mlscale.processors.systolic.array import DATAFLOWS, ArrayConfig
from mlscale.processors.systolic.layers import Layer

#: Built-in arrays. "tpu-v1": Jouppi et al. 2017: 256x256 8-bit MACs, weight-stationary, 24 MiB
#: unified buffer (modelled as the input SRAM), weight FIFO of four 64 KiB tiles, 4 MiB of
#: accumulators, DDR3 at 30 GB/s = ~43 bytes per 700 MHz cycle. "google" and "scale" are the two
#: configs SCALE-Sim ships (configs/google.cfg, configs/scale.cfg).
BUILTIN_CONFIGS: dict[str, ArrayConfig] = {
    "tpu-v1": ArrayConfig(256, 256, "ws", 24576, 256, 4096, 43, 1, "tpu-v1"),
    "google": ArrayConfig(256, 256, "os", 6144, 6144, 2048, 10, 1, "GoogleTPU_v1_os"),
    "scale": ArrayConfig(32, 32, "ws", 64, 64, 64, None, 1, "scale_example_run_32x32_ws"),
    "small": ArrayConfig(8, 8, "os", 16, 16, 16, None, 1, "small_8x8"),
}

_CONV_FIELDS = ("Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width",
                "Channels", "Num Filter", "Strides")
_GEMM_FIELDS = ("Layer name", "M", "N", "K")


def load_config(spec: str | Path) -> ArrayConfig:
    """An ArrayConfig from a built-in name ("tpu-v1", "google", "scale", "small") or a `.cfg` file.

    Raises:
        MlscaleError: unknown name, missing file, missing or malformed field (file, line, field named).
    """
    text = str(spec)
    if text in BUILTIN_CONFIGS:
        return BUILTIN_CONFIGS[text]
    path = Path(text)
    if not path.is_file():
        raise MlscaleError(
            f"{text}: no such config file (built-in configs: {', '.join(BUILTIN_CONFIGS)})"
        )
    return parse_config(path.read_text(errors="replace"), str(path))


def parse_config(text: str, filename: str = "<cfg>") -> ArrayConfig:
    """Parse the text of a SCALE-Sim `.cfg` file (see module docstring)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text, source=filename)
    except configparser.Error as err:
        line = getattr(err, "lineno", None)
        where = f"{filename}:{line}" if line else filename
        raise MlscaleError(f"{where}: not a valid cfg file ({type(err).__name__})") from None
    lines = text.splitlines()

    def line_of(key: str) -> str:
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*[:=]", re.IGNORECASE)
        for number, line in enumerate(lines, 1):
            if pattern.match(line):
                return f"{filename}:{number}"
        return filename

    section = "architecture_presets"
    if not parser.has_section(section):
        raise MlscaleError(f"{filename}: missing section [{section}]")

    def get(key: str, default: str | None = None) -> str:
        if parser.has_option(section, key):
            return parser.get(section, key).strip()
        if default is not None:
            return default
        raise MlscaleError(f"{filename}: [{section}] is missing field {key}")

    def positive_int(key: str) -> int:
        raw = get(key)
        if not re.fullmatch(r"\+?\d+", raw) or int(raw) <= 0:
            raise MlscaleError(f"{line_of(key)}: field {key} must be a positive integer, got {raw!r}")
        return int(raw)

    rows, cols = positive_int("ArrayHeight"), positive_int("ArrayWidth")
    sizes = [positive_int(k) for k in ("IfmapSramSzkB", "FilterSramSzkB", "OfmapSramSzkB")]
    dataflow = get("Dataflow", "os").lower()
    if dataflow not in DATAFLOWS:
        raise MlscaleError(
            f"{line_of('Dataflow')}: field Dataflow: unknown dataflow {dataflow!r}; choose one of {', '.join(DATAFLOWS)}"
        )
    mode = "USER"
    if parser.has_option("run_presets", "InterfaceBandwidth"):
        mode = parser.get("run_presets", "InterfaceBandwidth").strip().upper()
        if mode not in ("CALC", "USER"):
            raise MlscaleError(f"{line_of('InterfaceBandwidth')}: field InterfaceBandwidth must be CALC or USER, got {mode!r}")
    bandwidth = None
    if mode == "USER":
        raw = get("Bandwidth")
        try:
            bandwidth = float(raw.split(",")[0])  # SCALE-Sim takes a list; the first entry is used
        except ValueError:
            bandwidth = -1.0
        if not bandwidth > 0 or bandwidth != bandwidth or bandwidth == float("inf"):
            raise MlscaleError(f"{line_of('Bandwidth')}: field Bandwidth must be a positive number, got {raw!r}")
    name = parser.get("general", "run_name", fallback=Path(filename).stem).strip() or Path(filename).stem
    return ArrayConfig(rows, cols, dataflow, *sizes, bandwidth, 1, name)


def load_topology(path: str | Path, kind: str = "auto") -> list[Layer]:
    """Layers from a SCALE-Sim topology CSV file.

    Args:
        path: the CSV file.
        kind: "conv", "gemm" or "auto" (by the header: a header naming M, N, K is a GEMM file).

    Raises:
        MlscaleError: missing file or a malformed row (file, line and field named).
    """
    path = Path(path)
    if not path.is_file():
        raise MlscaleError(f"{path}: no such topology file")
    return parse_topology(path.read_text(errors="replace"), str(path), kind)


def parse_topology(text: str, filename: str = "<csv>", kind: str = "auto") -> list[Layer]:
    """Parse the text of a topology CSV (see `load_topology`)."""
    rows = [(n, [c.strip() for c in cells]) for n, cells in enumerate(csv.reader(text.splitlines()), 1)]
    rows = [(n, _drop_trailing_empty(cells)) for n, cells in rows]
    rows = [(n, cells) for n, cells in rows if cells]
    if not rows:
        raise MlscaleError(f"{filename}: empty topology file (expected a header row and layer rows)")
    header_line, header = rows[0]
    if kind == "auto":
        upper = [h.upper() for h in header[1:4]]
        kind = "gemm" if upper == ["M", "N", "K"] or len(header) == 4 else "conv"
    if kind not in ("conv", "gemm"):
        raise MlscaleError(f"unknown topology kind {kind!r}; choose conv or gemm")
    fields = _CONV_FIELDS if kind == "conv" else _GEMM_FIELDS
    layers = []
    for line, cells in rows[1:]:
        where = f"{filename}:{line}"
        if len(cells) < len(fields):
            raise MlscaleError(
                f"{where}: {kind} row has {len(cells)} fields, expected {len(fields)} ({', '.join(fields)})"
            )
        name = cells[0] or f"layer{len(layers)}"
        values = []
        for field, cell in zip(fields[1:], cells[1:len(fields)]):
            if not re.fullmatch(r"\+?\d+", cell) or int(cell) <= 0:
                raise MlscaleError(f"{where}: field {field!r} must be a positive integer, got {cell!r}")
            values.append(int(cell))
        try:
            if kind == "gemm":
                M, N, K = values
                layers.append(Layer.gemm(name, M, K, N))
            else:
                layers.append(Layer.from_conv(name, *values))
        except MlscaleError as err:
            raise MlscaleError(f"{where}: {err}") from None
    if not layers:
        raise MlscaleError(f"{filename}: no layer rows after the header")
    return layers


def _drop_trailing_empty(cells: list[str]) -> list[str]:
    while cells and cells[-1] == "":
        cells = cells[:-1]
    return cells
