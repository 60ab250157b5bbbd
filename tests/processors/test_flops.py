"""FLOP counts per layer against hand-computed values (2 FLOPs per multiply-accumulate)."""

import torch
import torch.nn.functional as F
from torch import nn

from mlscale.processors.flops import attention_flops, count_flops


def test_linear_is_2_B_in_out():
    lin = nn.Linear(48, 20)
    assert count_flops(lambda: lin(torch.randn(7, 48))) == 2 * 7 * 48 * 20
    # leading dims are all batch: (3, 5, 48) is 15 rows
    assert count_flops(lambda: lin(torch.randn(3, 5, 48))) == 2 * 15 * 48 * 20


def test_conv2d_is_2_per_output_pixel_per_filter_per_window_element():
    conv = nn.Conv2d(3, 16, kernel_size=3, stride=2, padding=1)
    x = torch.randn(4, 3, 32, 32)
    Ho = Wo = (32 + 2 - 3) // 2 + 1  # 16
    assert count_flops(lambda: conv(x)) == 2 * 4 * Ho * Wo * 16 * (3 * 3 * 3)
    grouped = nn.Conv2d(8, 8, kernel_size=3, padding=1, groups=4)  # 2 channels per group
    assert count_flops(lambda: grouped(torch.randn(1, 8, 10, 10))) == 2 * 100 * 8 * (3 * 3 * 2)


def test_sdpa_attention_is_counted_on_cpu_too():
    # FlopCounterMode alone counts the CPU attention kernel as 0 FLOPs; ours counts Q K^T and P V
    B, H, L, S, d = 2, 4, 16, 12, 8
    q, k, v = torch.randn(B, H, L, d), torch.randn(B, H, S, d), torch.randn(B, H, S, d)
    expected = 2 * B * H * L * S * d * 2
    assert attention_flops(q.shape, k.shape, v.shape) == expected
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == expected


def test_multihead_attention_is_projections_plus_attention():
    B, T, E, h = 2, 10, 32, 4
    mha = nn.MultiheadAttention(E, h, batch_first=True)
    x = torch.randn(B, T, E)
    projections = 2 * B * T * E * (3 * E) + 2 * B * T * E * E  # Q, K, V in one matmul, then the output
    attention = 2 * B * h * T * T * (E // h) * 2
    with torch.no_grad():
        assert count_flops(lambda: mha(x, x, x, need_weights=False)) == projections + attention
