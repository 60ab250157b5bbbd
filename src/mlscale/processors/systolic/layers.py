"""A layer of work for the array: a GEMM, or a convolution lowered to one by im2col.

im2col (Chellapilla et al., "High Performance Convolutional Neural Networks for Document
Processing", 2006) turns a convolution into C = A @ B with
    M = output pixels (Ho * Wo), K = filter window (Fh * Fw * channels), N = number of filters,
and is how SCALE-Sim builds its operand matrices (`operand_matrix.py`, `topology_utils.py`):
Ho = ceil((H - Fh + S) / S), the same for W, with inputs already padded. SCALE-Sim reads a GEMM row
`name, M, N, K` as a conv layer with an M x K input, a 1 x K filter, 1 channel, N filters, stride 1;
here a GEMM is simply a `Layer` without conv fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlscale.errors import MlscaleError


@dataclass(frozen=True)
class Layer:
    """One GEMM (M x K) @ (K x N) for the array; conv layers carry their original dimensions.

    Attributes:
        name: layer name from the topology.
        M: output rows (output pixels for a conv).
        N: output columns (filters for a conv).
        K: reduction length (filter window Fh * Fw * C for a conv).
        conv: (H, W, Fh, Fw, C, n_filters, stride) for a conv layer, None for a GEMM.
    """

    name: str
    M: int
    N: int
    K: int
    conv: tuple[int, int, int, int, int, int, int] | None = None

    def __post_init__(self) -> None:
        for field in ("M", "N", "K"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MlscaleError(f"layer {self.name!r}: {field} must be a positive integer, got {value!r}")

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the layer, M * N * K."""
        return self.M * self.N * self.K

    @property
    def ifmap_words(self) -> int:
        """Distinct input words: H * W * C for a conv (windows overlap), M * K for a GEMM."""
        if self.conv is not None:
            H, W, _, _, C, _, _ = self.conv
            return H * W * C
        return self.M * self.K

    @classmethod
    def gemm(cls, name: str, M: int, K: int, N: int) -> Layer:
        """A GEMM layer (M x K) @ (K x N)."""
        return cls(name, M, N, K)

    @classmethod
    def from_conv(cls, name: str, H: int, W: int, Fh: int, Fw: int, C: int, n_filters: int, stride: int) -> Layer:
        """A conv layer lowered by im2col (inputs already padded, as in SCALE-Sim topologies).

        Raises:
            MlscaleError: a non-positive size, or a filter larger than the input.
        """
        dims = {"IFMAP Height": H, "IFMAP Width": W, "Filter Height": Fh, "Filter Width": Fw,
                "Channels": C, "Num Filter": n_filters, "Strides": stride}
        for field, value in dims.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MlscaleError(f"layer {name!r}: {field} must be a positive integer, got {value!r}")
        if Fh > H or Fw > W:
            raise MlscaleError(f"layer {name!r}: filter {Fh}x{Fw} is larger than the input {H}x{W}")
        Ho = -(-(H - Fh + stride) // stride)  # ceil, SCALE-Sim topology_utils.topo_calc_hyperparams
        Wo = -(-(W - Fw + stride) // stride)
        return cls(name, Ho * Wo, n_filters, Fh * Fw * C, (H, W, Fh, Fw, C, n_filters, stride))
