"""FLOPs of a piece of PyTorch work, counted by torch's FlopCounterMode, with attention fixed.

FlopCounterMode counts matrix products and convolutions at the operator level (2 FLOPs per
multiply-accumulate; elementwise ops, norms and softmax count 0, as in the MFU convention of the
PaLM paper, Chowdhery et al. 2022, appendix B). It has formulas for the CUDA attention kernels but
none for the CPU one, `aten._scaled_dot_product_flash_attention_for_cpu`, which
`F.scaled_dot_product_attention` (and so `nn.MultiheadAttention`) dispatches to on CPU: there the
attention products counted 0. `count_flops` adds that formula.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def attention_flops(query_shape, key_shape, value_shape) -> int:
    """FLOPs of softmax(Q K^T) V for Q (B, H, L, d), K (B, Hkv, S, d), V (B, Hkv, S, dv):
    Q K^T is B*H*L*S dot products of length d, P V is B*H*L*dv of length S; 2 FLOPs per MAC.

    Example:
        >>> attention_flops((2, 4, 16, 8), (2, 4, 16, 8), (2, 4, 16, 8))   # 2 * 2*4*16*16*8 * 2
        65536
    """
    B, H, L, d = query_shape
    S, dv = key_shape[-2], value_shape[-1]
    return 2 * B * H * L * S * d + 2 * B * H * L * S * dv


def _cpu_flash_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return attention_flops(query_shape, key_shape, value_shape)


def _custom_formulas() -> dict:
    ops = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        ops[cpu_flash] = _cpu_flash_attention
    return ops


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of running `fn()` once (its result is discarded).

    Example:
        >>> lin = torch.nn.Linear(64, 32)
        >>> count_flops(lambda: lin(torch.randn(8, 64)))   # 2 * 8 * 64 * 32
        32768
    """
    with FlopCounterMode(display=False, custom_mapping=_custom_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())
